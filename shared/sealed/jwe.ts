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
  /** How answers use the agreement: wrap a fresh content key per message, or be the content key. */
  readonly alg: JweAlgorithm;
  /**
   * The key derived from the agreement (RFC 7518 section 4.6): the A256KW key encryption key, or
   * for `ECDH-ES` the A256GCM content key itself.
   */
  readonly key: Buffer;
}

/**
 * One key agreement with `recipient` (an X25519 or P-256 public key) for `alg`: a fresh ephemeral
 * key, and the key derived from it. Throws if no agreement is possible (an X25519 point of small
 * order, RFC 7748 section 6.1), so a key is refused before it is needed.
 */
export function agreeWith(recipient: KeyObject, alg: JweAlgorithm = 'ECDH-ES+A256KW'): RecipientAgreement {
  const ephemeral = recipient.asymmetricKeyType === 'x25519' ? generateKeyPairSync('x25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const z = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient });
  const { kty, crv, x, y } = ephemeral.publicKey.export({ format: 'jwk' });
  const epk: Record<string, string> = y === undefined ? { x: x!, crv: crv!, kty: kty! } : { x: x!, y, crv: crv!, kty: kty! };
  return { epk, alg, key: derivedKey(z, alg, Buffer.alloc(0), Buffer.alloc(0)) };
}

/** The Concat KDF's AlgorithmID: `enc` for direct agreement, `alg` for agreement with key wrapping. */
function derivedKey(z: Buffer, alg: JweAlgorithm, apu: Buffer, apv: Buffer): Buffer {
  return concatKdf(z, alg === 'ECDH-ES' ? 'A256GCM' : alg, apu, apv);
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

/**
 * Seals `plaintext` to `agreement`'s recipient with a fresh IV: under ECDH-ES+A256KW with a fresh
 * content key too, wrapped with the key encryption key; under ECDH-ES with the agreed content key.
 */
export function sealWith(agreement: RecipientAgreement, plaintext: Uint8Array, header: Readonly<Record<string, string>> = {}): string {
  const fresh = freshRandom();
  try {
    return sealWithRandom(agreement, plaintext, header, fresh.subarray(0, 32), fresh.subarray(32));
  } finally {
    fresh.fill(0);
  }
}

function sealWithRandom(agreement: RecipientAgreement, plaintext: Uint8Array, header: Readonly<Record<string, string>>, freshKey: Buffer, iv: Buffer): string {
  let cek = agreement.key;
  let encryptedKey = '';
  if (agreement.alg === 'ECDH-ES+A256KW') {
    const kw = createCipheriv('id-aes256-wrap', agreement.key, KW_IV);
    encryptedKey = Buffer.concat([kw.update(freshKey), kw.final()]).toString('base64url');
    cek = freshKey;
  }
  const protectedHeader = Buffer.from(JSON.stringify({ alg: agreement.alg, enc: 'A256GCM', ...header, epk: agreement.epk })).toString('base64url');
  const gcm = createCipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 }).setAAD(Buffer.from(protectedHeader, 'ascii'));
  const ciphertext = Buffer.concat([gcm.update(plaintext), gcm.final()]);
  const tag = gcm.getAuthTag();
  return `${protectedHeader}.${encryptedKey}.${iv.toString('base64url')}.${ciphertext.toString('base64url')}.${tag.toString('base64url')}`;
}

/** What a compact JWE held, and the key management algorithm it was sealed with. */
export interface Opened {
  readonly plaintext: Buffer;
  readonly alg: JweAlgorithm;
  /**
   * With a cache: the key agreed for this message when the cache had none, not kept yet. The caller
   * keeps it (`agreed.set`) only once it accepts the message, so that a message refused later (a
   * replay, say) cannot keep a key in memory, and zeroes it either way.
   */
  readonly agreed?: { readonly cacheKey: string; readonly key: Buffer };
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
  /** Keys derived from agreements (by `alg`, `epk`, apu and apv), for `privateKey` only: read, never written. */
  agreed?: KeyCache<{ readonly key: Buffer }>,
): Opened {
  const parts = jwe.split('.');
  if (parts.length !== 5 || !parts.every((p) => B64URL.test(p))) throw new JweError('not a compact JWE');
  const [encryptedKey, iv, ciphertext, tag] = parts.slice(1).map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer, Buffer];
  const header = parseHeader(parts[0]!);
  const alg = header.alg as JweAlgorithm;
  if (!algorithms.includes(alg) || header.enc !== 'A256GCM' || header.zip !== undefined || header.crit !== undefined) throw new JweError('unsupported');
  if (iv.length !== 12 || tag.length !== 16) throw new JweError('bad iv or tag');
  if (encryptedKey.length !== (alg === 'ECDH-ES' ? 0 : 40)) throw new JweError('bad encrypted key');
  const epk = epkJwk(header.epk, privateKey);
  const apu = octets(header.apu);
  const apv = octets(header.apv);
  // The same epk (and apu, apv) gives the same key: agreed once while cached.
  const cacheKey = agreed === undefined ? '' : `${alg}.${epk.x}.${epk.y ?? ''}.${header.apu ?? ''}.${header.apv ?? ''}`;
  const cached = agreed?.get(cacheKey)?.key;
  const key = cached ?? derivedKey(agree(privateKey, epk), alg, apu, apv);
  let cek = key;
  try {
    if (alg === 'ECDH-ES+A256KW') {
      // id-aes256-wrap checks the RFC 3394 integrity value itself, and throws when it does not match.
      const kw = createDecipheriv('id-aes256-wrap', key, KW_IV);
      try {
        cek = Buffer.concat([kw.update(encryptedKey), kw.final()]);
      } catch {
        throw new JweError('unwrap failed');
      }
    }
    let plaintext: Buffer;
    try {
      const gcm = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: 16 }).setAAD(Buffer.from(parts[0]!, 'ascii')).setAuthTag(tag);
      plaintext = Buffer.concat([gcm.update(ciphertext), gcm.final()]);
    } catch {
      throw new JweError('decryption failed');
    }
    if (cached !== undefined || agreed === undefined) return { plaintext, alg };
    return { plaintext, alg, agreed: { cacheKey, key: Buffer.from(key) } };
  } finally {
    cek.fill(0);
    key.fill(0);
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
