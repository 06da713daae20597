import { describe, expect, it } from 'vitest';
import { validateName, validateToken } from '../../shared/names.js';

describe('names', () => {
  it('accepts the documented charset', () => {
    for (const name of ['alice', 'pk1', 'A.b_c-d', '0', 'x'.repeat(64)]) expect(validateName('user', name)).toBe(name);
  });

  it('refuses traversal, separators, control characters and overlong names with INVALID_NAME', () => {
    for (const name of ['..', '.', '.hidden', 'a/b', 'a\\b', '../etc', 'a\u0000b', 'a\nb', 'x'.repeat(65), 'a b', 'ü', '-x', 'a%2Fb']) {
      expect(() => validateName('primaryKeyName', name)).toThrow(expect.objectContaining({ code: 'INVALID_NAME' }));
    }
  });

  it('refuses a missing name with BAD_REQUEST naming the parameter', () => {
    expect(() => validateName('primaryKeyName', undefined)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: 'missing primaryKeyName' }));
    expect(() => validateName('user', '')).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: 'missing user' }));
  });

  it('bounds tokens without echoing them', () => {
    expect(validateToken('a_token_string_for_the_user')).toBe('a_token_string_for_the_user');
    expect(() => validateToken(undefined)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: 'missing token' }));
    const long = 's'.repeat(1025);
    expect(() => validateToken(long)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => validateToken(`secret\u0001value`)).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST', message: expect.not.stringContaining('secret') as unknown }),
    );
  });

  it('refuses lone surrogates, which UTF-8 would turn into the one U+FFFD; pairs are kept', () => {
    for (const token of ['secret\ud800', '\udfffsecret', 'sec\ud83dret', 'secret\ud83d\ude00\ude00']) {
      expect(() => validateToken(token), JSON.stringify(token)).toThrow(
        expect.objectContaining({ code: 'BAD_REQUEST', message: 'token is not well-formed Unicode (a lone surrogate)' }),
      );
    }
    expect(validateToken('secret\ud83d\ude00')).toBe('secret\u{1f600}');
  });
});
