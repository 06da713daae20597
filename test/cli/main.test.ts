/**
 * `tee-kms` (cli/main.ts) run as a real process, from its build, against `npm start`: every command,
 * its `--json` output parsed, its exit status, and no token or share where it must not be.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';
import { findSecrets } from '../support/storage-snapshot.js';
import { writeTlsFiles } from '../support/tls-files.js';
import { PEM_CERTIFICATES } from '../../shared/crypto/pem-bundle.js';
import { parseCustodianKeys, sealShare } from '../../shared/custody/share-jwe.js';

// dist/ is built once per run by test/global-setup.ts.
const cli = join(repoRoot, 'dist/cli/main.js');
const TOKEN = 'alices-token-Zq8v';
const ADMIN_TOKEN = 'local-admin-token-Xk3';

interface Run {
  readonly args: readonly string[];
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  json<T = Record<string, unknown>>(): T;
}

let tmp: string;
let dataDir: string;
let port: number;
let kms: ServerProcess | undefined;
/** Every run, for the scan of argv and output at the end. */
const runs: Run[] = [];

function cliEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '', TEE_KMS_URL: `https://127.0.0.1:${port}`, TEE_KMS_CA: join(dataDir, 'tls/cert.pem'), TEE_KMS_USER: 'alice' };
}

function run(args: readonly string[], options: { env?: Record<string, string>; input?: string } = {}): Run {
  const result = spawnSync(process.execPath, [cli, ...args], {
    cwd: tmp,
    encoding: 'utf8',
    timeout: 60_000,
    input: options.input ?? '',
    env: { ...cliEnv(), ...options.env },
  });
  const answer: Run = {
    args,
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr,
    json: <T>() => JSON.parse(result.stdout) as T,
  };
  runs.push(answer);
  return answer;
}

const withToken = { TEE_KMS_TOKEN: TOKEN };

/** Bytes in, bytes out, with the user's token. */
function runBytes(args: readonly string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: tmp, timeout: 60_000, input, env: { ...cliEnv(), ...withToken } });
  runs.push({ args, status: result.status, stdout: '', stderr: result.stderr.toString(), json: () => ({}) as never });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString() };
}
const withAdmin = { TEE_KMS_ADMIN_TOKEN: ADMIN_TOKEN };

/** The recovery key that GET /rootKey/recover answers (evidence not checked: tests only). */
async function recoveryKeyOf(): Promise<unknown> {
  const ca = await readFile(join(dataDir, 'tls/cert.pem'));
  const url = `https://127.0.0.1:${port}/rootKey/recover?nonce=${randomBytes(32).toString('base64url')}`;
  return new Promise((resolve, reject) => {
    httpsGet(url, { ca }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve((JSON.parse(body) as { recoveryKey: unknown }).recoveryKey));
    }).on('error', reject);
  });
}
const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tee-kms-cli-'));
  dataDir = join(tmp, 'kms');
  port = await freePort();
  kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: ADMIN_TOKEN });
});
afterAll(async () => {
  await kms?.stop();
  await rm(tmp, { recursive: true, force: true });
});

describe('tee-kms against npm start', () => {
  const shares: Array<{ index: number; content: string }> = [];
  let key: string;

  it('status, then the first rotate writes one 0600 file per share and prints none (attested: on request)', async () => {
    const status = run(['status', '--json']);
    expect(status.status).toBe(0);
    expect(status.json()).toMatchObject({ sealed: true, initialized: false });

    // With --attest the first rotate goes in the clear: without custodians, only on request.
    const development = join(tmp, 'attest-first-rotate.json');
    await writeFile(development, JSON.stringify({ allowDevelopment: true }));
    const refused = run(['--attest', development, 'rotate', '--print-shares']);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain('--allow-plaintext-shares');
    expect(refused.stdout).toBe('');
    expect(run(['status', '--json']).json()).toMatchObject({ initialized: false });

    const outDir = join(tmp, 'shares');
    const rotated = run(['--attest', development, '--json', 'rotate', '--allow-plaintext-shares', '--out-dir', outDir]);
    expect(rotated.status, rotated.stderr).toBe(0);
    const { state, files } = rotated.json<{ state: string; files: string[] }>();
    expect(state).toBe('current');
    expect(files).toHaveLength(5);
    expect((await stat(outDir)).mode & 0o777).toBe(0o700);
    for (const file of files) {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      shares.push(JSON.parse(await readFile(file, 'utf8')) as { index: number; content: string });
    }
    for (const share of shares) expect(rotated.stdout + rotated.stderr).not.toContain(share.content);
    expect(run(['status', '--json']).json()).toMatchObject({ sealed: false, initialized: true, t: 3, n: 5 });
  });

  it('enroll, primary-key create, data-key create and get: --json parsed, the token from the environment or a file', async () => {
    expect(run(['enroll', '--json'], { env: withToken }).json()).toEqual({ user: 'alice', created: true });
    const tokenFile = join(tmp, 'token');
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const created = run(['primary-key', 'create', 'pk1', '--json', '--token-file', tokenFile]);
    expect(created.status, created.stderr).toBe(0);
    expect(created.json()).toEqual({ primaryKey: 'pk1', created: true });
    expect(run(['data-key', 'create', 'pk1', 'dk1'], { env: { TEE_KMS_TOKEN_FILE: tokenFile } }).stdout).toBe('data key dk1 created under pk1\n');
    const got = run(['--json', 'data-key', 'get', 'pk1', 'dk1'], { env: withToken });
    key = got.json<{ key: string }>().key;
    expect(Buffer.from(key, 'base64')).toHaveLength(32);
    expect(run(['data-key', 'get', 'pk1', 'dk1'], { env: withToken }).stdout).toBe(`${key}\n`);
  });

  it('data-key get --out writes a new 0600 file and never overwrites one', async () => {
    const out = join(tmp, 'dk1.key');
    const written = run(['data-key', 'get', 'pk1', 'dk1', '--out', out], { env: withToken });
    expect(written.status).toBe(0);
    expect(written.stdout).not.toContain(key);
    expect(await readFile(out, 'utf8')).toBe(`${key}\n`);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    await writeFile(out, 'kept');
    const again = run(['data-key', 'get', 'pk1', 'dk1', '--out', out], { env: withToken });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/exists: it is never overwritten/);
    expect(await readFile(out, 'utf8')).toBe('kept');
  });

  it('data-key get --out - prints the key on standard output, as -o - does elsewhere, and writes no file named -', async () => {
    const printed = run(['data-key', 'get', 'pk1', 'dk1', '--out', '-'], { env: withToken });
    expect(printed).toMatchObject({ status: 0, stdout: `${key}\n`, stderr: '' });
    const json = run(['--json', 'data-key', 'get', 'pk1', 'dk1', '--out', '-'], { env: withToken });
    expect(json.json()).toEqual({ primaryKey: 'pk1', dataKey: 'dk1', key });
    expect(existsSync(join(tmp, '-'))).toBe(false);
  });

  it('a standard output that fills up is an error, never a key or plaintext cut short with exit 0', async () => {
    /** `args` with standard output appended to `out` (1,000 bytes there already), files limited to 1 KiB. */
    const intoFullFile = async (args: string, out: string) => {
      await writeFile(out, Buffer.alloc(1000));
      // SIGXFSZ ignored: a write past the limit is short, then fails with EFBIG (a file system filling up, alike).
      const script = `ulimit -f 1; trap '' XFSZ; exec "${process.execPath}" "${cli}" ${args} >> "${out}"`;
      const result = spawnSync('bash', ['--norc', '--noprofile', '-c', script], {
        cwd: tmp,
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...cliEnv(), ...withToken },
      });
      return { status: result.status, stderr: result.stderr, written: (await readFile(out)).subarray(1000) };
    };
    const got = await intoFullFile('data-key get pk1 dk1', join(tmp, 'full-key.out'));
    expect(got.status).toBe(1);
    expect(got.stderr).toBe('tee-kms: cannot write standard output (EFBIG)\n');
    expect(got.written.length).toBeLessThan(key.length);
    expect(key.startsWith(got.written.toString())).toBe(true);

    const plain = join(tmp, 'full-plain.bin');
    await writeFile(plain, randomBytes(4096));
    expect(run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', `${plain}.kms`], { env: withToken }).status).toBe(0);
    const decrypted = await intoFullFile(`decrypt "${plain}.kms" -o -`, join(tmp, 'full-plain.out'));
    expect(decrypted.status).toBe(1);
    expect(decrypted.stderr).toContain('cannot write standard output (EFBIG)');
    expect(decrypted.written.length).toBe(1024 - 1000); // up to the limit, then the error
  });

  it('encrypt and decrypt into a missing directory name the output given, not their temporary file', async () => {
    const plain = join(tmp, 'to-missing-dir.bin');
    await writeFile(plain, randomBytes(1000));
    const sealed = `${plain}.kms`;
    expect(run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', sealed], { env: withToken }).status).toBe(0);
    const commands = [
      ['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', 'nodir/x.kms'],
      ['decrypt', sealed, '-o', 'nodir/x.out'],
    ];
    for (const args of commands) {
      const refused = run(args, { env: withToken });
      expect(refused).toMatchObject({ status: 1, stdout: '', stderr: `tee-kms: cannot open ${args.at(-1)!} (ENOENT)\n` });
    }
    expect(existsSync(join(tmp, 'nodir'))).toBe(false);
  });

  it('decrypt interrupted (Ctrl-C) part way: exit 130, and neither the output nor its temporary plaintext is left', async () => {
    const plain = join(tmp, 'interrupted.bin');
    await writeFile(plain, randomBytes(1024 * 1024));
    expect(run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', `${plain}.kms`], { env: withToken }).status).toBe(0);
    const sealed = await readFile(`${plain}.kms`);
    const outDir = await mkdtemp(join(tmp, 'interrupted-'));
    const child = spawn(process.execPath, [cli, 'decrypt', '-', '-o', join(outDir, 'plain.out')], {
      cwd: tmp,
      env: { ...cliEnv(), ...withToken },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    // The header and the first chunk; the rest never comes, so the output stays a temporary file.
    // What the pipe still holds when the child is stopped cannot be written: EPIPE, expected.
    child.stdin.on('error', () => undefined);
    child.stdin.write(sealed.subarray(0, 300 * 1024));
    const temporary = async () => (await readdir(outDir)).some((name) => name.endsWith('.tmp'));
    for (let i = 0; i < 400 && !(await temporary()); i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(await temporary()).toBe(true);
    child.kill('SIGINT');
    expect(await closed).toBe(130);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('a token file that never ends (/dev/zero) is refused at 1 MiB, not read whole', () => {
    const endless = run(['--token-file', '/dev/zero', 'status']);
    expect(endless.status).toBe(2);
    expect(endless.stderr).toBe('tee-kms: --token-file file /dev/zero is larger than 1048576 bytes: not one\n');
  });

  it('encrypt and decrypt a file: tee-kms format by default, all or nothing, no progress bar off a terminal', async () => {
    const plain = join(tmp, 'big.bin');
    const data = randomBytes(5 * 1024 * 1024 + 123);
    await writeFile(plain, data);
    const encrypted = join(tmp, 'big.bin.kms');
    const enc = run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', encrypted, '--json'], { env: withToken });
    expect(enc.status, enc.stderr).toBe(0);
    expect(enc.json()).toEqual({ encrypted: true, format: 'tee-kms', file: encrypted });
    expect(enc.stderr).toBe('');
    const sealed = await readFile(encrypted);
    expect(sealed.subarray(0, 8).toString('latin1')).toBe('tee-kms\0');
    expect(sealed.includes(data.subarray(0, 64))).toBe(false);

    const decrypted = join(tmp, 'big.out');
    const dec = run(['decrypt', encrypted, '-o', decrypted], { env: withToken });
    expect(dec.status, dec.stderr).toBe(0);
    expect((await readFile(decrypted)).equals(data)).toBe(true);
    expect((await stat(decrypted)).mode & 0o777).toBe(0o600);
    expect(run(['decrypt', encrypted, '-o', decrypted], { env: withToken })).toMatchObject({ status: 1 });

    // One byte changed in the middle: refused, and no output file at all.
    sealed[sealed.length >> 1]! ^= 1;
    const tampered = join(tmp, 'tampered.kms');
    await writeFile(tampered, sealed);
    const refused = run(['decrypt', tampered, '-o', join(tmp, 'tampered.out')], { env: withToken });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^tee-kms: INTEGRITY: /);
    expect(await readdir(tmp)).not.toContain('tampered.out');

    // Another user's credentials do not open it.
    const other = run(['decrypt', encrypted, '-o', join(tmp, 'other.out')], { env: { ...withToken, TEE_KMS_USER: 'bob' } });
    expect(other.status).toBe(1);
    expect(other.stderr).toMatch(/under a key of user alice, not bob/);
  });

  it('encrypt and decrypt through standard input and output, and in BigDL format', async () => {
    const data = randomBytes(100_000);
    const enc = runBytes(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', '-', '-o', '-'], data);
    expect(enc.status, enc.stderr).toBe(0);
    const dec = runBytes(['decrypt', '-', '-o', '-'], enc.stdout);
    expect(dec.status, dec.stderr).toBe(0);
    expect(dec.stdout.equals(data)).toBe(true);

    const plain = join(tmp, 'bigdl.in');
    await writeFile(plain, data);
    const bigdl = join(tmp, 'bigdl.enc');
    expect(run(['encrypt', '--format', 'bigdl', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', bigdl], { env: withToken }).status).toBe(0);
    const back = join(tmp, 'bigdl.out');
    // BigDL 2.3+ files carry the data key's name: --primary-key is enough.
    const opened = run(['decrypt', '--format', 'bigdl', '--primary-key', 'pk1', bigdl, '-o', back], { env: withToken });
    expect(opened.status, opened.stderr).toBe(0);
    expect((await readFile(back)).equals(data)).toBe(true);
    expect(run(['decrypt', '--format', 'bigdl', bigdl, '-o', join(tmp, 'x')], { env: withToken }).status).toBe(2);
  });

  it('decrypt without --format reads the format from the file, from a path or standard input, and refuses any other file', async () => {
    const data = randomBytes(70_000);
    data[0] = 0x20; // as plaintext, in neither format: a first byte 0x80 is BigDL 2.2's version (1 run in 256)
    const plain = join(tmp, 'detect.in');
    await writeFile(plain, data);
    const [teeKms, bigdl] = [join(tmp, 'detect.kms'), join(tmp, 'detect.bigdl')];
    expect(run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', teeKms], { env: withToken }).status).toBe(0);
    expect(run(['encrypt', '--format', 'bigdl', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', bigdl], { env: withToken }).status).toBe(0);

    const fromPath = run(['--json', 'decrypt', '--primary-key', 'pk1', bigdl, '-o', join(tmp, 'detect.bigdl.out')], { env: withToken });
    expect(fromPath.status, fromPath.stderr).toBe(0);
    expect(fromPath.json()).toMatchObject({ decrypted: true, format: 'bigdl' });
    expect((await readFile(join(tmp, 'detect.bigdl.out'))).equals(data)).toBe(true);
    const fromStdin = runBytes(['decrypt', '--primary-key', 'pk1', '-', '-o', '-'], await readFile(bigdl));
    expect(fromStdin.status, fromStdin.stderr).toBe(0);
    expect(fromStdin.stdout.equals(data)).toBe(true);
    const teeKmsFromStdin = runBytes(['decrypt', '-', '-o', '-'], await readFile(teeKms));
    expect(teeKmsFromStdin.status, teeKmsFromStdin.stderr).toBe(0);
    expect(teeKmsFromStdin.stdout.equals(data)).toBe(true);

    // Exit 2 and no output file: a BigDL file without its primary key, either format where the
    // other is asked for, keys named for a tee-kms file, and a file in neither format.
    const refusals: Array<[string[], RegExp]> = [
      [['decrypt', bigdl], /^tee-kms: a BigDL file needs --primary-key\n$/],
      [['decrypt', '--format', 'tee-kms', bigdl], /^tee-kms: .*detect\.bigdl is a bigdl file, not tee-kms: nothing was decrypted\n$/],
      [['decrypt', '--format', 'bigdl', '--primary-key', 'pk1', teeKms], /^tee-kms: .*detect\.kms is a tee-kms file, not bigdl: nothing was decrypted\n$/],
      [['decrypt', '--primary-key', 'pk1', teeKms], /^tee-kms: a tee-kms file names its keys: --primary-key and --data-key are for BigDL files\n$/],
      [['decrypt', plain], /^tee-kms: .*detect\.in is neither a tee-kms nor a BigDL encrypted file\n$/],
    ];
    for (const [args, message] of refusals) {
      const refused = run([...args, '-o', join(tmp, 'detect.refused')], { env: withToken });
      expect({ args, status: refused.status, stdout: refused.stdout }).toEqual({ args, status: 2, stdout: '' });
      expect(refused.stderr).toMatch(message);
      expect(await readdir(tmp)).not.toContain('detect.refused');
    }
    const plainFromStdin = runBytes(['decrypt', '-', '-o', '-'], data);
    expect({ status: plainFromStdin.status, stdout: plainFromStdin.stdout.length }).toEqual({ status: 2, stdout: 0 });
    expect(plainFromStdin.stderr).toBe('tee-kms: standard input is neither a tee-kms nor a BigDL encrypted file\n');
  });

  it.skipIf(!hasScript)('a progress bar on a terminal for a large input', () => {
    const out = join(tmp, 'big.tty.kms');
    const command = `${process.execPath} ${cli} encrypt --primary-key pk1 --data-key dk1 ${join(tmp, 'big.bin')} -o ${out}`;
    const onTerminal = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', env: { ...cliEnv(), ...withToken } });
    expect(onTerminal.status, onTerminal.stdout).toBe(0);
    expect(onTerminal.stdout).toMatch(/encrypting \[.*\] 100% \| 5\/5 MiB/);
  });

  it('attest verifies the evidence against --attest and prints what it establishes; --attest seals credentials', async () => {
    const development = join(tmp, 'attest-dev.json');
    await writeFile(development, JSON.stringify({ allowDevelopment: true }));
    const strict = join(tmp, 'attest-strict.json');
    await writeFile(strict, '{}');
    const { rootKeyId } = run(['status', '--json']).json<{ rootKeyId: string }>();

    const attested = run(['--attest', development, 'attest', '--json']);
    expect(attested.status, attested.stderr).toBe(0);
    expect(attested.json()).toMatchObject({ tee: 'sample', rootKeyId, serviceKey: { kty: 'OKP', crv: 'X25519', kid: rootKeyId } });
    expect(run(['--attest', development, 'attest']).stdout).toMatch(new RegExp(`^tee: sample\nrootKeyId: ${rootKeyId}\n`));

    // Sample evidence proves nothing: refused unless the options allow development.
    const refused = run(['--attest', strict, 'attest']);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^tee-kms: ATTESTATION: /);
    // The member of the --attest file to set, not the TypeScript option's name.
    expect(refused.stderr).toContain(`refused unless --attest ${strict} holds "allowDevelopment": true\n`);
    expect(refused.stderr).not.toContain('attest.allowDevelopment');
    expect(run(['attest']).status).toBe(2);
    await writeFile(join(tmp, 'attest-bad.json'), JSON.stringify({ allowDevelopmnt: true }));
    expect(run(['--attest', join(tmp, 'attest-bad.json'), 'attest'])).toMatchObject({
      status: 2,
      stderr: expect.stringMatching(/unknown member allowDevelopmnt/),
    });

    // Credentials sealed to the attested service key: the same key comes back.
    const sealed = run(['--attest', development, '--json', 'data-key', 'get', 'pk1', 'dk1'], { env: withToken });
    expect(sealed.status, sealed.stderr).toBe(0);
    expect(sealed.json()).toMatchObject({ key });
    expect(run(['--attest', strict, 'data-key', 'get', 'pk1', 'dk1'], { env: withToken }).status).toBe(1);

    // keyReuseSeconds as the client takes it: 0 (fresh keys per request) works, out of range is a usage error.
    const fresh = join(tmp, 'attest-fresh.json');
    await writeFile(fresh, JSON.stringify({ allowDevelopment: true, keyReuseSeconds: 0 }));
    const freshGet = run(['--attest', fresh, '--json', 'data-key', 'get', 'pk1', 'dk1'], { env: withToken });
    expect(freshGet.status, freshGet.stderr).toBe(0);
    expect(freshGet.json()).toMatchObject({ key });
    await writeFile(join(tmp, 'attest-long.json'), JSON.stringify({ allowDevelopment: true, keyReuseSeconds: 7200 }));
    expect(run(['--attest', join(tmp, 'attest-long.json'), 'data-key', 'get', 'pk1', 'dk1'], { env: withToken })).toMatchObject({
      status: 2,
      stderr: `tee-kms: CONFIG: "keyReuseSeconds" of --attest ${join(tmp, 'attest-long.json')} must be a whole number of seconds from 0 to 3600\n`,
    });
  });

  it('`npm run --silent kms --` runs the same command, paths taken from where npm was run; the bin is the built entry', async () => {
    const result = spawnSync('npm', ['--prefix', repoRoot, 'run', '--silent', 'kms', '--', 'data-key', 'get', 'pk1', 'dk1', '--out', 'npm.key', '--json'], {
      cwd: tmp,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...cliEnv(), ...withToken, HOME: process.env.HOME ?? '/root' },
    });
    runs.push({ args: ['npm', 'run', 'kms'], status: result.status, stdout: result.stdout, stderr: result.stderr, json: () => ({}) as never });
    expect(result.status, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ file: 'npm.key' });
    expect(await readFile(join(tmp, 'npm.key'), 'utf8')).toBe(`${key}\n`);
    const { bin } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(bin).toEqual({ 'tee-kms': 'dist/cli/main.js' });
    expect((await readFile(join(repoRoot, bin['tee-kms']!), 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('the server refusing: exit 1 with its code and message, nothing printed on stdout', () => {
    const conflict = run(['enroll'], { env: withToken });
    expect(conflict).toMatchObject({ status: 1, stdout: '' });
    expect(conflict.stderr).toMatch(/^tee-kms: CONFLICT: user \[alice\] already exists/);
    const wrong = run(['data-key', 'get', 'pk1', 'dk1'], { env: { TEE_KMS_TOKEN: 'not-the-token' } });
    expect(wrong).toMatchObject({ status: 1, stdout: '' });
    expect(wrong.stderr).toMatch(/^tee-kms: UNAUTHORIZED: /);
    expect(run(['data-key', 'get', 'pk1', 'nope'], { env: withToken }).stderr).toMatch(/^tee-kms: NOT_FOUND: /);
    expect(run(['primary-key', 'create', '../x'], { env: withToken }).status).toBe(1);
  });

  it('rotate with custodians: custodian keygen and decrypt, verify with the admin token from a file', async () => {
    const publicKeys = [];
    for (let i = 0; i < 5; i++) {
      const keygen = run(['custodian', 'keygen', join(tmp, `custodian-${i}`)]);
      expect(keygen.status, keygen.stderr).toBe(0);
      publicKeys.push(keygen.json());
      expect((await stat(join(tmp, `custodian-${i}/custodian-key.json`))).mode & 0o777).toBe(0o600);
    }
    const custodians = join(tmp, 'custodians.json');
    await writeFile(custodians, JSON.stringify(publicKeys));
    const adminTokenFile = join(tmp, 'admin-token');
    await writeFile(adminTokenFile, ADMIN_TOKEN, { mode: 0o600 });

    const outDir = join(tmp, 'sealed-shares');
    const current = [1, 2, 3].map((n) => join(tmp, 'shares', `share-${n}.json`));
    const refused = run(['rotate', '--custodians', custodians, '--shares', ...current, '--out-dir', outDir]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^tee-kms: UNAUTHORIZED: /);
    // Said in the command line's terms, not only as the HTTP header.
    expect(refused.stderr).toMatch(
      /; from the command line, set TEE_KMS_ADMIN_TOKEN, or name a file holding it with --admin-token-file or TEE_KMS_ADMIN_TOKEN_FILE\n$/,
    );
    const wrong = run(['rotate', '--custodians', custodians, '--shares', ...current, '--out-dir', outDir], {
      env: { TEE_KMS_ADMIN_TOKEN: 'not-the-admin-token' },
    });
    expect(wrong).toMatchObject({ status: 1, stdout: '', stderr: 'tee-kms: UNAUTHORIZED: wrong admin token (the admin token of TEE_KMS_ADMIN_TOKEN)\n' });
    const rotated = run(['--admin-token-file', adminTokenFile, '--json', 'rotate', '--custodians', custodians, '--out-dir', outDir, '--shares', ...current]);
    expect(rotated.status, rotated.stderr).toBe(0);
    expect(rotated.json()).toMatchObject({ state: 'pending-verification' });
    const files = rotated.json<{ files: string[] }>().files;
    expect(files).toHaveLength(5);

    // The share files as written, still encrypted to their custodians: refused before anything is sent.
    const pending = run(['status', '--json']).json<{ pendingRootKeyId: string }>().pendingRootKeyId;
    const kid = (publicKeys[0] as { kid: string }).kid;
    const unopened = [
      run(['verify', ...files.slice(0, 3)], { env: withAdmin }),
      run(['rotate', '--custodians', custodians, '--shares', ...files.slice(0, 3), '--out-dir', join(tmp, 'rotate-out-unused')], { env: withAdmin }),
    ];
    for (const refusal of unopened) {
      expect(refusal).toMatchObject({ status: 2, stdout: '' });
      expect(refusal.stderr).toContain(
        `tee-kms: the share file ${files[0]!} is still encrypted (a JWE to kid ${kid}, not to this sealing service's recovery key, kid `,
      );
      expect(refusal.stderr).toContain(
        `: rotate --out-dir writes each share encrypted to its custodian): decrypt it first, e.g. \`tee-kms custodian decrypt <key file> ${files[0]!} -o <new file>\` and give that file, with --attest, which seals it to the attested recovery key (or seal it yourself with \`custodian seal-share\`, docs/custodians.md); nothing was sent (a share sealed with \`custodian seal-share\` to an earlier recovery key is sealed again)\n`,
      );
    }
    expect(run(['status', '--json']).json()).toMatchObject({ verificationPending: true, pendingRootKeyId: pending });
    expect(existsSync(join(tmp, 'rotate-out-unused'))).toBe(false);

    const opened = [];
    for (const [i, file] of files.entries()) {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const decrypted = run(['custodian', 'decrypt', join(tmp, `custodian-${i}/custodian-key.json`), file]);
      expect(decrypted.status, decrypted.stderr).toBe(0);
      const share = decrypted.json<{ index: number; content: string }>();
      const plain = join(tmp, `plain-share-${i}.json`);
      await writeFile(plain, JSON.stringify(share), { mode: 0o600 });
      opened.push({ share, plain });
    }
    // -o: a new 0600 file instead of standard output, never over an existing one.
    const viaFile = join(tmp, 'share-via-o.json');
    const written = run(['custodian', 'decrypt', join(tmp, 'custodian-0/custodian-key.json'), files[0]!, '-o', viaFile]);
    expect(written.status, written.stderr).toBe(0);
    expect(written.json()).toEqual({ index: opened[0]!.share.index, file: viaFile });
    expect(await readFile(viaFile, 'utf8')).toBe(`${JSON.stringify(opened[0]!.share)}\n`);
    expect((await stat(viaFile)).mode & 0o777).toBe(0o600);
    expect(run(['custodian', 'decrypt', join(tmp, 'custodian-0/custodian-key.json'), files[0]!, '-o', viaFile])).toMatchObject({ status: 1, stdout: '' });
    // The current root key stays until the new shares are proven.
    expect(run(['status', '--json']).json()).toMatchObject({ verificationPending: true });
    const verified = run(['verify', ...opened.slice(1, 4).map((o) => o.plain), '--json'], { env: { TEE_KMS_ADMIN_TOKEN_FILE: adminTokenFile } });
    expect(verified.status, verified.stderr).toBe(0);
    expect(verified.json()).toMatchObject({ promoted: true });
    expect(run(['status', '--json']).json()).toMatchObject({ verificationPending: false });
    shares.splice(0, shares.length, ...opened.map((o) => o.share));
    expect(run(['data-key', 'get', 'pk1', 'dk1'], { env: withToken }).stdout).toBe(`${key}\n`);
  });

  it('after a restart: sealed (exit 1, SEALED), recover one share file, then --interactive reads the rest', async () => {
    await kms?.stop();
    kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: ADMIN_TOKEN });
    const sealed = run(['data-key', 'get', 'pk1', 'dk1'], { env: withToken });
    expect(sealed.status).toBe(1);
    expect(sealed.stderr).toMatch(/^tee-kms: SEALED: /);

    // A share file as rotate --out-dir wrote it, still encrypted to its custodian: refused before
    // anything is sent, with how to decrypt it on the way; with --custodian-key, said as that key's.
    const encrypted = join(tmp, 'sealed-shares/share-1.json');
    const custodianKey = join(tmp, 'custodian-0/custodian-key.json');
    const kid = (JSON.parse(await readFile(join(tmp, 'custodians.json'), 'utf8')) as Array<{ kid: string }>)[0]!.kid;
    const unopened = run(['recover', encrypted]);
    expect(unopened).toMatchObject({ status: 2, stdout: '' });
    expect(unopened.stderr).toContain(
      `tee-kms: the share file ${encrypted} is still encrypted (a JWE to kid ${kid}, not to this sealing service's recovery key`,
    );
    expect(unopened.stderr).toContain(
      `decrypt it first, e.g. \`tee-kms custodian decrypt <key file> ${encrypted} | tee-kms --attest <attest file> recover -\`, with --attest`,
    );
    const development = join(tmp, 'attest-dev.json');
    const withKey = run(['--attest', development, 'recover', '--custodian-key', custodianKey, encrypted]);
    expect(withKey).toMatchObject({
      status: 2,
      stdout: '',
      stderr: `tee-kms: the share file ${encrypted} is still encrypted (a JWE to your custodian key, kid ${kid}): decrypt it first, e.g. \`tee-kms custodian decrypt ${custodianKey} ${encrypted} | tee-kms --attest ${development} recover --custodian-key ${custodianKey} -\`; nothing was sent\n`,
    });
    expect(run(['status', '--json']).json()).toMatchObject({ sealed: true, progress: 0 });

    // From standard input: a share decrypted on the fly never touches the disk.
    const one = run(['recover', '-', '--json'], { input: JSON.stringify(shares[4]) });
    expect(one.status, one.stderr).toBe(0);
    expect(one.json()).toMatchObject({ sealed: true, progress: 1, t: 3 });

    // A line that is no share, a duplicate, then two good ones: the bad ones are said and skipped.
    const stillEncrypted = (await readFile(encrypted, 'utf8')).trim();
    const input = ['not a share', JSON.stringify(shares[4]), stillEncrypted, shares[0]!.content, JSON.stringify(shares[2]), ''].join('\n');
    const interactive = run(['recover', '--interactive', '--json'], { input });
    expect(interactive.status, interactive.stderr).toBe(0);
    expect(interactive.json()).toMatchObject({ sealed: false });
    expect(interactive.stderr).toContain('share 2 of 3: ');
    expect(interactive.stderr).toContain('share accepted: 2 of 3 received');
    expect(interactive.stderr).toMatch(/share refused: \w+: /);
    expect(interactive.stderr).toContain(`the share on standard input is still encrypted (a JWE to kid ${kid}, not to this sealing service's recovery key`);
    for (const share of shares) expect(interactive.stdout + interactive.stderr).not.toContain(share.content);
    expect(run(['data-key', 'get', 'pk1', 'dk1'], { env: withToken }).stdout).toBe(`${key}\n`);

    const notSealed = run(['recover', '--interactive'], { input: `${shares[1]!.content}\n` });
    expect(notSealed.status).toBe(1);
    expect(notSealed.stderr).toMatch(/not sealed/);
  });

  it('recover --interactive ending before the threshold: exit 1, still sealed', async () => {
    await kms?.stop();
    kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: ADMIN_TOKEN });
    const short = run(['recover', '--interactive'], { input: `${JSON.stringify(shares[0])}\n` });
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/still sealed \(1 of 3 received\)/);
    // A share sealed to the recovery key (as `custodian seal-share` does) names it in its header: sent as it is.
    const recoveryKey = parseCustodianKeys([await recoveryKeyOf()], 1)[0]!;
    const sealedShare = join(tmp, 'sealed-to-recovery-key.json');
    await writeFile(sealedShare, JSON.stringify({ index: shares[1]!.index, content: await sealShare(shares[1]!.content, recoveryKey) }), { mode: 0o600 });
    const sealedSent = run(['recover', sealedShare, '--json']);
    expect(sealedSent.status, sealedSent.stderr).toBe(0);
    expect(sealedSent.json()).toMatchObject({ sealed: true, progress: 2, t: 3 });
    // Attested mode: each share is sealed to the sealing service's attested recovery key first.
    const development = join(tmp, 'attest-dev.json');
    const rest = run(['--attest', development, 'recover', '--interactive'], { input: `${JSON.stringify(shares[3])}\n` });
    expect(rest.status, rest.stderr).toBe(0);
    expect(rest.stdout).toBe('tee-kms is unsealed\n');
  });

  it.skipIf(!hasScript)('rotate refuses, before rotating, to print the shares to a terminal unless --print-shares', () => {
    const before = run(['status', '--json']).json<{ rootKeyId: string }>().rootKeyId;
    // script(1) gives the command a terminal as its standard output.
    const command = `${process.execPath} ${cli} rotate`;
    const onTerminal = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', env: { ...cliEnv(), ...withAdmin } });
    expect(onTerminal.status).toBe(2);
    expect(onTerminal.stdout).toMatch(/--out-dir <dir>, redirect standard output, or ask --print-shares/);
    expect(run(['status', '--json']).json()).toMatchObject({ rootKeyId: before, verificationPending: false });
  });

  it.skipIf(!hasScript)('custodian decrypt refuses to print the share to a terminal unless --print-shares', async () => {
    const share = JSON.parse(await readFile(join(tmp, 'plain-share-0.json'), 'utf8')) as { content: string };
    const command = (...flags: string[]) =>
      [process.execPath, cli, 'custodian', 'decrypt', join(tmp, 'custodian-0/custodian-key.json'), join(tmp, 'sealed-shares/share-1.json'), ...flags].join(' ');
    const onTerminal = spawnSync('script', ['-qec', command(), '/dev/null'], { encoding: 'utf8', env: cliEnv() });
    expect(onTerminal.status).toBe(2);
    expect(onTerminal.stdout).toMatch(
      /^tee-kms: the share would be printed to the terminal: give -o <file>, redirect standard output, or ask --print-shares\r?\n$/,
    );
    const asked = spawnSync('script', ['-qec', command('--print-shares'), '/dev/null'], { encoding: 'utf8', env: cliEnv() });
    expect(asked.status).toBe(0);
    expect(asked.stdout).toContain(share.content);
  });

  it('rotate prints the shares to a pipe, one JSON object a line', async () => {
    const rotated = run(['rotate'], { env: withAdmin });
    expect(rotated.status, rotated.stderr).toBe(0);
    const lines = rotated.stdout.trim().split('\n');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ index: expect.any(Number), content: expect.any(String) });
  });

  it('no run ever had a token in its arguments, and none printed one', async () => {
    expect(runs.length).toBeGreaterThan(20);
    for (const { args, stdout, stderr } of runs) {
      expect(findSecrets([...args, stdout, stderr].join('\n'), [TOKEN, ADMIN_TOKEN])).toEqual([]);
    }
    expect(findSecrets(await kms!.settledOutput(), [TOKEN, ADMIN_TOKEN])).toEqual([]);
  });
});

describe('tee-kms: usage and transport failures', () => {
  it('--help on every command exits 0 and shows its usage', () => {
    const commands = [[], ['status'], ['enroll'], ['primary-key'], ['primary-key', 'create'], ['data-key'], ['data-key', 'create'], ['data-key', 'get']];
    commands.push(['rotate'], ['verify'], ['recover'], ['encrypt'], ['decrypt'], ['attest'], ['custodian'], ['custodian', 'keygen'], ['custodian', 'decrypt']);
    for (const command of commands) {
      const help = run([...command, '--help']);
      expect(help.status, command.join(' ')).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: tee-kms ${command.join(' ')}`.trimEnd()));
    }
  });

  it('usage errors exit 2: an unknown command, a missing argument, no URL, --interactive with a file, --custodian-key out of place', () => {
    expect(run(['bogus']).status).toBe(2);
    expect(run(['data-key', 'get', 'pk1']).status).toBe(2);
    expect(run(['recover']).status).toBe(2);
    expect(run(['recover', 'file', '--interactive']).status).toBe(2);
    // A custodian's key goes with that custodian's one share, and only sealed to an attested recovery key.
    expect(run(['recover', 'file', '--custodian-key', 'key.json']).stderr).toMatch(/--custodian-key needs --attest/);
    expect(run(['--attest', 'attest.json', 'recover', '--interactive', '--custodian-key', 'key.json']).stderr).toMatch(
      /--custodian-key goes with one share file/,
    );
    const noUrl = run(['status'], { env: { TEE_KMS_URL: '' } });
    expect(noUrl.status).toBe(2);
    expect(noUrl.stderr).toMatch(/--url/);
    expect(run(['enroll']).stderr).toMatch(/no token/);
    expect(run(['verify', join(tmp, 'missing.json')], { env: withAdmin }).status).toBe(2);
    // A share itself where its file is expected: refused, and not repeated.
    const content = randomBytes(33).toString('base64');
    const inArgv = run(['recover', content]);
    expect(inArgv).toMatchObject({ status: 2, stdout: '' });
    expect(inArgv.stderr).toMatch(/^tee-kms: the share argument names no file and looks like a share: .* or - and the share on standard input\n$/);
    expect(inArgv.stderr).not.toContain(content);
    const twice = run(['verify', '-', '-'], { env: withAdmin, input: `${content}\n${content}\n` });
    expect(twice).toMatchObject({ status: 2, stdout: '', stderr: 'tee-kms: standard input (-) holds one share: give the others as files\n' });
  });

  it('encrypt and decrypt refuse an input path that is missing, a folder or a pipe, and say why and what to do instead', () => {
    const fifo = join(tmp, 'input.fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    for (const command of [['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1'], ['decrypt']]) {
      const out = join(tmp, 'never-written');
      const missing = run([...command, join(tmp, 'missing.bin'), '-o', out], { env: withToken });
      expect(missing).toMatchObject({ status: 2, stdout: '' });
      expect(missing.stderr).toMatch(/^tee-kms: cannot read .*missing\.bin \(ENOENT\)\n$/);
      expect(run([...command, tmp, '-o', out], { env: withToken }).stderr).toMatch(/^tee-kms: .* is a directory, not a file\n$/);
      // Decrypt reads a path twice (its first bytes tell the format): a pipe is given as standard input.
      const pipe = run([...command, fifo, '-o', out], { env: withToken });
      expect(pipe).toMatchObject({ status: 2, stdout: '' });
      expect(pipe.stderr).toMatch(/^tee-kms: .*input\.fifo is not a regular file: give it on standard input instead \(- as the input\)\n$/);
      expect(existsSync(out)).toBe(false);
    }
  });

  it('a token is taken from the environment or a file only: --token is no option', () => {
    const flag = run(['enroll', '--token', 'x']);
    expect(flag.status).toBe(2);
    expect(flag.stderr).toMatch(/unknown option '--token'/);
  });

  it('exit 3 when nothing listens, or the certificate is not trusted', async () => {
    const closed = run(['status'], { env: { TEE_KMS_URL: `https://127.0.0.1:${await freePort()}` } });
    expect(closed.status).toBe(3);
    expect(closed.stderr).toMatch(/^tee-kms: UNREACHABLE: /);
    const untrusted = run(['status'], { env: { TEE_KMS_CA: '' } });
    expect(untrusted.status).toBe(3);
    expect(untrusted.stderr).toMatch(
      /^tee-kms: TLS: .*DEPTH_ZERO_SELF_SIGNED_CERT.*: give the CA certificate that issued it \(PEM\) with --ca <file> or TEE_KMS_CA\n$/,
    );
  });

  it('a CA file is named as given (--ca or TEE_KMS_CA), and one that is not PEM is a usage error, not a certificate not trusted', async () => {
    const missing = join(tmp, 'missing-ca.pem');
    expect(run(['status'], { env: { TEE_KMS_CA: missing } })).toMatchObject({ status: 2, stderr: `tee-kms: cannot read TEE_KMS_CA ${missing}\n` });
    expect(run(['--ca', missing, 'status'])).toMatchObject({ status: 2, stderr: `tee-kms: cannot read --ca ${missing}\n` });
    const der = join(tmp, 'ca.der');
    const pem = await readFile(join(dataDir, 'tls/cert.pem'), 'utf8');
    await writeFile(der, Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'));
    const broken = join(tmp, 'broken-ca.pem');
    await writeFile(broken, '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n');
    const notPem = [
      [['--ca', der, 'status'], {}, `--ca ${der}`],
      [['status'], { TEE_KMS_CA: der }, `TEE_KMS_CA ${der}`],
      [['--ca', broken, 'status'], {}, `--ca ${broken}`],
    ] as const;
    for (const [args, env, named] of notPem) {
      const refused = run(args, { env });
      expect(refused).toMatchObject({ status: 2, stdout: '' });
      expect(refused.stderr).toBe(`tee-kms: ${named} is not a CA certificate file: it must hold ${PEM_CERTIFICATES}\n`);
    }
    // A CA that did not issue the server's certificate: named, with what to give instead.
    const other = writeTlsFiles(tmp, 'other-ca');
    const untrusted = run(['--ca', other.certFile, 'status']);
    expect(untrusted.status).toBe(3);
    expect(untrusted.stderr).toMatch(
      new RegExp(`^tee-kms: TLS: .*: --ca ${other.certFile} did not issue it; give the server's CA certificate \\(PEM\\) with --ca <file> or TEE_KMS_CA\n$`),
    );
  });
});

it('rotate --out-dir names the share files in custodian order and writes nothing else', async () => {
  expect((await readdir(join(tmp, 'shares'))).sort()).toEqual(['share-1.json', 'share-2.json', 'share-3.json', 'share-4.json', 'share-5.json']);
});
