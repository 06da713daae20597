/**
 * RootKeyring's walk through stored root-key links, against a real sealing-service process (root
 * keys made by real rotations) and storage an adversary writes behind the KMS's back.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { KeyStore } from '../../../shared/keys/keystore.js';
import { layout } from '../../../shared/keys/layout.js';
import { RootKeyring } from '../../../shared/root-key/keyring.js';
import { storeRootKeyLink } from '../../../shared/root-key/links.js';
import { RootKeyRotation } from '../../../shared/root-key/rotation.js';
import { SealerRootKeySource } from '../../../shared/root-key/sealer-source.js';
import type { SealerClient } from '../../../shared/sealer-client/client.js';
import type { ObjectStore } from '../../../shared/store/object-store.js';
import { attackedStorages, plantedLinkGraph, renameRootKeyOf, type AttackedStorage } from '../../support/adversary.js';
import { startSealerProcess, type SealerProcess } from '../../support/sealer.js';
import { ForwardingStore } from '../../support/forwarding-store.js';

/** The real store, counting how often root-key links are listed (one listing per id a walk enters). */
class LinkListingCounter extends ForwardingStore {
  listings = 0;
  override list(prefix: string) {
    if (prefix.startsWith('root-keys/')) this.listings++;
    return this.inner.list(prefix);
  }
}

const noCache = { cacheTtlMs: 0, cacheEntries: 0 };

for (const [backend, open] of Object.entries(attackedStorages)) {
  describe(`RootKeyring walks stored links within bounds: ${backend}`, () => {
    let storage: AttackedStorage;
    let sealer: SealerProcess;
    let client: SealerClient;
    let rotation: RootKeyRotation;
    /** A function started now: nothing of the root keys in memory yet. */
    const coldKeyring = (store: ObjectStore = storage.store) =>
      new RootKeyring(new SealerRootKeySource(async () => client, { refreshMs: 60_000, graceMs: 0 }), store);

    beforeAll(async () => {
      storage = await open();
      sealer = await startSealerProcess({ env: storage.env }); // it stores root key links where the keys are
      client = await sealer.client();
      rotation = new RootKeyRotation(storage.store, coldKeyring(), client, { shares: 5, threshold: 3, leaseMs: 60_000, concurrency: 4 });
      await rotation.rotate({ initialized: false });
    });
    afterAll(async () => {
      await sealer?.cleanup();
      await storage?.cleanup();
    });

    it('resolves a key under a root key several rotations old, past the links abandoned rotations left', async () => {
      const { store, adversary } = storage;
      const keys = new KeyStore(store, coldKeyring(), noCache);
      await keys.enrollUser('chain', 'chain-token');
      const principal = await keys.authenticate('chain', 'chain-token');
      await keys.createPrimaryKey(principal, 'pk');
      await keys.createDataKey(principal, 'pk', 'dk');
      const dataKey = await keys.getDataKey(principal, 'pk', 'dk');
      const underFirst = (await adversary.read(layout.primaryKey('chain', 'pk')))!;

      for (let i = 0; i < 4; i++) {
        // A rotation abandoned before it installed its key leaves a link to a key never used.
        const current = await coldKeyring().current();
        const abandoned = randomBytes(32);
        await storeRootKeyLink(store, current, { id: rootKeyId(abandoned), key: abandoned });
        const { shares } = await rotation.rotate({ initialized: true });
        await rotation.verify(shares.slice(0, 3));
      }
      // The record as it was before the rotations (a restored backup): still under the first root key.
      await adversary.write(layout.primaryKey('chain', 'pk'), underFirst);
      const cold = new KeyStore(store, coldKeyring(), noCache);
      expect(await cold.getDataKey(await cold.authenticate('chain', 'chain-token'), 'pk', 'dk')).toEqual(dataKey);
    });

    it('refuses a planted link graph at once (INTEGRITY), remembers it, serves other keys, and a rewrap ends in INTEGRITY instead of hanging', async () => {
      const { store, adversary } = storage;
      const keys = new KeyStore(store, coldKeyring(), noCache);
      await keys.enrollUser('victim', 'victim-token');
      const principal = await keys.authenticate('victim', 'victim-token');
      for (const name of ['deep', 'wide', 'untouched']) {
        await keys.createPrimaryKey(principal, name);
        await keys.createDataKey(principal, name, 'dk');
      }
      const untouched = await keys.getDataKey(principal, 'untouched', 'dk');

      // Deep: 7 successors per id (within the fan-out bound), 7^7 paths, 294 distinct links to read.
      // Wide: 9 successors per id, 9^7 paths. Followed path by path, neither walk would ever end.
      const deep = plantedLinkGraph(8, 7);
      const wide = plantedLinkGraph(8, 9);
      await adversary.writeAll(new Map([...deep.objects, ...wide.objects]));
      await renameRootKeyOf(adversary, layout.primaryKey('victim', 'deep'), deep.top);
      await renameRootKeyOf(adversary, layout.primaryKey('victim', 'wide'), wide.top);

      const counter = new LinkListingCounter(store);
      const cold = new KeyStore(counter, coldKeyring(counter), noCache);
      const impostor = await cold.authenticate('victim', 'victim-token');
      const refused = { code: 'INTEGRITY', message: expect.stringContaining('storage holds a root-key link graph this KMS will not follow') };
      await expect(cold.getDataKey(impostor, 'deep', 'dk')).rejects.toMatchObject(refused);
      await expect(cold.getDataKey(impostor, 'wide', 'dk')).rejects.toMatchObject(refused);
      await expect(cold.createDataKey(impostor, 'deep', 'dk2')).rejects.toMatchObject(refused);
      expect(await cold.getDataKey(impostor, 'untouched', 'dk')).toEqual(untouched);
      // Asked again, the refusal is remembered: no link is listed again.
      const listings = counter.listings;
      await expect(cold.getDataKey(impostor, 'deep', 'dk')).rejects.toMatchObject(refused);
      expect(counter.listings).toBe(listings);

      // The rewrap (what verify runs) ends, leaving both records as they are, and says so: INTEGRITY.
      const warnings = vi.spyOn(process.stderr, 'write');
      try {
        await expect(rotation.finishRewrap()).rejects.toMatchObject({
          code: 'INTEGRITY',
          message: expect.stringContaining('2 primary key record(s) failed authentication and were left under an older root key') as unknown,
        });
        const warned = warnings.mock.calls.map(([text]) => String(text)).join('');
        expect(warned).toContain('primary key record(s) failed authentication and were left as they are');
        expect(warned).toContain(layout.primaryKey('victim', 'deep'));
        expect(warned).toContain(layout.primaryKey('victim', 'wide'));
      } finally {
        warnings.mockRestore();
      }
      expect(await store.get(layout.rotationJournal())).toBeUndefined(); // the lease is released
    });
  });
}
