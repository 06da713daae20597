// The sealing service's metrics, from outside: a real sealer process, attacked and driven through
// its protocol (KBS and the admin API), its metrics port scraped and parsed strictly.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { httpCall, repoRoot, TEST_ADMIN_IDENTITY } from '../support/processes.js';
import { ProtocolClient } from '../support/protocol-client.js';
import { scrape } from '../support/prometheus.js';
import { allLogs, freePort, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { writeTlsFiles } from '../support/tls-files.js';

const secrets = new SecretRegistry();
let sealer: SealerProcess;
let client: SealerClient;
let metricsUrl: string;

beforeAll(async () => {
  const port = await freePort();
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  sealer = await startSealerProcess({ env: { KMS_SEALER_METRICS_PORT: String(port) } });
  client = await sealer.client();
});

afterAll(async () => {
  await sealer?.cleanup();
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe("the sealing service's metrics", () => {
  it('counts refused attestations by reason, and not the ones that succeed', async () => {
    const ca = await sealer.caPem();
    const honest = new ProtocolClient({ url: sealer.url, ca });
    const auth = async () => {
      const answer = await honest.send('POST', '/kbs/v0/auth', { body: { version: '0.4.0', tee: 'sample', 'extra-params': '' }, nonce: false });
      const cookie = String(answer.headers['set-cookie']).split(';')[0]!;
      return { nonce: answer.json<{ nonce: string }>().nonce, cookie };
    };
    const attest = (cookie: string | undefined, body: unknown) =>
      honest.send('POST', '/kbs/v0/attest', { body, nonce: false, headers: cookie === undefined ? {} : { Cookie: cookie } });

    await honest.attest();
    const before = await scrape(metricsUrl);
    expect(before.sum('kms_attestation_failures_total')).toBe(0);

    expect((await honest.send('POST', '/kbs/v0/auth', { body: { version: '0.3.0', tee: 'sample' }, nonce: false })).status).toBe(401);
    expect((await honest.send('POST', '/kbs/v0/auth', { body: { version: '0.4.0', tee: 'tdx' }, nonce: false })).status).toBe(401);
    expect((await attest(undefined, {})).status).toBe(401);
    const wrongNonce = await auth();
    const runtimeData = { nonce: 'not-the-challenge', 'tee-pubkey': honest.teePubKey };
    expect((await attest(wrongNonce.cookie, { 'runtime-data': runtimeData, 'tee-evidence': {} })).status).toBe(401);
    const malformed = await auth();
    expect((await attest(malformed.cookie, { 'tee-evidence': {} })).status).toBe(401);
    // Evidence whose report data binds another key: the verifier refuses it.
    const forged = new ProtocolClient({ url: sealer.url, ca, evidence: () => ({ svn: '1', report_data: Buffer.alloc(64, 7).toString('base64') }) });
    await expect(forged.attest()).rejects.toThrow(/attest: 401/);

    const after = await scrape(metricsUrl);
    expect(after.types.get('kms_attestation_failures_total')).toBe('counter');
    const counts = Object.fromEntries(after.samples.filter((s) => s.name === 'kms_attestation_failures_total').map((s) => [s.labels.reason, s.value]));
    expect(counts).toEqual({ protocol: 1, no_verifier: 1, session: 1, nonce_mismatch: 1, malformed: 1, evidence: 1 });
  });

  it('shows the sealed state flip with initialization, seal and recovery, and a pending verification', async () => {
    let m = await scrape(metricsUrl);
    expect(m.value('kms_sealer_sealed')).toBe(1);
    expect(m.value('kms_sealer_initialized')).toBe(0);
    expect(m.value('kms_sealer_root_key_age_seconds')).toBe(0);

    const first = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: null });
    first.shares.forEach((share) => secrets.addShare(share));
    m = await scrape(metricsUrl);
    expect(m.value('kms_sealer_sealed')).toBe(0);
    expect(m.value('kms_sealer_initialized')).toBe(1);
    expect(m.value('kms_sealer_recovery_threshold')).toBe(2);
    expect(m.value('kms_sealer_root_key_age_seconds')).toBeGreaterThanOrEqual(0);

    const next = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: first.rootKeyId });
    next.shares.forEach((share) => secrets.addShare(share));
    expect((await scrape(metricsUrl)).value('kms_sealer_verification_pending')).toBe(1);
    await client.verifyShares(next.shares.slice(0, 2));
    expect((await scrape(metricsUrl)).value('kms_sealer_verification_pending')).toBe(0);

    await client.seal();
    m = await scrape(metricsUrl);
    expect(m.value('kms_sealer_sealed')).toBe(1);
    expect(m.value('kms_sealer_root_key_age_seconds')).toBe(0);
    await client.submitShare(next.shares[2]!);
    expect((await scrape(metricsUrl)).value('kms_sealer_recovery_shares')).toBe(1);
    await client.submitShare(next.shares[0]!);
    m = await scrape(metricsUrl);
    expect(m.value('kms_sealer_sealed')).toBe(0);
    expect(m.value('kms_sealer_recovery_shares')).toBe(0);
    expect(m.value('kms_sealer_integrity_alarm')).toBe(0);
    expect(m.value('kms_sealer_recoveries_total')).toBe(1);
    expect(m.value('kms_sealer_integrity_alarms_total')).toBe(0);
    // Its own storage calls (the state record) are counted too.
    expect(m.sum('kms_storage_operations_total', { operation: 'replace', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
  });

  it('stops at start, naming the variable, when its metrics port is taken', async () => {
    const port = new URL(metricsUrl).port;
    const env = { ...sealer.env, KMS_SEALER_PORT: String(await freePort()), KMS_SEALER_METRICS_PORT: port };
    const child = spawn(process.execPath, [join(repoRoot, 'dist/sealer/main.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(output).toContain(`cannot serve metrics on 127.0.0.1:${port} (KMS_SEALER_METRICS_PORT): EADDRINUSE`);
    // The running sealer still serves its own.
    expect((await scrape(metricsUrl)).value('kms_sealer_sealed')).toBe(0);
  });

  it('serves metrics apart from its HTTPS API, which does not know /metrics', async () => {
    expect((await new ProtocolClient({ url: sealer.url, ca: await sealer.caPem() }).send('GET', '/metrics', { nonce: false })).status).toBe(404);
    expect((await httpCall(metricsUrl.replace('/metrics', '/other'))).status).toBe(404);
    expect(sealer.messages()).toContain('metrics listening');
  });
});

describe('what an operator must account for', () => {
  it('counts integrity alarms and recoveries: a tampered record refuses the shares, the restored one takes them', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/metrics`;
    const own = await startSealerProcess({ env: { KMS_SEALER_METRICS_PORT: String(port) } });
    try {
      const initialized = await (await own.client()).installRootKey({ t: 2, n: 3, expectedCurrentId: null });
      initialized.shares.forEach((share) => secrets.addShare(share));
      const record = join(own.dataDir, 'objects', 'sealer', 'state.json');
      const genuine = await readFile(record, 'utf8');
      // Whoever writes storage edits the record (its MAC no longer matches), and the service restarts.
      const state = JSON.parse(genuine) as { mac: string };
      await writeFile(record, JSON.stringify({ ...state, mac: Buffer.alloc(32, 1).toString('base64url') }));
      await own.restart();
      let client = await own.client();
      await client.submitShare(initialized.shares[0]!);
      await expect(client.submitShare(initialized.shares[1]!)).rejects.toMatchObject({ code: 'INTEGRITY' });
      let m = await scrape(url);
      expect(m.types.get('kms_sealer_integrity_alarms_total')).toBe('counter');
      expect(m.value('kms_sealer_integrity_alarms_total')).toBe(1);
      expect(m.value('kms_sealer_recoveries_total')).toBe(0);
      expect(m.value('kms_sealer_sealed')).toBe(1);

      await writeFile(record, genuine);
      await own.restart();
      client = await own.client();
      for (const share of initialized.shares.slice(0, 2)) await client.submitShare(share);
      m = await scrape(url);
      expect(m.value('kms_sealer_sealed')).toBe(0);
      expect(m.value('kms_sealer_recoveries_total')).toBe(1);
      expect(m.value('kms_sealer_integrity_alarms_total')).toBe(0); // a new process counts from its start
    } finally {
      await own.cleanup();
    }
  });
});

describe("a replica's metrics", () => {
  it('counts a peer it refused: one attested as an identity not granted sealer-peer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-peer-metrics-'));
    const tls = writeTlsFiles(dir); // one certificate: the impostor passes TLS, so only its attestation can refuse it
    const shared = { KMS_SEALER_TLS_CERT_FILE: tls.certFile, KMS_SEALER_TLS_KEY_FILE: tls.keyFile };
    const impostor = await startSealerProcess({ env: { ...shared, KMS_SEALER_SAMPLE_INIT_DATA: TEST_ADMIN_IDENTITY } }); // a function's identity
    const policyFile = join(dir, 'admin-policy.json');
    const grant = [TEST_ADMIN_IDENTITY];
    await writeFile(policyFile, JSON.stringify({ rotate: grant, verify: grant, recover: grant, seal: grant, 'sealer-peer': ['5e'.repeat(48)] }));
    const port = await freePort();
    const replica = await startSealerProcess({
      env: {
        ...shared,
        KMS_SEALER_ADMIN_POLICY_FILE: policyFile,
        KMS_SEALER_PEERS: impostor.url,
        KMS_SEALER_SAMPLE_INIT_DATA: '5e'.repeat(48),
        KMS_SEALER_SYNC_SECONDS: '1',
        KMS_SEALER_METRICS_PORT: String(port),
      },
    });
    try {
      const initialized = await (await replica.client()).installRootKey({ t: 2, n: 3, expectedCurrentId: null });
      initialized.shares.forEach((share) => secrets.addShare(share));
      await replica.restart('SIGKILL'); // sealed: it asks its peer for the key, and refuses it first
      const refusals = async () => (await scrape(`http://127.0.0.1:${port}/metrics`)).sum('kms_attestation_failures_total', { reason: 'sealer_identity' });
      await vi.waitFor(async () => expect(await refusals()).toBeGreaterThanOrEqual(1), { timeout: 20_000, interval: 200 });
      await replica.settle();
      expect(replica.messages().join('\n')).toContain(`attested as identity ${TEST_ADMIN_IDENTITY}, which is not granted "sealer-peer": not a replica`);
    } finally {
      await replica.cleanup();
      await impostor.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
