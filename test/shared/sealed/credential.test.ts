// Opening sealed credentials (docs/sealed-channel.md): what a function keeps in memory from them.
// Credentials made with jose, as a client makes them; the function's own caches and replay memory.
import { generateKeyPairSync } from 'node:crypto';
import { CompactEncrypt, exportJWK, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { openSealedCredential } from '../../../shared/sealed/credential.js';
import { sealedKeyCaches } from '../../../shared/sealed/key-cache.js';
import { ReplayGuard } from '../../../shared/sealed/replay.js';

const service = generateKeyPairSync('x25519');
const request = { method: 'GET', target: '/dataKey/dk?primaryKeyName=pk' };

/** A client reusing one epk and one response key, as tee-kms/client does. */
async function reusingClient(alg: 'ECDH-ES' | 'ECDH-ES+A256KW') {
  const epk = (await generateKeyPair(alg, { crv: 'X25519', extractable: true })).privateKey;
  const responseKey = await exportJWK((await generateKeyPair(alg, { crv: 'X25519' })).publicKey);
  let n = 0;
  return (iat: number) =>
    new CompactEncrypt(
      new TextEncoder().encode(
        JSON.stringify({
          user: 'alice',
          token: 't0ken',
          htm: 'GET',
          htu: request.target,
          iat,
          jti: `jti-of-request-${String(n++).padStart(4, '0')}`,
          responseKey,
        }),
      ),
    )
      .setProtectedHeader({ alg, enc: 'A256GCM', kid: 'rk1' })
      .setKeyManagementParameters({ epk })
      .encrypt(service.publicKey);
}

describe('openSealedCredential: keys are kept only for credentials accepted', () => {
  for (const alg of ['ECDH-ES', 'ECDH-ES+A256KW'] as const) {
    it(`a replayed credential, stale or not, keeps no key and renews none (${alg})`, async () => {
      let now = 1_800_000_000_000;
      const caches = sealedKeyCaches('rk1', 30, () => now);
      const replay = new ReplayGuard(1000);
      const seal = await reusingClient(alg);
      const first = await seal(now / 1000);
      expect(openSealedCredential(first, service.privateKey, request, replay, now, caches)).toMatchObject({ user: 'alice', token: 't0ken' });
      expect([caches.requests.size, caches.answers.size]).toEqual([1, 1]);

      // Within its iat window, after the keys expired: the replay (its jti is known) is refused, and
      // what it agreed with anew is not kept.
      now += 31_000;
      caches.requests.sweep();
      caches.answers.sweep();
      expect([caches.requests.size, caches.answers.size]).toEqual([0, 0]);
      expect(() => openSealedCredential(first, service.privateKey, request, replay, now, caches)).toThrow(expect.objectContaining({ code: 'UNAUTHORIZED' }));
      expect([caches.requests.size, caches.answers.size]).toEqual([0, 0]);
      // An ingress replaying a recorded credential for hours keeps nothing in the function's memory.
      for (let i = 0; i < 24; i++) {
        now += 299_000;
        expect(() => openSealedCredential(first, service.privateKey, request, replay, now, caches)).toThrow(expect.objectContaining({ code: 'UNAUTHORIZED' }));
        expect([caches.requests.size, caches.answers.size]).toEqual([0, 0]);
      }

      // The client's next credential, accepted, is kept again.
      expect(openSealedCredential(await seal(now / 1000), service.privateKey, request, replay, now, caches).token).toBe('t0ken');
      expect([caches.requests.size, caches.answers.size]).toEqual([1, 1]);
      caches.requests.close();
      caches.answers.close();
    });
  }
});

describe('openSealedCredential: how long a jti is remembered', () => {
  it('a credential dated 60 s ahead is refused as a replay while it is fresh, and holds its place 121 s', async () => {
    const start = 1_800_000_000_000;
    const replay = new ReplayGuard(1);
    const seal = await reusingClient('ECDH-ES');
    const ahead = await seal(start / 1000 + 60);
    openSealedCredential(ahead, service.privateKey, request, replay, start);
    // Fresh until its iat + 60 s, to the millisecond: a replay so late is still refused as a replay.
    expect(() => openSealedCredential(ahead, service.privateKey, request, replay, start + 120_000)).toThrow(/used already/);
    expect(() => openSealedCredential(ahead, service.privateKey, request, replay, start + 120_001)).toThrow(/stale/);
    // Its entry is live until its iat + 61 s: the memory is full until then, and free from then on.
    const now = start + 120_999;
    const next = await seal(Math.floor(now / 1000));
    expect(() => openSealedCredential(next, service.privateKey, request, replay, now)).toThrow(expect.objectContaining({ code: 'BUSY' }));
    expect(openSealedCredential(await seal(start / 1000 + 121), service.privateKey, request, replay, start + 121_000).token).toBe('t0ken');
  });
});
