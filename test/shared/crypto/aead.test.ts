import { describe, expect, it } from 'vitest';
import { unwrapKey, wrapKey, type WrappedKey } from '../../../shared/crypto/aead.js';

const key = Buffer.alloc(32, 7);
const secret = Buffer.alloc(32, 1);
const context = { kind: 'data-key', user: 'alice', primaryKey: 'pk1', dataKey: 'dk1', wrappingKeyId: 'k1' };

function flip(b64u: string, byte = 0): string {
  const bytes = Buffer.from(b64u, 'base64url');
  bytes[byte]! ^= 0x01;
  return bytes.toString('base64url');
}

describe('AES-256-GCM key wrapping', () => {
  it('unwraps a known-answer vector (AAD is the RFC 8785 canonical JSON of the context)', () => {
    // AES-256-GCM, key 07×32, IV 09×12, plaintext 01×32, AAD {"kind":"data-key","user":"alice"}.
    const vector: WrappedKey = {
      iv: 'CQkJCQkJCQkJCQkJ',
      ciphertext: 'JoSFlb_xwGChY8o55-ui3tWxYvI17_bBbq9Hp9R1AHs',
      tag: 'nd7_hCpo_XWlSBeBDNcdUQ',
    };
    // Members in another order: canonicalization sorts them.
    expect(unwrapKey(key, vector, { user: 'alice', kind: 'data-key' })).toEqual(secret);
  });

  it('round-trips with a fresh 96-bit IV each time', () => {
    const a = wrapKey(key, secret, context);
    const b = wrapKey(key, secret, context);
    expect(Buffer.from(a.iv, 'base64url')).toHaveLength(12);
    expect(a.iv).not.toBe(b.iv);
    expect(a.ciphertext).not.toBe(b.ciphertext);
    expect(unwrapKey(key, a, context)).toEqual(secret);
    expect(unwrapKey(key, b, context)).toEqual(secret);
  });

  it('refuses a tampered ciphertext, IV or tag', () => {
    const wrapped = wrapKey(key, secret, context);
    for (const tampered of [
      { ...wrapped, ciphertext: flip(wrapped.ciphertext) },
      { ...wrapped, iv: flip(wrapped.iv) },
      { ...wrapped, tag: flip(wrapped.tag, 15) },
      { ...wrapped, tag: wrapped.tag.slice(0, 10) },
      { ...wrapped, iv: '!!not base64url!!' },
    ]) {
      expect(() => unwrapKey(key, tampered, context)).toThrow(expect.objectContaining({ code: 'INTEGRITY' }));
    }
  });

  it('refuses a wrong key', () => {
    const wrapped = wrapKey(key, secret, context);
    expect(() => unwrapKey(Buffer.alloc(32, 8), wrapped, context)).toThrow(expect.objectContaining({ code: 'INTEGRITY' }));
  });

  it('refuses a ciphertext moved to another record, user or wrapping key (AAD binding)', () => {
    const wrapped = wrapKey(key, secret, context);
    for (const moved of [
      { ...context, dataKey: 'dk2' },
      { ...context, user: 'mallory' },
      { ...context, primaryKey: 'pk2' },
      { ...context, kind: 'primary-key' },
      { ...context, wrappingKeyId: 'k2' },
      { ...context, extra: 'x' },
    ]) {
      expect(() => unwrapKey(key, wrapped, moved)).toThrow(expect.objectContaining({ code: 'INTEGRITY' }));
    }
  });

  it('says nothing secret in its error', () => {
    const wrapped = wrapKey(key, secret, context);
    try {
      unwrapKey(Buffer.alloc(32, 8), wrapped, context);
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toMatch(/failed authentication/);
      expect(message).not.toContain(wrapped.ciphertext);
      expect(message).not.toContain(key.toString('base64'));
    }
    expect.assertions(3);
  });
});
