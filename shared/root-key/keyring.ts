import { unwrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { contexts, decodePreviousRootKey } from '../keys/records.js';
import { layout } from '../keys/layout.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKey, RootKeySource } from './source.js';

/** Longest chain of previous root keys we follow (one link per rotation not yet rewrapped). */
const MAX_CHAIN = 64;

/**
 * The root keys a function can use: the current one from its source, and previous ones that
 * records may still name (during or after an interrupted rotation), each stored wrapped under its
 * successor. Unwrapped previous keys are kept in memory only.
 */
export class RootKeyring {
  readonly #previous = new Map<string, Buffer>();

  constructor(
    readonly source: RootKeySource,
    private readonly store: ObjectStore,
  ) {}

  current(options?: { refresh?: boolean }): Promise<RootKey> {
    return this.source.current(options);
  }

  /**
   * The root key to wrap a new key under. Asked of the authority, not taken from the cache: another
   * function may have made a new root key current since this one last pulled it, and a key wrapped
   * under the retired one would stay readable with the retired shares.
   */
  async currentForWrapping(): Promise<RootKey> {
    const [authorityId, cached] = await Promise.all([this.source.currentId?.(), this.current()]);
    if (authorityId === undefined || authorityId === null || authorityId === cached.id) return cached;
    return this.current({ refresh: true });
  }

  /**
   * After wrapping under `usedId`: the root key that replaced it meanwhile, or undefined. A key
   * written in the moment a verification made another root key current may have been missed by its
   * rewrap; its creator rewraps it (see KeyStore.createPrimaryKey).
   */
  async replacedSince(usedId: string): Promise<RootKey | undefined> {
    const authorityId = await this.source.currentId?.();
    if (authorityId === undefined || authorityId === null || authorityId === usedId) return undefined;
    return this.current({ refresh: true });
  }

  /** The root key with this id: the current one, or a previous one through the stored links. */
  async byId(id: string): Promise<Buffer> {
    let current = await this.current();
    if (current.id === id) return current.key;
    const known = this.#previous.get(id);
    if (known !== undefined) return known;
    const found = await this.#resolve(id, current, 0);
    if (found !== undefined) return found;
    // No link led to our current key: the root key may have been rotated elsewhere meanwhile.
    current = await this.current({ refresh: true });
    if (current.id === id) return current.key;
    const retried = await this.#resolve(id, current, 0);
    if (retried !== undefined) return retried;
    throw new KmsError('INTEGRITY', 'a stored key names a root key this KMS cannot reach');
  }

  /** Follows id → successor links until a key we hold, then unwraps back down. */
  async #resolve(id: string, current: RootKey, depth: number): Promise<Buffer | undefined> {
    if (id === current.id) return current.key;
    const known = this.#previous.get(id);
    if (known !== undefined) return known;
    if (depth >= MAX_CHAIN) return undefined;
    // Usually one successor; more only where a rotation was abandoned before it installed its key.
    for await (const key of this.store.list(layout.successorsOf(id))) {
      const object = await this.store.get(key);
      if (object === undefined) continue;
      const record = decodePreviousRootKey(object.body, id);
      if (key !== layout.previousRootKey(id, record.wrappedUnder)) continue;
      const successorKey = await this.#resolve(record.wrappedUnder, current, depth + 1);
      if (successorKey === undefined) continue;
      const previousKey = unwrapKey(successorKey, record.wrapped, contexts.previousRootKey(record));
      this.#previous.set(id, previousKey);
      return previousKey;
    }
    return undefined;
  }
}
