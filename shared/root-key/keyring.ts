import { unwrapKey } from '../crypto/aead.js';
import { ROOT_KEY_ID_PATTERN } from '../crypto/root-key-id.js';
import { BoundedCache } from '../cache.js';
import { KmsError } from '../errors.js';
import { contexts, decodePreviousRootKey, type PreviousRootKeyRecord } from '../keys/records.js';
import { layout, listedName } from '../keys/layout.js';
import { log } from '../log.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKey, RootKeySource } from './source.js';

/**
 * Bounds on the walk through stored links, which whoever writes storage can plant by the thousand:
 * successors followed per root key (one per rotation, plus the few an abandoned rotation leaves), and
 * link records read per resolution (a real walk reads one per rotation not yet rewrapped).
 */
const MAX_SUCCESSORS = 8;
const MAX_LINK_READS = 256;
/** Root key ids remembered as unreachable, per current root key (and for a while: storage may be cleaned up). */
const MAX_DEAD_ENDS = 1024;
const DEAD_END_TTL_MS = 5 * 60_000;

/**
 * The root keys a function can use: the current one from its source, and previous ones that
 * records may still name (during or after an interrupted rotation), each stored wrapped under its
 * successor. Unwrapped previous keys are kept in memory only.
 */
export class RootKeyring {
  readonly #previous = new Map<string, Buffer>();
  /**
   * Ids from which no link leads to the current root key `forCurrent`, or from which the walk
   * exceeded a bound: asked again, they answer at once instead of walking again.
   */
  #deadEnds = { forCurrent: '', ids: new BoundedCache<string, DeadEnd>(MAX_DEAD_ENDS, DEAD_END_TTL_MS) };
  /** Walks under way, so that concurrent reads (a rewrap's workers) of one id walk once. */
  readonly #walks = new Map<string, Promise<Buffer | undefined>>();

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
    // Ids come from stored records: one that is no root key id never names a folder to list.
    if (!ROOT_KEY_ID_PATTERN.test(id)) throw new KmsError('INTEGRITY', 'a stored key names a root key id of another form: storage was tampered with');
    const known = this.#previous.get(id);
    if (known !== undefined) return known;
    const found = await this.#resolve(id, current);
    if (found !== undefined) return found;
    // No link led to our current key: the root key may have been rotated elsewhere meanwhile.
    current = await this.current({ refresh: true });
    if (current.id === id) return current.key;
    const retried = await this.#resolve(id, current);
    if (retried !== undefined) return retried;
    throw new KmsError('INTEGRITY', 'a stored key names a root key this KMS cannot reach');
  }

  /** One bounded walk from `id` to a key we hold (shared by concurrent callers), or undefined. */
  #resolve(id: string, current: RootKey): Promise<Buffer | undefined> {
    const walkKey = `${current.id}\0${id}`;
    let walk = this.#walks.get(walkKey);
    if (walk === undefined) {
      walk = this.#walk(id, current).finally(() => this.#walks.delete(walkKey));
      this.#walks.set(walkKey, walk);
    }
    return walk;
  }

  async #walk(id: string, current: RootKey): Promise<Buffer | undefined> {
    if (this.#deadEnds.forCurrent !== current.id) this.#deadEnds = { forCurrent: current.id, ids: new BoundedCache(MAX_DEAD_ENDS, DEAD_END_TTL_MS) };
    const deadEnds = this.#deadEnds.ids;
    const deadEnd = deadEnds.get(id);
    if (deadEnd?.refusal !== undefined) throw deadEnd.refusal;
    if (deadEnd !== undefined) return undefined;
    const walk: Walk = { current, visited: new Set([id]), reads: 0, deadEnds, refusal: undefined };
    let path: Path | undefined;
    try {
      path = await this.#findPath(id, walk);
    } catch (error) {
      if (error === walk.refusal) deadEnds.set(id, { refusal: walk.refusal });
      throw error;
    }
    if (path === undefined) {
      // The walk was complete: no id it reached leads to the current key either.
      for (const visited of walk.visited) deadEnds.set(visited, {});
      return undefined;
    }
    // Unwrap back down: each link's key is its successor's, the last one's a key we held.
    let key = path.heldKey;
    for (const record of path.links.reverse()) {
      key = unwrapKey(key, record.wrapped, contexts.previousRootKey(record));
      this.#previous.set(record.id, key);
    }
    return key;
  }

  /**
   * Depth-first through the successors of `id`, each id entered once per walk and known dead ends
   * never, until a link wrapped under a key we hold. Undefined when there is none; a refusal
   * (INTEGRITY) when the graph exceeds a bound.
   */
  async #findPath(id: string, walk: Walk): Promise<Path | undefined> {
    const links = await this.#successorLinks(id, walk);
    for (const record of links) {
      const heldKey = record.wrappedUnder === walk.current.id ? walk.current.key : this.#previous.get(record.wrappedUnder);
      if (heldKey !== undefined) return { links: [record], heldKey };
    }
    for (const record of links) {
      const next = record.wrappedUnder;
      if (walk.visited.has(next) || walk.deadEnds.get(next) !== undefined) continue;
      walk.visited.add(next);
      const rest = await this.#findPath(next, walk);
      if (rest !== undefined) return { links: [record, ...rest.links], heldKey: rest.heldKey };
    }
    return undefined;
  }

  /** The links storing `id` under a successor; usually one, more where a rotation was abandoned. */
  async #successorLinks(id: string, walk: Walk): Promise<PreviousRootKeyRecord[]> {
    const links: PreviousRootKeyRecord[] = [];
    let listed = 0;
    for await (const key of this.store.list(layout.successorsOf(id))) {
      if (++listed > MAX_SUCCESSORS || ++walk.reads > MAX_LINK_READS) {
        walk.refusal = new KmsError(
          'INTEGRITY',
          `storage holds a root-key link graph this KMS will not follow (more than ${MAX_SUCCESSORS} successors of one root key, or more than ${MAX_LINK_READS} links to read): it was tampered with`,
        );
        throw walk.refusal;
      }
      if (listedName.previousRootKey(key)?.id !== id) {
        // No KMS writes such a name: planted. Reported, never read (walks are bounded and remembered).
        log.warn('root key links', new KmsError('INTEGRITY', `storage holds an object the KMS never writes, ignored: ${JSON.stringify(key)}`));
        continue;
      }
      const object = await this.store.get(key);
      if (object === undefined) continue;
      const record = decodePreviousRootKey(object.body, id);
      if (key === layout.previousRootKey(id, record.wrappedUnder)) links.push(record);
    }
    return links;
  }
}

interface Walk {
  readonly current: RootKey;
  readonly visited: Set<string>;
  reads: number;
  readonly deadEnds: BoundedCache<string, DeadEnd>;
  /** Set when a bound was exceeded: the error the walk ends with. */
  refusal: KmsError | undefined;
}

/** No path to the current key from there; `refusal` when the graph from there exceeded a bound. */
interface DeadEnd {
  readonly refusal?: KmsError;
}

/** Links from the id asked for, in order, up to one wrapped under `heldKey`. */
interface Path {
  readonly links: PreviousRootKeyRecord[];
  readonly heldKey: Buffer;
}
