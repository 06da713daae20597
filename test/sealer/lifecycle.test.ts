// The root key lifecycle on a real sealer process (mode 2): initialize, rotate with optimistic
// concurrency, the verified-key fallback across restarts (SIGTERM and SIGKILL), verification, and
// recovery that never replaces a live key.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import type { SealerClient } from '../../shared/sealer/client.js';
import type { Share } from '../../shared/sealer/protocol.js';
import { allLogs, makeShares, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { kmsFailure } from '../support/failure.js';

const secrets = new SecretRegistry();
let sealer: SealerProcess;
let client: SealerClient;

async function newKey(t = 3, n = 5): Promise<{ key: Buffer; id: string; shares: Share[] }> {
  const key = randomBytes(32);
  const shares = await makeShares(key, n, t);
  secrets.add(key);
  shares.forEach((share) => secrets.addShare(share));
  return { key, id: rootKeyId(key), shares };
}

async function recover(shares: readonly Share[]) {
  let last;
  for (const share of shares) last = await client.submitShare(share);
  return last!;
}

async function restart(signal: NodeJS.Signals) {
  await sealer.restart(signal);
  client.close();
  client = await sealer.client();
}

async function stateRecord(): Promise<{ keys: Array<{ id: string; t: number; n: number }>; wraps: unknown[] }> {
  return JSON.parse(await readFile(join(sealer.dataDir, 'objects', 'sealer', 'state.json'), 'utf8'));
}

beforeAll(async () => {
  sealer = await startSealerProcess();
  client = await sealer.client();
});

afterAll(async () => {
  await sealer?.cleanup();
  expect(secrets.size).toBeGreaterThan(0);
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe('root key lifecycle (mode 2)', () => {
  let first: Awaited<ReturnType<typeof newKey>>;
  let second: Awaited<ReturnType<typeof newKey>>;

  it('starts uninitialized: no key, recovery and verification refused', async () => {
    expect(await client.sealStatus()).toEqual({ sealed: true, initialized: false, t: 0, n: 0, progress: 0, rootKeyId: null, verificationPending: false, source: 'shares' });
    const sealed = await kmsFailure(client.rootKey());
    expect(sealed.code).toBe('SEALED');
    expect(sealed.message).toContain('not initialized');
    expect(sealed.details).toMatchObject({ sealed: true, initialized: false });
    first = await newKey();
    expect((await kmsFailure(client.submitShare(first.shares[0]!))).code).toBe('CONFLICT');
    expect((await kmsFailure(client.verifyShares(first.shares))).code).toBe('SEALED');
  });

  it('is initialized by the first install, only with expectedCurrentId null', async () => {
    const wrong = await kmsFailure(client.installRootKey({ key: first.key, t: 3, n: 5, expectedCurrentId: '0'.repeat(32) }));
    expect(wrong.code).toBe('CONFLICT');
    expect(await client.installRootKey({ key: first.key, t: 3, n: 5, expectedCurrentId: null })).toEqual({ rootKeyId: first.id });
    expect(await client.sealStatus()).toMatchObject({ sealed: false, initialized: true, t: 3, n: 5, rootKeyId: first.id, verificationPending: false });
    const released = await client.rootKey();
    expect(released.id).toBe(first.id);
    expect(released.key.equals(first.key)).toBe(true);
    // The state record holds ids and thresholds, never a key in the clear.
    const record = await stateRecord();
    expect(record.keys).toEqual([{ id: first.id, t: 3, n: 5 }]);
    expect(JSON.stringify(record)).not.toContain(first.key.toString('base64'));
  });

  it('rotates only from the current id: of two concurrent rotations one wins, the other gets CONFLICT', async () => {
    second = await newKey();
    const rival = await newKey();
    const results = await Promise.allSettled([
      client.installRootKey({ key: second.key, t: 3, n: 5, expectedCurrentId: first.id }),
      client.installRootKey({ key: rival.key, t: 3, n: 5, expectedCurrentId: first.id }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toMatchObject({ code: 'CONFLICT' });
    const winner = (won[0] as PromiseFulfilledResult<{ rootKeyId: string }>).value.rootKeyId;
    expect([second.id, rival.id]).toContain(winner);
    if (winner === rival.id) second = rival;
    expect((await client.rootKey()).id).toBe(second.id);
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: second.id, verificationPending: true });
    // A retry of the winning call answers as before (the function may not have seen the answer).
    expect(await client.installRootKey({ key: second.key, t: 3, n: 5, expectedCurrentId: first.id })).toEqual({ rootKeyId: second.id });
    // The record: the new key wrapped under the last verified one, both ids.
    const record = await stateRecord();
    expect(record.keys.map((k) => k.id)).toEqual([first.id, second.id]);
    expect(record.wraps).toHaveLength(1);
  });

  it('refuses recovery while unsealed: a live key is never replaced', async () => {
    const refused = await kmsFailure(client.submitShare(first.shares[0]!));
    expect(refused.code).toBe('CONFLICT');
    expect(refused.message).toContain('not sealed');
    expect((await client.rootKey()).id).toBe(second.id);
  });

  it('after a restart (SIGTERM) is sealed, and the OLD verified shares recover the CURRENT key', async () => {
    await restart('SIGTERM');
    expect(await client.sealStatus()).toMatchObject({ sealed: true, initialized: true, t: 3, n: 5, progress: 0, rootKeyId: second.id, verificationPending: true });
    const sealed = await kmsFailure(client.rootKey());
    expect(sealed.code).toBe('SEALED');
    expect(sealed.details).toMatchObject({ sealed: true, initialized: true, t: 3 });
    expect((await kmsFailure(client.installRootKey({ key: randomBytes(32), t: 3, n: 5, expectedCurrentId: second.id }))).code).toBe('SEALED');
    expect(await client.submitShare(first.shares[4]!)).toEqual({ sealed: true, progress: 1, t: 3 });
    expect(await client.submitShare(first.shares[1]!)).toEqual({ sealed: true, progress: 2, t: 3 });
    expect(await client.submitShare(first.shares[2]!)).toEqual({ sealed: false, progress: 0, t: 3, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
  });

  it('after SIGKILL the NEW shares recover it too, before verification', async () => {
    await restart('SIGKILL');
    expect((await client.sealStatus()).sealed).toBe(true);
    const done = await recover(second.shares.slice(1, 4));
    expect(done).toMatchObject({ sealed: false, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
  });

  it('verification refuses wrong, too few and duplicated shares and changes nothing', async () => {
    const stale = await kmsFailure(client.verifyShares(first.shares.slice(0, 3)));
    expect(stale.code).toBe('BAD_REQUEST');
    expect(stale.message).toContain('do not rebuild the current root key');
    const few = await kmsFailure(client.verifyShares(second.shares.slice(0, 2)));
    expect(few.code).toBe('BAD_REQUEST');
    expect(few.message).toContain('need at least 3 shares');
    const twice = await kmsFailure(client.verifyShares([second.shares[0]!, second.shares[0]!, second.shares[1]!]));
    expect(twice.code).toBe('BAD_REQUEST');
    expect(twice.message).toContain('appears twice');
    expect((await client.sealStatus()).verificationPending).toBe(true);
  });

  it('verification with the new shares drops the fallback: afterwards only the new shares recover', async () => {
    expect(await client.verifyShares(second.shares.slice(2, 5))).toEqual({ rootKeyId: second.id, verified: true });
    expect(await client.sealStatus()).toMatchObject({ verificationPending: false, rootKeyId: second.id });
    expect((await stateRecord()).keys).toEqual([{ id: second.id, t: 3, n: 5 }]);

    await restart('SIGKILL');
    await client.submitShare(first.shares[0]!);
    await client.submitShare(first.shares[1]!);
    const stale = await kmsFailure(client.submitShare(first.shares[2]!));
    expect(stale.code).toBe('BAD_REQUEST');
    expect(stale.message).toContain('progress was reset');
    expect(await client.sealStatus()).toMatchObject({ sealed: true, progress: 0 });
    expect(await recover([second.shares[3]!, second.shares[0]!, second.shares[4]!])).toMatchObject({ sealed: false, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
  });

  it('chains unverified rotations: the last verified shares still recover the newest key', async () => {
    const third = await newKey(2, 3);
    const fourth = await newKey(4, 6);
    await client.installRootKey({ key: third.key, t: 2, n: 3, expectedCurrentId: second.id });
    await client.installRootKey({ key: fourth.key, t: 4, n: 6, expectedCurrentId: third.id });
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: fourth.id, t: 4, n: 6, verificationPending: true });

    for (const [shares, label] of [
      [second.shares.slice(0, 3), 'verified 3-of-5'],
      [third.shares.slice(0, 2), 'intermediate 2-of-3'],
      [fourth.shares.slice(0, 4), 'newest 4-of-6'],
    ] as const) {
      await client.seal();
      const done = await recover(shares);
      expect(done, label).toMatchObject({ sealed: false, rootKeyId: fourth.id });
      expect((await client.rootKey()).key.equals(fourth.key), label).toBe(true);
    }
    await client.verifyShares(fourth.shares.slice(2, 6));
    expect((await client.sealStatus()).verificationPending).toBe(false);
  });

  it('seal is idempotent', async () => {
    expect(await client.seal()).toMatchObject({ sealed: true, initialized: true });
    expect(await client.seal()).toMatchObject({ sealed: true });
  });
});
