// Real sealing-service processes for tests: `node dist/sealer/main.js` with a temp data dir, a fixed
// free port (kept across restarts), its stdout/stderr captured for the secret scan.
export { freePort };
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { split } from 'shamir-secret-sharing';
import { logFields } from '../../shared/log.js';
import { SampleAttester, SampleVerifier } from '../../shared/attestation/sample.js';
import type { Attester } from '../../shared/attestation/types.js';
import { SealerClient } from '../../shared/sealer-client/client.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { freePort, NO_METRICS, repoRoot, TEST_ADMIN_IDENTITY } from './processes.js';

export interface SealerProcess {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly env: Record<string, string>;
  /** The TLS certificate (self-signed): what functions put in KMS_SEALER_CA_FILE. */
  caPem(): Promise<string>;
  /** Everything the process printed so far, stdout and stderr, across restarts. */
  logs(): string;
  stderr(): string;
  /** The JSON log lines printed so far (the sealer's and any other), parsed. */
  lines(): Record<string, unknown>[];
  /** The `message` of each sealer log line so far (startup, warnings, errors). */
  messages(): string[];
  /** Request lines printed so far: `METHOD /path STATUS`, from the JSON fields. */
  requestLines(): string[];
  /** Waits until the process has printed nothing new for a moment (log lines trail responses). */
  settle(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Sends `signal` to the running process and returns (SIGSTOP: it stops answering, its connections stay open). */
  signal(signal: NodeJS.Signals): void;
  restart(signal?: NodeJS.Signals): Promise<void>;
  client(options?: { attester?: Attester; timeoutMs?: number }): Promise<SealerClient>;
  cleanup(): Promise<void>;
}

const MAIN = join(repoRoot, 'dist/sealer/main.js');

export { TEST_ADMIN_IDENTITY };

/** A sample attester claiming the test admin identity. */
export function adminAttester(): SampleAttester {
  return new SampleAttester('1', TEST_ADMIN_IDENTITY);
}

/** Every log of every sealer started in this worker, for the final secret scan. */
export const allLogs: Array<() => string> = [];

export async function startSealerProcess(options: { env?: Record<string, string>; dataDir?: string; port?: number } = {}): Promise<SealerProcess> {
  // test/global-setup.ts builds dist/ once per run.
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: build with npx tsc -p tsconfig.json`);
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'tee-kms-sealer-')));
  const port = options.port ?? (await freePort());
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    KMS_SEALER_HOST: '127.0.0.1',
    KMS_SEALER_PORT: String(port),
    KMS_SEALER_DATA_DIR: dataDir,
    KMS_DATA_DIR: dataDir,
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
    ...NO_METRICS,
    ...options.env,
  };
  if (env.KMS_SEALER_ADMIN_POLICY_FILE === undefined) {
    const grant = [TEST_ADMIN_IDENTITY];
    env.KMS_SEALER_ADMIN_POLICY_FILE = join(dataDir, 'admin-policy.json');
    await writeFile(env.KMS_SEALER_ADMIN_POLICY_FILE, JSON.stringify({ rotate: grant, verify: grant, recover: grant, seal: grant }));
  }
  let log = '';
  let errLog = '';
  let child: ChildProcess | undefined;
  const clients: SealerClient[] = [];

  const spawnOnce = () =>
    new Promise<void>((resolve, reject) => {
      const proc = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      child = proc;
      let ready = false;
      const from = log.length; // the log spans restarts: only this process's lines say it listens
      const timer = setTimeout(() => reject(new Error(`sealer did not start in time:\n${log}`)), 20_000);
      proc.stdout!.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        if (!ready && parsedLines(log.slice(from)).some((line) => line.message === 'listening' && String(line.url).startsWith('https://'))) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      });
      proc.stderr!.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        errLog += chunk.toString();
      });
      proc.once('exit', (code, signal) => {
        log += `\n[exit ${code ?? signal}]\n`;
        if (!ready) {
          clearTimeout(timer);
          reject(new Error(`sealer exited (${code ?? signal}) before listening:\n${log}`));
        }
      });
    });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    const proc = child;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await exited;
  };

  await spawnOnce();
  allLogs.push(() => log);
  const url = `https://127.0.0.1:${port}`;
  const caFile = env.KMS_SEALER_TLS_CERT_FILE || join(dataDir, 'tls', 'cert.pem');
  return {
    url,
    port,
    dataDir,
    env,
    caPem: () => readFile(caFile, 'utf8'),
    logs: () => log,
    stderr: () => errLog,
    lines: () => parsedLines(log),
    messages: () => parsedLines(log).flatMap((line) => (line.component === 'sealer' && typeof line.message === 'string' ? [line.message] : [])),
    requestLines: () =>
      parsedLines(log).flatMap((line) =>
        line.component === 'sealer' && typeof line.method === 'string' ? [`${line.method} ${String(line.path)} ${String(line.status)}`] : [],
      ),
    settle: async () => {
      for (let seen = -1; seen !== log.length;) {
        seen = log.length;
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
    },
    stop,
    signal: (signal) => {
      child?.kill(signal);
    },
    restart: async (signal: NodeJS.Signals = 'SIGTERM') => {
      await stop(signal);
      await spawnOnce();
    },
    client: async (clientOptions = {}) => {
      const client = new SealerClient({
        url,
        ca: await readFile(caFile),
        attester: clientOptions.attester ?? adminAttester(),
        sealerVerifier: new SampleVerifier(),
        timeoutMs: clientOptions.timeoutMs ?? 10_000,
      });
      clients.push(client);
      return client;
    },
    cleanup: async () => {
      for (const client of clients) client.close();
      await stop('SIGKILL');
      if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function parsedLines(text: string): Record<string, unknown>[] {
  return text.split('\n').flatMap((line) => {
    const fields = logFields(line);
    return fields === undefined ? [] : [fields];
  });
}

/** An attester that counts how often it was asked for evidence. */
export class CountingAttester extends SampleAttester {
  calls = 0;

  override async getEvidence(reportData: Uint8Array) {
    this.calls++;
    return super.getEvidence(reportData);
  }
}

/** Splits a key like the functions' rotate: shares as {index: x coordinate, content: base64}. */
export async function makeShares(key: Uint8Array, n: number, t: number): Promise<Share[]> {
  const parts = await split(new Uint8Array(key), n, t);
  return parts.map((part) => ({ index: part[part.length - 1]!, content: Buffer.from(part).toString('base64') }));
}

/**
 * Secrets seen by a test (keys, shares, tokens): none may appear in any captured log, in base64,
 * base64url or hex.
 */
export class SecretRegistry {
  readonly #values = new Set<string>();

  /** A token or other secret text, looked for verbatim. */
  addText(value: string): void {
    this.#values.add(value);
  }

  /** A share as sent on the wire. */
  addShare(share: Share): void {
    this.add(Buffer.from(share.content, 'base64'));
  }

  add(value: Uint8Array): void {
    const bytes = Buffer.from(value);
    for (const form of [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex')]) {
      // A long prefix is enough to spot a leak and survives line wrapping or padding changes.
      this.#values.add(form.slice(0, Math.min(form.length, 24)));
    }
  }

  get size(): number {
    return this.#values.size;
  }

  /** The secrets found in `text` (an empty list when clean). */
  leaksIn(text: string): string[] {
    return [...this.#values].filter((value) => text.includes(value)).map((value) => `${value.slice(0, 6)}…`);
  }
}
