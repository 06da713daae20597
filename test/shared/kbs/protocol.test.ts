import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KmsError } from '../../../shared/errors.js';
import { generateKeyPairSync } from 'node:crypto';
import {
  kbsReportData,
  parseAdditionalEvidence,
  parseKbsTeePubKey,
  parseTeePubKey,
  primaryRuntimeData,
  runtimeDataDigest,
  selectedHash,
  type TeePubKey,
} from '../../../shared/kbs/protocol.js';
import { encryptToTee } from '../../../shared/kbs/resource-jwe.js';
import { decryptFromKbs, generateTeeKeyPair, importTeePubKey, processTeeKeyPair } from '../../../shared/kbs/tee-key.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof KmsError ? error.code : 'not a KmsError';
  }
  return undefined;
}

const PUBKEY: TeePubKey = {
  kty: 'EC',
  crv: 'P-256',
  alg: 'ECDH-ES+A256KW',
  x: 'DRaOL4tyLVVgrqWy8cUbpngQh3SDGzRKwP68SpHzwG0',
  y: 'JjfN-RvsApHtENaJsDCrx5Q--mfWI4XdwK5fbUd6zqk',
};

describe('report data binding (Trustee 0.4.0)', () => {
  it('hashes canonical JSON with SHA-384: the vector of Trustee attestation-service parse_runtime_data', () => {
    const digest = runtimeDataDigest({ b: 1, a: 'test', c: { d: 'e' } });
    expect(digest.toString('hex')).toBe('e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3');
  });

  it('is SHA-384 of {"additional-evidence":"","nonce":…,"tee-pubkey":{alg,crv,kty,x,y}} zero-padded to 64 bytes', () => {
    const nonce = 'q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=';
    // RFC 8785 by hand: members sorted by code unit, no whitespace.
    const json = `{"additional-evidence":"","nonce":"${nonce}","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"${PUBKEY.x}","y":"${PUBKEY.y}"}}`;
    const expected = createHash('sha384').update(json).digest();
    const reportData = kbsReportData(nonce, PUBKEY);
    expect(reportData.length).toBe(64);
    expect(reportData.subarray(0, 48).equals(expected)).toBe(true);
    expect(reportData.subarray(48).equals(Buffer.alloc(16))).toBe(true);
    expect(runtimeDataDigest(primaryRuntimeData(nonce, PUBKEY)).equals(expected)).toBe(true);
  });

  it('follows the challenge\'s selected-hash-algorithm, SHA-384 when absent or extra-params is ""', () => {
    expect(selectedHash('')).toBe('sha384');
    expect(selectedHash({})).toBe('sha384');
    expect(selectedHash({ 'selected-hash-algorithm': 'SHA512' })).toBe('sha512');
    expect(codeOf(() => selectedHash({ 'selected-hash-algorithm': 'md5' }))).toBe('ROOT_KEY_UNAVAILABLE');
  });
});

describe('tee-pubkey JWK', () => {
  it('accepts exactly kty, crv, alg, x, y', () => {
    expect(parseTeePubKey({ ...PUBKEY })).toEqual(PUBKEY);
  });

  it.each([
    ['an extra kid', { ...PUBKEY, kid: '1' }],
    ['a private d', { ...PUBKEY, d: PUBKEY.x }],
    ['a missing alg', { kty: 'EC', crv: 'P-256', x: PUBKEY.x, y: PUBKEY.y }],
    ['RSA', { kty: 'RSA', crv: 'P-256', alg: 'RSA-OAEP-256', x: PUBKEY.x, y: PUBKEY.y }],
    ['another alg', { ...PUBKEY, alg: 'ECDH-ES' }],
    ['another curve', { ...PUBKEY, crv: 'P-384' }],
    ['a short x', { ...PUBKEY, x: 'AAAA' }],
    ['a non-base64url y', { ...PUBKEY, y: `${PUBKEY.y.slice(0, -1)}+` }],
    ['an array', [PUBKEY]],
  ])('refuses %s', (_label, jwk) => {
    expect(codeOf(() => parseTeePubKey(jwk))).toBe('BAD_REQUEST');
  });

  it('refuses a point that is not on the curve when imported', async () => {
    const bad = { ...PUBKEY, y: Buffer.alloc(32, 1).toString('base64url') };
    await expect(importTeePubKey(parseTeePubKey(bad))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('the generated key pair exports exactly the five members, once per process', async () => {
    const pair = await processTeeKeyPair();
    expect(Object.keys(pair.publicJwk).sort()).toEqual(['alg', 'crv', 'kty', 'x', 'y']);
    expect(pair.publicJwk.alg).toBe('ECDH-ES+A256KW');
    expect(await processTeeKeyPair()).toBe(pair);
  });
});

describe('JWE resource response', () => {
  it('is a flattened JWE (ECDH-ES+A256KW, A256GCM, epk in the protected header) only this TEE key opens', async () => {
    const pair = await generateTeeKeyPair();
    const secret = Buffer.alloc(32, 0xab);
    const jwe = await encryptToTee(secret, pair.publicJwk);
    expect(Object.keys(jwe).sort()).toEqual(['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
    const header = JSON.parse(Buffer.from(jwe.protected, 'base64url').toString());
    expect(header).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', epk: { kty: 'EC', crv: 'P-256' } });
    expect((await decryptFromKbs(jwe, pair.privateKey)).equals(secret)).toBe(true);

    const other = await generateTeeKeyPair();
    await expect(decryptFromKbs(jwe, other.privateKey)).rejects.toMatchObject({ code: 'ROOT_KEY_UNAVAILABLE' });
    await expect(decryptFromKbs({ ...jwe, tag: Buffer.alloc(16).toString('base64url') }, pair.privateKey)).rejects.toMatchObject({
      code: 'ROOT_KEY_UNAVAILABLE',
    });
    await expect(decryptFromKbs('not a jwe', pair.privateKey)).rejects.toMatchObject({ code: 'ROOT_KEY_UNAVAILABLE' });
  });
});

// An RSA tee-pubkey as guest-components' keypair.rs exports it (TeePubKey::RSA, serde tag `kty`):
// RSA-2048, alg "RSA-OAEP-256", n and e big-endian base64url without padding.
const RSA_JWK = (() => {
  const { n, e } = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
  return { kty: 'RSA', alg: 'RSA-OAEP-256', n: n!, e: e! };
})();

describe('RSA tee-pubkey', () => {
  it('accepts exactly kty, alg, n, e with RSA-OAEP-256, keeping the values as sent', async () => {
    expect(parseKbsTeePubKey({ ...RSA_JWK })).toEqual(RSA_JWK);
    await expect(importTeePubKey(parseKbsTeePubKey(RSA_JWK))).resolves.toBeDefined();
    // EC keys still go through the EC rules.
    expect(parseKbsTeePubKey({ ...PUBKEY })).toEqual(PUBKEY);
  });

  it('is bound as sent: SHA-384 of {"additional-evidence":"","nonce":…,"tee-pubkey":{alg,e,kty,n}}', () => {
    const nonce = 'q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=';
    const json = `{"additional-evidence":"","nonce":"${nonce}","tee-pubkey":{"alg":"RSA-OAEP-256","e":"${RSA_JWK.e}","kty":"RSA","n":"${RSA_JWK.n}"}}`;
    const reportData = kbsReportData(nonce, parseKbsTeePubKey(RSA_JWK));
    expect(reportData.subarray(0, 48).equals(createHash('sha384').update(json).digest())).toBe(true);
  });

  const n = Buffer.from(RSA_JWK.n, 'base64url');
  it.each([
    ['RSA1_5 (deprecated, padding oracles)', { ...RSA_JWK, alg: 'RSA1_5' }],
    ['RSA-OAEP (SHA-1)', { ...RSA_JWK, alg: 'RSA-OAEP' }],
    ['an extra kid', { ...RSA_JWK, kid: '1' }],
    ['a private d', { ...RSA_JWK, d: RSA_JWK.n }],
    ['a missing e', { kty: 'RSA', alg: 'RSA-OAEP-256', n: RSA_JWK.n }],
    ['a 1024-bit modulus', { ...RSA_JWK, n: n.subarray(0, 128).toString('base64url') }],
    ['a modulus with a leading zero octet', { ...RSA_JWK, n: Buffer.concat([Buffer.alloc(1), n]).toString('base64url') }],
    ['an even exponent', { ...RSA_JWK, e: 'AQAA' }],
    ['an exponent of 1', { ...RSA_JWK, e: 'AQ' }],
    ['a padded n', { ...RSA_JWK, n: `${RSA_JWK.n}=` }],
  ])('refuses %s', (_label, jwk) => {
    expect(codeOf(() => parseKbsTeePubKey(jwk))).toBe('BAD_REQUEST');
  });
});

describe('additional_evidence (composite evidence)', () => {
  it('"" and an empty object name no device; the text is kept exactly as sent', () => {
    expect(parseAdditionalEvidence('')).toEqual({ text: '', deviceTees: [] });
    // Trustee's published Attestation example sends "{}".
    expect(parseAdditionalEvidence('{}')).toEqual({ text: '{}', deviceTees: [] });
    expect(parseAdditionalEvidence(' { } ')).toEqual({ text: ' { } ', deviceTees: [] });
  });

  it('names the device TEEs of the map guest-components sends (serde_json of HashMap<Tee, evidence>)', () => {
    const text = JSON.stringify({ nvidia: { evidence_list: [], arch: 'HOPPER' }, sampledevice: { svn: '1', report_data: 'AA==' } });
    expect(parseAdditionalEvidence(text).deviceTees).toEqual(['nvidia', 'sampledevice']);
  });

  it.each([
    ['not a string', {}],
    ['null JSON', 'null'],
    ['an array', '[]'],
    ['not JSON', '{nvidia}'],
    ['a JSON string', '"{}"'],
  ])('refuses %s', (_label, value) => {
    expect(codeOf(() => parseAdditionalEvidence(value))).toBe('BAD_REQUEST');
  });
});
