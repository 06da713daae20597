/**
 * The storage adversary against a real lean-host process over real HTTPS: objects are written
 * behind the KMS's back (files of the embedded store; S3 objects with the independent `minio`
 * client), and every such attack must be answered with an error, never with a key.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { sealState } from '../../sealer/state-record.js';
import {
  attackedStorages,
  fsAdversary,
  plantedLinkGraph,
  renameRootKeyOf,
  s3Adversary,
  type AttackedStorage,
  type StorageAdversary,
} from '../support/adversary.js';
import { makeShares, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { createTestBucket } from '../support/s3.js';

interface Deployment {
  kms: ServerProcess;
  readonly adversary: StorageAdversary;
  /** Stops the process and starts it again on the same storage: nothing cached. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const rootKey = randomBytes(32).toString('base64');

const deployments: Record<string, () => Promise<Deployment>> = {
  'lean host, embedded store': async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-untrusted-'));
    return deployment({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: rootKey }, fsAdversary(dataDir), () => rm(dataDir, { recursive: true, force: true }));
  },
  'lean host, S3 (Ceph RGW)': async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-untrusted-'));
    const bucket = await createTestBucket();
    return deployment({ ...bucket.env, KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: rootKey }, s3Adversary(bucket), async () => {
      await bucket.remove();
      await rm(dataDir, { recursive: true, force: true });
    });
  },
};

async function deployment(env: Record<string, string>, adversary: StorageAdversary, cleanup: () => Promise<void>): Promise<Deployment> {
  const d: Deployment = {
    kms: await startLeanHost(env),
    adversary,
    restart: async () => {
      await d.kms.stop();
      d.kms = await startLeanHost(env);
    },
    stop: async () => {
      await d.kms.stop();
      await cleanup();
    },
  };
  return d;
}

for (const [name, deploy] of Object.entries(deployments)) {
  describe(`a storage adversary against the REST API: ${name}`, () => {
    let d: Deployment;
    beforeAll(async () => {
      d = await deploy();
    });
    afterAll(async () => d?.stop());

    it("a user record forged while the victim's keys are cached unlocks none of them: 500, and nothing is created", async () => {
      const { kms, adversary } = d;
      expect((await kms.request('/user/alice?token=alice-token', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/user/mallory?token=mallory-token', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/primaryKey/pk1?user=alice&token=alice-token', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/dataKey/dk1?user=alice&token=alice-token&primaryKeyName=pk1', { method: 'POST' })).status).toBe(201);
      const dk1 = await kms.request('/dataKey/dk1?user=alice&token=alice-token&primaryKeyName=pk1');
      expect(dk1.status).toBe(200); // alice's keys are now cached in the function

      // Alice's record, with mallory's token verifier in it.
      const mallorys = JSON.parse((await adversary.read('users/mallory.json'))!.toString()) as { token: unknown };
      const forged = { format: 1, kind: 'user', user: 'alice', token: mallorys.token, createdAt: new Date().toISOString() };
      await adversary.write('users/alice.json', JSON.stringify(forged));

      const read = await kms.request('/dataKey/dk1?user=alice&token=mallory-token&primaryKeyName=pk1', { headers: { accept: 'application/json' } });
      expect(read.status).toBe(500);
      expect(JSON.parse(read.body)).toMatchObject({ error: { code: 'INTEGRITY' } });
      expect(read.body).not.toContain(dk1.body.trim());
      const create = await kms.request('/dataKey/dk2?user=alice&token=mallory-token&primaryKeyName=pk1', {
        method: 'POST',
        headers: { accept: 'application/json' },
      });
      expect(create.status).toBe(500);
      expect(JSON.parse(create.body)).toMatchObject({ error: { code: 'INTEGRITY' } });
      expect(await adversary.read('data-keys/alice/pk1/dk2.json')).toBeUndefined();
    });

    it('a planted root-key link graph gets a cold read of the key naming it a 500 at once; other keys are served', async () => {
      const { adversary } = d;
      const t = 'graph-token';
      expect((await d.kms.request(`/user/graph?token=${t}`, { method: 'POST' })).status).toBe(201);
      for (const pk of ['edited', 'untouched']) {
        expect((await d.kms.request(`/primaryKey/${pk}?user=graph&token=${t}`, { method: 'POST' })).status).toBe(201);
        expect((await d.kms.request(`/dataKey/dk?user=graph&token=${t}&primaryKeyName=${pk}`, { method: 'POST' })).status).toBe(201);
      }
      const untouched = await d.kms.request(`/dataKey/dk?user=graph&token=${t}&primaryKeyName=untouched`);
      expect(untouched.status).toBe(200);

      // 7 successors per id over 8 layers: 7^7 paths from the top, followed one by one.
      const graph = plantedLinkGraph(8, 7);
      await adversary.writeAll(graph.objects);
      await renameRootKeyOf(adversary, 'primary-keys/graph/edited.json', graph.top);
      await d.restart();

      const read = await d.kms.request(`/dataKey/dk?user=graph&token=${t}&primaryKeyName=edited`, { headers: { accept: 'application/json' } });
      expect(read.status).toBe(500);
      expect(JSON.parse(read.body)).toMatchObject({
        error: { code: 'INTEGRITY', message: expect.stringContaining('storage holds a root-key link graph this KMS will not follow') },
      });
      expect(await d.kms.request(`/dataKey/dk?user=graph&token=${t}&primaryKeyName=untouched`)).toMatchObject({ status: 200, body: untouched.body });
    });
  });
}

/**
 * The sealing service's record is in storage too. A sealing service and a lean host share one
 * storage; the adversary deletes, forges and rolls back `sealer/state.json`, and the API must never
 * start over, unseal with a key the adversary chose, or let retired shares back in.
 */
describe.each(Object.entries(attackedStorages))('a storage adversary against the root key: %s', (_name, open) => {
  const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
  const admin = { authorization: `Bearer ${ADMIN}`, accept: 'application/json' };
  const json = { accept: 'application/json' };
  let storage: AttackedStorage;
  let sealer: SealerProcess;
  let kms: ServerProcess;
  let dir: string;

  const startKms = async (extra: Record<string, string> = {}) => {
    const caFile = join(dir, 'sealer-ca.pem');
    await writeFile(caFile, await sealer.caPem());
    return startLeanHost({
      ...storage.env,
      KMS_SEALER_URL: sealer.url,
      KMS_SEALER_CA_FILE: caFile,
      KMS_ATTESTER: 'sample',
      KMS_ADMIN_TOKEN: ADMIN,
      KMS_ROOT_KEY_REFRESH_SECONDS: '1',
      ...extra,
    });
  };
  const rotate = async (headers: Record<string, string> = admin): Promise<Share[]> => {
    const answer = await kms.request('/rootKey/rotate', { headers });
    expect(answer.status, answer.body).toBe(200);
    return JSON.parse(answer.body) as Share[];
  };
  const verify = async (shares: readonly Share[]) => {
    const answer = await kms.request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares }), headers: admin });
    expect(answer.status, answer.body).toBe(200);
  };
  /** Sends shares one by one; the last answer. */
  const submit = async (shares: readonly Share[]) => {
    let last;
    for (const share of shares) last = await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share), headers: json });
    return last!;
  };
  const status = async () => JSON.parse((await kms.request('/rootKey/status')).body) as Record<string, unknown>;
  const readKey = () => kms.request('/dataKey/dk?user=owner&token=owner-token&primaryKeyName=pk', { headers: json });
  let first: Share[];
  let second: Share[];
  let value: string;

  beforeAll(async () => {
    storage = await open();
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-sealer-attack-'));
    sealer = await startSealerProcess({ env: storage.env });
    kms = await startKms();
    first = await rotate({});
    expect((await kms.request('/user/owner?token=owner-token', { method: 'POST' })).status).toBe(201);
    expect((await kms.request('/primaryKey/pk?user=owner&token=owner-token', { method: 'POST' })).status).toBe(201);
    expect((await kms.request('/dataKey/dk?user=owner&token=owner-token&primaryKeyName=pk', { method: 'POST' })).status).toBe(201);
    value = (await readKey()).body;
  }, 120_000);
  afterAll(async () => {
    await kms?.stop();
    await sealer?.cleanup();
    await storage?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('a deleted state record is an integrity alarm: no anonymous rotate starts an unlinked root key', async () => {
    const record = (await storage.adversary.read('sealer/state.json'))!;
    await storage.adversary.remove('sealer/state.json');
    await sealer.restart('SIGKILL');
    const anonymous = await kms.request('/rootKey/rotate', { headers: json });
    expect(anonymous.status).toBe(500);
    expect(JSON.parse(anonymous.body)).toMatchObject({ error: { code: 'INTEGRITY', message: expect.stringContaining('missing while storage holds keys') } });
    expect(await storage.adversary.read('sealer/state.json')).toBeUndefined(); // nothing was initialized
    expect(await status()).toMatchObject({ sealed: true, integrityAlarm: expect.stringContaining('restore it') });
    expect((await kms.request('/')).body).toContain('state: INTEGRITY ALARM');
    expect((await submit(first.slice(0, 1))).status).toBe(500);
    // Restored by the operator: the real shares recover, every key as it was.
    await storage.adversary.write('sealer/state.json', record);
    await sealer.restart('SIGKILL');
    expect((await submit(first.slice(0, 3))).status).toBe(200);
    expect((await readKey()).body).toBe(value);
  });

  it("a record naming the adversary's own key: their shares unseal nothing; the real shares say the record was replaced", async () => {
    const real = (await storage.adversary.read('sealer/state.json'))!;
    const attackerKey = randomBytes(32);
    const attackerShares = await makeShares(attackerKey, 5, 3);
    const forged = sealState({ generation: 7, current: { id: rootKeyId(attackerKey), t: 3, n: 5 }, pending: null }, attackerKey);
    await storage.adversary.write('sealer/state.json', JSON.stringify(forged));
    await sealer.restart('SIGKILL');
    const theirs = await submit(attackerShares.slice(0, 3));
    expect(theirs.status).toBe(500);
    expect(JSON.parse(theirs.body)).toMatchObject({ error: { code: 'INTEGRITY' } });
    const ours = await submit(first.slice(0, 3));
    expect(ours.status).toBe(500);
    expect(JSON.parse(ours.body).error.message).toContain('the state record names another');
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // functions re-ask after KMS_ROOT_KEY_REFRESH_SECONDS
    expect((await readKey()).status).toBe(503); // sealed: nothing served under any key
    await storage.adversary.write('sealer/state.json', real);
    await sealer.restart('SIGKILL');
    expect((await submit(first.slice(0, 3))).status).toBe(200);
  });

  it('after a verified rotation, a record rolled back to before it gives the retired shares nothing', async () => {
    second = await rotate();
    const beforeVerification = (await storage.adversary.read('sealer/state.json'))!;
    await verify(second.slice(0, 3));
    await storage.adversary.write('sealer/state.json', beforeVerification);
    await sealer.restart('SIGKILL');
    const retired = await submit(first.slice(0, 3));
    expect(retired.status).toBe(500);
    expect(JSON.parse(retired.body).error.message).toContain('retired');
    // The verified shares complete the promotion the rolled-back record shows as pending.
    expect((await submit(second.slice(0, 3))).status).toBe(200);
    expect(await status()).toMatchObject({ sealed: false, pendingRootKeyId: null });
    expect((await readKey()).body).toBe(value);
  });

  it('a function still holding the retired root key wraps a new primary key under the current one', async () => {
    const stale = await startKms({ KMS_ROOT_KEY_REFRESH_SECONDS: '3600' });
    try {
      expect((await stale.request('/dataKey/dk?user=owner&token=owner-token&primaryKeyName=pk', { headers: json })).body).toBe(value); // pulls the key
      const third = await rotate();
      await verify(third.slice(0, 3));
      const current = (await status()).rootKeyId;
      expect((await stale.request('/primaryKey/late?user=owner&token=owner-token', { method: 'POST' })).status).toBe(201);
      const record = JSON.parse((await storage.adversary.read('primary-keys/owner/late.json'))!.toString()) as { rootKeyId: string };
      expect(record.rootKeyId).toBe(current);
    } finally {
      await stale.stop();
    }
  });
});
