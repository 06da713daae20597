// The resource JWE as a Trustee client (guest-components kbs_protocol) opens it: the AES-GCM AAD is
// not the `protected` string received but kbs-types' ProtectedHeader re-serialized by serde_json.
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { flattenedDecrypt, FlattenedEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import type { KbsTeePubKey } from '../../../shared/kbs/protocol.js';
import { encryptToTee } from '../../../shared/kbs/resource-jwe.js';
import { openAsTrusteeClient, serdeProtectedHeader } from '../../support/trustee-serde.js';

function ecKey(curve: 'P-256' | 'P-521'): { privateKey: KeyObject; jwk: KbsTeePubKey } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve === 'P-256' ? 'prime256v1' : 'secp521r1' });
  const { x, y } = publicKey.export({ format: 'jwk' });
  // Exactly what guest-components' export_pubkey sends.
  return { privateKey, jwk: { kty: 'EC', crv: curve, alg: 'ECDH-ES+A256KW', x: x!, y: y! } };
}

function rsaKey(): { privateKey: KeyObject; jwk: KbsTeePubKey } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const { n, e } = publicKey.export({ format: 'jwk' });
  return { privateKey, jwk: { kty: 'RSA', alg: 'RSA-OAEP-256', n: n!, e: e! } };
}

const SECRET = Buffer.alloc(32, 0x5a);

describe("the test's serde_json re-serialization", () => {
  it('reproduces the kbs-types generate_aad vector', () => {
    // kbs-types src/lib.rs, test protected_header_generate_aad.
    const rebuilt = serdeProtectedHeader(Buffer.from('{"alg":"fakealg","enc":"fakeenc"}').toString('base64url'));
    expect(Buffer.from(rebuilt).toString('base64url')).toBe('eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9');
  });

  it('sorts the flattened members and nested objects without preserve_order: a header sent in another order gets another AAD', () => {
    // kbs-types src/lib.rs, test parse_response_nested_protected_header: epk sent as {kty, crv, x}.
    const sent =
      'eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyIsImVwayI6eyJrdHkiOiJPS1AiLCJjcnYiOiJYMjU1MTkiLCJ4IjoiaFNEd0NZa3dwMVIwaTMzY3RENzNXZzJfT2cwbU9CcjA2NlNwanFxYlRtbyJ9fQo';
    expect(serdeProtectedHeader(sent)).toBe(
      '{"alg":"fakealg","enc":"fakeenc","epk":{"crv":"X25519","kty":"OKP","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}}',
    );
    expect(serdeProtectedHeader(sent, true)).toBe(
      '{"alg":"fakealg","enc":"fakeenc","epk":{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}}',
    );
  });

  it("is why jose's own ECDH-ES header cannot be used: a client without preserve_order cannot open it", async () => {
    const { privateKey } = ecKey('P-256');
    const jwe = await new FlattenedEncrypt(SECRET).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' }).encrypt(createPublicKey(privateKey));
    expect(Buffer.from(jwe.protected!, 'base64url').toString()).not.toBe(serdeProtectedHeader(jwe.protected!));
    await expect(openAsTrusteeClient(jwe, privateKey)).rejects.toThrow();
    // With preserve_order the client keeps jose's order, and opens it.
    expect((await openAsTrusteeClient(jwe, privateKey, true)).equals(SECRET)).toBe(true);
  });
});

describe('encryptToTee: the resource a Trustee client opens', () => {
  it.each([['P-256'], ['P-521']] as const)("EC %s: header bytes are exactly serde_json's, and both client builds open it", async (curve) => {
    const { privateKey, jwk } = ecKey(curve);
    const jwe = await encryptToTee(SECRET, jwk);
    const header = Buffer.from(jwe.protected, 'base64url').toString('utf8');
    expect(header).toBe(serdeProtectedHeader(jwe.protected));
    expect(header).toBe(serdeProtectedHeader(jwe.protected, true));
    // Trustee's kbs/src/jwe shape: alg, enc, epk {crv, kty, x, y}; no aad member.
    const parsed = JSON.parse(header) as { epk: Record<string, unknown> };
    expect(Object.keys(parsed)).toEqual(['alg', 'enc', 'epk']);
    expect(Object.keys(parsed.epk)).toEqual(['crv', 'kty', 'x', 'y']);
    expect(parsed).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', epk: { crv: curve, kty: 'EC' } });
    expect(Object.keys(jwe).sort()).toEqual(['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
    expect((await openAsTrusteeClient(jwe, privateKey)).equals(SECRET)).toBe(true);
    expect((await openAsTrusteeClient(jwe, privateKey, true)).equals(SECRET)).toBe(true);
    // A client that uses the bytes received (jose, this project's own client) opens it too.
    const { plaintext } = await flattenedDecrypt(jwe, privateKey);
    expect(Buffer.from(plaintext).equals(SECRET)).toBe(true);
  });

  it('RSA-OAEP-256: header {"alg":"RSA-OAEP-256","enc":"A256GCM"}, opened only with the RSA private key', async () => {
    const { privateKey, jwk } = rsaKey();
    const jwe = await encryptToTee(SECRET, jwk);
    expect(Buffer.from(jwe.protected, 'base64url').toString('utf8')).toBe('{"alg":"RSA-OAEP-256","enc":"A256GCM"}');
    expect(serdeProtectedHeader(jwe.protected)).toBe('{"alg":"RSA-OAEP-256","enc":"A256GCM"}');
    expect(Buffer.from(jwe.encrypted_key, 'base64url').length).toBe(256);
    expect((await openAsTrusteeClient(jwe, privateKey)).equals(SECRET)).toBe(true);
    await expect(openAsTrusteeClient(jwe, rsaKey().privateKey)).rejects.toThrow();
  });

  it('a changed header, tag or other key does not open', async () => {
    const { privateKey, jwk } = ecKey('P-256');
    const jwe = await encryptToTee(SECRET, jwk);
    await expect(openAsTrusteeClient(jwe, ecKey('P-256').privateKey)).rejects.toThrow();
    await expect(openAsTrusteeClient({ ...jwe, tag: Buffer.alloc(16).toString('base64url') }, privateKey)).rejects.toThrow();
    const header = JSON.parse(Buffer.from(jwe.protected, 'base64url').toString()) as Record<string, unknown>;
    const extra = Buffer.from(JSON.stringify({ ...header, kid: 'x' })).toString('base64url');
    await expect(openAsTrusteeClient({ ...jwe, protected: extra }, privateKey)).rejects.toThrow();
  });

  it('uses a fresh content key and IV for every resource', async () => {
    const { jwk } = ecKey('P-256');
    const [a, b] = await Promise.all([encryptToTee(SECRET, jwk), encryptToTee(SECRET, jwk)]);
    expect(a.iv).not.toBe(b.iv);
    expect(a.encrypted_key).not.toBe(b.encrypted_key);
    expect(a.ciphertext).not.toBe(b.ciphertext);
  });
});
