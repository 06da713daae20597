/**
 * The rewrap's range leases against the embedded store and Ceph RGW: of two takers one wins, a
 * lapsed lease is taken over and its old holder can no longer write (even right after its own
 * write), done is final, and a record counts only in its own pass.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../../shared/crypto/root-key-id.js';
import { layout } from '../../../shared/keys/layout.js';
import { MAX_RANGES, rangeCount, rangeOf, RotationRanges, type RangeLease } from '../../../shared/root-key/ranges.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import type { ObjectStore } from '../../../shared/store/object-store.js';
import { createTestBucket, type TestBucket } from '../../support/s3.js';
import { ForwardingStore } from '../../support/forwarding-store.js';

const TARGET_KEY = randomBytes(32);
/** The root key the rotation rewraps under: its id names the ranges, its key authenticates them. */
const TARGET = { id: rootKeyId(TARGET_KEY), key: TARGET_KEY };
const TO = TARGET.id;
/** The split the ranges below belong to. */
const COUNT = 16;
/** The pass over the keys the ranges below belong to (the journal's). */
const PASS = 'pass-1';

/**
 * The store, with `after` run once right after its first conditional write (another instance's
 * turn); `namesEtag` false: its writes answer no etag, as a server may.
 */
class AfterFirstWrite extends ForwardingStore {
  constructor(
    inner: ObjectStore,
    private after: (() => Promise<void>) | undefined,
    private readonly namesEtag = true,
  ) {
    super(inner);
  }
  override create(key: string, body: Buffer) {
    return this.#then(this.inner.create(key, body));
  }
  override replace(key: string, body: Buffer, etag: string) {
    return this.#then(this.inner.replace(key, body, etag));
  }
  override async write(key: string, body: Buffer, expected: string | null) {
    const written = await this.#then(this.inner.write(key, body, expected));
    return written === undefined || this.namesEtag ? written : { etag: undefined };
  }
  async #then<T>(write: Promise<T>): Promise<T> {
    const written = await write;
    const after = this.after;
    this.after = undefined;
    await after?.();
    return written;
  }
}
const lapse = () => new Promise((resolve) => setTimeout(resolve, 250)); // past the 150 ms leases below

function lease(taken: unknown): RangeLease {
  expect(taken).toHaveProperty('renew');
  return taken as RangeLease;
}

describe('rotation ranges', () => {
  it('splits the key space the same way for every lister, about 200 keys per range, bounded', () => {
    expect(rangeCount(0)).toBe(1);
    expect(rangeCount(1_200)).toBe(6);
    expect(rangeCount(1_000_000)).toBe(MAX_RANGES);
    const keys = Array.from({ length: 2_000 }, (_, i) => `primary-keys/u${i % 7}/pk${i}.json`);
    const counts = new Array<number>(10).fill(0);
    for (const key of keys) counts[rangeOf(key, 10)]!++;
    expect(keys.map((k) => rangeOf(k, 10))).toEqual(keys.map((k) => rangeOf(k, 10)));
    for (const n of counts) expect(n).toBeGreaterThan(100); // spread, not all in one range
  });
});

for (const kind of ['fs', 's3'] as const) {
  describe(`rotation range leases (${kind === 'fs' ? 'embedded store' : 'Ceph RGW'})`, () => {
    let store: ObjectStore;
    let dir: string | undefined;
    let bucket: TestBucket | undefined;
    beforeAll(async () => {
      if (kind === 'fs') store = new FsObjectStore((dir = await mkdtemp(join(tmpdir(), 'tee-kms-ranges-'))));
      else store = (bucket = await createTestBucket()).store();
    });
    afterAll(async () => {
      await store?.close();
      await bucket?.remove();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    });

    it('of two instances taking one range at once, exactly one holds it', async () => {
      const a = new RotationRanges(store, TARGET, 'a', 60_000, COUNT, PASS);
      const b = new RotationRanges(store, TARGET, 'b', 60_000, COUNT, PASS);
      const results = await Promise.all([a.take(0), b.take(0)]);
      expect(results.filter((r) => typeof r === 'object')).toHaveLength(1);
      expect(results.filter((r) => r === 'held')).toHaveLength(1);
      expect(await a.take(0)).toBe('held'); // still held, whoever asks
    });

    it('a lapsed lease is taken over, and its old holder can neither renew nor finish it', async () => {
      const dead = new RotationRanges(store, TARGET, 'dead', 150, COUNT, PASS);
      const taker = new RotationRanges(store, TARGET, 'taker', 60_000, COUNT, PASS);
      const old = lease(await dead.take(1));
      expect(await old.renew()).toBe(true);
      await lapse(); // (while live it is 'held' to others: the test above)
      const now = lease(await taker.take(1));
      expect(await old.renew()).toBe(false);
      expect(await old.finish(5, 0)).toBe(false);
      expect(await taker.done(1)).toBeUndefined();
      expect(await now.finish(3, 0)).toBe(true);
      expect(JSON.parse((await store.get(layout.rotationRange(TO, 1)))!.body.toString())).toMatchObject({ holder: 'taker', done: true, rewrapped: 3 });
    });

    it('a done range stays done: nobody takes it again, even after its lease time; it tells every instance what failed authentication', async () => {
      const a = new RotationRanges(store, TARGET, 'a', 150, COUNT, PASS);
      expect(await lease(await a.take(2)).finish(0, 2)).toBe(true);
      await lapse();
      expect(await new RotationRanges(store, TARGET, 'b', 60_000, COUNT, PASS).take(2)).toEqual({ unreadable: 2 });
      expect(await a.done(2)).toEqual({ unreadable: 2 });
      // The count is authenticated: storage cannot make the failures vanish from it.
      const record = await store.get(layout.rotationRange(TO, 2));
      const cleared = { ...(JSON.parse(record!.body.toString()) as object), unreadable: 0 };
      expect(await store.replace(layout.rotationRange(TO, 2), Buffer.from(JSON.stringify(cleared)), record!.etag)).toBe(true);
      expect(await a.done(2)).toBeUndefined();
    });

    it('an unreadable range object (planted or torn) is taken over, not trusted', async () => {
      expect(await store.create(layout.rotationRange(TO, 3), Buffer.from('{"kind":"rotation-range","done":true'))).toBe(true);
      const b = new RotationRanges(store, TARGET, 'b', 60_000, COUNT, PASS);
      expect(await b.done(3)).toBeUndefined();
      expect(await lease(await b.take(3)).finish(1, 0)).toBe(true);
    });

    it('a range record written by whoever writes storage (the target id is public) is no record: neither done nor held', async () => {
      const b = new RotationRanges(store, TARGET, 'b', 60_000, COUNT, PASS);
      const planted = (index: number, fields: object, mac = 'A'.repeat(43)) =>
        store.create(
          layout.rotationRange(TO, index),
          Buffer.from(JSON.stringify({ format: 1, kind: 'rotation-range', holder: 'attacker', rewrapped: 0, ...fields, mac })),
        );
      // "Done": its keys would be skipped, left under the retired root key. Taken, and rewrapped again.
      expect(await planted(7, { leaseUntil: 0, done: true })).toBe(true);
      expect(await b.done(7)).toBeUndefined();
      expect(await lease(await b.take(7)).finish(2, 0)).toBe(true);
      expect(await b.done(7)).toEqual({ unreadable: 0 });
      // "Held" for ever: the rotation would never finish. Taken at once.
      expect(await planted(8, { leaseUntil: 1e300, done: false })).toBe(true);
      lease(await b.take(8));
      // A genuine record's MAC copied onto other fields (done where it was not), or to another range: refused too.
      const genuine = JSON.parse((await store.get(layout.rotationRange(TO, 8)))!.body.toString()) as { mac: string; leaseUntil: number };
      expect(await planted(9, { holder: 'b', leaseUntil: genuine.leaseUntil, done: false }, genuine.mac)).toBe(true);
      expect(await new RotationRanges(store, TARGET, 'c', 60_000, COUNT, PASS).take(9)).not.toBe('held');
      const current = await store.get(layout.rotationRange(TO, 8));
      const forgedDone = { ...(JSON.parse(current!.body.toString()) as object), done: true };
      expect(await store.replace(layout.rotationRange(TO, 8), Buffer.from(JSON.stringify(forgedDone)), current!.etag)).toBe(true);
      expect(await b.done(8)).toBeUndefined();
      // Made under another split (the journal's range count edited in storage): its keys are others.
      const otherSplit = new RotationRanges(store, TARGET, 'split', 60_000, COUNT + 1, PASS);
      expect(await lease(await otherSplit.take(11)).finish(0, 0)).toBe(true);
      expect(await b.done(11)).toBeUndefined();
      // Made in another pass (an earlier one's, replayed after it completed): its keys may be under an older root key since.
      const earlierPass = new RotationRanges(store, TARGET, 'earlier', 60_000, COUNT, 'pass-0');
      expect(await lease(await earlierPass.take(12)).finish(0, 0)).toBe(true);
      expect(await b.done(12)).toBeUndefined();
      lease(await b.take(12));
      // A record made under another root key (an earlier rotation's, say) does not count either.
      const otherKey = randomBytes(32);
      const under = new RotationRanges(store, { id: TO, key: otherKey }, 'other', 60_000, COUNT, PASS);
      expect(await lease(await under.take(10)).finish(0, 0)).toBe(true);
      expect(await b.done(10)).toBeUndefined();
    });

    it('a lease is the write that won it: a takeover right after that write is not mistaken for it', async () => {
      // The first holder's lease lapses at once (0 ms); another instance takes the range over right
      // after the first one's write, before it could read anything back.
      const first = new RotationRanges(
        new AfterFirstWrite(store, async () => expect(typeof (await new RotationRanges(store, TARGET, 'second', 60_000, COUNT, PASS).take(4))).toBe('object')),
        TARGET,
        'first',
        0,
        COUNT,
        PASS,
      );
      const stale = lease(await first.take(4));
      expect(await stale.renew()).toBe(false);
      expect(await stale.finish(1, 0)).toBe(false);
      expect(JSON.parse((await store.get(layout.rotationRange(TO, 4)))!.body.toString())).toMatchObject({ holder: 'second', done: false });
    });

    it('where writes answer no etag, the record is read back and must be exactly the one written', async () => {
      const taker = () => new RotationRanges(store, TARGET, 'second', 60_000, COUNT, PASS);
      const overtaken = new RotationRanges(new AfterFirstWrite(store, async () => void (await taker().take(5)), false), TARGET, 'first', 0, COUNT, PASS);
      expect(await overtaken.take(5)).toBe('held');
      const alone = new RotationRanges(new AfterFirstWrite(store, undefined, false), TARGET, 'third', 60_000, COUNT, PASS);
      const held = lease(await alone.take(6));
      expect(await held.renew()).toBe(true);
      expect(await held.finish(2, 0)).toBe(true);
      expect(await alone.done(6)).toEqual({ unreadable: 0 });
    });

    it("removes the rotation's range objects, and only that rotation's", async () => {
      const otherKey = randomBytes(32);
      const other = new RotationRanges(store, { id: rootKeyId(otherKey), key: otherKey }, 'c', 60_000, COUNT, PASS);
      lease(await other.take(0));
      await new RotationRanges(store, TARGET, 'a', 60_000, COUNT, PASS).remove();
      const left: string[] = [];
      for await (const key of store.list('rotation/')) left.push(key);
      expect(left).toEqual([layout.rotationRange(rootKeyId(otherKey), 0)]);
    });
  });
}
