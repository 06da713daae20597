/**
 * `npm start`: the whole API on one port for development and evaluation. It runs the sealing
 * service beside the functions (a child process, insecure development mode with the "sample"
 * attester, its admin policy granting the functions' development identity every operation): in mode 2 (Shamir shares: rotate first, recover after a restart) unless a root key
 * secret is configured (KMS_ROOT_KEY or KMS_ROOT_KEY_FILE: mode 1). Storage: the embedded store
 * in KMS_DATA_DIR (default .kms), or S3 with KMS_STORE=s3. With KMS_SEALER_REPLICAS=n (default 1) it
 * runs n sealing-service replicas that unseal each other, and the functions get their URLs as the
 * KMS_SEALER_URL list (failover in the functions); a replica that dies after it started is started
 * again, and the functions keep serving meanwhile. A replica that fails at its first start stops npm
 * start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadRoutes } from '../functions/catalog.js';
import { kmsOptions, loadKmsConfig } from '../shared/config.js';
import { KmsError } from '../shared/errors.js';
import { ensureDataDir } from '../shared/fs/data-dir.js';
import { hostOptions, startHost } from '../shared/http/host.js';
import { log, logFields, passOn } from '../shared/log.js';
import { loadOptions } from '../shared/options.js';
import { sealerOptions } from '../sealer/options.js';
import { startOptions } from './start-options.js';

const dataDir = process.env.KMS_DATA_DIR || '.kms';
const sealerDataDir = process.env.KMS_SEALER_DATA_DIR || join(dataDir, 'sealer');
/**
 * The identity the functions claim with sample evidence, and which the sealing service's admin
 * policy grants every operation here: one process serves rotate, verify and recover. (Sample
 * evidence proves nothing, so in development anyone can claim it; in a TD the identity is the
 * pod's MRCONFIGID.)
 */
const DEVELOPMENT_IDENTITY = createHash('sha384').update('tee-kms/development/functions').digest('hex');
/** The identity the replicas' sample evidence claims, granted `sealer-peer` (and only that) here. */
const SEALER_DEVELOPMENT_IDENTITY = createHash('sha384').update('tee-kms/development/sealer').digest('hex');
/** A replica that exits is started again after this pause. */
const RESTART_DELAY_MS = 500;

try {
  const { sealerReplicas } = loadOptions(startOptions, process.env);
  // The host's and the functions' options too (KMS_ACCESS_LOG, KMS_S3_PREFIX among them), before
  // the sealing service starts: a bad value stops npm start at once, reported under its name.
  const { functionTarget } = loadOptions(hostOptions, process.env);
  const config = loadKmsConfig(process.env);
  // Read again at every rotate (it may be replaced); read here too, so that a file rotate could
  // not use stops the start rather than the first rotate.
  if (config.custodianKeysFile !== '' && (functionTarget === '' || functionTarget === 'rotateRootKey')) {
    const { readCustodianKeysFile } = await import('../shared/custody/share-jwe.js');
    await readCustodianKeysFile(config.custodianKeysFile, config.shares);
  }
  // The folders, before the sealing service writes into them: one that cannot be one is reported
  // under the variable that named it.
  await ensureDataDir(dataDir, 'KMS_DATA_DIR');
  await ensureDataDir(sealerDataDir, process.env.KMS_SEALER_DATA_DIR ? 'KMS_SEALER_DATA_DIR' : 'KMS_DATA_DIR');
  const sealer = await startSealers(sealerReplicas);
  const host = await startHost(loadRoutes);
  log.info('tee-kms listening', { url: host.url, certificate: host.certFile, dataDir, sealer: sealer.urls.join(','), metrics: host.metricsUrl ?? 'off' });
  const stop = () => {
    sealer.stop();
    void host.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (error) {
  process.stderr.write(`tee-kms: ${error instanceof KmsError ? error.message : String(error)}\n`);
  process.exit(1);
}

/** The development identity, or (KMS_INIT_DATA_FILE) the digest of the init-data sample evidence then claims. */
async function developmentIdentity(): Promise<string> {
  const file = process.env.KMS_INIT_DATA_FILE;
  if (file === undefined || file === '') return DEVELOPMENT_IDENTITY;
  const { loadInitDataFile } = await import('../shared/attestation/init-data.js');
  return (await loadInitDataFile(file)).digest;
}

/**
 * Starts the sealing service's replicas (the first alone, so that the others find its TLS
 * certificate and share it), restarts any that exits, and points the functions at them (URLs,
 * pinned certificate, attester). Each replica keeps its port across restarts, so the functions get
 * the replicas' own URLs and fail over themselves, attesting each replica on its own: no forwarder
 * is needed for one stable URL, and none stands in the path as a single point of failure.
 */
async function startSealers(replicas: number): Promise<{ urls: readonly string[]; stop(): void }> {
  const identity = process.env.KMS_SAMPLE_INIT_DATA || (await developmentIdentity());
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KMS_SEALER_DATA_DIR: sealerDataDir,
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
    // Empty is unset, as for every option.
    KMS_SEALER_PORT: process.env.KMS_SEALER_PORT || '0',
    KMS_SEALER_STOP_WITH_PARENT: 'true',
  };
  // Mode 1: the configured secret goes to the sealing service only; the functions pull it over KBS.
  // Checked here first, so that a bad value is reported under the name the user set.
  loadOptions({ rootKey: kmsOptions.rootKey }, process.env);
  const given = (names: readonly string[]) => names.find((name) => (process.env[name] ?? '') !== '');
  const functionsKey = given(['KMS_ROOT_KEY', 'KMS_ROOT_KEY_FILE']);
  const sealerKey = given(['KMS_SEALER_ROOT_KEY', 'KMS_SEALER_ROOT_KEY_FILE']);
  if (functionsKey !== undefined && sealerKey !== undefined) {
    // One would replace the other unseen: npm start hands KMS_ROOT_KEY to the sealing service as KMS_SEALER_ROOT_KEY.
    throw new KmsError('CONFIG', `${functionsKey} and ${sealerKey} are both set: npm start gives ${functionsKey} to its sealing service; set only one of them`);
  }
  for (const name of ['KMS_ROOT_KEY', 'KMS_ROOT_KEY_FILE']) {
    const value = process.env[name];
    delete process.env[name];
    if (value !== undefined && value !== '') env[name.replace('KMS_', 'KMS_SEALER_')] = value;
  }
  if (env.KMS_SEALER_ADMIN_POLICY_FILE === undefined || env.KMS_SEALER_ADMIN_POLICY_FILE === '') {
    const file = join(sealerDataDir, 'admin-policy.json');
    const grant = [identity];
    const policy = { rotate: grant, verify: grant, recover: grant, seal: grant, ...(replicas > 1 ? { 'sealer-peer': [SEALER_DEVELOPMENT_IDENTITY] } : {}) };
    await writeFile(file, `${JSON.stringify(policy, null, 2)}\n`);
    env.KMS_SEALER_ADMIN_POLICY_FILE = file;
  }
  const ports: string[] = [];
  if (replicas > 1) {
    const base = Number(env.KMS_SEALER_PORT);
    for (let i = 0; i < replicas; i++) ports.push(String(base === 0 ? await freePort() : base + i));
    env.KMS_SEALER_SAMPLE_INIT_DATA ||= SEALER_DEVELOPMENT_IDENTITY;
  } else {
    ports.push(env.KMS_SEALER_PORT!);
  }
  // Each replica's metrics on a port of its own, from KMS_SEALER_METRICS_PORT up (as KMS_SEALER_PORT).
  const { metricsPort } = loadOptions({ metricsPort: sealerOptions.metricsPort }, env);
  const metricsOf = (i: number) => (replicas > 1 && metricsPort !== undefined ? { KMS_SEALER_METRICS_PORT: String(metricsPort + i) } : {});
  const peersOf = (i: number) => ports.flatMap((port, j) => (j === i ? [] : [`https://127.0.0.1:${port}`])).join(',');
  const children: Array<ChildProcess | undefined> = [];
  let stopping = false;
  const stopAll = () => {
    stopping = true;
    for (const child of children) child?.kill('SIGTERM');
  };
  /**
   * Starts replica i and resolves with its URL once it started (HTTPS and metrics ports bound). One
   * that exits before that at its first start is not started again: what failed (a port taken, a bad
   * setting) would fail every restart alike while the functions served on without it, so the start
   * fails instead, after the replica's own message on stderr. One that exits after it ran is started
   * again.
   */
  const run = async (i: number, first: boolean): Promise<string> => {
    const replicaEnv = { ...env, KMS_SEALER_PORT: ports[i], ...metricsOf(i), ...(replicas > 1 ? { KMS_SEALER_PEERS: peersOf(i) } : {}) };
    const child = spawnSealer(replicaEnv);
    children[i] = child;
    let ran = false;
    const started = sealerStarted(child, replicas > 1 ? `sealing service replica ${i}` : 'the sealing service').then((url) => {
      ran = true;
      return url;
    });
    child.once('exit', (code, signal) => {
      if (stopping || (first && !ran)) return;
      process.stderr.write(`tee-kms: sealing service replica ${i} exited (${code ?? signal}); starting it again\n`);
      setTimeout(() => void run(i, false).catch(() => undefined), RESTART_DELAY_MS);
    });
    const url = await started;
    if (replicas === 1) ports[0] = new URL(url).port; // a restart keeps the port the first start chose
    return url;
  };
  const urls: string[] = [];
  try {
    for (let i = 0; i < replicas; i++) urls.push(await run(i, true));
  } catch (error) {
    stopAll(); // the replicas that did start
    throw error;
  }
  if (replicas > 1) log.info('sealing service replicas', { replicas, ports: ports.join(',') });
  process.env.KMS_SEALER_URL = urls.join(',');
  process.env.KMS_SEALER_CA_FILE ||= join(sealerDataDir, 'tls', 'cert.pem');
  process.env.KMS_ATTESTER ??= 'sample';
  process.env.KMS_SAMPLE_INIT_DATA ||= identity;
  return {
    urls,
    stop: stopAll,
  };
}

function spawnSealer(env: NodeJS.ProcessEnv): ChildProcess {
  const main = fileURLToPath(new URL('../sealer/main.js', import.meta.url));
  return spawn(process.execPath, [main], { env, stdio: ['pipe', 'pipe', 'inherit'] });
}

/**
 * The URL a sealer child prints once it started (sealer/main.ts's `started` line, after its HTTPS
 * and metrics ports are bound); its output is passed on, line by line. Rejects if it exits first.
 */
function sealerStarted(child: ChildProcess, name: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf('\n'); end !== -1; end = buffered.indexOf('\n')) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        passOn(line);
        const fields = logFields(line);
        if (fields?.component === 'sealer' && fields.message === 'started' && typeof fields.url === 'string') resolve(fields.url);
      }
    });
    child.stdout!.once('end', () => {
      if (buffered !== '') passOn(buffered); // a last line without its newline
    });
    child.once('exit', (code, signal) => reject(new KmsError('CONFIG', `${name} did not start (exit ${code ?? signal})`)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
