/**
 * A file's bytes, up to a bound: a file's size says nothing for a device or a pipe (`/dev/zero`,
 * `<(…)` report 0), so the bound is kept while reading, and one byte past it refuses the file.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { BodyError, readBounded } from '../shared/http/body.js';

/** The bytes, or undefined when there are more than `max`. Errors opening or reading are thrown. */
export function readBoundedSync(path: string, max: number): Buffer | undefined {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(max + 1);
    let length = 0;
    for (let n = -1; n !== 0 && length <= max; length += n) n = readSync(fd, buffer, length, buffer.length - length, null);
    return length > max ? undefined : buffer.subarray(0, length);
  } finally {
    closeSync(fd);
  }
}

/** readBoundedSync, asynchronously: the request bodies' bounded loop (shared/http/body.ts) over the file. */
export async function readBoundedFile(path: string, max: number): Promise<Buffer | undefined> {
  const handle = await open(path, 'r');
  try {
    return await readBounded(handle.createReadStream({ autoClose: false }), max);
  } catch (error) {
    if (error instanceof BodyError && error.kind === 'too-large') return undefined;
    throw error;
  } finally {
    await handle.close();
  }
}
