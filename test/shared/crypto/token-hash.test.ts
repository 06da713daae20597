import { describe, expect, it } from 'vitest';
import { hashToken, verifyToken } from '../../../shared/crypto/token-hash.js';

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
});
