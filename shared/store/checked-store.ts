import { isKmsError } from '../errors.js';
import type { ObjectStore, StoredObject, Written } from './object-store.js';

/**
 * A store whose creates and replaces wait for a check of the storage (conditional-writes.ts), run
 * once per process. A STORAGE_UNSAFE verdict is kept: every later write fails with it. Any other
 * failure (storage unreachable) is not: the next write runs the check again. Reads, listings and
 * deletes are not gated: their outcome does not rest on conditions the server may ignore.
 */
export class CheckedObjectStore implements ObjectStore {
  readonly #inner: ObjectStore;
  readonly #check: () => Promise<void>;
  #checked: Promise<void> | undefined;

  constructor(inner: ObjectStore, check: () => Promise<void>) {
    this.#inner = inner;
    this.#check = check;
  }

  /** Runs the check, or joins the one under way, or repeats its kept verdict. Start it early: it costs round trips. */
  ready(): Promise<void> {
    return (this.#checked ??= this.#check().catch((error: unknown) => {
      if (!isKmsError(error, 'STORAGE_UNSAFE')) this.#checked = undefined;
      throw error;
    }));
  }

  get(key: string): Promise<StoredObject | undefined> {
    return this.#inner.get(key);
  }

  async create(key: string, body: Buffer): Promise<boolean> {
    await this.ready();
    return this.#inner.create(key, body);
  }

  async replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    await this.ready();
    return this.#inner.replace(key, body, etag);
  }

  async write(key: string, body: Buffer, expected: string | null): Promise<Written | undefined> {
    await this.ready();
    return this.#inner.write(key, body, expected);
  }

  delete(key: string): Promise<void> {
    return this.#inner.delete(key);
  }

  list(prefix: string): AsyncIterable<string> {
    return this.#inner.list(prefix);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/**
 * For a process's start (the lean host, the sealing service): runs the check beside the rest of
 * the start, and on STORAGE_UNSAFE writes one line and exits 1, so a pod crash-loops with a readable
 * log instead of serving. Other failures are left to the writes that meet them.
 */
export function exitIfStorageUnsafe(store: Promise<CheckedObjectStore>, program: string): void {
  store
    .then((s) => s.ready())
    .catch((error: unknown) => {
      if (!isKmsError(error, 'STORAGE_UNSAFE')) return;
      process.stderr.write(`${program}: cannot start: STORAGE_UNSAFE: ${error.message}\n`);
      process.exit(1);
    });
}
