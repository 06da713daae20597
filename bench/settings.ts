/**
 * The bench's settings, read once from the environment (see bench/run.ts for the variables), its
 * paths, its log and the small helpers its modules share.
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DIST = join(ROOT, 'dist');
export const FF_MAIN = join(ROOT, 'node_modules/@google-cloud/functions-framework/build/src/main.js');
export const DURATION = Number(process.env.BENCH_DURATION || 5);
/** Each case runs in ROUNDS rounds of DURATION / ROUNDS seconds, alternating with its limit. */
export const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS || 3));
export const ROUND_SEC = DURATION / ROUNDS;
export const WARMUP = Math.min(0.3, ROUND_SEC / 4);
export const CONCURRENCIES = (process.env.BENCH_CONCURRENCY || '1,16,64')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => n > 0);
const ONLY = new Set(
  (process.env.BENCH_ONLY || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);
export const OUT = process.env.BENCH_OUT || join(ROOT, 'bench/results');
export const COLD_START_RUNS = Number(process.env.BENCH_COLD_START_RUNS || 5);
export const enabled = (group: string) => ONLY.size === 0 || ONLY.has(group);
/** BENCH_ONLY=files: no server, no storage, only the file formats (bench/files.ts). */
export const onlyFiles = () => ONLY.size === 1 && ONLY.has('files');
/** The goals are stated at concurrency 16. */
export const GOAL_C = 16;
/** The concurrency of the goal cases: GOAL_C when it is measured, else the first one measured. */
export const goalConcurrency = () => (CONCURRENCIES.includes(GOAL_C) ? GOAL_C : CONCURRENCIES[0]!);

/** How the pinned storage cases run (bench/pinning.ts). */
export const PINNED = 'pinned (RGW on one core, KMS + load generator on the other)';

export const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

export function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  shuffle(copy);
  return copy;
}

export function shuffle<T>(items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}

export function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

export function round1(v: number | undefined): number | undefined {
  return v === undefined ? undefined : Math.round(v * 10) / 10;
}

export function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').slice(0, 200);
}
