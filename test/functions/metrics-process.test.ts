// `npm start` as a user runs it, with both metrics ports: the functions' and the sealing service's
// metrics are on loopback only and apart from the public port, and a rotation's progress shows.
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { freePort, httpCall, startFunctionsFramework, startNpmStart, type ServerProcess } from '../support/processes.js';
import { scrape } from '../support/prometheus.js';
import { findSecrets } from '../support/storage-snapshot.js';

const ADMIN = 'metrics-admin-token';
let dataDir: string;
let kms: ServerProcess;
let hostMetrics: number;
let sealerMetrics: number;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-metrics-start-'));
  [hostMetrics, sealerMetrics] = [await freePort(), await freePort()];
  kms = await startNpmStart({
    KMS_DATA_DIR: dataDir,
    KMS_ADMIN_TOKEN: ADMIN,
    KMS_METRICS_PORT: String(hostMetrics),
    KMS_SEALER_METRICS_PORT: String(sealerMetrics),
  });
});

afterAll(async () => {
  await kms?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

/** Whether a TCP connection to address:port is accepted. */
function accepts(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port, timeout: 5_000 });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

describe('npm start with metrics', () => {
  it('serves both metrics ports on 127.0.0.1 only, never /metrics on the public port', async () => {
    expect((await kms.request('/metrics')).status).toBe(404);
    await kms.outputContaining(`"metrics":"http://127.0.0.1:${hostMetrics}/metrics"`);
    expect((await scrape(`http://127.0.0.1:${hostMetrics}/metrics`)).types.get('kms_requests_total')).toBe('counter');
    expect((await scrape(`http://127.0.0.1:${sealerMetrics}/metrics`)).value('kms_sealer_sealed')).toBe(1);
    const outside = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a !== undefined && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    for (const address of outside) {
      expect(await accepts(address, hostMetrics), address).toBe(false);
      expect(await accepts(address, sealerMetrics), address).toBe(false);
    }
  });

  it('counts the primary keys a rotation rewraps, and shows no rotation once it is done', async () => {
    const first = await kms.request('/rootKey/rotate');
    expect(first.status).toBe(200);
    const firstShares = JSON.parse(first.body) as Share[];
    expect((await kms.request('/user/alice?token=alices-token', { method: 'POST' })).status).toBe(201);
    for (const pk of ['pk1', 'pk2', 'pk3']) {
      expect((await kms.request(`/primaryKey/${pk}?user=alice&&token=alices-token`, { method: 'POST' })).status).toBe(201);
    }
    const sealer = `http://127.0.0.1:${sealerMetrics}/metrics`;
    const host = `http://127.0.0.1:${hostMetrics}/metrics`;
    expect((await scrape(sealer)).value('kms_sealer_sealed')).toBe(0);

    const second = await kms.request('/rootKey/rotate', { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(second.status).toBe(200);
    const shares = JSON.parse(second.body) as Share[];
    expect((await scrape(sealer)).value('kms_sealer_verification_pending')).toBe(1);
    expect((await scrape(host)).value('kms_rotation_rewrapped_keys_total')).toBe(0);

    const verified = await kms.request('/rootKey/verify', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ shares: shares.slice(0, 3) }),
    });
    expect(verified.status).toBe(200);
    const after = await scrape(host);
    expect(after.value('kms_rotation_rewrapped_keys_total')).toBe(3);
    expect(after.value('kms_rotation_in_progress')).toBe(0);
    // The rewrap listed the primary keys, took and released its lease (create, replace, delete).
    expect(after.value('kms_storage_operations_total', { operation: 'list', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(after.value('kms_storage_operations_total', { operation: 'delete', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(after.value('kms_requests_total', { function: 'verifyRootKey', status: '200' })).toBe(1);
    expect((await scrape(sealer)).value('kms_sealer_verification_pending')).toBe(0);

    const texts = [(await httpCall(host)).body, (await httpCall(sealer)).body, kms.output()];
    const secrets = [ADMIN, 'alices-token', ...[...firstShares, ...shares].map((s) => Buffer.from(s.content, 'base64'))];
    for (const text of texts) expect(findSecrets(text, secrets)).toEqual([]);
  });
});

describe('npm start with sealing-service replicas', () => {
  it('gives each replica its own metrics port, from KMS_SEALER_METRICS_PORT up', async () => {
    let base = await freePort();
    for (let tries = 0; tries < 20 && (await accepts('127.0.0.1', base + 1)); tries++) base = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-metrics-replicas-'));
    const replicas = await startNpmStart({ KMS_DATA_DIR: dir, KMS_SEALER_REPLICAS: '2', KMS_METRICS_PORT: 'off', KMS_SEALER_METRICS_PORT: String(base) });
    try {
      for (const port of [base, base + 1]) expect((await scrape(`http://127.0.0.1:${port}/metrics`)).value('kms_sealer_sealed'), String(port)).toBe(1);
    } finally {
      await replicas.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a function under functions-framework', () => {
  it('serves its function and no metrics: metrics are a feature of the hosts', async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-metrics-ff-'));
    const ff = await startFunctionsFramework('welcome', 'welcome', { KMS_DATA_DIR: dir, KMS_METRICS_PORT: String(port) });
    try {
      expect((await ff.request('/')).status).toBe(200);
      expect(await accepts('127.0.0.1', port)).toBe(false);
    } finally {
      await ff.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
