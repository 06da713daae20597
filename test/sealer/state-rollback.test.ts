// As whoever writes storage, against a running sealing service: its state record put back to an
// earlier version. That version is authentic (the same current key wrote it), so only its
// generation tells it apart; it must never be adopted, neither by a single instance nor by replicas.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import type { SealStatus, Share } from '../../shared/sealer-client/protocol.js';
import { kmsFailure } from '../support/failure.js';
import { startReplicas, untilStatus, unsealedOn } from '../support/replicas.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';

const secrets = new SecretRegistry();

afterAll(() => {
  expect(secrets.size).toBeGreaterThan(0);
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

interface Rotated {
  readonly id: string;
  readonly shares: Share[];
}

async function rotate(client: SealerClient, expectedCurrentId: string | null, expectedPendingId: string | null): Promise<Rotated> {
  const { rootKeyId: id, shares } = await client.installRootKey({ t: 2, n: 3, expectedCurrentId, expectedPendingId });
  shares.forEach((share) => secrets.addShare(share));
  return { id, shares };
}

/**
 * Initializes K1, rotates to P1 and keeps that version of the record (the adversary's copy), then
 * rotates again to P2, which replaces P1. Answers the keys and both versions of the record.
 */
async function rotateTwice(client: SealerClient, statePath: string, whenPending = async (_id: string) => {}) {
  const k1 = await rotate(client, null, null);
  const p1 = await rotate(client, k1.id, null);
  await whenPending(p1.id);
  const withP1 = await readFile(statePath);
  const p2 = await rotate(client, k1.id, p1.id);
  await whenPending(p2.id);
  const latest = await readFile(statePath);
  return { k1, p1, p2, withP1, latest };
}

describe('one sealing service', () => {
  let sealer: SealerProcess;
  let client: SealerClient;

  beforeAll(async () => {
    sealer = await startSealerProcess();
    client = await sealer.client();
  });
  afterAll(async () => {
    client?.close();
    await sealer?.cleanup();
  });

  it('refuses a record rolled back to name a replaced pending key, says what it stored, and goes on once it is restored', async () => {
    const statePath = join(sealer.dataDir, 'objects', 'sealer', 'state.json');
    const { k1, p1, p2, withP1, latest } = await rotateTwice(client, statePath);
    await writeFile(statePath, withP1);

    // Verifying P2 stores the link from K1 to P2, then meets the older record: an alarm, not "nothing changed".
    const verified = await kmsFailure(client.verifyShares(p2.shares.slice(0, 2)));
    expect(verified.code).toBe('INTEGRITY');
    expect(verified.message).toContain('was rolled back');
    expect(verified.message).toContain(`The link from root key ${k1.id} to ${p2.id} was stored`);
    const status = await client.sealStatus();
    expect(status).toMatchObject({ sealed: false, rootKeyId: k1.id, pendingRootKeyId: p2.id });
    expect(status.integrityAlarm).toContain('was rolled back');

    // The replaced key's shares stay refused: the rolled-back record was never adopted.
    expect(await kmsFailure(client.verifyShares(p1.shares.slice(0, 2)))).toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringContaining('do not rebuild'),
    });
    expect((await client.sealStatus()).rootKeyId).toBe(k1.id);

    // Once the latest version is back, the alarm clears, and verifying P2 again completes the promotion.
    await writeFile(statePath, latest);
    await untilStatus(
      client,
      (s) => s.integrityAlarm === null,
      'the alarm clears',
      () => sealer.logs(),
      10_000,
    );
    expect(await client.verifyShares(p2.shares.slice(0, 2))).toMatchObject({ rootKeyId: p2.id, verified: true, promoted: true });
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: p2.id, pendingRootKeyId: null, integrityAlarm: null });
  });
});

describe('replicas', () => {
  let dir: string;
  let sealers: SealerProcess[] = [];
  let clients: SealerClient[] = [];
  const until = (i: number, done: (s: SealStatus) => boolean, what: string) =>
    untilStatus(clients[i]!, done, `replica ${i}: ${what}`, () => sealers[i]!.logs(), 30_000);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-rollback-'));
    ({ sealers, clients } = await startReplicas(dir, { KMS_DATA_DIR: dir }, '7b'.repeat(48), 2));
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    for (const sealer of sealers) await sealer.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('a replica never follows a record rolled back to an earlier version, whatever key it names', async () => {
    const statePath = join(dir, 'objects', 'sealer', 'state.json');
    const { k1, p1, p2, withP1, latest } = await rotateTwice(clients[0]!, statePath, async (id) => {
      await until(1, (s) => s.pendingRootKeyId === id, `follows the rotation to ${id}`);
    });
    await until(1, unsealedOn(k1.id), 'unsealed by its peer');
    await writeFile(statePath, withP1);

    await until(1, (s) => s.integrityAlarm?.includes('was rolled back') === true, 'raises the alarm');
    expect(await clients[1]!.sealStatus()).toMatchObject({ sealed: false, rootKeyId: k1.id, pendingRootKeyId: p2.id });
    expect(await kmsFailure(clients[1]!.verifyShares(p1.shares.slice(0, 2)))).toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringContaining('do not rebuild'),
    });
    const verified = await kmsFailure(clients[1]!.verifyShares(p2.shares.slice(0, 2)));
    expect(verified.code).toBe('INTEGRITY');
    expect(verified.message).toContain(`The link from root key ${k1.id} to ${p2.id} was stored`);

    await writeFile(statePath, latest);
    await until(1, (s) => s.integrityAlarm === null, 'clears the alarm once the latest version is back');
    expect(await clients[1]!.verifyShares(p2.shares.slice(0, 2))).toMatchObject({ rootKeyId: p2.id, promoted: true });
    await until(0, (s) => s.rootKeyId === p2.id && s.pendingRootKeyId === null && s.integrityAlarm === null, 'follows the promotion');
    expect((await clients[1]!.sealStatus()).integrityAlarm).toBeNull();

    // The same earlier version put back a second time is judged again.
    await writeFile(statePath, withP1);
    await until(0, (s) => s.integrityAlarm?.includes('was rolled back') === true, 'raises the alarm again');
  });
});
