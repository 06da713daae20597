/**
 * RootKeyRotation against a real sealing-service process (its client over HTTPS and KBS) and the
 * embedded store: what a rotation may do depends on the state the caller was authorized against.
 * Its journal against the embedded store and Ceph RGW: a finisher removes only its own rotation's.
 * And the rewrap against whoever writes storage, on both: replayed journal and range records skip no
 * key, records that fail authentication make every instance in the rewrap answer INTEGRITY, and a
 * range record overwritten under its holder stalls nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { KeyStore } from '../../../shared/keys/keystore.js';
import { layout } from '../../../shared/keys/layout.js';
import { RootKeyring } from '../../../shared/root-key/keyring.js';
import { storeRootKeyLink } from '../../../shared/root-key/links.js';
import { readRotationJournal, RootKeyRotation } from '../../../shared/root-key/rotation.js';
import { SealerRootKeySource } from '../../../shared/root-key/sealer-source.js';
import { StaticRootKeySource } from '../../../shared/root-key/source.js';
import type { SealerClient } from '../../../shared/sealer-client/client.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import type { ObjectStore } from '../../../shared/store/object-store.js';
import { attackedStorages, type AttackedStorage } from '../../support/adversary.js';
import { createTestBucket, type TestBucket } from '../../support/s3.js';
import { startSealerProcess, type SealerProcess } from '../../support/sealer.js';
import { ForwardingStore } from '../../support/forwarding-store.js';

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

/** The store, with `before` run once ahead of the first listing under `prefix` (another instance's write, interleaved there). */
class ListingHook extends ForwardingStore {
  constructor(
    inner: ObjectStore,
    private readonly prefix: string,
    private before: (() => Promise<void>) | undefined,
  ) {
    super(inner);
  }
  override async *list(prefix: string) {
    const before = this.before;
    if (prefix === this.prefix && before !== undefined) {
      this.before = undefined;
      await before();
    }
    yield* this.inner.list(prefix);
  }
}

const noAuthority = {
  sealStatus: () => Promise.reject(new Error('not used')),
  installRootKey: () => Promise.reject(new Error('not used')),
  verifyShares: () => Promise.reject(new Error('not used')),
};

for (const kind of ['fs', 's3'] as const) {
  describe(`the rotation journal (${kind === 'fs' ? 'embedded store' : 'Ceph RGW'})`, () => {
    let store: ObjectStore;
    let dir: string | undefined;
    let bucket: TestBucket | undefined;
    beforeAll(async () => {
      if (kind === 'fs') store = new FsObjectStore((dir = await mkdtemp(join(tmpdir(), 'tee-kms-journal-'))));
      else store = (bucket = await createTestBucket()).store();
    });
    afterAll(async () => {
      await store?.close();
      await bucket?.remove();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    });

    const rotationUnder = (key: Buffer, on: ObjectStore) =>
      new RootKeyRotation(on, new RootKeyring(new StaticRootKeySource(key), on), noAuthority, { shares: 5, threshold: 3, leaseMs: 60_000, concurrency: 2 });

    it("a late finisher leaves a newer rotation's journal in place; that rotation's finisher removes it", async () => {
      const older = randomBytes(32);
      const newer = randomBytes(32);
      const journalOf = async () => JSON.parse((await store.get(layout.rotationJournal()))!.body.toString()) as { to: string };
      // While the older rotation's finisher removes its ranges, a newer rotation's first verification replaces the journal.
      const late = new ListingHook(store, layout.rotationRanges(rootKeyId(older)), async () => {
        const existing = await store.get(layout.rotationJournal());
        expect(existing).toBeDefined();
        const newerJournal = { ...(JSON.parse(existing!.body.toString()) as object), holder: 'newer', to: rootKeyId(newer), rewrapped: 0 };
        expect(await store.replace(layout.rotationJournal(), Buffer.from(JSON.stringify(newerJournal)), existing!.etag)).toBe(true);
      });
      expect(await rotationUnder(older, late).finishRewrap(rootKeyId(older))).toBe(0);
      expect((await journalOf()).to).toBe(rootKeyId(newer));
      expect(await rotationUnder(newer, store).finishRewrap(rootKeyId(newer))).toBe(0);
      expect(await store.get(layout.rotationJournal())).toBeUndefined();
    });

    it('a journal whose fields are not what they claim (written into storage) is replaced, never used', async () => {
      const key = randomBytes(32);
      // As text: one field of an otherwise well-formed journal each (a later duplicate member wins).
      const deep = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
      const forgeries = ['"to":{"toString":0}', `"to":${deep}`, '"to":"not-an-id"', '"rewrapped":"7"', '"leaseUntil":null', `"holder":"${'x'.repeat(10_000)}"`];
      for (const forged of forgeries) {
        const fields = {
          format: 1,
          kind: 'rotation',
          holder: 'h',
          leaseUntil: 0,
          phase: 'rewrapping',
          to: rootKeyId(key),
          rewrapped: 0,
          ranges: 1,
          startedAt: 's',
        };
        const text = `${JSON.stringify(fields).slice(0, -1)},${forged}}`;
        await store.delete(layout.rotationJournal());
        expect(await store.create(layout.rotationJournal(), Buffer.from(text))).toBe(true);
        expect(await readRotationJournal(store), forged.slice(0, 60)).toBeUndefined();
        // The rewrap takes no field of it: it replaces the journal with its own, runs, and removes it.
        expect(await rotationUnder(key, store).finishRewrap(rootKeyId(key))).toBe(0);
        expect(await store.get(layout.rotationJournal())).toBeUndefined();
      }
    });
  });
}

/** The store, with `after` run after each of its writes (whoever writes storage, acting at a moment of its choosing). */
class AfterEachWrite extends ForwardingStore {
  constructor(
    inner: ObjectStore,
    private readonly after: (key: string) => Promise<void>,
  ) {
    super(inner);
  }
  override async create(key: string, body: Buffer) {
    const created = await this.inner.create(key, body);
    await this.after(key);
    return created;
  }
  override async replace(key: string, body: Buffer, etag: string) {
    const replaced = await this.inner.replace(key, body, etag);
    await this.after(key);
    return replaced;
  }
  override async write(key: string, body: Buffer, expected: string | null) {
    const written = await this.inner.write(key, body, expected);
    await this.after(key);
    return written;
  }
}

for (const [backend, open] of Object.entries(attackedStorages)) {
  describe(`the rewrap against whoever writes storage: ${backend}`, () => {
    // Storage of its own for each test: every one rotates to root keys of its own.
    let storage: AttackedStorage;
    beforeEach(async () => {
      storage = await open();
    });
    afterEach(async () => {
      await storage?.store.close();
      await storage?.cleanup();
    });

    /** A retired root key, its successor (the rotation's target), and the link the sealing service stores between them. */
    async function rotated(): Promise<{ retired: Buffer; target: Buffer }> {
      const retired = randomBytes(32);
      const target = randomBytes(32);
      await storeRootKeyLink(storage.store, { id: rootKeyId(retired), key: retired }, { id: rootKeyId(target), key: target });
      return { retired, target };
    }
    /** `count` primary keys of a new user, wrapped under `rootKey` (as a function that still holds it writes them). */
    async function primaryKeysUnder(rootKey: Buffer, user: string, count: number): Promise<string[]> {
      const keys = new KeyStore(storage.store, new RootKeyring(new StaticRootKeySource(rootKey), storage.store), { cacheTtlMs: 0, cacheEntries: 0 });
      await keys.enrollUser(user, `${user}-token`);
      const principal = await keys.authenticate(user, `${user}-token`);
      const names = Array.from({ length: count }, (_, i) => `pk${i}`);
      for (const name of names) await keys.createPrimaryKey(principal, name);
      return names.map((name) => layout.primaryKey(user, name));
    }
    /** The root key id each record names, as stored (read by the adversary's own means). */
    const rootKeyIdsOf = async (keys: readonly string[]) =>
      new Set(await Promise.all(keys.map(async (key) => (JSON.parse((await storage.adversary.read(key))!.toString()) as { rootKeyId: string }).rootKeyId)));
    const rotationUnder = (key: Buffer, on: ObjectStore = storage.store, leaseMs = 60_000, concurrency = 2) =>
      new RootKeyRotation(on, new RootKeyring(new StaticRootKeySource(key), on), noAuthority, { shares: 5, threshold: 3, leaseMs, concurrency });
    async function rotationObjects(): Promise<string[]> {
      const left: string[] = [];
      for await (const key of storage.store.list('rotation/')) left.push(key);
      return left;
    }

    for (const [when, leaseMs] of [
      ['at once (its lease still running)', 60_000],
      ['once its lease lapsed', 300],
    ] as const) {
      it(`a completed pass's journal and done ranges, replayed ${when}, skip no key: the next verify rewraps keys wrapped under the retired key since`, async () => {
        const { retired, target } = await rotated();
        const early = await primaryKeysUnder(retired, `early-${leaseMs}`, 3);
        // The adversary keeps the last version of every rotation object the pass writes.
        const kept = new Map<string, Buffer>();
        const watched = new AfterEachWrite(storage.store, async (key) => {
          if (key.startsWith('rotation/')) kept.set(key, (await storage.adversary.read(key))!);
        });
        expect(await rotationUnder(target, watched, leaseMs).finishRewrap(rootKeyId(target))).toBe(3);
        expect(await rotationObjects()).toEqual([]);
        expect([...kept.keys()]).toContain(layout.rotationJournal());

        // A function in its grace period still wraps new keys under the retired root key; the operator verifies again.
        const late = await primaryKeysUnder(retired, `late-${leaseMs}`, 2);
        if (leaseMs < 60_000) await new Promise((resolve) => setTimeout(resolve, leaseMs + 200));
        for (const [key, body] of kept) await storage.adversary.write(key, body);
        expect(await rotationUnder(target).finishRewrap(rootKeyId(target))).toBe(2);
        expect(await rootKeyIdsOf([...early, ...late])).toEqual(new Set([rootKeyId(target)]));
        expect(await rotationObjects()).toEqual([]);
      });
    }

    it('a link hidden during the rewrap: the rest is rewrapped, every instance in it answers INTEGRITY, and verifying again once it is back finishes', async () => {
      const { retired, target } = await rotated();
      const keys = await primaryKeysUnder(retired, 'hidden-link', 4);
      const link = layout.previousRootKey(rootKeyId(retired), rootKeyId(target));
      const stored = (await storage.adversary.read(link))!;
      await storage.adversary.remove(link);
      // Two instances in the same rewrap: one may rewrap the range, the other finds it done.
      const results = await Promise.allSettled([rotationUnder(target).finishRewrap(), rotationUnder(target).finishRewrap()]);
      for (const result of results) {
        expect(result.status).toBe('rejected');
        expect((result as PromiseRejectedResult).reason).toMatchObject({
          code: 'INTEGRITY',
          message: expect.stringContaining('4 primary key record(s) failed authentication and were left under an older root key') as unknown,
        });
        expect(String((result as PromiseRejectedResult).reason)).toContain('Verify again once storage is repaired');
      }
      expect(await rootKeyIdsOf(keys)).toEqual(new Set([rootKeyId(retired)]));
      expect(await rotationObjects()).toEqual([]); // the pass ended: nothing hangs, nothing is left held

      await storage.adversary.write(link, stored);
      expect(await rotationUnder(target).finishRewrap(rootKeyId(target))).toBe(4);
      expect(await rootKeyIdsOf(keys)).toEqual(new Set([rootKeyId(target)]));
    });

    it('the journal removed under a running rewrap (by storage, or by a finisher): the instance joins again, in a new pass, and finishes', async () => {
      const { retired, target } = await rotated();
      const keys = await primaryKeysUnder(retired, 'rejoined', 8);
      let rewritten = 0;
      const watched = new AfterEachWrite(storage.store, async (key) => {
        if (!key.startsWith('primary-keys/') || ++rewritten !== 3) return;
        await storage.adversary.remove(layout.rotationJournal());
        await new Promise((resolve) => setTimeout(resolve, 400)); // its progress report runs meanwhile
      });
      const rewrap = rotationUnder(target, watched, 300, 1).finishRewrap(rootKeyId(target));
      const outcome = await Promise.race([rewrap, new Promise((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
      expect(outcome).toBe(8);
      expect(await rootKeyIdsOf(keys)).toEqual(new Set([rootKeyId(target)]));
      expect(await rotationObjects()).toEqual([]);
    });

    it('a range record overwritten once mid-rewrap: its holder takes the range again and finishes it', async () => {
      const { retired, target } = await rotated();
      const keys = await primaryKeysUnder(retired, 'overwritten', 12);
      let rewritten = 0;
      const watched = new AfterEachWrite(storage.store, async (key) => {
        if (!key.startsWith('primary-keys/') || ++rewritten !== 4) return;
        // Junk over the range record the holder leases, left there while its lease renewal runs.
        await storage.adversary.write(layout.rotationRange(rootKeyId(target), 0), '{"junk":true}');
        await new Promise((resolve) => setTimeout(resolve, 400));
      });
      const rewrap = rotationUnder(target, watched, 300, 1).finishRewrap(rootKeyId(target));
      const outcome = await Promise.race([rewrap, new Promise((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
      expect(outcome).toBe(12);
      expect(await rootKeyIdsOf(keys)).toEqual(new Set([rootKeyId(target)]));
      expect(await rotationObjects()).toEqual([]);
    });
  });
}

describe('a rewrap whose target a newer rotation retired while it ran', () => {
  const noAuthority = {
    sealStatus: () => Promise.reject(new Error('not used')),
    installRootKey: () => Promise.reject(new Error('not used')),
    verifyShares: () => Promise.reject(new Error('not used')),
  };
  let dir: string;
  let store: FsObjectStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-retarget-'));
    store = new FsObjectStore(dir);
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stops with CONFLICT and never moves a key back under the retired key', async () => {
    const [t0, t1, t2] = [randomBytes(32), randomBytes(32), randomBytes(32)].map((key) => ({ id: rootKeyId(key), key }));
    await storeRootKeyLink(store, t0!, t1!);
    await storeRootKeyLink(store, t1!, t2!);
    const keys = new KeyStore(store, new RootKeyring(new StaticRootKeySource(t0!.key), store), { cacheTtlMs: 0, cacheEntries: 0 });
    await keys.enrollUser('u', 'u-token');
    const principal = await keys.authenticate('u', 'u-token');
    const names = Array.from({ length: 20 }, (_, i) => `pk${i}`);
    for (const name of names) await keys.createPrimaryKey(principal, name);
    const rootKeyIds = async () =>
      Promise.all(names.map(async (name) => JSON.parse((await store.get(layout.primaryKey('u', name)))!.body.toString()).rootKeyId as string));

    // Instance A rewraps to t1, slowly; after its third write, t2 is made current and instance B's
    // rewrap to t2 runs to its end. A's sealing service then names t2.
    let current = t1!;
    let written = 0;
    let finishedB: Promise<number> | undefined;
    class SlowA extends ForwardingStore {
      override async replace(key: string, body: Buffer, etag: string) {
        const replaced = await this.inner.replace(key, body, etag);
        if (key.startsWith('primary-keys/') && ++written === 3) {
          current = t2!;
          const b = new RootKeyRotation(store, new RootKeyring(new StaticRootKeySource(t2!.key), store), noAuthority, {
            shares: 5,
            threshold: 3,
            leaseMs: 300,
            concurrency: 2,
          });
          finishedB = b.finishRewrap(t2!.id);
          await finishedB;
        }
        return replaced;
      }
    }
    const slow = new SlowA(store);
    const source = { current: async () => current, currentId: async () => current.id };
    const a = new RootKeyRotation(slow, new RootKeyring(source, slow), noAuthority, { shares: 5, threshold: 3, leaseMs: 300, concurrency: 1 });
    await expect(a.finishRewrap(t1!.id)).rejects.toMatchObject({
      code: 'CONFLICT',
      message: expect.stringContaining(`the root key changed again meanwhile (storage links ${t1!.id} to a successor`),
    });
    expect(await finishedB).toBeGreaterThan(0);
    expect(new Set(await rootKeyIds())).toEqual(new Set([t2!.id]));
  }, 60_000);

  it('goes on when a replica of the sealing service that has not yet followed the promotion still answers the old key', async () => {
    const [t0, t1] = [randomBytes(32), randomBytes(32)].map((key) => ({ id: rootKeyId(key), key }));
    await storeRootKeyLink(store, t0!, t1!);
    const keys = new KeyStore(store, new RootKeyring(new StaticRootKeySource(t0!.key), store), { cacheTtlMs: 0, cacheEntries: 0 });
    await keys.enrollUser('u', 'u-token');
    const principal = await keys.authenticate('u', 'u-token');
    const names = Array.from({ length: 12 }, (_, i) => `pk${i}`);
    for (const name of names) await keys.createPrimaryKey(principal, name);
    // Two replicas behind one Service: the first fetch reaches the one that promoted t1, later ones
    // alternate with one that still releases t0 (it polls the shared record every few seconds).
    let fetches = 0;
    const client = {
      rootKey: async () => {
        const lagging = fetches++ % 2 === 1;
        const key = lagging ? t0! : t1!;
        return { id: key.id, key: Buffer.from(key.key) };
      },
      currentRootKeyId: async () => t1!.id,
    } as unknown as SealerClient;
    class Slow extends ForwardingStore {
      override async replace(key: string, body: Buffer, etag: string) {
        await new Promise((resolve) => setTimeout(resolve, 15)); // past the keyring's 50 ms refresh, now and then
        return this.inner.replace(key, body, etag);
      }
    }
    const slow = new Slow(store);
    const keyring = new RootKeyring(new SealerRootKeySource(async () => client, { refreshMs: 50, graceMs: 0 }), slow);
    const rotation = new RootKeyRotation(slow, keyring, noAuthority, { shares: 5, threshold: 3, leaseMs: 5_000, concurrency: 1 });
    expect(await rotation.finishRewrap(t1!.id)).toBe(names.length);
    const ids = await Promise.all(names.map(async (name) => JSON.parse((await store.get(layout.primaryKey('u', name)))!.body.toString()).rootKeyId as string));
    expect(new Set(ids)).toEqual(new Set([t1!.id]));
  }, 30_000);
});
