import { describe, expect, it } from 'vitest';
import { KmsError } from '../../../shared/errors.js';
import { SCRYPT_RUNNING_MAX, SCRYPT_WAITING_MAX, hashToken, verifyToken } from '../../../shared/crypto/token-hash.js';

describe('token verifiers (scrypt)', () => {
  it('verifies the right token and refuses others', async () => {
    const verifier = await hashToken('correct horse');
    expect(verifier).toMatchObject({ alg: 'scrypt', N: 16384, r: 8, p: 1 });
    expect(await verifyToken('correct horse', verifier)).toBe(true);
    expect(await verifyToken('correct hors', verifier)).toBe(false);
    expect(await verifyToken('', verifier)).toBe(false);
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
    expect(await verifyToken('t', { ...verifier, N: 1 << 24 })).toBe(false);
    expect(await verifyToken('t', { ...verifier, hash: 'c2hvcnQ' })).toBe(false);
    expect(await verifyToken('t', { ...verifier, p: 2 })).toBe(false);
  });

  it('bounds the work anyone can queue: past the running and waiting slots a check fails at once with BUSY; the rest finish correctly', async () => {
    const verifier = await hashToken('queued');
    const extra = 5;
    const checks = Array.from({ length: SCRYPT_RUNNING_MAX + SCRYPT_WAITING_MAX + extra }, (_, i) => verifyToken(i % 2 === 0 ? 'queued' : 'wrong', verifier));
    const results = await Promise.allSettled(checks);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(extra);
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'BUSY', message: 'too many token checks in progress; retry shortly' });
    expect(refused.every((r) => (r as PromiseRejectedResult).reason instanceof KmsError)).toBe(true);
    // The first ones took the slots; each finished with the right answer.
    results.slice(0, SCRYPT_RUNNING_MAX + SCRYPT_WAITING_MAX).forEach((r, i) => expect(r).toEqual({ status: 'fulfilled', value: i % 2 === 0 }));
    // And the slots are free again.
    expect(await verifyToken('queued', verifier)).toBe(true);
  });
});
