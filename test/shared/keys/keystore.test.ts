import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { KeyStore } from '../../../shared/keys/keystore.js';
import { layout } from '../../../shared/keys/layout.js';
import { encodeRecord } from '../../../shared/keys/records.js';
import { storeRootKeyLink } from '../../../shared/root-key/links.js';
import { RootKeyring } from '../../../shared/root-key/keyring.js';
import { StaticRootKeySource, type RootKey, type RootKeySource } from '../../../shared/root-key/source.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { attackedStorages, type AttackedStorage } from '../../support/adversary.js';

/** A root key source whose key an operator can switch, as a rotation elsewhere would. */
class SwitchableSource implements RootKeySource {
  constructor(public key: Buffer) {}
  async current(): Promise<RootKey> {
    return { id: rootKeyId(this.key), key: this.key };
  }
}

describe('KeyStore against untrusted storage', () => {
  let dir: string;
  let store: FsObjectStore;
  const options = { cacheTtlMs: 0, cacheEntries: 0 }; // no cache: every read goes to storage

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-keystore-'));
    store = new FsObjectStore(dir);
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  function keyStore(rootKey = randomBytes(32)): KeyStore {
    return new KeyStore(store, new RootKeyring(new StaticRootKeySource(rootKey), store), options);
  }

  async function copy(from: string, to: string): Promise<void> {
    const object = await store.get(from);
    await store.delete(to);
    expect(await store.create(to, object!.body)).toBe(true);
  }

  it('refuses a data key record copied under another name, primary key or user', async () => {
    const keys = keyStore();
    await keys.enrollUser('alice', 'alice-token');
    await keys.enrollUser('bob', 'bob-token');
    const alice = await keys.authenticate('alice', 'alice-token');
    const bob = await keys.authenticate('bob', 'bob-token');
    for (const p of [alice, bob]) {
      await keys.createPrimaryKey(p, 'pk1');
      await keys.createPrimaryKey(p, 'pk2');
      await keys.createDataKey(p, 'pk1', 'dk1');
    }
    await keys.createDataKey(alice, 'pk2', 'dk2');
    const original = await keys.getDataKey(alice, 'pk1', 'dk1');

    await copy(layout.dataKey('alice', 'pk1', 'dk1'), layout.dataKey('alice', 'pk1', 'moved'));
    await expect(keys.getDataKey(alice, 'pk1', 'moved')).rejects.toMatchObject({ code: 'INTEGRITY' });
    await copy(layout.dataKey('alice', 'pk1', 'dk1'), layout.dataKey('alice', 'pk2', 'dk2'));
    await expect(keys.getDataKey(alice, 'pk2', 'dk2')).rejects.toMatchObject({ code: 'INTEGRITY' });
    await copy(layout.dataKey('alice', 'pk1', 'dk1'), layout.dataKey('bob', 'pk1', 'dk1'));
    await expect(keys.getDataKey(bob, 'pk1', 'dk1')).rejects.toMatchObject({ code: 'INTEGRITY' });
    // Primary keys too: alice's pk1 planted as bob's.
    await copy(layout.primaryKey('alice', 'pk1'), layout.primaryKey('bob', 'pk2'));
    await expect(keys.createDataKey(bob, 'pk2', 'x')).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect(await keys.getDataKey(alice, 'pk1', 'dk1')).toEqual(original);
  });

  it("a forged user record (attacker's own token) unlocks none of the victim's keys", async () => {
    const keys = keyStore();
    await keys.enrollUser('victim', 'victim-token');
    const victim = await keys.authenticate('victim', 'victim-token');
    await keys.createPrimaryKey(victim, 'pk');
    await keys.createDataKey(victim, 'pk', 'dk');
    // Storage attacker replaces the user record with one for a token they know.
    await keys.enrollUser('attacker', 'attacker-token');
    const forged = JSON.parse((await store.get(layout.user('attacker')))!.body.toString()) as Record<string, unknown>;
    await store.delete(layout.user('victim'));
    await store.create(layout.user('victim'), encodeRecord({ ...forged, user: 'victim' }));
    const impostor = await keys.authenticate('victim', 'attacker-token');
    await expect(keys.getDataKey(impostor, 'pk', 'dk')).rejects.toMatchObject({ code: 'INTEGRITY' });
  });

  it('reports malformed records as integrity failures, not crashes', async () => {
    const keys = keyStore();
    await keys.enrollUser('u', 'u-token');
    const u = await keys.authenticate('u', 'u-token');
    await store.create(layout.primaryKey('u', 'junk'), Buffer.from('{not json'));
    await expect(keys.createDataKey(u, 'junk', 'dk')).rejects.toMatchObject({ code: 'INTEGRITY' });
    await store.create(layout.user('broken'), Buffer.from('{"format":1,"kind":"user","user":"broken"}'));
    await expect(keys.authenticate('broken', 'x')).rejects.toMatchObject({ code: 'INTEGRITY' });
  });

  it('a user record whose verifier parameters scrypt would refuse answers UNAUTHORIZED, never an internal error', async () => {
    const keys = keyStore();
    await keys.enrollUser('u', 'u-token');
    const record = JSON.parse((await store.get(layout.user('u')))!.body.toString()) as { token: Record<string, unknown> };
    // 128·N·r is 32 MiB, but OpenSSL needs 80 MiB for these; and it takes N below 2^(16·r) only.
    for (const params of [
      { N: 2, r: 131072, p: 1 },
      { N: 65536, r: 1, p: 1 },
    ]) {
      const current = await store.get(layout.user('u'));
      expect(await store.replace(layout.user('u'), encodeRecord({ ...record, token: { ...record.token, ...params } }), current!.etag)).toBe(true);
      await expect(keys.authenticate('u', 'u-token')).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    }
  });

  it('unwraps keys under a previous root key through the stored chain, and follows a rotation', async () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const source = new SwitchableSource(k1);
    const keys = new KeyStore(store, new RootKeyring(source, store), options);
    await keys.enrollUser('u', 'u-token');
    const u = await keys.authenticate('u', 'u-token');
    await keys.createPrimaryKey(u, 'pk');
    await keys.createDataKey(u, 'pk', 'dk');
    const before = await keys.getDataKey(u, 'pk', 'dk');

    // Rotation elsewhere: k1 is stored wrapped under k2, and the source now serves k2.
    const id1 = rootKeyId(k1);
    const id2 = rootKeyId(k2);
    // An abandoned rotation's link (to a key never installed) must not get in the way.
    await storeRootKeyLink(store, { id: id1, key: k1 }, { id: rootKeyId(randomBytes(32)), key: randomBytes(32) });
    await storeRootKeyLink(store, { id: id1, key: k1 }, { id: id2, key: k2 });
    source.key = k2;
    expect(await keys.getDataKey(u, 'pk', 'dk')).toEqual(before);
    await keys.createPrimaryKey(u, 'pk-new');
    const record = JSON.parse((await store.get(layout.primaryKey('u', 'pk-new')))!.body.toString()) as { rootKeyId: string };
    expect(record.rootKeyId).toBe(id2);

    // Without the chain record, a key under an unknown root key is an integrity failure.
    for await (const key of store.list(layout.successorsOf(id1))) await store.delete(key);
    const fresh = new KeyStore(store, new RootKeyring(source, store), options);
    await expect(fresh.getDataKey(await fresh.authenticate('u', 'u-token'), 'pk', 'dk')).rejects.toMatchObject({ code: 'INTEGRITY' });
  });

  it('shares one credential check among concurrent requests with the same credentials, and only those', async () => {
    /** The real store, counting reads of user records. */
    class CountingStore extends FsObjectStore {
      userReads = 0;
      override async get(key: string) {
        if (key === layout.user('alice')) this.userReads++;
        return super.get(key);
      }
    }
    const counting = new CountingStore(dir);
    const keys = new KeyStore(counting, new RootKeyring(new StaticRootKeySource(randomBytes(32)), counting), options);
    await keys.enrollUser('alice', 'alice-token');

    const right = Array.from({ length: 20 }, () => keys.authenticate('alice', 'alice-token'));
    const wrong = Array.from({ length: 5 }, () => keys.authenticate('alice', 'not-alice-token'));
    const [principals, refusals] = await Promise.all([Promise.all(right), Promise.allSettled(wrong)]);
    expect(new Set(principals.map((p) => p.owner)).size).toBe(1);
    expect(principals[0]!.user).toBe('alice');
    for (const refusal of refusals) expect(refusal).toMatchObject({ status: 'rejected', reason: { code: 'UNAUTHORIZED' } });
    expect(counting.userReads).toBe(2); // one check for the right token, one for the wrong one

    // A check that ended is not reused: with the cache off, the next request checks again.
    await keys.authenticate('alice', 'alice-token');
    expect(counting.userReads).toBe(3);
  });

  it("reads a data key beside its primary key, and answers the primary key's error first", async () => {
    /** The real store, recording how many key record reads were under way at once. */
    class OverlapStore extends FsObjectStore {
      inFlight = 0;
      mostInFlight = 0;
      override async get(key: string) {
        if (key.startsWith('users/')) return super.get(key);
        this.mostInFlight = Math.max(this.mostInFlight, ++this.inFlight);
        try {
          return await super.get(key);
        } finally {
          this.inFlight--;
        }
      }
    }
    const rootKey = randomBytes(32);
    const overlap = new OverlapStore(dir);
    const writer = new KeyStore(overlap, new RootKeyring(new StaticRootKeySource(rootKey), overlap), options);
    await writer.enrollUser('u', 'u-token');
    const u = await writer.authenticate('u', 'u-token');
    await writer.createPrimaryKey(u, 'pk');
    await writer.createDataKey(u, 'pk', 'dk');

    const reader = new KeyStore(overlap, new RootKeyring(new StaticRootKeySource(rootKey), overlap), options);
    const principal = await reader.authenticate('u', 'u-token');
    overlap.mostInFlight = 0;
    expect(await reader.getDataKey(principal, 'pk', 'dk')).toEqual(await writer.getDataKey(u, 'pk', 'dk'));
    expect(overlap.mostInFlight).toBe(2);

    // Neither exists: the primary key is what is missing. Only the data key is missing: it says so.
    await expect(reader.getDataKey(principal, 'nope', 'nada')).rejects.toMatchObject({ code: 'NOT_FOUND', message: 'primaryKey [nope] not found' });
    await expect(reader.getDataKey(principal, 'pk', 'nada')).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: 'dataKey [nada] not found under primaryKey [pk]',
    });
  });

  it('keeps a data key cached for one lifetime from its read, however often it is read meanwhile', async () => {
    class CountingStore extends FsObjectStore {
      dataKeyReads = 0;
      override async get(key: string) {
        if (key === layout.dataKey('u', 'pk', 'dk')) this.dataKeyReads++;
        return super.get(key);
      }
    }
    const counting = new CountingStore(dir);
    const keys = new KeyStore(counting, new RootKeyring(new StaticRootKeySource(randomBytes(32)), counting), { cacheTtlMs: 150, cacheEntries: 100 });
    await keys.enrollUser('u', 'u-token');
    const u = await keys.authenticate('u', 'u-token');
    await keys.createPrimaryKey(u, 'pk');
    await keys.createDataKey(u, 'pk', 'dk');
    const first = await keys.getDataKey(u, 'pk', 'dk');
    const until = Date.now() + 400;
    while (Date.now() < until) {
      expect((await keys.getDataKey(u, 'pk', 'dk')).equals(first)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // Created at t=0 (cached then), re-read after each 150 ms lifetime: at t≈150 and t≈300.
    expect(counting.dataKeyReads).toBeGreaterThanOrEqual(2);
  });
});

for (const [backend, open] of Object.entries(attackedStorages)) {
  describe(`KeyStore with its keys cached, against a storage adversary: ${backend}`, () => {
    let storage: AttackedStorage;
    beforeEach(async () => {
      storage = await open();
    });
    afterEach(async () => storage?.cleanup());

    it("a user record forged while the victim's keys are cached unlocks none of them, and nothing is created", async () => {
      const { store, adversary } = storage;
      const rootKey = randomBytes(32);
      const cached = { cacheTtlMs: 600_000, cacheEntries: 100 };
      const keys = new KeyStore(store, new RootKeyring(new StaticRootKeySource(rootKey), store), cached);
      await keys.enrollUser('alice', 'alice-token');
      await keys.enrollUser('mallory', 'mallory-token');
      const alice = await keys.authenticate('alice', 'alice-token');
      await keys.createPrimaryKey(alice, 'pk1');
      await keys.createDataKey(alice, 'pk1', 'dk1');
      const dk1 = await keys.getDataKey(alice, 'pk1', 'dk1'); // pk1 and dk1 are now cached

      // The adversary gives alice's record mallory's token verifier.
      const mallorys = JSON.parse((await adversary.read(layout.user('mallory')))!.toString()) as { token: unknown };
      const alices = JSON.parse((await adversary.read(layout.user('alice')))!.toString()) as Record<string, unknown>;
      await adversary.write(layout.user('alice'), JSON.stringify({ ...alices, token: mallorys.token }));
      const impostor = await keys.authenticate('alice', 'mallory-token');

      await expect(keys.getDataKey(impostor, 'pk1', 'dk1')).rejects.toMatchObject({ code: 'INTEGRITY' });
      await expect(keys.createDataKey(impostor, 'pk1', 'dk2')).rejects.toMatchObject({ code: 'INTEGRITY' });
      expect(await adversary.read(layout.dataKey('alice', 'pk1', 'dk2'))).toBeUndefined();
      // The same answers as a restarted function gives, which has nothing cached.
      const restarted = new KeyStore(store, new RootKeyring(new StaticRootKeySource(rootKey), store), cached);
      const impostorAfterRestart = await restarted.authenticate('alice', 'mallory-token');
      await expect(restarted.getDataKey(impostorAfterRestart, 'pk1', 'dk1')).rejects.toMatchObject({ code: 'INTEGRITY' });
      await expect(restarted.createDataKey(impostorAfterRestart, 'pk1', 'dk2')).rejects.toMatchObject({ code: 'INTEGRITY' });
      expect(await adversary.read(layout.dataKey('alice', 'pk1', 'dk2'))).toBeUndefined();
      // Alice's own, earlier verified enrollment still reads her key.
      expect(await keys.getDataKey(alice, 'pk1', 'dk1')).toEqual(dk1);
    });
  });
}
