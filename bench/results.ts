/**
 * The run's results: the record every phase adds to, what is derived from the cases at the end
 * (ratios to their limits, goals, notes), and the files written to BENCH_OUT.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { markdown, svgChart, textTable, type BenchResults, type CaseRecord, type Goal } from './report.js';
import { ROTATION_KEYS } from './rotation.js';
import { CONCURRENCIES, DURATION, GOAL_C, goalConcurrency, OUT, PINNED, ROOT, round2, ROUNDS } from './settings.js';

/** An empty record, its metadata filled in (the root key source is chosen later). */
export function newResults(): BenchResults {
  return {
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
}

/** Ratios to the limits, goals, notes and the run's time and load, once every phase has run. */
export function finishResults(results: BenchResults, wallStart: number, loadAtStart: number): void {
  const byId = new Map(results.cases.map((c) => [c.id, c]));
  for (const c of results.cases) {
    const limitId = limitOf(c);
    const limit = limitId === undefined ? undefined : byId.get(limitId);
    if (limitId !== undefined && limit?.result !== undefined && c.result !== undefined && limit.result.rps > 0) {
      c.limitId = limitId;
      c.ratio = Math.round((c.result.rps / limit.result.rps) * 100) / 100;
    }
  }
  results.goals = goals(results, byId);
  results.notes.push(
    "functions-framework runs as `node node_modules/@google-cloud/functions-framework/build/src/main.js --source=dist/functions/<fn>.js --target=<fn>`, which is what `npx functions-framework` execs (without npm's own start-up).",
    'lean https = `node dist/scripts/serve.js` with all functions (as `npm start`); lean http = the same with KMS_TLS=off and FUNCTION_TARGET=getDataKey (as in Knative). functions-framework serves plain HTTP, so compare it with bare node:http.',
    'Server stdout (the JSON access log) is a pipe drained by the bench process, as a container runtime drains it.',
    'Cold reads: each data key is read once by a lean host that has never seen it (its credentials and primary key cached by one warm-up request, its code warmed up on other cold keys: one storage GET per request); raw GETs read each object once per round. Both draw from pools (what the create cases wrote, topped up to a minimum); a round ends after its time or when its share is used up (its rate is then over the time it ran).',
  );
  if (results.cases.some((c) => c.id.endsWith('-pinned')))
    results.notes.push(
      'Pinned cases ("pinned" in the host column): Ceph RGW\'s daemons (mon, OSD, radosgw; every thread) on core 0; the lean host, the load generator and the bench process (which drains the host\'s stdout) on core 1, with `taskset -a` (bench/pinning.ts), for the pinned cases and their pinned limits only; other work on the machine is not pinned.',
    );
  for (const c of results.cases) {
    if (c.result !== undefined && c.result.seconds < DURATION * 0.9)
      results.notes.push(`${c.host} ${c.route} c=${c.concurrency} used up its share of the pool after ${c.result.seconds} s in all (${c.result.ok} answers).`);
  }
  results.meta = { ...results.meta, wallSeconds: (performance.now() - wallStart) / 1000, loadAverage: [loadAtStart, round2(loadavg()[0]!)] };
}

/** latest.json, latest.md and latest.svg in BENCH_OUT, and the table on stdout. */
export function writeResults(results: BenchResults): void {
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(OUT, 'latest.md'), markdown(results));
  writeFileSync(join(OUT, 'latest.svg'), svgChart(results, goalConcurrency()));
  process.stdout.write(
    `\n${textTable(results)}\n\nwritten: ${join(OUT, 'latest.json')}, latest.md, latest.svg (${Math.round(results.meta.wallSeconds ?? 0)} s)\n`,
  );
}

function limitOf(c: CaseRecord): string | undefined {
  const k = c.concurrency;
  // A pinned case (RGW on one core, the KMS and the load generator on the other) has a pinned limit.
  const pinned = c.id.endsWith('-pinned') ? '-pinned' : '';
  // At a set rate, req/s is the rate asked for: no ratio of it means anything.
  if (c.id.endsWith('-equal-rate')) return undefined;
  if (c.id.startsWith('lean-warm-')) return `bare-https-c${k}`;
  if (c.id.startsWith('lean-sealed-warm-')) return `lean-warm-c${k}`;
  if (c.id.startsWith('leanhttp-warm-') || c.id.startsWith('ff-warm-')) return `bare-http-c${k}`;
  if (c.id.includes('-cold-')) return `s3-get-c${k}${pinned}`;
  if (c.id.includes('-createdk-') || c.id.includes('-createpk-')) return `s3-put-c${k}${pinned}`;
  return undefined;
}

const fmtRps = (c: CaseRecord | undefined) => (c?.result === undefined ? 'not measured' : `${Math.round(c.result.rps).toLocaleString('en-US')} req/s`);

function goals(results: BenchResults, byId: Map<string, CaseRecord>): Goal[] {
  const g: Goal[] = [];
  const ratioGoal = (goal: string, id: string, min: number) => {
    const c = byId.get(id);
    const limitId = c?.limitId ?? (c === undefined ? undefined : limitOf(c));
    g.push({
      goal,
      target: `≥ ${min} of ${limitId ?? 'its limit'}`,
      measured: c?.ratio === undefined ? 'not measured' : `${c.ratio} (${Math.round(c.result!.rps)} req/s)`,
      limit: limitId === undefined ? 'not measured' : `${limitId}: ${fmtRps(byId.get(limitId))}`,
      met: c?.ratio === undefined ? undefined : c.ratio >= min,
    });
  };
  ratioGoal('warm GET /dataKey, lean https, c=16', `lean-warm-c${GOAL_C}`, 0.5);
  // p99 relative to the bare server's in the same run: an absolute figure moves with the machine's load.
  const warm = byId.get(`lean-warm-c${GOAL_C}`)?.result;
  const bareP99 = byId.get(`bare-https-c${GOAL_C}`)?.result?.p99;
  const p99Ratio = warm === undefined || bareP99 === undefined || bareP99 <= 0 ? undefined : round2(warm.p99 / bareP99);
  g.push({
    goal: 'warm GET /dataKey p99, lean https, c=16',
    target: `≤ 2× the p99 of bare-https-c${GOAL_C}`,
    measured: warm === undefined ? 'not measured' : `${p99Ratio === undefined ? '?' : `${p99Ratio}×`} (${warm.p99} ms)`,
    limit: bareP99 === undefined ? 'not measured' : `bare-https-c${GOAL_C}: p99 ${bareP99} ms`,
    met: p99Ratio === undefined ? undefined : p99Ratio <= 2,
  });
  // The sealed read's CPU against the plaintext read's, closed loop (the goal's figure) and, beside
  // it, both at one rate.
  const cpuGoal = (goal: string, target: string, suffix: string) => {
    const sealed = byId.get(`lean-sealed-warm-c${GOAL_C}${suffix}`);
    const plainCpu = byId.get(`lean-warm-c${GOAL_C}${suffix}`)?.serverCpuUsPerReq;
    const sealedCpu = sealed?.serverCpuUsPerReq;
    const known = sealedCpu !== undefined && plainCpu !== undefined;
    g.push({
      goal,
      target,
      measured: known ? `${Math.round((sealedCpu / plainCpu) * 100) / 100}× (${sealedCpu} µs; ${Math.round(sealed?.result?.rps ?? 0)} req/s)` : 'not measured',
      limit: plainCpu === undefined ? 'not measured' : `lean-warm-c${GOAL_C}${suffix}: ${plainCpu} µs per request`,
      met: known ? sealedCpu <= 2 * plainCpu : undefined,
    });
  };
  cpuGoal('sealed warm GET /dataKey: server CPU per request, lean https, c=16', '≤ 2× the plaintext warm read', '');
  cpuGoal(
    'beside it, not the goal: the same at an equal request rate (both at 80% of the sealed closed-loop rate), c=16',
    '≤ 2× the plaintext warm read at that rate',
    '-equal-rate',
  );
  ratioGoal('cold GET /dataKey, lean https, c=16', `lean-cold-c${GOAL_C}`, 0.8);
  ratioGoal(`cold GET /dataKey, lean https, c=16, ${PINNED}`, `lean-cold-c${GOAL_C}-pinned`, 0.8);
  ratioGoal('cold GET /dataKey, lean http (Knative: the gateway ends TLS), c=16', `leanhttp-cold-c${GOAL_C}`, 0.8);
  ratioGoal('POST /dataKey, lean https, c=16', `lean-createdk-c${GOAL_C}`, 0.8);
  ratioGoal(`POST /dataKey, lean https, c=16, ${PINNED}`, `lean-createdk-c${GOAL_C}-pinned`, 0.8);
  const cs = results.coldStarts.find((c) => c.host === 'lean http');
  g.push({
    goal: 'cold start to first 200 (lean, one function)',
    target: '≤ 300 ms',
    measured: cs?.medianFirstOkMs === undefined ? 'not measured' : `${cs.medianFirstOkMs} ms (median)`,
    limit: 'absolute',
    met: cs?.medianFirstOkMs === undefined ? undefined : cs.medianFirstOkMs <= 300,
  });
  g.push({
    goal: 'idle RSS per function (lean, after first 200)',
    target: '≤ 80 MB',
    measured: cs?.medianIdleRssMb === undefined ? 'not measured' : `${cs.medianIdleRssMb} MB`,
    limit: 'absolute',
    met: cs?.medianIdleRssMb === undefined ? undefined : cs.medianIdleRssMb <= 80,
  });
  const rot = results.rotation;
  // A rewrap is a read-modify-write (GET, then PUT If-Match): that is the rotation's real limit.
  const rmw = rot.status === 'measured' ? rot.ratioToReadModifyWrite : undefined;
  g.push({
    goal: `rotation of ${(rot.status === 'measured' ? rot.keys : ROTATION_KEYS).toLocaleString('en-US')} primary keys`,
    target: '≥ 0.9 of raw read-modify-writes (GET + conditional PUT)',
    measured:
      rot.status === 'measured'
        ? `${rmw ?? '?'} (${rot.keysPerSecond} keys/s, ${rot.seconds} s)${rot.ratio === undefined ? '' : `; ${rot.ratio} of raw conditional PUT`}`
        : `${rot.status}`,
    limit: rot.status === 'measured' && rot.rawReadModifyWriteRps !== undefined ? `raw read-modify-write: ${rot.rawReadModifyWriteRps} per s` : 'not measured',
    met: rmw === undefined ? undefined : rmw >= 0.9,
  });
  const files = results.files;
  const rawGcm = files?.ops.find((r) => r.op === 'raw-gcm');
  for (const op of ['tee-kms-encrypt', 'tee-kms-decrypt', 'cli-encrypt', 'cli-decrypt']) {
    const o = files?.ops.find((r) => r.op === op);
    g.push({
      goal: `${op}, ${files?.fileMb ?? 1024} MiB file`,
      target: '≥ 0.7 of one raw aes-256-gcm pass',
      measured: o?.ratio === undefined ? 'not measured' : `${o.ratio} (${o.mibPerSecond} MiB/s)`,
      limit: rawGcm === undefined ? 'not measured' : `raw-gcm: ${rawGcm.mibPerSecond} MiB/s`,
      met: o?.ratio === undefined ? undefined : o.ratio >= 0.7,
    });
  }
  const cliOps = files?.ops.filter((o) => o.op.startsWith('cli-')) ?? [];
  const rss = cliOps.length === 0 ? undefined : Math.max(...cliOps.map((o) => o.maxRssMb));
  g.push({
    goal: 'peak RSS of `tee-kms encrypt` / `decrypt` (tee-kms format)',
    target: '≤ 100 MB',
    measured: rss === undefined ? 'not measured' : `${rss} MB`,
    limit: 'absolute',
    met: rss === undefined ? undefined : rss <= 100,
  });
  return g;
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    // The previous run's results are not a change to what is measured.
    const dirty =
      execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} (+ uncommitted changes)` : head;
  } catch {
    return 'unknown';
  }
}
