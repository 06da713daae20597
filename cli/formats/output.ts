/**
 * Where decrypted (or encrypted) bytes go: all or nothing.
 *
 *   writeOutput(target, source, ...transforms, { overwrite? }) -> Promise<void>
 *
 * `target` is a path, or '-' for standard output. For a path the bytes go to a temporary file
 * (mode 0600, same directory, so the final step is a rename on one file system), which is fsynced and
 * then published under `target` only when the whole pipeline finished: a failed authentication, a
 * truncated input or any error leaves no output file and removes the temporary one. Without
 * `overwrite` an existing `target` is never replaced (published with link(), which fails if it
 * exists). Standard output cannot be taken back: what the transforms released is already written
 * when an error comes, so a caller must treat a failure as "discard what was printed".
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KmsError } from '../../shared/errors.js';

export interface OutputOptions {
  /** Replace an existing file at the target (default: refuse, with KmsError('CONFLICT')). */
  readonly overwrite?: boolean;
}

export async function writeOutput(target: string, source: Readable, transforms: readonly Transform[] = [], options: OutputOptions = {}): Promise<void> {
  if (target === '-') {
    await pipeline([source, ...transforms, process.stdout], { end: false });
    return;
  }
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  let published = false;
  try {
    await pipeline([source, ...transforms, createWriteStream(temp, { flags: 'wx', mode: 0o600 })]);
    await syncFile(temp);
    await publish(temp, target, options.overwrite === true);
    published = true;
    await syncDirectory(dirname(target));
  } finally {
    if (!published) await unlink(temp).catch(() => undefined);
  }
}

async function publish(temp: string, target: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    await rename(temp, target);
    return;
  }
  try {
    await link(temp, target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new KmsError('CONFLICT', `${target} exists; nothing was written`);
    throw error;
  }
  await unlink(temp);
}

/** Flushes the file's data to disk (fsync applies to the file, whichever descriptor asks). */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes the rename itself durable: a crash after we return keeps the file under its name. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
