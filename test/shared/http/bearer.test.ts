import { describe, expect, it } from 'vitest';
import { bearerToken } from '../../../shared/http/bearer.js';

describe('bearerToken', () => {
  it('reads the token after the scheme, in any case, after one or more spaces', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('BEARER abc')).toBe('abc');
    expect(bearerToken('Bearer   abc')).toBe('abc');
    expect(bearerToken('  Bearer abc \t')).toBe('abc');
    expect(bearerToken('Bearer caf%C3%A9+au+lait')).toBe('caf%C3%A9+au+lait'); // never decoded
    expect(bearerToken('Bearer a.b-c_d~e+f/g==')).toBe('a.b-c_d~e+f/g==');
    // BigDL KMS's tokens are free text: spaces inside are the token's, kept as sent.
    expect(bearerToken('Bearer two words')).toBe('two words');
    expect(bearerToken('Bearer two  words ')).toBe('two  words');
  });

  it('answers undefined without a header, null for a header that is not one Bearer credential', () => {
    expect(bearerToken(undefined)).toBeUndefined();
    for (const header of [
      '',
      ' ',
      'Bearer',
      'Bearer ',
      'Bearer  ',
      'Bearerabc',
      'Bearer\tabc',
      'Bearer a\tb',
      'Basic YTpi',
      'Token abc',
      'Bearer: abc',
      'xBearer abc',
      'Bearer abc\n',
      'Bearer ab\u00a0c',
    ]) {
      expect(bearerToken(header), JSON.stringify(header)).toBeNull();
    }
  });

  it('takes a header given once from a list, and refuses one given twice', () => {
    expect(bearerToken(['Bearer abc'])).toBe('abc');
    expect(bearerToken(['Bearer abc', 'Bearer abc'])).toBeNull();
    expect(bearerToken(['Bearer abc', 'Bearer other'])).toBeNull();
    expect(bearerToken([])).toBeNull();
  });

  it('reads very long values whole, in linear time', () => {
    const token = 'x'.repeat(1 << 20);
    expect(bearerToken(`Bearer ${token}`)).toBe(token);
    const started = performance.now();
    expect(bearerToken(`Bearer ${' '.repeat(1 << 20)}x\ty`)).toBeNull();
    expect(bearerToken(`Bearer ${'x '.repeat(1 << 19)}\n`)).toBeNull();
    expect(bearerToken(`Bearer ${'x'.repeat(1 << 20)} `.repeat(2))).toBe(`${'x'.repeat(1 << 20)} Bearer ${'x'.repeat(1 << 20)}`);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
