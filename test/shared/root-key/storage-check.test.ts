/**
 * Objects the KMS never writes, planted where it lists records (names outside the layout's charset,
 * a root key id of another form): reads, the unseal check and the rewrap report them (INTEGRITY)
 * and go on with the genuine records, against a real sealing-service process and storage an
 * adversary writes behind the KMS's back. Each test has storage and a sealing service of its own.
 */
import { describe, expect, it, vi } from 'vitest';
import { KeyStore } from '../../../shared/keys/keystore.js';
import { layout } from '../../../shared/keys/layout.js';
import { RootKeyring } from '../../../shared/root-key/keyring.js';
import { RootKeyRotation } from '../../../shared/root-key/rotation.js';
import { SealerRootKeySource } from '../../../shared/root-key/sealer-source.js';
import type { SealerClient } from '../../../shared/sealer-client/client.js';
import type { Share } from '../../../shared/sealer-client/protocol.js';
import { attackedStorages, renameRootKeyOf, type AttackedStorage } from '../../support/adversary.js';
import { startSealerProcess, type SealerProcess } from '../../support/sealer.js';

const noCache = { cacheTtlMs: 0, cacheEntries: 0 };
const GENUINE = ['pk-1', 'pk-2', 'pk-3'];
/** Copies of a genuine record, under names the KMS never writes. */
const PLANTED = ['primary-keys/zz/a b.json', 'primary-keys/.zz/pk.json', `primary-keys/zz/${'a'.repeat(65)}.json`];
/** A genuine record, edited to name a "root key id" that would be a path. */
const RENAMED = layout.primaryKey('alice', 'renamed');

/** How a name appears in a JSON log line's message, where the KMS quotes it. */
const quoted = (objectKey: string) => JSON.stringify(JSON.stringify(objectKey)).slice(1, -1);

interface World {
  readonly storage: AttackedStorage;
  readonly sealer: SealerProcess;
  client: SealerClient;
  /** The current root key's shares. */
  readonly shares: Share[];
  /** Each primary key's data key `dk`, as created. */
  readonly dataKeys: Map<string, Buffer>;
  /** A function started now: nothing of the root keys in memory yet. */
  keys(): KeyStore;
  rotation(): RootKeyRotation;
}

/** Storage with genuine keys of user alice and the planted objects above, and its sealing service. */
async function withWorld(open: () => Promise<AttackedStorage>, run: (world: World) => Promise<void>): Promise<void> {
  const storage = await open();
  let sealer: SealerProcess | undefined;
  try {
    sealer = await startSealerProcess({ env: storage.env });
    const keyring = () => new RootKeyring(new SealerRootKeySource(async () => world.client, { refreshMs: 60_000, graceMs: 0 }), storage.store);
    const world: World = {
      storage,
      sealer,
      client: await sealer.client(),
      shares: [],
      dataKeys: new Map(),
      keys: () => new KeyStore(storage.store, keyring(), noCache),
      rotation: () => new RootKeyRotation(storage.store, keyring(), world.client, { shares: 5, threshold: 3, leaseMs: 60_000, concurrency: 4 }),
    };
    world.shares.push(...(await world.rotation().rotate({ initialized: false })).shares);
    const keys = world.keys();
    await keys.enrollUser('alice', 'alice-token');
    const alice = await keys.authenticate('alice', 'alice-token');
    for (const name of [...GENUINE, 'renamed']) {
      await keys.createPrimaryKey(alice, name);
      await keys.createDataKey(alice, name, 'dk');
      world.dataKeys.set(name, await keys.getDataKey(alice, name, 'dk'));
    }
    const genuine = (await storage.adversary.read(layout.primaryKey('alice', 'pk-1')))!;
    for (const objectKey of PLANTED) await storage.adversary.write(objectKey, genuine);
    await renameRootKeyOf(storage.adversary, RENAMED, '../../users');
    await run(world);
  } finally {
    await sealer?.cleanup();
    await storage.cleanup();
  }
}

/** What this process wrote to stderr while `run` ran (its warnings), and what `run` resolved with. */
async function stderrDuring<T>(run: () => Promise<T>): Promise<{ result: T; stderr: string }> {
  const writes = vi.spyOn(process.stderr, 'write');
  try {
    const result = await run();
    return { result, stderr: writes.mock.calls.map(([text]) => String(text)).join('') };
  } finally {
    writes.mockRestore();
  }
}

for (const [backend, open] of Object.entries(attackedStorages)) {
  describe(`objects the KMS never writes, planted among its records: ${backend}`, () => {
    it('a record naming a root key id of another form is INTEGRITY for its key alone; the others are served', () =>
      withWorld(open, async (world) => {
        const keys = world.keys();
        const alice = await keys.authenticate('alice', 'alice-token');
        await expect(keys.getDataKey(alice, 'renamed', 'dk')).rejects.toMatchObject({ code: 'INTEGRITY' });
        for (const name of GENUINE) expect(await keys.getDataKey(alice, name, 'dk')).toEqual(world.dataKeys.get(name));
      }));

    it('after a restart the real shares still unseal; the sealing service reports what was planted', () =>
      withWorld(open, async (world) => {
        await world.sealer.restart('SIGKILL');
        world.client.close();
        world.client = await world.sealer.client();
        for (const share of world.shares.slice(0, 2)) expect(await world.client.submitShare(share)).toMatchObject({ sealed: true });
        expect(await world.client.submitShare(world.shares[2]!)).toMatchObject({ sealed: false });
        const alice = await world.keys().authenticate('alice', 'alice-token');
        expect(await world.keys().getDataKey(alice, 'pk-1', 'dk')).toEqual(world.dataKeys.get('pk-1'));
        await world.sealer.settle();
        const reported = world.sealer.stderr();
        expect(reported).toContain('"code":"INTEGRITY"');
        expect(reported).toContain('4 stored object(s) are no record the KMS wrote');
        for (const objectKey of [...PLANTED, RENAMED]) expect(reported).toContain(quoted(objectKey));
      }));

    it('a rotation rewraps every genuine record past planted records, links and ranges, reports each, and ends in INTEGRITY', () =>
      withWorld(open, async (world) => {
        const { storage } = world;
        const before = (await world.client.sealStatus()).rootKeyId!;
        const next = await world.rotation().rotate({ initialized: true });
        // Planted where the walk to the retired root key lists links, and among the new rotation's ranges.
        const plantedLink = `root-keys/${before}/a b.json`;
        const plantedRange = `rotation/ranges/${next.rootKeyId}/a b.json`;
        await storage.adversary.write(plantedLink, '{}');
        await storage.adversary.write(plantedRange, '{}');

        // The renamed record fails authentication: left as it is, and the verification says so (INTEGRITY), once the rest is rewrapped.
        const { result, stderr } = await stderrDuring(() =>
          world
            .rotation()
            .verify(next.shares.slice(0, 3))
            .catch((error: unknown) => error),
        );
        expect(result).toMatchObject({
          code: 'INTEGRITY',
          message: expect.stringContaining('1 primary key record(s) failed authentication and were left under an older root key') as unknown,
          details: { rootKeyId: next.rootKeyId, rewrapped: GENUINE.length, unreadable: 1 },
        });
        expect((await world.client.sealStatus()).rootKeyId).toBe(next.rootKeyId);
        for (const name of GENUINE) {
          const record = JSON.parse((await storage.adversary.read(layout.primaryKey('alice', name)))!.toString()) as { rootKeyId: string };
          expect(record.rootKeyId).toBe(next.rootKeyId);
        }
        expect(await storage.store.get(layout.rotationJournal())).toBeUndefined(); // the rotation completed
        expect(stderr).toContain('"code":"INTEGRITY"');
        for (const objectKey of [...PLANTED, plantedLink, plantedRange]) expect(stderr).toContain(quoted(objectKey));
        expect(stderr).toContain(RENAMED); // failed authentication, left as it is
        // Planted objects are left as they were; every genuine key reads the same under the new root key.
        expect(await storage.adversary.read(plantedRange)).toEqual(Buffer.from('{}'));
        const keys = world.keys();
        const alice = await keys.authenticate('alice', 'alice-token');
        for (const name of GENUINE) expect(await keys.getDataKey(alice, name, 'dk')).toEqual(world.dataKeys.get(name));
        await expect(keys.getDataKey(alice, 'renamed', 'dk')).rejects.toMatchObject({ code: 'INTEGRITY' });
      }));
  });
}
