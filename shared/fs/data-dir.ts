import { constants } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { KmsError } from '../errors.js';

/**
 * Creates the folder that `variable` names (parents too, 0700), or refuses it with a CONFIG error
 * naming the variable, the path and what to do: a regular file there or above it, no permission.
 * What a host calls at start, before anything else is written there.
 */
export async function ensureDataDir(path: string, variable: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode: 0o700 });
    await access(path, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    let why = '';
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      why = (await stat(path).then(
        (s) => !s.isDirectory(),
        () => false,
      ))
        ? ': it is a file, not a folder'
        : ': a part of the path is a file, not a folder';
    } else if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      why = ': this process may not create or write it';
    }
    throw new KmsError(
      'CONFIG',
      `${variable}: cannot use ${path} as a folder (${code}${why}); point ${variable} at a folder this process can create and write`,
      {
        cause: error,
      },
    );
  }
}
