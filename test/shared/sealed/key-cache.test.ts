import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyCache, MAX_KEY_REUSE_SECONDS, sealedKeyCaches } from '../../../shared/sealed/key-cache.js';

/** A clock the test moves by hand. */
function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('KeyCache: key encryption keys kept for a bounded time', () => {
  it('an entry expires at its lifetime after it was made, however often it is used, and is zeroed then', () => {
    const time = clock();
    const cache = new KeyCache(10, 300_000, time.now);
    const key = randomBytes(32);
    cache.set('epk', { key });
    for (let i = 0; i < 5; i++) {
      time.advance(59_000);
      expect(cache.get('epk')?.key.equals(key)).toBe(true); // 295 s: used often, still within the bound
    }
    time.advance(5_000); // 300 s after it was made
    expect(cache.get('epk')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('hands out copies: a caller wiping its key leaves the cached one intact', () => {
    const cache = new KeyCache(10, 60_000);
    const key = randomBytes(32);
    cache.set('k', { key });
    key.fill(0); // the caller wipes what it derived: the cache kept its own copy
    const first = cache.get('k')!;
    expect(first.key.equals(Buffer.alloc(32))).toBe(false);
    first.key.fill(0);
    expect(cache.get('k')!.key.equals(first.key)).toBe(false);
  });

  it('is bounded: the least recently used entry goes first', () => {
    const cache = new KeyCache(2, 60_000);
    cache.set('a', { key: randomBytes(32) });
    cache.set('b', { key: randomBytes(32) });
    expect(cache.get('a')).toBeDefined(); // a is now the most recently used
    cache.set('c', { key: randomBytes(32) });
    expect(cache.size).toBe(2);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.get('c')).toBeDefined();
  });

  it('an expired entry nobody asks for is zeroed and dropped by the sweep, on its own timer', async () => {
    // The cache's own copies, seen as they are stored (the entries are private).
    const stored: Buffer[] = [];
    const set = Map.prototype.set;
    Map.prototype.set = function (this: Map<unknown, unknown>, key: unknown, value: unknown) {
      const kept = (value as { value?: { key?: unknown } } | undefined)?.value?.key;
      if (Buffer.isBuffer(kept)) stored.push(kept);
      return set.call(this, key, value);
    } as typeof Map.prototype.set;
    let cache: KeyCache<{ readonly key: Buffer }>;
    try {
      cache = new KeyCache(10, 50); // swept every 50 ms (the lifetime, below SWEEP_INTERVAL_MS)
      cache.set('never-asked-for', { key: randomBytes(32) });
    } finally {
      Map.prototype.set = set;
    }
    expect(stored).toHaveLength(1);
    expect(stored[0]!.equals(Buffer.alloc(32))).toBe(false);
    await expect.poll(() => cache.size, { timeout: 5000 }).toBe(0);
    expect(stored[0]!.equals(Buffer.alloc(32))).toBe(true);
    cache.close();
  });

  it('a lifetime of 0 keeps nothing; clear drops everything', () => {
    const none = new KeyCache(10, 0);
    none.set('k', { key: randomBytes(32) });
    expect(none.get('k')).toBeUndefined();
    const cache = new KeyCache(10, 60_000);
    cache.set('k', { key: randomBytes(32) });
    cache.clear();
    expect(cache.size).toBe(0);
    expect(cache.get('k')).toBeUndefined();
  });

  it('the caches of a service key never keep a key longer than an hour', () => {
    const time = clock();
    const caches = sealedKeyCaches('rk1', 10 * MAX_KEY_REUSE_SECONDS, time.now);
    caches.answers.set('r', { alg: 'ECDH-ES', key: randomBytes(32), epk: { kty: 'OKP', crv: 'X25519', x: 'x' } });
    caches.requests.set('e', { key: randomBytes(32) });
    time.advance(MAX_KEY_REUSE_SECONDS * 1000 - 1);
    expect(caches.answers.get('r')).toBeDefined();
    expect(caches.requests.get('e')).toBeDefined();
    time.advance(1);
    expect(caches.answers.get('r')).toBeUndefined();
    expect(caches.requests.get('e')).toBeUndefined();
  });
});
