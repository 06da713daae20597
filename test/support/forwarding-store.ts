import type { ObjectStore } from '../../shared/store/object-store.js';

/**
 * A store that passes every call to `inner`: tests extend it and override the one call they watch
 * or interfere with (another instance's turn, a count), so the rest stays the real store.
 */
export class ForwardingStore implements ObjectStore {
  constructor(protected readonly inner: ObjectStore) {}
  get(key: string) {
    return this.inner.get(key);
  }
  create(key: string, body: Buffer) {
    return this.inner.create(key, body);
  }
  replace(key: string, body: Buffer, etag: string) {
    return this.inner.replace(key, body, etag);
  }
  write(key: string, body: Buffer, expected: string | null) {
    return this.inner.write(key, body, expected);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string): AsyncIterable<string> {
    return this.inner.list(prefix);
  }
  close() {
    return this.inner.close();
  }
}
