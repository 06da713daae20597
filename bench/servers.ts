/**
 * The bench's servers and their lifecycle: the KMS under its two hosts (lean `node
 * dist/scripts/serve.js`, functions-framework), the bare node:http(s) server, and Ceph RGW. Every
 * process started here is recorded until stopped, so that a run's clean-up stops what is left.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type S3Settings, WARM_KEY } from './fixtures.js';
import { fetchOnce, freePort, serverEnv, sleep, startProc, type Proc } from './proc.js';
import { DIST, FF_MAIN, ROOT } from './settings.js';

export interface Server {
  readonly proc: Proc;
  readonly url: string;
}

export class Servers {
  /** The processes started and not yet stopped, oldest first. */
  readonly running: Proc[] = [];

  /** `work`: the run's scratch directory (the bare server's certificate goes there). */
  constructor(readonly work: string) {}

  spawn(name: string, command: string, args: string[], env: NodeJS.ProcessEnv): Proc {
    const p = startProc(name, command, args, env, ROOT);
    this.running.push(p);
    return p;
  }

  async stop(p: Proc): Promise<void> {
    await p.stop();
    const i = this.running.indexOf(p);
    if (i !== -1) this.running.splice(i, 1);
  }

  /** The lean host, `node dist/scripts/serve.js`, on a port of its choosing. */
  async lean(name: string, env: NodeJS.ProcessEnv, tls: 'self-signed' | 'off', target: string): Promise<Server> {
    // With metrics, as deployed: their cost shows in the idle RSS and the cold start measured.
    const metrics = String(await freePort());
    const proc = this.spawn(name, process.execPath, [join(DIST, 'scripts/serve.js')], {
      ...env,
      PORT: '0',
      KMS_TLS: tls,
      FUNCTION_TARGET: target,
      KMS_METRICS_PORT: metrics,
    });
    const m = await proc.waitForLine(/tee-kms listening.*"url":"([^"]+)"/, 30_000);
    return { proc, url: m[1]! };
  }

  /** The bare server (bench/bare-server.ts): the same bytes as a warm GET, no KMS. */
  async bare(protocol: 'http' | 'https'): Promise<Server> {
    const proc = this.spawn(`bare-${protocol}`, process.execPath, [join(DIST, 'bench/bare-server.js'), protocol, join(this.work, 'bare')], serverEnv());
    return { proc, url: (await proc.waitForLine(/^listening (\S+)/, 15_000))[1]! };
  }

  /** One function under functions-framework, once it answers. */
  async ff(name: string, env: NodeJS.ProcessEnv, file: string, target: string): Promise<Server> {
    const port = await freePort();
    const proc = this.spawn(name, process.execPath, [FF_MAIN, `--source=${join(DIST, 'functions', file)}`, `--target=${target}`, `--port=${port}`], env);
    const url = `http://127.0.0.1:${port}`;
    const deadline = performance.now() + 30_000;
    for (;;) {
      try {
        await fetchOnce(`${url}/`, { timeoutMs: 5_000 });
        return { proc, url };
      } catch (error) {
        if (proc.exited() || performance.now() > deadline)
          throw new Error(`${name} did not start: ${(error as Error).message}\n${proc.tail()}`, { cause: error });
        await sleep(20);
      }
    }
  }
}

/** Until the warm key is served: the credential check (scrypt) and key unwraps happen here. */
export async function warmUp(url: string, path: string): Promise<void> {
  const answer = await fetchOnce(`${url}${path}`);
  if (answer.status !== 200) throw new Error(`warm-up GET ${url}/dataKey/${WARM_KEY} answered ${answer.status}: ${answer.body.slice(0, 200)}`);
}

/** `pids()`: its daemons (mon, OSD, radosgw), as scripts/s3-local.sh records them. */
export type Rgw = S3Settings & { stop(): Promise<void>; pids(): number[] };

/** A fresh Ceph RGW via scripts/s3-local.sh (as test/support/rgw.ts, which resolves paths from test/). */
export async function startRgw(): Promise<Rgw> {
  const script = join(ROOT, 'scripts/s3-local.sh');
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-bench-rgw-'));
  const run = (command: 'start' | 'stop') =>
    new Promise<void>((resolve, reject) => {
      const child = spawn('bash', [script, command, dir], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
      const timer = setTimeout(() => child.kill('SIGKILL'), command === 'start' ? 15 * 60_000 : 60_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`scripts/s3-local.sh ${command} ${dir} exited ${code}:\n${err}`));
      });
    });
  try {
    await run('start');
  } catch (error) {
    await run('stop').catch(() => {});
    throw error;
  }
  const env = Object.fromEntries(
    readFileSync(join(dir, 'env'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')).trim(), l.slice(l.indexOf('=') + 1).trim()]),
  );
  let stopped: Promise<void> | undefined;
  return {
    endpoint: env.KMS_S3_ENDPOINT!,
    region: env.KMS_S3_REGION || 'us-east-1',
    accessKeyId: env.KMS_S3_ACCESS_KEY_ID!,
    secretAccessKey: env.KMS_S3_SECRET_ACCESS_KEY!,
    stop: () => (stopped ??= run('stop')),
    pids: () =>
      readFileSync(join(dir, 'pids'), 'utf8')
        .split('\n')
        .filter((l) => /^\d+$/.test(l.trim()))
        .map(Number),
  };
}
