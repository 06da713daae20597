import { randomBytes } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { ObjectStore } from './object-store.js';

/** What tee-kms runs on: checked against documentation and, for Ceph RGW 16.2.15, here (README: Storage). */
export const SUPPORTED_STORAGE =
  'Ceph RGW: unversioned buckets (16.2.15 ignores both conditions on versioned ones); MinIO: a release after August 2025 (older ones accept If-Match on a missing key); AWS S3';

/**
 * Checks that `store` honours the conditions every create (If-None-Match: *) and replace (If-Match)
 * rests on, on scratch keys under `probe/`: a server that ignores them lets a second enrolment take
 * over a user. Throws STORAGE_UNSAFE naming what was ignored; STORAGE_UNAVAILABLE when it cannot tell.
 * `where` names the storage in the message.
 */
export async function probeConditionalWrites(store: ObjectStore, where: string): Promise<void> {
  const id = randomBytes(8).toString('hex');
  const key = `probe/${id}.json`;
  const absent = `probe/${id}-absent.json`;
  const body = (step: string) => Buffer.from(JSON.stringify({ probe: id, step }));
  const ignored: string[] = [];
  try {
    if (!(await store.create(key, body('create')))) {
      ignored.push('it refused to create a new object with If-None-Match: *');
    } else {
      const created = await store.create(key, body('second create'));
      const first = await store.get(key);
      if (created || first?.body.equals(body('create')) !== true) ignored.push('it overwrote an existing object despite If-None-Match: *');
      if (first !== undefined) {
        const wrong = first.etag.replace(/.$/, (c) => (c === '0' ? '1' : '0'));
        if (await store.replace(key, body('wrong etag'), wrong)) ignored.push('it replaced an object whose ETag did not match If-Match');
        const current = (await store.get(key)) ?? first;
        if (!(await store.replace(key, body('right etag'), current.etag))) ignored.push('it refused a replace whose If-Match was the current ETag');
        if ((await store.replace(absent, body('absent'), current.etag)) || (await store.get(absent)) !== undefined) {
          ignored.push('it created a missing object on a replace with If-Match');
        }
      }
    }
  } finally {
    await Promise.all([store.delete(key), store.delete(absent)]).catch(() => undefined);
  }
  if (ignored.length > 0) {
    throw new KmsError(
      'STORAGE_UNSAFE',
      `${where} does not honour conditional writes, so a create could overwrite a user's record: ${ignored.join('; ')}. ` +
        `Use storage that honours If-None-Match: * and If-Match on PutObject (${SUPPORTED_STORAGE}), then restart.`,
    );
  }
}
