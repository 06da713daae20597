import { createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto';
import type { RootKey } from '../root-key/source.js';

/** The service key's public half, as `GET /attestation` answers it. `kid` is the root key id it comes from. */
export interface ServiceKeyJwk {
  readonly kty: 'OKP';
  readonly crv: 'X25519';
  readonly x: string;
  readonly kid: string;
}

export interface ServiceKey {
  readonly rootKeyId: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: ServiceKeyJwk;
}

/** PKCS#8 prefix of an X25519 private key (RFC 8410): the 32 key bytes follow. */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const LABEL = 'tee-kms/service-key/v1';

/**
 * The key clients seal requests to. Every function derives the same pair from the root key, so any
 * replica opens what a client sealed, and only a TD that received the root key can; it changes with
 * each rotation. HKDF-SHA-256 (RFC 5869) gives the 32 private key bytes; X25519 clamps them itself.
 */
export function deriveServiceKey(rootKey: RootKey): ServiceKey {
  const info = `${LABEL}:${rootKey.id}`;
  const seed = Buffer.from(hkdfSync('sha256', rootKey.key, Buffer.alloc(0), info, 32));
  const privateKey = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  seed.fill(0);
  const { x } = createPublicKey(privateKey).export({ format: 'jwk' });
  return { rootKeyId: rootKey.id, privateKey, publicJwk: { kty: 'OKP', crv: 'X25519', x: x!, kid: rootKey.id } };
}

/** Derivations kept per root key id: a handful, as only the current key (and briefly its predecessor) is asked for. */
const derived = new Map<string, ServiceKey>();
const MAX_DERIVED = 4;

/** The service key of `rootKey`, derived once per process. */
export function serviceKeyOf(rootKey: RootKey): ServiceKey {
  let key = derived.get(rootKey.id);
  if (key === undefined) {
    key = deriveServiceKey(rootKey);
    if (derived.size >= MAX_DERIVED) derived.delete(derived.keys().next().value!);
    derived.set(rootKey.id, key);
  }
  return key;
}
