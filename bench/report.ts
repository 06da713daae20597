/** The bench's results: JSON shape, the printed table, Markdown and an SVG chart. */
import type { LoadResult } from './loadgen.js';
import type { RotationResult } from './rotation.js';
import { goalConcurrency } from './settings.js';

export interface CaseRecord {
  readonly id: string;
  readonly group: 'raw-s3' | 'bare' | 'kms';
  readonly host: string;
  readonly route: string;
  readonly concurrency: number;
  result?: LoadResult;
  rssMaxMb?: number;
  /** The server process's CPU time (user + system) per answered request, warm-up included. */
  serverCpuUsPerReq?: number;
  /** Each round's figures; `result` holds their medians. */
  rounds?: { rps: number; p50: number; p99: number; seconds: number }[];
  error?: string;
  /** The case this one is compared with (raw S3 or the bare server), and the ratio of req/s. */
  limitId?: string;
  ratio?: number;
}

export interface ColdStartRun {
  readonly listenMs?: number;
  readonly firstOkMs?: number;
  readonly idleRssMb?: number;
  readonly error?: string;
}

export interface ColdStartRecord {
  readonly host: string;
  readonly config: string;
  readonly runs: ColdStartRun[];
  medianListenMs?: number;
  medianFirstOkMs?: number;
  medianIdleRssMb?: number;
}

export interface Goal {
  readonly goal: string;
  readonly target: string;
  readonly measured: string;
  /** What the figure is measured against, with its own figure from the same run ('absolute' if nothing). */
  readonly limit: string;
  readonly met: boolean | undefined;
}

/** One file operation of the `files` group (bench/files.ts): medians over the rounds. */
export interface FileOpRecord {
  readonly op: string;
  readonly mibPerSecond: number;
  /** The highest peak RSS of the operation's processes over the rounds. */
  readonly maxRssMb: number;
  /** Each round's seconds. */
  readonly rounds: number[];
  /** Throughput over raw-gcm's in the same run. */
  ratio?: number;
}

export interface FilesResult {
  readonly fileMb: number;
  readonly ops: FileOpRecord[];
}

export interface BenchResults {
  meta: {
    readonly date: string;
    readonly commit: string;
    readonly node: string;
    readonly cpu: string;
    readonly cpus: number;
    readonly memoryGb: number;
    readonly os: string;
    readonly durationSec: number;
    readonly rounds: number;
    readonly concurrencies: readonly number[];
    readonly storage: string;
    readonly rootKeyMode: 'sealer' | 'static';
    readonly rootKeyNote: string;
    readonly wallSeconds?: number;
    /** 1-minute load average at the start and at the end: other work on the machine skews a run. */
    readonly loadAverage?: readonly [number, number];
  };
  readonly cases: CaseRecord[];
  readonly coldStarts: ColdStartRecord[];
  readonly memory: Record<string, number | undefined>;
  rotation: RotationResult;
  files?: FilesResult;
  goals: Goal[];
  readonly notes: string[];
}

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1]! + s[mid]!) / 2;
}

const fmtInt = (v: number | undefined) => (v === undefined ? '–' : Math.round(v).toLocaleString('en-US'));
const fmtMs = (v: number | undefined) => (v === undefined ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1));
const fmtRatio = (v: number | undefined) => (v === undefined ? '' : v.toFixed(2));

function failures(c: CaseRecord): string {
  if (c.error !== undefined) return `error: ${c.error.split('\n')[0]!.slice(0, 60)}`;
  const f = c.result?.failures ?? {};
  const parts = Object.entries(f).map(([k, n]) => `${n}×${k}`);
  return parts.length === 0 ? '' : parts.join(' ');
}

function caseRows(results: BenchResults): string[][] {
  return results.cases.map((c) => [
    c.host,
    c.route,
    String(c.concurrency),
    fmtInt(c.result?.rps),
    fmtMs(c.result?.p50),
    fmtMs(c.result?.p99),
    c.limitId === undefined ? '' : `${fmtRatio(c.ratio)} of ${c.limitId}`,
    c.serverCpuUsPerReq === undefined
      ? c.group === 'raw-s3' && c.result?.clientCpuUsPerReq !== undefined
        ? `(client ${c.result.clientCpuUsPerReq})`
        : ''
      : String(Math.round(c.serverCpuUsPerReq)),
    c.rssMaxMb === undefined ? '' : String(Math.round(c.rssMaxMb)),
    failures(c),
  ]);
}

const CASE_HEADER = ['host', 'case', 'conc.', 'req/s', 'p50 ms', 'p99 ms', 'ratio to limit', 'server CPU µs/req', 'RSS max MB', 'failures'];
const NUMERIC = new Set([2, 3, 4, 5, 7, 8]);

export function textTable(results: BenchResults): string {
  const rows = [CASE_HEADER, ...caseRows(results)];
  const widths = CASE_HEADER.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((cell, i) => (NUMERIC.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  out.push('', ...coldStartLines(results), '', `rotation: ${rotationLine(results.rotation)}`, ...fileLines(results).map((l) => `files: ${l}`), '', 'goals:');
  for (const g of results.goals)
    out.push(`  [${g.met === undefined ? ' ? ' : g.met ? 'met' : 'NOT'}] ${g.goal}: target ${g.target}; measured ${g.measured}; limit ${g.limit}`);
  return out.join('\n');
}

function coldStartLines(results: BenchResults): string[] {
  return results.coldStarts.map(
    (c) =>
      `cold start, ${c.host} (${c.config}): first 200 after ${fmtMs(c.medianFirstOkMs)} ms (median of ${c.runs.filter((r) => r.firstOkMs !== undefined).length}/${c.runs.length}; listening after ${fmtMs(c.medianListenMs)} ms); idle RSS ${fmtMs(c.medianIdleRssMb)} MB` +
      (c.runs.some((r) => r.error !== undefined) ? `; errors: ${c.runs.find((r) => r.error !== undefined)!.error}` : ''),
  );
}

function fileLines(results: BenchResults): string[] {
  const f = results.files;
  if (f === undefined) return [];
  return f.ops.map(
    (o) =>
      `${o.op}, ${f.fileMb} MiB: ${fmtInt(o.mibPerSecond)} MiB/s${o.ratio === undefined ? '' : ` (${fmtRatio(o.ratio)} of raw-gcm)`}; peak RSS ${o.maxRssMb} MB; rounds ${o.rounds.join(', ')} s`,
  );
}

function rotationLine(r: RotationResult): string {
  if (r.status !== 'measured') return `${r.status}: ${r.note}`;
  return `${r.keys} primary keys in ${r.seconds} s = ${fmtInt(r.keysPerSecond)} keys/s; ${r.ratio === undefined ? '' : `${fmtRatio(r.ratio)} of raw conditional PUT (${fmtInt(r.rawPutRps)}/s)`}${r.ratioToReadModifyWrite === undefined ? '' : `; ${fmtRatio(r.ratioToReadModifyWrite)} of raw read-modify-write (GET + PUT If-Match: ${fmtInt(r.rawReadModifyWriteRps)}/s, this design's ceiling)`}${
    r.scaleOut === undefined || r.scaleOut.length === 0
      ? ''
      : `; shared by ${r.scaleOut.map((p) => `${p.processes}: ${fmtInt(p.keysPerSecond)} keys/s${p.ratioToReadModifyWrite === undefined ? '' : ` (${fmtRatio(p.ratioToReadModifyWrite)})`}`).join(', ')} processes`
  }`;
}

export function markdown(results: BenchResults): string {
  const m = results.meta;
  const md: string[] = [];
  md.push(`# tee-kms bench: ${m.date}`, '');
  md.push(
    `Commit ${m.commit}; Node ${m.node}; ${m.cpus} × ${m.cpu}; ${m.memoryGb} GB; ${m.os}. Storage: ${m.storage}. ` +
      `Root key: **${m.rootKeyMode}** (${m.rootKeyNote}). Each case: ${m.rounds} rounds of ${Math.round((m.durationSec / m.rounds) * 100) / 100} s alternating with its limit; figures are medians of the rounds. Load generator in its own process. ` +
      `p50/p99 are of successful answers; ratios are req/s over the named limit at the same concurrency.${m.wallSeconds === undefined ? '' : ` Whole run: ${Math.round(m.wallSeconds)} s.`}` +
      (m.loadAverage === undefined ? '' : ` Load average (1 min) at start ${m.loadAverage[0]}, at end ${m.loadAverage[1]} on ${m.cpus} cores.`),
    '',
  );
  // One table of every goal, its figure and the limit it is measured against, the chart beside it.
  md.push('## Goals', '', '| goal | target | measured | limit (same run) | met |', '|---|---|---|---|---|');
  for (const g of results.goals) md.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${g.limit} | ${g.met === undefined ? '?' : g.met ? 'yes' : '**no**'} |`);
  md.push('', `![req/s at concurrency ${goalConcurrency()}, each KMS case beside its limit](latest.svg)`, '');
  md.push('## Throughput and latency', '');
  md.push(`| ${CASE_HEADER.join(' | ')} |`, `|${CASE_HEADER.map((_, i) => (NUMERIC.has(i) ? '---:' : '---')).join('|')}|`);
  for (const r of caseRows(results)) md.push(`| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`);
  md.push('', '## Cold start and memory', '');
  for (const l of coldStartLines(results)) md.push(`- ${l}`);
  for (const [k, v] of Object.entries(results.memory)) md.push(`- ${k}: ${v === undefined ? '–' : `${v} MB`}`);
  md.push('', '## Rotation', '', rotationLine(results.rotation), '');
  if (results.files !== undefined) md.push('## Files', '', ...fileLines(results).map((l) => `- ${l}`), '');
  if (results.notes.length > 0) md.push('## Notes', '', ...results.notes.map((n) => `- ${n}`), '');
  return md.join('\n');
}

/** Horizontal bars of req/s (log scale) at one concurrency, each KMS bar beside its limit. */
export function svgChart(results: BenchResults, concurrency = 16): string {
  const rows = results.cases.filter((c) => c.concurrency === concurrency && c.result !== undefined && c.result.rps > 0);
  const colors: Record<CaseRecord['group'], string> = { 'raw-s3': '#8c8c8c', bare: '#4e79a7', kms: '#f28e2b' };
  const left = 330;
  const width = 900;
  const barArea = width - left - 150;
  const rowH = 24;
  const top = 50;
  const height = top + rows.length * rowH + 50;
  const max = Math.max(10, ...rows.map((r) => r.result!.rps));
  const lo = 10;
  const x = (v: number) => ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(max * 1.1) - Math.log10(lo))) * barArea;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">req/s at concurrency ${concurrency} (log scale): ${esc(results.meta.date.slice(0, 10))}, ${results.meta.cpus} cores</text>`,
  );
  for (let decade = lo; decade <= max * 1.1; decade *= 10) {
    const gx = (left + x(decade)).toFixed(1);
    parts.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + rows.length * rowH}" stroke="#ddd"/>`);
    parts.push(`<text x="${gx}" y="${top + rows.length * rowH + 16}" text-anchor="middle" fill="#666">${fmtInt(decade)}</text>`);
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, x(r.result!.rps));
    parts.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(`${r.host}: ${r.route}`)}</text>`);
    parts.push(`<rect x="${left}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${colors[r.group]}"/>`);
    const label = `${fmtInt(r.result!.rps)}/s  p99 ${fmtMs(r.result!.p99)} ms${r.ratio === undefined ? '' : `  (${fmtRatio(r.ratio)})`}`;
    parts.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + 15}">${esc(label)}</text>`);
  });
  const ly = top + rows.length * rowH + 34;
  let lx = left;
  for (const [group, label] of [
    ['raw-s3', 'raw S3 (RGW)'],
    ['bare', 'bare node:http(s)'],
    ['kms', 'tee-kms'],
  ] as const) {
    parts.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${colors[group]}"/><text x="${lx + 16}" y="${ly}">${label}</text>`);
    lx += 150;
  }
  parts.push('</svg>');
  return parts.join('\n');
}
