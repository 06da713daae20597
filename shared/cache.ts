import { metricsHooks } from './metrics/hooks.js';

/**
 * A small bounded, expiring map (least recently inserted evicted first). Holds unwrapped keys and
 * verified credentials in memory only; `ttlMs` 0 or `maxEntries` 0 disables it.
 */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, { value: V; expires: number }>();

  /** `name`: counted as hits and misses under that name (shared/metrics/hooks.ts); unnamed caches are not. */
  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly name?: string,
  ) {}

  get(key: K): V | undefined {
    const value = this.#lookup(key);
    if (this.name !== undefined) metricsHooks.cache(this.name, value !== undefined);
    return value;
  }

  /**
   * The value if there is one and `answers` it; counted as a hit only then. A cached credential
   * that a wrong token does not match is a miss, or the hit counter would tell whoever can scrape
   * the metrics which users logged in lately, which one answer for both mistakes hides.
   */
  getIf(key: K, answers: (value: V) => boolean): V | undefined {
    const found = this.#lookup(key);
    const value = found !== undefined && answers(found) ? found : undefined;
    if (this.name !== undefined) metricsHooks.cache(this.name, value !== undefined);
    return value;
  }

  #lookup(key: K): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: K, value: V): void {
    if (this.maxEntries <= 0 || this.ttlMs <= 0) return;
    this.#entries.delete(key);
    if (this.#entries.size >= this.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: Date.now() + this.ttlMs });
  }

  delete(key: K): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }
}
