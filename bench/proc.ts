/**
 * Child processes for the bench: servers under test, load generators and the sealer, each its own
 * process. Only processes started here are ever signalled, and only by their own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** When spawn() was called (performance.now() ms). */
  readonly startedAt: number;
  /** The last lines of stdout and stderr, for diagnostics. */
  tail(): string;
  /** Resolves with the first stdout/stderr line matching `pattern` (rejects on exit or timeout). */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  exited(): boolean;
  stop(): Promise<void>;
}

export function startProc(name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd: string): Proc {
  const startedAt = performance.now();
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`${name}: cannot spawn ${command}`);
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  let exitCode: number | null | undefined;
  const feed = (stream: NodeJS.ReadableStream) => {
    let partial = '';
    stream.setEncoding('utf8');
    // The server's stdout is a pipe, as in a container: it is drained here (the log collector's part).
    stream.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        if (waiters.length > 0) {
          for (const w of [...waiters]) {
            const m = line.match(w.pattern);
            if (m !== null) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(m);
            }
          }
        }
        // Keep a short tail only; access-log lines are many.
        if (lines.length >= 40) lines.shift();
        lines.push(line.length > 400 ? `${line.slice(0, 400)}…` : line);
      }
    });
  };
  feed(child.stdout!);
  feed(child.stderr!);
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal === null ? null : -1);
      resolve();
    });
  });
  return {
    name,
    child,
    pid: child.pid,
    startedAt,
    tail: () => lines.join('\n'),
    exited: () => exitCode !== undefined,
    waitForLine(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no line matching ${pattern} within ${timeoutMs} ms\n${lines.join('\n')}`)), timeoutMs);
        const waiter = {
          pattern,
          resolve: (m: RegExpMatchArray) => {
            clearTimeout(timer);
            resolve(m);
          },
        };
        waiters.push(waiter);
        void exit.then(() => {
          if (waiters.includes(waiter)) {
            clearTimeout(timer);
            reject(new Error(`${name}: exited before printing ${pattern}\n${lines.join('\n')}`));
          }
        });
      });
    },
    async stop() {
      if (exitCode !== undefined) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => {
        if (exitCode === undefined) child.kill('SIGKILL');
      }, 5_000);
      await exit;
      clearTimeout(killer);
    },
  };
}

/** Resident set size of a process, in MB (from /proc; undefined when gone). */
export function rssMb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Math.round((Number(m[1]) / 1024) * 10) / 10;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in ms (from /proc; undefined when gone). */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/** Samples RSS every `everyMs` until stopped; returns the largest value seen. */
export function sampleRss(pid: number, everyMs = 200): { stop(): number | undefined } {
  let max: number | undefined;
  const take = () => {
    const v = rssMb(pid);
    if (v !== undefined && (max === undefined || v > max)) max = v;
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return max;
    },
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

export interface Answer {
  readonly status: number;
  readonly body: string;
}

/** One request on a fresh connection (no pooling); self-signed certificates are accepted. */
export function fetchOnce(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<Answer> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      { method: options.method ?? 'GET', headers: options.headers, agent: false, rejectUnauthorized: false, timeout: options.timeoutMs ?? 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout: ${options.method ?? 'GET'} ${u.pathname}`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The environment of `node dist/sealer/main.js` in insecure development mode, holding `rootKey`. */
export function devSealerEnv(baseEnv: NodeJS.ProcessEnv, dataDir: string, rootKey: Buffer): NodeJS.ProcessEnv {
  return {
    ...baseEnv,
    KMS_SEALER_HOST: '127.0.0.1',
    KMS_SEALER_PORT: '0',
    KMS_SEALER_DATA_DIR: dataDir,
    KMS_SEALER_ROOT_KEY: rootKey.toString('base64'),
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
  };
}

/**
 * Once the dev sealer listens: what a function needs to pull the root key from it (sample attester).
 * NODE_EXTRA_CA_CERTS names the sealer's CA as well, as the Knative manifests do (MinIO's certificate
 * comes from the same internal CA): Node then builds its root certificate store at start-up, where
 * a function pays for it in production, instead of at its first connection to the sealer.
 */
export async function sealerFunctionEnv(sealer: Proc, timeoutMs = 30_000): Promise<Record<string, string>> {
  const { url, certFile } = await sealerAddress(sealer, timeoutMs);
  return { KMS_SEALER_URL: url, KMS_SEALER_CA_FILE: certFile, NODE_EXTRA_CA_CERTS: certFile, KMS_ATTESTER: 'sample' };
}

/** The sealing service's URL and certificate, from its JSON log lines (sealer/app.ts). */
export async function sealerAddress(sealer: Proc, timeoutMs = 30_000): Promise<{ url: string; certFile: string }> {
  const [cert, listening] = await Promise.all([
    sealer.waitForLine(/"component":"sealer","message":"TLS certificate[^"]*","certFile":"([^"]+)"/, timeoutMs),
    sealer.waitForLine(/"component":"sealer","message":"listening","url":"([^"]+)"/, timeoutMs),
  ]);
  return { url: listening[1]!, certFile: cert[1]! };
}

/**
 * The environment a server under test starts with: PATH and HOME, and nothing else of the bench's
 * own environment, which is not a function container's. That matters for cold starts: this machine
 * sets NODE_EXTRA_CA_CERTS to its whole system CA bundle, which costs every Node process about 80 ms
 * at start (measured); a function's container names only the internal CA there (sealerFunctionEnv).
 */
export function serverEnv(): NodeJS.ProcessEnv {
  // Metrics ports are fixed by default, one per machine: the lean hosts measured get their own (servers.ts).
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: process.env.HOME ?? '/',
    KMS_METRICS_PORT: 'off',
    KMS_SEALER_METRICS_PORT: 'off',
  };
}
