/**
 * The `files` group: encrypt and decrypt throughput of a 1 GiB file (BENCH_FILE_MB changes the size)
 * in both formats, each against one raw AES-256-GCM pass over the same bytes through the same file
 * streams in the same run, and each process's peak RSS. Every operation is its own process
 * (bench/file-crypt.ts), and so is the CLI itself (`tee-kms encrypt` and `decrypt` against a KMS
 * started as `npm start` starts it, embedded store: its time includes process start and the data key
 * request); the rounds alternate the limit with the others, and medians are reported. The files go
 * to BENCH_FILES_DIR (default: the run's work directory).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { freePort, serverEnv, startProc, type Proc } from './proc.js';
import { median, type FileOpRecord, type FilesResult } from './report.js';
import { DIST, log, ROOT, round1, round2, ROUNDS } from './settings.js';

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
  ['cli-encrypt', 'plain', 'plain.cli'],
  ['cli-decrypt', 'plain.cli', 'cli.out'],
];

// Reports a process's peak RSS as it exits; the CLI's own code runs unchanged.
const PEAK_HOOK = pathToFileURL(join(DIST, 'bench/peak-rss-hook.js')).href;

export async function measureFiles(workDir: string): Promise<FilesResult> {
  const dir = await mkdtemp(join(process.env.BENCH_FILES_DIR || workDir, 'files-'));
  try {
    log(`files: writing ${FILE_MB} MiB of random bytes`);
    await randomFile(join(dir, 'plain'), FILE_MB * MB);
    const key = randomBytes(32).toString('hex');
    const kms = await startKms(dir);
    try {
      const runs = new Map<string, OpRun[]>(OPS.map(([op]) => [op, []]));
      for (let round = 0; round < ROUNDS; round++) {
        // In order: each decryption reads what its encryption wrote in this round.
        for (const [op, input, output] of OPS) {
          await rm(join(dir, output), { force: true }); // the CLI never overwrites
          const run = op.startsWith('cli-')
            ? await cli(kms.env, op.slice(4), join(dir, input), join(dir, output))
            : await fileCrypt(op, join(dir, input), join(dir, output), key);
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
      await kms.proc.stop();
    }
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

/** A KMS as `npm start` runs it (embedded store under `dir`, a random root key), with a user and keys. */
async function startKms(dir: string): Promise<{ proc: Proc; env: NodeJS.ProcessEnv }> {
  const port = await freePort();
  const dataDir = join(dir, 'kms');
  const serverVars = { KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ROOT_KEY: randomBytes(32).toString('base64') };
  const proc = startProc('kms', process.execPath, [join(DIST, 'scripts/start.js')], { ...serverEnv(), ...serverVars }, ROOT);
  try {
    await proc.waitForLine(/tee-kms listening/, 60_000);
    const env = {
      ...serverEnv(),
      TEE_KMS_URL: `https://127.0.0.1:${port}`,
      TEE_KMS_CA: join(dataDir, 'tls/cert.pem'),
      TEE_KMS_USER: 'bench',
      TEE_KMS_TOKEN: randomBytes(16).toString('hex'),
    };
    for (const args of [['enroll'], ['primary-key', 'create', 'pk'], ['data-key', 'create', 'pk', 'dk']]) await tee(env, args);
    return { proc, env };
  } catch (error) {
    await proc.stop();
    throw error;
  }
}

function cli(env: NodeJS.ProcessEnv, action: string, input: string, output: string): Promise<OpRun> {
  const keys = action === 'encrypt' ? ['--primary-key', 'pk', '--data-key', 'dk'] : [];
  return tee(env, [action, ...keys, input, '-o', output]);
}

/** One `tee-kms` process from its build: its wall time and peak RSS. */
function tee(env: NodeJS.ProcessEnv, args: readonly string[]): Promise<OpRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, ['--import', PEAK_HOOK, join(DIST, 'cli/main.js'), ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += String(d)));
    child.on('error', reject);
    child.on('exit', (code) => {
      const seconds = (performance.now() - started) / 1000;
      const kb = /peak-rss-kb=(\d+)/.exec(err)?.[1];
      if (code !== 0 || kb === undefined) reject(new Error(`tee-kms ${args[0]} exited ${code}: ${err.slice(0, 300)}`));
      else resolve({ seconds, maxRssMb: round1(Number(kb) / 1024)! });
    });
  });
}

async function randomFile(path: string, size: number): Promise<void> {
  async function* pieces() {
    for (let left = size; left > 0; left -= MB) yield randomBytes(Math.min(MB, left));
  }
  await pipeline(Readable.from(pieces()), createWriteStream(path));
}
