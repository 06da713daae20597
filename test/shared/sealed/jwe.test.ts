import { createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { agreeWith, concatKdf, openCompact, protectedHeader, sealWith, type JweAlgorithm } from '../../../shared/sealed/jwe.js';
import { KeyCache } from '../../../shared/sealed/key-cache.js';

const BOTH: JweAlgorithm[] = ['ECDH-ES+A256KW', 'ECDH-ES'];
const pairs = { X25519: () => generateKeyPairSync('x25519'), 'P-256': () => generateKeyPairSync('ec', { namedCurve: 'P-256' }) };

function joseSeal(plaintext: string, to: KeyObject, header: Record<string, unknown>): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(plaintext)).setProtectedHeader({ enc: 'A256GCM', ...header } as never).encrypt(to);
}

/** Replaces one part (0..4) of a compact JWE. */
function withPart(jwe: string, index: number, part: string): string {
  const parts = jwe.split('.');
  parts[index] = part;
  return parts.join('.');
}

describe('the sealed channel JWEs, with node:crypto directly', () => {
  for (const [curve, pair] of Object.entries(pairs)) {
    for (const alg of BOTH) {
      it(`opens what jose seals (${alg}, ${curve}, with apu/apv and a kid)`, async () => {
        const { publicKey, privateKey } = pair();
        const plain = JSON.stringify({ token: 'é'.repeat(40) });
        const jwe = await joseSeal(plain, publicKey, { alg, kid: 'k1', apu: 'QWxpY2U', apv: 'Qm9i' });
        expect(openCompact(jwe, privateKey, [alg])).toEqual({ plaintext: Buffer.from(plain), alg });
      });
    }

    it(`seals what jose opens (ECDH-ES+A256KW, ${curve}), with a fresh content key and IV per message`, async () => {
      const { publicKey, privateKey } = pair();
      const agreement = agreeWith(publicKey);
      const a = sealWith(agreement, Buffer.from('{"a":1}'), { cty: 'json' });
      const b = sealWith(agreement, Buffer.from('{"a":1}'), { cty: 'json' });
      for (const jwe of [a, b]) {
        const { plaintext, protectedHeader: header } = await compactDecrypt(jwe, privateKey, {
          keyManagementAlgorithms: ['ECDH-ES+A256KW'],
          contentEncryptionAlgorithms: ['A256GCM'],
        });
        expect(new TextDecoder().decode(plaintext)).toBe('{"a":1}');
        expect(header).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', cty: 'json', epk: agreement.epk });
      }
      expect(a.split('.')[1]).not.toBe(b.split('.')[1]);
      expect(a.split('.')[2]).not.toBe(b.split('.')[2]);
      expect(openCompact(a, privateKey, ['ECDH-ES+A256KW']).plaintext.toString()).toBe('{"a":1}');
    });
  }

  for (const [curve, pair] of Object.entries(pairs)) {
    it(`seals what jose opens (ECDH-ES, ${curve}): the agreed content key, a fresh IV per message`, async () => {
      const { publicKey, privateKey } = pair();
      const agreement = agreeWith(publicKey, 'ECDH-ES');
      const messages = [sealWith(agreement, Buffer.from('{"a":1}'), { cty: 'json' }), sealWith(agreement, Buffer.from('{"a":1}'), { cty: 'json' })];
      for (const jwe of messages) {
        const { plaintext, protectedHeader: header } = await compactDecrypt(jwe, privateKey, {
          keyManagementAlgorithms: ['ECDH-ES'],
          contentEncryptionAlgorithms: ['A256GCM'],
        });
        expect(new TextDecoder().decode(plaintext)).toBe('{"a":1}');
        expect(header).toMatchObject({ alg: 'ECDH-ES', enc: 'A256GCM', cty: 'json', epk: agreement.epk });
        expect(jwe.split('.')[1]).toBe('');
        expect(openCompact(jwe, privateKey, ['ECDH-ES'])).toEqual({ plaintext: Buffer.from('{"a":1}'), alg: 'ECDH-ES' });
      }
      expect(messages[0]!.split('.')[2]).not.toBe(messages[1]!.split('.')[2]);
      // Derived for the other algorithm, the key is another: a message says which one it used.
      expect(agreement.key.equals(agreeWith(publicKey).key)).toBe(false);
    });
  }

  it('draws a distinct IV for every direct message, across refills of its random pool', () => {
    const { publicKey, privateKey } = pairs.X25519();
    const agreement = agreeWith(publicKey, 'ECDH-ES');
    const ivs = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const jwe = sealWith(agreement, Buffer.from(`{"n":${i}}`));
      ivs.add(jwe.split('.')[2]!);
      expect(openCompact(jwe, privateKey, ['ECDH-ES']).plaintext.toString()).toBe(`{"n":${i}}`);
    }
    expect(ivs.size).toBe(300);
  });

  it('draws a distinct content key and IV for every message, across refills of its random pool', () => {
    const { publicKey, privateKey } = pairs.X25519();
    const agreement = agreeWith(publicKey);
    const keys = new Set<string>();
    const ivs = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const jwe = sealWith(agreement, Buffer.from(`{"n":${i}}`));
      const [, wrapped, iv] = jwe.split('.') as [string, string, string];
      const kw = createDecipheriv('id-aes256-wrap', agreement.key, Buffer.from('a6a6a6a6a6a6a6a6', 'hex'));
      const cek = Buffer.concat([kw.update(Buffer.from(wrapped, 'base64url')), kw.final()]);
      expect(cek.equals(Buffer.alloc(32))).toBe(false);
      keys.add(cek.toString('hex'));
      ivs.add(iv);
      expect(openCompact(jwe, privateKey, ['ECDH-ES+A256KW']).plaintext.toString()).toBe(`{"n":${i}}`);
    }
    expect(keys.size).toBe(300);
    expect(ivs.size).toBe(300);
  });

  it('derives the key of RFC 7518 Appendix C (Concat KDF, ECDH-ES, P-256, "Alice" and "Bob")', () => {
    const alice = { kty: 'EC', crv: 'P-256', x: 'gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0', y: 'SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps' };
    const bob = { kty: 'EC', crv: 'P-256', x: 'weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ', y: 'e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck' };
    const z = diffieHellman({
      privateKey: createPrivateKey({ key: { ...alice, d: '0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo' }, format: 'jwk' }),
      publicKey: createPublicKey({ key: bob, format: 'jwk' }),
    });
    expect(concatKdf(z, 'A128GCM', Buffer.from('Alice'), Buffer.from('Bob'), 128).toString('base64url')).toBe('VqqN6vgjbSBcIijNcacQGg');
  });

  it('refuses anything else, tampered or truncated, without saying which', async () => {
    const { publicKey, privateKey } = pairs.X25519();
    const good = await joseSeal('{}', publicKey, { alg: 'ECDH-ES+A256KW' });
    const direct = await joseSeal('{}', publicKey, { alg: 'ECDH-ES' });
    const header = (h: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...decodeProtectedHeader(good), ...h })).toString('base64url');
    const flip = (part: string) => `${part.slice(0, -2)}${part.at(-2) === 'A' ? 'B' : 'A'}${part.at(-1)}`;
    const parts = good.split('.');
    const bad = [
      '',
      'a.b.c.d',
      `${good}.x`,
      withPart(good, 1, flip(parts[1]!)), // wrapped key
      withPart(good, 2, flip(parts[2]!)), // iv
      withPart(good, 3, flip(parts[3]!)), // ciphertext
      withPart(good, 4, flip(parts[4]!)), // tag
      withPart(good, 4, parts[4]!.slice(0, 10)), // short tag
      withPart(good, 3, `${parts[3]}*`), // not base64url
      withPart(good, 0, header({ kid: 'x' })), // the header is the AAD
      withPart(good, 0, header({ enc: 'A128GCM' })),
      withPart(good, 0, header({ zip: 'DEF' })),
      withPart(good, 0, header({ crit: ['exp'] })),
      withPart(good, 0, header({ epk: { kty: 'OKP', crv: 'X25519', x: 'A'.repeat(43) } })), // small order
      withPart(good, 0, header({ epk: { kty: 'EC', crv: 'P-256', x: 'A'.repeat(43), y: 'A'.repeat(43) } })),
      withPart(good, 0, Buffer.from('[1]').toString('base64url')),
      withPart(direct, 1, parts[1]!), // direct agreement with a wrapped key
      withPart(good, 1, ''), // key wrapping without one
    ];
    for (const jwe of bad) expect(() => openCompact(jwe, privateKey, BOTH), jwe).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    expect(() => openCompact(direct, privateKey, ['ECDH-ES+A256KW'])).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    expect(() => openCompact(good, pairs.X25519().privateKey, BOTH)).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    expect(() => openCompact(good, pairs['P-256']().privateKey, BOTH)).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    expect(() => protectedHeader('!!.a.b.c.d')).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
  });

  it('a reused epk is agreed with once while cached; every message still opens only if intact', async () => {
    const { publicKey, privateKey } = pairs.X25519();
    const agreed = new KeyCache<{ readonly key: Buffer }>(10, 60_000);
    /** Opens as a function does: the key a new agreement gave is kept once the message opened. */
    const open = (jwe: string) => {
      const opened = openCompact(jwe, privateKey, BOTH, agreed);
      if (opened.agreed !== undefined) agreed.set(opened.agreed.cacheKey, { key: opened.agreed.key });
      return opened;
    };
    for (const alg of BOTH) {
      agreed.clear();
      const epk = (await generateKeyPair(alg, { crv: 'X25519', extractable: true })).privateKey;
      const reusing = (plaintext: string, as: JweAlgorithm = alg) =>
        new CompactEncrypt(new TextEncoder().encode(plaintext))
          .setProtectedHeader({ alg: as, enc: 'A256GCM' })
          .setKeyManagementParameters({ epk })
          .encrypt(publicKey);
      const [a, b] = [await reusing('{"n":1}'), await reusing('{"n":2}')];
      expect(decodeProtectedHeader(a).epk).toEqual(decodeProtectedHeader(b).epk);
      const first = open(a);
      expect([first.plaintext.toString(), first.alg]).toEqual(['{"n":1}', alg]);
      expect(first.agreed?.key).toHaveLength(32);
      expect(agreed.size).toBe(1);
      const second = open(b);
      expect(second.plaintext.toString()).toBe('{"n":2}');
      expect(second.agreed).toBeUndefined(); // agreed with no more: the cached key opened it
      // Tampered messages under the cached epk: its key is no help without an intact message.
      const flip = (part: string) => `${part.slice(0, -2)}${part.at(-2) === 'A' ? 'B' : 'A'}${part.at(-1)}`;
      const parts = b.split('.');
      for (const i of alg === 'ECDH-ES' ? [2, 3, 4] : [1, 2, 3, 4]) {
        expect(() => open(withPart(b, i, flip(parts[i]!)))).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
      }
      // One with an epk not seen yet that fails to open gives nothing to keep.
      const fresh = (await joseSeal('{"n":3}', publicKey, { alg })).split('.');
      fresh[4] = flip(fresh[4]!);
      expect(() => open(fresh.join('.'))).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
      expect(agreed.size).toBe(1);
      // A fresh epk per message (jose's default) opens as before, one entry each.
      expect(open(await joseSeal('{"n":4}', publicKey, { alg })).plaintext.toString()).toBe('{"n":4}');
      expect(agreed.size).toBe(2);
      // The same epk under the other algorithm derives a key of its own: one kept for one
      // algorithm is never used as the other's.
      const other = alg === 'ECDH-ES' ? 'ECDH-ES+A256KW' : 'ECDH-ES';
      expect(open(await reusing('{"n":5}', other))).toMatchObject({ plaintext: Buffer.from('{"n":5}'), alg: other });
      expect(agreed.size).toBe(3);
      expect(open(await reusing('{"n":6}')).plaintext.toString()).toBe('{"n":6}');
    }
  });

  it('reads each protected header as sent, however recently another was read', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('x25519');
    const a = await joseSeal('{"a":1}', publicKey, { alg: 'ECDH-ES+A256KW', kid: 'k1' });
    const b = await joseSeal('{"b":2}', publicKey, { alg: 'ECDH-ES+A256KW', kid: 'k2' });
    expect(protectedHeader(a).kid).toBe('k1');
    expect(protectedHeader(b).kid).toBe('k2');
    expect(openCompact(a, privateKey, ['ECDH-ES+A256KW']).plaintext.toString()).toBe('{"a":1}');
    // The header just read, sent with another message's parts: its tag (AAD) no longer matches.
    expect(() => openCompact(withPart(b, 0, a.split('.')[0]!), privateKey, ['ECDH-ES+A256KW'])).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    // A header edited after being read is read anew, and refused as what it now says.
    const edited = Buffer.from(JSON.stringify({ ...protectedHeader(a), enc: 'A128GCM' })).toString('base64url');
    expect(() => openCompact(withPart(a, 0, edited), privateKey, ['ECDH-ES+A256KW'])).toThrow(expect.objectContaining({ code: 'JWE_INVALID' }));
    expect(protectedHeader(b).kid).toBe('k2');
  });

  it('refuses to agree with an X25519 point of small order (RFC 7748, section 6.1)', () => {
    const zero = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: 'A'.repeat(43) }, format: 'jwk' });
    expect(() => agreeWith(zero)).toThrow();
  });
});
