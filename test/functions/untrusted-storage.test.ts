/**
 * The storage adversary against a real lean-host process over real HTTPS: objects are written
 * behind the KMS's back (files of the embedded store; S3 objects with the independent `minio`
 * client), and every such attack must be answered with an error, never with a key.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsAdversary, plantedLinkGraph, renameRootKeyOf, s3Adversary, type StorageAdversary } from '../support/adversary.js';
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
      const create = await kms.request('/dataKey/dk2?user=alice&token=mallory-token&primaryKeyName=pk1', { method: 'POST', headers: { accept: 'application/json' } });
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
