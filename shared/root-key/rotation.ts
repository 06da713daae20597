import { randomBytes } from 'node:crypto';
import { KmsError } from '../errors.js';
import { faultPoint } from '../fault.js';
import { layout } from '../keys/layout.js';
import { encodeRecord } from '../keys/records.js';
import { log } from '../log.js';
import { metricsHooks } from '../metrics/hooks.js';
import type { InstallRootKeyResult, SealStatus, Share, VerifyResult } from '../sealer-client/protocol.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKeyring } from './keyring.js';
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

/** The rotation journal: a lease (one verification and rewrap at a time) and its progress, for status and resume. */
export interface RotationJournal {
  readonly format: 1;
  readonly kind: 'rotation';
  readonly holder: string;
  readonly leaseUntil: number;
  /** Always `rewrapping` (the lease is taken once the sealing service has verified): kept for status readers. */
  readonly phase: 'rewrapping';
  readonly to: string | null;
  readonly rewrapped: number;
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
    if (this.settings.threshold > this.settings.shares) {
      throw new KmsError('CONFIG', `KMS_THRESHOLD (${this.settings.threshold}) exceeds KMS_SHARES (${this.settings.shares})`);
    }
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
   * current root key, which must be `expectedId` when given. Resolves with the count.
   */
  async finishRewrap(expectedId?: string): Promise<number> {
    const lease = await this.#acquire();
    try {
      const current = await this.keyring.current({ refresh: true });
      if (expectedId !== undefined && current.id !== expectedId) throw new KmsError('CONFLICT', 'the root key changed again meanwhile; verify again');
      await lease.update({ phase: 'rewrapping', to: current.id });
      return await this.#rewrapAll(current, lease);
    } finally {
      await lease.release();
    }
  }

  async #rewrapAll(target: RootKey, lease: Lease): Promise<number> {
    let rewrapped = 0;
    const keys: string[] = [];
    for await (const key of this.store.list(layout.primaryKeys())) keys.push(key);
    // Renew the lease on a timer, one renewal at a time; losing it stops the workers.
    let leaseLost: unknown;
    let renewing: Promise<void> | undefined;
    const renewal = setInterval(
      () => {
        renewing ??= lease
          .update({ rewrapped })
          .catch((error: unknown) => void (leaseLost = error))
          .finally(() => (renewing = undefined));
      },
      Math.max(100, this.settings.leaseMs / 3),
    );
    let next = 0;
    const unreadable: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < keys.length && leaseLost === undefined) {
        const key = keys[next++]!;
        try {
          if (await rewrapPrimaryKey(this.store, this.keyring, key, target)) {
            rewrapped++;
            metricsHooks.rewrapped();
            faultPoint(`rewrap:${rewrapped}`);
          }
        } catch (error) {
          // A tampered or corrupt record is unreadable under any root key: report it, rewrap the rest.
          if (!(error instanceof KmsError) || error.code !== 'INTEGRITY') throw error;
          unreadable.push(key);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.settings.concurrency, keys.length) }, worker));
    } finally {
      clearInterval(renewal);
      await renewing; // a renewal in flight would otherwise race the release
    }
    if (leaseLost !== undefined) throw leaseLost;
    log.info('root key rotation: primary keys rewrapped', { rootKeyId: target.id, rewrapped, total: keys.length });
    if (unreadable.length > 0) {
      log.warn('rotation', `${unreadable.length} primary key record(s) failed authentication and were left as they are: ${unreadable.slice(0, 20).join(', ')}`);
    }
    return rewrapped;
  }

  async #acquire(): Promise<Lease> {
    const holder = randomBytes(8).toString('hex');
    const fresh = (state: Partial<RotationJournal> = {}): RotationJournal => ({
      format: 1,
      kind: 'rotation',
      holder,
      leaseUntil: Date.now() + this.settings.leaseMs,
      phase: 'rewrapping',
      to: null,
      rewrapped: 0,
      startedAt: new Date().toISOString(),
      ...state,
    });
    const key = layout.rotationJournal();
    let etag: string;
    if (await this.store.create(key, encodeRecord(fresh()))) {
      etag = (await this.store.get(key))!.etag;
    } else {
      const existing = await this.store.get(key);
      const journal = existing === undefined ? undefined : parseJournal(existing.body);
      if (existing !== undefined && journal !== undefined && journal.leaseUntil > Date.now()) {
        throw new KmsError('CONFLICT', `a root key verification is in progress (${journal.phase}, since ${journal.startedAt}); retry after it finishes`);
      }
      // A lapsed lease: its holder crashed. Take over (compare-and-swap: one taker wins).
      const body = encodeRecord(fresh({ startedAt: journal?.startedAt }));
      if (existing === undefined || !(await this.store.replace(key, body, existing.etag))) {
        throw new KmsError('CONFLICT', 'another verification took over the lapsed one at the same time; retry');
      }
      etag = (await this.store.get(key))!.etag;
      log.warn('rotation', `took over a rotation whose lease lapsed (${journal?.phase ?? 'unreadable journal'}); resuming`);
    }
    let state = fresh();
    let released = false;
    return {
      update: async (changes) => {
        state = { ...state, ...changes, leaseUntil: Date.now() + this.settings.leaseMs };
        const current = await this.store.get(key);
        if (current === undefined || current.etag !== etag || !(await this.store.replace(key, encodeRecord(state), etag))) {
          throw new KmsError('CONFLICT', 'the rotation lease was lost to another verification');
        }
        etag = (await this.store.get(key))!.etag;
      },
      release: async () => {
        if (released) return;
        released = true;
        const current = await this.store.get(key).catch(() => undefined);
        if (current?.etag === etag) await this.store.delete(key).catch(() => undefined);
      },
    };
  }
}

interface Lease {
  update(changes: Partial<Pick<RotationJournal, 'phase' | 'to' | 'rewrapped'>>): Promise<void>;
  release(): Promise<void>;
}

/** The rotation journal in `store`, when a verification holds (or held, and crashed with) its lease. */
export async function readRotationJournal(store: ObjectStore): Promise<RotationJournal | undefined> {
  const object = await store.get(layout.rotationJournal());
  return object === undefined ? undefined : parseJournal(object.body);
}

function parseJournal(body: Buffer): RotationJournal | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as RotationJournal;
    return value.kind === 'rotation' && typeof value.leaseUntil === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}
