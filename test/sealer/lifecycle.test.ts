// The root key lifecycle on a real sealer process (mode 2): initialize, rotate with optimistic
// concurrency, the verified-key fallback across restarts (SIGTERM and SIGKILL), verification, and
// recovery that never replaces a live key.
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { combine } from 'shamir-secret-sharing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { KbsClient, type KbsResponseError } from '../../shared/kbs/client.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import { isStartingSeal } from '../../shared/sealer-client/outage.js';
import { sealerPaths, type Share } from '../../shared/sealer-client/protocol.js';
import { adminAttester, allLogs, makeShares, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
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

/** What the sealing service made: its id, the key itself (rebuilt from the shares it answered) and the shares. */
async function install(request: Parameters<SealerClient['installRootKey']>[0]): Promise<{ key: Buffer; id: string; shares: Share[]; pending: boolean }> {
  const { rootKeyId: id, pending, shares } = await client.installRootKey(request);
  shares.forEach((share) => secrets.addShare(share));
  const key = Buffer.from(await combine(shares.slice(0, request.t).map((share) => new Uint8Array(Buffer.from(share.content, 'base64')))));
  secrets.add(key);
  expect(rootKeyId(key)).toBe(id); // its own shares rebuild the key it names
  return { key, id, shares, pending };
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

const statePath = () => join(sealer.dataDir, 'objects', 'sealer', 'state.json');

async function stateRecord(): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(statePath(), 'utf8'));
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
  let first: { key: Buffer; id: string; shares: Share[] };
  let second: { key: Buffer; id: string; shares: Share[] };
  let pendingRecord: string;

  it('starts uninitialized: no key, recovery and verification refused', async () => {
    expect(await client.sealStatus()).toEqual({
      sealed: true,
      initialized: false,
      t: 0,
      n: 0,
      progress: 0,
      rootKeyId: null,
      verificationPending: false,
      pendingRootKeyId: null,
      integrityAlarm: null,
      source: 'shares',
      sealedReason: 'uninitialized',
    });
    const sealed = await kmsFailure(client.rootKey());
    expect(sealed.code).toBe('SEALED');
    expect(sealed.message).toContain('not initialized');
    expect(sealed.details).toMatchObject({ sealed: true, initialized: false });
    first = await newKey();
    expect((await kmsFailure(client.submitShare(first.shares[0]!))).code).toBe('CONFLICT');
    expect((await kmsFailure(client.verifyShares(first.shares))).code).toBe('SEALED');
  });

  it('is initialized by the first install, only with expectedCurrentId null: that key is current at once', async () => {
    const wrong = await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: '0'.repeat(32) }));
    expect(wrong.code).toBe('CONFLICT');
    const initialized = await install({ t: 3, n: 5, expectedCurrentId: null });
    expect(initialized.pending).toBe(false);
    first = initialized;
    expect(new Set(first.shares.map((share) => share.index)).size).toBe(5); // distinct x coordinates
    expect(await client.sealStatus()).toMatchObject({ sealed: false, initialized: true, t: 3, n: 5, rootKeyId: first.id, verificationPending: false });
    const released = await client.rootKey();
    expect(released.id).toBe(first.id);
    expect(released.key.equals(first.key)).toBe(true);
    // The state record holds ids, thresholds and a MAC, never a key, wrapped or not.
    const record = await stateRecord();
    expect(Object.keys(record).sort()).toEqual(['current', 'format', 'generation', 'mac', 'pending']);
    expect(record).toMatchObject({ current: { id: first.id, t: 3, n: 5 }, pending: null });
  });

  it('a rotation makes its key pending: the current key stays in use; of two concurrent rotations one wins', async () => {
    const results = await Promise.allSettled([
      install({ t: 3, n: 5, expectedCurrentId: first.id, expectedPendingId: null }),
      install({ t: 3, n: 5, expectedCurrentId: first.id, expectedPendingId: null }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost[0]!.reason).toMatchObject({ code: 'CONFLICT' });
    const issued = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof install>>>).value;
    expect(issued.pending).toBe(true);
    second = issued;
    // Still the first key: nothing is wrapped under the new one before its shares are proven.
    expect((await client.rootKey()).id).toBe(first.id);
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: first.id, verificationPending: true, pendingRootKeyId: second.id });
    // A retry that saw no pending key is refused: it never silently replaces the shares just issued.
    expect((await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: first.id, expectedPendingId: null }))).code).toBe('CONFLICT');
    const record = await stateRecord();
    expect(record).toMatchObject({ current: { id: first.id }, pending: { id: second.id, t: 3, n: 5 } });
    pendingRecord = await readFile(statePath(), 'utf8');
  });

  it('makes every root key itself: a request that carries one is refused, whoever sends it', async () => {
    const kbs = new KbsClient({ url: sealer.url, ca: await sealer.caPem(), attester: adminAttester() });
    try {
      const body = { key: randomBytes(32).toString('base64'), t: 3, n: 5, expectedCurrentId: first.id, expectedPendingId: second.id };
      const refused = await kbs.authorized('POST', sealerPaths.rootKey, body, 'install').then(
        () => undefined,
        (error: unknown) => error as KbsResponseError,
      );
      expect(refused?.status).toBe(400);
      expect(refused?.problem?.detail).toContain('carries no key material');
    } finally {
      kbs.close();
    }
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: first.id, pendingRootKeyId: second.id });
  });

  it('refuses recovery while unsealed: a live key is never replaced', async () => {
    const refused = await kmsFailure(client.submitShare(first.shares[0]!));
    expect(refused.code).toBe('CONFLICT');
    expect(refused.message).toContain('not sealed');
  });

  it('after a restart the current shares recover the current key; the unverified new shares open nothing', async () => {
    await restart('SIGKILL');
    expect(await client.sealStatus()).toMatchObject({
      sealed: true,
      initialized: true,
      t: 3,
      n: 5,
      rootKeyId: first.id,
      pendingRootKeyId: second.id,
      sealedReason: 'starting',
    });
    // Signed, so a function may ride it out (isStartingSeal); an older service's answer lacks the field.
    const starting = await kmsFailure(client.rootKey());
    expect(starting.code).toBe('SEALED');
    expect(starting.details).toMatchObject({ sealedReason: 'starting' });
    expect(isStartingSeal(starting)).toBe(true);
    expect((await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: first.id }))).code).toBe('SEALED');
    await recover(second.shares.slice(0, 2));
    const unverified = await kmsFailure(client.submitShare(second.shares[2]!));
    expect(unverified.code).toBe('BAD_REQUEST');
    expect(unverified.message).toContain('never verified');
    expect(await recover([first.shares[4]!, first.shares[1]!, first.shares[2]!])).toEqual({ sealed: false, progress: 0, t: 3, rootKeyId: first.id });
    expect((await client.rootKey()).key.equals(first.key)).toBe(true);
  });

  it('verification refuses wrong, too few, duplicated and current shares and changes nothing', async () => {
    const current = await kmsFailure(client.verifyShares(first.shares.slice(0, 3)));
    expect(current.code).toBe('BAD_REQUEST');
    expect(current.message).toContain('rebuild the current root key, not the new one');
    const wrong = await kmsFailure(client.verifyShares((await newKey()).shares.slice(0, 3)));
    expect(wrong.message).toContain('do not rebuild');
    const few = await kmsFailure(client.verifyShares(second.shares.slice(0, 2)));
    expect(few.message).toContain('need at least 3 shares');
    const twice = await kmsFailure(client.verifyShares([second.shares[0]!, second.shares[0]!, second.shares[1]!]));
    expect(twice.message).toContain('appears twice');
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: first.id, pendingRootKeyId: second.id });
  });

  it('verification of the new shares makes the new key current and retires the old shares', async () => {
    expect(await client.verifyShares(second.shares.slice(2, 5))).toEqual({ rootKeyId: second.id, verified: true, promoted: true, previousRootKeyId: first.id });
    expect(await client.sealStatus()).toMatchObject({ verificationPending: false, pendingRootKeyId: null, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
    // The old key, wrapped under the new one, so records under it stay readable.
    const link = JSON.parse(await readFile(join(sealer.dataDir, 'objects', 'root-keys', first.id, `${second.id}.json`), 'utf8'));
    expect(link).toMatchObject({ kind: 'previous-root-key', id: first.id, wrappedUnder: second.id });

    await restart('SIGKILL');
    await client.submitShare(first.shares[0]!);
    await client.submitShare(first.shares[1]!);
    const stale = await kmsFailure(client.submitShare(first.shares[2]!));
    expect(stale.code).toBe('BAD_REQUEST');
    expect(stale.message).toContain('progress was reset');
    expect(await recover([second.shares[3]!, second.shares[0]!, second.shares[4]!])).toMatchObject({ sealed: false, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
  });

  it('as the storage writer: a record rolled back to before the verification gives the retired shares nothing', async () => {
    await sealer.stop('SIGKILL');
    await writeFile(statePath(), pendingRecord);
    await restart('SIGKILL');
    expect(await client.sealStatus()).toMatchObject({ sealed: true, rootKeyId: first.id, pendingRootKeyId: second.id });
    await recover(first.shares.slice(0, 2));
    const retired = await kmsFailure(client.submitShare(first.shares[2]!));
    expect(retired.code).toBe('INTEGRITY');
    expect(retired.message).toContain('retired');
    expect((await client.sealStatus()).sealed).toBe(true);
    // The verified shares complete what the rolled-back record shows as pending, through the stored link.
    expect(await recover(second.shares.slice(0, 3))).toMatchObject({ sealed: false, rootKeyId: second.id });
    expect((await client.rootKey()).key.equals(second.key)).toBe(true);
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: second.id, pendingRootKeyId: null });
  });

  it("as the storage writer: a record naming the attacker's key unseals nothing, and the real shares report it", async () => {
    const attacker = await newKey();
    const forged = JSON.parse(await readFile(statePath(), 'utf8')) as Record<string, unknown>;
    const { sealState } = await import('../../sealer/state-record.js');
    await sealer.stop('SIGKILL');
    await writeFile(
      statePath(),
      JSON.stringify({ ...forged, ...sealState({ generation: 99, current: { id: attacker.id, t: 3, n: 5 }, pending: null }, attacker.key) }),
    );
    await restart('SIGKILL');
    expect(await client.sealStatus()).toMatchObject({ sealed: true, rootKeyId: attacker.id });
    await recover(attacker.shares.slice(0, 2));
    const refused = await kmsFailure(client.submitShare(attacker.shares[2]!));
    expect(refused.code).toBe('INTEGRITY');
    expect(refused.message).toContain('opens nothing');
    await recover(second.shares.slice(0, 2));
    const real = await kmsFailure(client.submitShare(second.shares[2]!));
    expect(real.code).toBe('INTEGRITY');
    expect(real.message).toContain('the state record names another');
    expect((await kmsFailure(client.rootKey())).code).toBe('SEALED');
  });

  it('as the storage writer: a deleted record is an alarm, never a fresh start', async () => {
    await sealer.stop('SIGKILL');
    await rm(statePath());
    await restart('SIGKILL');
    const status = await client.sealStatus();
    expect(status).toMatchObject({ sealed: true, initialized: false });
    expect(status.integrityAlarm).toContain('missing while storage holds keys');
    const init = await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: null }));
    expect(init.code).toBe('INTEGRITY');
    expect((await kmsFailure(client.submitShare(second.shares[0]!))).code).toBe('INTEGRITY');
    expect((await kmsFailure(client.rootKey())).code).toBe('SEALED');
  });
});
