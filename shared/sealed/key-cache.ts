import type { RecipientAgreement } from './jwe.js';

/** How often a cache zeroes and drops its expired entries, whether they are asked for or not. */
export const SWEEP_INTERVAL_MS = 10_000;

/**
 * Keys derived from key agreements (key encryption keys, or direct content keys), kept for a
 * bounded time, so that a client reusing one ephemeral key (`epk`) or one response key for a while
 * costs one X25519 agreement per key instead of one per message (docs/sealed-channel.md). Bounded
 * in count (least recently used dropped first) and in lifetime: an entry expires `lifetimeMs` after
 * it was made, however often it is used, and is zeroed and dropped when next asked for or within
 * SWEEP_INTERVAL_MS. Entries handed out are copies (their `key` a fresh buffer), and every entry is
 * zeroed when dropped, so callers may wipe what they get.
 */
export class KeyCache<V extends { readonly key: Buffer }> {
  readonly #entries = new Map<string, { readonly value: V; readonly expiresAt: number }>();
  readonly #sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly maxEntries: number,
    private readonly lifetimeMs: number,
    private readonly now: () => number = Date.now,
  ) {
    if (lifetimeMs > 0 && maxEntries > 0) this.#sweeper = setInterval(() => this.sweep(), Math.min(SWEEP_INTERVAL_MS, lifetimeMs)).unref();
  }

  /** A copy of the entry for `key`, or undefined if none or expired. */
  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    if (entry.expiresAt <= this.now()) {
      entry.value.key.fill(0);
      return undefined;
    }
    this.#entries.set(key, entry); // most recently used last
    return { ...entry.value, key: Buffer.from(entry.value.key) };
  }

  /** Keeps a copy of `value` for `key` for the lifetime; nothing when the lifetime is 0. */
  set(key: string, value: V): void {
    if (this.lifetimeMs <= 0 || this.maxEntries <= 0) return;
    this.#entries.get(key)?.value.key.fill(0);
    this.#entries.delete(key);
    while (this.#entries.size >= this.maxEntries) {
      const [oldest, entry] = this.#entries.entries().next().value!;
      entry.value.key.fill(0);
      this.#entries.delete(oldest);
    }
    this.#entries.set(key, { value: { ...value, key: Buffer.from(value.key) }, expiresAt: this.now() + this.lifetimeMs });
  }

  /** Zeroes and drops the expired entries (on a timer; a test may call it). */
  sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt > now) continue;
      entry.value.key.fill(0);
      this.#entries.delete(key);
    }
  }

  /** Zeroes and drops every entry. */
  clear(): void {
    for (const { value } of this.#entries.values()) value.key.fill(0);
    this.#entries.clear();
  }

  /** Zeroes and drops every entry, and stops the sweeps: the cache is not used again (the service key changed). */
  close(): void {
    clearInterval(this.#sweeper);
    this.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** The caches of one service key: request keys by `epk`, answer agreements by response key. */
export interface SealedKeyCaches {
  readonly rootKeyId: string;
  readonly requests: KeyCache<{ readonly key: Buffer }>;
  readonly answers: KeyCache<RecipientAgreement>;
}

/** At most this many keys of each kind: a few MB, far more clients than one instance serves at once. */
const MAX_CACHED_KEYS = 10_000;
/** The longest a client may reuse a key, and the server an answer's ephemeral key: one hour. */
export const MAX_KEY_REUSE_SECONDS = 3600;

export function sealedKeyCaches(rootKeyId: string, reuseSeconds: number, now: () => number = Date.now): SealedKeyCaches {
  const lifetimeMs = Math.min(reuseSeconds, MAX_KEY_REUSE_SECONDS) * 1000;
  return { rootKeyId, requests: new KeyCache(MAX_CACHED_KEYS, lifetimeMs, now), answers: new KeyCache(MAX_CACHED_KEYS, lifetimeMs, now) };
}
