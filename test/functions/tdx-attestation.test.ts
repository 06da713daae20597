/**
 * End to end over real HTTP(S) with TDX attestation: function processes (lean host) whose TDX
 * attester (KMS_ATTESTER=tdx-aa) gets its quotes from a test quote provider imitating the CoCo
 * attestation agent, and a sealing service process in production mode (not insecure dev mode)
 * with a TDX reference-value policy, synthetic DCAP collateral and the synthetic test root CA.
 * The configfs-tsm path is covered against a fake tree in test/shared/attestation/tdx/.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { startFakePccs } from '../support/fake-pccs.js';
import { freshNonce, ProtocolClient } from '../support/protocol-client.js';
import { freePort, startLeanHost, type ServerProcess } from '../support/processes.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { findSecrets, readFsObjects } from '../support/storage-snapshot.js';
import { buildCollateral, createTestPki, DEFAULT_TD, DEFAULT_TD_POLICY, type TestPki } from '../support/tdx-quote-builder.js';
import { BOOT_EVENTS, rtmrsOf, writeCcel } from '../support/ccel-writer.js';
import { startTdxQuoteProvider, type TdProfile, type TdxQuoteProvider } from '../support/tdx-quote-provider.js';

const DAY = 86_400_000;
const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const ROOT_KEY = randomBytes(32);
const json = { accept: 'application/json' };
const WRONG_MRTD = '7e'.repeat(48);

/** The policy an operator would write for DEFAULT_TD (values as verify-quote prints them). */
const POLICY = DEFAULT_TD_POLICY;

interface Env {
  readonly dir: string;
  readonly pki: TestPki;
  /** sealerQuotes: the URL of the quote provider the sealing service proves itself with (a TD like the functions'). */
  readonly files: { policy: string; collateral: string; rootCa: string; sealerCa: string; sealerQuotes: string };
  readonly sealer: SealerProcess;
  readonly started: ServerProcess[];
  readonly providers: TdxQuoteProvider[];
}

let env: Env;

/** A TDX sealer: production mode, the policy, collateral from a file, the synthetic root trusted. */
async function startTdxSealer(dir: string, files: Env['files'], extra: Record<string, string> = {}): Promise<SealerProcess> {
  return startSealerProcess({
    env: {
      // Not NODE_ENV=production: that refuses the test PKI's root CA, on both sides.
      KMS_SEALER_ATTESTER: 'tdx-aa',
      KMS_SEALER_AA_URL: files.sealerQuotes,
      KMS_SEALER_INSECURE_DEV_MODE: 'false',
      KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'),
      KMS_SEALER_TDX_POLICY_FILE: files.policy,
      KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      ...extra,
    },
  });
}

/** Collateral valid around the wall clock (the sealer evaluates at its own clock). */
async function currentCollateral(pki: TestPki, shiftMs = 0): Promise<string> {
  const now = Date.now() + shiftMs;
  return JSON.stringify(await buildCollateral(pki, { issueDate: new Date(now - DAY), nextUpdate: new Date(now + 30 * DAY) }));
}

/** A function process (all routes) attesting with quotes from a provider for `profile`; `extra` added to its environment. */
async function tdFunction(
  sealer: SealerProcess,
  profile: TdProfile | 'sample',
  extra: Record<string, string> = {},
): Promise<{ kms: ServerProcess; dataDir: string; provider?: TdxQuoteProvider }> {
  const dataDir = await mkdtemp(join(env.dir, 'kms-'));
  const provider = profile === 'sample' ? undefined : await startTdxQuoteProvider(env.pki, profile);
  if (provider) env.providers.push(provider);
  const caFile = join(dataDir, 'sealer-ca.pem');
  await writeFile(caFile, await sealer.caPem());
  const kms = await startLeanHost({
    KMS_DATA_DIR: dataDir,
    KMS_STORE: 'fs',
    KMS_SEALER_URL: sealer.url,
    KMS_SEALER_CA_FILE: caFile,
    KMS_ADMIN_TOKEN: ADMIN,
    // The sealing service runs the same image here: the functions hold it to the same reference values.
    KMS_TRUSTED_SEALER_TDX_POLICY_FILE: env.files.policy,
    KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: env.files.collateral,
    KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: env.files.rootCa,
    ...(provider ? { KMS_ATTESTER: 'tdx-aa', KMS_AA_URL: provider.url } : { KMS_ATTESTER: 'sample' }),
    ...extra,
  });
  env.started.push(kms);
  return { kms, dataDir, ...(provider ? { provider } : {}) };
}

/** Enrolls a user (no root key needed), then asks for a primary key (needs it). */
async function createPrimaryKey(kms: ServerProcess, user: string, headers: Record<string, string> = json) {
  expect((await kms.request(`/user/${user}?token=${user}-token`, { method: 'POST' })).status).toBe(201);
  return kms.request(`/primaryKey/pk?user=${user}&token=${user}-token`, { method: 'POST', headers });
}

/** Waits until `predicate` holds for the process output (log lines trail responses). */
async function eventually(read: () => string, pattern: RegExp): Promise<void> {
  for (let i = 0; i < 50 && !pattern.test(read()); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(read()).toMatch(pattern);
}

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-tdx-e2e-'));
  const now = Date.now();
  const pki = await createTestPki({ label: 'E2E', notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) });
  const sealerQuotes = await startTdxQuoteProvider(pki, {});
  const files = {
    policy: join(dir, 'tdx-policy.json'),
    collateral: join(dir, 'tdx-collateral.json'),
    rootCa: join(dir, 'test-root-ca.pem'),
    sealerCa: join(dir, 'sealer-ca.pem'),
    sealerQuotes: sealerQuotes.url,
  };
  await writeFile(files.policy, JSON.stringify(POLICY, null, 2));
  await writeFile(files.collateral, await currentCollateral(pki));
  await writeFile(files.rootCa, pki.root.pem);
  const sealer = await startTdxSealer(dir, files);
  env = { dir, pki, files, sealer, started: [], providers: [sealerQuotes] };
});

afterAll(async () => {
  if (env === undefined) return;
  await Promise.all(env.started.map((kms) => kms.stop('SIGKILL')));
  await Promise.all(env.providers.map((provider) => provider.close()));
  await env.sealer.cleanup();
  await rm(env.dir, { recursive: true, force: true });
});

describe('TDX attestation end to end (tdx-aa attester → production sealer with a TDX policy)', () => {
  it('announces the TDX verifier and, loudly, the non-Intel root CA; sample is not accepted', () => {
    const messages = env.sealer.messages();
    expect(messages).toContain('verifiers: tdx');
    expect(messages.some((m) => m.startsWith(`TDX verifier: reference values from ${env.files.policy} (mrTd 1 allowed, rtmr0 1 allowed`))).toBe(true);
    expect(messages.some((m) => m.startsWith(`TDX verifier: collateral from file ${env.files.collateral}`))).toBe(true);
    const fingerprint = createHash('sha256').update(env.pki.root.cert.raw).digest('hex');
    expect(env.sealer.stderr()).toContain('TDX QUOTES ARE VERIFIED AGAINST A NON-INTEL ROOT CA');
    expect(env.sealer.stderr()).toContain(fingerprint);
    expect(env.sealer.stderr()).not.toContain('INSECURE DEVELOPMENT MODE');
  });

  it('releases the root key to a TD running the expected image, and the KMS serves keys', async () => {
    const { kms, dataDir, provider } = await tdFunction(env.sealer, {});
    expect((await createPrimaryKey(kms, 'alice')).status).toBe(201);
    const token = 'token=alice-token';
    expect((await kms.request(`/dataKey/dk?user=alice&${token}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
    const first = await kms.request(`/dataKey/dk?user=alice&${token}&primaryKeyName=pk`);
    expect(first.status, first.body).toBe(200);
    expect((await kms.request(`/dataKey/dk?user=alice&${token}&primaryKeyName=pk`)).body).toBe(first.body);

    // The key wrapping the primary key is the sealer's root key, released over the KBS protocol.
    const stored = await readFsObjects(dataDir);
    const primary = [...stored].filter(([key]) => key.startsWith('primary-keys/'));
    expect(primary).toHaveLength(1);
    expect((JSON.parse(primary[0]![1].toString()) as { rootKeyId: string }).rootKeyId).toBe(rootKeyId(ROOT_KEY));

    // The provider signed quotes over the KBS binding: SHA-384 of the runtime data, zero-padded.
    expect(provider!.signed.length).toBeGreaterThanOrEqual(1);
    for (const reportData of provider!.signed) {
      expect(reportData.slice(96)).toBe('0'.repeat(32));
      expect(reportData.slice(0, 96)).not.toBe('0'.repeat(96));
    }
    expect(provider!.requests.every((url) => /^\/aa\/evidence\?runtime_data=[A-Za-z0-9_-]{86}&encoding=base64$/.test(url))).toBe(true);
    await env.sealer.settle();
    const lines = env.sealer.requestLines();
    expect(lines.some((line) => line === 'POST /kbs/v0/attest 200')).toBe(true);
    expect(lines.some((line) => /^GET \/kbs\/v0\/resource\/\S+ 200$/.test(line))).toBe(true);
  });

  it('refuses a TD with another MRTD: the function answers 503 and its log names mr_td', async () => {
    const { kms, dataDir } = await tdFunction(env.sealer, { mrTd: WRONG_MRTD });
    const answer = await createPrimaryKey(kms, 'mallory');
    expect(answer.status, answer.body).toBe(503);
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
    expect(error.message).toContain(`refused this TEE's attestation`);
    expect(error.message).toContain(`attestation refused: mr_td: ${WRONG_MRTD} is not an allowed value`);
    // The plain-text answer says the same.
    const text = await kms.request('/primaryKey/pk2?user=mallory&token=mallory-token', { method: 'POST' });
    expect(text.status).toBe(503);
    expect(text.body).toContain('attestation refused: mr_td: ');
    await eventually(kms.output, /"level":"warn".*"code":"ROOT_KEY_UNAVAILABLE".*attestation refused: mr_td: /);
    // Nothing was wrapped: no primary key exists.
    expect([...(await readFsObjects(dataDir)).keys()].filter((key) => key.startsWith('primary-keys/'))).toEqual([]);
    await env.sealer.settle();
    expect(env.sealer.requestLines().some((line) => line === 'POST /kbs/v0/attest 401')).toBe(true);
  });

  it('answers 503 ATTESTATION_UNAVAILABLE while its attestation agent is down, and serves keys once it is back', async () => {
    // An agent that was there and went away (restarting, say): its port is closed. The port is
    // taken below the ephemeral range, so that no other listener gets it meanwhile.
    const port = await freePort();
    const gone = await startTdxQuoteProvider(env.pki, {}, { port });
    await gone.close();
    const { kms, dataDir } = await tdFunction(env.sealer, {}, { KMS_AA_URL: gone.url });
    // With two replicas listed, the same: no replica was asked, so none is blamed.
    const twoReplicas = await tdFunction(
      env.sealer,
      {},
      {
        KMS_AA_URL: gone.url,
        KMS_SEALER_URL: `${env.sealer.url},${env.sealer.url.replace('127.0.0.1', 'localhost')}`,
      },
    );
    const fromTwo = await createPrimaryKey(twoReplicas.kms, 'patient2');
    expect(fromTwo.status, fromTwo.body).toBe(503);
    expect((JSON.parse(fromTwo.body) as { error: unknown }).error).toEqual({
      code: 'ATTESTATION_UNAVAILABLE',
      message: `the attestation agent at ${gone.url} cannot be reached`,
    });

    const answer = await createPrimaryKey(kms, 'patient');
    expect(answer.status, answer.body).toBe(503);
    expect(answer.headers['retry-after']).toBe('5');
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    expect(error).toEqual({ code: 'ATTESTATION_UNAVAILABLE', message: `the attestation agent at ${gone.url} cannot be reached` });
    const nonce = randomBytes(32).toString('base64url');
    const attestation = await kms.request(`/attestation?nonce=${nonce}`, { headers: json });
    expect(attestation.status, attestation.body).toBe(503);
    expect((JSON.parse(attestation.body) as { error: { code: string } }).error.code).toBe('ATTESTATION_UNAVAILABLE');
    expect([...(await readFsObjects(dataDir)).keys()].filter((key) => key.startsWith('primary-keys/'))).toEqual([]);

    // The agent is back where it was: the same process attests, and the retried request succeeds.
    env.providers.push(await startTdxQuoteProvider(env.pki, {}, { port }));
    const retried = await kms.request('/primaryKey/pk?user=patient&token=patient-token', { method: 'POST', headers: json });
    expect(retried.status, retried.body).toBe(201);
    expect((await kms.request(`/attestation?nonce=${nonce}`, { headers: json })).status).toBe(200);
  });

  it("answers 503 while the sealing service's own attestation agent is down, and works once it is back", async () => {
    const port = await freePort();
    const agent = await startTdxQuoteProvider(env.pki, {}, { port });
    // The functions may fetch the recovery key (their identity is the TD's MRCONFIGID).
    const adminPolicy = join(env.dir, 'admin-policy-recover.json');
    await writeFile(adminPolicy, JSON.stringify({ recover: [DEFAULT_TD.mrConfigId] }));
    const sealer = await startTdxSealer(env.dir, env.files, { KMS_SEALER_AA_URL: agent.url, KMS_SEALER_ADMIN_POLICY_FILE: adminPolicy });
    try {
      const { kms } = await tdFunction(sealer, {});
      expect((await createPrimaryKey(kms, 'before')).status).toBe(201);
      await agent.close();

      const direct = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem() });
      const answer = await direct.send('GET', `/tee-kms/v1/attestation?nonce=${freshNonce(32)}`);
      expect(answer.status, answer.text).toBe(503);
      expect(answer.headers['retry-after']).toBe('5');
      expect(answer.problemType).toBe('urn:tee-kms:sealer:attestation-unavailable');
      expect(answer.json()['detail']).toBe(`attestation is unavailable just now: the attestation agent at ${agent.url} cannot be reached`);
      await eventually(() => sealer.messages().join('\n'), /attestation is unavailable just now: the attestation agent at \S+ cannot be reached/);
      expect(sealer.stderr()).not.toContain('internal error');

      // Through a function that attested the service before: its signed 503 is read and named.
      const recovery = await kms.request(`/rootKey/recover?nonce=${freshNonce(32)}`, { headers: json });
      expect(recovery.status, recovery.body).toBe(503);
      expect(recovery.headers['retry-after']).toBe('5');
      expect((JSON.parse(recovery.body) as { error: unknown }).error).toEqual({
        code: 'ROOT_KEY_UNAVAILABLE',
        message: `the sealing service at ${sealer.url} cannot get attestation evidence or collateral just now`,
      });

      env.providers.push(await startTdxQuoteProvider(env.pki, {}, { port }));
      expect((await direct.send('GET', `/tee-kms/v1/attestation?nonce=${freshNonce(32)}`)).status).toBe(200);
      expect((await kms.request(`/rootKey/recover?nonce=${freshNonce(32)}`, { headers: json })).status).toBe(200);
    } finally {
      await sealer.cleanup();
    }
  });

  it('makes at most 2 quotes at once for callers without credentials, queues 16 and answers the rest 503 BUSY at once', async () => {
    const { kms, provider } = await tdFunction(env.sealer, {});
    // The root key first: the function's own attestation uses the same agent.
    expect((await createPrimaryKey(kms, 'flooded')).status).toBe(201);

    // The quote generation service is slow: every quote waits until the test releases it.
    provider!.hold();
    const answers: { status: number; body: string; retryAfter: unknown }[] = [];
    const flood = Array.from({ length: 2 + 16 + 4 }, () =>
      kms.request(`/attestation?nonce=${freshNonce(32)}`, { headers: json }).then((answer) => {
        answers.push({ status: answer.status, body: answer.body, retryAfter: answer.headers['retry-after'] });
        return answer;
      }),
    );
    for (let i = 0; i < 100 && (answers.length < 4 || provider!.inFlight() < 2); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(answers).toHaveLength(4);
    for (const busy of answers) {
      expect(busy.status).toBe(503);
      expect(busy.retryAfter).toBe('5');
      expect(JSON.parse(busy.body)).toEqual({ error: { code: 'BUSY', message: 'too many attestation requests in progress; retry shortly' } });
    }
    expect(provider!.inFlight()).toBe(2);

    provider!.release();
    const statuses = (await Promise.all(flood)).map((answer) => answer.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(18);
    expect(statuses.filter((status) => status === 503)).toHaveLength(4);
    expect(provider!.maxInFlight()).toBe(2);
  });

  it('makes no quote for a caller that left while it waited: its turn passes at once', async () => {
    const { kms, dataDir, provider } = await tdFunction(env.sealer, {});
    expect((await createPrimaryKey(kms, 'leaver')).status).toBe(201);
    const ca = await readFile(join(dataDir, 'tls', 'cert.pem'), 'utf8');
    provider!.hold();
    const quotesBefore = provider!.signed.length;
    const held = [
      kms.request(`/attestation?nonce=${freshNonce(32)}`, { headers: json }),
      kms.request(`/attestation?nonce=${freshNonce(32)}`, { headers: json }),
    ];
    for (let i = 0; i < 100 && provider!.inFlight() < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(provider!.inFlight()).toBe(2);

    // 20 callers on connections of their own: 16 wait, 4 are answered BUSY at once.
    const busy: number[] = [];
    const callers = Array.from({ length: 20 }, () => {
      const call = httpsRequest(`${kms.url}/attestation?nonce=${freshNonce(32)}`, { ca, agent: false }, (res) => {
        busy.push(res.statusCode ?? 0);
        res.resume();
      });
      call.on('error', () => undefined);
      call.end();
      return call;
    });
    for (let i = 0; i < 100 && busy.length < 4; i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(busy).toEqual([503, 503, 503, 503]);
    // The 16 that wait leave. The queue keeps their places until their turns: a newcomer is still BUSY.
    for (const call of callers) call.destroy();
    const newcomer = await kms.request(`/attestation?nonce=${freshNonce(32)}`, { headers: json });
    expect(newcomer.status).toBe(503);

    provider!.release();
    expect((await Promise.all(held)).map((answer) => answer.status)).toEqual([200, 200]);
    // The 16 turns pass without a quote: the next caller is served, and only it and the two that
    // stayed got one (before, each of the 16 got a quote too).
    expect((await kms.request(`/attestation?nonce=${freshNonce(32)}`, { headers: json })).status).toBe(200);
    expect(provider!.signed.length - quotesBefore).toBe(3);
  });

  it("bounds GET /rootKey/recover the same way: the sealing service's quotes, 2 at once and 16 waiting", async () => {
    const agent = await startTdxQuoteProvider(env.pki, {});
    env.providers.push(agent);
    const adminPolicy = join(env.dir, 'admin-policy-recover-flood.json');
    await writeFile(adminPolicy, JSON.stringify({ recover: [DEFAULT_TD.mrConfigId] }));
    const sealer = await startTdxSealer(env.dir, env.files, { KMS_SEALER_AA_URL: agent.url, KMS_SEALER_ADMIN_POLICY_FILE: adminPolicy });
    try {
      const { kms } = await tdFunction(sealer, {});
      expect((await kms.request(`/rootKey/recover?nonce=${freshNonce(32)}`, { headers: json })).status).toBe(200);
      agent.hold();
      const early: number[] = [];
      const flood = Array.from({ length: 2 + 16 + 3 }, () =>
        kms.request(`/rootKey/recover?nonce=${freshNonce(32)}`, { headers: json }).then((answer) => {
          early.push(answer.status);
          return answer;
        }),
      );
      // Released only once the 3 beyond the queue were answered (at once: the quotes are held).
      for (let i = 0; i < 100 && (early.length < 3 || agent.inFlight() < 2); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(early).toEqual([503, 503, 503]);
      expect(agent.inFlight()).toBe(2);
      agent.release();
      const answers = await Promise.all(flood);
      expect(answers.filter((answer) => answer.status === 200)).toHaveLength(18);
      const busy = answers.filter((answer) => answer.status === 503);
      expect(busy).toHaveLength(3);
      for (const answer of busy) expect((JSON.parse(answer.body) as { error: { code: string } }).error.code).toBe('BUSY');
      expect(agent.maxInFlight()).toBe(2);
    } finally {
      await sealer.cleanup();
    }
  });

  it('refuses a TD whose event log does not produce its RTMRs, naming event_log and the register', async () => {
    // The quote carries the approved RTMRs; the log claims a boot that would give other values.
    const { kms } = await tdFunction(env.sealer, { ccel: writeCcel(BOOT_EVENTS) });
    const answer = await createPrimaryKey(kms, 'forger');
    expect(answer.status, answer.body).toBe(503);
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
    expect(error.message).toContain(
      `attestation refused: event_log: rtmr0: the event log replays to ${rtmrsOf(BOOT_EVENTS)[0]}, the quote has ${DEFAULT_TD.rtmr[0]}`,
    );
    await env.sealer.settle();
    expect(env.sealer.requestLines().some((line) => line === 'POST /kbs/v0/attest 401')).toBe(true);
    // A malformed log is a refusal too (4xx), never a server error.
    const garbage = await tdFunction(env.sealer, { ccel: Buffer.from('synthetic CCEL') });
    const refused = await createPrimaryKey(garbage.kms, 'garbage');
    expect(refused.status, refused.body).toBe(503);
    expect(refused.body).toContain('attestation refused: event_log: malformed event log: ');
    await env.sealer.settle();
    expect(env.sealer.requestLines().some((line) => line.startsWith('POST /kbs/v0/attest 5'))).toBe(false);
  });

  it('refuses a debuggable TD, naming debug', async () => {
    const { kms } = await tdFunction(env.sealer, { debug: true });
    const answer = await createPrimaryKey(kms, 'debugger');
    expect(answer.status, answer.body).toBe(503);
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
    expect(error.message).toContain('attestation refused: debug: the TD is debuggable (TDATTRIBUTES.DEBUG is set)');
    await eventually(kms.output, /"code":"ROOT_KEY_UNAVAILABLE".*attestation refused: debug: /);
  });

  it('refuses sample evidence: the sealer is not in insecure development mode', async () => {
    const { kms } = await tdFunction(env.sealer, 'sample');
    const answer = await createPrimaryKey(kms, 'sampler');
    expect(answer.status, answer.body).toBe(503);
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
    expect(error.message).toContain('sample evidence proves nothing');
    await env.sealer.settle();
    expect(env.sealer.requestLines().some((line) => line === 'POST /kbs/v0/auth 401')).toBe(true);
  });

  it('picks up collateral refreshed in place without a restart (the root key stays in memory)', async () => {
    const dir = await mkdtemp(join(env.dir, 'refresh-'));
    const files = { ...env.files, collateral: join(dir, 'tdx-collateral.json') };
    // Collateral that expired ten days ago: the sealer starts, warns, and refuses every TD.
    await writeFile(files.collateral, await currentCollateral(env.pki, -40 * DAY));
    const sealer = await startTdxSealer(dir, files);
    try {
      expect(sealer.stderr()).toMatch(/"level":"warn","component":"sealer","message":"the TDX collateral in .* expired at /);
      const { kms } = await tdFunction(sealer, {});
      const stale = await createPrimaryKey(kms, 'carol');
      expect(stale.status, stale.body).toBe(503);
      expect(stale.body).toMatch(/attestation refused: (collateral|crl): /);

      await writeFile(files.collateral, await currentCollateral(env.pki));
      const fresh = await kms.request('/primaryKey/pk?user=carol&token=carol-token', { method: 'POST' });
      expect(fresh.status, fresh.body).toBe(201);
      expect(sealer.messages().some((m) => m.startsWith(`TDX collateral reloaded from ${files.collateral}`))).toBe(true);
    } finally {
      await sealer.cleanup();
    }
  });

  it("an https PCCS vouched for only by NODE_EXTRA_CA_CERTS (the internal CA, the administrator's): never asked, every TD refused", async () => {
    const pccs = await startFakePccs(JSON.parse(await currentCollateral(env.pki)) as Parameters<typeof startFakePccs>[0], { https: true });
    const dir = await mkdtemp(join(env.dir, 'pccs-extra-ca-'));
    const extraCa = join(dir, 'extra-ca.pem');
    await writeFile(extraCa, pccs.tlsCa!);
    const sealer = await startTdxSealer(dir, env.files, { KMS_SEALER_TDX_COLLATERAL_FILE: '', KMS_SEALER_PCCS_URL: pccs.url, NODE_EXTRA_CA_CERTS: extraCa });
    try {
      expect(
        sealer
          .messages()
          .some((m) =>
            m.startsWith(
              `TDX verifier: collateral from ${pccs.url} (cached per platform; its TLS certificate checked against Node's bundled root certificates)`,
            ),
          ),
      ).toBe(true);
      const { kms } = await tdFunction(sealer, {});
      const refused = await createPrimaryKey(kms, 'gina');
      expect(refused.status, refused.body).toBe(503);
      expect(pccs.requests).toEqual([]);
    } finally {
      await sealer.cleanup();
      await pccs.close();
    }
  });

  it('with collateral from an https PCCS (KMS_SEALER_PCCS_URL, its CA in KMS_SEALER_PCCS_CA): fetched once per platform, then cached', async () => {
    const pccs = await startFakePccs(JSON.parse(await currentCollateral(env.pki)) as Parameters<typeof startFakePccs>[0], { https: true });
    const dir = await mkdtemp(join(env.dir, 'pccs-'));
    // A private PCCS's CA, inline (so that an agent policy can pin it).
    const sealer = await startTdxSealer(dir, env.files, { KMS_SEALER_TDX_COLLATERAL_FILE: '', KMS_SEALER_PCCS_URL: pccs.url, KMS_SEALER_PCCS_CA: pccs.tlsCa! });
    try {
      expect(
        sealer
          .messages()
          .some((m) => m.startsWith(`TDX verifier: collateral from ${pccs.url} (cached per platform; its TLS certificate checked against KMS_SEALER_PCCS_CA)`)),
      ).toBe(true);
      const first = await tdFunction(sealer, {});
      expect((await createPrimaryKey(first.kms, 'dave')).status).toBe(201);
      const fetched = pccs.requests.length;
      expect(fetched).toBeGreaterThanOrEqual(3);
      expect(pccs.requests.some((url) => url.startsWith(`/tdx/certification/v4/tcb?fmspc=${env.pki.fmspc}`))).toBe(true);
      const second = await tdFunction(sealer, {});
      expect((await createPrimaryKey(second.kms, 'erin')).status).toBe(201);
      expect(pccs.requests.length).toBe(fetched);
      // The policy applies whatever the collateral source.
      const wrong = await tdFunction(sealer, { mrTd: WRONG_MRTD });
      const refused = await createPrimaryKey(wrong.kms, 'frank');
      expect(refused.status).toBe(503);
      expect(refused.body).toContain('attestation refused: mr_td: ');
    } finally {
      await sealer.cleanup();
      await pccs.close();
    }
  });

  it('a PCCS that is down refuses no TD: the sealing service answers the attestation 503, signed (to a function, an outage, not a refusal)', async () => {
    const pccs = await startFakePccs(JSON.parse(await currentCollateral(env.pki)) as Parameters<typeof startFakePccs>[0], { https: true });
    const dir = await mkdtemp(join(env.dir, 'pccs-down-'));
    const sealer = await startTdxSealer(dir, env.files, { KMS_SEALER_TDX_COLLATERAL_FILE: '', KMS_SEALER_PCCS_URL: pccs.url, KMS_SEALER_PCCS_CA: pccs.tlsCa! });
    try {
      await pccs.close();
      const { kms } = await tdFunction(sealer, {});
      const answer = await createPrimaryKey(kms, 'grace');
      expect(answer.status, answer.body).toBe(503);
      expect((JSON.parse(answer.body) as { error: unknown }).error).toEqual({
        code: 'ROOT_KEY_UNAVAILABLE',
        message: `the sealing service at ${sealer.url} cannot get attestation evidence or collateral just now`,
      });
      await sealer.settle();
      // A 503 (retried, and a signed 5xx is an outage to a function holding a key), not Trustee's 401.
      expect(sealer.requestLines()).toContain('POST /kbs/v0/attest 503');
      expect(sealer.requestLines()).not.toContain('POST /kbs/v0/attest 401');
      await eventually(() => sealer.messages().join('\n'), /attestation is unavailable just now: TDX collateral for \S+ could not be fetched from /);
      expect(sealer.messages().some((m) => m.startsWith('attestation refused'))).toBe(false);
    } finally {
      await sealer.cleanup();
    }
  });

  it("functions fetch collateral for the sealer's quotes from KMS_TRUSTED_SEALER_PCCS_URL trusting KMS_TRUSTED_SEALER_PCCS_CA, never NODE_EXTRA_CA_CERTS", async () => {
    const pccs = await startFakePccs(JSON.parse(await currentCollateral(env.pki)) as Parameters<typeof startFakePccs>[0], { https: true });
    const dir = await mkdtemp(join(env.dir, 'trusted-pccs-'));
    const extraCa = join(dir, 'extra-ca.pem');
    await writeFile(extraCa, pccs.tlsCa!);
    const fromPccs = { KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: '', KMS_TRUSTED_SEALER_PCCS_URL: pccs.url };
    try {
      // The administrator's CA (the internal one) vouches for a PCCS of theirs: the function asks it nothing, and trusts no sealer.
      const extra = await tdFunction(env.sealer, {}, { ...fromPccs, NODE_EXTRA_CA_CERTS: extraCa });
      const refused = await createPrimaryKey(extra.kms, 'hana');
      expect(refused.status, refused.body).toBe(503);
      expect(pccs.requests).toEqual([]);
      const pinned = await tdFunction(env.sealer, {}, { ...fromPccs, KMS_TRUSTED_SEALER_PCCS_CA: pccs.tlsCa! });
      expect((await createPrimaryKey(pinned.kms, 'ines')).status).toBe(201);
      expect(pccs.requests.some((url) => url.startsWith(`/tdx/certification/v4/tcb?fmspc=${env.pki.fmspc}`))).toBe(true);
    } finally {
      await pccs.close();
    }
  });

  it('leaks the root key into no log', async () => {
    await env.sealer.settle();
    const logs = [env.sealer.logs(), ...env.started.map((kms) => kms.output())].join('\n');
    expect(findSecrets(logs, [ROOT_KEY])).toEqual([]);
  });
});
