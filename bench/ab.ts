/**
 * Before/after of a hot-path change on a shared, noisy machine: the warm `GET /dataKey` on the lean
 * host, alternating between two builds (A, B, A, B, …) so that both see the same background load.
 *
 *   node dist/bench/ab.js DIST_A DIST_B [rounds=5] [seconds=5] [connections=16] [tls=self-signed|off]
 *   node dist/bench/ab.js sealed DIST_A DIST_B [rounds=5] [seconds=5] [connections=16] [tls=self-signed|off]
 *       the warm read sealed instead: a sealed credential per request, a sealed answer
 *       (docs/sealed-channel.md), the credentials made by the load generator before the clock starts,
 *       its ephemeral and response keys reused as tee-kms/client reuses them (AB_SEALED_KEYS=fresh:
 *       new ones per request, as a standard client); AB_SEALED_ALG_A / AB_SEALED_ALG_B=ECDH-ES or
 *       ECDH-ES+A256KW seal one build's credentials so (the load generator's default otherwise), to
 *       compare a build with the client of its time
 *   node dist/bench/ab.js cold DIST_A DIST_B [rounds=5]
 *       cold start instead: process start → first 200 of GET /dataKey (getDataKey, KMS_TLS=off)
 *   node dist/bench/ab.js cold-sealer DIST_A DIST_B [rounds=5]
 *       the same with the root key pulled from the sealing service (dev mode, sample attester)
 *
 * DIST_A/DIST_B are copies of dist/ placed inside this repository (so node_modules resolves), e.g.
 * `cp -r dist bench/.ab/before` before the change and `cp -r dist bench/.ab/after` after it; they
 * may be the same build with AB_ENV_A / AB_ENV_B set (space-separated K=V added to that server's
 * environment), e.g. AB_ENV_B='KMS_ACCESS_LOG=false'. AB_RATE=<req/s> sends at that rate (autocannon's
 * overallRate) instead of as fast as answers come, so that both builds are measured at one rate.
 * Embedded store, static root key (but see cold-sealer): the warm path does not touch storage. Prints medians of req/s,
 * p50, p99 and the server's CPU time per request.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { seedWarmReadStore } from './fixtures.js';
import type { HttpCase, LoadResult } from './loadgen.js';
import { cpuMs, devSealerEnv, fetchOnce, freePort, rssMb, sealerFunctionEnv, serverEnv, sleep, startProc } from './proc.js';
import { median } from './report.js';

const argv = process.argv.slice(2);
const mode = argv[0] === 'cold' || argv[0] === 'cold-sealer' || argv[0] === 'sealed' ? argv.shift()! : 'warm';
const [distA, distB, rounds = '5', seconds = '5', connections = '16', tls = 'self-signed'] = argv;
if (distA === undefined || distB === undefined) {
  process.stderr.write('usage: node dist/bench/ab.js DIST_A DIST_B [rounds] [seconds] [connections] [tls]\n');
  process.exit(2);
}
const loadgenJs = new URL('./loadgen.js', import.meta.url).pathname;

const work = await mkdtemp(join(tmpdir(), 'tee-kms-ab-'));
try {
  const rootKey = randomBytes(32);
  const token = randomBytes(24).toString('hex');
  const dataDir = join(work, 'kms');
  await seedWarmReadStore(dataDir, rootKey, token);
  const env = {
    ...serverEnv(),
    KMS_STORE: 'fs',
    KMS_DATA_DIR: dataDir,
    KMS_ROOT_KEY: rootKey.toString('base64'),
    KMS_TLS: tls,
    PORT: '0',
    FUNCTION_TARGET: '',
  };
  const path = `/dataKey/warm?primaryKeyName=pk&user=bench&token=${token}`;
  if (mode === 'warm' || mode === 'sealed') await warmAb(env, path, mode === 'sealed' ? token : undefined);
  else if (mode === 'cold') await coldAb(env, path);
  else {
    const sealer = startProc('sealer', process.execPath, [resolve(distA, 'sealer/main.js')], devSealerEnv(env, join(work, 'sealer'), rootKey), process.cwd());
    try {
      const { KMS_ROOT_KEY: _, ...withoutRootKey } = env;
      await coldAb({ ...withoutRootKey, ...(await sealerFunctionEnv(sealer)) }, path);
    } finally {
      await sealer.stop();
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

async function coldAb(env: Record<string, string | undefined>, path: string): Promise<void> {
  const runs: Record<'A' | 'B', { listen: number; firstOk: number; rss: number }[]> = { A: [], B: [] };
  for (let round = 0; round < Number(rounds); round++) {
    for (const [label, dist] of [
      ['A', distA!],
      ['B', distB!],
    ] as const) {
      const port = await freePort();
      const server = startProc(
        label,
        process.execPath,
        [resolve(dist, 'scripts/serve.js')],
        { ...env, ...extraEnv(label), PORT: String(port), KMS_TLS: 'off', FUNCTION_TARGET: 'getDataKey' },
        process.cwd(),
      );
      try {
        let listen = 0;
        void server.waitForLine(/tee-kms listening/, 30_000).then(
          () => (listen = performance.now() - server.startedAt),
          () => {},
        );
        let firstOk: number | undefined;
        while (firstOk === undefined) {
          try {
            const answer = await fetchOnce(`http://127.0.0.1:${port}${path}`);
            if (answer.status !== 200) throw new Error(`${label}: answered ${answer.status}`);
            firstOk = performance.now() - server.startedAt;
          } catch (error) {
            if ((error as { code?: string }).code !== 'ECONNREFUSED' || server.exited()) throw error;
            await sleep(2);
          }
        }
        await sleep(500);
        const rss = rssMb(server.pid) ?? 0;
        runs[label].push({ listen, firstOk, rss });
        process.stderr.write(`round ${round + 1} ${label}: listening ${listen.toFixed(0)} ms, first 200 ${firstOk.toFixed(0)} ms, RSS ${rss} MB\n`);
      } finally {
        await server.stop();
      }
    }
  }
  for (const label of ['A', 'B'] as const) {
    const m = (f: (x: (typeof runs)['A'][number]) => number) => median(runs[label].map(f))!;
    process.stdout.write(
      `${label} (${label === 'A' ? distA : distB}): median listening ${m((x) => x.listen).toFixed(0)} ms, first 200 ${m((x) => x.firstOk).toFixed(0)} ms, RSS ${m((x) => x.rss)} MB\n`,
    );
  }
}

function extraEnv(label: 'A' | 'B'): Record<string, string> {
  const raw = process.env[`AB_ENV_${label}`] ?? '';
  return Object.fromEntries(
    raw
      .split(/\s+/)
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

function sealedAlg(label: 'A' | 'B'): { alg?: 'ECDH-ES' | 'ECDH-ES+A256KW' } {
  const alg = process.env[`AB_SEALED_ALG_${label}`];
  if (alg === undefined || alg === '') return {};
  if (alg !== 'ECDH-ES' && alg !== 'ECDH-ES+A256KW') throw new Error(`AB_SEALED_ALG_${label}: ECDH-ES or ECDH-ES+A256KW, not ${alg}`);
  return { alg };
}

/** The warm read, in the clear or (with `sealedToken`) sealed as `tee-kms/client` seals it. */
async function warmAb(env: Record<string, string | undefined>, path: string, sealedToken?: string): Promise<void> {
  const runs: Record<'A' | 'B', { rps: number; p50: number; p99: number; cpu: number }[]> = { A: [], B: [] };

  for (let round = 0; round < Number(rounds); round++) {
    for (const [label, dist] of [
      ['A', distA!],
      ['B', distB!],
    ] as const) {
      const server = startProc(label, process.execPath, [resolve(dist, 'scripts/serve.js')], { ...env, ...extraEnv(label) }, process.cwd());
      try {
        const url = (await server.waitForLine(/tee-kms listening.*"url":"([^"]+)"/, 30_000))[1]!;
        const first = await fetchOnce(`${url}${path}`);
        if (first.status !== 200) throw new Error(`${label}: warm-up answered ${first.status}`);
        let paths: HttpCase['paths'] = { mode: 'fixed', path };
        if (sealedToken !== undefined) {
          const attestation = await fetchOnce(`${url}/attestation?nonce=${randomBytes(32).toString('base64url')}`);
          if (attestation.status !== 200) throw new Error(`${label}: GET /attestation answered ${attestation.status}`);
          const { serviceKey } = JSON.parse(attestation.body) as { serviceKey: Record<string, string> };
          paths = {
            mode: 'sealed',
            path: '/dataKey/warm?primaryKeyName=pk',
            serviceKey,
            user: 'bench',
            token: sealedToken,
            // Warm-up (1 s) and load at up to 10k req/s: a credential used twice is a 401, cheaper than a read.
            count: (Number(seconds) + 1) * 10_000,
            keys: process.env.AB_SEALED_KEYS === 'fresh' ? 'fresh' : 'reused',
            ...sealedAlg(label),
          };
        }
        const spec: HttpCase = {
          kind: 'http',
          url,
          method: 'GET',
          paths,
          ...(sealedToken === undefined ? {} : { headers: { accept: 'application/json' } }),
          connections: Number(connections),
          durationSec: Number(seconds),
          warmupSec: 1,
          // CPU per request depends on the rate: AB_RATE holds both builds to the same one.
          ...(process.env.AB_RATE === undefined ? {} : { rate: Number(process.env.AB_RATE) }),
        };
        const file = join(work, 'spec.json');
        writeFileSync(file, JSON.stringify(spec));
        const before = cpuMs(server.pid)!;
        const r = await new Promise<LoadResult>((res, rej) => {
          const child = spawn(process.execPath, [loadgenJs, file], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
          child.once('exit', (code) => (code === 0 ? res(JSON.parse(out.trim().split('\n').pop()!) as LoadResult) : rej(new Error(`loadgen exited ${code}`))));
        });
        const cpu = ((cpuMs(server.pid)! - before) * 1000) / (r.ok + r.failed + r.warmupAnswers);
        if (r.failed > 0) process.stderr.write(`round ${round + 1} ${label}: failures ${JSON.stringify(r.failures)}\n`);
        runs[label].push({ rps: r.rps, p50: r.p50, p99: r.p99, cpu });
        process.stderr.write(
          `round ${round + 1} ${label}: ${Math.round(r.rps)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, server CPU ${cpu.toFixed(0)} µs/req\n`,
        );
      } finally {
        await server.stop();
      }
    }
  }
  for (const label of ['A', 'B'] as const) {
    const m = (f: (x: (typeof runs)['A'][number]) => number) => median(runs[label].map(f))!;
    process.stdout.write(
      `${label} (${label === 'A' ? distA : distB}): median ${Math.round(m((x) => x.rps))} req/s, p50 ${m((x) => x.p50).toFixed(2)} ms, p99 ${m((x) => x.p99).toFixed(2)} ms, server CPU ${m((x) => x.cpu).toFixed(0)} µs/req\n`,
    );
  }
}
