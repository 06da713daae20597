/**
 * `npm run bench` (scripts/bench.sh → node dist/bench/run.js): the storage limits, the HTTP ceiling
 * and the KMS through both hosts, on one machine, in one run. See docs/performance.md.
 *
 * Environment: BENCH_DURATION (seconds per load case, default 5, split into BENCH_ROUNDS rounds,
 * default 3), BENCH_CONCURRENCY (default 1,16,64), BENCH_ONLY (comma list of s3, bare, lean,
 * leanhttp, ff, coldstart, rotation; default all), BENCH_COLD_START_RUNS (5), BENCH_ROTATION_KEYS,
 * BENCH_OUT (default bench/results), KMS_S3_ENDPOINT… (use a running S3 server instead of RGW).
 *
 * Every server and every load generator is its own process. A case that fails is recorded with its
 * error and the run goes on; only a broken harness makes this exit non-zero.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Fixtures, PRIMARY_KEY, USER, WARM_KEY, type S3Settings } from './fixtures.js';
import type { HttpCase, LoadCase, LoadResult } from './loadgen.js';
import { cpuMs, devSealerEnv, fetchOnce, freePort, rssMb, sampleRss, sealerFunctionEnv, serverEnv, sleep, startProc, type Proc } from './proc.js';
import { markdown, median, svgChart, textTable, type BenchResults, type CaseRecord, type ColdStartRecord, type ColdStartRun, type Goal } from './report.js';
import { measureRotation, rotationRouteExists, ROTATION_KEYS, type RotationResult } from './rotation.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIST = join(ROOT, 'dist');
const FF_MAIN = join(ROOT, 'node_modules/@google-cloud/functions-framework/build/src/main.js');
const DURATION = Number(process.env.BENCH_DURATION || 5);
/** Each case runs in ROUNDS rounds of DURATION / ROUNDS seconds, alternating with its limit. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS || 3));
const ROUND_SEC = DURATION / ROUNDS;
const WARMUP = Math.min(0.3, ROUND_SEC / 4);
const CONCURRENCIES = (process.env.BENCH_CONCURRENCY || '1,16,64').split(',').map((s) => Number(s.trim())).filter((n) => n > 0);
const ONLY = new Set((process.env.BENCH_ONLY || '').split(',').map((s) => s.trim()).filter(Boolean));
const OUT = process.env.BENCH_OUT || join(ROOT, 'bench/results');
const COLD_START_RUNS = Number(process.env.BENCH_COLD_START_RUNS || 5);
const enabled = (group: string) => ONLY.size === 0 || ONLY.has(group);
/** The goals are stated at concurrency 16. */
const GOAL_C = 16;

const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
const wallStart = performance.now();
const loadAtStart = round2(loadavg()[0]!);

const work = await mkdtemp(join(tmpdir(), 'tee-kms-bench-'));
const procs: Proc[] = [];
/** The long-lived load generator process (see loadgen()). */
let generator: ChildProcess | undefined;
let rgw: (S3Settings & { stop(): Promise<void> }) | undefined;
let fixtures: Fixtures | undefined;

/** Stops everything this run started (each step on its own: one failure does not skip the rest). */
async function cleanUp(): Promise<void> {
  const step = async (what: string, f: () => unknown) => {
    try {
      await f();
    } catch (error) {
      log(`clean-up, ${what}: ${(error as Error).message}`);
    }
  };
  await step('load generator', () => generator !== undefined && generator.exitCode === null && generator.kill('SIGTERM'));
  for (const p of [...procs].reverse()) await step(p.name, () => p.stop());
  await step('S3 clients', () => fixtures?.close());
  await step('RGW', () => rgw?.stop());
  await step('work directory', () => rm(work, { recursive: true, force: true }));
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
}

const results: BenchResults = {
  meta: {
    date: new Date().toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cpus: cpus().length,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    os: `Linux ${release()}`,
    durationSec: DURATION,
    rounds: ROUNDS,
    concurrencies: CONCURRENCIES,
    storage: process.env.KMS_S3_ENDPOINT ? `S3 at ${process.env.KMS_S3_ENDPOINT}` : 'single-node Ceph RGW on loopback (scripts/s3-local.sh, memstore OSD)',
    rootKeyMode: 'static',
    rootKeyNote: '',
  },
  cases: [],
  coldStarts: [],
  memory: {},
  rotation: { status: 'skipped', note: 'not run (BENCH_ONLY)' },
  goals: [],
  notes: [],
};

try {
  await main();
} catch (error) {
  log(`harness error: ${(error as Error).stack ?? String(error)}`);
  await cleanUp();
  process.exit(1);
}
await cleanUp();
process.exit(0);

async function main(): Promise<void> {
  // Storage: the same RGW for the raw limits and for the KMS.
  let s3: S3Settings;
  if (process.env.KMS_S3_ENDPOINT) {
    s3 = {
      endpoint: process.env.KMS_S3_ENDPOINT,
      region: process.env.KMS_S3_REGION || 'us-east-1',
      accessKeyId: process.env.KMS_S3_ACCESS_KEY_ID ?? '',
      secretAccessKey: process.env.KMS_S3_SECRET_ACCESS_KEY ?? '',
    };
  } else {
    log('starting Ceph RGW (scripts/s3-local.sh)…');
    rgw = await startRgw();
    s3 = rgw;
  }
  const rootKey = randomBytes(32);
  const adminToken = randomBytes(24).toString('hex');
  fixtures = new Fixtures(s3, rootKey);
  await fixtures.setUp();
  const fx = fixtures;
  const recordBytes = await fx.recordBytes();
  const warmPath = `/dataKey/${WARM_KEY}?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${fx.token}`;

  const baseEnv: NodeJS.ProcessEnv = {
    ...serverEnv(), // not the bench's own environment (nor NODE_ENV: production refuses the dev sealer's sample attester)
    KMS_STORE: 's3',
    KMS_S3_ENDPOINT: s3.endpoint,
    KMS_S3_REGION: s3.region,
    KMS_S3_ACCESS_KEY_ID: s3.accessKeyId,
    KMS_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    KMS_S3_BUCKET: fx.bucket,
    KMS_DATA_DIR: join(work, 'kms'),
    KMS_BIND: '127.0.0.1',
    KMS_ADMIN_TOKEN: adminToken,
  };

  // Root key: from the attested sealing service when it is built and the functions can use it.
  const rootKeyEnv = await chooseRootKeySource(baseEnv, rootKey, warmPath);
  const fnEnv = { ...baseEnv, ...rootKeyEnv };
  log(`root key: ${results.meta.rootKeyMode} (${results.meta.rootKeyNote})`);

  const http = (url: string, method: HttpCase['method'], paths: HttpCase['paths'], connections: number, warm: boolean): HttpCase => ({
    kind: 'http',
    url,
    method,
    paths,
    connections,
    durationSec: ROUND_SEC,
    ...(warm ? { warmupSec: WARMUP } : {}),
  });
  // Cold reads draw from pools: what the create cases wrote, topped up to a minimum.
  const MIN_POOL = 3_000;
  const s3Base = { kind: 's3' as const, endpoint: s3.endpoint, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, bucket: fx.bucket, durationSec: ROUND_SEC };
  const fixed = { mode: 'fixed' as const, path: warmPath };
  const createDk = (prefix: string) => ({ mode: 'counter' as const, template: `/dataKey/${prefix}-{n}?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${fx.token}` });
  const createPk = (prefix: string) => ({ mode: 'counter' as const, template: `/primaryKey/${prefix}-{n}?user=${USER}&token=${fx.token}` });
  const goalC = CONCURRENCIES.includes(GOAL_C) ? GOAL_C : CONCURRENCIES[0]!;
  type Item = MeasureItem;
  const item = (record: CaseRecord, spec: (round: number) => LoadCase, pid?: number): Item => ({ record, spec, ...(pid === undefined ? {} : { pid }) });
  // Background load on a shared machine drifts: each KMS figure is measured in rounds alternating
  // with its limit (limit, KMS, limit, KMS, …), and the medians are reported.

  // 1. Writes and warm reads, per concurrency: raw conditional PUT, POST /dataKey, POST /primaryKey;
  //    bare node:https and warm GET /dataKey (lean host, all functions, HTTPS).
  if (enabled('s3') || enabled('lean') || enabled('bare')) {
    const lean = enabled('lean') ? await startLean('lean-https', fnEnv, 'self-signed', '') : undefined;
    const bare = enabled('bare') ? await startBare('https') : undefined;
    if (lean !== undefined) {
      await warmUp(lean.url, warmPath);
      results.memory['lean host, all functions, after warm-up (MB)'] = rssMb(lean.proc.pid);
    }
    for (const c of CONCURRENCIES) {
      const writes: Item[] = [];
      if (enabled('s3')) {
        writes.push(
          item({ id: `s3-put-c${c}`, group: 'raw-s3', host: 'raw S3 (RGW)', route: 'PUT If-None-Match:*', concurrency: c }, (r) => ({
            ...s3Base,
            op: 'put-if-none-match',
            connections: c,
            keyTemplate: `raw/c${c}-r${r}-{n}`,
            bodyBytes: recordBytes,
          })),
        );
      }
      if (lean !== undefined) {
        writes.push(item({ id: `lean-createdk-c${c}`, group: 'kms', host: 'lean https', route: 'POST /dataKey', concurrency: c }, (r) => http(lean.url, 'POST', createDk(`lean-c${c}-r${r}`), c, false), lean.proc.pid));
        writes.push(item({ id: `lean-createpk-c${c}`, group: 'kms', host: 'lean https', route: 'POST /primaryKey', concurrency: c }, (r) => http(lean.url, 'POST', createPk(`lean-c${c}-r${r}`), c, false), lean.proc.pid));
      }
      await measure(writes);
      const reads: Item[] = [];
      if (bare !== undefined) reads.push(item({ id: `bare-https-c${c}`, group: 'bare', host: 'bare node:https', route: 'same bytes as warm GET', concurrency: c }, () => http(bare.url, 'GET', fixed, c, true), bare.proc.pid));
      if (lean !== undefined) reads.push(item({ id: `lean-warm-c${c}`, group: 'kms', host: 'lean https', route: 'GET /dataKey warm', concurrency: c }, () => http(lean.url, 'GET', fixed, c, true), lean.proc.pid));
      await measure(reads);
    }
    if (bare !== undefined) await stopProc(bare.proc);
    if (lean !== undefined) await stopProc(lean.proc);
  }

  // 2. Cold reads, per concurrency: raw GETs of the raw objects, each once per round, and GET
  //    /dataKey of data keys the lean host has never seen, each once (credentials and primary key
  //    cached: one storage GET per request). One lean host serves all of them, its code warmed up
  //    first on other cold keys, so each key is read once: the pool is split between the rounds.
  const ffCold = enabled('ff') ? [goalC] : [];
  let ffColdPaths: string[][] = [];
  // The production shape (Knative: the gateway ends TLS): one function, plain HTTP, at c=goalC.
  const leanHttpCold = enabled('leanhttp') ? [goalC] : [];
  let leanHttpColdPaths: string[][] = [];
  if (enabled('s3') || enabled('lean') || enabled('ff') || enabled('leanhttp')) {
    let rawPool: string[] = [];
    if (enabled('s3')) {
      rawPool = await fx.rawKeys('raw/');
      if (rawPool.length < MIN_POOL / 2) {
        await fx.addRawObjects('raw/', MIN_POOL / 2 - rawPool.length, recordBytes);
        rawPool = await fx.rawKeys('raw/');
      }
    }
    let cold: string[][][] = [];
    let jitWarmUp: string[] = [];
    if (enabled('lean') || enabled('ff') || enabled('leanhttp')) {
      // Enough keys for every round to run its time (reads run at about 1.3× the write rate),
      // within limits: topping up costs about as long as reading.
      const bestPut = Math.max(0, ...results.cases.filter((c) => c.id.startsWith('s3-put-')).map((c) => c.result?.rps ?? 0));
      const target = Math.round(Math.min(8_000, Math.max(MIN_POOL, 4 * DURATION * bestPut)));
      let names = await fx.dataKeyNames();
      if (names.length < target) {
        log(`creating ${target - names.length} more data keys for the cold reads…`);
        await fx.addDataKeys(target - names.length);
        names = await fx.dataKeyNames();
      }
      shuffle(names);
      const paths = names.map((n) => `/dataKey/${n}?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${fx.token}`);
      jitWarmUp = paths.splice(0, Math.min(300, Math.floor(paths.length / 10)));
      // Shares in proportion to the expected rates (c=1 about half of the others), then by round.
      const cs = [...(enabled('lean') ? CONCURRENCIES : []), ...leanHttpCold, ...ffCold];
      const weights = cs.map((c) => (c === 1 ? 1 : 2));
      const total = weights.reduce((x, y) => x + y, 0);
      let at = 0;
      cold = weights.map((w) => {
        const part = paths.slice(at, (at += Math.floor((paths.length * w) / total)));
        return Array.from({ length: ROUNDS }, (_, r) => part.slice(Math.floor((part.length * r) / ROUNDS), Math.floor((part.length * (r + 1)) / ROUNDS)));
      });
      if (ffCold.length > 0) ffColdPaths = cold.pop()!;
      if (leanHttpCold.length > 0) leanHttpColdPaths = cold.pop()!;
    }
    const lean = enabled('lean') ? await startLean('lean-https-cold', fnEnv, 'self-signed', '') : undefined;
    const leanHttp = leanHttpCold.length > 0 ? await startLean('lean-http-cold', fnEnv, 'off', 'getDataKey') : undefined;
    for (const host of [lean, leanHttp]) {
      if (host === undefined) continue;
      await warmUp(host.url, warmPath);
      // Unmeasured: the cold path's code (the S3 client above all) gets compiled before the clock.
      await loadgen('jit-warm-up', http(host.url, 'GET', { mode: 'list', paths: jitWarmUp }, 16, false)).catch(() => undefined);
    }
    for (const [i, c] of CONCURRENCIES.entries()) {
      const items: Item[] = [];
      if (enabled('s3')) {
        items.push(item({ id: `s3-get-c${c}`, group: 'raw-s3', host: 'raw S3 (RGW)', route: 'GET (each object once)', concurrency: c }, () => ({ ...s3Base, op: 'get', connections: c, keys: shuffled(rawPool) })));
      }
      if (lean !== undefined) {
        items.push(
          item({ id: `lean-cold-c${c}`, group: 'kms', host: 'lean https', route: 'GET /dataKey cold (each key once)', concurrency: c }, (r) => http(lean.url, 'GET', { mode: 'list', paths: cold[i]![r]! }, c, false), lean.proc.pid),
        );
      }
      if (leanHttp !== undefined && c === goalC) {
        items.push(
          item({ id: `leanhttp-cold-c${c}`, group: 'kms', host: 'lean http', route: 'GET /dataKey cold (each key once)', concurrency: c }, (r) => http(leanHttp.url, 'GET', { mode: 'list', paths: leanHttpColdPaths[r]! }, c, false), leanHttp.proc.pid),
        );
      }
      await measure(items);
    }
    if (lean !== undefined) await stopProc(lean.proc);
    if (leanHttp !== undefined) await stopProc(leanHttp.proc);
  }
  const leanRss = results.cases.filter((r) => r.host === 'lean https' && r.rssMaxMb !== undefined).map((r) => r.rssMaxMb!);
  if (leanRss.length > 0) results.memory['lean host, all functions, max under load (MB)'] = Math.max(...leanRss);

  // 3. Plain HTTP, per concurrency: bare node:http, warm GET /dataKey on the lean host with
  //    KMS_TLS=off and FUNCTION_TARGET=getDataKey (Knative), and under functions-framework.
  if (enabled('bare') || enabled('leanhttp') || enabled('ff')) {
    const bare = enabled('bare') ? await startBare('http') : undefined;
    const lean = enabled('leanhttp') ? await startLean('lean-http', fnEnv, 'off', 'getDataKey') : undefined;
    const ff = enabled('ff') ? await startFf('ff-get', fnEnv, 'get-data-key.js', 'getDataKey') : undefined;
    if (lean !== undefined) await warmUp(lean.url, warmPath);
    if (ff !== undefined) {
      await warmUp(ff.url, warmPath);
      results.memory['functions-framework getDataKey, after warm-up (MB)'] = rssMb(ff.proc.pid);
    }
    for (const c of CONCURRENCIES) {
      const items: Item[] = [];
      if (bare !== undefined) items.push(item({ id: `bare-http-c${c}`, group: 'bare', host: 'bare node:http', route: 'same bytes as warm GET', concurrency: c }, () => http(bare.url, 'GET', fixed, c, true), bare.proc.pid));
      if (lean !== undefined) items.push(item({ id: `leanhttp-warm-c${c}`, group: 'kms', host: 'lean http', route: 'GET /dataKey warm', concurrency: c }, () => http(lean.url, 'GET', fixed, c, true), lean.proc.pid));
      if (ff !== undefined) items.push(item({ id: `ff-warm-c${c}`, group: 'kms', host: 'functions-framework', route: 'GET /dataKey warm', concurrency: c }, () => http(ff.url, 'GET', fixed, c, true), ff.proc.pid));
      await measure(items);
    }
    if (ff !== undefined) {
      for (const c of ffCold) {
        await measure([
          item({ id: `ff-cold-c${c}`, group: 'kms', host: 'functions-framework', route: 'GET /dataKey cold (each key once)', concurrency: c }, (r) => http(ff.url, 'GET', { mode: 'list', paths: ffColdPaths[r]! }, c, false), ff.proc.pid),
        ]);
      }
      results.memory['functions-framework getDataKey, max under load (MB)'] = Math.max(...results.cases.filter((r) => r.host === 'functions-framework').map((r) => r.rssMaxMb ?? 0));
      await stopProc(ff.proc);
      const ffCreate = await startFf('ff-create', fnEnv, 'create-data-key.js', 'createDataKey');
      // The first request checks the token (scrypt); do it before the clock starts, as for the others.
      await fetchOnce(`${ffCreate.url}/dataKey/ff-warmup?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${fx.token}`, { method: 'POST' });
      await measure([
        item({ id: `ff-createdk-c${goalC}`, group: 'kms', host: 'functions-framework', route: 'POST /dataKey', concurrency: goalC }, (r) => http(ffCreate.url, 'POST', createDk(`ff-c${goalC}-r${r}`), goalC, false), ffCreate.proc.pid),
      ]);
      await stopProc(ffCreate.proc);
    }
    if (lean !== undefined) await stopProc(lean.proc);
    if (bare !== undefined) await stopProc(bare.proc);
  }

  // 4. Cold start: process start → first 200 of GET /dataKey, one function per process, the two
  //    hosts alternating (lean, functions-framework, lean, …).
  if (enabled('coldstart')) {
    const lean: ColdStartRecord = { host: 'lean http', config: `FUNCTION_TARGET=getDataKey KMS_TLS=off, root key: ${results.meta.rootKeyMode}`, runs: [] };
    const ff: ColdStartRecord = { host: 'functions-framework', config: `--target=getDataKey, root key: ${results.meta.rootKeyMode}`, runs: [] };
    for (let i = 0; i < COLD_START_RUNS; i++) {
      lean.runs.push(await leanColdStart(fnEnv, warmPath));
      if (i % 2 === 0) ff.runs.push(await ffColdStart(fnEnv, warmPath));
    }
    results.coldStarts.push(summarizeColdStarts(lean), summarizeColdStarts(ff));
    if (results.meta.rootKeyMode === 'sealer') {
      // What the root key pull costs: the same function with the key from KMS_ROOT_KEY.
      const staticEnv = { ...baseEnv, KMS_ROOT_KEY: rootKey.toString('base64') };
      const lean2: ColdStartRecord = { host: 'lean http', config: 'FUNCTION_TARGET=getDataKey KMS_TLS=off, root key: static KMS_ROOT_KEY (for comparison)', runs: [] };
      for (let i = 0; i < Math.ceil(COLD_START_RUNS / 2); i++) lean2.runs.push(await leanColdStart(staticEnv, warmPath));
      results.coldStarts.push(summarizeColdStarts(lean2));
    }
  }

  // 5. Rotation of 10,000 primary keys (hook: see bench/rotation.ts).
  if (enabled('rotation')) {
    results.rotation = await rotationPhase(baseEnv, adminToken);
    if (results.rotation.status === 'measured') {
      // Its ceiling: the same read-modify-write on raw objects, with the rotation's concurrency.
      let pool = await fx.rawKeys('raw/');
      if (pool.length < MIN_POOL) {
        await fx.addRawObjects('raw/', MIN_POOL - pool.length, recordBytes);
        pool = await fx.rawKeys('raw/');
      }
      const rmwCase = item({ id: 's3-rmw-c32', group: 'raw-s3', host: 'raw S3 (RGW)', route: 'GET + PUT If-Match (read-modify-write)', concurrency: 32 }, () => ({ ...s3Base, op: 'get-replace', connections: 32, keys: shuffled(pool) }));
      await measure([rmwCase]);
      const rmw = rmwCase.record.result?.rps;
      if (rmw !== undefined && rmw > 0) {
        results.rotation = { ...results.rotation, rawReadModifyWriteRps: Math.round(rmw), ratioToReadModifyWrite: Math.round((results.rotation.keysPerSecond / rmw) * 100) / 100 };
      }
    }
  }

  // Ratios to the limits, goals, outputs.
  const byId = new Map(results.cases.map((c) => [c.id, c]));
  for (const c of results.cases) {
    const limitId = limitOf(c);
    const limit = limitId === undefined ? undefined : byId.get(limitId);
    if (limitId !== undefined && limit?.result !== undefined && c.result !== undefined && limit.result.rps > 0) {
      c.limitId = limitId;
      c.ratio = Math.round((c.result.rps / limit.result.rps) * 100) / 100;
    }
  }
  results.goals = goals(byId);
  results.notes.push(
    'functions-framework runs as `node node_modules/@google-cloud/functions-framework/build/src/main.js --source=dist/functions/<fn>.js --target=<fn>`, which is what `npx functions-framework` execs (without npm\'s own start-up).',
    'lean https = `node dist/scripts/serve.js` with all functions (as `npm start`); lean http = the same with KMS_TLS=off and FUNCTION_TARGET=getDataKey (as in Knative). functions-framework serves plain HTTP, so compare it with bare node:http.',
    'Server stdout (the JSON access log) is a pipe drained by the bench process, as a container runtime drains it.',
    'Cold reads: each data key is read once by a lean host that has never seen it (its credentials and primary key cached by one warm-up request, its code warmed up on other cold keys: one storage GET per request); raw GETs read each object once per round. Both draw from pools (what the create cases wrote, topped up to a minimum); a round ends after its time or when its share is used up (its rate is then over the time it ran).',
  );
  for (const c of results.cases) {
    if (c.result !== undefined && c.result.seconds < DURATION * 0.9) results.notes.push(`${c.host} ${c.route} c=${c.concurrency} used up its share of the pool after ${c.result.seconds} s in all (${c.result.ok} answers).`);
  }
  results.meta = { ...results.meta, wallSeconds: (performance.now() - wallStart) / 1000, loadAverage: [loadAtStart, round2(loadavg()[0]!)] };

  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(OUT, 'latest.md'), markdown(results));
  writeFileSync(join(OUT, 'latest.svg'), svgChart(results, CONCURRENCIES.includes(GOAL_C) ? GOAL_C : CONCURRENCIES[0]));
  process.stdout.write(`\n${textTable(results)}\n\nwritten: ${join(OUT, 'latest.json')}, latest.md, latest.svg (${Math.round(results.meta.wallSeconds ?? 0)} s)\n`);
}

function limitOf(c: CaseRecord): string | undefined {
  const k = c.concurrency;
  if (c.id.startsWith('lean-warm-')) return `bare-https-c${k}`;
  if (c.id.startsWith('leanhttp-warm-') || c.id.startsWith('ff-warm-')) return `bare-http-c${k}`;
  if (c.id.includes('-cold-')) return `s3-get-c${k}`;
  if (c.id.includes('-createdk-') || c.id.includes('-createpk-')) return `s3-put-c${k}`;
  return undefined;
}

function goals(byId: Map<string, CaseRecord>): Goal[] {
  const g: Goal[] = [];
  const ratioGoal = (goal: string, id: string, min: number) => {
    const c = byId.get(id);
    g.push({
      goal,
      target: `≥ ${min} of ${c?.limitId ?? 'its limit'}`,
      measured: c?.ratio === undefined ? 'not measured' : `${c.ratio} (${Math.round(c.result!.rps)} req/s)`,
      met: c?.ratio === undefined ? undefined : c.ratio >= min,
    });
  };
  ratioGoal('warm GET /dataKey, lean https, c=16', `lean-warm-c${GOAL_C}`, 0.5);
  const warm = byId.get(`lean-warm-c${GOAL_C}`)?.result;
  g.push({ goal: 'warm GET /dataKey p99, lean https, c=16', target: '< 5 ms', measured: warm === undefined ? 'not measured' : `${warm.p99} ms`, met: warm === undefined ? undefined : warm.p99 < 5 });
  ratioGoal('cold GET /dataKey, lean https, c=16', `lean-cold-c${GOAL_C}`, 0.8);
  ratioGoal('cold GET /dataKey, lean http (Knative: the gateway ends TLS), c=16', `leanhttp-cold-c${GOAL_C}`, 0.8);
  ratioGoal('POST /dataKey, lean https, c=16', `lean-createdk-c${GOAL_C}`, 0.8);
  const cs = results.coldStarts.find((c) => c.host === 'lean http');
  g.push({
    goal: 'cold start to first 200 (lean, one function)',
    target: '≤ 300 ms',
    measured: cs?.medianFirstOkMs === undefined ? 'not measured' : `${cs.medianFirstOkMs} ms (median)`,
    met: cs?.medianFirstOkMs === undefined ? undefined : cs.medianFirstOkMs <= 300,
  });
  g.push({
    goal: 'idle RSS per function (lean, after first 200)',
    target: '≤ 80 MB',
    measured: cs?.medianIdleRssMb === undefined ? 'not measured' : `${cs.medianIdleRssMb} MB`,
    met: cs?.medianIdleRssMb === undefined ? undefined : cs.medianIdleRssMb <= 80,
  });
  const rot = results.rotation;
  g.push({
    goal: `rotation of ${(rot.status === 'measured' ? rot.keys : ROTATION_KEYS).toLocaleString('en-US')} primary keys`,
    target: '≥ 0.8 of raw conditional PUT',
    measured:
      rot.status === 'measured'
        ? `${rot.ratio ?? '?'} (${rot.keysPerSecond} keys/s, ${rot.seconds} s)${rot.ratioToReadModifyWrite === undefined ? '' : `; ${rot.ratioToReadModifyWrite} of raw read-modify-write`}`
        : `${rot.status}`,
    met: rot.status === 'measured' && rot.ratio !== undefined ? rot.ratio >= 0.8 : undefined,
  });
  return g;
}

// --- measuring -----------------------------------------------------------------------------------

interface MeasureItem {
  readonly record: CaseRecord;
  readonly spec: (round: number) => LoadCase;
  /** The server under test (for its CPU time and RSS). */
  readonly pid?: number;
}

/** Runs the items in ROUNDS alternating rounds and records the medians (see combine()). */
async function measure(items: readonly MeasureItem[]): Promise<void> {
  const perItem = items.map(() => ({ results: [] as LoadResult[], cpuMs: 0, rss: undefined as number | undefined, errors: [] as string[] }));
  for (const it of items) results.cases.push(it.record);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, it] of items.entries()) {
      const acc = perItem[i]!;
      const pid = it.pid;
      const sampler = pid === undefined ? undefined : sampleRss(pid);
      const before = pid === undefined ? undefined : cpuMs(pid);
      try {
        acc.results.push(await loadgen(`${it.record.id}-r${round}`, it.spec(round)));
      } catch (error) {
        acc.errors.push((error as Error).message);
      }
      const after = pid === undefined ? undefined : cpuMs(pid);
      if (before !== undefined && after !== undefined) acc.cpuMs += after - before;
      const rss = sampler?.stop();
      if (rss !== undefined) acc.rss = Math.max(acc.rss ?? 0, rss);
    }
  }
  for (const [i, it] of items.entries()) {
    const acc = perItem[i]!;
    const record = it.record;
    if (acc.results.length > 0) {
      record.result = combine(acc.results);
      record.rounds = acc.results.map((r) => ({ rps: r.rps, p50: r.p50, p99: r.p99, seconds: r.seconds }));
    }
    if (acc.errors.length > 0) record.error = acc.errors[0];
    if (acc.rss !== undefined) record.rssMaxMb = acc.rss;
    const answers = acc.results.reduce((sum, r) => sum + r.ok + r.failed + r.warmupAnswers, 0);
    if (it.pid !== undefined && answers > 0) record.serverCpuUsPerReq = Math.round((acc.cpuMs * 1000) / answers);
    const r = record.result;
    log(
      `${record.host} ${record.route} c=${record.concurrency}: ` +
        (r === undefined
          ? `ERROR ${record.error}`
          : `${Math.round(r.rps)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms (medians of ${acc.results.length} rounds: ${acc.results.map((x) => Math.round(x.rps)).join(', ')} req/s)${r.failed > 0 ? `, ${r.failed} failed ${JSON.stringify(r.failures)}` : ''}`),
    );
  }
}

/** Rounds → one result: medians of req/s, p50, p99 and mean; sums of counts and time; the max. */
function combine(rounds: readonly LoadResult[]): LoadResult {
  const med = (f: (r: LoadResult) => number) => Math.round(median(rounds.map(f))! * 1000) / 1000;
  const failures: Record<string, number> = {};
  for (const r of rounds) for (const [k, n] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + n;
  const clientCpu = rounds.flatMap((r) => (r.clientCpuUsPerReq === undefined ? [] : [r.clientCpuUsPerReq]));
  return {
    ok: rounds.reduce((s, r) => s + r.ok, 0),
    failed: rounds.reduce((s, r) => s + r.failed, 0),
    failures,
    seconds: Math.round(rounds.reduce((s, r) => s + r.seconds, 0) * 1000) / 1000,
    rps: med((r) => r.rps),
    p50: med((r) => r.p50),
    p99: med((r) => r.p99),
    mean: med((r) => r.mean),
    max: Math.max(...rounds.map((r) => r.max)),
    warmupAnswers: rounds.reduce((s, r) => s + r.warmupAnswers, 0),
    ...(clientCpu.length === 0 ? {} : { clientCpuUsPerReq: Math.round(median(clientCpu)!) }),
  };
}

// --- servers -------------------------------------------------------------------------------------

function spawnProc(name: string, command: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const p = startProc(name, command, args, env, ROOT);
  procs.push(p);
  return p;
}

async function stopProc(p: Proc): Promise<void> {
  await p.stop();
  const i = procs.indexOf(p);
  if (i !== -1) procs.splice(i, 1);
}

async function startLean(name: string, env: NodeJS.ProcessEnv, tls: 'self-signed' | 'off', target: string): Promise<{ proc: Proc; url: string }> {
  const proc = spawnProc(name, process.execPath, [join(DIST, 'scripts/serve.js')], { ...env, PORT: '0', KMS_TLS: tls, FUNCTION_TARGET: target });
  const m = await proc.waitForLine(/tee-kms listening.*"url":"([^"]+)"/, 30_000);
  return { proc, url: m[1]! };
}

async function startBare(protocol: 'http' | 'https'): Promise<{ proc: Proc; url: string }> {
  const proc = spawnProc(`bare-${protocol}`, process.execPath, [join(DIST, 'bench/bare-server.js'), protocol, join(work, 'bare')], serverEnv());
  return { proc, url: (await proc.waitForLine(/^listening (\S+)/, 15_000))[1]! };
}

async function startFf(name: string, env: NodeJS.ProcessEnv, file: string, target: string): Promise<{ proc: Proc; url: string }> {
  const port = await freePort();
  const proc = spawnProc(name, process.execPath, [FF_MAIN, `--source=${join(DIST, 'functions', file)}`, `--target=${target}`, `--port=${port}`], env);
  const url = `http://127.0.0.1:${port}`;
  const deadline = performance.now() + 30_000;
  for (;;) {
    try {
      await fetchOnce(`${url}/`, { timeoutMs: 5_000 });
      return { proc, url };
    } catch (error) {
      if (proc.exited() || performance.now() > deadline) throw new Error(`${name} did not start: ${(error as Error).message}\n${proc.tail()}`);
      await sleep(20);
    }
  }
}

/** Until the warm key is served: the credential check (scrypt) and key unwraps happen here. */
async function warmUp(url: string, path: string): Promise<void> {
  const answer = await fetchOnce(`${url}${path}`);
  if (answer.status !== 200) throw new Error(`warm-up GET ${url}/dataKey/${WARM_KEY} answered ${answer.status}: ${answer.body.slice(0, 200)}`);
}

// --- rotation ------------------------------------------------------------------------------------

/**
 * Rotation needs the sealer in mode 2 (shares): a fresh, uninitialized dev-mode sealer, a lean host
 * using it on its own key prefix, and this process as a second KMS instance (same code, same
 * sealer) creating the primary keys quickly.
 */
async function rotationPhase(baseEnv: NodeJS.ProcessEnv, adminToken: string): Promise<RotationResult> {
  const sealerMain = join(DIST, 'sealer/main.js');
  if (!existsSync(sealerMain)) return { status: 'skipped', note: 'dist/sealer/main.js is not built: rotation needs the sealing service' };
  const sealer = spawnProc('sealer-rotation', process.execPath, [sealerMain], {
    ...baseEnv,
    KMS_SEALER_HOST: '127.0.0.1',
    KMS_SEALER_PORT: '0',
    KMS_SEALER_DATA_DIR: join(work, 'sealer-rotation'),
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
    KMS_S3_PREFIX: 'rotation/', // the functions' storage: the sealer stores root key links there
  });
  try {
    const [cert, listening] = await Promise.all([sealer.waitForLine(/sealer: TLS certificate (\S+)/, 30_000), sealer.waitForLine(/sealer: listening on (\S+)/, 30_000)]);
    const env: NodeJS.ProcessEnv = {
      ...baseEnv,
      KMS_S3_PREFIX: 'rotation/',
      KMS_SEALER_URL: listening[1]!,
      KMS_SEALER_CA_FILE: cert[1]!,
      KMS_ATTESTER: 'sample',
    };
    const lean = await startLean('lean-rotation', env, 'self-signed', '');
    try {
      if (!(await rotationRouteExists(lean.url))) {
        return { status: 'skipped', note: 'no rotateRootKey route in this build (DELETE /rootKey/rotate answered 404); hook in bench/rotation.ts' };
      }
      const rawPut = Math.max(0, ...results.cases.filter((c) => c.id.startsWith('s3-put-')).map((c) => c.result?.rps ?? 0));
      // Creating the keys (one write each) and rotating them (a read and a write each, at about a
      // third of the raw write rate) take about four raw writes' time per key: keep that within
      // ~80 s when storage is slow (the rate and the ratio stay comparable).
      let keys = ROTATION_KEYS;
      if (process.env.BENCH_ROTATION_KEYS) keys = Number(process.env.BENCH_ROTATION_KEYS);
      else if (rawPut > 0 && (4 * keys) / rawPut > 80) {
        keys = Math.max(1_000, Math.floor((80 * rawPut) / 4 / 1_000) * 1_000);
        results.notes.push(`Rotation over ${keys} primary keys instead of ${ROTATION_KEYS}: at ${Math.round(rawPut)} conditional PUTs/s the full run would not fit the bench's time budget (set BENCH_ROTATION_KEYS to force).`);
      }
      const result = await measureRotation({
        url: lean.url,
        adminToken,
        keys,
        rawPutRps: rawPut > 0 ? rawPut : undefined,
        timeoutMs: 240_000,
        log,
        createPrimaryKeys: async (count) => {
          // This process becomes one more KMS instance: the same runtime, configured like the host.
          for (const [k, v] of Object.entries(env)) if (k.startsWith('KMS_')) process.env[k] = v;
          delete process.env.KMS_ROOT_KEY;
          const { kmsRuntime } = await import('../shared/runtime.js');
          const { keys } = await kmsRuntime();
          const token = randomBytes(16).toString('hex');
          await keys.enrollUser('rotation', token);
          const principal = await keys.authenticate('rotation', token);
          let next = 0;
          await Promise.all(
            Array.from({ length: 32 }, async () => {
              while (next < count) await keys.createPrimaryKey(principal, `rot-${next++}`);
            }),
          );
        },
      });
      log(`rotation: ${result.status}: ${result.status === 'measured' ? `${result.seconds} s, ${result.keysPerSecond} keys/s` : result.note}`);
      if (result.status === 'failed') log(`sealer output:\n${sealer.tail()}\nlean host output:\n${lean.proc.tail()}`);
      return result;
    } finally {
      await stopProc(lean.proc);
    }
  } catch (error) {
    return { status: 'failed', note: firstLine((error as Error).message) };
  } finally {
    await stopProc(sealer);
  }
}

// --- root key source and cold start --------------------------------------------------------------

async function chooseRootKeySource(baseEnv: NodeJS.ProcessEnv, rootKey: Buffer, warmPath: string): Promise<NodeJS.ProcessEnv> {
  const staticEnv = { KMS_ROOT_KEY: rootKey.toString('base64') };
  const sealerMain = join(DIST, 'sealer/main.js');
  if (!existsSync(sealerMain)) {
    results.meta = { ...results.meta, rootKeyMode: 'static', rootKeyNote: 'KMS_ROOT_KEY: dist/sealer/main.js is not built' };
    return staticEnv;
  }
  const sealerDir = join(work, 'sealer');
  const sealer = spawnProc('sealer', process.execPath, [sealerMain], devSealerEnv(baseEnv, sealerDir, rootKey));
  let sealerEnv: NodeJS.ProcessEnv;
  try {
    sealerEnv = await sealerFunctionEnv(sealer);
  } catch (error) {
    await stopProc(sealer);
    results.meta = { ...results.meta, rootKeyMode: 'static', rootKeyNote: `KMS_ROOT_KEY: the sealer did not start (${firstLine((error as Error).message)})` };
    return staticEnv;
  }
  // Does a function pull the root key from it? One cold start tells (and is a sample of the real thing).
  const probe = await leanColdStart({ ...baseEnv, ...sealerEnv }, warmPath, 5_000);
  if (probe.firstOkMs !== undefined) {
    results.meta = { ...results.meta, rootKeyMode: 'sealer', rootKeyNote: 'pulled over KBS from `node dist/sealer/main.js` (insecure dev mode, sample attester; root key from KMS_SEALER_ROOT_KEY)' };
    return sealerEnv;
  }
  await stopProc(sealer);
  results.meta = {
    ...results.meta,
    rootKeyMode: 'static',
    rootKeyNote: `KMS_ROOT_KEY: the sealer runs, but a function given KMS_SEALER_URL did not serve (${firstLine(probe.error ?? 'no answer')})`,
  };
  return staticEnv;
}

function summarizeColdStarts(record: ColdStartRecord): ColdStartRecord {
  const ok = record.runs.filter((r) => r.firstOkMs !== undefined);
  record.medianFirstOkMs = round1(median(ok.map((r) => r.firstOkMs!)));
  record.medianListenMs = round1(median(ok.flatMap((r) => (r.listenMs === undefined ? [] : [r.listenMs]))));
  record.medianIdleRssMb = round1(median(ok.flatMap((r) => (r.idleRssMb === undefined ? [] : [r.idleRssMb]))));
  log(`cold start ${record.host}: ${record.medianFirstOkMs} ms to first 200, idle RSS ${record.medianIdleRssMb} MB (${ok.length}/${record.runs.length} ok)`);
  return record;
}

async function leanColdStart(env: NodeJS.ProcessEnv, warmPath: string, deadlineMs = 15_000): Promise<ColdStartRun> {
  const port = await freePort();
  return firstAnswer(
    spawnProc('cold-lean', process.execPath, [join(DIST, 'scripts/serve.js')], { ...env, PORT: String(port), KMS_TLS: 'off', FUNCTION_TARGET: 'getDataKey' }),
    `http://127.0.0.1:${port}${warmPath}`,
    deadlineMs,
    /tee-kms listening/,
  );
}

async function ffColdStart(env: NodeJS.ProcessEnv, warmPath: string): Promise<ColdStartRun> {
  const port = await freePort();
  return firstAnswer(
    spawnProc('cold-ff', process.execPath, [FF_MAIN, `--source=${join(DIST, 'functions/get-data-key.js')}`, '--target=getDataKey', `--port=${port}`], env),
    `http://127.0.0.1:${port}${warmPath}`,
    15_000,
    /Serving function/,
  );
}

/**
 * Polls `url` from the moment the process was spawned until a 200; then idles 0.5 s and reads RSS.
 * `listening` is when the process printed that it listens (its stdout is read as it comes).
 */
async function firstAnswer(proc: Proc, url: string, deadlineMs: number, listening: RegExp): Promise<ColdStartRun> {
  let listenMs: number | undefined;
  let last = '';
  void proc.waitForLine(listening, deadlineMs).then(
    () => (listenMs = performance.now() - proc.startedAt),
    () => {},
  );
  try {
    for (;;) {
      const elapsed = performance.now() - proc.startedAt;
      if (elapsed > deadlineMs) return { listenMs, error: last || `no answer within ${deadlineMs} ms` };
      if (proc.exited()) return { error: `exited: ${firstLine(proc.tail().split('\n').slice(-3).join(' '))}` };
      try {
        const answer = await fetchOnce(url, { timeoutMs: deadlineMs });
        if (answer.status === 200) {
          const firstOkMs = performance.now() - proc.startedAt;
          await sleep(500);
          return { ...(listenMs === undefined ? {} : { listenMs: round1(listenMs) }), firstOkMs: round1(firstOkMs), idleRssMb: rssMb(proc.pid) };
        }
        last = `${answer.status}: ${firstLine(answer.body)}`;
        await sleep(50);
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET') last = (error as Error).message;
        await sleep(2);
      }
    }
  } finally {
    await stopProc(proc);
  }
}

// --- load generator process ----------------------------------------------------------------------

/**
 * The load generator: one long-lived child process (dist/bench/loadgen.js --ipc) that runs one case
 * per message, so no case pays a process start; it is restarted if it dies or a case hangs.
 */
async function loadgen(_id: string, spec: LoadCase): Promise<LoadResult> {
  if (generator === undefined || generator.exitCode !== null || !generator.connected) {
    generator = fork(join(DIST, 'bench/loadgen.js'), ['--ipc'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let err = '';
    generator.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
    generator.once('exit', (code) => {
      if (code !== 0 && code !== null) log(`load generator exited ${code}: ${err.trim().split('\n').slice(-3).join(' ')}`);
    });
  }
  const child = generator;
  return new Promise<LoadResult>((resolve, reject) => {
    const timeout = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('load generator: case timed out'));
    }, (spec.durationSec + 120) * 1000);
    const onExit = () => {
      clearTimeout(timeout);
      reject(new Error('load generator exited during a case'));
    };
    child.once('exit', onExit);
    child.once('message', (message: { result?: LoadResult; error?: string }) => {
      clearTimeout(timeout);
      child.off('exit', onExit);
      if (message.result !== undefined) resolve(message.result);
      else reject(new Error(`load generator: ${(message.error ?? 'no result').split('\n')[0]}`));
    });
    child.send(spec);
  });
}

// --- storage -------------------------------------------------------------------------------------

/** A fresh Ceph RGW via scripts/s3-local.sh (as test/support/rgw.ts, which resolves paths from test/). */
async function startRgw(): Promise<S3Settings & { stop(): Promise<void> }> {
  const script = join(ROOT, 'scripts/s3-local.sh');
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-bench-rgw-'));
  const run = (command: 'start' | 'stop') =>
    new Promise<void>((resolve, reject) => {
      const child = spawn('bash', [script, command, dir], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
      const timer = setTimeout(() => child.kill('SIGKILL'), command === 'start' ? 15 * 60_000 : 60_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`scripts/s3-local.sh ${command} ${dir} exited ${code}:\n${err}`));
      });
    });
  try {
    await run('start');
  } catch (error) {
    await run('stop').catch(() => {});
    throw error;
  }
  const env = Object.fromEntries(
    readFileSync(join(dir, 'env'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')).trim(), l.slice(l.indexOf('=') + 1).trim()]),
  );
  let stopped: Promise<void> | undefined;
  return {
    endpoint: env.KMS_S3_ENDPOINT!,
    region: env.KMS_S3_REGION || 'us-east-1',
    accessKeyId: env.KMS_S3_ACCESS_KEY_ID!,
    secretAccessKey: env.KMS_S3_SECRET_ACCESS_KEY!,
    stop: () => (stopped ??= run('stop')),
  };
}

// --- small helpers -------------------------------------------------------------------------------

function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  shuffle(copy);
  return copy;
}

function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

function round1(v: number | undefined): number | undefined {
  return v === undefined ? undefined : Math.round(v * 10) / 10;
}

function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').slice(0, 200);
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    // The previous run's results are not a change to what is measured.
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} (+ uncommitted changes)` : head;
  } catch {
    return 'unknown';
  }
}
