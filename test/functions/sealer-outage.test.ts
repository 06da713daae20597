/**
 * Functions ride out a sealing-service outage (docs/root-key.md, "Sealer outages"), with real
 * processes: sealing services (mode 1 from a secret, which comes back unsealed after a restart;
 * mode 2 from shares, which can be sealed), lean hosts pulling the root key from them with
 * KMS_ROOT_KEY_REFRESH_SECONDS=1, and attacker endpoints holding the sealing service's own TLS
 * certificate and key, listed before the real service.
 *
 * The waits below are lower bounds only (past a refresh, past a short grace period); each grace
 * period that must not end is ten minutes long.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleVerifier } from '../../shared/attestation/sample.js';
import { SealerClient } from '../../shared/sealer-client/client.js';
import { sealerPaths, sealerProblems, type Share } from '../../shared/sealer-client/protocol.js';
import { startLeanHost, type HttpAnswer, type ServerProcess } from '../support/processes.js';
import { rootKeyIdOf } from '../support/protocol-client.js';
import { startReplicas, unsealedOn, untilStatus } from '../support/replicas.js';
import { adminAttester, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { findSecrets, readFsObjects } from '../support/storage-snapshot.js';
import { writeTlsFiles } from '../support/tls-files.js';

const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const json = { accept: 'application/json' };
/** Nothing listens on port 1 (privileged; no test binds it): refused every time. */
const DOWN = 'https://127.0.0.1:1';
const MODE1_KEY = randomBytes(32);

let dir: string;
let tls: ReturnType<typeof writeTlsFiles>;
const functions: ServerProcess[] = [];
const sealers: SealerProcess[] = [];
const servers: Server[] = [];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A sealing service with the shared TLS certificate: mode 1 (`rootKey`) or mode 2 on the functions' storage (`dataDir`). */
async function startSealer(options: { rootKey: Buffer } | { dataDir: string }): Promise<SealerProcess> {
  const sealer = await startSealerProcess({
    env: {
      KMS_SEALER_TLS_CERT_FILE: tls.certFile,
      KMS_SEALER_TLS_KEY_FILE: tls.keyFile,
      ...('rootKey' in options ? { KMS_SEALER_ROOT_KEY: options.rootKey.toString('base64') } : { KMS_STORE: 'fs', KMS_DATA_DIR: options.dataDir }),
    },
  });
  sealers.push(sealer);
  return sealer;
}

/** A function (all routes) on the embedded store in `dataDir`, trusting the shared certificate. */
async function startFunction(dataDir: string, urls: readonly string[], extra: Record<string, string> = {}): Promise<ServerProcess> {
  const kms = await startLeanHost({
    KMS_STORE: 'fs',
    KMS_DATA_DIR: dataDir,
    KMS_SEALER_URL: urls.join(','),
    KMS_SEALER_CA_FILE: tls.certFile,
    KMS_ATTESTER: 'sample',
    KMS_ADMIN_TOKEN: ADMIN,
    KMS_ROOT_KEY_REFRESH_SECONDS: '1',
    ...extra,
  });
  functions.push(kms);
  return kms;
}

/**
 * An endpoint with the sealing service's TLS certificate and key that answers every request, unsigned:
 * `sealed` a 503 "sealed" problem (and a seal status saying sealed), `error` a 500; `relay` relays
 * the real service's attestation (so the endpoint proves itself as that service) and answers the
 * rest "sealed".
 */
async function startAttacker(mode: 'sealed' | 'error' | 'relay', real: string): Promise<{ url: string; requests: () => number }> {
  let requests = 0;
  const sealedStatus = { sealed: true, initialized: true, t: 3, n: 5, progress: 0, rootKeyId: null, verificationPending: false };
  const answer = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'application/problem+json' });
    res.end(JSON.stringify(body));
  };
  const server = createServer({ cert: tls.certPem, key: await readFile(tls.keyFile) }, (req: IncomingMessage, res: ServerResponse) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = req.url ?? '';
      if (mode === 'relay' && path.startsWith(sealerPaths.attestation)) return relay(real, req, Buffer.concat(chunks), res);
      if (mode === 'error') return answer(res, 500, { type: sealerProblems.internal, detail: 'internal error' });
      if (path.startsWith(sealerPaths.sealStatus)) return answer(res, 200, sealedStatus);
      return answer(res, 503, { type: sealerProblems.sealed, detail: 'the sealing service is sealed', sealStatus: sealedStatus });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  servers.push(server);
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests };
}

function relay(target: string, req: IncomingMessage, body: Buffer, res: ServerResponse): void {
  const url = new URL(target);
  const upstream = httpsRequest(
    { hostname: url.hostname, port: url.port, path: req.url, method: req.method, headers: { ...req.headers, host: url.host }, ca: tls.certPem, agent: false },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on('error', () => res.destroy());
  upstream.end(body);
}

/** Enrolls `user` (if new) and makes primary key `pk` with data key `dk`; resolves with the data key. */
async function populate(kms: ServerProcess, user: string): Promise<string> {
  expect([201, 409]).toContain((await kms.request(`/user/${user}?token=${user}-token`, { method: 'POST' })).status);
  const primary = await kms.request(`/primaryKey/pk?user=${user}&token=${user}-token`, { method: 'POST' });
  expect(primary.status, primary.body).toBe(201);
  expect((await kms.request(`/dataKey/dk?user=${user}&token=${user}-token&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
  return readDataKey(kms, user, 'dk');
}

async function readDataKey(kms: ServerProcess, user: string, name: string): Promise<string> {
  const answer = await kms.request(`/dataKey/${name}?user=${user}&token=${user}-token&primaryKeyName=pk`);
  expect(answer.status, answer.body).toBe(200);
  return answer.body;
}

function getDataKey(kms: ServerProcess, user: string, name = 'dk'): Promise<HttpAnswer> {
  return kms.request(`/dataKey/${name}?user=${user}&token=${user}-token&primaryKeyName=pk`, { headers: json });
}

/** A 503 with Retry-After and this error code. */
function expectRefused(answer: HttpAnswer, code: string): void {
  expect(answer.status, answer.body).toBe(503);
  expect(answer.headers['retry-after']).toBe('5');
  expect((JSON.parse(answer.body) as { error: { code: string } }).error.code).toBe(code);
}

/** The root key id a stored primary key is wrapped under. */
async function wrappingId(dataDir: string, user: string, name: string): Promise<string> {
  const stored = (await readFsObjects(dataDir)).get(`primary-keys/${user}/${name}.json`);
  expect(stored, `primary key ${user}/${name}`).toBeDefined();
  return (JSON.parse(stored!.toString()) as { rootKeyId: string }).rootKeyId;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-sealer-outage-'));
  tls = writeTlsFiles(dir);
});

afterAll(async () => {
  await Promise.all(functions.map((kms) => kms.stop('SIGKILL')));
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  await Promise.all(sealers.map((sealer) => sealer.cleanup()));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('a sealing service that stops (not sealed)', () => {
  let sealer: SealerProcess;
  let dataDir: string;

  beforeAll(async () => {
    sealer = await startSealer({ rootKey: MODE1_KEY });
    dataDir = await mkdtemp(join(dir, 'mode1-'));
  });

  it('within the grace period functions keep serving and creating keys; beyond it they answer 503 with Retry-After; back when it answers', async () => {
    const patient = await startFunction(dataDir, [sealer.url]); // KMS_ROOT_KEY_GRACE_SECONDS: 600, the default
    const short = await startFunction(dataDir, [sealer.url], { KMS_ROOT_KEY_GRACE_SECONDS: '2' });
    const value = await populate(patient, 'alice');
    expect(await readDataKey(short, 'alice', 'dk')).toBe(value); // the last release to `short`

    await sealer.stop('SIGKILL');
    await sleep(3_000); // past the refresh, and past `short`'s grace period

    expect(await readDataKey(patient, 'alice', 'dk')).toBe(value);
    expect((await patient.request('/dataKey/dk2?user=alice&token=alice-token&primaryKeyName=pk', { method: 'POST' })).status).toBe(201);
    expect(await readDataKey(patient, 'alice', 'dk2')).toBeTruthy();
    expect((await patient.request('/primaryKey/pk2?user=alice&token=alice-token', { method: 'POST' })).status).toBe(201);
    expect(await wrappingId(dataDir, 'alice', 'pk2')).toBe(rootKeyIdOf(MODE1_KEY));
    await patient.outputContaining('no sealing service released the root key');
    await patient.outputContaining('serving the root key released');

    expectRefused(await getDataKey(short, 'alice'), 'ROOT_KEY_UNAVAILABLE');
    await short.outputContaining('the root key was dropped: no sealing service released it for the grace period');

    await sealer.restart();
    expect(await readDataKey(short, 'alice', 'dk')).toBe(value);
    await sleep(1_100); // `patient` asks again (in grace, every refresh here) and leaves grace
    expect(await readDataKey(patient, 'alice', 'dk')).toBe(value);
    for (const kms of [patient, short]) expect(findSecrets(await kms.settledOutput(), [MODE1_KEY])).toEqual([]);
  });

  it('fails over: with the first URL down, every request succeeds through the second', async () => {
    const kms = await startFunction(dataDir, [DOWN, sealer.url]);
    const value = await populate(kms, 'bob');
    await sleep(1_100); // past the refresh: the root key is asked for again, the last good URL first
    expect(await readDataKey(kms, 'bob', 'dk')).toBe(value);
    expect(await wrappingId(dataDir, 'bob', 'pk')).toBe(rootKeyIdOf(MODE1_KEY));
    expect(kms.output()).not.toContain('no sealing service released the root key');
  });

  it('an attacker endpoint listed first cannot make functions drop the key: unsigned "sealed", errors, or a relayed attestation', async () => {
    const attackers = await Promise.all((['sealed', 'error', 'relay'] as const).map((mode) => startAttacker(mode, sealer.url)));
    // Alone, an attacker endpoint gives a cold function nothing, and its "sealed" is not believed.
    for (const attacker of attackers) {
      const cold = await startFunction(dataDir, [attacker.url]);
      expect((await cold.request('/user/carol?token=carol-token', { method: 'POST' })).status).toBeLessThan(500);
      const refused = await cold.request('/primaryKey/pk?user=carol&token=carol-token', { method: 'POST', headers: json });
      expectRefused(refused, 'ROOT_KEY_UNAVAILABLE');
      expect(attacker.requests()).toBeGreaterThan(0);
      await cold.stop();
    }
    // Listed before the real service: requests succeed through it.
    const warm = await Promise.all(attackers.map((attacker) => startFunction(dataDir, [attacker.url, sealer.url])));
    const values = await Promise.all(warm.map((kms, i) => populate(kms, `dave${i}`)));
    // The real service answered last, so it is asked first: the attackers are not asked again while it answers.
    const afterPopulate = attackers.map((attacker) => attacker.requests());
    await sleep(1_100);
    for (const [i, kms] of warm.entries()) expect(await readDataKey(kms, `dave${i}`, 'dk')).toBe(values[i]);
    expect(attackers.map((attacker) => attacker.requests())).toEqual(afterPopulate);
    // The real service stops: only the attackers answer, and the functions keep serving.
    await sealer.stop('SIGKILL');
    const before = attackers.map((attacker) => attacker.requests());
    await sleep(1_100);
    for (const [i, kms] of warm.entries()) {
      expect(await readDataKey(kms, `dave${i}`, 'dk')).toBe(values[i]);
      expect(kms.output()).not.toContain('dropped');
    }
    expect(attackers.map((attacker, i) => attacker.requests() > before[i]!)).toEqual([true, true, true]);
    await sealer.restart();
  });
});

describe('a sealing service that answers "sealed", and rotations (mode 2, shares)', () => {
  let sealer: SealerProcess;
  let dataDir: string;
  let admin: ServerProcess;
  let shares: Share[];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(dir, 'mode2-'));
    sealer = await startSealer({ dataDir });
    admin = await startFunction(dataDir, [sealer.url]);
    const rotated = await admin.request('/rootKey/rotate');
    expect(rotated.status, rotated.body).toBe(200);
    shares = JSON.parse(rotated.body) as Share[];
  });

  it('a rotation is picked up through failover, and older keys stay readable', async () => {
    const kms = await startFunction(dataDir, [DOWN, sealer.url]);
    const value = await populate(kms, 'erin');
    const before = await wrappingId(dataDir, 'erin', 'pk');
    const rotated = await admin.request('/rootKey/rotate', { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(rotated.status, rotated.body).toBe(200);
    shares = JSON.parse(rotated.body) as Share[];
    const verified = await admin.request('/rootKey/verify', {
      method: 'POST',
      body: JSON.stringify({ shares: shares.slice(0, 3) }),
      headers: { authorization: `Bearer ${ADMIN}`, ...json },
    });
    expect(verified.status, verified.body).toBe(200);
    const after = (JSON.parse(verified.body) as { rootKeyId: string }).rootKeyId;
    expect(after).not.toBe(before);
    expect((await kms.request('/primaryKey/pk2?user=erin&token=erin-token', { method: 'POST' })).status).toBe(201);
    expect(await wrappingId(dataDir, 'erin', 'pk2')).toBe(after);
    expect(await readDataKey(kms, 'erin', 'dk')).toBe(value);
  });

  it('functions refuse within one refresh once it is sealed, grace or not, and serve again once it is recovered', async () => {
    const kms = await startFunction(dataDir, [DOWN, sealer.url]); // KMS_ROOT_KEY_GRACE_SECONDS: 600
    const value = await populate(kms, 'frank');
    // An operator's seal, through the sealing service's admin API: an admin call moves past a URL it never reached.
    const client = new SealerClient({ url: [DOWN, sealer.url], ca: tls.certPem, attester: adminAttester(), sealerVerifier: new SampleVerifier() });
    try {
      expect(await client.seal()).toMatchObject({ sealed: true });
    } finally {
      client.close();
    }
    await sleep(1_100); // one refresh
    const refused = await getDataKey(kms, 'frank');
    expectRefused(refused, 'SEALED');
    await kms.outputContaining('the root key was dropped: the sealing service answered');
    expectRefused(await kms.request('/primaryKey/pk2?user=frank&token=frank-token', { method: 'POST', headers: json }), 'SEALED');
    for (const share of shares.slice(0, 3)) {
      const answer = await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share), headers: json });
      expect(answer.status, answer.body).toBe(200);
    }
    expect(await readDataKey(kms, 'frank', 'dk')).toBe(value);
  });
});

describe('a rolling restart: one replica sealed because it is starting, the other silent (mode 2, two replicas)', () => {
  it('functions ride it out in grace; a seal by an operator still drops the key at once', async () => {
    const dataDir = await mkdtemp(join(dir, 'replicas-'));
    const replicas = await startReplicas(dataDir, { KMS_STORE: 'fs', KMS_DATA_DIR: dataDir }, '5e'.repeat(48), 2);
    sealers.push(...replicas.sealers);
    const [healthy, restarted] = replicas.sealers as [SealerProcess, SealerProcess];
    const [healthyClient, restartedClient] = replicas.clients as [SealerClient, SealerClient];
    const kms = await startFunction(dataDir, [healthy.url, restarted.url], { KMS_SEALER_CA_FILE: replicas.caFile }); // grace: 600 s
    const initialized = await kms.request('/rootKey/rotate');
    expect(initialized.status, initialized.body).toBe(200);
    const id = (await healthyClient.sealStatus()).rootKeyId!;
    await untilStatus(restartedClient, unsealedOn(id), 'unsealed by its peer', () => restarted.logs());
    const value = await populate(kms, 'grace');

    // The healthy replica stops answering (its requests time out); the other restarts and cannot reach it.
    healthy.signal('SIGSTOP');
    try {
      await restarted.restart('SIGKILL');
      expect(await restartedClient.sealStatus()).toMatchObject({ sealed: true, initialized: true, rootKeyId: id, sealedReason: 'starting' });
      await sleep(1_100); // past the refresh
      expect(await readDataKey(kms, 'grace', 'dk')).toBe(value);
      await kms.outputContaining('serving the root key released');
      expect(kms.output()).not.toContain('dropped');
    } finally {
      healthy.signal('SIGCONT');
    }
    await untilStatus(restartedClient, unsealedOn(id), 'unsealed by its peer once it answers', () => restarted.logs());
    await sleep(1_100); // the next attempt reaches the healthy replica: the grace period is over
    expect(await readDataKey(kms, 'grace', 'dk')).toBe(value);
    await kms.outputContaining('the grace period is over');

    // An operator seals the replica that answers; the other one is silent: the key is dropped, grace or not.
    expect(await restartedClient.seal()).toMatchObject({ sealed: true, sealedReason: 'operator' });
    healthy.signal('SIGSTOP');
    try {
      await sleep(1_100);
      expectRefused(await getDataKey(kms, 'grace'), 'SEALED');
      await kms.outputContaining('the root key was dropped: the sealing service answered');
    } finally {
      healthy.signal('SIGCONT');
    }
  });
});
