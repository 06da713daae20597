import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NO_METRICS, repoRoot, startNpmStart, type ServerProcess } from '../../support/processes.js';

/**
 * 200 MB through each format in a real process, streamed from disk to disk: the round trip must be
 * exact, and the process's peak RSS must not grow with the file. First dist/bench/file-crypt.js (the
 * code the CLI runs, output through writeOutput), then the CLI itself, `tee-kms encrypt` and
 * `decrypt` against `npm start`, which must also stay within 100 MB.
 */
const BIG = 200 * 1024 * 1024;
const MEDIUM = 64 * 1024 * 1024;
const PIECE = 1024 * 1024;
// Both sizes already fill what V8 lets dead buffers reach before it collects (32 MB of young buffer
// memory, docs/performance.md): from 64 to 200 MB nothing may grow. Holding an eighth of the
// difference would exceed this.
const MAX_GROWTH_MB = 16;
// The goal for the CLI, whatever the file size.
const MAX_CLI_RSS_MB = 100;
const dir = mkdtempSync(join(tmpdir(), 'tee-kms-memory-test-'));
const keyHex = randomBytes(32).toString('hex');
const digests = new Map<string, string>();

interface Run {
  readonly bytes: number;
  readonly maxRssMb: number;
}

function fileCrypt(op: string, input: string, output: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, 'dist/bench/file-crypt.js'), op, input, output], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += String(d)));
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Run) : reject(new Error(`${op} exited ${code}: ${err}`))));
    child.stdin.end(keyHex); // the key on stdin, never in argv
  });
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A random file written 1 MiB at a time: the test itself never holds it either. */
async function randomFile(path: string, size: number): Promise<void> {
  async function* pieces() {
    for (let left = size; left > 0; left -= PIECE) yield randomBytes(Math.min(PIECE, left));
  }
  await pipeline(Readable.from(pieces()), createWriteStream(path));
  digests.set(path, await sha256(path));
}

beforeAll(async () => {
  await randomFile(join(dir, 'big'), BIG);
  await randomFile(join(dir, 'medium'), MEDIUM);
}, 300_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(['tee-kms', 'bigdl'])('%s format on 200 MB', (format) => {
  it('round-trips exactly, with peak RSS that does not grow with the file', async () => {
    const rss: Record<string, number> = {};
    for (const size of ['medium', 'big']) {
      const input = join(dir, size);
      const sealed = join(dir, `${size}.${format}`);
      const opened = join(dir, `${size}.${format}.out`);
      const enc = await fileCrypt(`${format}-encrypt`, input, sealed);
      const dec = await fileCrypt(`${format}-decrypt`, sealed, opened);
      expect(statSync(opened).size).toBe(statSync(input).size);
      expect(await sha256(opened)).toBe(digests.get(input));
      rss[`${size} encrypt`] = enc.maxRssMb;
      rss[`${size} decrypt`] = dec.maxRssMb;
      rmSync(sealed);
      rmSync(opened);
    }
    console.log(`${format} peak RSS (MB): ${JSON.stringify(rss)}`);
    expect(rss['big encrypt']! - rss['medium encrypt']!).toBeLessThan(MAX_GROWTH_MB);
    expect(rss['big decrypt']! - rss['medium decrypt']!).toBeLessThan(MAX_GROWTH_MB);
  }, 600_000);
});

describe('the tee-kms CLI on 200 MB', () => {
  let kms: ServerProcess | undefined;
  let env: Record<string, string>;
  const cli = join(repoRoot, 'dist/cli/main.js');
  // Reports the process's peak RSS (getrusage) as it exits: the CLI's own code runs unchanged.
  const peakHook = `data:text/javascript,process.on('exit',()=>process.stderr.write('peak-rss-kb='+process.resourceUsage().maxRSS+'\\n'))`;

  function tee(args: readonly string[]): Promise<number> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', peakHook, cli, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += String(d)));
      child.on('error', reject);
      child.on('exit', (code) => {
        const kb = /peak-rss-kb=(\d+)/.exec(err)?.[1];
        if (code !== 0 || kb === undefined) reject(new Error(`tee-kms ${args[0]} exited ${code}: ${err}`));
        else resolve(Math.round((Number(kb) / 1024) * 10) / 10);
      });
    });
  }

  beforeAll(async () => {
    const dataDir = join(dir, 'kms');
    kms = await startNpmStart({ ...NO_METRICS, KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') });
    env = {
      PATH: process.env.PATH ?? '',
      TEE_KMS_URL: kms.url,
      TEE_KMS_CA: join(dataDir, 'tls/cert.pem'),
      TEE_KMS_USER: 'alice',
      TEE_KMS_TOKEN: randomBytes(16).toString('hex'),
    };
    await tee(['enroll']);
    await tee(['primary-key', 'create', 'pk']);
    await tee(['data-key', 'create', 'pk', 'dk']);
  }, 120_000);
  afterAll(async () => kms?.stop());

  it('round-trips exactly within 100 MB peak RSS, the same for 64 and 200 MB', async () => {
    const rss: Record<string, number> = {};
    for (const size of ['medium', 'big']) {
      const input = join(dir, size);
      const sealed = join(dir, `${size}.cli`);
      const opened = join(dir, `${size}.cli.out`);
      rss[`${size} encrypt`] = await tee(['encrypt', '--primary-key', 'pk', '--data-key', 'dk', input, '-o', sealed]);
      rss[`${size} decrypt`] = await tee(['decrypt', sealed, '-o', opened]);
      expect(await sha256(opened)).toBe(digests.get(input));
      rmSync(sealed);
      rmSync(opened);
    }
    console.log(`tee-kms CLI peak RSS (MB): ${JSON.stringify(rss)}`);
    for (const peak of Object.values(rss)) expect(peak).toBeLessThanOrEqual(MAX_CLI_RSS_MB);
    expect(rss['big encrypt']! - rss['medium encrypt']!).toBeLessThan(MAX_GROWTH_MB);
    expect(rss['big decrypt']! - rss['medium decrypt']!).toBeLessThan(MAX_GROWTH_MB);
  }, 600_000);
});
