/**
 * `npm run bench` (scripts/bench.sh → node dist/bench/run.js): the storage limits, the HTTP ceiling
 * and the KMS through both hosts, on one machine, in one run. See docs/performance.md.
 *
 * Environment: BENCH_DURATION (seconds per load case, default 5, split into BENCH_ROUNDS rounds,
 * default 3), BENCH_CONCURRENCY (default 1,16,64), BENCH_ONLY (comma list of s3, bare, lean,
 * leanhttp, ff, coldstart, rotation, files; default all), BENCH_FILE_MB (the files group's file,
 * 1024), BENCH_FILES_DIR (where it goes), BENCH_COLD_START_RUNS (5), BENCH_ROTATION_KEYS,
 * BENCH_OUT (default bench/results), KMS_S3_ENDPOINT… (use a running S3 server instead of RGW).
 *
 * Every server and every load generator is its own process. A case that fails is recorded with its
 * error and the run goes on; only a broken harness makes this exit non-zero.
 *
 * The parts: bench/settings.ts (the environment above), bench/cases.ts (what is measured),
 * bench/servers.ts and bench/cold-start.ts (the servers under test), bench/measure.ts (the load
 * generator and the rounds), bench/results.ts (what is derived and written).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCases, type BenchContext } from './cases.js';
import { measureFiles } from './files.js';
import { LoadGenerator } from './measure.js';
import { finishResults, newResults, writeResults } from './results.js';
import { Servers } from './servers.js';
import { enabled, log, onlyFiles, round2 } from './settings.js';

const wallStart = performance.now();
const loadAtStart = round2(loadavg()[0]!);

const work = await mkdtemp(join(tmpdir(), 'tee-kms-bench-'));
const servers = new Servers(work);
const generator = new LoadGenerator();
const storage: BenchContext['storage'] = {};

/** Stops everything this run started (each step on its own: one failure does not skip the rest). */
async function cleanUp(): Promise<void> {
  const step = async (what: string, f: () => unknown) => {
    try {
      await f();
    } catch (error) {
      log(`clean-up, ${what}: ${(error as Error).message}`);
    }
  };
  await step('load generator', () => generator.stop());
  for (const p of [...servers.running].reverse()) await step(p.name, () => p.stop());
  await step('S3 clients', () => storage.fixtures?.close());
  await step('RGW', () => storage.rgw?.stop());
  await step('work directory', () => rm(work, { recursive: true, force: true }));
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanUp().finally(() => process.exit(130)));
}

const results = newResults();

try {
  if (!onlyFiles()) await runCases({ results, servers, generator, storage });
  if (enabled('files')) {
    try {
      results.files = await measureFiles(work);
    } catch (error) {
      // A failing case is recorded and the run goes on (its goals then say "not measured").
      results.notes.push(`files: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  finishResults(results, wallStart, loadAtStart);
  writeResults(results);
} catch (error) {
  log(`harness error: ${(error as Error).stack ?? String(error)}`);
  await cleanUp();
  process.exit(1);
}
await cleanUp();
process.exit(0);
