import { unwrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { contexts, decodePreviousRootKey } from '../keys/records.js';
import { layout } from '../keys/layout.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKey, RootKeySource } from './source.js';

/** Longest chain of previous root keys we follow (one link per unfinished rotation). */
const MAX_CHAIN = 64;

/**
 * The root keys a function can use: the current one from its source, and previous ones that
 * records may still name (during or after an interrupted rotation), each stored wrapped under
 * its successor. Unwrapped previous keys are kept in memory only.
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

  /** The root key with this id: the current one, or a previous one through the stored chain. */
  async byId(id: string): Promise<Buffer> {
    let current = await this.current();
    if (current.id === id) return current.key;
    const known = this.#previous.get(id);
    if (known !== undefined) return known;
    try {
      return await this.#unwrapChain(id, current);
    } catch (error) {
      if (!(error instanceof KmsError) || error.code !== 'NOT_FOUND') throw error;
    }
    // The chain did not lead to our current key: the root key may have been rotated elsewhere.
    current = await this.current({ refresh: true });
    if (current.id === id) return current.key;
    try {
      return await this.#unwrapChain(id, current);
    } catch (error) {
      if (error instanceof KmsError && error.code === 'NOT_FOUND') {
        throw new KmsError('INTEGRITY', 'a stored key names a root key this KMS cannot reach');
      }
      throw error;
    }
  }

  /** Walks id → successor → … until a key we hold, then unwraps back down. */
  async #unwrapChain(id: string, current: RootKey): Promise<Buffer> {
    const chain = [];
    let cursor = id;
    let wrappingKey: Buffer | undefined;
    for (let depth = 0; depth < MAX_CHAIN; depth++) {
      const object = await this.store.get(layout.previousRootKey(cursor));
      if (object === undefined) throw new KmsError('NOT_FOUND', 'previous root key record missing');
      const record = decodePreviousRootKey(object.body, cursor);
      chain.push(record);
      if (record.wrappedUnder === current.id) wrappingKey = current.key;
      else wrappingKey = this.#previous.get(record.wrappedUnder);
      if (wrappingKey !== undefined) break;
      cursor = record.wrappedUnder;
    }
    if (wrappingKey === undefined) throw new KmsError('NOT_FOUND', 'previous root key chain too long');
    for (const record of chain.reverse()) {
      wrappingKey = unwrapKey(wrappingKey, record.wrapped, contexts.previousRootKey(record));
      this.#previous.set(record.id, wrappingKey);
    }
    return wrappingKey;
  }
}
