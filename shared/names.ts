import { KmsError } from './errors.js';

/**
 * User and key names become parts of storage keys, so they are held to a safe charset: ASCII
 * letters, digits, `.`, `_`, `-`; starting with a letter or digit (so never `.` or `..`); at most
 * 64 characters. No `/`, no control characters, no percent-decoding surprises.
 */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const NAME_RULE = '1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit';

export type NameKind = 'user' | 'primaryKeyName' | 'dataKeyName';

export function validateName(kind: NameKind, value: string | undefined): string {
  if (value === undefined || value === '') throw new KmsError('BAD_REQUEST', `missing ${kind}`);
  if (!NAME_PATTERN.test(value)) throw new KmsError('INVALID_NAME', `invalid ${kind}: use ${NAME_RULE}`);
  return value;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Tokens are opaque secrets; bounded so hashing cost stays bounded. Never echoed. */
export const TOKEN_MAX_LENGTH = 1024;

export function validateToken(value: string | undefined): string {
  if (value === undefined || value === '') throw new KmsError('BAD_REQUEST', 'missing token');
  if (value.length > TOKEN_MAX_LENGTH) throw new KmsError('BAD_REQUEST', `token too long (at most ${TOKEN_MAX_LENGTH} characters)`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new KmsError('BAD_REQUEST', 'token contains control characters');
  // A lone surrogate (a JSON "\ud800" in a sealed credential) is hashed as UTF-8's U+FFFD, which
  // other tokens would then match.
  if (LONE_SURROGATE.test(value)) throw new KmsError('BAD_REQUEST', 'token is not well-formed Unicode (a lone surrogate)');
  return value;
}
