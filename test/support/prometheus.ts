// A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: every line
// must be a HELP, a TYPE or a sample of a declared family, with valid names, labels and values;
// anything else throws. No mercy for what a scraper might tolerate.
import { httpCall } from './processes.js';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Exposition {
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
  /** The one sample of `name` whose labels include `labels`; throws when none or several match. */
  value(name: string, labels?: Record<string, string>): number;
  /** The sum of every sample of `name` whose labels include `labels` (0 when none). */
  sum(name: string, labels?: Record<string, string>): number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const SUFFIXES: Record<string, readonly string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'], counter: [''] };

export function parseExposition(text: string): Exposition {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  for (const [i, line] of text.slice(0, -1).split('\n').entries()) {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta !== null) {
      const [, kind, name, rest] = meta;
      if (!NAME.test(name!)) throw new Error(`bad metric name, ${where}`);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest!) || types.has(name!)) throw new Error(`bad or repeated TYPE, ${where}`);
        types.set(name!, rest!);
      } else {
        if (helps.has(name!)) throw new Error(`repeated HELP, ${where}`);
        helps.add(name!);
      }
      continue;
    }
    if (line.startsWith('#')) throw new Error(`unexpected comment, ${where}`);
    samples.push(parseSample(line, where, types));
  }
  const matching = (name: string, labels: Record<string, string>) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return {
    types,
    samples,
    value(name, labels = {}) {
      const found = matching(name, labels);
      if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
      return found[0]!.value;
    },
    sum: (name, labels = {}) => matching(name, labels).reduce((total, s) => total + s.value, 0),
  };
}

function parseSample(line: string, where: string, types: ReadonlyMap<string, string>): Sample {
  const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line);
  if (match === null) throw new Error(`not a sample, ${where}`);
  const [, name, rawLabels, rawValue] = match;
  const family = [...types.keys()].find((f) => (SUFFIXES[types.get(f)!] ?? ['']).some((suffix) => `${f}${suffix}` === name));
  if (family === undefined) throw new Error(`sample of an undeclared family, ${where}`);
  const labels: Record<string, string> = {};
  if (rawLabels !== undefined) {
    const body = rawLabels.slice(1, -1);
    const pair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
    let at = 0;
    while (at < body.length) {
      pair.lastIndex = at;
      const m = pair.exec(body);
      if (m === null || !LABEL.test(m[1]!) || m[1]! in labels) throw new Error(`bad labels, ${where}`);
      labels[m[1]!] = m[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
      at = pair.lastIndex;
    }
  }
  // As Prometheus reads values (Go's ParseFloat): NaN and Inf in any case.
  if (!/^(nan|[+-]?inf|-?\d+(\.\d+)?(e[+-]?\d+)?)$/i.test(rawValue!)) throw new Error(`bad value, ${where}`);
  const special = rawValue!.toLowerCase();
  const value = special === 'nan' ? NaN : special.endsWith('inf') ? (special.startsWith('-') ? -Infinity : Infinity) : Number(rawValue);
  return { name: name!, labels, value };
}

/** GET `url` (a metrics endpoint): checks the answer's status and content type, and parses it. */
export async function scrape(url: string): Promise<Exposition> {
  const answer = await httpCall(url);
  if (answer.status !== 200) throw new Error(`scrape of ${url} answered ${answer.status}: ${answer.body}`);
  if (!String(answer.headers['content-type']).startsWith('text/plain; version=0.0.4')) throw new Error(`content type ${answer.headers['content-type']}`);
  return parseExposition(answer.body);
}
