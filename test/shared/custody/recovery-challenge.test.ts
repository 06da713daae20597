import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { compactDecrypt } from 'jose/jwe/compact/decrypt';
import { decodeProtectedHeader } from 'jose/decode/protected_header';
import { describe, expect, it } from 'vitest';
import { isKmsError } from '../../../shared/errors.js';
import { parseChallenge, parseRecoveryPlaintext, recoveryPlaintext, RecoveryChallenges } from '../../../shared/custody/recovery-challenge.js';
import { CHALLENGE_CTY, openChallenge, openShare, parseCustodianKeys, sealShare } from '../../../shared/custody/share-jwe.js';

function custodianPair() {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  return { key: parseCustodianKeys([{ kty, crv, x, y }])[0]!, privateKey };
}

/** HMAC-SHA-256, key 32 bytes of 0x07, message "tee-kms recovery challenge v1\0abc" (computed with node:crypto once). */
const KNOWN_ANSWER = 'gttIzRR50fwjd3IhsRy0ttv65w_8OrbPg37j_NCZYRc';

const thumbprint = () => randomBytes(32).toString('base64url');

describe('RecoveryChallenges', () => {
  it('gives each thumbprint its own 32-byte challenge, the same on every call, and another after a restart', () => {
    const challenges = new RecoveryChallenges();
    const [a, b] = [thumbprint(), thumbprint()];
    expect(challenges.of(a)).toBe(challenges.of(a));
    expect(challenges.of(a)).not.toBe(challenges.of(b));
    expect(Buffer.from(challenges.of(a), 'base64url')).toHaveLength(32);
    expect(parseChallenge(challenges.of(a))).toBe(challenges.of(a));
    expect(new RecoveryChallenges().of(a)).not.toBe(challenges.of(a));
  });

  it('is HMAC-SHA-256 over a fixed label and the thumbprint under its secret (known answer)', () => {
    expect(new RecoveryChallenges(Buffer.alloc(32, 7)).of('abc')).toBe(KNOWN_ANSWER);
  });

  it('tells whose challenge a value is, among the thumbprints given, and no one for anything else', () => {
    const challenges = new RecoveryChallenges();
    const [a, b, c] = [thumbprint(), thumbprint(), thumbprint()];
    expect(challenges.whose(challenges.of(b), [a, b])).toBe(b);
    expect(challenges.whose(challenges.of(c), [a, b])).toBeUndefined();
    expect(challenges.whose(new RecoveryChallenges().of(a), [a, b])).toBeUndefined();
    expect(challenges.whose('', [a, b])).toBeUndefined();
    expect(challenges.whose(`${challenges.of(a)}x`, [a, b])).toBeUndefined();
  });

  it("seals each custodian's challenge to its key, as a JWE only that key opens, and only as a challenge", async () => {
    const [alice, bob] = [custodianPair(), custodianPair()];
    const challenges = new RecoveryChallenges();
    const sealed = await challenges.sealedTo([alice.key, bob.key]);
    expect(Object.keys(sealed).sort()).toEqual([alice.key.thumbprint, bob.key.thumbprint].sort());
    const jwe = sealed[alice.key.thumbprint]!;
    expect(decodeProtectedHeader(jwe)).toEqual({
      alg: 'ECDH-ES+A256KW',
      enc: 'A256GCM',
      kid: alice.key.thumbprint,
      cty: CHALLENGE_CTY,
      epk: expect.any(Object),
    });
    expect(Buffer.from((await compactDecrypt(jwe, alice.privateKey)).plaintext).toString()).toBe(challenges.of(alice.key.thumbprint));
    expect(await openChallenge(jwe, alice.privateKey)).toBe(challenges.of(alice.key.thumbprint));
    await expect(openChallenge(jwe, bob.privateKey)).rejects.toSatisfy((error) => isKmsError(error, 'BAD_REQUEST'));
    // Neither is taken for the other: a challenge is no share, and a share is no challenge.
    await expect(openShare(jwe, alice.privateKey)).rejects.toThrow(/the share could not be decrypted/);
    await expect(openChallenge(await sealShare('c2hhcmU=', alice.key), alice.privateKey)).rejects.toThrow(/the recovery challenge could not be decrypted/);
  });
});

describe('the plaintext sealed to the recovery key', () => {
  const challenge = randomBytes(32).toString('base64url');

  it('is the share alone, or {"share", "challenge"}, and reads back as written', () => {
    expect(recoveryPlaintext('c2hhcmU=')).toBe('c2hhcmU=');
    expect(parseRecoveryPlaintext('c2hhcmU=')).toEqual({ content: 'c2hhcmU=' });
    expect(JSON.parse(recoveryPlaintext('c2hhcmU=', challenge))).toEqual({ share: 'c2hhcmU=', challenge });
    expect(parseRecoveryPlaintext(recoveryPlaintext('c2hhcmU=', challenge))).toEqual({ content: 'c2hhcmU=', challenge });
  });

  it('refuses anything else with BAD_REQUEST, never quoting it', () => {
    for (const text of [
      '{',
      '{"share":"c2hhcmU="}',
      `{"challenge":"${challenge}"}`,
      `{"share":"c2hhcmU=","challenge":"${challenge}","extra":1}`,
      `{"share":1,"challenge":"${challenge}"}`,
      '{"share":"c2hhcmU=","challenge":"short"}',
      `{"share":"c2hhcmU=","challenge":"${challenge.slice(0, -1)}="}`,
    ]) {
      let caught: unknown;
      try {
        parseRecoveryPlaintext(text);
      } catch (error) {
        caught = error;
      }
      expect(isKmsError(caught, 'BAD_REQUEST'), text).toBe(true);
      expect((caught as Error).message).not.toContain('c2hhcmU=');
    }
  });
});
