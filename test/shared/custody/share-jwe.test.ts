import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactEncrypt } from 'jose/jwe/compact/encrypt';
import { calculateJwkThumbprint } from 'jose/jwk/thumbprint';
import { decodeProtectedHeader } from 'jose/decode/protected_header';
import { afterAll, describe, expect, it } from 'vitest';
import { isKmsError } from '../../../shared/errors.js';
import { isCompactJwe, openShare, parseCustodianKeys, readCustodianKeysFile, sealShare, type CustodianKey } from '../../../shared/custody/share-jwe.js';

interface Pair {
  readonly publicJwk: { kty: string; crv: string; x: string; y: string };
  readonly privateJwk: Record<string, string>;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

function pair(): Pair {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  return {
    publicJwk: { kty: kty!, crv: crv!, x: x!, y: y! },
    privateJwk: privateKey.export({ format: 'jwk' }) as Record<string, string>,
    privateKey,
    publicKey,
  };
}

const custodian = (p: Pair): CustodianKey => parseCustodianKeys([p.publicJwk])[0]!;
/** A share's text as the sealing service makes it: base64 of 33 bytes. */
const SHARE = Buffer.from([...Array(32).keys(), 3]).toString('base64');

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(isKmsError(error, 'BAD_REQUEST')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected a refusal');
}

function syncRefusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(isKmsError(error, 'BAD_REQUEST')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected a refusal');
}

const tmp = await mkdtemp(join(tmpdir(), 'share-jwe-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe('sealShare / openShare', () => {
  it('round-trips a share to the holder of the private key', async () => {
    const p = pair();
    const jwe = await sealShare(SHARE, custodian(p));
    expect(isCompactJwe(jwe)).toBe(true);
    expect(isCompactJwe(SHARE)).toBe(false);
    expect(await openShare(jwe, p.privateKey)).toBe(SHARE);
  });

  it('writes exactly alg, enc, kid (the RFC 7638 thumbprint) and epk in the protected header', async () => {
    const p = pair();
    const key = custodian(p);
    expect(key.thumbprint).toBe(await calculateJwkThumbprint(p.publicJwk));
    const header = decodeProtectedHeader(await sealShare(SHARE, key));
    expect(Object.keys(header).sort()).toEqual(['alg', 'enc', 'epk', 'kid']);
    expect(header).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: key.thumbprint, epk: { kty: 'EC', crv: 'P-256' } });
    expect(Object.keys(header.epk!).sort()).toEqual(['crv', 'kty', 'x', 'y']);
  });

  it('does not open with another key', async () => {
    const jwe = await sealShare(SHARE, custodian(pair()));
    expect(await refusal(openShare(jwe, pair().privateKey))).toMatch(/^the share could not be decrypted/);
  });

  it('does not open a tampered JWE', async () => {
    const p = pair();
    const jwe = await sealShare(SHARE, custodian(p));
    const parts = jwe.split('.');
    const flip = (segment: string) => {
      const bytes = Buffer.from(segment, 'base64url');
      bytes[0] = bytes[0]! ^ 1;
      return bytes.toString('base64url');
    };
    for (const i of [1, 2, 3, 4]) {
      const tampered = parts.map((part, j) => (j === i ? flip(part) : part)).join('.');
      expect(await refusal(openShare(tampered, p.privateKey))).toMatch(/^the share could not be decrypted/);
    }
    expect(await refusal(openShare(`${jwe}x.`, p.privateKey))).toMatch(/^the share could not be decrypted/);
  });

  it('refuses key management or content encryption other than ECDH-ES+A256KW / A256GCM', async () => {
    const p = pair();
    const plaintext = new TextEncoder().encode(SHARE);
    for (const header of [
      { alg: 'ECDH-ES', enc: 'A256GCM' },
      { alg: 'ECDH-ES+A128KW', enc: 'A256GCM' },
      { alg: 'ECDH-ES+A256KW', enc: 'A128GCM' },
      { alg: 'ECDH-ES+A256KW', enc: 'A256CBC-HS512' },
    ]) {
      const jwe = await new CompactEncrypt(plaintext).setProtectedHeader(header).encrypt(p.publicKey);
      expect(await refusal(openShare(jwe, p.privateKey))).toMatch(/^the share could not be decrypted/);
    }
  });

  it('says nothing of the share or key in its refusal', async () => {
    const p = pair();
    const message = await refusal(openShare(await sealShare(SHARE, custodian(p)), pair().privateKey));
    expect(message).not.toContain(SHARE);
    expect(message).not.toContain(p.publicJwk.x);
  });
});

describe('parseCustodianKeys', () => {
  it('normalizes public keys and computes their thumbprints', async () => {
    const [a, b] = [pair(), pair()];
    const keys = parseCustodianKeys([{ ...a.publicJwk, alg: 'ECDH-ES+A256KW', kid: 'alice', use: 'enc' }, b.publicJwk], 2);
    expect(keys).toEqual([
      { ...a.publicJwk, thumbprint: await calculateJwkThumbprint(a.publicJwk) },
      { ...b.publicJwk, thumbprint: await calculateJwkThumbprint(b.publicJwk) },
    ]);
  });

  it('refuses private members, naming the index and not the key', () => {
    const [a, b] = [pair(), pair()];
    for (const extra of [{ d: b.privateJwk['d'] }, { k: 'AAAA' }, { p: 'AA' }, { q: 'AA' }, { dp: 'AA' }, { dq: 'AA' }, { qi: 'AA' }]) {
      const message = syncRefusal(() => parseCustodianKeys([b.publicJwk, { ...a.publicJwk, ...extra }]));
      expect(message).toMatch(/^custodians\[1\] holds private key material/);
      expect(message).not.toContain(a.publicJwk.x);
    }
    expect(syncRefusal(() => parseCustodianKeys([a.privateJwk]))).toMatch(/^custodians\[0\] holds private key material/);
  });

  it('refuses a count other than the expected one', () => {
    expect(syncRefusal(() => parseCustodianKeys([pair().publicJwk, pair().publicJwk], 3))).toBe(
      'custodians: 2 keys for 3 shares (one key per share, in share order)',
    );
    expect(syncRefusal(() => parseCustodianKeys([], 0))).toMatch(/non-empty/);
  });

  it('refuses duplicates, other curves and algorithms, bad coordinates and points off the curve', () => {
    const a = pair();
    const y = Buffer.from(a.publicJwk.y, 'base64url');
    y[31] = y[31]! ^ 1;
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const cases: Array<[unknown, RegExp]> = [
      [{}, /^custodians must be a non-empty JSON array/],
      [[a.publicJwk, { ...a.publicJwk, alg: 'ECDH-ES+A256KW' }], /^custodians\[1\] is the same key as custodians\[0\]$/],
      [['x'], /^custodians\[0\] must be a JWK object$/],
      [[p384], /^custodians\[0\] must be an EC P-256 key/],
      [[{ ...a.publicJwk, kty: 'OKP' }], /^custodians\[0\] must be an EC P-256 key/],
      [[{ ...a.publicJwk, alg: 'ECDH-ES' }], /^custodians\[0\]: alg must be "ECDH-ES\+A256KW" or absent$/],
      [[{ ...a.publicJwk, use: 'sig' }], /^custodians\[0\]: use must be "enc" or absent$/],
      [[{ ...a.publicJwk, x: a.publicJwk.x.slice(1) }], /^custodians\[0\]: x must be a base64url P-256 coordinate/],
      [[{ ...a.publicJwk, x: `${a.publicJwk.x.slice(0, 42)}+` }], /^custodians\[0\]: x must be a base64url P-256 coordinate/],
      [[{ ...a.publicJwk, y: 1 }], /^custodians\[0\]: y must be a base64url P-256 coordinate/],
      [[{ ...a.publicJwk, y: y.toString('base64url') }], /^custodians\[0\] is not a point on the P-256 curve$/],
    ];
    for (const [value, message] of cases) expect(syncRefusal(() => parseCustodianKeys(value))).toMatch(message);
  });
});

describe('readCustodianKeysFile', () => {
  it('reads a JSON array of public keys', async () => {
    const a = pair();
    const file = join(tmp, 'keys.json');
    await writeFile(file, JSON.stringify([a.publicJwk]));
    expect(await readCustodianKeysFile(file)).toEqual(parseCustodianKeys([a.publicJwk]));
  });

  it('names the variable and the file in a CONFIG error, and what it must hold, without quoting it', async () => {
    const a = pair();
    const cases: Array<[string, string | undefined, RegExp]> = [
      [
        'missing.json',
        undefined,
        /^KMS_CUSTODIAN_KEYS_FILE names a file that cannot be read: .*missing\.json \(ENOENT\); point it at a JSON array of the custodians' public JWKs, one per share \(KMS_SHARES\), in share order, or unset it$/,
      ],
      [
        'bad.json',
        `[{"x": "${a.publicJwk.x}"`,
        /^KMS_CUSTODIAN_KEYS_FILE names a file that is not JSON: .*bad\.json; it must hold a JSON array of the custodians' public JWKs/,
      ],
      [
        'private.json',
        JSON.stringify([a.privateJwk]),
        /^KMS_CUSTODIAN_KEYS_FILE names a file of keys that cannot be used: .*private\.json: custodians\[0\] holds private key material/,
      ],
    ];
    for (const [name, content, message] of cases) {
      const file = join(tmp, name);
      if (content !== undefined) await writeFile(file, content);
      const error = await readCustodianKeysFile(file).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isKmsError(error, 'CONFIG')).toBe(true);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).not.toContain(a.publicJwk.x);
    }
  });
});
