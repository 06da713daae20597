import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { logFields } from '../../shared/log.js';
import { freePort, NO_METRICS, repoRoot, startLeanHost } from '../support/processes.js';

describe('access log', () => {
  it('writes one line per request, batched, all of them by a SIGTERM exit, and never the query', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-log-'));
    const kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') });
    const token = `tok-${randomBytes(12).toString('hex')}`;
    const requests = 60;
    await kms.request(`/user/alice?token=${token}`, { method: 'POST' });
    await Promise.all(Array.from({ length: requests - 1 }, (_, i) => kms.request(`/dataKey/dk${i}?user=alice&token=${token}&primaryKeyName=absent`)));
    await kms.stop('SIGTERM');

    const lines = kms
      .output()
      .split('\n')
      .filter((l) => l.includes('"fn"'))
      .map((l) => {
        const fields = JSON.parse(l) as Record<string, unknown>;
        expect(l).toBe(JSON.stringify(fields)); // the bytes JSON.stringify writes, fields in this order:
        expect(Object.keys(fields)).toEqual(['time', 'level', 'fn', 'method', 'path', 'status', 'ms']);
        expect(new Date(fields.time as string).toISOString()).toBe(fields.time);
        return fields;
      });
    expect(lines).toHaveLength(requests);
    expect(lines[0]).toMatchObject({ fn: 'enrollUser', method: 'POST', path: '/user/alice', status: 201 });
    expect(lines.filter((l) => l.fn === 'getDataKey' && l.status === 404)).toHaveLength(requests - 1);
    expect(await kms.settledOutput()).not.toContain(token);
    await rm(dataDir, { recursive: true, force: true });
  });
  it('writes lines as it serves, not only at exit; a SIGKILL loses at most the lines not yet written, and tears none', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-log-'));
    const kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') });
    const token = `tok-${randomBytes(12).toString('hex')}`;
    const accessLines = () =>
      kms
        .output()
        .split('\n')
        .filter((l) => l.includes('"fn"'));
    const burst = (from: number) =>
      Promise.all(Array.from({ length: 50 }, (_, i) => kms.request(`/dataKey/dk${from + i}?user=alice&token=${token}&primaryKeyName=absent`)));
    await kms.request(`/user/alice?token=${token}`, { method: 'POST' });
    await burst(0);
    // The process runs on: its lines reach the pipe without an exit.
    for (let waited = 0; accessLines().length < 51; waited += 20) {
      if (waited > 10_000) throw new Error(`only ${accessLines().length} of 51 lines written while serving`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await burst(50);
    await kms.stop('SIGKILL');
    if (!kms.child.stdout!.readableEnded) await once(kms.child.stdout!, 'end');

    const lines = accessLines();
    expect(lines.length).toBeGreaterThanOrEqual(51); // what was written stays
    expect(lines.length).toBeLessThanOrEqual(101); // nothing twice
    for (const l of lines) expect(logFields(l)).toMatchObject({ fn: expect.any(String), status: expect.any(Number) }); // each whole
    await rm(dataDir, { recursive: true, force: true });
  });
});

describe('KMS_ACCESS_LOG', () => {
  it('off (one of the values a boolean option takes) writes no access line; the host serves on', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-log-'));
    const kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_ACCESS_LOG: 'off' });
    try {
      expect((await kms.request('/user/alice?token=t0ken-of-alice', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/dataKey/dk?user=alice&token=t0ken-of-alice&primaryKeyName=absent')).status).toBe(404);
    } finally {
      await kms.stop('SIGTERM');
      await rm(dataDir, { recursive: true, force: true });
    }
    await kms.outputContaining('"message":"tee-kms listening"');
    expect(kms.output()).not.toContain('"fn"'); // no access line
  });

  it('a value a boolean option refuses (flase) stops the lean host at start, naming the variable', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-log-'));
    const child = spawn(process.execPath, ['dist/scripts/serve.js'], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/root',
        PORT: String(await freePort()),
        KMS_DATA_DIR: dataDir,
        ...NO_METRICS,
        KMS_ACCESS_LOG: 'flase',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000); // a host that serves on fails the test
    const [code] = (await once(child, 'close')) as [number | null];
    clearTimeout(timer);
    await rm(dataDir, { recursive: true, force: true });
    expect(code).toBe(1);
    expect(stderr).toBe('tee-kms: KMS_ACCESS_LOG must be true or false, got "flase"\n');
    expect(stdout).not.toContain('listening');
  });
});

describe('stdout lines', () => {
  it('are in the pipe when their event-loop turn ends: a SIGKILL in the next turn loses none', async () => {
    // Each turn logs 20 lines; the last one then asks for a SIGKILL, which runs after the turn's flush
    // (both are setImmediate callbacks, run in the order they were asked for). 51 KB in all: less
    // than a pipe holds, so no line waits for the reader.
    const child = logChild(`
      let turn = 0;
      const step = () => {
        for (let i = 0; i < 20; i++) log.access('getDataKey', 'GET', '/dataKey/t' + turn + '-' + i, 200, 1);
        if (++turn < 20) setImmediate(step);
        else setImmediate(() => process.kill(process.pid, 'SIGKILL'));
      };
      step();
    `);
    const { signal, stdout } = await child.drain();
    expect(signal).toBe('SIGKILL');
    expect(accessPaths(stdout)).toEqual(Array.from({ length: 400 }, (_, n) => `/dataKey/t${Math.floor(n / 20)}-${n % 20}`));
  });

  it('wait in memory while the pipe is full, the event loop serving on, and are all written in order', async () => {
    // 4 MB of lines while nobody reads: the pipe holds 64 KB. The timer must fire meanwhile.
    const child = logChild(`
      setTimeout(() => process.stderr.write('timer fired\\n'), 50);
      let n = 0;
      const step = () => {
        for (let i = 0; i < 1000; i++) log.access('getDataKey', 'GET', '/dataKey/k' + n++, 200, 1);
        if (n < 30000) setImmediate(step);
      };
      step();
    `);
    await child.stderrIncludes('timer fired'); // the event loop did not stall on the full pipe
    const { code, stdout, stderr } = await child.drain();
    expect(code).toBe(0);
    const paths = accessPaths(stdout);
    expect(paths).toHaveLength(30000);
    expect(paths.every((p, n) => p === `/dataKey/k${n}`)).toBe(true);
    expect(accessPaths(stderr)).toEqual([]); // nothing overflowed to stderr: 4 MB is far below the limit
  });

  it('go to stderr past 16 MiB waiting for a full pipe, none dropped', async () => {
    // About 17.6 MB of lines while nobody reads stdout: what does not fit under the limit goes to stderr.
    const child = logChild(`
      let n = 0;
      const step = () => {
        for (let i = 0; i < 10000; i++) log.access('getDataKey', 'GET', '/dataKey/k' + String(n++).padStart(6, '0'), 200, 1);
        if (n < 160000) setImmediate(step);
        else process.stderr.write('done\\n');
      };
      step();
    `);
    await child.stderrIncludes('done');
    const { code, stdout, stderr } = await child.drain();
    expect(code).toBe(0);
    const overflow = accessPaths(stderr);
    expect(overflow.length).toBeGreaterThan(0);
    expect([...accessPaths(stdout), ...overflow].sort()).toEqual(Array.from({ length: 160000 }, (_, n) => `/dataKey/k${String(n).padStart(6, '0')}`));
  });

  it("take a child's lines passed on in order with their own, each whole, through a full pipe", async () => {
    const child = logChild(`
      for (let n = 0; n < 3000; n++) {
        log.access('getDataKey', 'GET', '/dataKey/k' + n, 200, 1);
        passOn(JSON.stringify({ component: 'sealer', message: 'm' + n }));
      }
    `);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { code, stdout } = await child.drain();
    expect(code).toBe(0);
    const lines = stdout.split('\n').filter((l) => l !== '');
    expect(lines.map((l) => logFields(l)?.path ?? logFields(l)?.message)).toEqual(
      Array.from({ length: 6000 }, (_, i) => (i % 2 === 0 ? `/dataKey/k${i / 2}` : `m${(i - 1) / 2}`)),
    );
  });

  it('end the process when nobody reads stdout any more (EPIPE), unless onStdoutError says what to do', async () => {
    const logging = `
      let n = 0;
      const step = () => {
        log.access('getDataKey', 'GET', '/dataKey/k' + n++, 200, 1);
        if (n === 10) process.stderr.write('logging\\n');
        setTimeout(step, 1);
      };
      step();
    `;
    for (const [handler, expected] of [
      ['', { code: 1, stderr: 'EPIPE' }],
      ["onStdoutError(() => { process.stderr.write('stdout gone\\n'); process.exit(0); });", { code: 0, stderr: 'stdout gone' }],
    ] as const) {
      const child = logChild(`${handler}\n${logging}`);
      await child.stderrIncludes('logging');
      const { code, stderr } = await child.closeStdout();
      expect(code).toBe(expected.code);
      expect(stderr).toContain(expected.stderr);
    }
  });

  it('are all written, in order, by a process.exit while the pipe is full', async () => {
    // Turn 1 fills the pipe and leaves lines waiting; turn 2 logs more and exits in the same turn.
    const child = logChild(`
      for (let n = 0; n < 3000; n++) log.access('getDataKey', 'GET', '/dataKey/k' + n, 200, 1);
      setImmediate(() => {
        for (let n = 3000; n < 3100; n++) log.access('getDataKey', 'GET', '/dataKey/k' + n, 200, 1);
        process.exit(0);
      });
    `);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { code, stdout } = await child.drain();
    expect(code).toBe(0);
    expect(accessPaths(stdout)).toEqual(Array.from({ length: 3100 }, (_, n) => `/dataKey/k${n}`));
  });
});

describe('componentLog', () => {
  it("writes the functions' JSON lines with its component: requests on stdout, warnings and errors on stderr", async () => {
    // A real process: stdout lines are written straight to file descriptor 1.
    const script = `
      const { componentLog } = await import(${JSON.stringify(pathToFileURL(join(repoRoot, 'dist/shared/log.js')).href)});
      const log = componentLog('sealer');
      log.request('POST', '/kbs/v0/auth', 200, 1.23456);
      log.info('listening', { url: 'https://127.0.0.1:1' });
      log.warn('attestation refused');
      log.error('cannot start: CONFIG: x');
    `;
    const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script]);
    const lines = (text: string) => text.split('\n').flatMap((l) => logFields(l) ?? []);
    expect(lines(stdout)).toEqual([
      { time: expect.any(String), level: 'info', component: 'sealer', method: 'POST', path: '/kbs/v0/auth', status: 200, ms: 1.23 },
      { time: expect.any(String), level: 'info', component: 'sealer', message: 'listening', url: 'https://127.0.0.1:1' },
    ]);
    expect(lines(stderr)).toEqual([
      { time: expect.any(String), level: 'warn', component: 'sealer', message: 'attestation refused' },
      { time: expect.any(String), level: 'error', component: 'sealer', message: 'cannot start: CONFIG: x' },
    ]);
  });

  it('logFields reads JSON object lines and nothing else', () => {
    expect(logFields('{"a":1}')).toEqual({ a: 1 });
    for (const text of ['', 'sealer: listening on x', '{not json', '[1]', 'null', ' {"a":1}']) expect(logFields(text)).toBeUndefined();
  });
});

/** A process run to its end: what it wrote on stdout and on stderr, apart. */
async function run(command: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`${command} exited ${code}: ${stderr}`);
  return { stdout, stderr };
}

/** The access lines' paths in `text`, in order. */
function accessPaths(text: string): string[] {
  return text.split('\n').flatMap((l) => {
    const path = logFields(l)?.path;
    return typeof path === 'string' ? [path] : [];
  });
}

/** A process running `body` with `log`, `onStdoutError` and `passOn` imported from the build; its stdout is not read until drain(). */
function logChild(body: string) {
  const script = `const { log, onStdoutError, passOn } = await import(${JSON.stringify(pathToFileURL(join(repoRoot, 'dist/shared/log.js')).href)});\n${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pause();
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return {
    async stderrIncludes(text: string): Promise<void> {
      for (let waited = 0; !stderr.includes(text); waited += 10) {
        if (waited > 20_000) throw new Error(`the child never wrote ${JSON.stringify(text)} on stderr`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    /** Closes the reading end of the child's stdout, and waits for the child's end. */
    async closeStdout(): Promise<{ code: number | null; stderr: string }> {
      child.stdout.destroy();
      const [code] = (await once(child, 'close')) as [number | null];
      return { code, stderr };
    },
    /** Reads stdout from now on, to the child's end. */
    async drain(): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stdout.resume();
      const [code, signal] = (await once(child, 'close')) as [number | null, string | null];
      return { code, signal, stdout, stderr };
    },
  };
}
