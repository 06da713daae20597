import { KmsError } from '../errors.js';

// A first character that is a letter or digit, as every name (shared/names.ts) and layout segment has:
// names starting with `.` are the embedded store's own files.
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/**
 * Object keys are built from validated names only, but the stores check again: a key that could
 * escape its folder (`..`, absolute paths, empty segments) is a bug, never a storage request.
 */
export function assertObjectKey(key: string): void {
  for (const segment of key.split('/')) {
    if (!SEGMENT.test(segment)) {
      throw new KmsError('INTERNAL', 'refusing an unsafe object key');
    }
  }
}

export function assertPrefix(prefix: string): void {
  if (prefix === '') return;
  if (!prefix.endsWith('/')) throw new KmsError('INTERNAL', 'a list prefix must end with /');
  assertObjectKey(prefix.slice(0, -1));
}
