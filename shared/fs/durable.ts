/**
 * Files that appear whole or not at all, and stay after a crash: the embedded store's objects
 * (shared/store/fs-store.ts) and the command line's output files (cli/).
 *
 *   writeSynced(path, body, mode?) -> Promise<void>            a new file (never an existing one), fsynced
 *   publish(temp, target, { replace }) -> Promise<boolean>     temp becomes target; false: target exists
 *   createFile(target, body, mode?) -> Promise<boolean>        both, through a temporary beside target
 *   syncPath(path) -> Promise<void>                            fsync a file or a directory
 *   makeDirSynced(dir) -> Promise<void>                        mkdir -p, each new folder's entry (and dir's) fsynced
 *
 * Errors are Node's own (with `code` and `path`): each caller says them in its own terms.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Flushes a file's data, or a directory's entries, to disk (fsync applies whichever descriptor asks). */
export async function syncPath(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * `mkdir -p`, durable: a file published in a new folder stays after a power cut only if the folder's
 * own entry does too, so the parent of every folder this call created is fsynced. The parent of
 * `dir` is fsynced even when `dir` existed: another writer may have just made it, and not yet
 * fsynced its entry (or died before it could).
 */
export async function makeDirSynced(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return syncPath(dirname(dir));
  for (let created = dir; ; created = dirname(created)) {
    await syncPath(dirname(created));
    if (created === first || dirname(created) === created) return;
  }
}

/** Creates `path` with `mode` from the start (never readable by others, even briefly), writes and fsyncs it. */
export async function writeSynced(path: string, body: string | Uint8Array, mode = 0o600): Promise<void> {
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await handle.writeFile(body);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Puts the written, fsynced `temp` under `target`, on the same file system, and makes that
 * durable (the directory is fsynced). Without `replace` an existing target is kept, atomically
 * (link fails if the name exists): the answer is then false, and `temp` is removed either way.
 */
export async function publish(temp: string, target: string, options: { readonly replace: boolean }): Promise<boolean> {
  try {
    await (options.replace ? rename(temp, target) : link(temp, target));
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    if (!options.replace && (error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  // The data is already under target: a temporary name left behind is only a second name for it.
  if (!options.replace) await unlink(temp).catch(() => undefined);
  await syncPath(dirname(target));
  return true;
}

/** A temporary name beside `target` (same directory, so publishing is one rename or link), hidden. */
export function tempBeside(target: string): string {
  return join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
}

/** A new file holding `body`, all or nothing; an existing `target` is never replaced (false). */
export async function createFile(target: string, body: string | Uint8Array, mode = 0o600): Promise<boolean> {
  const temp = tempBeside(target);
  try {
    await writeSynced(temp, body, mode);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  return publish(temp, target, { replace: false });
}
