/**
 * The load generator: one case per process, so it never shares a CPU queue (event loop) with the
 * server under test. `node dist/bench/loadgen.js SPEC.json` prints one JSON LoadResult line.
 *
 * HTTP cases use autocannon (closed loop: each connection sends its next request when the previous
 * answer arrives); raw-S3 cases use the KMS's own S3 client (shared/store/s3-store.ts: SigV4 over
 * keep-alive node:http, nothing else), with the same number of in-flight requests. Latencies are kept exactly (float ms) for p50/p99.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { CompactEncrypt, exportJWK, generateKeyPair, importJWK } from 'jose';
import { S3ObjectStore } from '../shared/store/s3-store.js';

export type PathSpec =
  | { readonly mode: 'fixed'; readonly path: string }
  /** Each path once, in order (cold reads); the case ends after `durationSec` or when they are used up. */
  | { readonly mode: 'list'; readonly paths: readonly string[] }
  /** `{n}` replaced by 0, 1, 2…: a fresh name per request (creates). */
  | { readonly mode: 'counter'; readonly template: string }
  /**
   * One path, each request with its own sealed credential (docs/sealed-channel.md), all made before
   * the clock starts, so the figure is the server's work. `count` bounds the requests of one run.
   */
  | {
      readonly mode: 'sealed';
      readonly path: string;
      readonly serviceKey: Readonly<Record<string, string>>;
      readonly user: string;
      readonly token: string;
      readonly count: number;
      /**
       * `reused` (default): one ephemeral key and one response key for the run, as tee-kms/client
       * seals within its key reuse time; `fresh`: new ones per credential, as a standard client.
       */
      readonly keys?: 'reused' | 'fresh';
      /** Default: `ECDH-ES` with reused keys, as tee-kms/client seals; `ECDH-ES+A256KW` with fresh ones, as this case always sealed. */
      readonly alg?: 'ECDH-ES' | 'ECDH-ES+A256KW';
    };

export interface HttpCase {
  readonly kind: 'http';
  readonly url: string;
  readonly method: 'GET' | 'POST';
  readonly paths: PathSpec;
  readonly headers?: Readonly<Record<string, string>>;
  readonly connections: number;
  /** Seconds of measured load (a `list` case ends earlier if its paths run out). */
  readonly durationSec: number;
  /** Seconds of unmeasured load first, on the same path spec (warm cases only). */
  readonly warmupSec?: number;
  /**
   * autocannon's overallRate: this many requests per second across all connections, warm-up
   * included, instead of each connection sending its next request as soon as it has an answer.
   * autocannon paces per connection and per whole second (cases.ts: `paced`).
   */
  readonly rate?: number;
}

export interface S3Case {
  readonly kind: 's3';
  /** get-replace: a read-modify-write, as a rotation's rewrap (GET, then PUT If-Match its ETag). */
  readonly op: 'get' | 'put-if-none-match' | 'get-replace';
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly bucket: string;
  readonly connections: number;
  /** put: `{n}` replaced by 0, 1, 2…; get: ignored. */
  readonly keyTemplate?: string;
  /** get, get-replace: each key once (the case ends after `durationSec` or when they are used up). */
  readonly keys?: readonly string[];
  readonly bodyBytes?: number;
  readonly durationSec: number;
}

export type LoadCase = HttpCase | S3Case;

export interface LoadResult {
  /** Successful (2xx) answers. */
  readonly ok: number;
  readonly failed: number;
  /** Count per status code (HTTP cases) or error name (S3 cases) of what was not a success. */
  readonly failures: Readonly<Record<string, number>>;
  readonly seconds: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly max: number;
  /** Answers during the unmeasured warm-up (for CPU time per request). */
  readonly warmupAnswers: number;
  /** The load generator's own CPU time per request (for raw S3: what the S3 client costs). */
  readonly clientCpuUsPerReq?: number;
}

function summarize(latencies: number[], ok: number, failures: Record<string, number>, seconds: number, warmupAnswers = 0): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  const at = (q: number) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!);
  let sum = 0;
  for (const v of sorted) sum += v;
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  return {
    ok,
    failed,
    failures,
    seconds: round(seconds, 3),
    rps: round(ok / seconds, 1),
    p50: round(at(0.5), 3),
    p99: round(at(0.99), 3),
    mean: round(sorted.length === 0 ? 0 : sum / sorted.length, 3),
    max: round(sorted.length === 0 ? 0 : sorted[sorted.length - 1]!, 3),
    warmupAnswers,
  };
}

/** Sealed credentials for one run (`Authorization` values), each used once (a replay would be refused). */
export async function sealedCredentials(spec: Extract<PathSpec, { mode: 'sealed' }>): Promise<string[]> {
  const { kid, ...jwk } = spec.serviceKey;
  const fresh = spec.keys === 'fresh';
  const alg = spec.alg ?? (fresh ? 'ECDH-ES+A256KW' : 'ECDH-ES');
  const serviceKey = await importJWK(jwk, alg);
  const newResponseKey = async () => exportJWK((await generateKeyPair(alg, { crv: 'X25519' })).publicKey);
  const responseKey = await newResponseKey();
  const epk = (await generateKeyPair(alg, { crv: 'X25519', extractable: true })).privateKey;
  // Up to 60 s either side of the server's clock is accepted, and making 10,000 credentials takes
  // about 6 s here: dated 30 s ahead, the last ones of a long run are not yet stale when sent.
  const iat = Math.floor(Date.now() / 1000) + 30;
  const out: string[] = [];
  for (let n = 0; n < spec.count; n++) {
    const claims = {
      user: spec.user,
      token: spec.token,
      htm: 'GET',
      htu: spec.path,
      iat,
      jti: randomBytes(16).toString('base64url'),
      responseKey: fresh ? await newResponseKey() : responseKey,
    };
    const encrypt = new CompactEncrypt(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg, enc: 'A256GCM', kid });
    // jose makes a fresh epk per message unless given one.
    if (!fresh) encrypt.setKeyManagementParameters({ epk });
    const jwe = await encrypt.encrypt(serviceKey);
    out.push(`Sealed ${jwe}`);
  }
  return out;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

async function runHttp(spec: HttpCase): Promise<LoadResult> {
  // Made before any clock starts (warm-up included): the case measures the server, not the sealing.
  const credentials = spec.paths.mode === 'sealed' ? { all: await sealedCredentials(spec.paths), next: 0 } : undefined;
  let warmupAnswers = 0;
  if (spec.warmupSec !== undefined && spec.warmupSec > 0 && (spec.paths.mode === 'fixed' || spec.paths.mode === 'sealed')) {
    await runAutocannon(spec, spec.warmupSec, () => warmupAnswers++, undefined, credentials);
  }
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let ok = 0;
  const started = process.hrtime.bigint();
  let last = started;
  await runAutocannon(
    spec,
    spec.durationSec,
    (status, ms) => {
      last = process.hrtime.bigint();
      if (status >= 200 && status < 300) {
        ok++;
        latencies.push(ms);
      } else {
        failures[String(status)] = (failures[String(status)] ?? 0) + 1;
      }
    },
    (error) => {
      const key = `error:${error}`;
      failures[key] = (failures[key] ?? 0) + 1;
    },
    credentials,
  );
  // Up to the last answer: autocannon notices the end only at its next sample tick, and a `list`
  // case may run out of paths before its time is up; neither idle tail is part of the rate. A paced
  // case is over its whole duration: autocannon lets each connection send its share of a second at
  // once, then wait for the next second, so its last answer comes early in the last second.
  const seconds = spec.rate !== undefined ? spec.durationSec : Number((last > started ? last : process.hrtime.bigint()) - started) / 1e9;
  return summarize(latencies, ok, failures, seconds, warmupAnswers);
}

async function runAutocannon(
  spec: HttpCase,
  durationSec: number,
  onResponse: (status: number, ms: number) => void,
  onError: (error: string) => void = () => {},
  /** The sealed credentials of the case, each used once across warm-up and measured load. */
  credentials?: { readonly all: readonly string[]; next: number },
): Promise<void> {
  const base = { method: spec.method, headers: { ...(spec.headers ?? {}) } };
  let request: Parameters<typeof autocannon>[0]['requests'];
  let amount: number | undefined;
  const paths = spec.paths;
  if (paths.mode === 'fixed') {
    request = [{ ...base, path: paths.path }];
  } else if (paths.mode === 'sealed') {
    const pool = credentials!;
    request = [
      { ...base, path: paths.path, setupRequest: (r) => ({ ...r, headers: { ...r.headers, authorization: pool.all[pool.next++ % pool.all.length]! } }) },
    ];
  } else if (paths.mode === 'counter') {
    let n = 0;
    request = [{ ...base, setupRequest: (r) => ({ ...r, path: paths.template.replace('{n}', String(n++)) }) }];
  } else {
    // Each path once. autocannon builds one request per connection more than it sends, so stop
    // `connections` short of the list: no path is ever read twice.
    let i = 0;
    request = [{ ...base, setupRequest: (r) => ({ ...r, path: paths.paths[i++ % paths.paths.length]! }) }];
    amount = Math.max(spec.connections, paths.paths.length - spec.connections);
  }
  const instance = autocannon({
    url: spec.url,
    connections: spec.connections,
    ...(amount === undefined ? { duration: durationSec } : { amount }),
    // autocannon checks for the end once per sample: every 100 ms instead of every second.
    sampleInt: 100,
    timeout: 30,
    requests: request,
    ...(spec.rate === undefined ? {} : { overallRate: spec.rate }),
  });
  // With `amount`, autocannon ignores the duration: stop it at the deadline ourselves.
  const deadline = amount === undefined ? undefined : setTimeout(() => instance.stop(), durationSec * 1000);
  instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => onResponse(status, ms));
  instance.on('reqError', (error: Error) => onError((error as { code?: string }).code ?? error.name));
  await instance;
  if (deadline !== undefined) clearTimeout(deadline);
}

async function runS3(spec: S3Case): Promise<LoadResult> {
  const store = new S3ObjectStore({ ...spec, forcePathStyle: true, prefix: '', maxSockets: Math.max(64, spec.connections) });
  const body = Buffer.alloc(spec.bodyBytes ?? 256, 'x');
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let ok = 0;
  let n = 0;
  const keys = spec.keys ?? [];
  const deadline = Date.now() + spec.durationSec * 1000;
  const more = () => Date.now() < deadline && (spec.op === 'put-if-none-match' || n < keys.length);
  const readModifyWrite = async (key: string) => {
    const object = await store.get(key);
    return object !== undefined && (await store.replace(key, object.body, object.etag));
  };

  const once = async (): Promise<void> => {
    const index = n++;
    const t0 = process.hrtime.bigint();
    try {
      const done =
        spec.op === 'get'
          ? (await store.get(keys[index]!)) !== undefined
          : spec.op === 'get-replace'
            ? await readModifyWrite(keys[index]!)
            : await store.create((spec.keyTemplate ?? 'raw/{n}').replace('{n}', String(index)), body);
      if (done) {
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        ok++;
      } else {
        const key = spec.op === 'put-if-none-match' ? 'exists' : 'absent or changed';
        failures[key] = (failures[key] ?? 0) + 1;
      }
    } catch (error) {
      const key = `error:${(error as Error).message}`;
      failures[key] = (failures[key] ?? 0) + 1;
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: spec.connections }, async () => {
      while (more()) await once();
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await store.close();
  return summarize(latencies, ok, failures, seconds);
}

export async function runCase(spec: LoadCase): Promise<LoadResult> {
  return spec.kind === 'http' ? runHttp(spec) : runS3(spec);
}

/** runCase, plus this process's CPU time per request. */
async function measured(spec: LoadCase): Promise<LoadResult> {
  const cpu = process.cpuUsage();
  const result = await runCase(spec);
  const used = process.cpuUsage(cpu);
  const answers = result.ok + result.failed + result.warmupAnswers;
  return answers === 0 ? result : { ...result, clientCpuUsPerReq: Math.round((used.user + used.system) / answers) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === '--ipc' && process.send !== undefined) {
    // Long-lived: one case per message from the parent (no process start per case).
    process.on('message', (spec: LoadCase) => {
      measured(spec).then(
        (result) => process.send!({ result }),
        (error: unknown) => process.send!({ error: (error as Error).stack ?? String(error) }),
      );
    });
    process.on('disconnect', () => process.exit(0));
  } else {
    const file = process.argv[2];
    if (file === undefined) {
      process.stderr.write('usage: node dist/bench/loadgen.js SPEC.json | --ipc\n');
      process.exit(2);
    }
    const result = await measured(JSON.parse(readFileSync(file, 'utf8')) as LoadCase);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  }
}
