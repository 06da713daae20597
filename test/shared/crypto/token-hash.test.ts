import { scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KmsError } from '../../../shared/errors.js';
import {
  SCRYPT_MAXMEM,
  SCRYPT_RUNNING_MAX,
  SCRYPT_WAITING_MAX,
  SCRYPT_WAITING_PER_USER_MAX,
  acceptableParams,
  hashToken,
  scryptMemory,
  scryptScheduler,
  verifyToken,
} from '../../../shared/crypto/token-hash.js';

/** Whose check: a user whose record exists (queued under their name), or a dummy check. */
const ALICE = { lane: 'known', user: 'alice' } as const;
const UNKNOWN = { lane: 'unknown' } as const;

describe('token verifiers (scrypt)', () => {
  it('verifies the right token and refuses others', async () => {
    const verifier = await hashToken('correct horse');
    expect(verifier).toMatchObject({ alg: 'scrypt', N: 16384, r: 8, p: 1 });
    expect(await verifyToken('correct horse', verifier, ALICE)).toBe(true);
    expect(await verifyToken('correct hors', verifier, ALICE)).toBe(false);
    expect(await verifyToken('', verifier, ALICE)).toBe(false);
  });

  it('salts: the same token hashes differently, and the token is not in the verifier', async () => {
    const a = await hashToken('same-token');
    const b = await hashToken('same-token');
    expect(a.salt).not.toBe(b.salt);
    expect(a.hash).not.toBe(b.hash);
    expect(JSON.stringify(a)).not.toContain('same-token');
  });

  it('refuses tampered verifiers instead of doing unbounded work', async () => {
    const verifier = await hashToken('t');
    expect(await verifyToken('t', { ...verifier, N: 1 << 24 }, ALICE)).toBe(false);
    expect(await verifyToken('t', { ...verifier, hash: 'c2hvcnQ' }, ALICE)).toBe(false);
    expect(await verifyToken('t', { ...verifier, p: 2 }, ALICE)).toBe(false);
    // N not a power of two (scrypt would throw), and 2^20 with r=32 (4 GiB): refused, never run.
    expect(await verifyToken('t', { ...verifier, N: 3 * 4096 }, ALICE)).toBe(false);
    expect(await verifyToken('t', { ...verifier, N: 1 << 20, r: 32 }, ALICE)).toBe(false);
  });

  it('knows what OpenSSL allocates: a run with maxmem one byte below it is refused, at it runs', () => {
    for (const params of [
      { N: 1024, r: 8, p: 1 },
      { N: 2, r: 64, p: 1 },
      { N: 4, r: 2, p: 3 },
    ]) {
      expect(scryptSync('t', 's', 32, { ...params, maxmem: scryptMemory(params) })).toHaveLength(32);
      expect(() => scryptSync('t', 's', 32, { ...params, maxmem: scryptMemory(params) - 1 })).toThrow('memory limit exceeded');
    }
    expect(scryptMemory({ N: 16384, r: 8, p: 1 })).toBe(16_780_288);
    expect(SCRYPT_MAXMEM).toBe(33_560_576);
  });

  // Parameters a forged verifier may carry: accepted ones run within SCRYPT_MAXMEM, the rest are refused.
  const boundary: [{ N: number; r: number; p: number }, boolean, string][] = [
    [{ N: 16384, r: 8, p: 1 }, true, 'what the KMS writes'],
    [{ N: 16384, r: 16, p: 1 }, true, 'exactly SCRYPT_MAXMEM'],
    [{ N: 32768, r: 8, p: 1 }, true, 'N at its bound, 3 KiB below SCRYPT_MAXMEM'],
    [{ N: 2, r: 16, p: 1 }, true, 'r at its bound'],
    [{ N: 2, r: 1, p: 1 }, true, 'the least scrypt takes'],
    [{ N: 32768, r: 16, p: 1 }, false, 'both at their bounds: twice SCRYPT_MAXMEM'],
    [{ N: 2, r: 131072, p: 1 }, false, '128·N·r is 32 MiB, but OpenSSL needs 80 MiB'],
    [{ N: 2, r: 17, p: 1 }, false, 'r past its bound'],
    [{ N: 65536, r: 1, p: 1 }, false, '8 MiB, but OpenSSL refuses N ≥ 2^16 with r = 1'],
    [{ N: 65536, r: 2, p: 1 }, false, 'N past its bound'],
    [{ N: 16384, r: 8, p: 2 }, false, 'p other than 1'],
    [{ N: 3 * 4096, r: 8, p: 1 }, false, 'N not a power of two'],
    [{ N: 1, r: 8, p: 1 }, false, 'N below 2'],
    [{ N: 16384, r: 0, p: 1 }, false, 'r below 1'],
    [{ N: 16384, r: 1.5, p: 1 }, false, 'r not a whole number'],
    [{ N: Number.NaN, r: 8, p: 1 }, false, 'N not a number'],
  ];
  it.each(boundary)('verifier parameters %o: accepted %s (%s)', (params, accepted) => {
    expect(acceptableParams(params)).toBe(accepted);
    if (accepted) {
      expect(scryptMemory(params)).toBeLessThanOrEqual(SCRYPT_MAXMEM);
      expect(scryptSync('t', 's', 32, { ...params, maxmem: SCRYPT_MAXMEM })).toHaveLength(32);
    }
  });

  it('a forged verifier with parameters OpenSSL would refuse is a failed check, never a throw', async () => {
    const verifier = await hashToken('t');
    // 128·N·r is 32 MiB (what the bound used to count), but OpenSSL needs 128·r·(N+2) + 128·r·p: 80 MiB.
    await expect(verifyToken('t', { ...verifier, N: 2, r: 131072, p: 1 }, ALICE)).resolves.toBe(false);
    // 8 MiB, but OpenSSL takes N below 2^(16·r) only.
    await expect(verifyToken('t', { ...verifier, N: 65536, r: 1, p: 1 }, UNKNOWN)).resolves.toBe(false);
    // Accepted parameters at the bound run, and answer as the token decides.
    const atBound = { ...verifier, N: 16384, r: 16, p: 1 };
    const hash = scryptSync('t', Buffer.from(verifier.salt, 'base64url'), 32, { ...atBound, maxmem: SCRYPT_MAXMEM }).toString('base64url');
    await expect(verifyToken('t', { ...atBound, hash }, ALICE)).resolves.toBe(true);
    await expect(verifyToken('u', { ...atBound, hash }, ALICE)).resolves.toBe(false);
  });

  it("bounds the work anyone can queue: past the running slots and a lane's waiting slots a check fails at once with BUSY; the rest finish correctly", async () => {
    const verifier = await hashToken('queued');
    const extra = 5;
    const checks = Array.from({ length: SCRYPT_RUNNING_MAX + SCRYPT_WAITING_MAX + extra }, (_, i) =>
      verifyToken(i % 2 === 0 ? 'queued' : 'wrong', verifier, UNKNOWN),
    );
    // Another lane still has room while the `unknown` lane is full.
    const known = verifyToken('queued', verifier, ALICE);
    const results = await Promise.allSettled(checks);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(extra);
    for (const r of refused)
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'BUSY', message: 'too many token checks in progress; retry shortly' });
    expect(refused.every((r) => (r as PromiseRejectedResult).reason instanceof KmsError)).toBe(true);
    // The first ones took the slots; each finished with the right answer.
    results.slice(0, SCRYPT_RUNNING_MAX + SCRYPT_WAITING_MAX).forEach((r, i) => expect(r).toEqual({ status: 'fulfilled', value: i % 2 === 0 }));
    expect(await known).toBe(true);
    // And the slots are free again.
    expect(await verifyToken('queued', verifier, UNKNOWN)).toBe(true);
    expect(scryptScheduler.waiting('unknown')).toBe(0);
  });

  it("a known user's check does not wait behind a full unknown lane", async () => {
    const verifier = await hashToken('mine');
    const settled: string[] = [];
    const unknown = Array.from({ length: SCRYPT_RUNNING_MAX + SCRYPT_WAITING_MAX }, (_, i) =>
      verifyToken('guess', verifier, UNKNOWN).finally(() => settled.push(`unknown${i}`)),
    );
    const known = verifyToken('mine', verifier, ALICE).finally(() => settled.push('known'));
    expect(await known).toBe(true);
    // With one queue it came after all 66. Round-robin starts it after at most one queued unknown run
    // per slot (the exact order is asserted in test/shared/lanes.test.ts); its finish, among real scrypt
    // runs on shared threads, is asserted loosely: well before the queue it joined has drained.
    expect(settled.indexOf('known')).toBeLessThan(SCRYPT_WAITING_MAX / 4);
    await Promise.all(unknown);
  });

  it("a flood of wrong tokens for one user sheds only that user's checks; other users still queue and are served", async () => {
    const verifier = await hashToken('mine');
    const mallory = { lane: 'known', user: 'mallory' } as const;
    const extra = 5;
    const flood = Array.from({ length: SCRYPT_RUNNING_MAX + SCRYPT_WAITING_PER_USER_MAX + extra }, (_, i) => verifyToken(`guess${i}`, verifier, mallory));
    expect(scryptScheduler.waiting('known', 'mallory')).toBe(SCRYPT_WAITING_PER_USER_MAX);
    // The lane has room, and another user's check takes it.
    const others = Array.from({ length: 3 }, (_, i) => verifyToken('mine', verifier, { lane: 'known', user: `user${i}` }));
    expect(scryptScheduler.waiting('known')).toBe(SCRYPT_WAITING_PER_USER_MAX + 3);
    const results = await Promise.allSettled(flood);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(extra);
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'BUSY' });
    expect(results.filter((r) => r.status === 'fulfilled').every((r) => (r as PromiseFulfilledResult<boolean>).value === false)).toBe(true);
    expect(await Promise.all(others)).toEqual([true, true, true]);
    expect(scryptScheduler.waiting('known')).toBe(0);
  });
});
