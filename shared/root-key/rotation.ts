import { randomBytes } from 'node:crypto';
import { unwrapKey, wrapKey } from '../crypto/aead.js';
import { rootKeyId } from '../crypto/root-key-id.js';
import { KmsError } from '../errors.js';
import { faultPoint } from '../fault.js';
import { layout } from '../keys/layout.js';
import { contexts, decodePrimaryKey, encodeRecord, type PrimaryKeyRecord } from '../keys/records.js';
import { log } from '../log.js';
import type { SealStatus, Share } from '../sealer/protocol.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKeyring } from './keyring.js';
import type { RootKey } from './source.js';

/** What rotation needs of the sealing service (SealerClient provides it). */
export interface RootKeyAuthority {
  sealStatus(): Promise<SealStatus>;
  installRootKey(request: { key: Uint8Array; t: number; n: number; expectedCurrentId: string | null }): Promise<{ rootKeyId: string }>;
}

export interface RotationSettings {
  readonly shares: number;
  readonly threshold: number;
  readonly leaseMs: number;
  readonly concurrency: number;
}

/** The rotation journal: a lease (one rotation at a time) and its progress, for status and resume. */
export interface RotationJournal {
  readonly format: 1;
  readonly kind: 'rotation';
  readonly holder: string;
  readonly leaseUntil: number;
  readonly phase: 'installing' | 'rewrapping';
  readonly to: string | null;
  readonly rewrapped: number;
  readonly startedAt: string;
}

export interface RotationResult {
  readonly rootKeyId: string;
  readonly shares: Share[];
  /** Rewraps every primary key under the new root key; resolves with how many it rewrapped. */
  readonly rewrap: Promise<number>;
}

/**
 * Root key rotation that never loses a key:
 * 1. take the rotation lease (a journal object created with If-None-Match, or taken over once lapsed);
 * 2. make the new key and its shares in memory;
 * 3. store the current root key wrapped under the new one (so every record stays readable);
 * 4. install the new key in the sealing service, which keeps the last verified shares able to
 *    recover until the new shares are verified;
 * 5. rewrap every primary key under the new key, compare-and-swap, renewing the lease.
 * A crash anywhere leaves every key readable through the stored links; the next rotation, or
 * `finishRewrap`, resumes step 5 for whatever is still under an older root key.
 */
export class RootKeyRotation {
  constructor(
    private readonly store: ObjectStore,
    private readonly keyring: RootKeyring,
    private readonly authority: RootKeyAuthority,
    private readonly settings: RotationSettings,
  ) {}

  async journal(): Promise<RotationJournal | undefined> {
    const object = await this.store.get(layout.rotationJournal());
    return object === undefined ? undefined : parseJournal(object.body);
  }

  /**
   * Steps 1-4; step 5 runs on in `rewrap` (the caller answers with the shares first). `authorizedFor`
   * is the state the caller checked its credentials against (the first rotation needs none): a
   * rotation never runs against another one, so a request let in to initialize cannot rotate a root
   * key that another request initialized meanwhile (the install's compare-and-swap holds the rest).
   */
  async rotate(authorizedFor: { readonly initialized: boolean }): Promise<RotationResult> {
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
    const lease = await this.#acquire();
    try {
      const previous = status.initialized ? await this.keyring.current({ refresh: true }) : undefined;
      const key = randomBytes(32);
      const next: RootKey = { id: rootKeyId(key), key };
      // Imported here, not at start-up: only a rotation splits a key, and most functions never rotate.
      const { split } = await import('shamir-secret-sharing');
      const shares = (await split(new Uint8Array(key), this.settings.shares, this.settings.threshold)).map((share) => ({
        // shamir-secret-sharing puts the x coordinate in the last byte: it is BigDL KMS's index.
        index: share[share.length - 1]!,
        content: Buffer.from(share).toString('base64'),
      }));
      await lease.update({ phase: 'installing', to: next.id });
      if (previous !== undefined) await this.keyring.linkPrevious(previous, next);
      faultPoint('rotate:after-link');
      await this.authority.installRootKey({ key, t: this.settings.threshold, n: this.settings.shares, expectedCurrentId: previous?.id ?? null });
      faultPoint('rotate:after-install');
      await this.keyring.current({ refresh: true });
      await lease.update({ phase: 'rewrapping' });
      const rewrap = this.#rewrapAll(next, lease).finally(() => lease.release());
      return { rootKeyId: next.id, shares, rewrap };
    } catch (error) {
      await lease.release();
      throw error;
    }
  }

  /** Step 5 alone: finishes an interrupted rotation's rewrap. Resolves with the count. */
  async finishRewrap(): Promise<number> {
    const lease = await this.#acquire();
    try {
      const current = await this.keyring.current({ refresh: true });
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
    const renewal = setInterval(() => {
      renewing ??= lease
        .update({ rewrapped })
        .catch((error: unknown) => void (leaseLost = error))
        .finally(() => (renewing = undefined));
    }, Math.max(100, this.settings.leaseMs / 3));
    let next = 0;
    const unreadable: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < keys.length && leaseLost === undefined) {
        const key = keys[next++]!;
        try {
          if (await this.#rewrapOne(key, target)) {
            rewrapped++;
            faultPoint(`rotate:rewrapped:${rewrapped}`);
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

  /** Rewraps one primary key (compare-and-swap, retried if it changed meanwhile). */
  async #rewrapOne(key: string, target: RootKey): Promise<boolean> {
    const match = /^primary-keys\/([^/]+)\/([^/]+)\.json$/.exec(key);
    if (match === null) return false;
    const [, user, name] = match as unknown as [string, string, string];
    for (let attempt = 0; attempt < 5; attempt++) {
      const object = await this.store.get(key);
      if (object === undefined) return false;
      const record = decodePrimaryKey(object.body, user, name);
      if (record.rootKeyId === target.id) return false;
      const material = unwrapKey(await this.keyring.byId(record.rootKeyId), record.wrapped, contexts.primaryKey(record));
      const rewrapped: PrimaryKeyRecord = {
        ...record,
        rootKeyId: target.id,
        wrapped: wrapKey(target.key, material, contexts.primaryKey({ ...record, rootKeyId: target.id })),
      };
      if (await this.store.replace(key, encodeRecord(rewrapped), object.etag)) return true;
    }
    throw new KmsError('STORAGE_UNAVAILABLE', `could not rewrap ${key}: it kept changing`);
  }

  async #acquire(): Promise<Lease> {
    const holder = randomBytes(8).toString('hex');
    const fresh = (state: Partial<RotationJournal> = {}): RotationJournal => ({
      format: 1,
      kind: 'rotation',
      holder,
      leaseUntil: Date.now() + this.settings.leaseMs,
      phase: 'installing',
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
        throw new KmsError('CONFLICT', `a root key rotation is in progress (${journal.phase}, since ${journal.startedAt}); retry after it finishes`);
      }
      // A lapsed lease: its holder crashed. Take over (compare-and-swap: one taker wins).
      const body = encodeRecord(fresh({ startedAt: journal?.startedAt }));
      if (existing === undefined || !(await this.store.replace(key, body, existing.etag))) {
        throw new KmsError('CONFLICT', 'another rotation took over the lapsed rotation at the same time; retry');
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
          throw new KmsError('CONFLICT', 'the rotation lease was lost to another rotation');
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

function parseJournal(body: Buffer): RotationJournal | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as RotationJournal;
    return value.kind === 'rotation' && typeof value.leaseUntil === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}
