import { randomBytes } from 'node:crypto';
import { assertThresholdWithinShares } from '../config.js';
import { ROOT_KEY_ID_PATTERN } from '../crypto/root-key-id.js';
import { KmsError } from '../errors.js';
import { faultPoint } from '../fault.js';
import { reportForeignObjects } from '../keys/foreign.js';
import { layout, listedName } from '../keys/layout.js';
import { encodeRecord } from '../keys/records.js';
import { log } from '../log.js';
import { metricsHooks } from '../metrics/hooks.js';
import type { InstallRootKeyResult, SealStatus, Share, VerifyResult } from '../sealer-client/protocol.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKeyring } from './keyring.js';
import { JournalSeal, parseJournal, readRotationJournal, type RotationJournal, type SealedJournal } from './journal.js';
import { rangeCount, rangeOf, removeRanges, RotationRanges, type RangeLease } from './ranges.js';
import { retargeted, retired, rewrapPrimaryKey } from './rewrap.js';
import type { RootKey } from './source.js';

/** What rotation needs of the sealing service (SealerClient provides it). */
export interface RootKeyAuthority {
  sealStatus(): Promise<SealStatus>;
  installRootKey(request: {
    t: number;
    n: number;
    expectedCurrentId: string | null;
    expectedPendingId: string | null;
    custodians?: readonly unknown[] | undefined;
    currentShares?: readonly Share[] | undefined;
  }): Promise<InstallRootKeyResult>;
  verifyShares(shares: readonly Share[]): Promise<VerifyResult>;
}

export interface RotationSettings {
  readonly shares: number;
  readonly threshold: number;
  readonly leaseMs: number;
  readonly concurrency: number;
}

export { readRotationJournal, type RotationJournal } from './journal.js';

export interface RotationResult {
  /** The new root key's id: current at once on initialization, else pending until verified. */
  readonly rootKeyId: string;
  readonly shares: Share[];
  readonly pending: boolean;
}

export interface VerificationResult extends VerifyResult {
  /** Primary keys rewrapped under the current root key by this call. */
  readonly rewrapped: number;
}

/**
 * Root key rotation in two steps, so that no stored record ever lets one set of shares reach a key
 * that another set protects:
 * 1. rotate: the sealing service makes a new key, keeps it as pending (its id only) and answers its
 *    shares. Nothing is wrapped under it yet; the current key and its shares stay in use.
 * 2. verify: the new shares, proven by rebuilding the pending key inside the sealing service, make
 *    it current (the service stores the previous key wrapped under it first), and every primary key
 *    is rewrapped under it, compare-and-swap, under a lease. The answer comes when the rewrap is done.
 * A crash anywhere leaves every key readable through the stored links; the next verify resumes the
 * rewrap for whatever is still under an older root key.
 */
export class RootKeyRotation {
  constructor(
    private readonly store: ObjectStore,
    private readonly keyring: RootKeyring,
    private readonly authority: RootKeyAuthority,
    private readonly settings: RotationSettings,
  ) {}

  journal(): Promise<RotationJournal | undefined> {
    return readRotationJournal(this.store);
  }

  /**
   * Step 1. `authorizedFor` is the state the caller checked its credentials against (the first
   * rotation needs none): a request let in to initialize cannot rotate a root key that another
   * request initialized meanwhile (the sealing service's compare-and-swap holds the rest).
   */
  async rotate(
    authorizedFor: { readonly initialized: boolean },
    custody: { readonly custodians?: readonly unknown[] | undefined; readonly currentShares?: readonly Share[] | undefined } = {},
  ): Promise<RotationResult> {
    // Loading the configuration checks it already; this guards settings given any other way.
    assertThresholdWithinShares(this.settings);
    const status = await this.authority.sealStatus();
    if (status.initialized && !authorizedFor.initialized) {
      throw new KmsError('CONFLICT', 'the root key was initialized by another request meanwhile; rotating it now needs the admin token');
    }
    if (status.sealed && status.initialized) {
      throw new KmsError('SEALED', 'the root key is sealed: recover it with PUT /rootKey/recover before rotating', { details: { ...status } });
    }
    const installed = await this.authority.installRootKey({
      t: this.settings.threshold,
      n: this.settings.shares,
      expectedCurrentId: status.initialized ? status.rootKeyId : null,
      expectedPendingId: status.pendingRootKeyId ?? null,
      custodians: custody.custodians,
      currentShares: custody.currentShares,
    });
    faultPoint('rotate:after-install');
    if (!installed.pending) await this.keyring.current({ refresh: true });
    return installed;
  }

  /**
   * Step 2: proves `shares` in the sealing service (a rotation's new shares make its key current),
   * then rewraps every primary key still under an older root key. Also resumes an interrupted rewrap.
   */
  async verify(shares: readonly Share[]): Promise<VerificationResult> {
    // The sealing service decides first: wrong shares are refused before anything is written (the
    // lease included). A promotion it makes is complete on its own; the rewrap then runs under the lease.
    const verified = await this.authority.verifyShares(shares);
    faultPoint('verify:after-promote');
    return { ...verified, rewrapped: await this.finishRewrap(verified.rootKeyId) };
  }

  /**
   * Step 2's rewrap alone (also what finishes an interrupted one): every primary key under the
   * current root key, which must be `expectedId` when given. Every instance that calls it while a
   * rewrap runs joins it (ranges of the key space, leased: see ranges.ts) and it resolves, with
   * the count this instance rewrapped, once every range is done. Records that failed
   * authentication are left as they are, and the call then ends in INTEGRITY, once the rest is done.
   */
  async finishRewrap(expectedId?: string): Promise<number> {
    const current = await this.keyring.current({ refresh: true });
    if (expectedId !== undefined && current.id !== expectedId) throw new KmsError('CONFLICT', 'the root key changed again meanwhile; verify again');
    const keys: string[] = [];
    const foreign: string[] = [];
    for await (const key of this.store.list(layout.primaryKeys())) (listedName.primaryKey(key) === undefined ? foreign : keys).push(key);
    // Named as the KMS never names a record: planted. Never read, never rewrapped; the rest is.
    reportForeignObjects('rotation', 'object(s) under primary-keys/ are no record the KMS wrote, left as they are', foreign);
    const holder = randomBytes(8).toString('hex');
    const seal = new JournalSeal(current);
    let rewrapped = 0;
    for (let passes = 1; ; passes++) {
      if (passes > 1) await this.#stillCurrent(current);
      const journal = await this.#openJournal(seal, holder, rangeCount(keys.length), current);
      const byRange: string[][] = Array.from({ length: journal.ranges }, () => []);
      for (const key of keys) byRange[rangeOf(key, journal.ranges)]!.push(key);
      const ranges = new RotationRanges(this.store, current, holder, this.settings.leaseMs, journal.ranges, journal.pass);
      const outcome = await this.#rewrapRanges(current, ranges, byRange, seal, journal.pass);
      rewrapped += outcome.rewrapped;
      if (!outcome.superseded) {
        await this.#closePass(journal);
        log.info('root key rotation: primary keys rewrapped', { rootKeyId: current.id, rewrapped, total: keys.length });
        reportUnreadable(current.id, rewrapped, outcome);
        return rewrapped;
      }
      // Its work is not lost: the keys it rewrapped are skipped by the pass that replaced it.
      if (passes >= MAX_PASSES) throw new KmsError('CONFLICT', 'the rotation journal kept being replaced while this verification rewrapped; verify again');
      log.warn('rotation', 'the rotation journal names another pass now (this one lapsed and was replaced) or is gone: joining again');
    }
  }

  /**
   * Takes free or lapsed ranges and rewraps them until every non-empty range is done, or until the
   * journal no longer names `pass` (then it stops at once: the pass that replaced it owns the ranges).
   * A range already done when this instance first looks at it is read again here, without a lease:
   * its holder listed the keys before this instance did (keys wrapped under an older root key since
   * are not in its list), or storage replays a done record of a pass that ended moments ago.
   */
  async #rewrapRanges(target: RootKey, ranges: RotationRanges, byRange: readonly string[][], seal: JournalSeal, pass: string): Promise<PassOutcome> {
    const state: PassState = {
      open: new Set(byRange.flatMap((keys, i) => (keys.length > 0 ? [i] : []))),
      seen: new Set(),
      held: new Set(),
      lost: new Set(),
      failedIn: new Map(),
    };
    let superseded = false;
    let stopped: KmsError | undefined;
    let rewrapped = 0;
    let reported = 0;
    const unreadable: string[] = [];
    // Renew held ranges and report progress on a timer, one round at a time.
    let renewing: Promise<void> | undefined;
    const renewal = setInterval(
      () => {
        renewing ??= (async () => {
          for (const lease of state.held) if (!(await lease.renew())) state.lost.add(lease);
          const added = await this.#progress(seal, pass, rewrapped - reported);
          if (added === 'superseded') superseded = true;
          else reported += added;
        })()
          .catch(() => undefined)
          .finally(() => (renewing = undefined));
      },
      Math.max(100, this.settings.leaseMs / 3),
    );
    try {
      while (state.open.size > 0 && !superseded) {
        const order = [...state.open];
        const start = Math.floor(Math.random() * order.length); // instances spread over the ranges
        let cursor = 0;
        const queue: { key: string; work: RangeWork }[] = [];
        let taking: Promise<boolean> | undefined;
        // Takes the next range to work on into the queue; false when none is left in this round.
        const takeNext = async (): Promise<boolean> => {
          while (cursor < order.length && !superseded && stopped === undefined) {
            const index = order[(start + cursor++) % order.length]!;
            const work = await takeWork(ranges, index, byRange[index]!.length, state);
            if (work === undefined) continue;
            for (const key of byRange[index]!) queue.push({ key, work });
            return true;
          }
          return false;
        };
        const worker = async (): Promise<void> => {
          for (;;) {
            if (superseded || stopped !== undefined) return; // the pass that replaced this one rewraps what is queued
            const item = queue.shift();
            if (item === undefined) {
              if (!(await (taking ??= takeNext().finally(() => (taking = undefined))))) return;
              continue;
            }
            const { work } = item;
            if (work.lease === undefined || !state.lost.has(work.lease)) {
              try {
                if (await rewrapPrimaryKey(this.store, this.keyring, item.key, target)) {
                  rewrapped++;
                  work.rewrapped++;
                  metricsHooks.rewrapped();
                  faultPoint(`rewrap:${rewrapped}`);
                }
              } catch (error) {
                // The target was retired by a newer rotation: every worker stops, nothing more is written.
                if (error instanceof KmsError && error.code === 'CONFLICT') {
                  stopped = error;
                  return;
                }
                // A tampered or corrupt record is unreadable under any root key: count it, rewrap the rest.
                if (!(error instanceof KmsError) || error.code !== 'INTEGRITY') throw error;
                unreadable.push(item.key);
                work.unreadable++;
              }
            }
            if (--work.left === 0) await finishWork(work, state);
          }
        };
        await Promise.all(Array.from({ length: this.settings.concurrency }, worker));
        if (stopped !== undefined) throw stopped;
        // Ranges other instances hold: wait for them to finish, or for their leases to lapse.
        for (const index of [...state.open]) {
          const done = superseded ? undefined : await ranges.done(index);
          if (done === undefined) continue;
          state.failedIn.set(index, done.unreadable);
          state.open.delete(index);
        }
        if (state.open.size > 0 && !superseded) await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, Math.max(100, this.settings.leaseMs / 3))));
      }
    } finally {
      clearInterval(renewal);
      await renewing;
    }
    if (!superseded && (await this.#progress(seal, pass, rewrapped - reported).catch(() => 0)) === 'superseded') {
      log.info('root key rotation: every range of this pass is done; its journal names another pass now', { rootKeyId: target.id });
    }
    return { rewrapped, unreadable, failed: [...state.failedIn.values()].reduce((a, b) => a + b, 0), superseded };
  }

  /**
   * The journal of the rotation to the target: joined when it is this rotation's, authentic and
   * live (its lease not lapsed), else replaced (compare-and-swap) by a fresh one: a new pass. A
   * lapsed journal is never joined: every instance in its pass stopped, or storage replays an old
   * one, whose done ranges (replayed too) would skip keys wrapped under an older root key since.
   * The new pass reads every key again (those already under the target are skipped).
   */
  async #openJournal(seal: JournalSeal, holder: string, ranges: number, target: RootKey): Promise<SealedJournal> {
    const key = layout.rotationJournal();
    for (let attempt = 0; attempt < 5; attempt++) {
      const fresh = seal.fresh(holder, ranges, this.settings.leaseMs);
      const existing = await this.store.get(key);
      if (existing === undefined) {
        if (await this.store.create(key, encodeRecord(fresh))) return fresh;
        continue;
      }
      const stored = parseJournal(existing.body);
      const journal = seal.open(stored);
      if (journal !== undefined && journal.leaseUntil > Date.now()) return journal;
      const replacing =
        stored?.to === fresh.to
          ? 'a lapsed or unauthentic journal of this rotation (every instance in its pass stopped, or storage wrote it): starting a new pass'
          : `the journal of an earlier rotation (to ${stored?.to ?? 'unknown'})`;
      // A journal of another rotation may be a newer one's (this instance stalled): never replaced then.
      if (stored?.to !== fresh.to) await this.#stillCurrent(target);
      if (stored !== undefined) log.warn('rotation', `replacing ${replacing}; rewrapping under ${fresh.to}`);
      if (await this.store.replace(key, encodeRecord(fresh), existing.etag)) {
        // The earlier rotation's range leases are garbage now (its keys are rewrapped to the target
        // anyway); this rotation's own are the new pass's to take over. Storage is untrusted: only a
        // root key id (hex) may name a folder to delete.
        const earlier = stored?.to;
        if (typeof earlier === 'string' && earlier !== fresh.to && ROOT_KEY_ID_PATTERN.test(earlier)) await removeRanges(this.store, earlier);
        return fresh;
      }
    }
    throw new KmsError('CONFLICT', 'the rotation journal kept changing; retry');
  }

  /** Refuses to go on rewrapping under `target` once a newer rotation retired it (the sealing service, then storage, say so). */
  async #stillCurrent(target: RootKey): Promise<void> {
    const current = await this.keyring.current({ refresh: true });
    if (current.id !== target.id && (await retired(this.store, target.id))) throw retargeted(target.id);
  }

  /**
   * Removes a complete pass's range records and journal, while the journal names that pass (or is
   * gone: another instance of the pass removed it, and a range this one took again since is left):
   * a finisher that comes late must not remove those of a pass or rotation that replaced it.
   * Storage has no conditional DELETE here (Ceph RGW 16.2 ignores If-Match on it), so the journal is
   * read and compared, before and after the ranges go: a newer journal written in the one round
   * trip between that read and the delete is still removed (its instances then find it gone and
   * join again, in a new pass).
   */
  async #closePass(journal: SealedJournal): Promise<void> {
    if ((await this.#journalNames(journal)) === 'another') return;
    await removeRanges(this.store, journal.to);
    if ((await this.#journalNames(journal)) === 'this') await this.store.delete(layout.rotationJournal());
  }

  async #journalNames(journal: SealedJournal): Promise<'this' | 'another' | 'none'> {
    const existing = await this.store.get(layout.rotationJournal());
    if (existing === undefined) return 'none';
    const stored = parseJournal(existing.body);
    if (stored?.to === journal.to && stored.pass === journal.pass) return 'this';
    log.info('root key rotation: the journal names another pass or rotation now (one that replaced it): left to it', {
      rootKeyId: journal.to,
      journalTo: String(stored?.to ?? 'unreadable'),
    });
    return 'another';
  }

  /**
   * Adds `delta` to the journal's count and extends its lease (compare-and-swap, sealed again);
   * resolves with what it added, or 'superseded' when the journal is no longer this pass's (another
   * replaced it once it lapsed, a finisher removed it, storage changed it).
   */
  async #progress(seal: JournalSeal, pass: string, delta: number): Promise<number | 'superseded'> {
    const key = layout.rotationJournal();
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.store.get(key);
      const journal = existing === undefined ? undefined : seal.open(parseJournal(existing.body));
      if (existing === undefined || journal?.pass !== pass) return 'superseded';
      const next = seal.advance(journal, journal.rewrapped + delta, Date.now() + this.settings.leaseMs);
      if (await this.store.replace(key, encodeRecord(next), existing.etag)) return delta;
    }
    return 0;
  }
}

/** Passes one call joins at most: each after the one it was in was replaced (it lapsed) or removed. */
const MAX_PASSES = 4;

/** One range's keys, as this instance works on them in one pass. */
interface RangeWork {
  readonly index: number;
  /** This instance's lease on it; undefined for a range done before this instance saw it open (read again). */
  readonly lease: RangeLease | undefined;
  /** How many records failed authentication, as the done record of a range read again says. */
  readonly recorded: number;
  left: number;
  rewrapped: number;
  unreadable: number;
}

/** This instance's view of one pass's ranges. */
interface PassState {
  /** Non-empty ranges not known to be done. */
  readonly open: Set<number>;
  /** Ranges this instance saw open (held or taken): a done record found later is another holder's work since. */
  readonly seen: Set<number>;
  readonly held: Set<RangeLease>;
  /** Leases another instance took over: their keys are its to finish. The range may come back to us under a new lease. */
  readonly lost: Set<RangeLease>;
  /** Per done range, how many of its records failed authentication. */
  readonly failedIn: Map<number, number>;
}

/** Range `index` to work on (leased, or done before this instance saw it open: read again), or undefined. */
async function takeWork(ranges: RotationRanges, index: number, keys: number, state: PassState): Promise<RangeWork | undefined> {
  const taken = await ranges.take(index);
  const seen = state.seen.has(index);
  state.seen.add(index);
  if (taken === 'held') return undefined;
  const work = { index, left: keys, rewrapped: 0, unreadable: 0 };
  if ('renew' in taken) {
    state.held.add(taken);
    return { ...work, lease: taken, recorded: 0 };
  }
  if (!seen) return { ...work, lease: undefined, recorded: taken.unreadable };
  // Done by another holder since this instance saw it open: its keys were listed after ours.
  state.failedIn.set(index, taken.unreadable);
  state.open.delete(index);
  return undefined;
}

/** A range whose keys are all through: done (its lease marked so, unless lost meanwhile: its new holder finishes it). */
async function finishWork(work: RangeWork, state: PassState): Promise<void> {
  if (work.lease !== undefined) {
    state.held.delete(work.lease);
    if (state.lost.delete(work.lease)) return;
    if (!(await work.lease.finish(work.rewrapped, work.unreadable))) return;
  }
  state.open.delete(work.index);
  // A range read again: a record that failed counts once (its holder's count or ours, the larger).
  state.failedIn.set(work.index, Math.max(work.recorded, work.unreadable));
}

/** What one pass came to, for this instance. */
interface PassOutcome {
  /** Keys this instance rewrapped. */
  readonly rewrapped: number;
  /** Keys this instance found failing authentication. */
  readonly unreadable: readonly string[];
  /** Records that failed authentication in the whole pass: the sum its done ranges record. */
  readonly failed: number;
  /** The journal names another pass now, or is gone: this one stopped before every range was done. */
  readonly superseded: boolean;
}

/**
 * A complete pass that left records under an older root key (they failed authentication: storage
 * was tampered with or is corrupt) is no complete rotation: every instance in it answers INTEGRITY.
 */
function reportUnreadable(rootKeyId: string, rewrapped: number, outcome: PassOutcome): void {
  const { unreadable, failed } = outcome;
  if (unreadable.length > 0) {
    log.warn('rotation', `${unreadable.length} primary key record(s) failed authentication and were left as they are: ${unreadable.slice(0, 20).join(', ')}`);
  }
  if (failed === 0) return;
  throw new KmsError(
    'INTEGRITY',
    `${failed} primary key record(s) failed authentication and were left under an older root key (storage was tampered with or is corrupt); every other one is under ${rootKeyId}. Verify again once storage is repaired: that rewraps them.`,
    { details: { rootKeyId, rewrapped, unreadable: failed } },
  );
}
