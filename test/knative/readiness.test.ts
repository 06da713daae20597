/**
 * Readiness that means ready: the lean host (the image's CMD, dist/scripts/serve.js) run as a real
 * process and probed over real HTTP on the paths the Knative Services' probes use. Not ready while
 * the root key cannot be obtained (its Secret file is not there yet; the sealing service does not
 * answer); ready once it can, without a restart. Liveness answers throughout.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, NO_METRICS } from '../support/processes.js';
import { KNATIVE, REPO, loadResources, type Json } from './support.js';

const service = loadResources(join(KNATIVE, 'functions/per-function/get-data-key.yaml'))[0]!;
const container: Json = service.spec.template.spec.containers[0];
const READY = container.readinessProbe.httpGet.path as string;
const LIVE = container.livenessProbe.httpGet.path as string;

const children: ChildProcess[] = [];
let dir: string;

async function startHost(env: Record<string, string>): Promise<{ url: string; output: () => string }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['dist/scripts/serve.js'], {
    cwd: REPO,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      NODE_ENV: 'production',
      KMS_BIND: '127.0.0.1',
      KMS_TLS: 'off',
      PORT: String(port),
      FUNCTION_TARGET: 'getDataKey',
      ...NO_METRICS,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (const until = Date.now() + 20_000; ;) {
    if (child.exitCode !== null) throw new Error(`the host exited with ${child.exitCode}:\n${output}`);
    const up = await fetch(`${url}${LIVE}`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) return { url, output: () => output };
    if (Date.now() > until) throw new Error(`the host does not answer:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function probe(url: string): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${url}${READY}`);
  return { status: res.status, body: await res.json() };
}

beforeAll(() => {
  execFileSync(process.execPath, [join(REPO, 'scripts', 'build-if-needed.mjs')], { cwd: REPO, stdio: 'inherit' });
  dir = mkdtempSync(join(tmpdir(), 'tee-kms-ready-'));
}, 300_000);

afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe("readiness probe (the manifests' readinessProbe path) against a real lean-host process", () => {
  it('the Services probe readiness and liveness on different paths; liveness is the cheap one', () => {
    expect(READY).toBe('/readyz');
    expect(LIVE).toBe('/healthz');
  });

  it('not ready while the root key is unavailable; ready once it is, without a restart', async () => {
    const keyFile = join(dir, 'root-key');
    const host = await startHost({ KMS_ROOT_KEY_FILE: keyFile, KMS_DATA_DIR: join(dir, 'data') });
    const before = await probe(host.url);
    expect(before.status, host.output()).toBe(503);
    expect(before.body).toMatchObject({ ready: false, rootKey: 'unavailable' });
    expect((await fetch(`${host.url}${LIVE}`)).status).toBe(200);

    writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    const after = await probe(host.url);
    expect(after.status, host.output()).toBe(200);
    expect(after.body).toEqual({ ready: true, rootKey: 'available' });
  });

  it('not ready while the sealing service does not answer', async () => {
    const ca = join(dir, 'ca.crt');
    writeFileSync(
      ca,
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', '/dev/null', '-days', '1', '-subj', '/CN=ca'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
      ),
    );
    const closed = await freePort();
    const host = await startHost({
      KMS_SEALER_URL: `https://127.0.0.1:${closed}`,
      KMS_SEALER_CA_FILE: ca,
      KMS_ATTESTER: 'sample',
      NODE_ENV: 'development',
      KMS_DATA_DIR: join(dir, 'data2'),
    });
    const answer = await probe(host.url);
    expect(answer.status, host.output()).toBe(503);
    expect(answer.body.ready).toBe(false);
    expect(answer.body.detail).toMatch(/sealing service|still obtaining/);
  });
});

describe('readiness reports the sealed state as such', () => {
  it('200 with rootKey "sealed" when the sealing service answers that it is sealed; 503 when it hangs', async () => {
    const { createServer: createHttpServer } = await import('node:http');
    const { routeRequests } = await import('../../shared/http/router.js');
    const { KmsError } = await import('../../shared/errors.js');
    let current: () => Promise<unknown> = () => Promise.reject(new KmsError('SEALED', 'the sealing service is sealed: send 3 shares'));
    const ctx = { keys: async () => ({ rootKeys: { current: () => current() } }), runtime: async () => ({}), warmUp: () => {} } as never;
    const handler = routeRequests([], ctx);
    const server = createHttpServer((req, res) => void handler(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const sealed = await probe(url);
      expect(sealed.status).toBe(200);
      expect(sealed.body).toEqual({ ready: true, rootKey: 'sealed', detail: 'the sealing service is sealed: send 3 shares' });
      current = () => new Promise(() => {}); // a KBS exchange that never ends
      const started = Date.now();
      const hanging = await probe(url);
      expect(hanging.status).toBe(503);
      expect(hanging.body).toMatchObject({ ready: false, rootKey: 'unavailable', detail: 'still obtaining the root key' });
      expect(Date.now() - started).toBeLessThan(2_000); // within the probes' timeoutSeconds
    } finally {
      server.close();
    }
  });
});
