import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../support/processes.js';

/**
 * 200 MB through each format in a real process (dist/bench/file-crypt.js, the code the CLI runs,
 * output through writeOutput), streamed from disk to disk: the round trip must be exact, and the
 * process's peak RSS must not grow with the file (compared with the same process on 1 MB).
 */
const BIG = 200 * 1024 * 1024;
const SMALL = 1024 * 1024;
// Node's own baseline and buffers that GC has not reclaimed yet are the same for both sizes; a
// format holding the file would add 200 MB or more.
const MAX_GROWTH_MB = 64;

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
    for (let left = size; left > 0; left -= SMALL) yield randomBytes(Math.min(SMALL, left));
  }
  await pipeline(Readable.from(pieces()), createWriteStream(path));
  digests.set(path, await sha256(path));
}

beforeAll(async () => {
  await randomFile(join(dir, 'big'), BIG);
  await randomFile(join(dir, 'small'), SMALL);
}, 300_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(['tee-kms', 'bigdl'])('%s format on 200 MB', (format) => {
  it('round-trips exactly, with peak RSS that does not grow with the file', async () => {
    const rss: Record<string, number> = {};
    for (const size of ['small', 'big']) {
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
    expect(rss['big encrypt']! - rss['small encrypt']!).toBeLessThan(MAX_GROWTH_MB);
    expect(rss['big decrypt']! - rss['small decrypt']!).toBeLessThan(MAX_GROWTH_MB);
  }, 600_000);
});
