import { randomBytes, timingSafeEqual } from 'node:crypto';
import { combine, split } from 'shamir-secret-sharing';
import { rootKeyId } from '../shared/crypto/root-key-id.js';
import { KmsError } from '../shared/errors.js';
import type { ComponentLog } from '../shared/log.js';
import { deleteRootKeyLink, openRootKeyLink, storeRootKeyLink } from '../shared/root-key/links.js';
import { assertRootKeyOpensStorage, holdsAny, opensSomeStoredKey } from '../shared/root-key/storage-check.js';
import {
  parseShare,
  ROOT_KEY_BYTES,
  validateThreshold,
  type InstallRootKeyRequest,
  type InstallRootKeyResult,
  type Share,
  type RecoveryProgress,
  type SealStatus,
  type VerifyResult,
} from '../shared/sealer-client/protocol.js';
import { parseRecoveryPlaintext, RecoveryChallenges } from '../shared/custody/recovery-challenge.js';
import { isCompactJwe, parseCustodianKeys, sealShare, type CustodianKey } from '../shared/custody/share-jwe.js';
import type { ObjectStore } from '../shared/store/object-store.js';
import { asSealerError, SealerError } from './errors.js';
import type { CustodianPin, CustodianSet } from './options.js';
import { sealedError } from './problems.js';
import { decodeState, encodeState, sealState, stateAuthentic, STATE_OBJECT_KEY, type KeyEntry, type StateBody, type StateRecord } from './state-record.js';

export { STATE_OBJECT_KEY } from './state-record.js';

const ID_PATTERN = /^[0-9a-f]{32}$/;

interface Progress {
  readonly shares: Map<number, Buffer>;
  /** With pinned custodians: the thumbprints of those whose challenge a submitted share answered, and their shares' indexes. */
  readonly custodians: Map<string, number>;
  readonly startedAt: number;
}

/** A share as opened: its challenge, when sealed to the recovery key with one. */
interface Opened {
  readonly item: unknown;
  readonly challenge?: string | undefined;
}

/**
 * When a write of the state record fails without an answer, how long to wait before each read that
 * tells whether it landed: about 6 s in all, past a storage restart's usual blip.
 */
const LOST_ANSWER_READS_MS = [100, 400, 1_000, 2_000, 2_500];

export interface SealerCoreOptions {
  /** Mode 1: the root key from a secret. */
  readonly rootKey?: Buffer | undefined;
  readonly recoveryTtlMs: number;
  readonly now?: () => number;
  /** Default: nothing is logged. */
  readonly log?: Pick<ComponentLog, 'info' | 'warn' | 'error'>;
  /** Whether shares may leave or enter in plaintext (KMS_SEALER_PLAINTEXT_SHARES); default true. */
  readonly plaintextShares?: boolean;
  /**
   * Opens a share given as a compact JWE to the recovery key (its plaintext is the base64 content).
   * Default: such shares are refused.
   */
  readonly openShare?: (jwe: string) => Promise<string>;
  /** Makes the key that openShare opens anew (after a recovery and on seal). Default: none. */
  readonly renewRecoveryKey?: () => Promise<void>;
  /**
   * Told of every new current root key (initialization, promotion, recovery), inside the serialized
   * section; for a promotion, before the record names it, so a crash in between leaves a key that
   * the stored link completes. Auto-unseal re-wraps here (sealer/auto-unseal.ts). A failure is
   * logged and changes nothing else.
   */
  readonly onKeyChange?: (key: { readonly id: string; readonly key: Buffer }) => Promise<void>;
  /**
   * Replicas (KMS_SEALER_PEERS): the record is shared with other replicas, so it is re-read before
   * each change and on a lost compare-and-swap, and a record naming another current key (a
   * promotion on a peer) drops this replica's key until a peer hands over the new one.
   */
  readonly followRecord?: boolean;
  /**
   * KMS_SEALER_CUSTODIANS and its threshold: the RFC 7638 thumbprints of the only custodian keys, in
   * share order, that a rotation's shares may be encrypted to (the first rotation included, which
   * nothing else can protect from its relay), and the t every rotation must use; no share then
   * leaves in plaintext. Default: none pinned.
   */
  readonly pinnedCustodians?: CustodianPin | undefined;
  /** KMS_SEALER_CONVERT_V1_STATE: a state record of the previous format is converted, not refused. */
  readonly convertV1State?: boolean;
}

/** SealerCore.counts(). */
export interface SealerCounts {
  /** Recoveries from shares that unsealed this process (the last share accepted). */
  readonly recoveries: number;
  /** Integrity alarms raised (each logged as INTEGRITY ALARM): storage or its state record failed a check. */
  readonly integrityAlarms: number;
}

/**
 * The root key lifecycle: a memory-only key, the state record, rotation (a pending key), verification
 * (which makes it current) and recovery from shares. Every change is serialized, and the record is
 * durable before the key in memory changes.
 *
 * Storage is untrusted (it may be forged, rolled back or emptied): the record is authenticated under
 * the current key, a recovered key must also open the keys already stored, and initialization is
 * refused while storage holds any key. Storage that holds no key at all is a fresh start, with any
 * record authentic under its key (docs/root-key.md, "Known limits": nothing here anchors it).
 */
export class SealerCore {
  readonly #store: ObjectStore;
  readonly #source: 'secret' | 'shares';
  readonly #recoveryTtlMs: number;
  readonly #now: () => number;
  readonly #log: Pick<ComponentLog, 'info' | 'warn' | 'error'>;
  readonly #plaintextShares: boolean;
  readonly #openShare: ((jwe: string) => Promise<string>) | undefined;
  readonly #renewRecoveryKey: (() => Promise<void>) | undefined;
  readonly #onKeyChange: SealerCoreOptions['onKeyChange'];
  readonly #followRecord: boolean;
  readonly #pinned: CustodianPin | undefined;
  readonly #convertV1State: boolean;
  readonly #challenges = new RecoveryChallenges();
  #key: Buffer | undefined;
  #record: { state: StateRecord; etag: string } | undefined;
  /** An alarm that stands until an operator restores storage (status `integrityAlarm`): a missing or rolled-back record. */
  #alarm: string | undefined;
  /** A shared record judged and ignored (replicas): judged, and alarmed, once. */
  #ignoredEtag: string | undefined;
  /** Whether #alarm is a rollback's: it clears once storage holds the record this service holds again. */
  #rollbackAlarm = false;
  #rechecking: Promise<void> | undefined;
  #recheckedAt = 0;
  #progress: Progress | undefined;
  /** Why the key last held was dropped; undefined: none was held since start (SealStatus.sealedReason). */
  #dropped: 'operator' | 'rotated' | undefined;
  /** Whether a peer or auto-unseal may still hand it a key (set by app.ts); else only shares can. */
  #keyMayArrive: () => boolean = () => false;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #counts = { recoveries: 0, integrityAlarms: 0 };

  private constructor(store: ObjectStore, options: SealerCoreOptions) {
    this.#store = store;
    this.#source = options.rootKey === undefined ? 'shares' : 'secret';
    this.#recoveryTtlMs = options.recoveryTtlMs;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? { info: () => {}, warn: () => {}, error: () => {} };
    this.#plaintextShares = options.plaintextShares ?? true;
    this.#openShare = options.openShare;
    this.#renewRecoveryKey = options.renewRecoveryKey;
    this.#onKeyChange = options.onKeyChange;
    this.#followRecord = options.followRecord ?? false;
    this.#pinned = options.pinnedCustodians;
    this.#convertV1State = options.convertV1State ?? false;
    if (options.rootKey !== undefined) this.#key = Buffer.from(options.rootKey);
  }

  static async open(store: ObjectStore, options: SealerCoreOptions): Promise<SealerCore> {
    const core = new SealerCore(store, options);
    if (core.#source === 'shares') {
      core.#record = await core.#load();
      if (core.#record === undefined && (await core.#storageHoldsKeys())) core.#missingRecordAlarm();
      core.#warnUnpinned();
    } else {
      core.#refuseModeSwitch(await core.#load());
    }
    return core;
  }

  /** Counted since start, for the metrics: what an operator must be able to account for. */
  counts(): SealerCounts {
    return { ...this.#counts };
  }

  get source(): 'secret' | 'shares' {
    return this.#source;
  }

  status(): SealStatus {
    this.#expireProgress();
    if (this.#source === 'secret') {
      const rootKeyIdValue = rootKeyId(this.#key!);
      return {
        sealed: false,
        initialized: true,
        t: 0,
        n: 0,
        progress: 0,
        rootKeyId: rootKeyIdValue,
        verificationPending: false,
        pendingRootKeyId: null,
        integrityAlarm: null,
        source: 'secret',
        sealedReason: null,
      };
    }
    const state = this.#record?.state;
    return {
      sealed: this.#key === undefined,
      initialized: state !== undefined,
      t: state?.current.t ?? 0,
      n: state?.current.n ?? 0,
      progress: this.#progress?.shares.size ?? 0,
      rootKeyId: state?.current.id ?? null,
      verificationPending: (state?.pending ?? null) !== null,
      pendingRootKeyId: state?.pending?.id ?? null,
      integrityAlarm: this.#alarm ?? null,
      source: 'shares',
      sealedReason:
        this.#key !== undefined ? null : state === undefined ? 'uninitialized' : (this.#dropped ?? (this.#keyMayArrive() ? 'starting' : 'restarted')),
    };
  }

  /** A copy of the current root key (the caller wipes it); 503 problems while sealed. */
  currentKey(): Buffer {
    if (this.#key === undefined) throw sealedError(this.status());
    return Buffer.from(this.#key);
  }

  /** Initialization (the key becomes current), or rotation (the key becomes pending until verified). */
  install(request: unknown): Promise<InstallRootKeyResult> {
    return this.#serialized(() => this.#install(request));
  }

  /** Proves shares: those of the pending key make it current; those of the current key change nothing. */
  verify(shares: unknown): Promise<VerifyResult> {
    return this.#serialized(() => this.#verify(shares));
  }

  submitShare(share: unknown): Promise<RecoveryProgress> {
    return this.#serialized(() => this.#submitShare(share));
  }

  /**
   * With pinned custodians, each pinned (or previous) custodian's recovery challenge, encrypted to
   * its key as the state record names it, by thumbprint; undefined when none are pinned. Only the
   * record's keys whose thumbprints are pinned get one: a record naming other keys gets none.
   */
  recoveryChallenges(): Promise<Record<string, string> | undefined> {
    return this.#serialized(async () => {
      const pin = this.#pinned;
      if (pin === undefined || this.#source === 'secret') return undefined;
      await this.#follow();
      const state = this.#record?.state;
      const allowed = new Set(this.#pinnedThumbprints());
      const keys = new Map<string, CustodianKey>();
      for (const key of [...(state?.current.custodians ?? []), ...(state?.pending?.custodians ?? [])]) {
        if (allowed.has(key.thumbprint)) keys.set(key.thumbprint, key);
      }
      return this.#challenges.sealedTo([...keys.values()]);
    });
  }

  resetRecovery(): Promise<RecoveryProgress> {
    return this.#serialized(async () => {
      this.#clearProgress();
      const status = this.status();
      return { sealed: status.sealed, progress: 0, t: status.t };
    });
  }

  /** Whether an operator sealed this service (`seal`): a peer's key is then refused until shares recover it. */
  get sealedByOperator(): boolean {
    return this.#key === undefined && this.#dropped === 'operator';
  }

  /** Tells it what may still unseal it without shares (peers, auto-unseal): its status says `starting` while `check` holds. */
  keyMayArrive(check: () => boolean): void {
    this.#keyMayArrive = check;
  }

  /** Re-reads the shared record (replicas): see `followRecord`. */
  follow(): Promise<void> {
    return this.#serialized(() => this.#follow());
  }

  /**
   * While a rollback alarm stands, reads the record again (the status route asks, unauthenticated):
   * restored, the alarm clears. At most one read at a time and one a second, outside the queue of
   * changes, so that status requests cannot hold back a verify or a recovery.
   */
  recheckAlarm(): Promise<void> {
    if (!this.#rollbackAlarm) return Promise.resolve();
    if (this.#rechecking === undefined && this.#now() - this.#recheckedAt >= 1_000) {
      this.#recheckedAt = this.#now();
      this.#rechecking = this.#load()
        .then(
          (found) => this.#clearIfRestored(found),
          () => undefined,
        )
        .finally(() => (this.#rechecking = undefined));
    }
    return this.#rechecking ?? Promise.resolve();
  }

  /**
   * A key a peer replica handed over, installed only while sealed and only if it is the current key
   * of the shared record and that record is authentic under it: a peer cannot choose the key either.
   */
  adoptPeerKey(key: Buffer): Promise<boolean> {
    return this.#serialized(async () => {
      if (this.#source === 'secret' || this.#key !== undefined || this.sealedByOperator) return false;
      await this.#follow();
      const state = this.#record?.state;
      if (state === undefined) return false;
      if (!sameId(rootKeyId(key), state.current.id) || state.mac === null || !stateAuthentic(state, key)) {
        this.#log.error(`a peer's root key is not the current key of an authentic state record (${state.current.id}): not used`);
        return false;
      }
      this.#setKey(key);
      // Shares sealed to this replica's recovery key and never delivered (held back on the way)
      // would rebuild the key it now holds: as current shares they would name other custodians.
      this.#clearProgress();
      await this.#renewRecovery();
      this.#log.info(`unsealed by a peer replica: root key ${state.current.id}`);
      return true;
    });
  }

  /** Drops the key from memory (like `vault operator seal`); shares recover it. Mode 2 only. */
  seal(): Promise<SealStatus> {
    return this.#serialized(async () => {
      this.#refuseInSecretMode();
      await this.#follow();
      if (this.#record === undefined) throw new SealerError('NOT_INITIALIZED', 'the sealing service is not initialized: there is nothing to seal');
      this.#key?.fill(0);
      this.#key = undefined;
      this.#dropped = 'operator';
      this.#clearProgress();
      await this.#renewRecovery();
      return this.status();
    });
  }

  /**
   * Unseals with a root key from elsewhere than shares (auto-unseal): it is held to what shares
   * are, the current key (the record authenticates under it, storage opens with it) or the pending
   * one whose promotion's link is stored. Anything else changes nothing.
   */
  unsealWithKey(key: Buffer): Promise<SealStatus> {
    return this.#serialized(async () => {
      this.#refuseInSecretMode();
      if (this.#record === undefined) throw new SealerError('NOT_INITIALIZED', 'the sealing service is not initialized: there is no root key to unseal');
      if (this.#key !== undefined) return this.status();
      const id = rootKeyId(key);
      const { current, pending } = this.#record.state;
      if (sameId(id, current.id)) await this.#unsealWithCurrent(key);
      else if (pending !== null && sameId(id, pending.id)) await this.#unsealWithPending({ id, key });
      else throw new SealerError('CONFLICT', `the key given is root key ${id}, not the current one (${current.id}); nothing was unsealed`);
      this.#clearProgress();
      await this.#renewRecovery(); // as a peer's key: shares held back on the way open nothing now
      return this.status();
    });
  }

  async #install(request: unknown): Promise<InstallRootKeyResult> {
    this.#refuseInSecretMode();
    const { t, n, expectedCurrentId, expectedPendingId, custodians: given, currentShares } = parseInstall(request);
    await this.#follow();
    const custodians = this.#custodiansFor(t, n, given);
    await this.#authorizeCustodianChange(given, currentShares);
    // Made here, in the trust anchor: no caller, attested or not, chooses a root key.
    const { key, shares: plain } = await newRootKey(t, n);
    try {
      const newId = rootKeyId(key);
      const shares = custodians === undefined ? plain : await Promise.all(plain.map((share, i) => sealedShare(share, custodians[i]!)));
      const keep = custodians === undefined ? {} : { custodians };
      if (this.#record === undefined) {
        this.#refuseOnAlarm();
        if (expectedCurrentId !== null) {
          throw new SealerError('CONFLICT', 'the sealing service is not initialized: initialize it with expectedCurrentId null');
        }
        if (await this.#storageHoldsKeys()) throw this.#missingRecordAlarm();
        const state = sealState({ generation: 1, current: { id: newId, t, n, ...keep }, pending: null }, key);
        if (!(await this.#store.create(STATE_OBJECT_KEY, encodeState(state)))) {
          this.#record = await this.#load();
          throw new SealerError('CONFLICT', 'the sealing service was initialized meanwhile');
        }
        await this.#reloadAfterWrite(state);
        this.#setKey(key);
        this.#log.info(`initialized with root key ${newId} (storage held no keys)`);
        await this.#keyChanged({ id: newId, key });
        return { rootKeyId: newId, pending: false, shares };
      }

      if (this.#key === undefined) throw sealedError(this.status());
      const { current, pending, generation } = this.#record.state;
      if (expectedCurrentId !== current.id) {
        throw new SealerError('CONFLICT', 'the root key changed meanwhile (another rotation won): expectedCurrentId is not the current root key id');
      }
      if (expectedPendingId !== (pending?.id ?? null)) {
        throw new SealerError('CONFLICT', 'another rotation issued new shares meanwhile: expectedPendingId is not the pending root key id');
      }
      await this.#replace({ generation: generation + 1, current, pending: { id: newId, t, n, ...keep } }, this.#key);
      this.#clearProgress();
      return { rootKeyId: newId, pending: true, shares };
    } finally {
      key.fill(0);
    }
  }

  async #verify(input: unknown): Promise<VerifyResult> {
    this.#refuseInSecretMode();
    await this.#follow();
    if (this.#record === undefined || this.#key === undefined) throw sealedError(this.status());
    const given = (input as { shares?: unknown } | null)?.shares;
    if (!Array.isArray(given) || given.length === 0) throw new SealerError('BAD_REQUEST', 'body must be {"shares": [{"index": n, "content": "<base64>"}, …]}');
    const { current, pending, generation } = this.#record.state;
    const combined = await this.#rebuild(given, Math.min(current.t, pending?.t ?? current.t));
    try {
      const id = rootKeyId(combined);
      if (pending !== null && sameId(id, pending.id)) {
        const differs = this.#pinDiffers(pending);
        if (differs !== undefined) {
          // Its shares already exist as they were made: promoted, fewer or other custodians would hold the root key.
          throw new SealerError(
            'CONFLICT',
            `the new root key ${pending.id} was made with ${differs}: it is not made current; rotate again, and discard its shares`,
          );
        }
        await this.#promote({ id: current.id, key: this.#key }, { id, key: combined }, pending, generation);
        return { rootKeyId: id, verified: true, promoted: true, previousRootKeyId: current.id };
      }
      if (sameId(id, current.id)) {
        if (pending !== null) {
          throw new SealerError(
            'BAD_SHARE',
            `these shares rebuild the current root key, not the new one (${pending.id}) that the last rotate issued; nothing changed`,
          );
        }
        return { rootKeyId: current.id, verified: true, promoted: false };
      }
      throw new SealerError('BAD_SHARE', 'these shares do not rebuild the new (or current) root key (wrong, corrupted or stale shares); nothing changed');
    } finally {
      combined.fill(0);
    }
  }

  /**
   * The key that `given` shares rebuild (the caller wipes it): each opened if sealed to the
   * recovery key, validated, no index twice, at least `needed` of them. combine() cannot tell a
   * wrong share: the caller compares the result's id.
   */
  async #rebuild(given: readonly unknown[], needed: number): Promise<Buffer> {
    if (given.length > 255) throw new SealerError('BAD_SHARE', 'too many shares');
    const shares = new Map<number, Buffer>();
    try {
      const list = (await Promise.all(given.map((item, i) => this.#opened(item, `shares[${i}]`)))).map((opened) => opened.item);
      list.forEach((item, i) => {
        const { index, bytes } = asSealerError('BAD_SHARE', () => parseShare(item, `shares[${i}]`));
        if (shares.has(index)) {
          bytes.fill(0);
          throw new SealerError('BAD_SHARE', `shares[${i}]: index ${index} appears twice`);
        }
        shares.set(index, bytes);
      });
      if (shares.size < needed) throw new SealerError('BAD_SHARE', `need at least ${needed} shares, got ${shares.size}`);
      return await combineShares([...shares.values()]);
    } finally {
      for (const bytes of shares.values()) bytes.fill(0);
      // Whoever relayed these (the operator, the ingress) must not send them again to another
      // effect: a verification's shares, once that key is current, would authorize custodians of
      // their own choosing. Shares sealed to the recovery key open only once, whatever came of it.
      if (given.some(isSealedShare)) await this.#renewRecovery();
    }
  }

  /**
   * A promotion that lost its compare-and-swap to another change (a peer's rotate replaced the
   * pending key meanwhile) leaves a link that retires the current key for a key that can no longer
   * become current: after a restart no shares would unseal. Deleted while the record still names
   * the previous key current and not `nextId` pending (else a peer may have promoted it, and a
   * later key may reach the previous one through it); auto-unseal gets the current key back too,
   * since the promotion gave it `nextId` before its record.
   */
  async #dropLostLink(previousId: string, nextId: string): Promise<void> {
    const state = this.#record?.state;
    const key = this.#key;
    if (state === undefined || key === undefined || !sameId(state.current.id, previousId) || (state.pending !== null && sameId(state.pending.id, nextId)))
      return;
    try {
      await deleteRootKeyLink(this.#store, previousId, nextId);
    } catch (error) {
      this.#log.error(
        `the link ${previousId} -> ${nextId} of a promotion that lost to another change could not be deleted: ${error instanceof Error ? error.message : 'unknown error'}`,
      );
    }
    await this.#keyChanged({ id: previousId, key });
  }

  /**
   * Makes the verified pending key current. The link (the current key wrapped under the new one)
   * is stored first, so records still under the current key stay readable; a crash between the two
   * writes is completed by the next verification or recovery.
   */
  async #promote(current: { id: string; key: Buffer }, next: { id: string; key: Buffer }, pending: KeyEntry, generation: number): Promise<void> {
    await this.#storeLink(current, next);
    await this.#keyChanged(next);
    const linked =
      `The link from root key ${current.id} to ${next.id} was stored (it retires ${current.id}): ` +
      `once the record is restored, verifying these shares again completes the promotion`;
    try {
      await this.#replace({ generation: generation + 1, current: pending, pending: null }, next.key, linked);
    } catch (error) {
      if (error instanceof SealerError && error.code === 'CONFLICT') await this.#dropLostLink(current.id, next.id);
      throw error;
    }
    this.#setKey(next.key);
    this.#clearProgress();
    this.#log.info(`root key ${next.id} is current (its shares were verified); ${current.id} is retired`);
  }

  async #submitShare(given: unknown): Promise<RecoveryProgress> {
    this.#refuseInSecretMode();
    await this.#follow();
    if (this.#record === undefined) {
      this.#refuseOnAlarm();
      throw new SealerError('NOT_INITIALIZED', 'the sealing service is not initialized: there is nothing to recover; rotate initializes it');
    }
    if (this.#key !== undefined) throw new SealerError('NOT_SEALED', 'the sealing service is not sealed: recovery never replaces a live root key');
    this.#expireProgress();
    const opened = await this.#opened(given, 'share');
    const { current, pending } = this.#record.state;
    const custodian = this.#challenged(opened.challenge);
    const { index, bytes } = asSealerError('BAD_SHARE', () => parseShare(opened.item));
    const progress = (this.#progress ??= { shares: new Map(), custodians: new Map(), startedAt: this.#now() });
    const t = this.#recoveryThreshold(current);
    if (progress.shares.has(index)) {
      bytes.fill(0);
      throw new SealerError('BAD_SHARE', `a share with index ${index} was already submitted; progress unchanged (${progress.shares.size} of ${t})`);
    }
    if (custodian !== undefined && progress.custodians.has(custodian)) {
      bytes.fill(0);
      throw new SealerError(
        'BAD_SHARE',
        `the custodian whose key has thumbprint ${custodian} already submitted a share: each custodian counts once; progress unchanged (${progress.shares.size} of ${t})`,
      );
    }
    progress.shares.set(index, bytes);
    if (custodian !== undefined) progress.custodians.set(custodian, index);
    const count = progress.shares.size;
    const thresholds = [current.t, ...(pending === null ? [] : [pending.t])];
    if (count < Math.min(...thresholds) || !this.#custodianQuorum(new Set(progress.custodians.keys()))) return { sealed: true, progress: count, t };

    // combine() cannot tell a wrong share: the id (key check value) of the result decides.
    let combined: Buffer;
    try {
      combined = await this.#combineProgress(progress, current, pending);
    } catch {
      this.#clearProgress();
      throw new SealerError('BAD_SHARE', 'the shares submitted cannot be combined; progress was reset');
    }
    const id = rootKeyId(combined);
    try {
      if (sameId(id, current.id)) {
        await this.#unsealWithCurrent(combined);
      } else if (pending !== null && sameId(id, pending.id)) {
        await this.#unsealWithPending({ id, key: combined });
      } else {
        if (count < Math.max(...thresholds)) return { sealed: true, progress: count, t };
        if (await opensSomeStoredKey(this.#store, { id, key: combined })) {
          throw this.#integrity(
            `these shares rebuild a root key (${id}) that opens the stored keys, but the state record names another: the record was replaced or rolled back`,
          );
        }
        this.#clearProgress();
        throw new SealerError('BAD_SHARE', `the ${count} shares submitted do not rebuild the root key (wrong, corrupted or stale shares); progress was reset`);
      }
    } finally {
      combined.fill(0);
    }
    this.#clearProgress();
    await this.#renewRecovery();
    this.#counts.recoveries++;
    return { sealed: false, progress: 0, t: this.#record.state.current.t, rootKeyId: this.#record.state.current.id };
  }

  /** The current key's shares: the record must be authentic under it, and storage must open with it. */
  async #unsealWithCurrent(key: Buffer): Promise<void> {
    const { state } = this.#record!;
    if (state.mac !== null && !stateAuthentic(state, key))
      throw this.#integrity('the state record failed authentication under the recovered root key: it was edited');
    await this.#assertOpensStorage({ id: state.current.id, key }, { legacy: state.mac === null });
    // A record of the previous format is authenticated from now on.
    if (state.mac === null) await this.#replace({ generation: state.generation + 1, current: state.current, pending: null }, key);
    this.#setKey(key);
    await this.#keyChanged({ id: state.current.id, key });
  }

  /**
   * The pending key's shares open nothing by themselves: no record lets them reach the current key.
   * Only a promotion that stored its link and crashed before the record (or a record rolled back to
   * before it) can be completed here, by the link that only the holder of both keys could write.
   */
  async #unsealWithPending(next: { id: string; key: Buffer }): Promise<void> {
    const { state } = this.#record!;
    const previous = await openRootKeyLink(this.#store, state.current.id, next).catch((error: unknown) => {
      throw error instanceof KmsError && error.code === 'INTEGRITY'
        ? this.#integrity('the link from the current root key to the pending one failed authentication')
        : error;
    });
    if (previous === undefined) {
      this.#clearProgress();
      throw new SealerError(
        'BAD_SHARE',
        'these shares rebuild the new root key of a rotation that was never verified: recover with the current shares, then POST /rootKey/verify the new ones; progress was reset',
      );
    }
    try {
      if (!sameId(rootKeyId(previous), state.current.id) || !stateAuthentic(state, previous)) {
        throw this.#integrity('the state record failed authentication: it was edited');
      }
      await this.#assertOpensStorage(next);
      await this.#replace({ generation: state.generation + 1, current: state.pending!, pending: null }, next.key);
      this.#setKey(next.key);
      await this.#keyChanged(next);
      this.#log.info(`completed the promotion of root key ${next.id} (its link was stored before a restart)`);
      // Verified before, under another pin: completed all the same, since its link has retired the
      // current key, but its shares are not as pinned.
      const differs = this.#pinDiffers(state.pending!);
      if (differs !== undefined)
        this.#log.warn(`the current root key ${next.id} was made with ${differs}: rotate (and verify) to replace it with shares as pinned`);
    } finally {
      previous.fill(0);
    }
  }

  async #assertOpensStorage(key: { id: string; key: Buffer }, options: { legacy?: boolean } = {}): Promise<void> {
    try {
      await assertRootKeyOpensStorage(this.#store, key, options);
    } catch (error) {
      if (error instanceof KmsError && error.code === 'INTEGRITY') throw this.#integrity(error.message);
      throw error;
    }
  }

  async #storeLink(previous: { id: string; key: Buffer }, successor: { id: string; key: Buffer }): Promise<void> {
    try {
      await storeRootKeyLink(this.#store, previous, successor);
    } catch (error) {
      if (error instanceof KmsError && error.code === 'INTEGRITY') throw this.#integrity(error.message);
      throw error;
    }
  }

  /**
   * Mode 1 writes no state record: one in storage was written in mode 2, and every stored key is
   * wrapped under its current root key. Serving another key from the secret would orphan them and
   * let whoever set the secret (the cluster administrator) choose the root key the functions wrap
   * new keys under, so the start is refused. The record's own key, configured as the secret, is
   * served. A record that cannot be read refuses the start too (the error propagates): a check
   * skipped while storage is unreachable could be skipped by whoever cuts storage off.
   */
  #refuseModeSwitch(stored: { state: StateRecord } | undefined): void {
    const id = rootKeyId(this.#key!);
    if (stored === undefined || sameId(stored.state.current.id, id)) return;
    throw new KmsError(
      'CONFIG',
      `KMS_SEALER_ROOT_KEY (mode 1) is root key ${id}, but storage holds the state record ${STATE_OBJECT_KEY} of the Shamir mode (mode 2) ` +
        `with current root key ${stored.state.current.id}: switching an installed mode-2 store to mode 1 would orphan every key wrapped under it, ` +
        'so the sealing service does not start. Unset KMS_SEALER_ROOT_KEY and KMS_SEALER_ROOT_KEY_FILE to keep the Shamir mode',
    );
  }

  async #storageHoldsKeys(): Promise<boolean> {
    for (const prefix of ['primary-keys/', 'data-keys/', 'root-keys/']) if (await holdsAny(this.#store, prefix)) return true;
    return false;
  }

  /** A missing record is never "uninitialized" while keys are stored: it was deleted or lost. */
  #missingRecordAlarm(): SealerError {
    this.#alarm =
      `the state record ${STATE_OBJECT_KEY} is missing while storage holds keys: restore it (its previous version, or a backup); ` +
      'initializing now would orphan every stored key, so it is refused';
    this.#raiseAlarm(this.#alarm);
    return new SealerError('INTEGRITY', this.#alarm);
  }

  #refuseOnAlarm(): void {
    if (this.#alarm !== undefined) throw new SealerError('INTEGRITY', this.#alarm);
  }

  /** Progress is dropped: shares that met a tampered record are not kept for another try. */
  #integrity(why: string, outcome = 'Nothing was unsealed or changed'): SealerError {
    this.#clearProgress();
    const detail = `${why}; restore ${STATE_OBJECT_KEY} and the key records from their previous versions or a backup. ${outcome}`;
    this.#raiseAlarm(why);
    return new SealerError('INTEGRITY', detail);
  }

  /**
   * An authentic record older than one this service already held: storage rolled it back (an earlier
   * version is authentic under the same key). Never adopted, and kept in the seal status: adopting it
   * would bring back a pending key that a later rotation replaced, or undo a promotion half made.
   */
  #rolledBack(found: { state: StateRecord; etag: string }, held: number, outcome?: string): SealerError {
    this.#ignoredEtag = found.etag; // judged once (replicas read the record before every change)
    this.#rollbackAlarm = true;
    this.#alarm = `the state record ${STATE_OBJECT_KEY} was rolled back: storage holds generation ${found.state.generation}, after this service held generation ${held}`;
    return this.#integrity(`${this.#alarm}; restore its latest version`, outcome);
  }

  #raiseAlarm(why: string): void {
    this.#counts.integrityAlarms++;
    this.#log.error(`INTEGRITY ALARM: ${why}`);
  }

  /**
   * The custodian keys a rotation's shares are encrypted to: the request's, else those stored with
   * the current key (one per share); none only where no custodian keys are stored and plaintext
   * shares are allowed. Another number of shares than the stored keys is a change of custodians:
   * it names the new ones (and `#authorizeCustodianChange` asks for the current shares), so the
   * stored keys are never dropped for plaintext.
   */
  #custodiansFor(t: number, n: number, given: readonly CustodianKey[] | undefined): readonly CustodianKey[] | undefined {
    if (this.#pinned !== undefined) return this.#pinnedCustodians(this.#pinned, t, n, given);
    if (given !== undefined) return given;
    const current = this.#record?.state.current;
    const stored = current?.custodians;
    if (stored !== undefined && stored.length === n) return stored;
    if (stored !== undefined) {
      throw new SealerError(
        'BAD_REQUEST',
        `the stored custodian keys are ${stored.length}, for ${n} shares: changing the number of shares changes the custodians, so name ${n} custodian keys ` +
          `({"custodians": [JWK, …]}) with ${current!.t} shares of the current root key, as for any change of custodians; nothing was changed`,
      );
    }
    if (this.#plaintextShares) return undefined;
    throw new SealerError(
      'BAD_REQUEST',
      'shares leave this sealing service only encrypted to their custodians: give one public key per share ({"custodians": [JWK, …]} or KMS_CUSTODIAN_KEYS_FILE)',
    );
  }

  /**
   * With KMS_SEALER_CUSTODIANS, the keys (given, else stored) must be exactly the pinned ones, in
   * order, one per share, and t the pinned threshold: whoever relays a rotation (the first one too,
   * which cannot be sealed) and whoever holds the admin token or sets the rotating function's
   * configuration can no longer name keys of their own or need fewer custodians. Never plaintext shares.
   */
  #pinnedCustodians(pin: CustodianPin, t: number, n: number, given: readonly CustodianKey[] | undefined): readonly CustodianKey[] {
    const refuse = (why: string) => new SealerError('BAD_REQUEST', `${why}; nothing was changed`);
    const pinned = pin.thumbprints;
    if (t !== pin.threshold) {
      throw refuse(`KMS_SEALER_CUSTODIANS_THRESHOLD pins the threshold: t must be ${pin.threshold}, not ${t} (the rotating function's KMS_THRESHOLD)`);
    }
    if (n !== pinned.length) {
      throw refuse(`KMS_SEALER_CUSTODIANS pins ${pinned.length} custodian keys, one per share: n must be ${pinned.length}, not ${n}`);
    }
    const keys = given ?? this.#record?.state.current.custodians;
    if (keys === undefined) {
      throw refuse(`KMS_SEALER_CUSTODIANS pins the custodian keys and no share leaves in plaintext: name them ({"custodians": [JWK, …]}, in the pinned order)`);
    }
    const label = given === undefined ? 'the stored custodian keys' : 'custodians';
    if (keys.length !== pinned.length) {
      throw refuse(`${label} are ${keys.length} keys, but KMS_SEALER_CUSTODIANS pins ${pinned.length}: name the pinned keys ({"custodians": [JWK, …]})`);
    }
    const wrong = keys.findIndex((key, i) => key.thumbprint !== pinned[i]);
    if (wrong === -1) return keys;
    throw refuse(
      given === undefined
        ? `the stored custodian key ${wrong} is not the one KMS_SEALER_CUSTODIANS pins at index ${wrong}: name the pinned keys ({"custodians": [JWK, …]}), with the current shares as for any change of custodians`
        : `custodians[${wrong}] is not the key KMS_SEALER_CUSTODIANS pins at index ${wrong} (its RFC 7638 thumbprint differs): give exactly the pinned keys, in the pinned order`,
    );
  }

  /**
   * A root key made before the pin (or under another) keeps the shares it was made with: the pin
   * cannot change them, only a rotation can. Said at start, so that the operator rotates.
   */
  #warnUnpinned(): void {
    const state = this.#record?.state;
    for (const [which, entry] of [
      ['current', state?.current],
      ['pending', state?.pending],
    ] as const) {
      const differs = entry === undefined || entry === null ? undefined : this.#pinDiffers(entry);
      if (differs !== undefined) {
        this.#log.warn(
          `the ${which} root key ${entry!.id} was made with ${differs}: ${which === 'current' ? 'rotate (and verify) to replace it with shares as pinned' : 'verifying it is refused; rotate again'}`,
        );
      }
    }
    const current = state?.current;
    // Only enough pinned (or previous) holders of its shares can recover it with their challenges.
    if (current !== undefined && this.#pinned !== undefined && !this.#custodianQuorum(holdersOf(current))) {
      this.#log.warn(
        `the current root key ${current.id} has too few shares held by custodians that KMS_SEALER_CUSTODIANS or KMS_SEALER_CUSTODIANS_PREVIOUS pins: ` +
          'only those get a recovery challenge, so shares cannot recover it here; pin its custodians as KMS_SEALER_CUSTODIANS_PREVIOUS (docs/custodians.md, "Changing pinned custodians")',
      );
    }
  }

  /** How `entry`'s shares differ from what KMS_SEALER_CUSTODIANS pins, or undefined when they do not (or nothing is pinned). */
  #pinDiffers(entry: KeyEntry): string | undefined {
    const pin = this.#pinned;
    if (pin === undefined) return undefined;
    const thumbprints = entry.custodians?.map((key) => key.thumbprint) ?? [];
    const pinnedKeys = thumbprints.length === pin.thumbprints.length && thumbprints.every((thumbprint, i) => thumbprint === pin.thumbprints[i]);
    if (entry.t === pin.threshold && entry.n === pin.thumbprints.length && pinnedKeys) return undefined;
    return (
      `t=${entry.t}, n=${entry.n} and ${pinnedKeys ? 'the pinned custodians' : 'other custodians than the pinned ones'}, ` +
      `but KMS_SEALER_CUSTODIANS pins ${pin.threshold} of ${pin.thumbprints.length} to its own`
    );
  }

  /**
   * Naming other custodians is as good as holding the next shares, so once initialized it takes the
   * threshold of the current key's shares, as Vault's rekey takes unseal keys: an admin token or an
   * admin function alone cannot redirect the shares to keys of its own.
   */
  async #authorizeCustodianChange(given: readonly CustodianKey[] | undefined, currentShares: unknown): Promise<void> {
    const state = this.#record?.state;
    const needless = (why: string) => {
      if (currentShares !== undefined) throw new SealerError('BAD_REQUEST', `${why}: send no shares; nothing was rotated`);
    };
    if (state === undefined) return needless('the first rotate takes no shares (there is no current root key yet)');
    if (given === undefined) return needless('shares go with custodians: they authorize naming other custodians than the current ones');
    const stored = state.current.custodians?.map((key) => key.thumbprint) ?? [];
    if (stored.length === given.length && given.every((key, i) => key.thumbprint === stored[i])) {
      return needless("these custodians already hold the current root key's shares, and a rotation to them takes none");
    }
    if (this.#key === undefined) throw sealedError(this.status());
    if (!Array.isArray(currentShares) || currentShares.length === 0) {
      throw new SealerError(
        'BAD_REQUEST',
        `naming new custodians needs ${state.current.t} shares of the current root key ("shares": [...], encrypted to the recovery key), as rekeying does`,
      );
    }
    const combined = await this.#rebuild(currentShares, state.current.t);
    try {
      if (!sameId(rootKeyId(combined), state.current.id)) {
        throw new SealerError('BAD_SHARE', 'these shares do not rebuild the current root key: the custodians were not changed, and nothing was rotated');
      }
    } finally {
      combined.fill(0);
    }
  }

  /**
   * With pinned custodians, the thumbprint of the pinned (or previous) custodian whose recovery
   * challenge a share answered; a share without one, or with another, is refused. Without a pin:
   * undefined, and a challenge is not looked at.
   */
  #challenged(challenge: string | undefined): string | undefined {
    const pin = this.#pinned;
    if (pin === undefined) return undefined;
    if (challenge === undefined) {
      throw new SealerError(
        'BAD_SHARE',
        "this sealing service pins its custodians (KMS_SEALER_CUSTODIANS): a share recovers it only with its custodian's recovery challenge, " +
          'sealed with it to the recovery key (custodian seal-share --key <your custodian key>, or tee-kms recover --custodian-key, from a fresh GET /rootKey/recover); progress unchanged',
      );
    }
    const custodian = this.#challenges.whose(challenge, this.#pinnedThumbprints());
    if (custodian === undefined) {
      throw new SealerError(
        'BAD_SHARE',
        'the share answers no recovery challenge this sealing service gave a pinned custodian (they change when it restarts, after each recovery and on seal: fetch GET /rootKey/recover again); progress unchanged',
      );
    }
    return custodian;
  }

  /**
   * The key the submitted shares rebuild. During a change of pinned custodians, the custodians of the
   * current key and those of a pending one may send in one round: their shares are of different
   * keys, so where the state record names the custodians of a key, and their shares alone are that
   * key's threshold and a quorum, they are rebuilt apart first. Otherwise, all shares together.
   */
  async #combineProgress(progress: Progress, current: KeyEntry, pending: KeyEntry | null): Promise<Buffer> {
    if (this.#pinned !== undefined) {
      for (const entry of pending === null ? [current] : [current, pending]) {
        const holders = holdersOf(entry);
        const theirs = [...progress.custodians].filter(([thumbprint]) => holders.has(thumbprint));
        if (theirs.length === progress.shares.size || theirs.length < entry.t || !this.#custodianQuorum(new Set(theirs.map(([thumbprint]) => thumbprint))))
          continue;
        const combined = await combineShares(theirs.map(([, index]) => progress.shares.get(index)!)).catch(() => undefined);
        if (combined !== undefined && sameId(rootKeyId(combined), entry.id)) return combined;
        combined?.fill(0);
      }
    }
    return combineShares([...progress.shares.values()]);
  }

  /**
   * How many shares a recovery of `entry` takes, as progress reports it: its own t, or, with pinned
   * custodians, the pinned (or previous) threshold of the set that holds its shares where that is
   * more, as the quorum asks it.
   */
  #recoveryThreshold(entry: KeyEntry): number {
    const pin = this.#pinned;
    if (pin === undefined) return entry.t;
    const holding = this.#quorumsOf(holdersOf(entry));
    return Math.max(entry.t, holding.length === 0 ? pin.threshold : Math.min(...holding.map((set) => set.threshold)));
  }

  /**
   * Whether the custodians whose challenges were answered can recover: the pinned threshold of the
   * pinned ones, or of the previous ones. The state record's own t cannot lower it: storage could
   * have written that record. True without a pin.
   */
  #custodianQuorum(answered: ReadonlySet<string>): boolean {
    return this.#pinned === undefined || this.#quorumsOf(answered).length > 0;
  }

  /** The pinned custodian sets (the pin, and the previous custodians of a change) of which `thumbprints` hold at least the threshold. */
  #quorumsOf(thumbprints: ReadonlySet<string>): CustodianSet[] {
    return this.#pinnedSets().filter((set) => set.thumbprints.filter((thumbprint) => thumbprints.has(thumbprint)).length >= set.threshold);
  }

  /** KMS_SEALER_CUSTODIANS and, during a change, KMS_SEALER_CUSTODIANS_PREVIOUS; none unpinned. */
  #pinnedSets(): CustodianSet[] {
    const pin = this.#pinned;
    return pin === undefined ? [] : [pin, ...(pin.previous === undefined ? [] : [pin.previous])];
  }

  /** Every custodian a recovery challenge may go to. */
  #pinnedThumbprints(): string[] {
    return this.#pinnedSets().flatMap((set) => set.thumbprints);
  }

  /**
   * A share as given: a JWE to the recovery key is opened (its plaintext the share's base64, or
   * with a recovery challenge); plaintext only where allowed.
   */
  async #opened(item: unknown, label: string): Promise<Opened> {
    const content = (item as { content?: unknown } | null)?.content;
    if (isSealedShare(item) && typeof content === 'string') {
      if (this.#openShare === undefined) throw new SealerError('BAD_SHARE', `${label}: encrypted shares are not accepted here`);
      let opened: string;
      try {
        opened = await this.#openShare(content);
      } catch {
        throw new SealerError(
          'BAD_SHARE',
          `${label}: the share could not be decrypted with this sealing service's recovery key (it changes when the service restarts, after each recovery, verification or change of custodians and on seal: seal the share again)`,
        );
      }
      const { content: share, challenge } = asSealerError('BAD_SHARE', () => parseRecoveryPlaintext(opened));
      return { item: { ...(item as object), content: share }, challenge };
    }
    if (!this.#plaintextShares && typeof content === 'string') {
      throw new SealerError('BAD_SHARE', `${label}: plaintext shares are refused here: encrypt each share to the recovery key (GET /rootKey/recover?nonce=…)`);
    }
    return { item };
  }

  /**
   * New challenges and a new recovery key whenever the key held changes hands (a recovery, a seal, a
   * peer's key, auto-unseal) and once shares sealed to it were sent to verify or to name
   * custodians: the sealed shares of a round, captured or held back on the way, never count in
   * another. A failure is logged: the key is in place.
   */
  async #renewRecovery(): Promise<void> {
    this.#challenges.renew();
    try {
      await this.#renewRecoveryKey?.();
    } catch (error) {
      this.#log.error(`the recovery key could not be made anew: ${error instanceof Error ? error.message : 'unknown error'}`);
    }
  }

  #refuseInSecretMode(): void {
    if (this.#source === 'secret') {
      throw new SealerError('KEY_FROM_SECRET', 'the root key comes from a configured secret (mode 1): rotate the secret instead; there are no shares');
    }
  }

  async #keyChanged(key: { id: string; key: Buffer }): Promise<void> {
    try {
      await this.#onKeyChange?.(key);
    } catch (error) {
      this.#log.error(`after the change to root key ${key.id}: ${error instanceof Error ? error.message : 'unknown error'}`);
    }
  }

  #setKey(key: Buffer): void {
    this.#key?.fill(0);
    this.#key = Buffer.from(key);
  }

  #expireProgress(): void {
    if (this.#progress !== undefined && this.#now() - this.#progress.startedAt > this.#recoveryTtlMs) this.#clearProgress();
  }

  #clearProgress(): void {
    if (this.#progress === undefined) return;
    for (const bytes of this.#progress.shares.values()) bytes.fill(0);
    this.#progress = undefined;
  }

  /**
   * Compare-and-swap of the record, authenticated under `currentKey`; a lost race changes nothing
   * but the record, unless `outcome` says what the caller stored already (for the alarm's message).
   */
  async #replace(body: StateBody, currentKey: Buffer, outcome?: string): Promise<void> {
    const next = sealState(body, currentKey);
    let written: boolean;
    try {
      written = await this.#store.replace(STATE_OBJECT_KEY, encodeState(next), this.#record!.etag);
    } catch (error) {
      // Storage may have applied the write and only its answer been lost: what it holds decides,
      // else the record would name a key this service never took (and its replicas would follow it).
      if (!(await this.#landedAfterAll(next, currentKey))) throw error;
      written = true;
    }
    // A write whose answer was lost and that is made again finds itself there: it is done.
    if (!written && !(await this.#holds(next, currentKey))) {
      // Writers (this service, its peers) write generation + 1 of the record they read. An older
      // record is authentic too (an earlier version, under the same key): storage rolled it back.
      const found = await this.#load();
      const held = this.#record!.state.generation;
      if (found !== undefined && found.state.generation < held) throw this.#rolledBack(found, held, outcome);
      if (this.#followRecord) {
        await this.#follow();
        throw new SealerError('CONFLICT', 'another replica changed the state record meanwhile; nothing was changed: try again');
      }
      // Only this service writes the record: what is there now is adopted only if it is authentic.
      if (found !== undefined && this.#key !== undefined && stateAuthentic(found.state, this.#key)) {
        this.#record = found;
        this.#settled();
      } else throw this.#integrity(`the state record was changed or removed by someone other than this service`, outcome);
      throw new SealerError('CONFLICT', 'the state record changed meanwhile; nothing was changed');
    }
    await this.#reloadAfterWrite(next);
  }

  /**
   * Replicas only: adopts what another replica wrote. Under the key held, a record naming the same
   * current key must be authentic (else it is left alone, with an alarm); a record naming another
   * current key means a peer promoted or recovered it: this replica drops its key (so it never
   * serves a retired one) and asks its peers. Without a key, the record is adopted as at start; any
   * key later installed must authenticate it.
   */
  async #follow(): Promise<void> {
    if (this.#source === 'secret') return;
    if (!this.#followRecord) {
      if (this.#rollbackAlarm) this.#clearIfRestored(await this.#load().catch(() => undefined));
      return;
    }
    const found = await this.#load();
    this.#clearIfRestored(found);
    if (found === undefined || found.etag === this.#record?.etag || found.etag === this.#ignoredEtag) return;
    // Peers write generation + 1 of the record they read: an older one is a rollback, whatever key it names.
    const heldGeneration = this.#record?.state.generation;
    if (heldGeneration !== undefined && found.state.generation < heldGeneration) {
      this.#rolledBack(found, heldGeneration);
      return;
    }
    const held = this.#record?.state.current.id;
    if (this.#key === undefined || held === undefined) {
      this.#record = found;
      this.#settled();
      return;
    }
    if (sameId(found.state.current.id, held)) {
      if (stateAuthentic(found.state, this.#key)) {
        this.#record = found;
        this.#settled();
      } else {
        this.#ignoredEtag = found.etag;
        this.#raiseAlarm(`the shared state record names root key ${held} but is not authentic under it: ignored`);
      }
      return;
    }
    this.#key.fill(0);
    this.#key = undefined;
    this.#dropped = 'rotated';
    this.#clearProgress();
    this.#record = found;
    this.#settled();
    this.#log.info(
      `the shared state record names root key ${found.state.current.id} (made current on a peer): ${held} dropped; sealed until a peer hands the new key over`,
    );
  }

  /** Whether storage holds exactly `record` (authentic under `key`); false when it cannot be read. */
  async #holds(record: StateRecord, key: Buffer): Promise<boolean> {
    const found = await this.#load().catch(() => undefined);
    return found !== undefined && sameRecord(found.state, record, key);
  }

  /** After a write that failed without an answer: storage read again for a few seconds, until it answers. */
  async #landedAfterAll(record: StateRecord, key: Buffer): Promise<boolean> {
    for (const ms of LOST_ANSWER_READS_MS) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      const found = await this.#load().catch(() => undefined);
      if (found !== undefined) return sameRecord(found.state, record, key);
    }
    return false;
  }

  /** A record adopted or written: any alarm about an earlier one is over, and every later record is judged anew. */
  #settled(): void {
    this.#alarm = undefined;
    this.#rollbackAlarm = false;
    this.#ignoredEtag = undefined;
  }

  /** Storage holds again the record this service holds (its latest version was restored): the rollback alarm clears. */
  #clearIfRestored(found: { etag: string } | undefined): void {
    if (this.#rollbackAlarm && found !== undefined && found.etag === this.#record?.etag) this.#settled();
  }

  async #reloadAfterWrite(written: StateRecord): Promise<void> {
    const loaded = await this.#load();
    this.#record = { state: written, etag: loaded?.etag ?? '' };
    this.#settled(); // the record was where this service left it: restored, if it had been rolled back
  }

  async #load(): Promise<{ state: StateRecord; etag: string } | undefined> {
    const object = await this.#store.get(STATE_OBJECT_KEY);
    if (object === undefined) return undefined;
    return { state: decodeState(object.body, { legacy: this.#convertV1State }), etag: object.etag };
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

interface InstallRequest {
  readonly t: number;
  readonly n: number;
  readonly expectedCurrentId: string | null;
  readonly expectedPendingId: string | null;
  readonly custodians: readonly CustodianKey[] | undefined;
  readonly currentShares: unknown;
}

function parseInstall(request: unknown): InstallRequest {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    throw new SealerError('BAD_REQUEST', 'body must be {"t": n, "n": n, "expectedCurrentId": "<id>" | null, "expectedPendingId": "<id>" | null}');
  }
  const fields = request as Partial<Record<keyof InstallRootKeyRequest | 'key', unknown>>;
  if (fields.key !== undefined) {
    throw new SealerError('BAD_REQUEST', 'the sealing service makes root keys itself: a rotation request carries no key material');
  }
  const {
    t,
    n,
    expectedCurrentId,
    expectedPendingId = null,
    custodians,
    currentShares,
  } = fields as typeof fields & {
    custodians?: unknown;
    currentShares?: unknown;
  };
  for (const [name, value] of [
    ['expectedCurrentId', expectedCurrentId],
    ['expectedPendingId', expectedPendingId],
  ] as const) {
    if (value !== null && (typeof value !== 'string' || !ID_PATTERN.test(value))) {
      throw new SealerError('BAD_REQUEST', `${name} must be a root key id or null`);
    }
  }
  const threshold = asSealerError('BAD_REQUEST', () => validateThreshold(t, n));
  const keys = custodians === undefined ? undefined : asSealerError('BAD_REQUEST', () => parseCustodianKeys(custodians, threshold.n));
  return {
    ...threshold,
    expectedCurrentId: expectedCurrentId as string | null,
    expectedPendingId: expectedPendingId as string | null,
    custodians: keys,
    currentShares,
  };
}

/** The thumbprints of the custodians that hold `entry`'s shares, as the state record names them. */
function holdersOf(entry: KeyEntry): Set<string> {
  return new Set(entry.custodians?.map((key) => key.thumbprint));
}

/** A share as given whose content is a JWE (to the recovery key, if it opens). */
function isSealedShare(item: unknown): boolean {
  const content = (item as { content?: unknown } | null)?.content;
  return typeof content === 'string' && isCompactJwe(content);
}

/** A share encrypted to its custodian: the plaintext is exactly the base64 content. */
async function sealedShare(share: Share, custodian: CustodianKey): Promise<Share> {
  return { index: share.index, content: await sealShare(share.content, custodian) };
}

/** A new root key and its shares (shamir-secret-sharing puts the x coordinate in a share's last byte). */
async function newRootKey(t: number, n: number): Promise<{ key: Buffer; shares: Share[] }> {
  const key = randomBytes(ROOT_KEY_BYTES);
  const parts = await split(new Uint8Array(key), n, t);
  const shares = parts.map((share) => ({ index: share[share.length - 1]!, content: Buffer.from(share).toString('base64') }));
  for (const part of parts) part.fill(0);
  return { key, shares };
}

/** shamir-secret-sharing wants plain Uint8Arrays (not Buffers); every copy is wiped. */
async function combineShares(shares: readonly Buffer[]): Promise<Buffer> {
  const copies = shares.map((share) => new Uint8Array(share));
  try {
    const secret = await combine(copies);
    const result = Buffer.from(secret);
    secret.fill(0);
    return result;
  } finally {
    for (const copy of copies) copy.fill(0);
  }
}

function sameId(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** `found` is `record` as this service wrote it: authentic under `key`, and the same in every field. */
function sameRecord(found: StateRecord, record: StateRecord, key: Buffer): boolean {
  return found.generation === record.generation && stateAuthentic(found, key) && encodeState(found).equals(encodeState(record));
}
