/**
 * Cold starts (process start → first 200 of GET /dataKey) and the choice of the root key source,
 * which one such cold start probes: the attested sealing service when it is built and a function
 * can pull the root key from it, else a static KMS_ROOT_KEY.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { devSealerEnv, fetchOnce, freePort, rssMb, sealerFunctionEnv, sleep, type Proc } from './proc.js';
import { median, type BenchResults, type ColdStartRecord, type ColdStartRun } from './report.js';
import type { Servers } from './servers.js';
import { DIST, FF_MAIN, firstLine, log, round1 } from './settings.js';

/** The environment a function gets its root key from; records the choice in `results.meta`. */
export async function chooseRootKeySource(
  servers: Servers,
  results: BenchResults,
  baseEnv: NodeJS.ProcessEnv,
  rootKey: Buffer,
  warmPath: string,
): Promise<NodeJS.ProcessEnv> {
  const staticEnv = { KMS_ROOT_KEY: rootKey.toString('base64') };
  const sealerMain = join(DIST, 'sealer/main.js');
  if (!existsSync(sealerMain)) {
    results.meta = { ...results.meta, rootKeyMode: 'static', rootKeyNote: 'KMS_ROOT_KEY: dist/sealer/main.js is not built' };
    return staticEnv;
  }
  const sealerDir = join(servers.work, 'sealer');
  const sealer = servers.spawn('sealer', process.execPath, [sealerMain], devSealerEnv(baseEnv, sealerDir, rootKey));
  let sealerEnv: NodeJS.ProcessEnv;
  try {
    sealerEnv = await sealerFunctionEnv(sealer);
  } catch (error) {
    await servers.stop(sealer);
    results.meta = { ...results.meta, rootKeyMode: 'static', rootKeyNote: `KMS_ROOT_KEY: the sealer did not start (${firstLine((error as Error).message)})` };
    return staticEnv;
  }
  // Does a function pull the root key from it? One cold start tells (and is a sample of the real thing).
  const probe = await leanColdStart(servers, { ...baseEnv, ...sealerEnv }, warmPath, 5_000);
  if (probe.firstOkMs !== undefined) {
    results.meta = {
      ...results.meta,
      rootKeyMode: 'sealer',
      rootKeyNote: 'pulled over KBS from `node dist/sealer/main.js` (insecure dev mode, sample attester; root key from KMS_SEALER_ROOT_KEY)',
    };
    return sealerEnv;
  }
  await servers.stop(sealer);
  results.meta = {
    ...results.meta,
    rootKeyMode: 'static',
    rootKeyNote: `KMS_ROOT_KEY: the sealer runs, but a function given KMS_SEALER_URL did not serve (${firstLine(probe.error ?? 'no answer')})`,
  };
  return staticEnv;
}

export function summarizeColdStarts(record: ColdStartRecord): ColdStartRecord {
  const ok = record.runs.filter((r) => r.firstOkMs !== undefined);
  record.medianFirstOkMs = round1(median(ok.map((r) => r.firstOkMs!)));
  record.medianListenMs = round1(median(ok.flatMap((r) => (r.listenMs === undefined ? [] : [r.listenMs]))));
  record.medianIdleRssMb = round1(median(ok.flatMap((r) => (r.idleRssMb === undefined ? [] : [r.idleRssMb]))));
  log(`cold start ${record.host}: ${record.medianFirstOkMs} ms to first 200, idle RSS ${record.medianIdleRssMb} MB (${ok.length}/${record.runs.length} ok)`);
  return record;
}

export async function leanColdStart(servers: Servers, env: NodeJS.ProcessEnv, warmPath: string, deadlineMs = 15_000): Promise<ColdStartRun> {
  const port = await freePort();
  return firstAnswer(
    servers,
    servers.spawn('cold-lean', process.execPath, [join(DIST, 'scripts/serve.js')], {
      ...env,
      PORT: String(port),
      KMS_TLS: 'off',
      FUNCTION_TARGET: 'getDataKey',
      KMS_METRICS_PORT: String(await freePort()), // as deployed: metrics on
    }),
    `http://127.0.0.1:${port}${warmPath}`,
    deadlineMs,
    /tee-kms listening/,
  );
}

export async function ffColdStart(servers: Servers, env: NodeJS.ProcessEnv, warmPath: string): Promise<ColdStartRun> {
  const port = await freePort();
  return firstAnswer(
    servers,
    servers.spawn('cold-ff', process.execPath, [FF_MAIN, `--source=${join(DIST, 'functions/get-data-key.js')}`, '--target=getDataKey', `--port=${port}`], env),
    `http://127.0.0.1:${port}${warmPath}`,
    15_000,
    /Serving function/,
  );
}

/**
 * Polls `url` from the moment the process was spawned until a 200; then idles 0.5 s and reads RSS.
 * `listening` is when the process printed that it listens (its stdout is read as it comes).
 */
async function firstAnswer(servers: Servers, proc: Proc, url: string, deadlineMs: number, listening: RegExp): Promise<ColdStartRun> {
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
    await servers.stop(proc);
  }
}
