import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import canonicalize from 'canonicalize';
import { KmsError } from '../errors.js';

/** A key wrapped with AES-256-GCM; fields base64url. Safe to store in untrusted storage. */
export interface WrappedKey {
  readonly iv: string;
  readonly ciphertext: string;
  readonly tag: string;
}

/**
 * Where a wrapped secret belongs. It is authenticated as AAD (in RFC 8785 canonical JSON form), so a
 * ciphertext copied to another record, user, key name or wrapping key fails to unwrap.
 */
export type WrapContext = Readonly<Record<string, string | number>>;

const IV_BYTES = 12; // 96-bit IV: GCM's native size; a fresh random one per wrap
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export function wrapKey(wrappingKey: Uint8Array, secret: Uint8Array, context: WrapContext): WrappedKey {
  assertKey(wrappingKey);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', wrappingKey, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aadOf(context));
  const ciphertext = Buffer.concat([cipher.update(secret), cipher.final()]);
  return { iv: b64u(iv), ciphertext: b64u(ciphertext), tag: b64u(cipher.getAuthTag()) };
}

/** Throws KmsError('INTEGRITY') when the key, context, IV, ciphertext or tag do not match. */
export function unwrapKey(wrappingKey: Uint8Array, wrapped: WrappedKey, context: WrapContext): Buffer {
  assertKey(wrappingKey);
  const iv = fromB64u(wrapped.iv);
  const tag = fromB64u(wrapped.tag);
  const ciphertext = fromB64u(wrapped.ciphertext);
  if (iv === undefined || tag === undefined || ciphertext === undefined || iv.length !== IV_BYTES || tag.length !== TAG_BYTES) {
    throw integrityError();
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', wrappingKey, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aadOf(context));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    throw integrityError();
  }
}

export function isWrappedKey(value: unknown): value is WrappedKey {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.iv === 'string' && typeof v.ciphertext === 'string' && typeof v.tag === 'string';
}

function aadOf(context: WrapContext): Buffer {
  const json = canonicalize(context);
  if (json === undefined) throw new KmsError('INTERNAL', 'wrap context cannot be canonicalized');
  return Buffer.from(json, 'utf8');
}

function assertKey(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new KmsError('INTERNAL', 'wrapping key must be 256 bits');
}

function integrityError(): KmsError {
  return new KmsError('INTEGRITY', 'a stored key failed authentication: it was tampered with, moved or corrupted');
}

function b64u(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

function fromB64u(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return undefined;
  return Buffer.from(text, 'base64url');
}
