import { KmsError } from '../errors.js';

/**
 * The `jti`s of sealed credentials seen by this process, each kept until its credential expires, so
 * that a credential captured on the way (by the ingress, say) cannot be played again here. Per
 * process: another replica has its own memory (docs/sealed-channel.md says what that allows).
 * Bounded: when full of live entries, new sealed requests are shed (503) rather than a `jti`
 * forgotten early, which would let its credential be replayed.
 */
export class ReplayGuard {
  readonly #expiries = new Map<string, number>();

  constructor(private readonly maxEntries: number) {}

  /** Records `jti` until `expiresAt` (ms); throws UNAUTHORIZED if it is already recorded, BUSY if full. */
  admit(jti: string, expiresAt: number, now = Date.now()): void {
    const known = this.#expiries.get(jti);
    if (known !== undefined && known > now) throw new KmsError('UNAUTHORIZED', 'this sealed credential was used already: seal a new one for every request');
    if (this.#expiries.size >= this.maxEntries) this.#purge(now);
    if (this.#expiries.size >= this.maxEntries) {
      throw new KmsError('BUSY', 'too many sealed requests in the last two minutes on this instance: retry shortly');
    }
    this.#expiries.delete(jti); // re-inserted last: the map stays in insertion order, nearly that of expiry
    this.#expiries.set(jti, expiresAt);
  }

  get size(): number {
    return this.#expiries.size;
  }

  /**
   * Drops expired entries from the oldest on, stopping at the first live one: entries are inserted
   * in nearly expiry order, so a flood at capacity costs no scan of the whole map per request.
   * An expired entry behind a live one waits for a later purge.
   */
  #purge(now: number): void {
    for (const [jti, expiresAt] of this.#expiries) {
      if (expiresAt > now) return;
      this.#expiries.delete(jti);
    }
  }
}
