import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { KmsError } from '../errors.js';
import { CHALLENGE_CTY, sealShare, type CustodianKey } from './share-jwe.js';

/**
 * Recovery challenges (docs/custodians.md, "Recovery challenges"). Shares cannot show who sealed
 * them, and a state record in storage can name keys of anyone's choosing, so a sealing service
 * whose custodians are pinned gives each pinned custodian a random challenge, encrypted to that
 * custodian's key; a share counts towards a recovery only if the plaintext sealed to the recovery
 * key carries it. Whoever lacks the custodians' private keys then cannot recover the service with
 * shares of a root key of their own.
 */

/** 32 bytes, base64url without padding. */
const CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
const LABEL = 'tee-kms recovery challenge v1\0';

export class RecoveryChallenges {
  #secret: Buffer;

  /** `secret`: known-answer tests only; by default made in memory like the recovery key, so a restart makes new challenges. */
  constructor(secret: Buffer = randomBytes(32)) {
    this.#secret = secret;
  }

  /**
   * New challenges for every custodian: the old ones no longer count. After a recovery and on an
   * operator's seal, so that whoever captured a round's sealed shares cannot replay them to unseal.
   */
  renew(): void {
    this.#secret = randomBytes(32);
  }

  /**
   * The challenge of the custodian whose key has this RFC 7638 thumbprint: HMAC-SHA-256 under this
   * process's secret, so nothing is kept per custodian and every answer gives one the same.
   */
  of(thumbprint: string): string {
    return createHmac('sha256', this.#secret).update(LABEL).update(thumbprint, 'utf8').digest('base64url');
  }

  /** Each custodian's challenge as a compact JWE to its key, by thumbprint. */
  async sealedTo(custodians: readonly CustodianKey[]): Promise<Record<string, string>> {
    const entries = await Promise.all(custodians.map(async (key) => [key.thumbprint, await sealShare(this.of(key.thumbprint), key, CHALLENGE_CTY)] as const));
    return Object.fromEntries(entries);
  }

  /** The one of `thumbprints` whose challenge `challenge` is, compared in constant time with each. */
  whose(challenge: string, thumbprints: Iterable<string>): string | undefined {
    const given = Buffer.from(challenge, 'utf8');
    let found: string | undefined;
    for (const thumbprint of thumbprints) {
      const expected = Buffer.from(this.of(thumbprint), 'utf8');
      if (given.length === expected.length && timingSafeEqual(given, expected)) found = thumbprint;
    }
    return found;
  }
}

/** What a custodian seals to the recovery key: the share's base64 alone, or, answering a challenge, both as JSON. */
export function recoveryPlaintext(content: string, challenge?: string): string {
  return challenge === undefined ? content : JSON.stringify({ share: content, challenge });
}

/**
 * The share and challenge of a plaintext sealed to the recovery key: JSON with exactly `share` and
 * `challenge`, or the share's base64 alone (no challenge). Throws KmsError('BAD_REQUEST'), never
 * quoting the text.
 */
export function parseRecoveryPlaintext(text: string): { content: string; challenge?: string } {
  if (!text.startsWith('{')) return { content: text };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KmsError('BAD_REQUEST', 'the sealed share is neither a share nor {"share", "challenge"}');
  }
  const { share, challenge, ...others } = (typeof json === 'object' && json !== null && !Array.isArray(json) ? json : {}) as Record<string, unknown>;
  if (typeof share !== 'string' || typeof challenge !== 'string' || Object.keys(others).length > 0) {
    throw new KmsError('BAD_REQUEST', 'the sealed share must be {"share": <base64>, "challenge": <base64url>} and nothing else');
  }
  return { content: share, challenge: parseChallenge(challenge) };
}

/** A challenge as RecoveryChallenges.of writes it; throws KmsError('BAD_REQUEST') otherwise. */
export function parseChallenge(value: string): string {
  if (!CHALLENGE.test(value) || Buffer.from(value, 'base64url').toString('base64url') !== value) {
    throw new KmsError('BAD_REQUEST', 'a recovery challenge is 32 bytes of base64url (43 characters)');
  }
  return value;
}
