import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { KmsError } from '../errors.js';
import { assertObjectKey, assertPrefix } from './keys.js';
import type { ObjectStore, StoredObject } from './object-store.js';

const TEMP_PREFIX = '.tmp-';
const LOCK_SUFFIX = '.lock';
/** A replace lock older than this was left by a crashed writer. */
const STALE_LOCK_MS = 30_000;

/**
 * The embedded store: one file per object under `<dir>/objects`. Crash-safe: every write goes to a
 * temporary file that is fsynced, then linked (create: fails if the name exists, atomically) or
 * renamed (replace) into place, and the folder is fsynced. Safe across processes sharing the folder.
 */
export class FsObjectStore implements ObjectStore {
  readonly #root: string;

  constructor(dataDir: string) {
    this.#root = join(dataDir, 'objects');
  }

  async get(key: string): Promise<StoredObject | undefined> {
    assertObjectKey(key);
    let body: Buffer;
    try {
      body = await readFile(this.#path(key));
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return undefined;
      throw unavailable(error);
    }
    return { body, etag: etagOf(body) };
  }

  async create(key: string, body: Buffer): Promise<boolean> {
    assertObjectKey(key);
    const path = this.#path(key);
    const temp = await this.#writeTemp(path, body);
    try {
      await link(temp, path);
    } catch (error) {
      if (isCode(error, 'EEXIST')) return false;
      throw unavailable(error);
    } finally {
      await unlink(temp).catch(() => undefined);
    }
    await fsyncDir(dirname(path));
    return true;
  }

  async replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    assertObjectKey(key);
    const path = this.#path(key);
    const release = await this.#lock(path);
    try {
      const current = await this.get(key);
      if (current === undefined || current.etag !== etag) return false;
      const temp = await this.#writeTemp(path, body);
      try {
        await rename(temp, path);
      } catch (error) {
        await unlink(temp).catch(() => undefined);
        throw unavailable(error);
      }
      await fsyncDir(dirname(path));
      return true;
    } finally {
      await release();
    }
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    try {
      await unlink(this.#path(key));
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return;
      throw unavailable(error);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertPrefix(prefix);
    const keys: string[] = [];
    await this.#walk(join(this.#root, prefix), prefix, keys);
    keys.sort();
    yield* keys;
  }

  async close(): Promise<void> {}

  #path(key: string): string {
    return join(this.#root, key);
  }

  async #walk(dir: string, prefix: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return;
      throw unavailable(error);
    }
    for (const entry of entries) {
      if (entry.name.startsWith(TEMP_PREFIX) || entry.name.endsWith(LOCK_SUFFIX)) continue;
      if (entry.isDirectory()) await this.#walk(join(dir, entry.name), `${prefix}${entry.name}/`, out);
      else if (entry.isFile()) out.push(`${prefix}${entry.name}`);
    }
  }

  async #writeTemp(path: string, body: Buffer): Promise<string> {
    const dir = dirname(path);
    const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    try {
      await mkdir(dir, { recursive: true });
      const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw unavailable(error);
    }
    return temp;
  }

  /** An exclusive lock file beside the object, for compare-and-swap across processes. */
  async #lock(path: string): Promise<() => Promise<void>> {
    const lockPath = `${path}${LOCK_SUFFIX}`;
    await mkdir(dirname(path), { recursive: true }).catch((error: unknown) => {
      throw unavailable(error);
    });
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(lockPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
        await handle.close();
        return () => unlink(lockPath).catch(() => undefined);
      } catch (error) {
        if (!isCode(error, 'EEXIST')) throw unavailable(error);
      }
      const age = await stat(lockPath).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > STALE_LOCK_MS) await unlink(lockPath).catch(() => undefined);
      if (attempt > 2000) throw new KmsError('STORAGE_UNAVAILABLE', 'storage is busy: a record stayed locked');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

function etagOf(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw unavailable(error);
  }
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

function unavailable(error: unknown): KmsError {
  if (error instanceof KmsError) return error;
  const code = typeof error === 'object' && error !== null ? String((error as { code?: unknown }).code ?? '') : '';
  return new KmsError('STORAGE_UNAVAILABLE', `the embedded store failed${code ? ` (${code})` : ''}`, { cause: error });
}
