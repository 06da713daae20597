import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, realpath, stat, unlink, type FileHandle } from 'node:fs/promises';
import { constants, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { KmsError } from '../errors.js';
import { BodyError, readBounded } from '../http/body.js';
import { makeDirSynced, publish, writeSynced } from '../fs/durable.js';
import { assertObjectKey, assertPrefix } from './keys.js';
import type { ObjectStore, StoredObject, Written } from './object-store.js';

// The store's own files start with `.`, which no object key segment can (keys.ts): listing skips
// them and nothing else, and they never collide with an object, whatever its name ends with.
const TEMP_PREFIX = '.tmp-';
const LOCK_PREFIX = '.lock-';
/** Beside a lock being broken: whoever breaks a stale lock holds this one (see #breakIfStale). */
const BREAK_PREFIX = '.break-';
/** A temporary or replace lock older than this was left by a crashed writer, whoever it names. */
const STALE_MS = 30_000;
/** How long a replace waits for a lock: past the stale age, so that a crashed writer's is broken first. */
const LOCK_WAIT_MS = STALE_MS + 5_000;
/** This process's PID namespace (Linux: the inode of /proc/self/ns/pid), or '' where there is none to read. */
const PID_NAMESPACE = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid').replace(/\D/g, '');
  } catch {
    return '';
  }
})();
/**
 * Who writes a temporary or holds a lock: `<pid>@<host>@<pid namespace>`. A holder of this host
 * and PID namespace whose process is gone crashed (kill -9): its files are stale at once. Another
 * host's or namespace's pids mean nothing here (a shared volume; two containers with one
 * hostname, or one restarted in place): only the age can tell.
 */
const HOLDER = `${process.pid}@${hostname()}@${PID_NAMESPACE}`;
/**
 * The temporaries and locks this process is making or holds, by path (a count: several writers of
 * one process may wait on one lock). One that names HOLDER but is not here was left by an earlier
 * process with this pid, host and PID namespace: stale, though a process with that pid is alive.
 */
const OWN = new Map<string, number>();
const own = (path: string) => OWN.set(path, (OWN.get(path) ?? 0) + 1);
const disown = (path: string) => {
  const count = (OWN.get(path) ?? 1) - 1;
  if (count > 0) OWN.set(path, count);
  else OWN.delete(path);
};
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
    await this.#refuseLinkedFolder(dirname(this.#path(key)), key);
    return this.#read(key);
  }

  /** get(), its key and folder already checked. */
  async #read(key: string): Promise<StoredObject | undefined> {
    const body = await readObject(this.#path(key), key);
    return body === undefined ? undefined : { body, etag: etagOf(body) };
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
    await this.#refuseLinkedFolder(dirname(this.#path(key)), key);
    return (await (expected === null ? this.#create(key, body) : this.#replace(key, body, expected))) ? { etag: etagOf(body) } : undefined;
  }

  async #create(key: string, body: Buffer): Promise<boolean> {
    const path = this.#path(key);
    const temp = await this.#writeTemp(path, body);
    try {
      return await publish(temp, path, { replace: false });
    } catch (error) {
      throw unavailable(error);
    } finally {
      disown(temp);
    }
  }

  async #replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    const path = this.#path(key);
    const lock = await this.#lock(path);
    try {
      const current = await this.#read(key); // write() checked key and folder
      if (current === undefined || current.etag !== etag) return false;
      const temp = await this.#writeTemp(path, body);
      try {
        // A writer stalled past the stale age (a slow fsync, a stopped process) may have had its lock
        // broken, and another may have written since: it then writes nothing. (Not covered: a stall
        // between this check and the rename; nothing fences a rename to a lock.)
        if (!(await stillThere(lock.path, lock))) {
          await unlink(temp).catch(() => undefined);
          throw new KmsError('STORAGE_UNAVAILABLE', "storage is busy: a record's lock was lost while writing it; try again");
        }
        return await publish(temp, path, { replace: true });
      } catch (error) {
        throw unavailable(error);
      } finally {
        disown(temp);
      }
    } finally {
      await releaseNamed(lock);
    }
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    const path = this.#path(key);
    await this.#refuseLinkedFolder(dirname(path), key);
    const gone = (error: unknown) => isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR');
    try {
      await stat(path);
    } catch (error) {
      if (gone(error)) return;
      throw unavailable(error);
    }
    // Under the replace lock: a replace in flight would otherwise rename its body over the deleted
    // object, bringing it back, or over one created after the delete.
    const lock = await this.#lock(path);
    try {
      await unlink(path);
    } catch (error) {
      if (!gone(error)) throw unavailable(error);
    } finally {
      await releaseNamed(lock);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertPrefix(prefix);
    await this.#refuseLinkedFolder(join(this.#root, prefix), prefix);
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

  #realRoot: Promise<string> | undefined;

  /**
   * Whoever writes the folder could make a folder in it a link to a folder outside: reading,
   * writing, listing and deleting there would then reach files outside the store (a range's
   * `<n>.json`, say). The folder `dir` (one that may not exist yet) must resolve to where it is
   * under the store's own folder. Checked before each operation, not held during it: a link swapped
   * in between the check and the operation is not caught (that needs folder handles Node lacks).
   */
  async #refuseLinkedFolder(dir: string, key: string): Promise<void> {
    let real: string;
    try {
      real = await realpath(dir);
    } catch (error) {
      if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return;
      throw unavailable(error);
    }
    this.#realRoot ??= realpath(this.#root).catch(() => this.#root);
    const expected = join(await this.#realRoot, relative(this.#root, dir));
    if (real !== expected) throw new KmsError('INTEGRITY', `a folder on the way to ${key} is a link, which this store never makes: storage was tampered with`);
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
      const key = `${prefix}${entry.name}`;
      // No key is longer than S3 allows, so nothing deeper is one: a planted chain of thousands of
      // folders is not walked until its path is too long to open (which would stop every listing).
      if (Buffer.byteLength(key) > MAX_KEY_BYTES) continue;
      if (entry.isDirectory()) await this.#walk(join(dir, entry.name), `${key}/`, out);
      else if (entry.isFile() && !entry.name.startsWith('.')) out.push(key);
    }
  }

  async #sweep(dir: string): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(
      entries.map(async (entry) => {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) return this.#sweep(path);
        if (entry.name.startsWith(LOCK_PREFIX)) return breakIfStale(path);
        if (entry.name.startsWith(BREAK_PREFIX)) return removeIfStale(path);
        if (!entry.name.startsWith(TEMP_PREFIX)) return;
        // A temporary's name is its own (`.tmp-<holder>-<16 hex>`): nobody else writes it, so removing a stale one races with nothing.
        const mtime = await stat(path).then(
          (info) => info.mtimeMs,
          () => undefined,
        );
        if (mtime !== undefined && isStale(path, entry.name.slice(TEMP_PREFIX.length, -TEMP_RANDOM_SUFFIX), mtime)) await unlink(path).catch(() => undefined);
      }),
    );
  }

  /** A synced temporary beside `path`, named for this process; the caller publishes it, then disowns it. */
  async #writeTemp(path: string, body: Buffer): Promise<string> {
    const dir = dirname(path);
    const temp = join(dir, `${TEMP_PREFIX}${HOLDER}-${randomBytes(8).toString('hex')}`);
    own(temp);
    try {
      await makeDirSynced(dir);
      await writeSynced(temp, body);
    } catch (error) {
      await unlink(temp).catch(() => undefined);
      disown(temp);
      throw unavailable(error);
    }
    return temp;
  }

  /**
   * An exclusive lock file beside the object, for compare-and-swap across processes. It names its
   * holder from the moment it exists (written aside, then linked): a writer killed while taking it
   * never leaves a lock that looks like a live writer's. A stale one is broken; a live one is
   * waited for, past the stale age.
   */
  async #lock(path: string): Promise<Held> {
    const lockPath = join(dirname(path), `${LOCK_PREFIX}${basename(path)}`);
    // Only there to take: the object's own write (#writeTemp) makes the folder durable, once.
    await mkdir(dirname(path), { recursive: true }).catch((error: unknown) => {
      throw unavailable(error);
    });
    for (const deadline = Date.now() + LOCK_WAIT_MS; ;) {
      const held = await createNamed(lockPath);
      if (held !== undefined) return held;
      await breakIfStale(lockPath);
      if (Date.now() > deadline) throw new KmsError('STORAGE_UNAVAILABLE', 'storage is busy: a record stayed locked');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

/**
 * A lock this process took: its path and the file it put there, kept open until released so that
 * its inode cannot be given to another file meanwhile (a lock broken and taken again is another
 * file, with another inode, only while this one is open).
 */
interface Held {
  readonly path: string;
  readonly handle: FileHandle;
  readonly dev: number;
  readonly ino: number;
}

/**
 * Creates `path` holding HOLDER, whole or not at all, and owns it; undefined when it exists. Not
 * synced: a lock need not survive a power loss.
 */
async function createNamed(path: string): Promise<Held | undefined> {
  const temp = join(dirname(path), `${TEMP_PREFIX}${HOLDER}-${randomBytes(8).toString('hex')}`);
  own(temp);
  own(path); // before it exists: a writer of this process that reads it meanwhile must see it live
  let handle: FileHandle | undefined;
  let held: Held | undefined;
  try {
    handle = await open(temp, 'wx', 0o600);
    await handle.writeFile(HOLDER);
    await link(temp, path);
    const { dev, ino } = await handle.stat();
    held = { path, handle, dev, ino };
    return held;
  } catch (error) {
    if (isCode(error, 'EEXIST')) return undefined;
    throw unavailable(error);
  } finally {
    if (held === undefined) {
      disown(path);
      await handle?.close().catch(() => undefined);
    }
    await unlink(temp).catch(() => undefined);
    disown(temp);
  }
}

/**
 * Whether `file` (a device and inode, held open by the caller so that neither is reused) is still
 * the one at `path`: not removed, nor replaced by another (a lock broken as stale and taken again).
 */
async function stillThere(path: string, file: { readonly dev: number; readonly ino: number }): Promise<boolean> {
  const now = await stat(path).catch(() => undefined);
  return now !== undefined && now.ino === file.ino && now.dev === file.dev;
}

/** Removes the lock taken, unless it was broken meanwhile: then the file there is another holder's. */
async function releaseNamed(lock: Held): Promise<void> {
  try {
    if (await stillThere(lock.path, lock)) await unlink(lock.path).catch(() => undefined);
  } finally {
    await lock.handle.close().catch(() => undefined);
    disown(lock.path);
  }
}

/**
 * Removes the lock at `lockPath` if its holder is gone. Breakers go one at a time, under the break
 * lock beside it: only a breaker removes another's lock, so under it the lock judged stale is still
 * the one there when it is removed, never a live writer's that took its place. The open handle
 * keeps its inode from being reused meanwhile. A breaker that crashed leaves a break lock, stale in
 * turn, which the next one removes.
 */
async function breakIfStale(lockPath: string): Promise<void> {
  const handle = await open(lockPath, 'r').catch(() => undefined);
  if (handle === undefined) return; // released meanwhile
  try {
    const [judged, holder] = await Promise.all([handle.stat(), handle.readFile('utf8')]);
    if (!isStale(lockPath, holder, judged.mtimeMs)) return;
    const breakPath = join(dirname(lockPath), `${BREAK_PREFIX}${basename(lockPath).slice(LOCK_PREFIX.length)}`);
    const breaking = await createNamed(breakPath);
    if (breaking === undefined) return removeIfStale(breakPath);
    try {
      if (await stillThere(lockPath, judged)) await unlink(lockPath).catch(() => undefined);
    } finally {
      await releaseNamed(breaking);
    }
  } catch {
    // Best effort: the lock is judged again on the next try.
  } finally {
    await handle.close();
  }
}

/**
 * Removes a break lock whose holder is gone (a breaker that crashed while breaking), if it is still
 * the one judged: not a live breaker's that took its place. (Between that check and the removal
 * nothing guards it; that needs a crashed breaker and three others at once.)
 */
async function removeIfStale(path: string): Promise<void> {
  const handle = await open(path, 'r').catch(() => undefined);
  if (handle === undefined) return;
  try {
    const [judged, holder] = await Promise.all([handle.stat(), handle.readFile('utf8')]);
    if (!isStale(path, holder, judged.mtimeMs)) return;
    if (await stillThere(path, judged)) await unlink(path).catch(() => undefined);
  } catch {
    // judged again next time
  } finally {
    await handle.close();
  }
}

/** Whether a temporary or lock (at `path`, naming `holder`, last written at `mtimeMs`) was left by a crashed writer (see HOLDER, OWN). */
function isStale(path: string, holder: string, mtimeMs: number): boolean {
  // Only past: a lock dated ahead (another host's clock) is not stale by its age until this clock has
  // passed its date by 30 s; judged by the distance either way, a host whose clock is behind would
  // break every live lock at once.
  if (Date.now() - mtimeMs > STALE_MS) return true;
  if (holder === HOLDER) return !OWN.has(path);
  const [pid, host, namespace] = holder.split('@');
  // Another host's or PID namespace's (or emptied by a power loss): only age tells.
  if (host !== hostname() || namespace !== PID_NAMESPACE || !/^\d+$/.test(pid ?? '')) return false;
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

/** Records are small; the S3 store refuses answers past the same bound. */
const MAX_OBJECT_BYTES = 16 * 1024 * 1024;
/** S3's longest object key (UTF-8 bytes): the key layout stays far below it, as the S3 store needs. */
const MAX_KEY_BYTES = 1024;

/**
 * An object's bytes, or undefined when there is none. Whoever writes the folder could put a link
 * (to /dev/zero, or out of it), a named pipe (whose open waits for a writer, holding a thread) or a
 * huge file where a record is: none is read. A link or anything but a regular file is refused as
 * tampering, and more than MAX_OBJECT_BYTES as the S3 store refuses it.
 */
async function readObject(path: string, key: string): Promise<Buffer | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if (isCode(error, 'ENOENT') || isCode(error, 'ENOTDIR')) return undefined;
    if (isCode(error, 'ELOOP')) throw new KmsError('INTEGRITY', `the stored object ${key} is a link, which this store never writes: storage was tampered with`);
    throw unavailable(error);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new KmsError('INTEGRITY', `the stored object ${key} is not a regular file: storage was tampered with`);
    const tooLarge = () => new KmsError('STORAGE_UNAVAILABLE', `the stored object ${key} is larger than 16 MiB`);
    if (info.size > MAX_OBJECT_BYTES) throw tooLarge();
    // Bounded as it is read too (the file may grow meanwhile): the request bodies' loop.
    try {
      return await readBounded(handle.createReadStream({ autoClose: false }), MAX_OBJECT_BYTES);
    } catch (error) {
      throw error instanceof BodyError && error.kind === 'too-large' ? tooLarge() : unavailable(error instanceof BodyError ? error.cause : error);
    }
  } catch (error) {
    throw unavailable(error);
  } finally {
    await handle.close();
  }
}
