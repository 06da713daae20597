import type { KeyObject } from 'node:crypto';
import type { CryptoKey } from 'jose';
import { importJWK } from 'jose/key/import';
import { compactVerify } from 'jose/jws/compact/verify';
import type { Verifier } from '../attestation/types.js';
import { KmsError } from '../errors.js';
import { keyBindingReportData } from '../kbs/protocol.js';

/** What a client needs to hold the sealing service to its attested key (docs/sealer-protocol.md). */
export interface ServerAttestation {
  /** GET path (without query) of the service's attestation. */
  readonly path: string;
  /** Checks an attestation answer for `nonce`; resolves with the attested signing key. */
  verify(answer: unknown, nonce: string): Promise<CryptoKey | KeyObject>;
}

/** The sealing service's attestation, checked with `verifier` (TDX reference values, or sample in development). */
export function sealerAttestation(path: string, verifier: Verifier, url: string): ServerAttestation {
  return {
    path,
    async verify(answer, nonce) {
      const { key, tee, evidence } = (answer ?? {}) as Record<string, unknown>;
      const jwk = signingJwk(key);
      if (jwk === undefined) throw unproven(url, 'its attestation names no P-256 signing key');
      if (tee !== verifier.tee) throw unproven(url, `it offers "${String(tee).slice(0, 16)}" evidence and this function accepts only "${verifier.tee}"`);
      try {
        await verifier.verify(evidence, keyBindingReportData(nonce, jwk));
      } catch (error) {
        throw unproven(url, error instanceof KmsError ? error.message : 'its evidence was refused');
      }
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

function unproven(url: string, why: string): KmsError {
  return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} could not prove that it runs in an attested TEE: ${why}; nothing it says is used`);
}
