/**
 * Untrusted object storage for wrapped keys (S3/MinIO/Ceph RGW, or the embedded filesystem store).
 * Keys are `/`-separated paths of safe names (see shared/names.ts). Bodies are small JSON records.
 * Every implementation passes test/shared/store/conformance.ts.
 */
export interface StoredObject {
  readonly body: Buffer;
  /** Opaque version tag for compare-and-swap (the S3 ETag without quotes). */
  readonly etag: string;
}

export interface Written {
  readonly etag: string | undefined;
}

export interface ObjectStore {
  /** The object, or undefined when absent. */
  get(key: string): Promise<StoredObject | undefined>;
  /**
   * Creates the object only if no object has that key. Atomic: of concurrent creates of one key
   * exactly one returns true; the others return false and change nothing.
   */
  create(key: string, body: Buffer): Promise<boolean>;
  /**
   * Replaces the object only if its current etag is `etag` (compare-and-swap). Returns false, and
   * changes nothing, when the object changed or vanished meanwhile.
   */
  replace(key: string, body: Buffer, etag: string): Promise<boolean>;
  /**
   * create (`expected` null) or replace (`expected` the etag), answering the written object's etag
   * as the server gave it, so that a writer that keeps a record (a lease) need not read it back,
   * where another writer may already have replaced it. undefined when the condition failed and
   * nothing changed; `etag` undefined when the write won but the server named no etag.
   */
  write(key: string, body: Buffer, expected: string | null): Promise<Written | undefined>;
  /** Deletes the object; deleting an absent object is not an error. */
  delete(key: string): Promise<void>;
  /** Every key under `prefix` (a `/`-terminated folder or ''), in lexicographic order. */
  list(prefix: string): AsyncIterable<string>;
  /** Releases connections; the store is unusable afterwards. */
  close(): Promise<void>;
}
