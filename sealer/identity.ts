import { generateKeyPair, sign, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { Attester, TeeType } from '../shared/attestation/types.js';
import { keyBindingReportData, TEE_KEY_ALG } from '../shared/kbs/protocol.js';

const generateEcKeyPair = promisify(generateKeyPair);

export type PublicEcJwk = { readonly kty: 'EC'; readonly crv: 'P-256'; readonly alg: string; readonly x: string; readonly y: string };

/** Evidence about one of this service's keys, bound to a verifier's nonce (docs/sealer-protocol.md). */
export interface KeyEvidence {
  readonly tee: TeeType;
  readonly evidence: unknown;
}

/**
 * The sealing service's own keys, made in its memory at start and never stored, so that a restart
 * (or an impostor holding its TLS key) has other ones: a signing key that functions attest and then
 * require on every answer, and the recovery key that shares travel encrypted to, made anew after
 * each recovery and on seal.
 */
export class SealerIdentity {
  #recovery: { readonly privateKey: KeyObject; readonly jwk: PublicEcJwk };

  private constructor(
    private readonly attester: Attester,
    private readonly signingKey: KeyObject,
    readonly signingJwk: PublicEcJwk,
    recovery: { readonly privateKey: KeyObject; readonly jwk: PublicEcJwk },
  ) {
    this.#recovery = recovery;
  }

  static async create(attester: Attester): Promise<SealerIdentity> {
    const [signing, recovery] = await Promise.all([generateEcKeyPair('ec', { namedCurve: 'P-256' }), recoveryKeyPair()]);
    return new SealerIdentity(attester, signing.privateKey, publicJwk(signing.publicKey, 'ES256'), recovery);
  }

  /** The recovery key's private half, for opening the shares sealed to it. */
  get recoveryPrivateKey(): KeyObject {
    return this.#recovery.privateKey;
  }

  get recoveryJwk(): PublicEcJwk {
    return this.#recovery.jwk;
  }

  /**
   * A new recovery key: shares sealed to the previous one no longer open, so that the sealed shares
   * of one recovery, captured on the way, cannot unseal the service again after a seal.
   */
  async renewRecoveryKey(): Promise<void> {
    this.#recovery = await recoveryKeyPair();
  }

  get tee(): TeeType {
    return this.attester.tee;
  }

  /** Fresh evidence binding `jwk` (one of this service's keys) and the verifier's nonce. */
  async evidenceFor(jwk: PublicEcJwk, nonce: string): Promise<KeyEvidence> {
    return { tee: this.attester.tee, evidence: await this.attester.getEvidence(keyBindingReportData(nonce, jwk)) };
  }

  /**
   * A compact JWS (ES256, RFC 7515) over `payload` with the signing key. Made with node:crypto's
   * ECDSA directly (IEEE P1363 encoding, as JWS wants) because it runs synchronously as an answer
   * is written; clients verify it with jose.
   */
  signAnswer(payload: Record<string, unknown>): string {
    const header = Buffer.from(JSON.stringify({ typ: 'kms-sealer-response+jwt', alg: 'ES256' })).toString('base64url');
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    const signature = sign('sha256', Buffer.from(`${header}.${body}`), { key: this.signingKey, dsaEncoding: 'ieee-p1363' });
    return `${header}.${body}.${signature.toString('base64url')}`;
  }
}

async function recoveryKeyPair(): Promise<{ privateKey: KeyObject; jwk: PublicEcJwk }> {
  const { privateKey, publicKey } = await generateEcKeyPair('ec', { namedCurve: 'P-256' });
  return { privateKey, jwk: publicJwk(publicKey, TEE_KEY_ALG) };
}

function publicJwk(key: KeyObject, alg: string): PublicEcJwk {
  const jwk = key.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', alg, x: jwk.x!, y: jwk.y! };
}
