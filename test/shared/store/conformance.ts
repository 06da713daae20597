import { afterAll, beforeAll, describe, expect, it as itAlways, type TestContext } from 'vitest';
import { isKmsError, KmsError } from '../../../shared/errors.js';
import { CheckedObjectStore } from '../../../shared/store/checked-store.js';
import { probeConditionalWrites } from '../../../shared/store/conditional-writes.js';
import type { ObjectStore } from '../../../shared/store/object-store.js';

export interface StoreUnderTest {
  readonly store: ObjectStore;
  /** What is really stored at `key`, read without the store under test. */
  readRaw(key: string): Promise<Buffer | undefined>;
  cleanup(): Promise<void>;
}

async function collect(iterable: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of iterable) out.push(key);
  return out;
}

/**
 * One conformance suite that every ObjectStore implementation must pass. Storage that fails the
 * conditional-writes probe (RGW 16.2 with a versioned bucket) cannot pass it: there the suite checks
 * instead that the probe says so and that a checked store refuses every write.
 */
export function describeObjectStore(name: string, open: () => Promise<StoreUnderTest>): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let t: StoreUnderTest;
    let store: ObjectStore;
    /** The probe's STORAGE_UNSAFE verdict, or undefined when the storage passed it. */
    let unsafe: KmsError | undefined;
    beforeAll(async () => {
      t = await open();
      store = t.store;
      unsafe = await probeConditionalWrites(store, name).then(
        () => undefined,
        (error: unknown) => {
          if (isKmsError(error, 'STORAGE_UNSAFE')) return error;
          throw error;
        },
      );
    });
    afterAll(async () => t.cleanup());
    /** A test of the normal suite: skipped, visibly, where the probe failed. */
    const it = (title: string, fn: () => Promise<void>) =>
      itAlways(title, async (context: TestContext) => {
        if (unsafe !== undefined) context.skip('the probe found this storage unsafe');
        await fn();
      });
    const itWhereUnsafe = (title: string, fn: (unsafe: KmsError) => Promise<void>) =>
      itAlways(title, async (context: TestContext) => {
        if (unsafe === undefined) context.skip('the probe found this storage safe');
        await fn(unsafe!);
      });

    itAlways('is probed for conditional writes, and the probe leaves no object behind', async () => {
      if (unsafe !== undefined) {
        expect(unsafe.message).toContain(`${name} does not honour conditional writes`);
        expect(unsafe.message).toContain('Ceph RGW: unversioned buckets');
      }
      expect(await collect(store.list('probe/'))).toEqual([]);
    });

    itWhereUnsafe('refuses every create and replace through a checked store, and stored objects stay as they were', async (verdict) => {
      expect(await store.create('refused/k.json', Buffer.from('original'))).toBe(true); // a new key: no condition at stake
      const before = await store.get('refused/k.json');
      let probes = 0;
      const checked = new CheckedObjectStore(store, () => (probes++, probeConditionalWrites(store, name)));
      for (let round = 0; round < 2; round++) {
        const refusal = { code: 'STORAGE_UNSAFE', message: verdict.message };
        await expect(checked.create('refused/k.json', Buffer.from('taken over'))).rejects.toMatchObject(refusal);
        await expect(checked.create('refused/new.json', Buffer.from('new'))).rejects.toMatchObject(refusal);
        await expect(checked.replace('refused/k.json', Buffer.from('replaced'), before!.etag)).rejects.toMatchObject(refusal);
      }
      expect(probes).toBe(1); // the verdict is kept
      expect((await t.readRaw('refused/k.json'))?.toString()).toBe('original');
      expect(await t.readRaw('refused/new.json')).toBeUndefined();
      expect((await checked.get('refused/k.json'))?.body.toString()).toBe('original'); // reads are not gated
    });

    it('writes through a checked store once its probe passed, probing once', async () => {
      let probes = 0;
      const checked = new CheckedObjectStore(store, () => (probes++, probeConditionalWrites(store, name)));
      expect(await Promise.all([checked.create('checked/a.json', Buffer.from('a')), checked.create('checked/b.json', Buffer.from('b'))])).toEqual([true, true]);
      const a = await checked.get('checked/a.json');
      expect(await checked.replace('checked/a.json', Buffer.from('a2'), a!.etag)).toBe(true);
      expect(probes).toBe(1);
      expect((await t.readRaw('checked/a.json'))?.toString()).toBe('a2');
    });

    it('answers undefined for an absent key', async () => {
      expect(await store.get('absent/key.json')).toBeUndefined();
    });

    it('creates an object once and never overwrites it', async () => {
      expect(await store.create('c/one.json', Buffer.from('first'))).toBe(true);
      expect(await store.create('c/one.json', Buffer.from('second'))).toBe(false);
      const got = await store.get('c/one.json');
      expect(got?.body.toString()).toBe('first');
      expect(got?.etag).toMatch(/\S/);
      expect((await t.readRaw('c/one.json'))?.toString()).toBe('first');
    });

    it('lets exactly one of 16 concurrent creates of one key win, and keeps the winner', async () => {
      const bodies = Array.from({ length: 16 }, (_, i) => Buffer.from(`writer-${i}`));
      const results = await Promise.all(bodies.map((body) => store.create('race/key.json', body)));
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = results.indexOf(true);
      expect((await t.readRaw('race/key.json'))?.toString()).toBe(`writer-${winner}`);
    });

    it('replaces only when the etag matches (compare-and-swap)', async () => {
      await store.create('cas/k.json', Buffer.from('v1'));
      const v1 = await store.get('cas/k.json');
      expect(await store.replace('cas/k.json', Buffer.from('v2'), v1!.etag)).toBe(true);
      const v2 = await store.get('cas/k.json');
      expect(v2?.body.toString()).toBe('v2');
      expect(v2?.etag).not.toBe(v1?.etag);
      expect(await store.replace('cas/k.json', Buffer.from('v3'), v1!.etag)).toBe(false);
      expect((await t.readRaw('cas/k.json'))?.toString()).toBe('v2');
      expect(await store.replace('cas/absent.json', Buffer.from('x'), v1!.etag)).toBe(false);
      expect(await t.readRaw('cas/absent.json')).toBeUndefined();
    });

    it('lets exactly one of concurrent replaces with the same etag win', async () => {
      await store.create('cas/race.json', Buffer.from('base'));
      const base = await store.get('cas/race.json');
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.replace('cas/race.json', Buffer.from(`r-${i}`), base!.etag)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await t.readRaw('cas/race.json'))?.toString()).toBe(`r-${results.indexOf(true)}`);
    });

    it("answers a won write's etag, the one the next get answers and a replace takes; a lost write changes nothing", async () => {
      const created = await store.write('w/k.json', Buffer.from('w1'), null);
      expect(created?.etag).toBe((await store.get('w/k.json'))?.etag);
      expect(await store.write('w/k.json', Buffer.from('again'), null)).toBeUndefined();
      const replaced = await store.write('w/k.json', Buffer.from('w2'), created!.etag!);
      expect(replaced?.etag).toBe((await store.get('w/k.json'))?.etag);
      expect(replaced?.etag).not.toBe(created?.etag);
      expect(await store.write('w/k.json', Buffer.from('w3'), created!.etag!)).toBeUndefined();
      expect(await store.write('w/absent.json', Buffer.from('x'), replaced!.etag!)).toBeUndefined();
      expect((await t.readRaw('w/k.json'))?.toString()).toBe('w2');
      expect(await t.readRaw('w/absent.json')).toBeUndefined();
    });

    it('deletes, and deleting an absent key is not an error', async () => {
      await store.create('d/k.json', Buffer.from('x'));
      await store.delete('d/k.json');
      expect(await store.get('d/k.json')).toBeUndefined();
      expect(await t.readRaw('d/k.json')).toBeUndefined();
      await expect(store.delete('d/k.json')).resolves.toBeUndefined();
    });

    it('lists every key under a prefix in order, across pages', async () => {
      const keys = Array.from({ length: 1010 }, (_, i) => `list/p/${String(i).padStart(4, '0')}.json`);
      for (let i = 0; i < keys.length; i += 50) {
        await Promise.all(keys.slice(i, i + 50).map((key) => store.create(key, Buffer.from('x'))));
      }
      await store.create('list/other.json', Buffer.from('x'));
      await store.create('listx/not-under.json', Buffer.from('x'));
      expect(await collect(store.list('list/p/'))).toEqual(keys);
      expect(await collect(store.list('list/'))).toEqual(['list/other.json', ...keys]); // byte order, as S3 lists
      expect(await collect(store.list('nothing/'))).toEqual([]);
    });

    it('lists every valid name, whatever it ends with (.lock, .tmp)', async () => {
      // Names are 1-64 of A-Za-z0-9._- starting with a letter or digit (shared/names.ts): a user may be `alice.lock`.
      const keys = ['names/alice.lock/k.json', 'names/alice.lock/k.lock', 'names/k.lock', 'names/tmp-1', 'names/x.tmp-1.lock', 'names/z_'].sort();
      for (const key of keys) expect(await store.create(key, Buffer.from('x'))).toBe(true);
      const v = await store.get('names/alice.lock/k.lock');
      expect(await store.replace('names/alice.lock/k.lock', Buffer.from('y'), v!.etag)).toBe(true);
      expect(await collect(store.list('names/'))).toEqual(keys);
      expect(await collect(store.list('names/alice.lock/'))).toEqual(['names/alice.lock/k.json', 'names/alice.lock/k.lock']);
    });

    it('refuses keys that could escape their folder', async () => {
      for (const key of ['../x', 'a/../b', '/abs', 'a//b', 'a/./b', '', 'a/b/', '.hidden', 'a/.lock-k.json', 'a/.tmp-1']) {
        await expect(store.get(key)).rejects.toBeInstanceOf(KmsError);
        await expect(store.create(key, Buffer.from('x'))).rejects.toMatchObject({ code: 'INTERNAL' });
      }
    });

    it('stores bodies byte for byte', async () => {
      const body = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      await store.create('bytes/all.bin', body);
      expect((await store.get('bytes/all.bin'))?.body.equals(body)).toBe(true);
      expect((await t.readRaw('bytes/all.bin'))?.equals(body)).toBe(true);
    });
  });
}
