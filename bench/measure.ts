/**
 * Measuring: the load generator process, and cases run in alternating rounds whose medians are
 * recorded in the results (with the server's CPU time per request and its largest RSS).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { LoadCase, LoadResult } from './loadgen.js';
import { cpuMs, sampleRss } from './proc.js';
import { median, type BenchResults, type CaseRecord } from './report.js';
import { DIST, log, ROOT, ROUNDS } from './settings.js';

/**
 * The load generator: one long-lived child process (dist/bench/loadgen.js --ipc) that runs one case
 * per message, so no case pays a process start; it is restarted if it dies or a case hangs.
 */
export class LoadGenerator {
  private child: ChildProcess | undefined;

  run(spec: LoadCase): Promise<LoadResult> {
    if (this.child === undefined || this.child.exitCode !== null || !this.child.connected) {
      const generator = fork(join(DIST, 'bench/loadgen.js'), ['--ipc'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
      let err = '';
      generator.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
      generator.once('exit', (code) => {
        if (code !== 0 && code !== null) log(`load generator exited ${code}: ${err.trim().split('\n').slice(-3).join(' ')}`);
      });
      this.child = generator;
    }
    const child = this.child;
    return new Promise<LoadResult>((resolve, reject) => {
      const timeout = setTimeout(
        () => {
          child.kill('SIGKILL');
          reject(new Error('load generator: case timed out'));
        },
        (spec.durationSec + 120) * 1000,
      );
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

  /** The running process's pid (undefined before the first case or after it died). */
  pid(): number | undefined {
    return this.child !== undefined && this.child.exitCode === null ? this.child.pid : undefined;
  }

  /** Ends the process if it still runs. */
  stop(): void {
    if (this.child !== undefined && this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

export interface MeasureItem {
  readonly record: CaseRecord;
  readonly spec: (round: number) => LoadCase;
  /** The server under test (for its CPU time and RSS). */
  readonly pid?: number;
}

export const item = (record: CaseRecord, spec: (round: number) => LoadCase, pid?: number): MeasureItem => ({
  record,
  spec,
  ...(pid === undefined ? {} : { pid }),
});

/** Runs the items in ROUNDS alternating rounds and records the medians in `results` (see combine()). */
export async function measure(results: BenchResults, generator: LoadGenerator, items: readonly MeasureItem[]): Promise<void> {
  const perItem = items.map(() => ({ results: [] as LoadResult[], cpuMs: 0, rss: undefined as number | undefined, errors: [] as string[] }));
  for (const it of items) results.cases.push(it.record);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, it] of items.entries()) {
      const acc = perItem[i]!;
      const pid = it.pid;
      const sampler = pid === undefined ? undefined : sampleRss(pid);
      const before = pid === undefined ? undefined : cpuMs(pid);
      try {
        acc.results.push(await generator.run(it.spec(round)));
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
