// The client's sealing keys: reused for a bounded time, per attestation, checked against the
// protocol with jose and a service key pair of the test's own.
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { keyReuseSeconds, seal } from '../../client/attested.js';
import type { Attestation } from '../../client/types.js';
import { sealAnswer } from '../../shared/sealed/answer.js';
import { agreeWith } from '../../shared/sealed/jwe.js';

interface Opened {
  readonly alg: unknown;
  readonly iv: string;
  readonly epk: unknown;
  readonly responseKey: Record<string, string>;
  readonly jti: string;
}

function attested(): { attestation: Attestation; open: (authorization: string) => Promise<Opened> } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const { x } = publicKey.export({ format: 'jwk' });
  const attestation = { serviceKey: { kty: 'OKP', crv: 'X25519', x: x!, kid: 'rk1' }, rootKeyId: 'rk1', tee: 'sample', claims: {} } as Attestation;
  return {
    attestation,
    async open(authorization) {
      const jwe = authorization.slice('Sealed '.length);
      const { plaintext } = await compactDecrypt(jwe, privateKey);
      const claims = JSON.parse(new TextDecoder().decode(plaintext)) as { responseKey: Record<string, string>; jti: string };
      const { alg, epk } = decodeProtectedHeader(jwe);
      return { alg, iv: jwe.split('.')[2]!, epk, responseKey: claims.responseKey, jti: claims.jti };
    },
  };
}

const claims = { user: 'alice', token: 't0ken', method: 'GET', target: '/dataKey/dk?primaryKeyName=pk' };

describe('seal: one ephemeral key and one response key for a bounded time', () => {
  it('reuses both within the bound (a fresh jti each), and makes new ones once it is over', async () => {
    const { attestation, open } = attested();
    const t0 = 1_000_000_000_000;
    const a = await open((await seal(attestation, claims, 300, t0)).authorization);
    const b = await open((await seal(attestation, claims, 300, t0 + 299_999)).authorization);
    expect(b.epk).toEqual(a.epk);
    expect(b.responseKey).toEqual(a.responseKey);
    expect(b.jti).not.toBe(a.jti);
    // ECDH-ES: the content key is the agreed one, so every message needs an IV of its own.
    expect([a.alg, b.alg]).toEqual(['ECDH-ES', 'ECDH-ES']);
    expect(b.iv).not.toBe(a.iv);
    const c = await open((await seal(attestation, claims, 300, t0 + 300_000)).authorization);
    expect(c.epk).not.toEqual(a.epk);
    expect(c.responseKey).not.toEqual(a.responseKey);
  });

  it('never shares keys between attestations, and with 0 makes fresh keys per message', async () => {
    const one = attested();
    const two = attested();
    const a = await one.open((await seal(one.attestation, claims)).authorization);
    const b = await two.open((await seal(two.attestation, claims)).authorization);
    expect(b.epk).not.toEqual(a.epk);
    expect(b.responseKey).not.toEqual(a.responseKey);
    const fresh = attested();
    const c = await fresh.open((await seal(fresh.attestation, claims, 0)).authorization);
    const d = await fresh.open((await seal(fresh.attestation, claims, 0)).authorization);
    expect(d.epk).not.toEqual(c.epk);
    expect(d.responseKey).not.toEqual(c.responseKey);
  });

  it("opens answers sealed with ECDH-ES, and wrapped ones (servers before it); never another request's", async () => {
    const { attestation, open } = attested();
    const sealed = await seal(attestation, claims);
    const { responseKey, jti } = await open(sealed.authorization);
    for (const alg of ['ECDH-ES', 'ECDH-ES+A256KW'] as const) {
      const answer = (forJti: string) =>
        sealAnswer({ dataKey: 'k' }, agreeWith(createPublicKey({ key: responseKey, format: 'jwk' }), alg), { 'kms-jti': forJti });
      expect(await sealed.open(answer(jti))).toEqual({ json: { dataKey: 'k' }, authenticated: {} });
      await expect(sealed.open(answer('another-request-jti'))).rejects.toMatchObject({ code: 'PROTOCOL' });
    }
  });

  it('keyReuseSeconds: 300 by default, at most an hour, a whole number', () => {
    expect(keyReuseSeconds({})).toBe(300);
    expect(keyReuseSeconds({ keyReuseSeconds: 0 })).toBe(0);
    expect(keyReuseSeconds({ keyReuseSeconds: 3600 })).toBe(3600);
    for (const bad of [3601, -1, 1.5, Number.NaN]) {
      expect(() => keyReuseSeconds({ keyReuseSeconds: bad }), String(bad)).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    }
  });
});
