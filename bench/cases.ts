/**
 * The cases: what the bench measures, phase by phase (writes and warm reads over HTTPS, cold reads,
 * plain HTTP, cold starts, rotation), each case next to its limit (raw S3, the bare server).
 * BENCH_ONLY chooses the groups; see bench/run.ts.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chooseRootKeySource, ffColdStart, leanColdStart, summarizeColdStarts } from './cold-start.js';
import { Fixtures, PRIMARY_KEY, USER, WARM_KEY, type S3Settings } from './fixtures.js';
import type { HttpCase, LoadCase } from './loadgen.js';
import { item, measure, type LoadGenerator, type MeasureItem } from './measure.js';
import { canPin, pinned } from './pinning.js';
import { fetchOnce, rssMb, sealerAddress, serverEnv } from './proc.js';
import type { BenchResults, ColdStartRecord } from './report.js';
import { measureRewrapScaleOut, measureRotation, rotationRouteExists, ROTATION_KEYS, type RotationResult, type ScaleOutPoint } from './rotation.js';
import { startRgw, warmUp, type Rgw, type Server, type Servers } from './servers.js';
import {
  COLD_START_RUNS,
  CONCURRENCIES,
  DIST,
  DURATION,
  enabled,
  firstLine,
  goalConcurrency,
  log,
  ROUND_SEC,
  ROUNDS,
  shuffle,
  shuffled,
  WARMUP,
} from './settings.js';

export interface BenchContext {
  readonly results: BenchResults;
  readonly servers: Servers;
  readonly generator: LoadGenerator;
  /** What the run's clean-up stops besides the servers, set as each is started. */
  readonly storage: { rgw?: Rgw; fixtures?: Fixtures };
}

/** Cold reads draw from pools: what the create cases wrote, topped up to a minimum. */
const MIN_POOL = 3_000;
/** Cold reads each cold host serves before its first measured round, of keys only other cases measure. */
const COLD_JIT_READS = 1_000;

/** What every phase uses: the storage and its fixtures, the environments, the case builders. */
interface Bench extends BenchContext {
  readonly fx: Fixtures;
  readonly recordBytes: number;
  readonly warmPath: string;
  readonly rootKey: Buffer;
  readonly adminToken: string;
  readonly baseEnv: NodeJS.ProcessEnv;
  readonly fnEnv: NodeJS.ProcessEnv;
  readonly goalC: number;
  readonly s3Base: { kind: 's3'; endpoint: string; region: string; accessKeyId: string; secretAccessKey: string; bucket: string; durationSec: number };
  readonly fixed: { mode: 'fixed'; path: string };
  measure(items: readonly MeasureItem[]): Promise<void>;
  /** Runs f with RGW on core 0 and the given servers, the load generator and the bench on core 1 (undefined: cannot pin here). */
  readonly pin: (<T>(servers: readonly number[], f: () => Promise<T>) => Promise<T>) | undefined;
  http(url: string, method: HttpCase['method'], paths: HttpCase['paths'], connections: number, warm: boolean): HttpCase;
  createDk(prefix: string): { mode: 'counter'; template: string };
  createPk(prefix: string): { mode: 'counter'; template: string };
}

/** Cold-read paths set aside for phase 3's hosts: per round. */
interface ColdPaths {
  readonly ff: string[][];
  readonly leanHttp: string[][];
}

export async function runCases(ctx: BenchContext): Promise<void> {
  const b = await setUp(ctx);
  // Background load on a shared machine drifts: each KMS figure is measured in rounds alternating
  // with its limit (limit, KMS, limit, KMS, …), and the medians are reported.
  await writesAndWarmReads(b);
  const cold = await coldReads(b);
  await plainHttp(b, cold);
  await coldStarts(b);
  await rotation(b);
}

async function setUp(ctx: BenchContext): Promise<Bench> {
  const { results, servers, generator } = ctx;
  // Storage: the same RGW for the raw limits and for the KMS.
  let s3: S3Settings;
  let rgwPids: (() => number[]) | undefined;
  if (process.env.KMS_S3_ENDPOINT) {
    s3 = {
      endpoint: process.env.KMS_S3_ENDPOINT,
      region: process.env.KMS_S3_REGION || 'us-east-1',
      accessKeyId: process.env.KMS_S3_ACCESS_KEY_ID ?? '',
      secretAccessKey: process.env.KMS_S3_SECRET_ACCESS_KEY ?? '',
    };
  } else {
    log('starting Ceph RGW (scripts/s3-local.sh)…');
    const rgw = await startRgw();
    ctx.storage.rgw = rgw;
    s3 = rgw;
    rgwPids = () => rgw.pids();
  }
  const rootKey = randomBytes(32);
  const adminToken = randomBytes(24).toString('hex');
  const fx = new Fixtures(s3, rootKey);
  ctx.storage.fixtures = fx;
  await fx.setUp();
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
    KMS_DATA_DIR: join(servers.work, 'kms'),
    KMS_BIND: '127.0.0.1',
    KMS_ADMIN_TOKEN: adminToken,
  };

  // Root key: from the attested sealing service when it is built and the functions can use it.
  const rootKeyEnv = await chooseRootKeySource(servers, results, baseEnv, rootKey, warmPath);
  const fnEnv = { ...baseEnv, ...rootKeyEnv };
  log(`root key: ${results.meta.rootKeyMode} (${results.meta.rootKeyNote})`);

  return {
    ...ctx,
    fx,
    recordBytes,
    warmPath,
    rootKey,
    adminToken,
    baseEnv,
    fnEnv,
    goalC: goalConcurrency(),
    s3Base: {
      kind: 's3',
      endpoint: s3.endpoint,
      region: s3.region,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      bucket: fx.bucket,
      durationSec: ROUND_SEC,
    },
    fixed: { mode: 'fixed', path: warmPath },
    measure: (items) => measure(results, generator, items),
    pin:
      rgwPids === undefined || !canPin()
        ? undefined
        : (pids, f) => {
            const generatorPid = generator.pid();
            return pinned(rgwPids(), () => [...pids, ...(generatorPid === undefined ? [] : [generatorPid])], f);
          },
    http: (url, method, paths, connections, warm) => ({
      kind: 'http',
      url,
      method,
      paths,
      connections,
      durationSec: ROUND_SEC,
      ...(warm ? { warmupSec: WARMUP } : {}),
    }),
    createDk: (prefix) => ({ mode: 'counter', template: `/dataKey/${prefix}-{n}?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${fx.token}` }),
    createPk: (prefix) => ({ mode: 'counter', template: `/primaryKey/${prefix}-{n}?user=${USER}&token=${fx.token}` }),
  };
}

/**
 * 1. Writes and warm reads, per concurrency: raw conditional PUT, POST /dataKey, POST /primaryKey;
 *    bare node:https and warm GET /dataKey (lean host, all functions, HTTPS).
 */
async function writesAndWarmReads(b: Bench): Promise<void> {
  if (!(enabled('s3') || enabled('lean') || enabled('bare'))) return;
  const { results, servers, http } = b;
  const lean = enabled('lean') ? await servers.lean('lean-https', b.fnEnv, 'self-signed', '') : undefined;
  const bare = enabled('bare') ? await servers.bare('https') : undefined;
  if (lean !== undefined) {
    await warmUp(lean.url, b.warmPath);
    results.memory['lean host, all functions, after warm-up (MB)'] = rssMb(lean.proc.pid);
  }
  for (const c of CONCURRENCIES) {
    const writes: MeasureItem[] = [];
    if (enabled('s3')) {
      writes.push(
        item({ id: `s3-put-c${c}`, group: 'raw-s3', host: 'raw S3 (RGW)', route: 'PUT If-None-Match:*', concurrency: c }, (r) => ({
          ...b.s3Base,
          op: 'put-if-none-match',
          connections: c,
          keyTemplate: `raw/c${c}-r${r}-{n}`,
          bodyBytes: b.recordBytes,
        })),
      );
    }
    if (lean !== undefined) {
      writes.push(
        item(
          { id: `lean-createdk-c${c}`, group: 'kms', host: 'lean https', route: 'POST /dataKey', concurrency: c },
          (r) => http(lean.url, 'POST', b.createDk(`lean-c${c}-r${r}`), c, false),
          lean.proc.pid,
        ),
      );
      writes.push(
        item(
          { id: `lean-createpk-c${c}`, group: 'kms', host: 'lean https', route: 'POST /primaryKey', concurrency: c },
          (r) => http(lean.url, 'POST', b.createPk(`lean-c${c}-r${r}`), c, false),
          lean.proc.pid,
        ),
      );
    }
    await b.measure(writes);
    if (c === b.goalC && lean !== undefined) await pinnedWrites(b, lean, c);
    await b.measure([
      ...warmRead(b, bare, `bare-https-c${c}`, 'bare node:https', c),
      ...warmRead(b, lean, `lean-warm-c${c}`, 'lean https', c),
      ...(c === b.goalC ? await sealedWarmRead(b, lean, c) : []),
    ]);
    if (c === b.goalC && lean !== undefined) await equalRateReads(b, lean, c);
  }
  if (bare !== undefined) await servers.stop(bare.proc);
  if (lean !== undefined) await servers.stop(lean.proc);
}

/** The storage-bound writes again, pinned (bench/pinning.ts): raw conditional PUT and POST /dataKey. */
async function pinnedWrites(b: Bench, lean: Server, c: number): Promise<void> {
  if (b.pin === undefined || !enabled('s3')) return;
  const items = [
    item({ id: `s3-put-c${c}-pinned`, group: 'raw-s3', host: 'raw S3 (RGW), pinned', route: 'PUT If-None-Match:*', concurrency: c }, (r) => ({
      ...b.s3Base,
      op: 'put-if-none-match',
      connections: c,
      keyTemplate: `raw/c${c}-pinned-r${r}-{n}`,
      bodyBytes: b.recordBytes,
    })),
    item(
      { id: `lean-createdk-c${c}-pinned`, group: 'kms', host: 'lean https, pinned', route: 'POST /dataKey', concurrency: c },
      (r) => b.http(lean.url, 'POST', b.createDk(`lean-c${c}-pinned-r${r}`), c, false),
      lean.proc.pid,
    ),
  ];
  await b.pin([lean.proc.pid], () => b.measure(items));
}

/**
 * 2. Cold reads, per concurrency: raw GETs of the raw objects, each once per round, and GET
 *    /dataKey of data keys the lean host has never seen, each once (credentials and primary key
 *    cached: one storage GET per request). One lean host serves all of them, its code warmed up
 *    first on other cold keys, so each key is read once: the pool is split between the rounds.
 *    Returns the shares of the pool set aside for phase 3's cold cases.
 */
/** The warm `GET /dataKey` on `server` at concurrency c (on a bare server, the same bytes), if it runs. */
function warmRead(b: Bench, server: Server | undefined, id: string, host: string, c: number): MeasureItem[] {
  if (server === undefined) return [];
  const bare = host.startsWith('bare');
  const record = { id, group: bare ? 'bare' : 'kms', host, route: bare ? 'same bytes as warm GET' : 'GET /dataKey warm', concurrency: c } as const;
  return [item(record, () => b.http(server.url, 'GET', b.fixed, c, true), server.proc.pid)];
}

/**
 * The plaintext and the sealed warm read again, both at one request rate (80% of the sealed read's
 * closed-loop rate, so both keep up), same connections: the CPU a request costs falls as the rate
 * rises (more answers per event-loop turn, fewer wake-ups), so a ratio of CPU per request taken at
 * two different rates mixes that in. Reported beside the closed-loop ratio, not instead of it.
 */
async function equalRateReads(b: Bench, lean: Server, c: number): Promise<void> {
  const sealedRps = b.results.cases.find((x) => x.id === `lean-sealed-warm-c${c}`)?.result?.rps;
  if (sealedRps === undefined || sealedRps < 10) return;
  const rate = Math.round(sealedRps * 0.8);
  const plain = item(
    { id: `lean-warm-c${c}-equal-rate`, group: 'kms', host: 'lean https', route: `GET /dataKey warm, at ${rate} req/s`, concurrency: c },
    () => paced(b.http(lean.url, 'GET', b.fixed, c, true), rate),
    lean.proc.pid,
  );
  await b.measure([plain, ...(await sealedWarmRead(b, lean, c, rate))]);
}

/**
 * `spec` at `rate` requests per second. autocannon paces each connection by whole seconds (its
 * share of a second sent at once, then a wait for the next second), so a paced case runs whole
 * seconds, without a warm-up of its own (its server is warm from the closed-loop cases): over them
 * the rate is the one asked for, the bursts within each second alike for every case at that rate.
 */
function paced(spec: HttpCase, rate: number): HttpCase {
  return { ...spec, rate, durationSec: Math.max(1, Math.round(spec.durationSec)), warmupSec: 0 };
}

/**
 * The same warm read with a sealed credential per request and a sealed answer (docs/sealed-channel.md),
 * sealed as tee-kms/client seals within its key reuse time; at `rate` req/s if given.
 */
async function sealedWarmRead(b: Bench, server: Server | undefined, c: number, rate?: number): Promise<MeasureItem[]> {
  if (server === undefined) return [];
  const attestation = await fetchOnce(`${server.url}/attestation?nonce=${randomBytes(32).toString('base64url')}`);
  if (attestation.status !== 200) {
    b.results.notes.push(`sealed warm read not measured: GET /attestation answered ${attestation.status}`);
    return [];
  }
  const { serviceKey } = JSON.parse(attestation.body) as { serviceKey: Record<string, string> };
  const path = `/dataKey/${WARM_KEY}?primaryKeyName=${PRIMARY_KEY}`;
  // Enough credentials for a round and its warm-up at 10,000 sealed reads/s, each used once (a reuse
  // is refused with 401, cheaper than a read, and shows in the case's failures).
  const count = Math.ceil((ROUND_SEC + 1) * 10_000);
  const record = {
    id: rate === undefined ? `lean-sealed-warm-c${c}` : `lean-sealed-warm-c${c}-equal-rate`,
    group: 'kms',
    host: 'lean https',
    route: rate === undefined ? 'GET /dataKey warm, sealed' : `GET /dataKey warm, sealed, at ${rate} req/s`,
    concurrency: c,
  } as const;
  return [
    item(
      record,
      () => {
        const sealed = {
          ...b.http(server.url, 'GET', { mode: 'sealed', path, serviceKey, user: USER, token: b.fx.token, count }, c, true),
          headers: { accept: 'application/json' },
        };
        return rate === undefined ? sealed : paced(sealed, rate);
      },
      server.proc.pid,
    ),
  ];
}

async function coldReads(b: Bench): Promise<ColdPaths> {
  const { results, servers, fx, http, goalC } = b;
  const ffCold = enabled('ff') ? [goalC] : [];
  let ffColdPaths: string[][] = [];
  // The production shape (Knative: the gateway ends TLS): one function, plain HTTP, at c=goalC.
  const leanHttpCold = enabled('leanhttp') ? [goalC] : [];
  let leanHttpColdPaths: string[][] = [];
  // The same cold read pinned (bench/pinning.ts), against raw GETs pinned, at c=goalC.
  const pinnedCold = b.pin !== undefined && enabled('lean') && enabled('s3') ? [goalC] : [];
  let pinnedColdPaths: string[][] = [];
  if (enabled('s3') || enabled('lean') || enabled('ff') || enabled('leanhttp')) {
    let rawPool: string[] = [];
    if (enabled('s3')) {
      rawPool = await fx.rawKeys('raw/');
      if (rawPool.length < MIN_POOL / 2) {
        await fx.addRawObjects('raw/', MIN_POOL / 2 - rawPool.length, b.recordBytes);
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
      const cs = [...(enabled('lean') ? CONCURRENCIES : []), ...pinnedCold, ...leanHttpCold, ...ffCold];
      const weights = cs.map((c) => (c === 1 ? 1 : 2));
      const total = weights.reduce((x, y) => x + y, 0);
      let at = 0;
      cold = weights.map((w) => {
        const part = paths.slice(at, (at += Math.floor((paths.length * w) / total)));
        return Array.from({ length: ROUNDS }, (_, r) => part.slice(Math.floor((part.length * r) / ROUNDS), Math.floor((part.length * (r + 1)) / ROUNDS)));
      });
      if (ffCold.length > 0) ffColdPaths = cold.pop()!;
      if (leanHttpCold.length > 0) leanHttpColdPaths = cold.pop()!;
      if (pinnedCold.length > 0) pinnedColdPaths = cold.pop()!;
    }
    const lean = enabled('lean') ? await servers.lean('lean-https-cold', b.fnEnv, 'self-signed', '') : undefined;
    const leanHttp = leanHttpCold.length > 0 ? await servers.lean('lean-http-cold', b.fnEnv, 'off', 'getDataKey') : undefined;
    // Unmeasured: the cold path's code (the S3 client above all) gets compiled before the clock.
    // Beyond the shared warm-up keys, each host reads up to COLD_JIT_READS keys that only other
    // cases measure (still cold for them: every process has its own cache), so that both start
    // warm: the lean https host also serves c=1 rounds before its c=16 ones, the lean http host
    // only c=16 (docs/performance.md, "Where the time goes now").
    const measuredBy = { lean: [...cold.flat(2), ...pinnedColdPaths.flat()], leanHttp: leanHttpColdPaths.flat(), ff: ffColdPaths.flat() };
    for (const [host, others] of [
      [lean, [...measuredBy.leanHttp, ...measuredBy.ff]],
      [leanHttp, [...measuredBy.lean, ...measuredBy.ff]],
    ] as const) {
      if (host === undefined) continue;
      await warmUp(host.url, b.warmPath);
      const paths = [...jitWarmUp, ...others.slice(0, COLD_JIT_READS)];
      await b.generator.run(http(host.url, 'GET', { mode: 'list', paths }, 16, false)).catch(() => undefined);
    }
    for (const [i, c] of CONCURRENCIES.entries()) {
      const items: MeasureItem[] = [];
      if (enabled('s3')) {
        items.push(
          item({ id: `s3-get-c${c}`, group: 'raw-s3', host: 'raw S3 (RGW)', route: 'GET (each object once)', concurrency: c }, (): LoadCase => ({
            ...b.s3Base,
            op: 'get',
            connections: c,
            keys: shuffled(rawPool),
          })),
        );
      }
      if (lean !== undefined) {
        items.push(
          item(
            { id: `lean-cold-c${c}`, group: 'kms', host: 'lean https', route: 'GET /dataKey cold (each key once)', concurrency: c },
            (r) => http(lean.url, 'GET', { mode: 'list', paths: cold[i]![r]! }, c, false),
            lean.proc.pid,
          ),
        );
      }
      if (leanHttp !== undefined && c === goalC) {
        items.push(
          item(
            { id: `leanhttp-cold-c${c}`, group: 'kms', host: 'lean http', route: 'GET /dataKey cold (each key once)', concurrency: c },
            (r) => http(leanHttp.url, 'GET', { mode: 'list', paths: leanHttpColdPaths[r]! }, c, false),
            leanHttp.proc.pid,
          ),
        );
      }
      await b.measure(items);
      if (c === goalC && lean !== undefined && pinnedCold.length > 0) {
        const pinnedItems = [
          item({ id: `s3-get-c${c}-pinned`, group: 'raw-s3', host: 'raw S3 (RGW), pinned', route: 'GET (each object once)', concurrency: c }, (): LoadCase => ({
            ...b.s3Base,
            op: 'get',
            connections: c,
            keys: shuffled(rawPool),
          })),
          item(
            { id: `lean-cold-c${c}-pinned`, group: 'kms', host: 'lean https, pinned', route: 'GET /dataKey cold (each key once)', concurrency: c },
            (r) => http(lean.url, 'GET', { mode: 'list', paths: pinnedColdPaths[r]! }, c, false),
            lean.proc.pid,
          ),
        ] as const;
        await b.pin!([lean.proc.pid], () => b.measure(pinnedItems));
      }
    }
    if (lean !== undefined) await servers.stop(lean.proc);
    if (leanHttp !== undefined) await servers.stop(leanHttp.proc);
  }
  const leanRss = results.cases.filter((r) => r.host === 'lean https' && r.rssMaxMb !== undefined).map((r) => r.rssMaxMb!);
  if (leanRss.length > 0) results.memory['lean host, all functions, max under load (MB)'] = Math.max(...leanRss);
  return { ff: ffColdPaths, leanHttp: leanHttpColdPaths };
}

/**
 * 3. Plain HTTP, per concurrency: bare node:http, warm GET /dataKey on the lean host with
 *    KMS_TLS=off and FUNCTION_TARGET=getDataKey (Knative), and under functions-framework.
 */
async function plainHttp(b: Bench, cold: ColdPaths): Promise<void> {
  if (!(enabled('bare') || enabled('leanhttp') || enabled('ff'))) return;
  const { results, servers, http, goalC } = b;
  const ffCold = enabled('ff') ? [goalC] : [];
  const bare = enabled('bare') ? await servers.bare('http') : undefined;
  const lean = enabled('leanhttp') ? await servers.lean('lean-http', b.fnEnv, 'off', 'getDataKey') : undefined;
  const ff = enabled('ff') ? await servers.ff('ff-get', b.fnEnv, 'get-data-key.js', 'getDataKey') : undefined;
  if (lean !== undefined) await warmUp(lean.url, b.warmPath);
  if (ff !== undefined) {
    await warmUp(ff.url, b.warmPath);
    results.memory['functions-framework getDataKey, after warm-up (MB)'] = rssMb(ff.proc.pid);
  }
  for (const c of CONCURRENCIES) {
    const items: MeasureItem[] = [];
    items.push(
      ...warmRead(b, bare, `bare-http-c${c}`, 'bare node:http', c),
      ...warmRead(b, lean, `leanhttp-warm-c${c}`, 'lean http', c),
      ...warmRead(b, ff, `ff-warm-c${c}`, 'functions-framework', c),
    );
    await b.measure(items);
  }
  if (ff !== undefined) {
    for (const c of ffCold) {
      await b.measure([
        item(
          { id: `ff-cold-c${c}`, group: 'kms', host: 'functions-framework', route: 'GET /dataKey cold (each key once)', concurrency: c },
          (r) => http(ff.url, 'GET', { mode: 'list', paths: cold.ff[r]! }, c, false),
          ff.proc.pid,
        ),
      ]);
    }
    results.memory['functions-framework getDataKey, max under load (MB)'] = Math.max(
      ...results.cases.filter((r) => r.host === 'functions-framework').map((r) => r.rssMaxMb ?? 0),
    );
    await servers.stop(ff.proc);
    const ffCreate = await servers.ff('ff-create', b.fnEnv, 'create-data-key.js', 'createDataKey');
    // The first request checks the token (scrypt); do it before the clock starts, as for the others.
    await fetchOnce(`${ffCreate.url}/dataKey/ff-warmup?primaryKeyName=${PRIMARY_KEY}&user=${USER}&token=${b.fx.token}`, { method: 'POST' });
    await b.measure([
      item(
        { id: `ff-createdk-c${goalC}`, group: 'kms', host: 'functions-framework', route: 'POST /dataKey', concurrency: goalC },
        (r) => http(ffCreate.url, 'POST', b.createDk(`ff-c${goalC}-r${r}`), goalC, false),
        ffCreate.proc.pid,
      ),
    ]);
    await servers.stop(ffCreate.proc);
  }
  if (lean !== undefined) await servers.stop(lean.proc);
  if (bare !== undefined) await servers.stop(bare.proc);
}

/**
 * 4. Cold start: process start → first 200 of GET /dataKey, one function per process, the two
 *    hosts alternating (lean, functions-framework, lean, …).
 */
async function coldStarts(b: Bench): Promise<void> {
  if (!enabled('coldstart')) return;
  const { results, servers } = b;
  const lean: ColdStartRecord = { host: 'lean http', config: `FUNCTION_TARGET=getDataKey KMS_TLS=off, root key: ${results.meta.rootKeyMode}`, runs: [] };
  const ff: ColdStartRecord = { host: 'functions-framework', config: `--target=getDataKey, root key: ${results.meta.rootKeyMode}`, runs: [] };
  for (let i = 0; i < COLD_START_RUNS; i++) {
    lean.runs.push(await leanColdStart(servers, b.fnEnv, b.warmPath));
    if (i % 2 === 0) ff.runs.push(await ffColdStart(servers, b.fnEnv, b.warmPath));
  }
  results.coldStarts.push(summarizeColdStarts(lean), summarizeColdStarts(ff));
  if (results.meta.rootKeyMode === 'sealer') {
    // What the root key pull costs: the same function with the key from KMS_ROOT_KEY.
    const staticEnv = { ...b.baseEnv, KMS_ROOT_KEY: b.rootKey.toString('base64') };
    const lean2: ColdStartRecord = {
      host: 'lean http',
      config: 'FUNCTION_TARGET=getDataKey KMS_TLS=off, root key: static KMS_ROOT_KEY (for comparison)',
      runs: [],
    };
    for (let i = 0; i < Math.ceil(COLD_START_RUNS / 2); i++) lean2.runs.push(await leanColdStart(servers, staticEnv, b.warmPath));
    results.coldStarts.push(summarizeColdStarts(lean2));
  }
}

/** 5. Rotation of 10,000 primary keys (hook: see bench/rotation.ts), then its raw ceiling. */
async function rotation(b: Bench): Promise<void> {
  if (!enabled('rotation')) return;
  const { results, fx } = b;
  results.rotation = await rotationPhase(b);
  if (results.rotation.status === 'measured') {
    // Its ceiling: the same read-modify-write on raw objects, with the rotation's concurrency.
    let pool = await fx.rawKeys('raw/');
    if (pool.length < MIN_POOL) {
      await fx.addRawObjects('raw/', MIN_POOL - pool.length, b.recordBytes);
      pool = await fx.rawKeys('raw/');
    }
    const rmwCase = item(
      { id: 's3-rmw-c32', group: 'raw-s3', host: 'raw S3 (RGW)', route: 'GET + PUT If-Match (read-modify-write)', concurrency: 32 },
      (): LoadCase => ({ ...b.s3Base, op: 'get-replace', connections: 32, keys: shuffled(pool) }),
    );
    await b.measure([rmwCase]);
    const rmw = rmwCase.record.result?.rps;
    if (rmw !== undefined && rmw > 0) {
      results.rotation = {
        ...results.rotation,
        rawReadModifyWriteRps: Math.round(rmw),
        ratioToReadModifyWrite: Math.round((results.rotation.keysPerSecond / rmw) * 100) / 100,
        scaleOut: results.rotation.scaleOut?.map((p) => ({ ...p, ratioToReadModifyWrite: Math.round((p.keysPerSecond / rmw) * 100) / 100 })),
      };
    }
  }
}

/**
 * The rewrap shared by 1, 2 and 4 lean hosts (BENCH_ROTATION_SCALE_OUT, e.g. `1,2,4`; `0` skips):
 * one more rotation of the same keys per point.
 */
async function rotationScaleOut(servers: Servers, env: NodeJS.ProcessEnv, url: string, adminToken: string, keys: number): Promise<ScaleOutPoint[]> {
  const counts = (process.env.BENCH_ROTATION_SCALE_OUT ?? '1,2,4').split(',').map(Number);
  const extra: Server[] = [];
  const points: ScaleOutPoint[] = [];
  try {
    for (const n of counts) {
      while (extra.length < n - 1) extra.push(await servers.lean(`lean-rotation-${extra.length + 2}`, env, 'self-signed', ''));
      const point = await measureRewrapScaleOut({ urls: [url, ...extra.slice(0, n - 1).map((s) => s.url)], adminToken, keys, timeoutMs: 240_000 });
      log(`rotation scale-out, ${n} process(es): ${typeof point === 'string' ? point : `${point.seconds} s, ${point.keysPerSecond} keys/s`}`);
      if (typeof point !== 'string') points.push(point);
    }
  } finally {
    for (const s of extra) await servers.stop(s.proc);
  }
  return points;
}

/**
 * Rotation needs the sealer in mode 2 (shares): a fresh, uninitialized dev-mode sealer, a lean host
 * using it on its own key prefix, and this process as a second KMS instance (same code, same
 * sealer) creating the primary keys quickly.
 */
async function rotationPhase(b: Bench): Promise<RotationResult> {
  const { results, servers, baseEnv, adminToken } = b;
  const sealerMain = join(DIST, 'sealer/main.js');
  if (!existsSync(sealerMain)) return { status: 'skipped', note: 'dist/sealer/main.js is not built: rotation needs the sealing service' };
  // The admin policy grants the bench functions' (sample) identity rotate and verify.
  const identity = 'be'.repeat(48);
  const policyFile = join(servers.work, 'bench-admin-policy.json');
  mkdirSync(servers.work, { recursive: true });
  writeFileSync(policyFile, JSON.stringify({ rotate: [identity], verify: [identity], recover: [identity], seal: [identity] }));
  const sealer = servers.spawn('sealer-rotation', process.execPath, [sealerMain], {
    ...baseEnv,
    KMS_SEALER_ADMIN_POLICY_FILE: policyFile,
    KMS_SEALER_HOST: '127.0.0.1',
    KMS_SEALER_PORT: '0',
    KMS_SEALER_DATA_DIR: join(servers.work, 'sealer-rotation'),
    KMS_SEALER_INSECURE_DEV_MODE: 'true',
    KMS_S3_PREFIX: 'rotation/', // the functions' storage: the sealer stores root key links there
  });
  try {
    const { url, certFile } = await sealerAddress(sealer);
    const env: NodeJS.ProcessEnv = {
      ...baseEnv,
      KMS_S3_PREFIX: 'rotation/',
      KMS_SEALER_URL: url,
      KMS_SEALER_CA_FILE: certFile,
      KMS_ATTESTER: 'sample',
      KMS_SAMPLE_INIT_DATA: identity,
    };
    const lean = await servers.lean('lean-rotation', env, 'self-signed', '');
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
        results.notes.push(
          `Rotation over ${keys} primary keys instead of ${ROTATION_KEYS}: at ${Math.round(rawPut)} conditional PUTs/s the full run would not fit the bench's time budget (set BENCH_ROTATION_KEYS to force).`,
        );
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
          const { environmentContext } = await import('../shared/runtime.js');
          const { keys } = await environmentContext.runtime();
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
      if (result.status === 'measured' && !process.env.BENCH_ROTATION_SCALE_OUT?.startsWith('0')) {
        return { ...result, scaleOut: await rotationScaleOut(servers, env, lean.url, adminToken, keys) };
      }
      if (result.status === 'failed') log(`sealer output:\n${sealer.tail()}\nlean host output:\n${lean.proc.tail()}`);
      return result;
    } finally {
      await servers.stop(lean.proc);
    }
  } catch (error) {
    return { status: 'failed', note: firstLine((error as Error).message) };
  } finally {
    await servers.stop(sealer);
  }
}
