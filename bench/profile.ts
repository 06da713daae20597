/**
 * CPU profiles of the lean host (`node --cpu-prof dist/scripts/serve.js`), embedded store, static
 * root key (no RGW needed):
 *
 *   npm run bench -- --profile [warm] [seconds] [concurrency]
 *       the warm `GET /dataKey` path under load (HTTPS, all functions), the load generator in its
 *       own process. The warm path touches no storage, so the store does not matter.
 *   npm run bench -- --profile sealed [seconds] [concurrency]
 *       the same warm read with a sealed credential per request and a sealed answer
 *       (docs/sealed-channel.md), the credentials made by the load generator before the clock starts.
 *   npm run bench -- --profile cold
 *       one cold start: process start → first 200 of `GET /dataKey` (FUNCTION_TARGET=getDataKey,
 *       KMS_TLS=off), i.e. module loading, listening, the first credential check and unwraps.
 *   KMS_S3_ENDPOINT=… npm run bench -- --profile storage [seconds] [concurrency]
 *       the storage-bound routes on S3 (e.g. `scripts/s3-local.sh start DIR` and its DIR/env):
 *       cold `GET /dataKey` (each key once) for `seconds`, then `POST /dataKey` for `seconds`.
 *
 * BENCH_SERVER_DIST=bench/.ab/before profiles another build of the server (same load, same tool).
 * Prints where the server's CPU time goes (self time by function and by area) and keeps the
 * .cpuprofile (open it in Chrome DevTools → Performance, or speedscope) under bench/results/.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seedWarmReadStore } from './fixtures.js';
import type { HttpCase, LoadResult } from './loadgen.js';
import { Fixtures } from './fixtures.js';
import { fetchOnce, freePort, serverEnv, sleep, startProc } from './proc.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const args = process.argv.slice(2);
const mode = args[0] === 'cold' || args[0] === 'warm' || args[0] === 'sealed' || args[0] === 'storage' ? args.shift()! : 'warm';
const seconds = Number(args[0] ?? 10);
const connections = Number(args[1] ?? 16);
const OUT = process.env.BENCH_OUT || join(ROOT, 'bench/results');
/** The server under test: dist/ by default, or another build (e.g. a bench/.ab/ copy) to compare. */
const SERVE_JS = join(process.env.BENCH_SERVER_DIST ? resolve(process.env.BENCH_SERVER_DIST) : join(ROOT, 'dist'), 'scripts/serve.js');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const work = await mkdtemp(join(tmpdir(), 'tee-kms-profile-'));
try {
  const rootKey = randomBytes(32);
  const profDir = join(work, 'prof');
  let token: string;
  let env: Record<string, string | undefined>;
  let fixtures: Fixtures | undefined;
  if (mode === 'storage') {
    if (!process.env.KMS_S3_ENDPOINT)
      throw new Error('--profile storage needs KMS_S3_ENDPOINT (and KMS_S3_ACCESS_KEY_ID, KMS_S3_SECRET_ACCESS_KEY): see scripts/s3-local.sh');
    const s3 = {
      endpoint: process.env.KMS_S3_ENDPOINT,
      region: process.env.KMS_S3_REGION || 'us-east-1',
      accessKeyId: process.env.KMS_S3_ACCESS_KEY_ID ?? '',
      secretAccessKey: process.env.KMS_S3_SECRET_ACCESS_KEY ?? '',
    };
    fixtures = new Fixtures(s3, rootKey);
    await fixtures.setUp();
    token = fixtures.token;
    env = {
      ...serverEnv(),
      KMS_STORE: 's3',
      KMS_S3_ENDPOINT: s3.endpoint,
      KMS_S3_REGION: s3.region,
      KMS_S3_ACCESS_KEY_ID: s3.accessKeyId,
      KMS_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      KMS_S3_BUCKET: fixtures.bucket,
      KMS_DATA_DIR: join(work, 'kms'),
      KMS_ROOT_KEY: rootKey.toString('base64'),
    };
  } else {
    token = randomBytes(24).toString('hex');
    const dataDir = join(work, 'kms');
    await seedWarmReadStore(dataDir, rootKey, token);
    env = {
      ...serverEnv(),
      KMS_STORE: 'fs',
      KMS_DATA_DIR: dataDir,
      KMS_ROOT_KEY: rootKey.toString('base64'),
    };
  }
  const path = `/dataKey/warm?primaryKeyName=pk&user=bench&token=${token}`;
  let header: string;
  let requests: number;
  /** The lean host serving every function under --cpu-prof, warmed by one read of the warm key. */
  const startWarmProfiled = async () => {
    // With metrics, as the bench's lean hosts serve them (bench/servers.ts): their cost is per request.
    const metrics = String(await freePort());
    const server = startProc(
      'server',
      process.execPath,
      ['--cpu-prof', `--cpu-prof-dir=${profDir}`, SERVE_JS],
      { ...env, PORT: '0', FUNCTION_TARGET: '', KMS_METRICS_PORT: metrics },
      ROOT,
    );
    const url = (await server.waitForLine(/tee-kms listening.*"url":"([^"]+)"/, 30_000))[1]!;
    const first = await fetchOnce(`${url}${path}`);
    if (first.status !== 200) throw new Error(`warm-up answered ${first.status}: ${first.body}`);
    return { server, url };
  };
  if (mode === 'cold') {
    const port = await freePort();
    const server = startProc(
      'server',
      process.execPath,
      ['--cpu-prof', `--cpu-prof-dir=${profDir}`, SERVE_JS],
      { ...env, PORT: String(port), KMS_TLS: 'off', FUNCTION_TARGET: 'getDataKey' },
      ROOT,
    );
    let listening: number | undefined;
    void server.waitForLine(/tee-kms listening/, 30_000).then(
      () => (listening = performance.now() - server.startedAt),
      () => {},
    );
    let firstOk: number | undefined;
    while (firstOk === undefined) {
      try {
        const answer = await fetchOnce(`http://127.0.0.1:${port}${path}`);
        if (answer.status !== 200) throw new Error(`first request answered ${answer.status}: ${answer.body}`);
        firstOk = performance.now() - server.startedAt;
      } catch (error) {
        if ((error as { code?: string }).code !== 'ECONNREFUSED' || server.exited()) throw error;
        await sleep(2);
      }
    }
    await server.stop();
    header = `cold start (lean http, getDataKey, embedded store, static root key; under --cpu-prof, which slows start-up): listening log line after ${listening?.toFixed(0) ?? '?'} ms, first 200 after ${firstOk.toFixed(0)} ms`;
    requests = 1;
  } else if (mode === 'storage') {
    const fx = fixtures!;
    log(`creating ${seconds * 300} data keys to read cold…`);
    await fx.addDataKeys(seconds * 300);
    const names = await fx.dataKeyNames();
    const { server, url } = await startWarmProfiled();
    const get = await runLoad({
      kind: 'http',
      url,
      method: 'GET',
      paths: { mode: 'list', paths: names.map((n) => `/dataKey/${n}?primaryKeyName=pk&user=bench&token=${token}`) },
      connections,
      durationSec: seconds,
    });
    const post = await runLoad({
      kind: 'http',
      url,
      method: 'POST',
      paths: { mode: 'counter', template: `/dataKey/p-{n}?primaryKeyName=pk&user=bench&token=${token}` },
      connections,
      durationSec: seconds,
    });
    await server.stop();
    fx.close();
    header = `storage-bound routes, lean https, S3, c=${connections}: cold GET /dataKey ${Math.round(get.rps)} req/s (p50 ${get.p50} ms, p99 ${get.p99} ms), then POST /dataKey ${Math.round(post.rps)} req/s (p50 ${post.p50} ms, p99 ${post.p99} ms)`;
    requests = get.ok + get.failed + post.ok + post.failed + 1;
  } else if (mode === 'sealed') {
    const { server, url } = await startWarmProfiled();
    const attestation = await fetchOnce(`${url}/attestation?nonce=${randomBytes(32).toString('base64url')}`);
    if (attestation.status !== 200) throw new Error(`GET /attestation answered ${attestation.status}: ${attestation.body}`);
    const { serviceKey } = JSON.parse(attestation.body) as { serviceKey: Record<string, string> };
    const sealed = { mode: 'sealed', path: '/dataKey/warm?primaryKeyName=pk', serviceKey, user: 'bench', token, count: (seconds + 1) * 10_000 } as const;
    const result = await runLoad({
      kind: 'http',
      url,
      method: 'GET',
      paths: sealed,
      headers: { accept: 'application/json' },
      connections,
      durationSec: seconds,
      warmupSec: 1,
    });
    await server.stop();
    if (result.failed > 0) throw new Error(`sealed reads failed: ${JSON.stringify(result.failures)}`);
    header = `sealed warm GET /dataKey, lean https, c=${connections}, ${seconds} s: ${Math.round(result.rps)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms`;
    requests = result.ok + result.warmupAnswers + 1;
  } else {
    const { server, url } = await startWarmProfiled();
    const result = await runLoad({ kind: 'http', url, method: 'GET', paths: { mode: 'fixed', path }, connections, durationSec: seconds, warmupSec: 1 });
    await server.stop();
    header = `warm GET /dataKey, lean https, c=${connections}, ${seconds} s: ${Math.round(result.rps)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms`;
    requests = result.ok + result.warmupAnswers + 1;
  }

  const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error('no .cpuprofile written');
  mkdirSync(OUT, { recursive: true });
  const kept = join(OUT, `${mode === 'cold' ? 'cold-start' : mode === 'storage' ? 'storage' : mode === 'sealed' ? 'sealed-warm-get' : 'warm-get'}.cpuprofile`);
  copyFileSync(join(profDir, file), kept);
  const profile = JSON.parse(readFileSync(kept, 'utf8')) as Profile;
  process.stdout.write(`${header}\n\n`);
  process.stdout.write(summarize(profile, requests));
  process.stdout.write(`\nprofile kept: ${kept}\n`);
} finally {
  await rm(work, { recursive: true, force: true });
}

/** One load case in its own process (dist/bench/loadgen.js). */
function runLoad(spec: HttpCase): Promise<LoadResult> {
  const specFile = join(work, `spec-${Date.now()}.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  return new Promise<LoadResult>((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist/bench/loadgen.js'), specFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!) as LoadResult) : reject(new Error(`loadgen exited ${code}`))));
  });
}

function log(line: string): void {
  process.stderr.write(`profile: ${line}\n`);
}

function summarize(profile: Profile, requests: number): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  let total = 0;
  let idle = 0;
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    const where = frame.url === '' ? '' : ` ${frame.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/')}:${frame.lineNumber + 1}`;
    const name = `${frame.functionName || '(anonymous)'}${where}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    byArea.set(area(frame), (byArea.get(area(frame)) ?? 0) + us);
  }
  const busy = total / 1000;
  const lines = [
    `server busy ${busy.toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms; ${(total / requests).toFixed(1)} µs of CPU per request`,
    '',
    'by area (self time):',
  ];
  for (const [k, us] of [...byArea].sort((a, b) => b[1] - a[1]).slice(0, 40))
    lines.push(`  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / requests).toFixed(1).padStart(6)} µs/req  ${k}`);
  lines.push('', 'top functions (self time):');
  for (const [k, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 30)) lines.push(`  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
  return `${lines.join('\n')}\n`;
}

function area(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : `native: ${functionName}`;
  if (url.includes('node_modules/')) return `dependency: ${url.replace(/.*node_modules\//, '').split('/')[0]}`;
  if (url.startsWith('file://')) {
    // Our own code, in dist/ or in a copy of it (BENCH_SERVER_DIST).
    const file = url.replace(/^.*?\/(functions|shared|scripts|sealer)\//, '$1/');
    return file === 'shared/log.js' ? 'tee-kms: logging' : `tee-kms: ${file}`;
  }
  if (/node:internal\/crypto|node:crypto/.test(url)) return 'node: crypto (JS side)';
  if (/node:internal\/tls|node:tls|_tls/.test(url)) return 'node: tls (JS side)';
  if (/_http|node:http|internal\/http|llhttp/.test(url)) return 'node: http';
  if (/stream/.test(url)) return 'node: streams';
  if (/net|tcp|socket/.test(url)) return 'node: net';
  if (/url|querystring/.test(url)) return 'node: url/querystring';
  return `node: ${url.replace(/^node:(internal\/)?/, '')}`;
}
