// The lean host's metrics, from outside: a real `node dist/scripts/serve.js`, real HTTPS requests on
// its public port, and scrapes of its metrics port parsed strictly (test/support/prometheus.ts).
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../../../shared/keys/layout.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { freePort, httpCall, NO_METRICS, repoRoot, runLeanHostToExit, startLeanHost, type ServerProcess } from '../../support/processes.js';
import { scrape } from '../../support/prometheus.js';

let dataDir: string;
let host: ServerProcess;
let metricsUrl: string;
const user = '?user=alice&&token=alices-token';

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-host-metrics-'));
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  host = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_METRICS_PORT: String(port) });
});

afterAll(async () => {
  await host?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

/** The lean host on this file's data folder, run to its exit. */
const runToExit = (env: Record<string, string>) => runLeanHostToExit({ KMS_DATA_DIR: dataDir, ...env });

describe('GET /metrics on the lean host', () => {
  it('counts requests by function and status, their latency, cache hits and misses and storage calls', async () => {
    const before = await scrape(metricsUrl);
    expect(before.types.get('kms_requests_total')).toBe('counter');
    expect(before.types.get('kms_request_duration_seconds')).toBe('histogram');
    expect(before.types.get('process_resident_memory_bytes')).toBe('gauge');

    expect((await host.request(`/user/alice?token=alices-token`, { method: 'POST' })).status).toBe(201);
    expect((await host.request(`/primaryKey/pk${user}`, { method: 'POST' })).status).toBe(201);
    expect((await host.request(`/dataKey/dk${user}&&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await host.request(`/dataKey/dk${user}&&primaryKeyName=pk`)).status).toBe(200);
    expect((await host.request(`/dataKey/dk?user=alice&&token=wrong-token&&primaryKeyName=pk`)).status).toBe(401);
    expect((await host.request('/no/such/route')).status).toBe(404);

    const after = await scrape(metricsUrl);
    expect(after.value('kms_requests_total', { function: 'getDataKey', status: '200' })).toBe(3);
    expect(after.value('kms_requests_total', { function: 'getDataKey', status: '401' })).toBe(1);
    expect(after.value('kms_requests_total', { function: 'enrollUser', status: '201' })).toBe(1);
    expect(after.value('kms_requests_total', { function: 'router', status: '404' })).toBe(1);
    expect(after.value('kms_request_duration_seconds_count', { function: 'getDataKey' })).toBe(4);
    expect(after.value('kms_request_duration_seconds_bucket', { function: 'getDataKey', le: '+Inf' })).toBe(4);
    expect(after.value('kms_request_duration_seconds_sum', { function: 'getDataKey' })).toBeGreaterThan(0);
    // The reads after the first find the credential, primary key and data key record in memory;
    // the wrong token is looked up and not found.
    for (const cache of ['credentials', 'primary_keys', 'data_keys']) {
      expect(after.sum('kms_cache_lookups_total', { cache, result: 'hit' }), cache).toBeGreaterThanOrEqual(2);
    }
    expect(after.sum('kms_cache_lookups_total', { cache: 'credentials', result: 'miss' })).toBeGreaterThanOrEqual(1);
    expect(after.sum('kms_storage_operations_total', { operation: 'create', outcome: 'ok' })).toBeGreaterThanOrEqual(3);
    expect(after.sum('kms_storage_operations_total', { operation: 'get', outcome: 'ok' })).toBeGreaterThan(
      before.sum('kms_storage_operations_total', { operation: 'get' }),
    );
    expect(after.value('kms_storage_operation_duration_seconds_count', { operation: 'create' })).toBe(
      after.sum('kms_storage_operations_total', { operation: 'create' }),
    );
    // A second enrollment of the same user is a conditional create storage refuses.
    expect((await host.request(`/user/alice?token=alices-token`, { method: 'POST' })).status).toBe(409);
    expect((await scrape(metricsUrl)).sum('kms_storage_operations_total', { operation: 'create', outcome: 'conflict' })).toBeGreaterThanOrEqual(1);
  });

  it("a wrong token counts as a credentials miss, whether or not the user's token is cached: the counter tells no one who logged in", async () => {
    const misses = async () => (await scrape(metricsUrl)).sum('kms_cache_lookups_total', { cache: 'credentials', result: 'miss' });
    const hits = async () => (await scrape(metricsUrl)).sum('kms_cache_lookups_total', { cache: 'credentials', result: 'hit' });
    expect((await host.request('/user/carol?token=carols-token', { method: 'POST' })).status).toBe(201);
    expect((await host.request('/primaryKey/pk?user=carol&&token=carols-token', { method: 'POST' })).status).toBe(201); // carol's token now cached
    for (const probed of ['carol', 'nobody-like-carol']) {
      const [hitsBefore, missesBefore] = [await hits(), await misses()];
      expect((await host.request(`/primaryKey/probe?user=${probed}&&token=a-guess`, { method: 'POST' })).status).toBe(401);
      expect([(await hits()) - hitsBefore, (await misses()) - missesBefore], probed).toEqual([0, 1]);
    }
  });

  it('counts a storage call that fails as an error, and the 503 it causes', async () => {
    // A record too large to be one (17 MiB, past the store's bound): storage fails, not the client.
    await mkdir(dirname(join(dataDir, 'objects', layout.user('mallory'))), { recursive: true });
    await writeFile(join(dataDir, 'objects', layout.user('mallory')), Buffer.alloc(17 * 1024 * 1024));
    const before = await scrape(metricsUrl);
    const answer = await host.request('/dataKey/dk?user=mallory&&token=mallorys-token&&primaryKeyName=pk');
    expect(answer.status).toBe(503);
    const after = await scrape(metricsUrl);
    expect(after.value('kms_storage_operations_total', { operation: 'get', outcome: 'error' })).toBe(
      before.sum('kms_storage_operations_total', { operation: 'get', outcome: 'error' }) + 1,
    );
    expect(after.value('kms_requests_total', { function: 'getDataKey', status: '503' })).toBe(1);
    expect((await httpCall(metricsUrl)).body).not.toContain('mallory');
  });

  it('shows a rotation whose holder died as in progress with a lapsed lease', async () => {
    expect((await scrape(metricsUrl)).value('kms_rotation_in_progress')).toBe(0);
    const store = new FsObjectStore(dataDir);
    const startedAt = new Date(Date.now() - 3_600_000).toISOString();
    const journal = { format: 1, kind: 'rotation', holder: 'dead', leaseUntil: Date.now() - 600_000, phase: 'rewrapping', to: null, rewrapped: 7, startedAt };
    expect(await store.create(layout.rotationJournal(), Buffer.from(JSON.stringify(journal)))).toBe(true);
    try {
      const stuck = await scrape(metricsUrl);
      expect(stuck.value('kms_rotation_in_progress')).toBe(1);
      expect(stuck.value('kms_rotation_journal_rewrapped_keys')).toBe(7);
      expect(stuck.value('kms_rotation_lease_expiry_timestamp_seconds')).toBeCloseTo(journal.leaseUntil / 1000, 3);
      expect(stuck.value('kms_rotation_started_timestamp_seconds')).toBe(Date.parse(startedAt) / 1000);
    } finally {
      await store.delete(layout.rotationJournal());
    }
    expect((await scrape(metricsUrl)).value('kms_rotation_in_progress')).toBe(0);
  });

  it('is not on the public port, answers only GET /metrics, and never echoes tokens', async () => {
    expect((await host.request('/metrics')).status).toBe(404);
    expect((await httpCall(metricsUrl.replace('/metrics', '/'))).status).toBe(404);
    const post = await httpCall(metricsUrl, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    const text = (await httpCall(metricsUrl)).body;
    expect(text).not.toContain('alices-token');
    expect(text).not.toContain('wrong-token');
    expect(text).not.toContain('alice');
  });

  it('refuses to start when its metrics port cannot be bound, naming the variable', async () => {
    const blocker = createServer();
    const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)));
    try {
      const { code, output } = await runToExit({ KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_METRICS_PORT: String(port) });
      expect(code).toBe(1);
      expect(output).toContain(`tee-kms: cannot serve metrics on 127.0.0.1:${port} (KMS_METRICS_PORT): EADDRINUSE`);
    } finally {
      blocker.close();
    }
  });

  it('refuses to start on a KMS_METRICS_BIND that is no address of this machine, naming that variable', async () => {
    const { code, output } = await runToExit({
      KMS_ROOT_KEY: randomBytes(32).toString('base64'),
      KMS_METRICS_PORT: String(await freePort()),
      KMS_METRICS_BIND: 'nonsense-host.invalid',
    });
    expect(code).toBe(1);
    expect(output).toMatch(
      /tee-kms: cannot serve metrics on nonsense-host\.invalid \(KMS_METRICS_BIND\): (ENOTFOUND|EAI_AGAIN); set it to an address or name of this machine/,
    );
  });

  it.each([
    [
      'KMS_BIND',
      () => ({ KMS_BIND: 'nonsense-host.invalid' }),
      /^tee-kms: KMS_BIND: cannot listen on nonsense-host\.invalid \((ENOTFOUND|EAI_AGAIN)\); set it to an address or name of this machine \(127\.0\.0\.1 for this machine only, 0\.0\.0\.0 for every interface\)$/m,
    ],
    [
      'KMS_DATA_DIR',
      () => ({ KMS_DATA_DIR: join(repoRoot, 'package.json') }),
      /^tee-kms: KMS_DATA_DIR: cannot use .*package\.json as a folder \(EEXIST: it is a file, not a folder\); point KMS_DATA_DIR at a folder this process can create and write$/m,
    ],
  ] as Array<[string, () => Record<string, string>, RegExp]>)('the lean host refuses to start on a bad %s, naming it', async (_name, envOf, message) => {
    const { code, output } = await runToExit({ KMS_ROOT_KEY: randomBytes(32).toString('base64'), ...NO_METRICS, ...envOf() });
    expect(code).toBe(1);
    expect(output).toMatch(message);
    expect(output).not.toContain('Error:');
  });

  it('refuses a bad KMS_METRICS_PORT before it listens', async () => {
    for (const bad of ['abc', '70000', '-1']) {
      const { code, output } = await runToExit({ KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_METRICS_PORT: bad });
      expect(code, bad).toBe(1);
      expect(output).toContain(`KMS_METRICS_PORT must be a port (1-65535), or 0 or off to disable metrics, got "${bad}"`);
    }
  });
});
