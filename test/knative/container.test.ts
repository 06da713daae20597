/**
 * The image's start command, without Docker: what the Dockerfile's runtime stage holds
 * (package.json, package-lock.json, dist/, dependencies from `npm ci --omit=dev`) in a temporary
 * folder, started with the exact CMD and ENV of that stage, NODE_ENV=production, one process per
 * function (FUNCTION_TARGET) on its own port, concurrently. Each must answer its own route, the
 * /healthz probe the manifests use, and nothing else; and stop cleanly on SIGTERM, as Knative stops it.
 *
 * Mode 1 without a sealer (KMS_ROOT_KEY) and the embedded store: enough to show each function runs.
 * The one `npm ci` uses the npm registry (or npm's cache).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../../functions/index.js';
import { NO_METRICS } from '../support/processes.js';
import { createTestBucket } from '../support/s3.js';
import { writeTlsFiles } from '../support/tls-files.js';
import { findTool, inCi, requireTool, skipWithout } from '../support/tools.js';
import { KNATIVE, REPO, dockerCmd, dockerEnv, loadResources, parseDockerfile, render, type Json } from './support.js';

const dockerfile = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
const runtimeStage = dockerfile.stages.at(-1)!;
const CMD = dockerCmd(runtimeStage);
const IMAGE_ENV = dockerEnv(runtimeStage);
const workdir = runtimeStage.instructions.filter((i) => i.op === 'WORKDIR').at(-1)?.args ?? '/';

/** What each known function answers to a request that proves it runs; new functions: any non-404 below 500. */
const EXPECTED: Record<string, number> = {
  welcome: 200, // GET /
  enrollUser: 201, // POST /user/{name}?token=…
  createPrimaryKey: 401, // unknown user
  createDataKey: 401,
  getDataKey: 401,
  rotateRootKey: 409, // mode 1 without a sealer: rotation refused
  verifyRootKey: 403, // no admin token configured
  recoverRootKey: 409, // mode 1 without a sealer
  sealStatus: 200,
};

interface Started {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  output: string;
  exit: Promise<number | null>;
}

let app: string;
let dataDir: string;
const started: Started[] = [];

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

async function waitForHttp(s: Started, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (s.child.exitCode !== null) throw new Error(`${s.name} exited with ${s.child.exitCode}:\n${s.output}`);
    try {
      await fetch(`http://127.0.0.1:${s.port}/healthz`, { signal: AbortSignal.timeout(1_000) });
      return;
    } catch {
      if (Date.now() > until) throw new Error(`${s.name} does not answer on port ${s.port}:\n${s.output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

beforeAll(async () => {
  execFileSync(process.execPath, [join(REPO, 'scripts', 'build-if-needed.mjs')], { cwd: REPO, stdio: 'inherit' });
  const root = mkdtempSync(join(tmpdir(), 'tee-kms-image-'));
  // The runtime stage's WORKDIR, as a folder of its own.
  app = join(root, workdir.replace(/^\/+/, ''));
  mkdirSync(app, { recursive: true });
  dataDir = join(root, 'data');
  for (const file of ['package.json', 'package-lock.json']) cpSync(join(REPO, file), join(app, file));
  cpSync(join(REPO, 'dist'), join(app, 'dist'), { recursive: true });
  execFileSync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], {
    cwd: app,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NODE_ENV: 'production' },
    timeout: 300_000,
  });

  const ports = await freePorts(routes.length);
  const rootKey = randomBytes(32).toString('base64');
  routes.forEach((route, i) => {
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: root,
      ...IMAGE_ENV,
      NODE_ENV: 'production',
      PORT: String(ports[i]),
      // The image listens on 0.0.0.0; here only loopback is needed.
      KMS_BIND: '127.0.0.1',
      FUNCTION_TARGET: route.name,
      KMS_ROOT_KEY: rootKey,
      KMS_DATA_DIR: dataDir,
      ...NO_METRICS,
    };
    const child = spawn(CMD[0] === 'node' ? process.execPath : CMD[0]!, CMD.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const s: Started = { name: route.name, port: ports[i]!, child, output: '', exit: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
    child.stdout!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
    started.push(s);
  });
  await Promise.all(started.map((s) => waitForHttp(s, 30_000)));
}, 420_000);

afterAll(async () => {
  for (const s of started) if (s.child.exitCode === null) s.child.kill('SIGKILL');
  if (app !== undefined) rmSync(join(app, '..'), { recursive: true, force: true });
});

/** A request each function answers itself (a path it serves, the first of its methods). */
function requestFor(route: (typeof routes)[number]): { method: string; path: string; body?: string } {
  const method = route.methods[0]!;
  const path = route.path.endsWith('/') && route.path !== '/' ? `${route.path}probe${route.name.toLowerCase()}` : route.path;
  const query =
    route.name === 'enrollUser' ? `?token=${randomBytes(12).toString('hex')}` : `?user=nobody&token=${randomBytes(12).toString('hex')}&primaryKeyName=pk`;
  return { method, path: `${path}${query}`, body: method === 'PUT' || method === 'POST' ? '{}' : undefined };
}

describe('the image CMD runs each function on the built output with production dependencies', () => {
  it('the Dockerfile CMD is what the test runs', () => {
    expect(CMD).toEqual(['node', 'dist/scripts/serve.js']);
    expect(IMAGE_ENV.NODE_ENV).toBe('production');
  });

  for (const route of routes) {
    it(`${route.name}: answers ${route.methods.join('|')} ${route.path}, the /healthz and /readyz probes, and no other route`, async () => {
      const s = started.find((x) => x.name === route.name)!;
      const { method, path, body } = requestFor(route);
      const res = await fetch(`http://127.0.0.1:${s.port}${path}`, { method, body, headers: body ? { 'content-type': 'application/json' } : {} });
      const text = await res.text();
      const expected = EXPECTED[route.name];
      if (expected !== undefined) expect(res.status, `${method} ${route.path}: ${text}\n${s.output}`).toBe(expected);
      else {
        expect(res.status, `${method} ${route.path}: ${text}`).not.toBe(404);
        expect(res.status, `${method} ${route.path}: ${text}`).toBeLessThan(500);
      }
      expect(res.headers.get('cache-control')).toBe('no-store');

      const health = await fetch(`http://127.0.0.1:${s.port}/healthz`);
      expect(health.status).toBe(200);
      // Mode 1: the root key is there, so the readiness probe passes.
      const ready = await fetch(`http://127.0.0.1:${s.port}/readyz`);
      expect(ready.status, await ready.text()).toBe(200);

      // Another function's path is not served here: FUNCTION_TARGET selects exactly one.
      const other = route.path === '/' ? routes.find((r) => r.path !== '/')! : routes.find((r) => r.path === '/')!;
      const elsewhere = await fetch(`http://127.0.0.1:${s.port}${other.path === '/' ? '/' : `${other.path}x`}`, { method: other.methods[0] });
      expect(elsewhere.status).toBe(404);
      await elsewhere.text();
    });
  }

  it('every function stops cleanly on SIGTERM (exit 0), as Knative stops a revision', async () => {
    for (const s of started) s.child.kill('SIGTERM');
    const codes = await Promise.all(started.map((s) => Promise.race([s.exit, new Promise((resolve) => setTimeout(() => resolve('timeout'), 10_000))])));
    expect(codes).toEqual(started.map(() => 0));
  });
});

describe("the sealer StatefulSet's command and settings run on the same output", () => {
  const OPENSSL = findTool('openssl', ['version'], 'apt-get install openssl');

  interface SealerRun {
    readonly output: () => string;
    readonly request: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: string }>;
  }

  /**
   * Starts node dist/sealer/main.js with a StatefulSet container's literal environment, its mounted
   * paths and secret references made local (`files` maps *_FILE variables to local files), waits
   * until it answers the readiness probe, runs `check`, and stops it (SIGTERM, exit 0).
   */
  async function withSealer(container: Json, files: Record<string, string>, check: (sealer: SealerRun) => Promise<void>): Promise<void> {
    const probe = container.readinessProbe.httpGet;
    const dir = mkdtempSync(join(tmpdir(), 'tee-kms-sealer-'));
    try {
      const { certFile: cert, keyFile: key } = writeTlsFiles(dir, 'tls', 'tee-kms-sealer');
      const [port] = await freePorts(1);
      // The StatefulSet's literal values, with its mounted paths and secret references made local.
      const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, ...IMAGE_ENV };
      for (const e of container.env as Json[]) if (typeof e.value === 'string') env[e.name] = e.value;
      for (const name of Object.keys(env)) if (name.endsWith('_FILE')) delete env[name];
      delete env.NODE_EXTRA_CA_CERTS;
      Object.assign(env, {
        KMS_SEALER_HOST: '127.0.0.1',
        KMS_SEALER_PORT: String(port),
        KMS_SEALER_DATA_DIR: join(dir, 'data'),
        KMS_SEALER_TLS_CERT_FILE: cert,
        KMS_SEALER_TLS_KEY_FILE: key,
        KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64'),
        ...NO_METRICS,
        ...files,
      });
      expect(env.NODE_ENV).toBe('production');
      const [command, ...args] = container.command as string[];
      const child = spawn(command === 'node' ? process.execPath : command!, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const request = (method: string, path: string, body?: unknown) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const payload = body === undefined ? undefined : JSON.stringify(body);
          const headers = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
          const req = httpsRequest({ host: '127.0.0.1', port, path, method, headers, ca: readFileSync(cert), servername: 'tee-kms-sealer' }, (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          });
          req.on('error', reject);
          req.end(payload);
        });
      try {
        let answer: { status: number; body: string } | undefined;
        for (const until = Date.now() + 20_000; answer === undefined;) {
          if (child.exitCode !== null) throw new Error(`the sealer exited with ${child.exitCode}:\n${output}`);
          answer = await request('GET', probe.path).catch(async () => {
            if (Date.now() > until) throw new Error(`the sealer does not answer:\n${output}`);
            await new Promise((resolve) => setTimeout(resolve, 100));
            return undefined;
          });
        }
        expect(probe.scheme).toBe('HTTPS');
        expect(answer.status, answer.body).toBe(200);
        // /readyz: ready, unsealed (mode 1: each replica reads the key from the Secret itself).
        expect(JSON.parse(answer.body)).toEqual({ ready: true, sealed: false });
        const status = await request('GET', '/tee-kms/v1/seal-status');
        expect(status.body).toContain('"source":"secret"');
        await check({ output: () => output, request });
      } finally {
        child.kill('SIGTERM');
        expect(await exited, output).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const kbsAuth = { version: '0.4.0', tee: 'tdx', 'extra-params': '' };

  it.skipIf(skipWithout(OPENSSL))("node dist/sealer/main.js starts with the StatefulSet's environment (mode 1) and answers its readiness probe", async () => {
    requireTool(OPENSSL);
    const deployment = loadResources(join(KNATIVE, 'base', 'sealer-statefulset.yaml'))[0]!;
    // The base leaves how the sealer proves itself to the overlays (tdx: tdx-aa; dev: sample, outside
    // production); the base alone runs with NODE_ENV=production, where sample is refused.
    await withSealer(deployment.spec.template.spec.containers[0], { KMS_SEALER_ATTESTER: 'tdx-aa' }, async (sealer) => {
      // The base configures no TDX verifier: a TD is refused at /kbs/v0/auth.
      const auth = await sealer.request('POST', '/kbs/v0/auth', kbsAuth);
      expect(auth.status).toBe(401);
      expect(JSON.parse(auth.body).detail).toContain('no verifier for tee "tdx" is configured');
    });
  });

  it.skipIf(skipWithout(OPENSSL))(
    "with the tdx overlay's environment and a policy in its ConfigMap's place, the sealer registers the TDX verifier (collateral from PCCS)",
    async () => {
      requireTool(OPENSSL);
      const sealerStatefulSet = render(join(KNATIVE, 'overlays', 'tdx')).find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
      const container = sealerStatefulSet.spec.template.spec.containers[0];
      const pccsUrl = (container.env as Json[]).find((e) => e.name === 'KMS_SEALER_PCCS_URL')?.value;
      expect(pccsUrl).toMatch(/^https:\/\//);
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-tdx-policy-'));
      try {
        const policy = join(dir, 'policy.json');
        writeFileSync(policy, JSON.stringify({ mrTd: ['ab'.repeat(48), 'cd'.repeat(48)], rtmr1: [`0x${'EF'.repeat(48)}`] }));
        // Collateral is fetched per platform at the first attestation, not at start: no network here.
        await withSealer(container, { KMS_SEALER_TDX_POLICY_FILE: policy }, async (sealer) => {
          expect(sealer.output()).toContain(`"component":"sealer","message":"TDX verifier: reference values from ${policy} (mrTd 2 allowed`);
          expect(sealer.output()).toContain(
            `collateral from ${pccsUrl} (cached per platform; its TLS certificate checked against Node's bundled root certificates); trust anchor the pinned Intel SGX Root CA`,
          );
          expect(sealer.output()).toContain('"component":"sealer","message":"verifiers: tdx"');
          const auth = await sealer.request('POST', '/kbs/v0/auth', kbsAuth);
          expect(auth.status, auth.body).toBe(200);
          expect(JSON.parse(auth.body).nonce).toEqual(expect.any(String));
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe("functions-framework the standard way, from the runtime tree: package.json's main exports every function", () => {
  /** Starts functions-framework's own bin in the runtime tree (no --source: it loads `main`). */
  async function startFramework(args: string[], env: Record<string, string>): Promise<Started> {
    const [port] = await freePorts(1);
    const child = spawn(join(app, 'node_modules', '.bin', 'functions-framework'), [...args, `--port=${port}`], {
      cwd: app,
      env: {
        PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
        HOME: app,
        NODE_ENV: 'production',
        KMS_ROOT_KEY: randomBytes(32).toString('base64'),
        KMS_DATA_DIR: dataDir,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const s: Started = { name: args.join(' '), port: port!, child, output: '', exit: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
    child.stdout!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
    started.push(s);
    await waitForHttp(s, 30_000);
    return s;
  }

  it('main names the built entry, and it exports a handler under every function name', async () => {
    const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8'));
    expect(pkg.main).toBe('dist/functions/index.js');
    const entry = await import(pathToFileURL(join(REPO, pkg.main)).href);
    for (const route of routes) expect(typeof entry[route.name], route.name).toBe('function');
  });

  it('`functions-framework --target=welcome` and FUNCTION_TARGET=getDataKey (what buildpacks set from GOOGLE_FUNCTION_TARGET) serve their function', async () => {
    const welcome = await startFramework(['--target=welcome'], {});
    const res = await fetch(`http://127.0.0.1:${welcome.port}/`);
    expect(res.status, welcome.output).toBe(200);
    expect(await res.text()).toContain('welcome');

    const getDataKey = await startFramework([], { FUNCTION_TARGET: 'getDataKey' });
    const answer = await fetch(`http://127.0.0.1:${getDataKey.port}/dataKey/dk?user=nobody&token=t&primaryKeyName=pk`);
    expect(answer.status, getDataKey.output).toBe(401);
    for (const s of [welcome, getDataKey]) s.child.kill('SIGTERM');
  });
});

/**
 * The single-service Knative Service's container as Kubernetes runs it: its literal environment
 * and tee-kms-config's values (envFrom), its mounted Secret files, the user of its securityContext
 * (uid/gid 1000) and a read-only root filesystem (a private mount namespace with / remounted
 * read-only). Mode 1 (the root key from a file) stands in for the sealer, and this run's S3 for
 * MinIO. Then BigDL KMS's flow over real HTTP. Needs root (to switch user and remount), as CI is.
 */
describe("the single-service container with the manifests' environment, uid 1000, read-only root", () => {
  const isRoot = process.getuid?.() === 0;
  const canUnshare = isRoot && spawnSync('unshare', ['-m', '--propagation', 'private', 'true']).status === 0;

  it.skipIf(!canUnshare && !inCi)('serves every route, ready once the root key is readable, on a read-only root as uid 1000', async () => {
    expect(isRoot && canUnshare, 'CI runs as root, where unshare -m works').toBe(true);
    const service = loadResources(join(KNATIVE, 'functions', 'single-service', 'tee-kms.yaml'))[0]!;
    const [config] = loadResources(join(KNATIVE, 'base', 'config.yaml'));
    const container = service.spec.template.spec.containers[0];
    expect(container.securityContext).toMatchObject({ runAsUser: 1000, runAsGroup: 1000, readOnlyRootFilesystem: true });
    const bucket = await createTestBucket();
    const files = mkdtempSync(join(tmpdir(), 'tee-kms-mounts-'));
    chmodSync(files, 0o755);
    chmodSync(join(app, '..'), 0o755);
    try {
      const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin', ...config!.data };
      for (const e of container.env as Json[]) env[e.name] = e.value;
      // The mounted Secret files and the internal CA, where the pod would have them.
      const mount = (name: string, value: string) => {
        writeFileSync(join(files, name), value, { mode: 0o644 });
        return join(files, name);
      };
      Object.assign(env, {
        KMS_S3_ENDPOINT: bucket.env.KMS_S3_ENDPOINT!,
        KMS_S3_REGION: bucket.env.KMS_S3_REGION!,
        KMS_S3_BUCKET: bucket.bucket,
        KMS_S3_FORCE_PATH_STYLE: 'true',
        KMS_S3_ACCESS_KEY_ID_FILE: mount('accessKeyId', bucket.env.KMS_S3_ACCESS_KEY_ID!),
        KMS_S3_SECRET_ACCESS_KEY_FILE: mount('secretAccessKey', bucket.env.KMS_S3_SECRET_ACCESS_KEY!),
        KMS_ADMIN_TOKEN_FILE: mount('token', randomBytes(24).toString('hex')),
        KMS_ROOT_KEY_FILE: join(files, 'rootKey'), // not there yet
        KMS_BIND: '127.0.0.1',
        ...NO_METRICS,
      });
      delete env.KMS_SEALER_URL; // mode 1 stands in for the sealer here
      delete env.KMS_SEALER_CA_FILE;
      delete env.NODE_EXTRA_CA_CERTS;
      const [port] = await freePorts(1);
      env.PORT = String(port);
      const script = 'mount -o remount,bind,ro / && exec setpriv --reuid=1000 --regid=1000 --clear-groups -- "$@"';
      const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', process.execPath, ...CMD.slice(1)], {
        cwd: app,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const s: Started = {
        name: 'single-service',
        port: port!,
        child,
        output: '',
        exit: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
      };
      child.stdout!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (s.output += chunk.toString()));
      started.push(s);
      await waitForHttp(s, 30_000);
      const url = `http://127.0.0.1:${port}`;
      // unshare, sh and setpriv each exec the next: the process is node itself, as uid 1000.
      expect(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0')).toEqual([process.execPath, ...CMD.slice(1), '']);
      expect(readFileSync(`/proc/${child.pid}/status`, 'utf8')).toMatch(/^Uid:\s+1000\s/m);

      expect((await fetch(`${url}${container.readinessProbe.httpGet.path}`)).status, s.output).toBe(503);
      writeFileSync(join(files, 'rootKey'), randomBytes(32).toString('base64'), { mode: 0o644 });
      expect((await fetch(`${url}${container.readinessProbe.httpGet.path}`)).status, s.output).toBe(200);
      expect((await fetch(`${url}${container.livenessProbe.httpGet.path}`)).status).toBe(200);

      // BigDL KMS's flow, every route on the one Service.
      const token = randomBytes(12).toString('hex');
      expect((await fetch(`${url}/`)).status).toBe(200);
      expect((await fetch(`${url}/user/alice?token=${token}`, { method: 'POST' })).status, s.output).toBe(201);
      expect((await fetch(`${url}/primaryKey/pk?user=alice&token=${token}`, { method: 'POST' })).status).toBe(201);
      expect((await fetch(`${url}/dataKey/dk?user=alice&token=${token}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
      const get = await fetch(`${url}/dataKey/dk?user=alice&token=${token}&primaryKeyName=pk`);
      expect(get.status).toBe(200);
      expect(Buffer.from((await get.text()).trim(), 'base64')).toHaveLength(32);
      expect(s.output).not.toMatch(/EROFS|read-only file system/i);
      child.kill('SIGTERM');
      expect(await s.exit).toBe(0);
    } finally {
      await bucket.remove();
      rmSync(files, { recursive: true, force: true });
    }
  });
});
