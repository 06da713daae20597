/**
 * `npm start`: the whole API on one port for development and evaluation. It runs the sealing
 * service beside the functions (a child process, insecure development mode with the "sample"
 * attester, its admin policy granting the functions' development identity every operation): in mode 2 (Shamir shares: rotate first, recover after a restart) unless a root key
 * secret is configured (KMS_ROOT_KEY or KMS_ROOT_KEY_FILE: mode 1). Storage: the embedded store
 * in KMS_DATA_DIR (default .kms), or S3 with KMS_STORE=s3.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadRoutes } from '../functions/catalog.js';
import { kmsOptions } from '../shared/config.js';
import { KmsError } from '../shared/errors.js';
import { startHost } from '../shared/http/host.js';
import { log, logFields } from '../shared/log.js';
import { loadOptions } from '../shared/options.js';

const dataDir = process.env.KMS_DATA_DIR || '.kms';
const sealerDataDir = process.env.KMS_SEALER_DATA_DIR || join(dataDir, 'sealer');
/**
 * The identity the functions claim with sample evidence, and which the sealing service's admin
 * policy grants every operation here: one process serves rotate, verify and recover. (Sample
 * evidence proves nothing, so in development anyone can claim it; in a TD the identity is the
 * pod's MRCONFIGID.)
 */
const DEVELOPMENT_IDENTITY = createHash('sha384').update('tee-kms/development/functions').digest('hex');

try {
  const sealer = await startSealer();
  const host = await startHost(loadRoutes);
  log.info('tee-kms listening', { url: host.url, certificate: host.certFile, dataDir, sealer: sealer.url, metrics: host.metricsUrl ?? 'off' });
  const stop = () => {
    sealer.child.kill('SIGTERM');
    void host.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  sealer.child.once('exit', (code) => {
    process.stderr.write(`tee-kms: the sealing service exited (${code}); stopping\n`);
    process.exit(1);
  });
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

/** Starts the sealing service and points the functions at it (URL, pinned certificate, attester). */
async function startSealer(): Promise<{ url: string; child: ChildProcess }> {
  const identity = process.env.KMS_SAMPLE_INIT_DATA || (await developmentIdentity());
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KMS_SEALER_DATA_DIR: sealerDataDir,
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
    KMS_SEALER_PORT: process.env.KMS_SEALER_PORT ?? '0',
    KMS_SEALER_STOP_WITH_PARENT: 'true',
  };
  // Mode 1: the configured secret goes to the sealing service only; the functions pull it over KBS.
  // Checked here first, so that a bad value is reported under the name the user set.
  loadOptions({ rootKey: kmsOptions.rootKey }, process.env);
  for (const name of ['KMS_ROOT_KEY', 'KMS_ROOT_KEY_FILE']) {
    const value = process.env[name];
    delete process.env[name];
    if (value !== undefined && value !== '') env[name.replace('KMS_', 'KMS_SEALER_')] = value;
  }
  if (env.KMS_SEALER_ADMIN_POLICY_FILE === undefined || env.KMS_SEALER_ADMIN_POLICY_FILE === '') {
    await mkdir(sealerDataDir, { recursive: true, mode: 0o700 });
    const file = join(sealerDataDir, 'admin-policy.json');
    const grant = [identity];
    await writeFile(file, `${JSON.stringify({ rotate: grant, verify: grant, recover: grant, seal: grant }, null, 2)}\n`);
    env.KMS_SEALER_ADMIN_POLICY_FILE = file;
  }
  const main = fileURLToPath(new URL('../sealer/main.js', import.meta.url));
  const child = spawn(process.execPath, [main], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      buffered += chunk.toString();
      for (let end = buffered.indexOf('\n'); end !== -1; end = buffered.indexOf('\n')) {
        const fields = logFields(buffered.slice(0, end));
        buffered = buffered.slice(end + 1);
        if (fields?.component === 'sealer' && fields.message === 'listening' && typeof fields.url === 'string') resolve(fields.url);
      }
    });
    child.once('exit', (code) => reject(new KmsError('CONFIG', `the sealing service did not start (exit ${code})`)));
  });
  process.env.KMS_SEALER_URL = url;
  process.env.KMS_SEALER_CA_FILE ??= join(sealerDataDir, 'tls', 'cert.pem');
  process.env.KMS_ATTESTER ??= 'sample';
  process.env.KMS_SAMPLE_INIT_DATA ||= identity;
  return { url, child };
}
