import { metricsHooks, type StorageOperation, type StorageOutcome } from '../metrics/hooks.js';
import type { ObjectStore, StoredObject, Written } from './object-store.js';

/** Counts and times every storage call (shared/metrics/hooks.ts); a no-op hook when metrics are off. */
export class MeteredObjectStore implements ObjectStore {
  constructor(private readonly inner: ObjectStore) {}

  get(key: string): Promise<StoredObject | undefined> {
    return metered(
      'get',
      () => this.inner.get(key),
      () => 'ok',
    );
  }

  create(key: string, body: Buffer): Promise<boolean> {
    return metered('create', () => this.inner.create(key, body), conflictUnless);
  }

  replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    return metered('replace', () => this.inner.replace(key, body, etag), conflictUnless);
  }

  write(key: string, body: Buffer, expected: string | null): Promise<Written | undefined> {
    return metered(
      expected === null ? 'create' : 'replace',
      () => this.inner.write(key, body, expected),
      (written) => (written === undefined ? 'conflict' : 'ok'),
    );
  }

  delete(key: string): Promise<void> {
    return metered(
      'delete',
      () => this.inner.delete(key),
      () => 'ok',
    );
  }

  /** One operation per listing, timed until it ends (or its reader stops early). */
  async *list(prefix: string): AsyncIterable<string> {
    const started = process.hrtime.bigint();
    let outcome: StorageOutcome = 'error';
    try {
      yield* this.inner.list(prefix);
      outcome = 'ok';
    } finally {
      metricsHooks.storage('list', outcome, secondsSince(started));
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const conflictUnless = (done: boolean): StorageOutcome => (done ? 'ok' : 'conflict');

async function metered<T>(operation: StorageOperation, call: () => Promise<T>, outcomeOf: (value: T) => StorageOutcome): Promise<T> {
  const started = process.hrtime.bigint();
  let outcome: StorageOutcome = 'error';
  try {
    const value = await call();
    outcome = outcomeOf(value);
    return value;
  } finally {
    metricsHooks.storage(operation, outcome, secondsSince(started));
  }
}

function secondsSince(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}
