import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { KmsError } from '../errors.js';
import { publish, writeSynced } from '../fs/durable.js';
import { assertObjectKey, assertPrefix } from './keys.js';
import type { ObjectStore, StoredObject, Written } from './object-store.js';

// The store's own files start with `.`, which no object key segment can (keys.ts): listing skips
// them and nothing else, and they never collide with an object, whatever its name ends with.
const TEMP_PREFIX = '.tmp-';
const LOCK_PREFIX = '.lock-';
/** A temporary or replace lock older than this was left by a crashed writer, whoever it names. */
const STALE_MS = 30_000;
/**
 * Who writes a temporary or holds a lock: `<pid>@<host>`. A holder on this host whose process is
 * gone crashed (kill -9): its files are stale at once. Another host's pids mean nothing here (a
 * shared volume): only the age can tell.
 */
const HOLDER = `${process.pid}@${hostname()}`;
/** `-` and 16 hex digits end a temporary's name, after its holder. */
const TEMP_RANDOM_SUFFIX = 17;

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
    return (await this.write(key, body, null)) !== undefined;
  }

  async replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    return (await this.write(key, body, etag)) !== undefined;
  }

  /** The etag is the body's digest: what the next get() answers for it. */
  async write(key: string, body: Buffer, expected: string | null): Promise<Written | undefined> {
    assertObjectKey(key);
    return (await (expected === null ? this.#create(key, body) : this.#replace(key, body, expected))) ? { etag: etagOf(body) } : undefined;
  }

  async #create(key: string, body: Buffer): Promise<boolean> {
    const path = this.#path(key);
    const temp = await this.#writeTemp(path, body);
    try {
      return await publish(temp, path, { replace: false });
    } catch (error) {
      throw unavailable(error);
    }
  }

  async #replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    const path = this.#path(key);
    const release = await this.#lock(path);
    try {
      const current = await this.get(key);
      if (current === undefined || current.etag !== etag) return false;
      const temp = await this.#writeTemp(path, body);
      try {
        return await publish(temp, path, { replace: true });
      } catch (error) {
        throw unavailable(error);
      }
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

  /**
   * Removes what crashed writers left behind (temporaries, replace locks), never a live writer's;
   * called where the store is opened (from-config.ts). Best effort, never fails: a leftover it
   * misses is never listed, and a replace that meets a stale lock breaks it.
   */
  async removeLeftovers(): Promise<void> {
    await this.#sweep(this.#root);
  }

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
      if (entry.isDirectory()) await this.#walk(join(dir, entry.name), `${prefix}${entry.name}/`, out);
      else if (entry.isFile() && !entry.name.startsWith('.')) out.push(`${prefix}${entry.name}`);
    }
  }

  async #sweep(dir: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(
      entries.map(async (entry) => {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) return this.#sweep(path);
        const holder = entry.name.startsWith(TEMP_PREFIX)
          ? Promise.resolve(entry.name.slice(TEMP_PREFIX.length, -TEMP_RANDOM_SUFFIX)) // `.tmp-<holder>-<16 hex>`
          : entry.name.startsWith(LOCK_PREFIX)
            ? readFile(path, 'utf8').catch(() => '')
            : undefined;
        if (holder !== undefined && (await isStale(path, holder))) await unlink(path).catch(() => undefined);
      }),
    );
  }

  async #writeTemp(path: string, body: Buffer): Promise<string> {
    const dir = dirname(path);
    const temp = join(dir, `${TEMP_PREFIX}${HOLDER}-${randomBytes(8).toString('hex')}`);
    try {
      await mkdir(dir, { recursive: true });
      await writeSynced(temp, body);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      throw unavailable(error);
    }
    return temp;
  }

  /**
   * An exclusive lock file beside the object, for compare-and-swap across processes. It names its
   * holder from the moment it exists (written aside, then linked): a writer killed while taking it
   * never leaves a lock that looks like a live writer's.
   */
  async #lock(path: string): Promise<() => Promise<void>> {
    const lockPath = join(dirname(path), `${LOCK_PREFIX}${basename(path)}`);
    await mkdir(dirname(path), { recursive: true }).catch((error: unknown) => {
      throw unavailable(error);
    });
    for (let attempt = 0; ; attempt++) {
      if (await createNamed(lockPath)) return () => unlink(lockPath).catch(() => undefined);
      if (
        await isStale(
          lockPath,
          readFile(lockPath, 'utf8').catch(() => ''),
        )
      )
        await unlink(lockPath).catch(() => undefined);
      if (attempt > 2000) throw new KmsError('STORAGE_UNAVAILABLE', 'storage is busy: a record stayed locked');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/** Creates `path` holding HOLDER, whole or not at all; false when it exists. Not synced: a lock need not survive a power loss. */
async function createNamed(path: string): Promise<boolean> {
  const temp = join(dirname(path), `${TEMP_PREFIX}${HOLDER}-${randomBytes(8).toString('hex')}`);
  try {
    await writeFile(temp, HOLDER, { flag: 'wx', mode: 0o600 });
    await link(temp, path);
    return true;
  } catch (error) {
    if (isCode(error, 'EEXIST')) return false;
    throw unavailable(error);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/** Whether a temporary or lock was left by a crashed writer (see HOLDER). */
async function isStale(path: string, holder: Promise<string>): Promise<boolean> {
  const age = await stat(path).then(
    (s) => Date.now() - s.mtimeMs,
    () => 0,
  );
  if (age > STALE_MS) return true;
  const [pid, host] = (await holder).split('@');
  if (host !== hostname() || !/^\d+$/.test(pid ?? '')) return false; // another host's, or emptied by a power loss: only age tells
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (error) {
    return isCode(error, 'ESRCH');
  }
}

function etagOf(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

function unavailable(error: unknown): KmsError {
  if (error instanceof KmsError) return error;
  const code = typeof error === 'object' && error !== null ? String((error as { code?: unknown }).code ?? '') : '';
  return new KmsError('STORAGE_UNAVAILABLE', `the embedded store failed${code ? ` (${code})` : ''}`, { cause: error });
}
