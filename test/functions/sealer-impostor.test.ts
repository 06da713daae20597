/**
 * Functions attest the sealing service (docs/sealer-protocol.md): whoever holds the sealing
 * service's TLS certificate and key (anyone who reads the Kubernetes Secret) can serve on its
 * address, so the functions trust a sealing service only for TDX evidence that meets their own
 * policy for it (KMS_TRUSTED_SEALER_TDX_*), and only answers signed by the key that evidence binds.
 *
 * The real sealing service runs in a TD whose MRCONFIGID is S (its quotes come from a test quote
 * provider, KMS_SEALER_ATTESTER=tdx-aa); impostors are other sealer processes with the SAME TLS
 * certificate and key but another root key, proving themselves with other quotes (another
 * MRCONFIGID, another MRTD, sample evidence), relaying the real service's attestation, or taking
 * over the real service's address. A function configured for S (TDX attester) must serve no key
 * through any of them, and wrap nothing under an impostor's root key; the same configuration
 * against the real service works.
 *
 * NODE_ENV: the functions run outside production here, because under NODE_ENV=production they
 * refuse a non-Intel DCAP root CA (KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE), as the sealing service
 * does; outside production they would accept sample evidence from a sealing service only without
 * a TDX policy for it, so the sample impostor below is refused by the policy alone. What
 * NODE_ENV=production itself refuses is tested at the end.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startLeanHost, type ServerProcess } from '../support/processes.js';
import { scrape } from '../support/prometheus.js';
import { bindingReportData, ProtocolClient, rootKeyIdOf, tdxQuoteFields } from '../support/protocol-client.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { findSecrets, readFsObjects } from '../support/storage-snapshot.js';
import { buildCollateral, createTestPki, DEFAULT_TD, DEFAULT_TD_POLICY, type TestPki } from '../support/tdx-quote-builder.js';
import { startTdxQuoteProvider, type TdProfile, type TdxQuoteProvider } from '../support/tdx-quote-provider.js';
import { writeTlsFiles } from '../support/tls-files.js';

const DAY = 86_400_000;
const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const json = { accept: 'application/json' };
/** The real sealing service's init-data digest (its TD's MRCONFIGID). */
const S = createHash('sha384').update('tee-kms tests: the sealing service init-data').digest('hex');
const OTHER_CONFIG_ID = createHash('sha384').update('tee-kms tests: an impostor init-data').digest('hex');
const OTHER_MRTD = '7e'.repeat(48);
const REAL_ROOT_KEY = randomBytes(32);
const REAL_ID = rootKeyIdOf(REAL_ROOT_KEY);

/** The functions' TDs (DEFAULT_TD): what the sealing services' own TDX verifier admits. */
const FUNCTIONS_POLICY = DEFAULT_TD_POLICY;
/** The functions' policy for the sealing service: the same image, with init-data S. */
const SEALER_POLICY = { ...FUNCTIONS_POLICY, mrConfigId: [S] };
/** The real service's TD. */
const SEALER_TD: TdProfile = { report: { mrConfigId: S } };

interface Env {
  readonly dir: string;
  readonly pki: TestPki;
  readonly files: { functionsPolicy: string; sealerPolicy: string; collateral: string; rootCa: string };
  readonly tls: ReturnType<typeof writeTlsFiles>;
  readonly real: SealerProcess;
  readonly sealers: SealerProcess[];
  readonly functions: ServerProcess[];
  readonly providers: TdxQuoteProvider[];
  readonly servers: Server[];
  readonly impostorKeys: Buffer[];
}

let env: Env;

/**
 * A sealing service (mode 1, `rootKey`) with the shared TLS certificate, admitting the functions'
 * TDs, proving itself with quotes for `profile` (or sample evidence). Not in insecure development
 * mode; NODE_ENV is not production because the synthetic DCAP root CA is refused there.
 */
async function startSealer(rootKey: Buffer, profile: TdProfile | 'sample', extra: Record<string, string> = {}): Promise<SealerProcess> {
  const provider = profile === 'sample' ? undefined : await startTdxQuoteProvider(env.pki, profile);
  if (provider) env.providers.push(provider);
  const sealer = await startSealerProcess({
    env: {
      KMS_SEALER_INSECURE_DEV_MODE: 'false',
      KMS_SEALER_ROOT_KEY: rootKey.toString('base64'),
      KMS_SEALER_TDX_POLICY_FILE: env.files.functionsPolicy,
      KMS_SEALER_TDX_COLLATERAL_FILE: env.files.collateral,
      KMS_SEALER_TDX_ROOT_CA_FILE: env.files.rootCa,
      KMS_SEALER_TLS_CERT_FILE: env.tls.certFile,
      KMS_SEALER_TLS_KEY_FILE: env.tls.keyFile,
      ...(provider ? { KMS_SEALER_ATTESTER: 'tdx-aa', KMS_SEALER_AA_URL: provider.url } : { KMS_SEALER_ATTESTER: 'sample' }),
      ...extra,
    },
  });
  env.sealers.push(sealer);
  return sealer;
}

async function startImpostor(profile: TdProfile | 'sample', extra: Record<string, string> = {}): Promise<{ sealer: SealerProcess; key: Buffer; id: string }> {
  const key = randomBytes(32);
  env.impostorKeys.push(key);
  return { sealer: await startSealer(key, profile, extra), key, id: rootKeyIdOf(key) };
}

/** A function (all routes) in a TD running the expected image, configured to trust the real sealing service only. */
async function tdFunction(sealerUrl: string, extra: Record<string, string> = {}): Promise<{ kms: ServerProcess; dataDir: string }> {
  const dataDir = await mkdtemp(join(env.dir, 'kms-'));
  const provider = await startTdxQuoteProvider(env.pki, {});
  env.providers.push(provider);
  const kms = await startLeanHost({
    KMS_DATA_DIR: dataDir,
    KMS_STORE: 'fs',
    KMS_SEALER_URL: sealerUrl,
    KMS_SEALER_CA_FILE: env.tls.certFile,
    KMS_ADMIN_TOKEN: ADMIN,
    KMS_ATTESTER: 'tdx-aa',
    KMS_AA_URL: provider.url,
    KMS_TRUSTED_SEALER_TDX_POLICY_FILE: env.files.sealerPolicy,
    KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: env.files.collateral,
    KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: env.files.rootCa,
    ...extra,
  });
  env.functions.push(kms);
  return { kms, dataDir };
}

async function createPrimaryKey(kms: ServerProcess, user: string, name = 'pk') {
  const enrolled = await kms.request(`/user/${user}?token=${user}-token`, { method: 'POST' });
  expect([201, 409]).toContain(enrolled.status);
  return kms.request(`/primaryKey/${name}?user=${user}&token=${user}-token`, { method: 'POST', headers: json });
}

/** The root key ids that the function's stored primary keys are wrapped under. */
async function wrappingIds(dataDir: string): Promise<string[]> {
  const stored = await readFsObjects(dataDir);
  return [...stored].filter(([key]) => key.startsWith('primary-keys/')).map(([, body]) => (JSON.parse(body.toString()) as { rootKeyId: string }).rootKeyId);
}

/** Nothing the function stored names the impostor's root key or holds it in any form. */
async function expectNothingUnder(dataDir: string, impostor: { key: Buffer; id: string }): Promise<void> {
  expect(await wrappingIds(dataDir)).not.toContain(impostor.id);
  const everything = [...(await readFsObjects(dataDir))].map(([key, body]) => `${key}\n${body.toString('latin1')}`).join('\n');
  expect(everything).not.toContain(impostor.id);
  expect(findSecrets(everything, [impostor.key])).toEqual([]);
}

/** The function's refusal: a 5xx with `code` (ROOT_KEY_UNAVAILABLE unless said), never a key. */
function expectUnavailable(answer: { status: number; body: string }, code = 'ROOT_KEY_UNAVAILABLE'): void {
  expect(answer.status, answer.body).toBeGreaterThanOrEqual(500);
  expect((JSON.parse(answer.body) as { error: { code: string } }).error.code, answer.body).toBe(code);
}

/** The impostor handed out its root key (a KBS resource) with status 200. */
async function releasedRootKey(sealer: SealerProcess): Promise<boolean> {
  await sealer.settle();
  return sealer.requestLines().some((line) => /^GET \/kbs\/v0\/resource\/\S+ 200$/.test(line));
}

/**
 * An impostor that relays GET /tee-kms/v1/attestation to the real service (so the function sees
 * genuine evidence and the real key) and sends everything else to its own sealer: TLS with the
 * shared certificate, as the real service.
 */
async function startRelay(attestationFrom: string, restTo: string): Promise<string> {
  const forward = (target: string, req: IncomingMessage, body: Buffer, res: ServerResponse) => {
    const url = new URL(target);
    const upstream = httpsRequest(
      {
        hostname: url.hostname,
        port: url.port,
        path: req.url,
        method: req.method,
        headers: { ...req.headers, host: url.host },
        ca: env.tls.certPem,
        agent: false,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    upstream.end(body);
  };
  const server = createServer({ cert: env.tls.certPem, key: await readFile(env.tls.keyFile) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => forward((req.url ?? '').startsWith('/tee-kms/v1/attestation') ? attestationFrom : restTo, req, Buffer.concat(chunks), res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  env.servers.push(server);
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-sealer-impostor-'));
  const now = Date.now();
  const pki = await createTestPki({ label: 'Impostor', notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) });
  const files = {
    functionsPolicy: join(dir, 'functions-tdx-policy.json'),
    sealerPolicy: join(dir, 'trusted-sealer-tdx-policy.json'),
    collateral: join(dir, 'tdx-collateral.json'),
    rootCa: join(dir, 'test-root-ca.pem'),
  };
  await writeFile(files.functionsPolicy, JSON.stringify(FUNCTIONS_POLICY));
  await writeFile(files.sealerPolicy, JSON.stringify(SEALER_POLICY));
  await writeFile(files.collateral, JSON.stringify(await buildCollateral(pki, { issueDate: new Date(now - DAY), nextUpdate: new Date(now + 30 * DAY) })));
  await writeFile(files.rootCa, pki.root.pem);
  const tls = writeTlsFiles(dir);
  env = { dir, pki, files, tls, real: undefined as unknown as SealerProcess, sealers: [], functions: [], providers: [], servers: [], impostorKeys: [] };
  env = { ...env, real: await startSealer(REAL_ROOT_KEY, SEALER_TD) };
});

afterAll(async () => {
  if (env === undefined) return;
  await Promise.all(env.functions.map((kms) => kms.stop('SIGKILL')));
  for (const server of env.servers) {
    server.closeAllConnections();
    server.close();
  }
  await Promise.all(env.sealers.map((sealer) => sealer.cleanup()));
  await Promise.all(env.providers.map((provider) => provider.close()));
  await rm(env.dir, { recursive: true, force: true });
});

describe('the setup, seen with the test’s own client', () => {
  it('the real service answers a TDX quote with MRCONFIGID S binding the nonce and its signing key', async () => {
    const client = new ProtocolClient({ url: env.real.url, ca: env.tls.certPem });
    const { tee, evidence, key, nonce, answer, publicKey } = await client.attestSealer();
    expect(tee).toBe('tdx');
    const fields = tdxQuoteFields(String(evidence.quote));
    expect(fields.mrConfigId).toBe(S);
    expect(fields.mrTd).toBe(DEFAULT_TD.mrTd);
    expect(fields.reportData).toEqual(bindingReportData(nonce, key));
    expect(await ProtocolClient.signatureProblem(answer, publicKey)).toBeUndefined();
  });
});

describe('a function that trusts the sealing service with MRCONFIGID S', () => {
  it('works against the real service: the primary key is wrapped under its root key', async () => {
    const { kms, dataDir } = await tdFunction(env.real.url);
    const answer = await createPrimaryKey(kms, 'alice');
    expect(answer.status, answer.body).toBe(201);
    expect(await wrappingIds(dataDir)).toEqual([REAL_ID]);
    const token = 'token=alice-token';
    expect((await kms.request(`/dataKey/dk?user=alice&${token}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
    expect((await kms.request(`/dataKey/dk?user=alice&${token}&primaryKeyName=pk`)).status).toBe(200);
  });

  it('serves no key through an impostor with the same TLS key and another MRCONFIGID', async () => {
    const impostor = await startImpostor({ report: { mrConfigId: OTHER_CONFIG_ID } });
    const metricsPort = await freePort();
    const { kms, dataDir } = await tdFunction(impostor.sealer.url, { KMS_METRICS_PORT: String(metricsPort) });
    expectUnavailable(await createPrimaryKey(kms, 'bob'));
    expectUnavailable(await createPrimaryKey(kms, 'bob', 'pk2')); // and not on a second try either
    await expectNothingUnder(dataDir, impostor);
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
    // Its operators see why: the sealing service's evidence was refused.
    const metrics = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(metrics.value('kms_attestation_failures_total', { reason: 'sealer_evidence' })).toBeGreaterThanOrEqual(1);
  });

  it('serves no key through an impostor with init-data S but another MRTD', async () => {
    const impostor = await startImpostor({ mrTd: OTHER_MRTD, report: { mrConfigId: S } });
    const { kms, dataDir } = await tdFunction(impostor.sealer.url);
    expectUnavailable(await createPrimaryKey(kms, 'carol'));
    await expectNothingUnder(dataDir, impostor);
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
  });

  it('serves no key through an impostor that proves itself with sample evidence', async () => {
    const impostor = await startImpostor('sample', { KMS_SEALER_INSECURE_DEV_MODE: 'true' });
    const metricsPort = await freePort();
    const { kms, dataDir } = await tdFunction(impostor.sealer.url, { KMS_METRICS_PORT: String(metricsPort) });
    expectUnavailable(await createPrimaryKey(kms, 'dave'));
    const metrics = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(metrics.value('kms_attestation_failures_total', { reason: 'sealer_tee' })).toBeGreaterThanOrEqual(1);
    await expectNothingUnder(dataDir, impostor);
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
  });

  it('serves no key through an impostor relaying the real service’s attestation (its answers are not signed by that key)', async () => {
    const impostor = await startImpostor({ report: { mrConfigId: OTHER_CONFIG_ID } });
    const relay = await startRelay(env.real.url, impostor.sealer.url);
    // The relay is what a client sees as genuine: the real evidence, bound to the client's nonce.
    const seen = await new ProtocolClient({ url: relay, ca: env.tls.certPem }).attestSealer();
    expect(tdxQuoteFields(String(seen.evidence.quote)).mrConfigId).toBe(S);
    const { kms, dataDir } = await tdFunction(relay);
    expectUnavailable(await createPrimaryKey(kms, 'erin'));
    await expectNothingUnder(dataDir, impostor);
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
  });

  it('stops using the service when an impostor takes over its address (after a restart the function attests again)', async () => {
    const real = await startSealer(REAL_ROOT_KEY, SEALER_TD);
    const { kms, dataDir } = await tdFunction(real.url, { KMS_ROOT_KEY_REFRESH_SECONDS: '1' });
    expect((await createPrimaryKey(kms, 'frank')).status).toBe(201);
    await real.stop('SIGKILL');
    const impostor = await startImpostor({ report: { mrConfigId: OTHER_CONFIG_ID } }, { KMS_SEALER_PORT: String(real.port) });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const answer = await createPrimaryKey(kms, 'frank', 'pk2');
    // Never under the impostor's key: either refused, or (from memory) under the real one.
    if (answer.status !== 201) expectUnavailable(answer);
    expect(new Set(await wrappingIds(dataDir))).toEqual(new Set([REAL_ID]));
    await expectNothingUnder(dataDir, impostor);
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
  });

  it('under NODE_ENV=production, refuses the test DCAP root CA, even for the real service: nothing is served or stored', async () => {
    const { kms, dataDir } = await tdFunction(env.real.url, { NODE_ENV: 'production' });
    const answer = await createPrimaryKey(kms, 'grace');
    expectUnavailable(answer, 'CONFIG');
    expect(answer.body).toContain('KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE');
    expect(await wrappingIds(dataDir)).toEqual([]);
  });

  it('under NODE_ENV=production without a TDX policy for the service, accepts no sealing service, sample or not', async () => {
    const impostor = await startImpostor('sample', { KMS_SEALER_INSECURE_DEV_MODE: 'true' });
    const none = { KMS_TRUSTED_SEALER_TDX_POLICY_FILE: '', KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: '', KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: '' };
    for (const url of [impostor.sealer.url, env.real.url]) {
      const { kms, dataDir } = await tdFunction(url, { NODE_ENV: 'production', ...none });
      const answer = await createPrimaryKey(kms, 'heidi');
      expect(answer.status, answer.body).toBeGreaterThanOrEqual(500);
      expect(await wrappingIds(dataDir)).toEqual([]);
      await expectNothingUnder(dataDir, impostor);
    }
    expect(await releasedRootKey(impostor.sealer)).toBe(false);
  });

  it('leaks no root key into any log', async () => {
    for (const sealer of env.sealers) await sealer.settle();
    const logs = [...env.sealers.map((sealer) => sealer.logs()), ...env.functions.map((kms) => kms.output())].join('\n');
    expect(findSecrets(logs, [REAL_ROOT_KEY, ...env.impostorKeys])).toEqual([]);
  });
});
