/**
 * RootKeyRotation against a real sealing-service process (its client over HTTPS and KBS) and the
 * embedded store: what a rotation may do depends on the state the caller was authorized against.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../../../shared/keys/layout.js';
import { RootKeyring } from '../../../shared/root-key/keyring.js';
import { RootKeyRotation } from '../../../shared/root-key/rotation.js';
import { SealerRootKeySource } from '../../../shared/root-key/sealer-source.js';
import type { SealerClient } from '../../../shared/sealer-client/client.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { startSealerProcess, type SealerProcess } from '../../support/sealer.js';

describe('RootKeyRotation', () => {
  let sealer: SealerProcess;
  let client: SealerClient;
  let dir: string;
  let store: FsObjectStore;
  let rotation: RootKeyRotation;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-rotation-'));
    sealer = await startSealerProcess({ env: { KMS_STORE: 'fs', KMS_DATA_DIR: dir } }); // the functions' storage
    client = await sealer.client();
    store = new FsObjectStore(dir);
    const keyring = new RootKeyring(new SealerRootKeySource(async () => client, { refreshMs: 60_000, graceMs: 0 }), store);
    rotation = new RootKeyRotation(store, keyring, client, { shares: 5, threshold: 3, leaseMs: 60_000, concurrency: 4 });
  });
  afterAll(async () => {
    await sealer?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('a request let in to initialize (no credentials) cannot rotate a root key that another request initialized meanwhile', async () => {
    // Two callers both saw "uninitialized", so neither was asked for the admin token.
    const first = await rotation.rotate({ initialized: false });
    expect(first.pending).toBe(false);
    const installed = await client.sealStatus();
    expect(installed).toMatchObject({ initialized: true, sealed: false, rootKeyId: first.rootKeyId });

    await expect(rotation.rotate({ initialized: false })).rejects.toMatchObject({
      code: 'CONFLICT',
      message: 'the root key was initialized by another request meanwhile; rotating it now needs the admin token',
    });
    // Nothing changed: the same root key, no rotation journal, no link to a successor.
    expect(await client.sealStatus()).toEqual(installed);
    expect(await store.get(layout.rotationJournal())).toBeUndefined();
    const links: string[] = [];
    for await (const key of store.list(layout.successorsOf(first.rootKeyId))) links.push(key);
    expect(links).toEqual([]);

    // With the credentials checked against the initialized state, it rotates: pending until verified.
    const second = await rotation.rotate({ initialized: true });
    expect(second).toMatchObject({ pending: true });
    expect(second.rootKeyId).not.toBe(first.rootKeyId);
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: first.rootKeyId, pendingRootKeyId: second.rootKeyId });
    expect(await rotation.verify(second.shares.slice(1, 4))).toMatchObject({ promoted: true, rootKeyId: second.rootKeyId, previousRootKeyId: first.rootKeyId });
    expect((await client.sealStatus()).rootKeyId).toBe(second.rootKeyId);
  });

  it('a rotation never silently replaces another: the second of two concurrent ones is refused', async () => {
    const results = await Promise.allSettled([rotation.rotate({ initialized: true }), rotation.rotate({ initialized: true })]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost[0]!.reason).toMatchObject({ code: 'CONFLICT' });
    const pending = (won[0] as PromiseFulfilledResult<{ rootKeyId: string }>).value.rootKeyId;
    expect((await client.sealStatus()).pendingRootKeyId).toBe(pending);
    // Asked again on purpose (an operator who lost the new shares), it replaces the pending key.
    const again = await rotation.rotate({ initialized: true });
    expect((await client.sealStatus()).pendingRootKeyId).toBe(again.rootKeyId);
  });
});
