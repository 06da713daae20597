import type { KeyObject } from 'node:crypto';
import type { CryptoKey } from 'jose';
import { importJWK } from 'jose/key/import';
import { compactVerify } from 'jose/jws/compact/verify';
import type { VerifiedClaims, Verifier } from '../attestation/types.js';
import { KmsError } from '../errors.js';
import { keyBindingReportData } from '../kbs/protocol.js';
import { metricsHooks } from '../metrics/hooks.js';

/** What a client needs to hold the sealing service to its attested key (docs/sealer-protocol.md). */
export interface ServerAttestation {
  /** GET path (without query) of the service's attestation. */
  readonly path: string;
  /** Checks an attestation answer for `nonce`; resolves with the attested signing key. */
  verify(answer: unknown, nonce: string): Promise<CryptoKey | KeyObject>;
}

/** The sealing service's attestation, checked with `verifier` (TDX reference values, or sample in development). */
export function sealerAttestation(path: string, verifier: Verifier, url: string): ServerAttestation {
  return attestedSealer(path, url, {
    verifierFor: (tee) => (tee === verifier.tee ? verifier : undefined),
    accepts: `this function accepts only "${verifier.tee}"`,
  });
}

/** Whom a sealing service's attestation must satisfy: a function (one verifier), or a peer replica (its verifiers and admin policy). */
export interface SealerTrust {
  /** The verifier for evidence of `tee`, or undefined when none here takes it. */
  verifierFor(tee: unknown): Verifier | undefined;
  /** What evidence is taken, for the refusal's message. */
  readonly accepts: string;
  /** Once the evidence is verified: why its claims are refused (counted as `sealer_identity`), or undefined. */
  refusal?(claims: VerifiedClaims): string | undefined;
}

/**
 * The steps every client of a sealing service takes with its attestation, each refusal counted as
 * kms_attestation_failures_total{reason}: a P-256 signing key, evidence of a type `trust` verifies,
 * that evidence binding the key to the caller's nonce, then `trust`'s own check of the claims.
 * Resolves with the attested signing key.
 */
export function attestedSealer(path: string, url: string, trust: SealerTrust): ServerAttestation {
  return {
    path,
    async verify(answer, nonce) {
      const { key, tee, evidence } = (answer ?? {}) as Record<string, unknown>;
      const jwk = signingJwk(key);
      if (jwk === undefined) throw unproven(url, 'its attestation names no P-256 signing key', 'sealer_no_key');
      const verifier = trust.verifierFor(tee);
      if (verifier === undefined) throw unproven(url, `it offers "${String(tee).slice(0, 16)}" evidence and ${trust.accepts}`, 'sealer_tee');
      let claims: VerifiedClaims;
      try {
        claims = await verifier.verify(evidence, keyBindingReportData(nonce, jwk));
      } catch (error) {
        throw unproven(url, error instanceof KmsError ? error.message : 'its evidence was refused', 'sealer_evidence');
      }
      const refusal = trust.refusal?.(claims);
      if (refusal !== undefined) throw refused(url, refusal);
      return importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, 'ES256') as Promise<CryptoKey>;
    },
  };
}

/** Whether `signature` is the attested key's signature of this answer to this request. */
export async function answerSigned(
  signature: string | undefined,
  key: CryptoKey | KeyObject,
  expected: { method: string; target: string; status: number; nonce: string; bodyDigest: string },
): Promise<boolean> {
  if (signature === undefined || signature.length > 2048) return false;
  try {
    const { payload, protectedHeader } = await compactVerify(signature, key, { algorithms: ['ES256'] });
    if (protectedHeader.typ !== 'kms-sealer-response+jwt') return false;
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    return (
      claims.htm === expected.method &&
      claims.htu === expected.target &&
      claims.status === expected.status &&
      claims.nonce === expected.nonce &&
      claims.bdy === expected.bodyDigest
    );
  } catch {
    return false;
  }
}

export function signingJwk(value: unknown): { kty: 'EC'; crv: 'P-256'; alg: 'ES256'; x: string; y: string } | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { kty, crv, alg, x, y, ...rest } = value as Record<string, unknown>;
  if (kty !== 'EC' || crv !== 'P-256' || alg !== 'ES256' || typeof x !== 'string' || typeof y !== 'string' || Object.keys(rest).length > 0) return undefined;
  return { kty, crv, alg, x, y };
}

/** Counted as kms_attestation_failures_total{reason}: the sealing service refused, and why. */
type SealerRefusal = 'sealer_no_key' | 'sealer_tee' | 'sealer_evidence' | 'sealer_identity';

function unproven(url: string, why: string, reason: SealerRefusal): KmsError {
  metricsHooks.attestationFailure(reason);
  return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} could not prove that it runs in an attested TEE: ${why}; nothing it says is used`);
}

/** Attested, but not as a service this caller trusts (a peer's identity not granted `sealer-peer`). */
function refused(url: string, why: string): KmsError {
  metricsHooks.attestationFailure('sealer_identity');
  return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} ${why}; nothing it says is used`);
}
