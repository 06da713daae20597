import { createCipheriv, createDecipheriv, createHash, createPublicKey, diffieHellman, generateKeyPairSync, randomFillSync, type KeyObject } from 'node:crypto';
import type { KeyCache } from './key-cache.js';

/**
 * The compact JWEs of the sealed channel (docs/sealed-channel.md), made and opened with node:crypto
 * directly and synchronously: `alg` ECDH-ES+A256KW or ECDH-ES, `enc` A256GCM, nothing else. These
 * are the RFC 7516/7518 compositions of vetted primitives (X25519 or P-256 ECDH, the Concat KDF of
 * RFC 7518 section 4.6 over SHA-256, AES key wrap of RFC 3394, AES-256-GCM), as jose composes them;
 * tests check both ways against jose. jose's WebCrypto path costs several times as much CPU per
 * message (async key imports, a thread-pool hop per operation), which a sealed read pays twice.
 */

export type JweAlgorithm = 'ECDH-ES+A256KW' | 'ECDH-ES';

/** A JWE this module refuses: the caller maps it to its own error, revealing nothing more. */
export class JweError extends Error {
  readonly code = 'JWE_INVALID';
}

/** The RFC 3394 default initial value: an unwrap checks it (the key wrap's integrity check). */
const KW_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');
const B64URL = /^[A-Za-z0-9_-]*$/;

/** A key an answer is sealed to, with what one ephemeral key agreement with it gave. */
export interface RecipientAgreement {
  /** The `epk` header: the public half of the ephemeral key. */
  readonly epk: Readonly<Record<string, string>>;
  /** The A256KW key encryption key derived from the agreement (RFC 7518 section 4.6). */
  readonly kek: Buffer;
}

/**
 * One ECDH-ES+A256KW key agreement with `recipient` (an X25519 or P-256 public key): a fresh
 * ephemeral key, and the key encryption key derived from it. Throws if no agreement is possible
 * (an X25519 point of small order, RFC 7748 section 6.1), so a key is refused before it is needed.
 */
export function agreeWith(recipient: KeyObject): RecipientAgreement {
  const ephemeral = recipient.asymmetricKeyType === 'x25519' ? generateKeyPairSync('x25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const z = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient });
  const { kty, crv, x, y } = ephemeral.publicKey.export({ format: 'jwk' });
  const epk: Record<string, string> = y === undefined ? { x: x!, crv: crv!, kty: kty! } : { x: x!, y, crv: crv!, kty: kty! };
  return { epk, kek: concatKdf(z, 'ECDH-ES+A256KW', Buffer.alloc(0), Buffer.alloc(0)) };
}

/**
 * A content key and an IV per answer, from a pool of random bytes filled by one randomFillSync per
 * 128 answers: under load, two calls per answer cost about as much CPU as the rest of the
 * answer's encryption (docs/performance.md, change 16). What is taken is zeroed in the pool once
 * used, never copied.
 */
const RANDOM_PER_ANSWER = 32 + 12;
const randomPool = Buffer.alloc(RANDOM_PER_ANSWER * 128);
let randomTaken = randomPool.length;

function freshRandom(): Buffer {
  if (randomTaken === randomPool.length) {
    randomFillSync(randomPool);
    randomTaken = 0;
  }
  randomTaken += RANDOM_PER_ANSWER;
  return randomPool.subarray(randomTaken - RANDOM_PER_ANSWER, randomTaken);
}

/** Seals `plaintext` with a fresh content key and IV, wrapped with `agreement`'s key encryption key. */
export function sealWith(agreement: RecipientAgreement, plaintext: Uint8Array, header: Readonly<Record<string, string>> = {}): string {
  const fresh = freshRandom();
  try {
    return sealWithRandom(agreement, plaintext, header, fresh.subarray(0, 32), fresh.subarray(32));
  } finally {
    fresh.fill(0);
  }
}

function sealWithRandom(agreement: RecipientAgreement, plaintext: Uint8Array, header: Readonly<Record<string, string>>, cek: Buffer, iv: Buffer): string {
  const kw = createCipheriv('id-aes256-wrap', agreement.kek, KW_IV);
  const wrapped = Buffer.concat([kw.update(cek), kw.final()]);
  const protectedHeader = Buffer.from(JSON.stringify({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', ...header, epk: agreement.epk })).toString('base64url');
  const gcm = createCipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 }).setAAD(Buffer.from(protectedHeader, 'ascii'));
  const ciphertext = Buffer.concat([gcm.update(plaintext), gcm.final()]);
  const tag = gcm.getAuthTag();
  return `${protectedHeader}.${wrapped.toString('base64url')}.${iv.toString('base64url')}.${ciphertext.toString('base64url')}.${tag.toString('base64url')}`;
}

/**
 * Opens a compact JWE to `privateKey` (X25519 or P-256), `alg` one of `algorithms`, `enc` A256GCM;
 * anything else (another algorithm, `zip`, `crit`, a malformed part, a failed unwrap or tag) throws
 * JweError without saying which.
 */
export function openCompact(
  jwe: string,
  privateKey: KeyObject,
  algorithms: readonly JweAlgorithm[],
  /** Key encryption keys of ECDH-ES+A256KW by `epk` (and apu, apv), for `privateKey` only. */
  keks?: KeyCache<{ readonly kek: Buffer }>,
): Buffer {
  const parts = jwe.split('.');
  if (parts.length !== 5 || !parts.every((p) => B64URL.test(p))) throw new JweError('not a compact JWE');
  const [encryptedKey, iv, ciphertext, tag] = parts.slice(1).map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer, Buffer];
  const header = parseHeader(parts[0]!);
  const alg = header.alg as JweAlgorithm;
  if (!algorithms.includes(alg) || header.enc !== 'A256GCM' || header.zip !== undefined || header.crit !== undefined) throw new JweError('unsupported');
  if (iv.length !== 12 || tag.length !== 16) throw new JweError('bad iv or tag');
  const epk = epkJwk(header.epk, privateKey);
  const apu = octets(header.apu);
  const apv = octets(header.apv);
  let cek: Buffer;
  if (alg === 'ECDH-ES') {
    if (encryptedKey.length !== 0) throw new JweError('direct agreement with an encrypted key');
    cek = concatKdf(agree(privateKey, epk), 'A256GCM', apu, apv);
  } else {
    if (encryptedKey.length !== 40) throw new JweError('bad encrypted key');
    // The same epk (and apu, apv) gives the same key encryption key: agreed once while cached.
    const cacheKey = keks === undefined ? '' : `${epk.x}.${epk.y ?? ''}.${header.apu ?? ''}.${header.apv ?? ''}`;
    const cached = keks?.get(cacheKey)?.kek;
    const kek = cached ?? concatKdf(agree(privateKey, epk), 'ECDH-ES+A256KW', apu, apv);
    // id-aes256-wrap checks the RFC 3394 integrity value itself, and throws when it does not match.
    const kw = createDecipheriv('id-aes256-wrap', kek, KW_IV);
    try {
      cek = Buffer.concat([kw.update(encryptedKey), kw.final()]);
      // Kept only once a key was unwrapped with it: a message that fails leaves nothing behind.
      if (cached === undefined) keks?.set(cacheKey, { kek });
    } catch {
      throw new JweError('unwrap failed');
    } finally {
      kek.fill(0);
    }
  }
  try {
    const gcm = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 }).setAAD(Buffer.from(parts[0]!, 'ascii')).setAuthTag(tag);
    return Buffer.concat([gcm.update(ciphertext), gcm.final()]);
  } catch {
    throw new JweError('decryption failed');
  } finally {
    cek.fill(0);
  }
}

/** The protected header of a compact JWE, read before anything is decrypted. */
export function protectedHeader(jwe: string): Record<string, unknown> {
  const encoded = jwe.slice(0, jwe.indexOf('.'));
  if (!B64URL.test(encoded)) throw new JweError('not a compact JWE');
  return parseHeader(encoded);
}

/** Stateless between calls (no `stream` option), so one serves every decode. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The last protected header parsed, by its exact base64url segment: a client reusing its ephemeral
 * key sends the same segment with every request, and a request's header is read twice (for its
 * `kid`, then to open it). Public data, frozen (shallowly: its `epk` is only ever read), one entry.
 */
let lastHeader: { readonly segment: string; readonly header: Readonly<Record<string, unknown>> } | undefined;

function parseHeader(segment: string): Record<string, unknown> {
  if (lastHeader?.segment === segment) return lastHeader.header;
  let header: unknown;
  try {
    header = JSON.parse(UTF8.decode(Buffer.from(segment, 'base64url')));
  } catch {
    throw new JweError('header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new JweError('header is not an object');
  lastHeader = { segment, header: Object.freeze(header as Record<string, unknown>) };
  return lastHeader.header;
}

interface EpkJwk {
  readonly kty: string;
  readonly crv: string;
  readonly x: string;
  readonly y?: string;
}

/** The sender's ephemeral public key as a JWK of the curve of `privateKey` (not yet a point). */
function epkJwk(epk: unknown, privateKey: KeyObject): EpkJwk {
  if (typeof epk !== 'object' || epk === null || Array.isArray(epk)) throw new JweError('no epk');
  const { kty, crv, x, y } = epk as Record<string, unknown>;
  const b64u = (v: unknown): v is string => typeof v === 'string' && v.length === 43 && B64URL.test(v);
  if (privateKey.asymmetricKeyType === 'x25519') {
    if (kty === 'OKP' && crv === 'X25519' && b64u(x) && y === undefined) return { kty, crv, x };
  } else if (kty === 'EC' && crv === 'P-256' && b64u(x) && b64u(y)) return { kty, crv, x, y };
  throw new JweError('epk is not on the key');
}

/** The ECDH shared secret of `privateKey` and the sender's ephemeral key. */
function agree(privateKey: KeyObject, epk: EpkJwk): Buffer {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { ...epk }, format: 'jwk' });
  } catch {
    throw new JweError('epk is not a point');
  }
  try {
    return diffieHellman({ privateKey, publicKey });
  } catch {
    throw new JweError('no key agreement with epk');
  }
}

function octets(value: unknown): Buffer {
  if (value === undefined) return Buffer.alloc(0);
  if (typeof value !== 'string' || !B64URL.test(value)) throw new JweError('bad apu or apv');
  return Buffer.from(value, 'base64url');
}

/**
 * The Concat KDF of NIST SP 800-56A as RFC 7518 section 4.6.2 profiles it, for keys up to 256 bits
 * (one SHA-256 block): SHA-256(round 1 || Z || AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo).
 * AlgorithmID is `enc` for direct agreement, `alg` for agreement with key wrapping.
 */
export function concatKdf(z: Buffer, algorithm: string, apu: Buffer, apv: Buffer, keyBits = 256): Buffer {
  if (keyBits % 8 !== 0 || keyBits > 256) throw new RangeError('one SHA-256 block: at most 256 bits');
  const key = createHash('sha256')
    .update(uint32(1))
    .update(z)
    .update(lengthPrefixed(Buffer.from(algorithm, 'ascii')))
    .update(lengthPrefixed(apu))
    .update(lengthPrefixed(apv))
    .update(uint32(keyBits))
    .digest()
    .subarray(0, keyBits / 8);
  z.fill(0);
  return key;
}

function lengthPrefixed(data: Buffer): Buffer {
  return Buffer.concat([uint32(data.length), data]);
}

function uint32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}
