import { createHash } from 'node:crypto';
import { importJWK } from 'jose/key/import';
import { jwtVerify } from 'jose/jwt/verify';
import type { KbsTeePubKey } from '../shared/kbs/protocol.js';
import { SealerError } from './errors.js';

/** What a proof of possession must name: this request, and the token it accompanies. */
export interface ProofExpectation {
  readonly method: string;
  /** The request target as received: path and query. */
  readonly target: string;
  readonly token: string;
  readonly body: Buffer;
  readonly teePubKey: KbsTeePubKey;
  /**
   * Whose memory of spent jtis the proof is checked against: the admin policy's entry that grants
   * the call (the identity the token names, or the agent policy that admits it).
   */
  readonly holder: string;
}

const PROOF_TYPE = 'dpop+jwt';
const JTI = /^[A-Za-z0-9_-]{16,64}$/;
const MAX_PROOF_LENGTH = 4096;

/** A proof that verified, its jti not yet spent (`ProofVerifier.spend`). */
export interface VerifiedProof {
  readonly jti: string;
  /** Its memory's holder (a replay carries the same token, so it meets the same holder). */
  readonly holder: string;
}

/**
 * Proofs of possession for admin calls (docs/sealer-protocol.md): a JWS by the TEE key that the
 * attestation token binds, over the method, target, token and body digest, fresh (iat within
 * maxSkew) and used once (jti). A token is a bearer credential for its lifetime; the proof makes
 * it useless to anyone without the TEE's private key, and a recorded request useless to replay.
 *
 * `verify` checks a proof and remembers nothing; `spend` remembers its jti, once the caller is
 * known to be granted the call, so that refused calls cannot fill the bounded memory of jtis.
 *
 * The memory is kept per holder (the admin policy's entry that grants the call: an identity, or an
 * agent policy shared by the workloads it admits), each bounded by `maxRemembered`, so the whole is
 * bounded by the policy's size: a proof replayed carries the same token, so it meets its own
 * holder's memory and is refused, while a granted workload that spends proofs as fast as it can
 * fills only its holder's memory (its calls then answer BUSY), not the operator's. Only granted
 * calls spend, and a holder's memory is dropped once its last jti is forgotten.
 */
export class ProofVerifier {
  /** holder → (jti → when it may be forgotten: its proof is stale by then). Insertion order is expiry order. */
  readonly #seen = new Map<string, Map<string, number>>();

  constructor(
    private readonly maxSkewSeconds = 60,
    /** Per holder. */
    private readonly maxRemembered = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Checks everything but spends nothing: a jti already spent is refused, a new one is not recorded. */
  async verify(proof: string | undefined, expected: ProofExpectation): Promise<VerifiedProof> {
    // Proofs are ES256: a token for an RSA or P-521 tee-pubkey (fine for KBS resources) cannot make one.
    if (expected.teePubKey.kty !== 'EC' || expected.teePubKey.crv !== 'P-256') {
      throw invalid(
        `admin calls need a token for an EC P-256 tee-pubkey (proofs are ES256); this token binds ${expected.teePubKey.kty === 'EC' ? `a ${expected.teePubKey.crv}` : 'an RSA'} key: attest with a P-256 key`,
      );
    }
    if (proof === undefined || proof === '') throw invalid('admin calls need a DPoP proof signed with the TEE key of the token');
    if (proof.length > MAX_PROOF_LENGTH) throw invalid('the proof is too long');
    const key = await importJWK({ kty: 'EC', crv: 'P-256', x: expected.teePubKey.x, y: expected.teePubKey.y }, 'ES256');
    let payload: Record<string, unknown>;
    let header: Record<string, unknown>;
    try {
      ({ payload, protectedHeader: header } = await jwtVerify(proof, key, { algorithms: ['ES256'], typ: PROOF_TYPE }));
    } catch {
      throw invalid('the proof does not verify under the TEE key of the token');
    }
    const jwk = header.jwk as Record<string, unknown> | undefined;
    if (jwk?.kty !== 'EC' || jwk.crv !== 'P-256' || jwk.x !== expected.teePubKey.x || jwk.y !== expected.teePubKey.y) {
      throw invalid('the proof header must carry the token\'s tee-pubkey as "jwk"');
    }
    if (payload.htm !== expected.method || payload.htu !== expected.target) throw invalid('the proof was made for another method or path');
    if (payload.ath !== digest(Buffer.from(expected.token, 'ascii'))) throw invalid('the proof was made for another token');
    if (payload.bdy !== digest(expected.body)) throw invalid('the proof was made for another body');
    const now = this.now();
    if (typeof payload.iat !== 'number' || Math.abs(now / 1000 - payload.iat) > this.maxSkewSeconds) {
      throw invalid(`the proof is not fresh (iat must be within ${this.maxSkewSeconds} s of the sealing service's clock)`);
    }
    if (typeof payload.jti !== 'string' || !JTI.test(payload.jti)) throw invalid('the proof needs a jti of 16 to 64 base64url characters');
    this.#forgetStale(now);
    if (this.#seen.get(expected.holder)?.has(payload.jti) === true) throw invalid('this proof was used before (replay)');
    return { jti: payload.jti, holder: expected.holder };
  }

  /**
   * Uses a verified proof up: its jti is refused from now on. Checked again here, without a wait
   * in between, as two requests with one proof may both have verified.
   */
  spend(proof: VerifiedProof): void {
    const now = this.now();
    this.#forgetStale(now);
    let seen = this.#seen.get(proof.holder);
    if (seen?.has(proof.jti) === true) throw invalid('this proof was used before (replay)');
    if (seen !== undefined && seen.size >= this.maxRemembered) {
      throw new SealerError('BUSY', 'too many admin calls by this workload in the last minutes; retry shortly');
    }
    if (seen === undefined) this.#seen.set(proof.holder, (seen = new Map()));
    seen.set(proof.jti, now + 2 * this.maxSkewSeconds * 1000);
  }

  /** Each memory stops at its first live jti; one emptied is dropped with its holder. */
  #forgetStale(now: number): void {
    for (const [holder, seen] of this.#seen) {
      for (const [jti, until] of seen) {
        if (until > now) break;
        seen.delete(jti);
      }
      if (seen.size === 0) this.#seen.delete(holder);
    }
  }
}

export function digest(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url');
}

function invalid(detail: string): SealerError {
  return new SealerError('PROOF_INVALID', detail);
}
