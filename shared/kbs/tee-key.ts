// jose's subpath modules, not its index: the index loads every algorithm (46 modules instead of 21),
// which every function's cold start paid for (docs/performance.md).
import { generateKeyPair as generateNodeKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { CryptoKey } from 'jose';
import { flattenedDecrypt } from 'jose/jwe/flattened/decrypt';
import { importJWK } from 'jose/key/import';
import { KmsError } from '../errors.js';
import { onceSucceeded } from '../once.js';
import { JWE_ENC, TEE_KEY_ALG, type KbsTeePubKey, type TeePubKey } from './protocol.js';

/**
 * The TEE's ephemeral key pair (the KBS `tee-pubkey`). Its private half never leaves this process's
 * memory; resources come back encrypted to it as flattened JWE, and it signs this TEE's proofs of
 * possession (docs/sealer-protocol.md). One P-256 key for both, because the token binds exactly one
 * key: a node:crypto KeyObject, since a WebCrypto key is fixed to either ECDH or ECDSA.
 */
export interface TeeKeyPair {
  readonly publicJwk: TeePubKey;
  readonly privateKey: KeyObject;
}

const generateEcKeyPair = promisify(generateNodeKeyPair);

export async function generateTeeKeyPair(): Promise<TeeKeyPair> {
  const { publicKey, privateKey } = await generateEcKeyPair('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new KmsError('INTERNAL', 'cannot export the TEE public key');
  // Exactly kty, crv, alg, x, y: these members are hashed into the evidence.
  return { publicJwk: { kty: 'EC', crv: 'P-256', alg: TEE_KEY_ALG, x: jwk.x, y: jwk.y }, privateKey };
}

/** One ephemeral key pair per process, made on first use. */
export const processTeeKeyPair: () => Promise<TeeKeyPair> = onceSucceeded(generateTeeKeyPair);

/** Server side: imports a validated `tee-pubkey`, EC or RSA (rejects points not on the curve, RSA keys jose refuses). */
export async function importTeePubKey(jwk: KbsTeePubKey): Promise<CryptoKey> {
  try {
    const key = await importJWK({ ...jwk }, jwk.alg);
    if (key instanceof Uint8Array) throw new Error('symmetric');
    return key;
  } catch {
    throw new KmsError('BAD_REQUEST', jwk.kty === 'RSA' ? 'tee-pubkey is not a valid RSA public key' : 'tee-pubkey is not a valid public key on its curve');
  }
}

/** Client side: decrypts a flattened JWE response; only ECDH-ES+A256KW / A256GCM are accepted. */
export async function decryptFromKbs(body: unknown, privateKey: CryptoKey | KeyObject): Promise<Buffer> {
  if (typeof body !== 'object' || body === null || typeof (body as { ciphertext?: unknown }).ciphertext !== 'string') {
    throw new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS resource response is not a flattened JWE');
  }
  try {
    const { plaintext } = await flattenedDecrypt(body as Parameters<typeof flattenedDecrypt>[0], privateKey, {
      keyManagementAlgorithms: [TEE_KEY_ALG],
      contentEncryptionAlgorithms: [JWE_ENC],
    });
    return Buffer.from(plaintext);
  } catch {
    throw new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS resource response could not be decrypted with this TEE key');
  }
}
