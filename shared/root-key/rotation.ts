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
import { MAX_RANGES, rangeCount, rangeOf, removeRanges, RotationRanges, type RangeLease } from './ranges.js';
import { rewrapPrimaryKey } from './rewrap.js';
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

/**
 * The rotation journal: the running rewrap's target, range count and progress, shared by every
 * instance that joins it (its ranges are the leases: ranges.ts); status and metrics read it.
 */
export interface RotationJournal {
  readonly format: 1;
  readonly kind: 'rotation';
  readonly holder: string;
  readonly leaseUntil: number;
  /** Always `rewrapping` (the lease is taken once the sealing service has verified): kept for status readers. */
  readonly phase: 'rewrapping';
  readonly to: string | null;
  readonly rewrapped: number;
  /** How many ranges the rewrap is split into (fixed by whoever created the journal). */
  readonly ranges?: number;
  readonly startedAt: string;
}

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
    const journal = await this.#openJournal(current.id, holder, rangeCount(keys.length));
    const byRange: string[][] = Array.from({ length: journal.ranges }, () => []);
    for (const key of keys) byRange[rangeOf(key, journal.ranges)]!.push(key);
    const ranges = new RotationRanges(this.store, current, holder, this.settings.leaseMs, journal.ranges);
    const outcome = await this.#rewrapRanges(current, ranges, byRange);
    // Every range done: the rotation is complete. Whoever sees that first removes its records.
    await ranges.remove();
    await this.#closeJournal(current.id);
    log.info('root key rotation: primary keys rewrapped', { rootKeyId: current.id, rewrapped: outcome.rewrapped, total: keys.length });
    reportUnreadable(current.id, outcome);
    return outcome.rewrapped;
  }

  /** Takes free or lapsed ranges and rewraps them until every non-empty range is done. */
  async #rewrapRanges(target: RootKey, ranges: RotationRanges, byRange: readonly string[][]): Promise<RewrapOutcome> {
    const open = new Set(byRange.flatMap((keys, i) => (keys.length > 0 ? [i] : [])));
    const held = new Set<RangeLease>();
    /** Per done range, how many of its records failed authentication (as its done record says). */
    const failedIn = new Map<number, number>();
    let rewrapped = 0;
    let reported = 0;
    const unreadable: string[] = [];
    // Renew held ranges and report progress on a timer, one round at a time.
    let renewing: Promise<void> | undefined;
    // Leases another instance took over: their keys are its to finish. Leases, not range numbers:
    // the range may come back to this instance under a new lease, and is then worked as any other.
    const lost = new Set<RangeLease>();
    const renewal = setInterval(
      () => {
        renewing ??= (async () => {
          for (const lease of held) if (!(await lease.renew())) lost.add(lease);
          reported += await this.#progress(rewrapped - reported);
        })()
          .catch(() => undefined)
          .finally(() => (renewing = undefined));
      },
      Math.max(100, this.settings.leaseMs / 3),
    );
    try {
      while (open.size > 0) {
        const order = [...open];
        const start = Math.floor(Math.random() * order.length); // instances spread over the ranges
        let cursor = 0;
        const queue: { key: string; lease: RangeLease; count: { left: number; rewrapped: number; unreadable: number } }[] = [];
        let taking: Promise<boolean> | undefined;
        // Takes the next free range into the queue; false when none is left to take in this pass.
        const takeNext = async (): Promise<boolean> => {
          while (cursor < order.length) {
            const index = order[(start + cursor++) % order.length]!;
            const taken = await ranges.take(index);
            if (taken === 'held') continue;
            if (!('renew' in taken)) {
              failedIn.set(index, taken.unreadable);
              open.delete(index);
              continue;
            }
            held.add(taken);
            const count = { left: byRange[index]!.length, rewrapped: 0, unreadable: 0 };
            for (const key of byRange[index]!) queue.push({ key, lease: taken, count });
            return true;
          }
          return false;
        };
        const worker = async (): Promise<void> => {
          for (;;) {
            const item = queue.shift();
            if (item === undefined) {
              if (!(await (taking ??= takeNext().finally(() => (taking = undefined))))) return;
              continue;
            }
            if (!lost.has(item.lease)) {
              try {
                if (await rewrapPrimaryKey(this.store, this.keyring, item.key, target)) {
                  rewrapped++;
                  item.count.rewrapped++;
                  metricsHooks.rewrapped();
                  faultPoint(`rewrap:${rewrapped}`);
                }
              } catch (error) {
                // A tampered or corrupt record is unreadable under any root key: count it, rewrap the rest.
                if (!(error instanceof KmsError) || error.code !== 'INTEGRITY') throw error;
                unreadable.push(item.key);
                item.count.unreadable++;
              }
            }
            if (--item.count.left === 0) {
              held.delete(item.lease);
              // A range lost to another instance is finished by its new holder (its keys re-read and skipped).
              if (!lost.delete(item.lease) && (await item.lease.finish(item.count.rewrapped, item.count.unreadable))) {
                open.delete(item.lease.index);
                failedIn.set(item.lease.index, item.count.unreadable);
              }
            }
          }
        };
        await Promise.all(Array.from({ length: this.settings.concurrency }, worker));
        // Ranges other instances hold: wait for them to finish, or for their leases to lapse.
        for (const index of [...open]) {
          const done = await ranges.done(index);
          if (done === undefined) continue;
          failedIn.set(index, done.unreadable);
          open.delete(index);
        }
        if (open.size > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, Math.max(100, this.settings.leaseMs / 3))));
      }
    } finally {
      clearInterval(renewal);
      await renewing;
    }
    await this.#progress(rewrapped - reported).catch(() => 0);
    return { rewrapped, unreadable, failed: [...failedIn.values()].reduce((a, b) => a + b, 0) };
  }

  /**
   * The journal of the rotation to `to`: created, or joined when another instance created it. A
   * journal of an earlier rotation (its target no longer current) is replaced.
   */
  async #openJournal(to: string, holder: string, ranges: number): Promise<RotationJournal & { readonly ranges: number }> {
    const key = layout.rotationJournal();
    for (let attempt = 0; attempt < 5; attempt++) {
      const fresh = {
        format: 1,
        kind: 'rotation',
        holder,
        leaseUntil: Date.now() + this.settings.leaseMs,
        phase: 'rewrapping',
        to,
        rewrapped: 0,
        ranges,
        startedAt: new Date().toISOString(),
      } satisfies RotationJournal;
      const existing = await this.store.get(key);
      if (existing === undefined) {
        if (await this.store.create(key, encodeRecord(fresh))) return fresh;
        continue;
      }
      const journal = parseJournal(existing.body);
      // From storage: a range count that is not a whole number in bounds is an earlier rotation's or
      // garbage, replaced below, never used to index ranges.
      const count = journal?.ranges;
      if (journal?.to === to && typeof count === 'number' && Number.isInteger(count) && count >= 1 && count <= MAX_RANGES) return { ...journal, ranges: count };
      if (journal !== undefined) log.warn('rotation', `replacing the journal of an earlier rotation (to ${journal.to ?? 'unknown'}); rewrapping under ${to}`);
      if (await this.store.replace(key, encodeRecord(fresh), existing.etag)) {
        // The earlier rotation's range leases are garbage now (its keys are rewrapped to `to` anyway).
        // Storage is untrusted: only a root key id (hex) may name a folder to delete.
        if (typeof journal?.to === 'string' && ROOT_KEY_ID_PATTERN.test(journal.to)) await removeRanges(this.store, journal.to);
        return fresh;
      }
    }
    throw new KmsError('CONFLICT', 'the rotation journal kept changing; retry');
  }

  /**
   * Deletes the journal only while it is this rotation's (to `to`): a finisher that comes late must
   * not remove the journal of a newer rotation that replaced it. Storage has no conditional DELETE
   * here (Ceph RGW 16.2 ignores If-Match on it), so the journal is read and compared: a newer
   * journal written in the one round trip between that read and the delete is still removed (its
   * rewrap goes on, each range being its own object; its joiners then make a new journal).
   */
  async #closeJournal(to: string): Promise<void> {
    const key = layout.rotationJournal();
    const existing = await this.store.get(key);
    if (existing === undefined) return;
    const journal = parseJournal(existing.body);
    if (journal?.to !== to) {
      log.info('root key rotation: the journal now names another rotation (a newer one replaced it): left in place', {
        rootKeyId: to,
        journalTo: String(journal?.to ?? 'unreadable'),
      });
      return;
    }
    await this.store.delete(key);
  }

  /** Adds `delta` to the journal's count and extends its lease (compare-and-swap); resolves with what it added. */
  async #progress(delta: number): Promise<number> {
    const key = layout.rotationJournal();
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.store.get(key);
      const journal = existing === undefined ? undefined : parseJournal(existing.body);
      if (existing === undefined || journal === undefined) return 0;
      const next = { ...journal, rewrapped: journal.rewrapped + delta, leaseUntil: Date.now() + this.settings.leaseMs };
      if (await this.store.replace(key, encodeRecord(next), existing.etag)) return delta;
    }
    return 0;
  }
}

/** The rotation journal in `store`, when a verification holds (or held, and crashed with) its lease. */
export async function readRotationJournal(store: ObjectStore): Promise<RotationJournal | undefined> {
  const object = await store.get(layout.rotationJournal());
  return object === undefined ? undefined : parseJournal(object.body);
}

/**
 * The journal as stored, or undefined when it is not one: storage is untrusted, so every field is
 * checked for what it is used as (a message, a status answer, a folder name), never assumed.
 */
function parseJournal(body: Buffer): RotationJournal | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || value.kind !== 'rotation') return undefined;
  const { leaseUntil, to, rewrapped, holder, startedAt, ranges } = value;
  const wellFormed =
    typeof leaseUntil === 'number' &&
    Number.isFinite(leaseUntil) &&
    (to === null || (typeof to === 'string' && ROOT_KEY_ID_PATTERN.test(to))) &&
    typeof rewrapped === 'number' &&
    Number.isSafeInteger(rewrapped) &&
    rewrapped >= 0 &&
    typeof holder === 'string' &&
    holder.length <= 256 &&
    typeof startedAt === 'string' &&
    startedAt.length <= 64 &&
    (ranges === undefined || typeof ranges === 'number');
  return wellFormed ? (value as unknown as RotationJournal) : undefined;
}

/** What the rewrap came to, for this instance. */
interface RewrapOutcome {
  /** Keys this instance rewrapped. */
  readonly rewrapped: number;
  /** Keys this instance found failing authentication. */
  readonly unreadable: readonly string[];
  /** Records that failed authentication in the whole rewrap: the sum its done ranges record. */
  readonly failed: number;
}

/**
 * A complete rewrap that left records under an older root key (they failed authentication: storage
 * was tampered with or is corrupt) is no complete rotation: every instance in it answers INTEGRITY.
 */
function reportUnreadable(rootKeyId: string, outcome: RewrapOutcome): void {
  const { rewrapped, unreadable, failed } = outcome;
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
