import { KmsError } from '../errors.js';

const SEGMENT = /^[A-Za-z0-9._-]{1,255}$/;

/**
 * Object keys are built from validated names only, but the stores check again: a key that could
 * escape its folder (`..`, absolute paths, empty segments) is a bug, never a storage request.
 */
export function assertObjectKey(key: string): void {
  const segments = key.split('/');
  for (const segment of segments) {
    if (!SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw new KmsError('INTERNAL', 'refusing an unsafe object key');
    }
  }
}

export function assertPrefix(prefix: string): void {
  if (prefix === '') return;
  if (!prefix.endsWith('/')) throw new KmsError('INTERNAL', 'a list prefix must end with /');
  assertObjectKey(prefix.slice(0, -1));
}
