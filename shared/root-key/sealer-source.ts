import type { KmsError } from '../errors.js';
import { log } from '../log.js';
import { isSealerOutage } from '../sealer-client/outage.js';
import type { SealerClient } from '../sealer-client/client.js';
import type { RootKey, RootKeySource } from './source.js';

export interface SealerRootKeySourceOptions {
  /** KMS_ROOT_KEY_REFRESH_SECONDS: how long a released key is used before the service is asked again. */
  readonly refreshMs: number;
  /** KMS_ROOT_KEY_GRACE_SECONDS: how long after its release a key may still be used while no sealing service answers. */
  readonly graceMs: number;
}

/** While in grace, the sealing service is asked again at most this often (not on every request). */
const GRACE_RETRY_MS = 5_000;

/**
 * The root key from the attested sealing service, kept in memory only. It is asked again after
 * `refreshMs`, or at once when a record names a root key we do not hold (a rotation happened).
 *
 * When no attested sealing service answers (isSealerOutage), the key last released keeps being used
 * until `graceMs` after that release; any answer of the service's own (sealed, this TEE refused)
 * drops it at once. docs/root-key.md ("Sealer outages") says what this trades.
 */
export class SealerRootKeySource implements RootKeySource {
  #current: { key: RootKey; releasedAt: number; retryAt: number | undefined } | undefined;
  /** The fetch callers share, with its generation: a caller that joined it judges its failure by it. */
  #inflight: { fetch: Promise<RootKey>; generation: number } | undefined;
  /** Fetches started, and the newest whose outcome (a key, or its drop) is applied: an older one never overrides it. */
  #started = 0;
  #applied = 0;
  #inGrace = false;

  constructor(
    /** The sealing service's client, loaded on first use (runtime.ts). */
    private readonly sealer: () => Promise<SealerClient>,
    private readonly options: SealerRootKeySourceOptions,
  ) {}

  async current(options?: { refresh?: boolean }): Promise<RootKey> {
    const cached = this.#current;
    const forced = options?.refresh === true;
    if (cached !== undefined && !forced && Date.now() < (cached.retryAt ?? cached.releasedAt + this.options.refreshMs)) return cached.key;
    const { fetch, generation } = forced || this.#inflight === undefined ? this.#fetch() : this.#inflight;
    try {
      return await fetch;
    } catch (error) {
      // A forced refresh asks because the key held may not be current: it gets no grace.
      return this.#afterFailure(error, generation, !forced);
    }
  }

  /**
   * The id of the root key the sealing service holds now. In grace, the id of the key held (the
   * newest this function can know of); a sealed service drops the key, as in current().
   */
  async currentId(): Promise<string | null> {
    // In grace, between attempts: a create must not wait for a sealing service that just did not answer.
    const cached = this.#current;
    if (cached?.retryAt !== undefined && Date.now() < cached.retryAt) return cached.key.id;
    const generation = this.#started;
    try {
      return await (await this.sealer()).currentRootKeyId();
    } catch (error) {
      return (await this.#afterFailure(error, generation, true)).id;
    }
  }

  /** Drops the cached key (after this function installed a new one). */
  forget(): void {
    this.#current = undefined;
  }

  /** Starts a fetch (one at a time is shared; a forced refresh starts its own: one in flight may predate the change it must see). */
  #fetch(): { fetch: Promise<RootKey>; generation: number } {
    const generation = ++this.#started;
    const fetch: Promise<RootKey> = this.sealer()
      .then((sealer) => sealer.rootKey())
      .then((key) => {
        if (generation > this.#applied) {
          this.#applied = generation;
          this.#current = { key, releasedAt: Date.now(), retryAt: undefined };
          if (this.#inGrace) log.info('the sealing service answers again: the root key is fresh, the grace period is over');
          this.#inGrace = false;
        }
        return key;
      })
      .finally(() => {
        if (this.#inflight?.fetch === fetch) this.#inflight = undefined;
      });
    this.#inflight = { fetch, generation };
    return this.#inflight;
  }

  /** The held key while in grace, or `error` again, dropping the key when the service said so or grace is over. */
  #afterFailure(error: unknown, generation: number, graceAllowed: boolean): RootKey {
    const cached = this.#current;
    if (cached === undefined) throw error;
    if (!isSealerOutage(error)) {
      // The attested service's own word (sealed, this TEE refused): unless a newer fetch already got a key.
      if (generation >= this.#applied) this.#drop(`the sealing service answered: ${(error as KmsError).message}`);
      throw error;
    }
    const now = Date.now();
    const graceEnds = cached.releasedAt + this.options.graceMs;
    if (now >= graceEnds) {
      this.#drop(`no sealing service released it for the grace period (KMS_ROOT_KEY_GRACE_SECONDS=${this.options.graceMs / 1000})`);
      throw error;
    }
    if (!graceAllowed) throw error;
    if (!this.#inGrace) {
      this.#inGrace = true;
      log.warn(
        'root-key',
        `no sealing service released the root key (${(error as KmsError).message}); serving the root key released ${Math.round((now - cached.releasedAt) / 1000)} s ago for at most ${Math.round((graceEnds - now) / 1000)} s more`,
      );
    }
    cached.retryAt = Math.min(now + Math.min(GRACE_RETRY_MS, this.options.refreshMs), graceEnds);
    return cached.key;
  }

  #drop(why: string): void {
    if (this.#current === undefined) return;
    this.#current = undefined;
    // A fetch already under way left before this news: its key is not kept.
    this.#applied = this.#started;
    this.#inGrace = false;
    // Not wiped: requests under way may still be unwrapping with it. No request starts with it again.
    log.warn('root-key', `the root key was dropped: ${why}; key operations answer 503 until a sealing service releases it again`);
  }
}
