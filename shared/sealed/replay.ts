import { KmsError } from '../errors.js';

/**
 * The `jti`s of sealed credentials seen by this process, each kept until its credential expires, so
 * that a credential captured on the way (by the ingress, say) cannot be played again here. Per
 * process: another replica has its own memory (docs/sealed-channel.md says what that allows).
 * Bounded: when full of live entries, new sealed requests are shed (503) rather than a `jti`
 * forgotten early, which would let its credential be replayed.
 *
 * Expiries are kept in whole seconds, rounded up (a credential's is whole already: its `iat` + 61 s):
 * a `jti` is remembered until the first whole second at or after the `expiresAt` it came with, and
 * no longer once that second has begun.
 */
export class ReplayGuard {
  /** `jti` → the second (unix) its entry expires at. */
  readonly #expiries = new Map<string, number>();
  /** Expiry second → the `jti`s that expire then, each `jti` of #expiries in exactly one. */
  readonly #bySecond = new Map<number, string[]>();
  /** The earliest expiry second of #bySecond (Infinity when empty): nothing to purge before it. */
  #earliest = Infinity;

  constructor(private readonly maxEntries: number) {}

  /** Records `jti` until `expiresAt` (ms); throws UNAUTHORIZED if it is already recorded, BUSY if full. */
  admit(jti: string, expiresAt: number, now = Date.now()): void {
    const known = this.#expiries.get(jti);
    if (known !== undefined) {
      if (known * 1000 > now) throw new KmsError('UNAUTHORIZED', 'this sealed credential was used already: seal a new one for every request');
      this.#purge(now); // its entry expired: this drops it with its second, so no second lists it twice
    }
    if (this.#expiries.size >= this.maxEntries) this.#purge(now);
    if (this.#expiries.size >= this.maxEntries) {
      throw new KmsError('BUSY', 'too many sealed requests in the last two minutes on this instance: retry shortly');
    }
    const second = Math.ceil(expiresAt / 1000);
    this.#expiries.set(jti, second);
    const jtis = this.#bySecond.get(second);
    if (jtis === undefined) this.#bySecond.set(second, [jti]);
    else jtis.push(jti);
    if (second < this.#earliest) this.#earliest = second;
  }

  get size(): number {
    return this.#expiries.size;
  }

  /**
   * Drops every expired entry, whatever the order they came in: by whole expiry seconds, so a
   * credential dated in the future keeps only its own entry, not those that came after it. Costs
   * nothing until the earliest second is reached, then a look at each second held (a credential's
   * entry lives 1 to 121 s, so about 120 at most) and the deletion of the expired entries, each
   * once: O(1) amortized per request, also at capacity, when every request sheds.
   */
  #purge(now: number): void {
    if (this.#earliest * 1000 > now) return;
    let earliest = Infinity;
    for (const [second, jtis] of this.#bySecond) {
      if (second * 1000 > now) {
        if (second < earliest) earliest = second;
        continue;
      }
      for (const jti of jtis) this.#expiries.delete(jti);
      this.#bySecond.delete(second);
    }
    this.#earliest = earliest;
  }
}
