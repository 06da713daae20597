// A real S3 server (single-node Ceph RGW on loopback) for tests, via scripts/s3-local.sh.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const SCRIPT = fileURLToPath(new URL('../../scripts/s3-local.sh', import.meta.url));

export interface S3Env {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface RunningRgw extends S3Env {
  stop(): Promise<void>;
}

function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

function toS3Env(vars: Record<string, string | undefined>, source: string): S3Env {
  const get = (name: string): string => {
    const v = vars[name];
    if (!v) throw new Error(`${source}: ${name} is missing`);
    return v;
  };
  return {
    endpoint: get('KMS_S3_ENDPOINT'),
    region: vars.KMS_S3_REGION || 'us-east-1',
    accessKeyId: get('KMS_S3_ACCESS_KEY_ID'),
    secretAccessKey: get('KMS_S3_SECRET_ACCESS_KEY'),
  };
}

async function runScript(command: 'start' | 'stop', dir: string, timeoutMs: number): Promise<void> {
  try {
    await execFileAsync('bash', [SCRIPT, command, dir], {
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024, // apt-get output on a fresh machine
    });
  } catch (err) {
    const e = err as { stderr?: string; message?: string; code?: unknown; signal?: unknown };
    const tail = (e.stderr ?? '').trimEnd().split('\n').slice(-60).join('\n');
    const why = e.signal ? `killed by ${String(e.signal)}` : `exit code ${String(e.code)}`;
    throw new Error(`scripts/s3-local.sh ${command} ${dir} failed (${why}):\n${tail}`, { cause: err });
  }
}

/**
 * Starts a fresh RGW instance in a new temporary directory (installs the Debian packages on
 * first use). Takes ~15-20 s when installed, ~50 s with the install. Call stop() when done.
 */
export async function startRgw(): Promise<RunningRgw> {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-rgw-'));
  try {
    await runScript('start', dir, 15 * 60_000);
    const env = toS3Env(parseEnvFile(await readFile(join(dir, 'env'), 'utf8')), `${dir}/env`);
    let stopped: Promise<void> | undefined;
    return {
      ...env,
      stop: () => (stopped ??= runScript('stop', dir, 60_000)),
    };
  } catch (err) {
    await runScript('stop', dir, 60_000).catch(() => rm(dir, { recursive: true, force: true }));
    throw err;
  }
}

/** The S3 settings from process.env KMS_S3_* when KMS_S3_ENDPOINT is set (server already running). */
export function s3EnvFromProcess(): S3Env | undefined {
  if (!process.env.KMS_S3_ENDPOINT) return undefined;
  return toS3Env(process.env, 'process.env');
}
