/**
 * The `files` group: encrypt and decrypt throughput of a 1 GiB file (BENCH_FILE_MB changes the size)
 * in both formats, each against one raw AES-256-GCM pass over the same bytes through the same file
 * streams in the same run, and each process's peak RSS. Every operation is its own process
 * (bench/file-crypt.ts); the rounds alternate the limit with the formats, and medians are reported.
 * The files go to BENCH_FILES_DIR (default: the run's work directory).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { median, type FileOpRecord, type FilesResult } from './report.js';
import { DIST, log, round1, round2, ROUNDS } from './settings.js';

const FILE_MB = Number(process.env.BENCH_FILE_MB || 1024);
const MB = 1024 * 1024;

interface OpRun {
  readonly seconds: number;
  readonly maxRssMb: number;
}

/** op, its input and output (by name in the work directory). */
const OPS: readonly (readonly [string, string, string])[] = [
  ['raw-gcm', 'plain', 'raw.out'],
  ['tee-kms-encrypt', 'plain', 'plain.tee-kms'],
  ['tee-kms-decrypt', 'plain.tee-kms', 'tee-kms.out'],
  ['bigdl-encrypt', 'plain', 'plain.bigdl'],
  ['bigdl-decrypt', 'plain.bigdl', 'bigdl.out'],
];

export async function measureFiles(workDir: string): Promise<FilesResult> {
  const dir = await mkdtemp(join(process.env.BENCH_FILES_DIR || workDir, 'files-'));
  try {
    log(`files: writing ${FILE_MB} MiB of random bytes`);
    await randomFile(join(dir, 'plain'), FILE_MB * MB);
    const key = randomBytes(32).toString('hex');
    const runs = new Map<string, OpRun[]>(OPS.map(([op]) => [op, []]));
    for (let round = 0; round < ROUNDS; round++) {
      // In order: each decryption reads what its encryption wrote in this round.
      for (const [op, input, output] of OPS) {
        const run = await fileCrypt(op, join(dir, input), join(dir, output), key);
        runs.get(op)!.push(run);
        log(`files: round ${round + 1}, ${op}: ${round1((FILE_MB / run.seconds) * 1)} MiB/s, peak RSS ${run.maxRssMb} MB`);
        if (op.endsWith('decrypt') || op === 'raw-gcm') await rm(join(dir, output), { force: true });
      }
    }
    const records: FileOpRecord[] = OPS.map(([op]) => {
      const list = runs.get(op)!;
      const seconds = median(list.map((r) => r.seconds))!;
      return { op, mibPerSecond: round1(FILE_MB / seconds)!, maxRssMb: Math.max(...list.map((r) => r.maxRssMb)), rounds: list.map((r) => round2(r.seconds)) };
    });
    const raw = records.find((r) => r.op === 'raw-gcm')!;
    for (const r of records) if (r !== raw) r.ratio = round2(r.mibPerSecond / raw.mibPerSecond);
    return { fileMb: FILE_MB, ops: records };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function fileCrypt(op: string, input: string, output: string, keyHex: string): Promise<OpRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(DIST, 'bench/file-crypt.js'), op, input, output], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += String(d)));
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as OpRun) : reject(new Error(`${op} exited ${code}: ${err.slice(0, 300)}`))));
    child.stdin.end(keyHex);
  });
}

async function randomFile(path: string, size: number): Promise<void> {
  async function* pieces() {
    for (let left = size; left > 0; left -= MB) yield randomBytes(Math.min(MB, left));
  }
  await pipeline(Readable.from(pieces()), createWriteStream(path));
}
