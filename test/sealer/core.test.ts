// The sealing service's core on the embedded store, with storage that applies a write of the state
// record and loses its answer (a connection reset after the server acted): what storage holds
// decides, so a promotion that landed is never reported as failed, nor its key left unheld.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SealerCore } from '../../sealer/core.js';
import { STATE_OBJECT_KEY } from '../../sealer/state-record.js';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { KmsError } from '../../shared/errors.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { ForwardingStore } from '../support/forwarding-store.js';

const unreachable = () => new KmsError('STORAGE_UNAVAILABLE', 'object storage cannot be reached (ECONNRESET)');

/** Storage whose next write of the state record is applied and its answer lost, then unreadable for `reads` reads. */
class LosingAnswers extends ForwardingStore {
  loseNext = false;
  unreadableReads = 0;

  override async replace(key: string, body: Buffer, etag: string) {
    if (key !== STATE_OBJECT_KEY || !this.loseNext) return this.inner.replace(key, body, etag);
    this.loseNext = false;
    await this.inner.replace(key, body, etag);
    throw unreachable();
  }

  override get(key: string) {
    if (key === STATE_OBJECT_KEY && this.unreadableReads > 0) {
      this.unreadableReads--;
      return Promise.reject(unreachable());
    }
    return this.inner.get(key);
  }
}

describe('SealerCore: a write of the state record whose answer was lost', () => {
  let dir: string;
  let store: LosingAnswers;
  let core: SealerCore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-core-'));
    store = new LosingAnswers(new FsObjectStore(dir));
    core = await SealerCore.open(store, { recoveryTtlMs: 60_000 });
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Initializes a root key and rotates once: the pending key's id and shares. */
  async function pendingRotation(): Promise<{ current: string; pending: string; shares: Share[] }> {
    const first = await core.install({ t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null });
    const next = await core.install({ t: 2, n: 3, expectedCurrentId: first.rootKeyId, expectedPendingId: null });
    return { current: first.rootKeyId, pending: next.rootKeyId, shares: next.shares };
  }

  const heldKeyId = () => rootKeyId(core.currentKey());

  it('a promotion that landed is done: the answer says so and the new key is the one held', async () => {
    const { current, pending, shares } = await pendingRotation();
    store.loseNext = true;
    expect(await core.verify({ shares: shares.slice(0, 2) })).toEqual({ rootKeyId: pending, verified: true, promoted: true, previousRootKeyId: current });
    expect(heldKeyId()).toBe(pending);
    expect(core.status()).toMatchObject({ rootKeyId: pending, pendingRootKeyId: null, integrityAlarm: null });
  });

  it('while storage stays unreachable the verify fails (503), and made again it completes, with no alarm', async () => {
    const { current, pending, shares } = await pendingRotation();
    store.loseNext = true;
    store.unreadableReads = 100; // every read the verify makes while it waits
    const failed = await core.verify({ shares: shares.slice(0, 2) }).catch((error: unknown) => error);
    expect(failed).toMatchObject({ code: 'STORAGE_UNAVAILABLE' });
    expect(heldKeyId()).toBe(current);
    store.unreadableReads = 0;
    expect(await core.verify({ shares: shares.slice(0, 2) })).toMatchObject({ rootKeyId: pending, promoted: true });
    expect(heldKeyId()).toBe(pending);
    expect(core.status()).toMatchObject({ rootKeyId: pending, pendingRootKeyId: null, integrityAlarm: null });
    expect(core.counts().integrityAlarms).toBe(0);
  }, 20_000);

  it('a rotation whose answer was lost leaves its pending key in storage; the next rotate replaces it', async () => {
    const first = await core.install({ t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null });
    store.loseNext = true;
    const landed = await core.install({ t: 2, n: 3, expectedCurrentId: first.rootKeyId, expectedPendingId: null });
    expect(core.status()).toMatchObject({ rootKeyId: first.rootKeyId, pendingRootKeyId: landed.rootKeyId });
    const next = await core.install({ t: 2, n: 3, expectedCurrentId: first.rootKeyId, expectedPendingId: landed.rootKeyId });
    expect(core.status().pendingRootKeyId).toBe(next.rootKeyId);
  });
});

describe('SealerCore replicas: a promotion that loses to a peer’s rotate', () => {
  let dir: string;
  const stores: FsObjectStore[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-core-'));
  });
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const fsStore = () => {
    const store = new FsObjectStore(dir);
    stores.push(store);
    return store;
  };

  it('leaves no link behind: the current shares still unseal after a restart', async () => {
    const a = await SealerCore.open(fsStore(), { recoveryTtlMs: 60_000, followRecord: true });
    const first = await a.install({ t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null });
    const second = await a.install({ t: 2, n: 3, expectedCurrentId: first.rootKeyId, expectedPendingId: null });
    // Replica b verifies the second key; while it stores its link, replica a rotates again.
    let third: string | undefined;
    class PeerRotatesMeanwhile extends ForwardingStore {
      override async create(key: string, body: Buffer) {
        if (key.startsWith('root-keys/') && third === undefined) {
          third = (await a.install({ t: 2, n: 3, expectedCurrentId: first.rootKeyId, expectedPendingId: second.rootKeyId })).rootKeyId;
        }
        return this.inner.create(key, body);
      }
    }
    // What b tells auto-unseal of (the key it would wrap for the next start): the key current in the end.
    const told: string[] = [];
    const onKeyChange = async (changed: { readonly id: string }) => void told.push(changed.id);
    const b = await SealerCore.open(new PeerRotatesMeanwhile(fsStore()), { recoveryTtlMs: 60_000, followRecord: true, onKeyChange });
    const key = a.currentKey();
    expect(await b.adoptPeerKey(key)).toBe(true);
    key.fill(0);
    expect(await b.verify({ shares: second.shares.slice(0, 2) }).catch((error: unknown) => error)).toMatchObject({ code: 'CONFLICT' });
    expect(a.status()).toMatchObject({ rootKeyId: first.rootKeyId, pendingRootKeyId: third });
    expect(told.at(-1)).toBe(first.rootKeyId);

    // A restart: the current key's shares unseal; nothing retired it.
    const restarted = await SealerCore.open(fsStore(), { recoveryTtlMs: 60_000 });
    await restarted.submitShare(first.shares[0]);
    expect(await restarted.submitShare(first.shares[1])).toMatchObject({ sealed: false, rootKeyId: first.rootKeyId });
  });
});
