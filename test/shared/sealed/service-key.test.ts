import { createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { deriveServiceKey, serviceKeyOf } from '../../../shared/sealed/service-key.js';

const rootKey = (key = randomBytes(32)) => ({ id: rootKeyId(key), key });

describe('the service key', () => {
  it('is X25519 from HKDF-SHA-256 over the root key, labelled with its id (RFC 7748 clamping by the library)', () => {
    const root = rootKey();
    const derived = deriveServiceKey(root);
    // Recomputed independently: HKDF's bytes as an X25519 private JWK give the same public key.
    const d = Buffer.from(hkdfSync('sha256', root.key, Buffer.alloc(0), `tee-kms/service-key/v1:${root.id}`, 32));
    const x = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', d: d.toString('base64url'), x: derived.publicJwk.x }, format: 'jwk' }).export({
      format: 'jwk',
    }).x;
    expect(derived.publicJwk).toEqual({ kty: 'OKP', crv: 'X25519', x, kid: root.id });
  });

  it('is the same for every replica holding the root key, and another for another root key', () => {
    const root = rootKey();
    expect(deriveServiceKey({ ...root, key: Buffer.from(root.key) }).publicJwk).toEqual(deriveServiceKey(root).publicJwk);
    expect(deriveServiceKey(rootKey()).publicJwk.x).not.toBe(deriveServiceKey(root).publicJwk.x);
    expect(serviceKeyOf(root)).toBe(serviceKeyOf(root));
  });

  it('agrees a secret with a client key: its private half is the one published', () => {
    const server = deriveServiceKey(rootKey());
    const client = generateKeyPairSync('x25519');
    const fromClient = diffieHellman({ privateKey: client.privateKey, publicKey: createPublicKey({ key: { ...server.publicJwk }, format: 'jwk' }) });
    const fromServer = diffieHellman({ privateKey: server.privateKey, publicKey: client.publicKey });
    expect(fromClient.equals(fromServer)).toBe(true);
  });
});
