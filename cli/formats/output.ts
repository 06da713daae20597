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
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { publish, syncPath, tempBeside } from '../../shared/fs/durable.js';
import { KmsError } from '../../shared/errors.js';
import { removeIfInterrupted } from '../interrupt.js';
import { stdoutWritable } from '../io.js';

export interface OutputOptions {
  /** Replace an existing file at the target (default: refuse, with KmsError('CONFLICT')). */
  readonly overwrite?: boolean;
}

export async function writeOutput(target: string, source: Readable, transforms: readonly Transform[] = [], options: OutputOptions = {}): Promise<void> {
  if (target === '-') {
    await pipeline([source, ...transforms, stdoutWritable()]);
    return;
  }
  const temp = tempBeside(target);
  // Interrupted (Ctrl-C) part way, the temporary file holds what was decrypted so far: removed.
  const kept = removeIfInterrupted(temp);
  try {
    try {
      await pipeline([source, ...transforms, createWriteStream(temp, { flags: 'wx', mode: 0o600 })]);
      await syncPath(temp);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    // publish removes the temporary file whatever happens.
    if (!(await publish(temp, target, { replace: options.overwrite === true }))) throw new KmsError('CONFLICT', `${target} exists; nothing was written`);
  } catch (error) {
    throw asTarget(error, temp, target);
  } finally {
    kept();
  }
}

/**
 * A file system error on the hidden temporary file, said as one on `target`: the user named the
 * target and never sees the temporary name (a missing directory, a read-only one).
 */
function asTarget(error: unknown, temp: string, target: string): unknown {
  const { code, syscall, path } = error as NodeJS.ErrnoException;
  if (path !== temp || typeof code !== 'string') return error;
  return Object.assign(new Error(`${code}: ${syscall ?? 'open'} ${target}`), { code, syscall: syscall ?? 'open', path: target });
}
