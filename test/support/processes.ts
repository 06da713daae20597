import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export interface RequestOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/** A real process serving HTTP(S), with its output captured for scanning. */
export interface ServerProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /**
   * Everything written, once it contains `text`. The process's lines reach this process through a
   * pipe, read in its own turn of the event loop: an answer can arrive before the line written
   * before it, so a test that looks for a line waits for it rather than reading output() at once.
   */
  outputContaining(text: string, timeoutMs?: number): Promise<string>;
  /**
   * Everything written, once nothing more has come for `quietMs` (5 s at most): what a test reads
   * to show that something was never written (a secret), so that a line still in the pipe counts.
   */
  settledOutput(quietMs?: number): Promise<string>;
  request(path: string, options?: RequestOptions): Promise<HttpAnswer>;
  /**
   * Bytes written as they are on one new connection (HTTP framing included), for what an HTTP client
   * library will not send; resolves with what the server wrote until it closed the connection, or
   * until `closeAfterMs` (then the client closes it: a request cut short).
   */
  raw(bytes: string, options?: RawOptions): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface RawOptions {
  /** The client closes the connection after this long (10 s): a request cut short. */
  readonly closeAfterMs?: number;
  /** The CA of an https: URL's certificate. */
  readonly ca?: string;
}

/** ServerProcess.raw on any http: or https: URL. */
export function rawCall(url: string, bytes: string, { closeAfterMs = 10_000, ca }: RawOptions = {}): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const { hostname, port, protocol } = new URL(url);
    const socket: Socket =
      protocol === 'https:' ? tlsConnect({ host: hostname, port: Number(port), ca, servername: 'localhost' }) : tcpConnect(Number(port), hostname);
    let answer = '';
    const timer = setTimeout(() => socket.destroy(), closeAfterMs);
    socket.once(protocol === 'https:' ? 'secureConnect' : 'connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.once('close', () => (clearTimeout(timer), resolve(answer)));
    socket.once('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? undefined : reject(error)));
  });
}

/**
 * Test processes serve no metrics unless a test asks: the default ports (9464, 9465) are one per
 * machine, and tests run many processes at once.
 */
export const NO_METRICS = { KMS_METRICS_PORT: 'off', KMS_SEALER_METRICS_PORT: 'off' } as const;

/**
 * A free port for a test server, which keeps it across restarts. Taken below the kernel's ephemeral
 * range: an outgoing connection of any process takes its local port from that range, and could
 * take a server's port between a stop and a restart (a restart then fails with EADDRINUSE). Each
 * vitest worker takes from a block of its own, each port once, PORT_STRIDE apart: `npm start`
 * gives its sealing-service replicas the ports (and metrics ports) after the one it is given.
 */
export async function freePort(): Promise<number> {
  const worker = Number(process.env.VITEST_POOL_ID ?? 1);
  const start = FIRST_PORT + ((worker - 1) % 4) * PORT_BLOCK;
  if (start + PORT_BLOCK > ephemeralLow()) return kernelPort();
  nextPort = Math.max(nextPort ?? start, start);
  while (nextPort + PORT_STRIDE <= start + PORT_BLOCK) {
    const port = nextPort;
    nextPort += PORT_STRIDE;
    if (await canListen(port)) return port;
  }
  return kernelPort(); // this worker's block is used up
}

const FIRST_PORT = 15_000;
const PORT_BLOCK = 4_000; // 4 workers' blocks below 32768 (vitest.config.ts runs 2)
const PORT_STRIDE = 8;
let nextPort: number | undefined;

function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32_768;
  } catch {
    return 32_768;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** One HTTP(S) request; `ca` pins the server's self-signed certificate (no verification bypass). */
export function httpCall(url: string, options: RequestOptions & { ca?: string } = {}): Promise<HttpAnswer> {
  // Split by hand: WHATWG URL parsing would normalize `%2E%2E` and `..` away before they reach the server.
  const match = /^(https?:\/\/[^/]+)(\/.*)?$/.exec(url);
  if (match === null) throw new Error(`bad test URL ${url}`);
  const origin = new URL(match[1]!);
  const requestFn = origin.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = requestFn(
      {
        protocol: origin.protocol,
        hostname: origin.hostname,
        port: origin.port,
        path: match[2] ?? '/',
        method: options.method ?? 'GET',
        headers: options.headers,
        ca: options.ca,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

interface StartOptions {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Record<string, string>;
  readonly url: string;
  /** Certificate file to trust once the process has created it. */
  readonly caFile?: string;
  /** Path polled until it answers (any status). */
  readonly readyPath?: string;
}

export async function startServer(options: StartOptions): Promise<ServerProcess> {
  const child = spawn(options.command, [...options.args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', KMS_ACCESS_LOG: 'true', ...NO_METRICS, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: stop() reaches every process it started (npm → sh → node → sealer).
    detached: true,
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let ca: string | undefined;

  const call = (path: string, requestOptions: RequestOptions = {}) => httpCall(`${options.url}${path}`, { ...requestOptions, ca });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode} before answering:\n${output}`);
    try {
      if (options.caFile !== undefined) ca = await readFile(options.caFile, 'utf8');
      await call(options.readyPath ?? '/healthz');
      break;
    } catch {
      if (Date.now() > deadline) {
        process.kill(-child.pid!, 'SIGKILL');
        throw new Error(`server did not answer within 60 s:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return {
    url: options.url,
    child,
    output: () => output,
    async outputContaining(text, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!output.includes(text)) {
        if (Date.now() > deadline) throw new Error(`no ${JSON.stringify(text)} in the output within ${timeoutMs} ms:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return output;
    },
    async settledOutput(quietMs = 250) {
      const deadline = Date.now() + 5_000;
      for (let seen = output.length; ; seen = output.length) {
        await new Promise((resolve) => setTimeout(resolve, quietMs));
        if (output.length === seen || Date.now() > deadline) return output;
      }
    },
    request: call,
    raw: (bytes, rawOptions = {}) => rawCall(options.url, bytes, { ca, ...rawOptions }),
    async stop(signal = 'SIGTERM') {
      const group = (sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig);
        } catch {
          // already gone
        }
      };
      if (child.exitCode === null && child.signalCode === null) {
        group(signal);
        const timer = setTimeout(() => group('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      group('SIGKILL'); // whatever the leader left behind
    },
  };
}

/** The lean host (`node dist/scripts/serve.js`), all functions or FUNCTION_TARGET's, over HTTPS. */
/**
 * The workload identity (init-data digest) that test sealers grant every admin operation, unless a
 * test sets KMS_SEALER_ADMIN_POLICY_FILE (test/support/sealer.ts), and that test lean hosts claim.
 */
export const TEST_ADMIN_IDENTITY = 'ad'.repeat(48);

export async function startLeanHost(env: Record<string, string>): Promise<ServerProcess> {
  const port = env.PORT !== undefined ? Number(env.PORT) : await freePort();
  const dataDir = env.KMS_DATA_DIR ?? '.kms';
  return startServer({
    command: process.execPath,
    args: ['dist/scripts/serve.js'],
    env: { PORT: String(port), KMS_SAMPLE_INIT_DATA: TEST_ADMIN_IDENTITY, ...env },
    url: `https://127.0.0.1:${port}`,
    caFile: `${dataDir}/tls/cert.pem`,
  });
}

/**
 * Runs the lean host to its exit, for configurations it must refuse (it must not keep serving):
 * its exit code and everything it wrote. Killed after 30 s if it keeps running.
 */
export async function runLeanHostToExit(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['dist/scripts/serve.js'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', PORT: String(await freePort()), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  return { code, output };
}

/** `npm start`, exactly as a user runs it. */
export async function startNpmStart(env: Record<string, string>): Promise<ServerProcess> {
  const port = env.PORT !== undefined ? Number(env.PORT) : await freePort();
  return startServer({
    command: 'npm',
    args: ['start', '--silent'],
    env: { PORT: String(port), ...env },
    url: `https://127.0.0.1:${port}`,
    caFile: `${env.KMS_DATA_DIR}/tls/cert.pem`,
  });
}

/** One function alone under functions-framework, from the built output. */
export async function startFunctionsFramework(module: string, target: string, env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  return startServer({
    command: process.execPath,
    args: ['node_modules/@google-cloud/functions-framework/build/src/main.js', `--source=dist/functions/${module}.js`, `--target=${target}`, `--port=${port}`],
    env,
    url: `http://127.0.0.1:${port}`,
    readyPath: '/',
  });
}
