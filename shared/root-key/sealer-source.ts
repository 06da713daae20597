import type { SealerClient } from '../sealer-client/client.js';
import type { RootKey, RootKeySource } from './source.js';

/**
 * The root key from the attested sealing service, kept in memory only. It is asked again after
 * `refreshMs`, or at once when a record names a root key we do not hold (a rotation happened).
 */
export class SealerRootKeySource implements RootKeySource {
  #current: { key: RootKey; fetchedAt: number } | undefined;
  #inflight: Promise<RootKey> | undefined;

  constructor(
    /** The sealing service's client, loaded on first use (runtime.ts). */
    private readonly sealer: () => Promise<SealerClient>,
    private readonly refreshMs: number,
  ) {}

  async current(options?: { refresh?: boolean }): Promise<RootKey> {
    const cached = this.#current;
    if (cached !== undefined && !options?.refresh && Date.now() - cached.fetchedAt < this.refreshMs) return cached.key;
    // One request at a time: a burst of cold requests shares one KBS round trip.
    this.#inflight ??= this.sealer()
      .then((sealer) => sealer.rootKey())
      .then((key) => {
        this.#current = { key, fetchedAt: Date.now() };
        return key;
      })
      .finally(() => {
        this.#inflight = undefined;
      });
    return this.#inflight;
  }

  /** The sealing service's current root key id, from its (unauthenticated, TLS-pinned) status. */
  async currentId(): Promise<string | null> {
    return (await (await this.sealer()).sealStatus()).rootKeyId;
  }

  /** Drops the cached key (after this function installed a new one). */
  forget(): void {
    this.#current = undefined;
  }
}
