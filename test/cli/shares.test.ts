/**
 * `tee-kms rotate --out-dir`, run as a real process against `npm start`, when share files are in
 * the way: refused before anything is sent when they are there already; when they appear while
 * the KMS rotates (another process, through a proxy that makes them as the request goes by), every
 * other share is still written, and the ones that could not be are printed, and work.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';

// dist/ is built once per run by test/global-setup.ts.
const cli = join(repoRoot, 'dist/cli/main.js');
const ADMIN_TOKEN = 'shares-admin-token-Vq4';

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface Share {
  readonly index: number;
  readonly content: string;
}

let tmp: string;
let dataDir: string;
let port: number;
let kms: ServerProcess | undefined;
/** The proxy's port, and what it does as each connection comes, before passing it on. */
let proxyPort: number;
let onConnection: () => void = () => undefined;
/** While set, connections wait for it before they reach the KMS (a slow way). */
let gate: Promise<void> | undefined;
let connections = 0;
let closeProxy: () => Promise<void> = async () => undefined;

/**
 * The CLI as a child process, waited for without blocking: the proxy runs in this process. With
 * `closeStdout`, the reading end of its standard output is closed at once, as `| true` does.
 */
function run(args: readonly string[], options: { env?: Record<string, string>; input?: string; direct?: boolean; closeStdout?: boolean } = {}): Promise<Run> {
  const url = `https://127.0.0.1:${options.direct === true ? port : proxyPort}`;
  const child = spawn(process.execPath, [cli, ...args], {
    cwd: tmp,
    env: { PATH: process.env.PATH ?? '', TEE_KMS_URL: url, TEE_KMS_CA: join(dataDir, 'tls/cert.pem'), ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  if (options.closeStdout === true) child.stdout.destroy();
  else child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.end(options.input ?? '');
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

const status = async () => JSON.parse((await run(['status', '--json'], { direct: true })).stdout) as Record<string, unknown>;
const withAdmin = { TEE_KMS_ADMIN_TOKEN: ADMIN_TOKEN };

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tee-kms-shares-'));
  dataDir = join(tmp, 'kms');
  port = await freePort();
  kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: ADMIN_TOKEN });
  // A TCP proxy to the KMS (TLS passes through it untouched) that runs onConnection first.
  const proxy = createServer((client) => {
    connections++;
    onConnection();
    const pass = () => {
      const upstream = connect(port, '127.0.0.1');
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    };
    if (gate === undefined) pass();
    else void gate.then(pass);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyPort = (proxy.address() as { port: number }).port;
  closeProxy = () => new Promise<void>((resolve) => proxy.close(() => resolve()));
});
afterAll(async () => {
  await closeProxy();
  await kms?.stop();
  await rm(tmp, { recursive: true, force: true });
});

describe('rotate --out-dir and the share files in its way', () => {
  /** Shares of the current root key, once the first rotate made it. */
  const current: Share[] = [];

  it('a directory that holds share files already: refused (exit 2) before anything is sent', async () => {
    const outDir = join(tmp, 'stale');
    await mkdir(outDir, { mode: 0o700 });
    await writeFile(join(outDir, 'share-3.json'), 'an earlier run\n');
    const before = connections;
    const refused = await run(['rotate', '--out-dir', outDir]);
    expect(refused.status, refused.stderr).toBe(2);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toMatch(/^tee-kms: --out-dir .*stale already holds share files \(share-3\.json\): .*nothing was sent\)\n$/);
    expect(connections).toBe(before);
    expect(await readdir(outDir)).toEqual(['share-3.json']);
    expect(await readFile(join(outDir, 'share-3.json'), 'utf8')).toBe('an earlier run\n');
    expect(await status()).toMatchObject({ initialized: false });
  });

  it('the first rotate: files made while it runs cost only their own shares, printed on stdout, and they unseal the KMS', async () => {
    const outDir = join(tmp, 'first');
    await mkdir(outDir, { mode: 0o700 });
    // Another process, as the request goes by: a file named share-2.json, a directory share-4.json.
    onConnection = () => {
      writeFileSync(join(outDir, 'share-2.json'), 'someone else\n');
      mkdirSync(join(outDir, 'share-4.json'));
    };
    const rotated = await run(['rotate', '--out-dir', outDir]);
    onConnection = () => undefined;

    expect(rotated.status, rotated.stderr).toBe(1);
    expect(await status()).toMatchObject({ initialized: true, sealed: false, t: 3, n: 5 });
    // Every other share written, 0600; the two that could not be, on stdout, one a line, in order.
    for (const n of [1, 3, 5]) {
      expect((await stat(join(outDir, `share-${n}.json`))).mode & 0o777).toBe(0o600);
      current.push(JSON.parse(await readFile(join(outDir, `share-${n}.json`), 'utf8')) as Share);
    }
    expect(await readFile(join(outDir, 'share-2.json'), 'utf8')).toBe('someone else\n');
    const printed = rotated.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Share);
    expect(printed).toHaveLength(2);
    current.push(...printed);
    expect(new Set(current.map((share) => share.index)).size).toBe(5);

    const file = (n: number) => join(outDir, `share-${n}.json`);
    const lines = rotated.stderr.split('\n');
    expect(lines[0]).toMatch(/^tee-kms: WARNING: the KMS was initialized: its new root key \S+ is current, but 2 of its 5 shares could not be written:$/);
    expect(lines[1]).toBe(`tee-kms:   ${file(2)} exists: it is never overwritten`);
    expect(lines[2]).toBe(`tee-kms:   ${file(4)} exists: it is never overwritten`);
    expect(lines[3]).toBe(`tee-kms: written: ${file(1)}, ${file(3)}, ${file(5)}`);
    expect(lines[4]).toContain(`printed on standard output instead, one JSON object a line, in this order: the shares meant for ${file(2)}, ${file(4)}.`);
    expect(lines[4]).toContain('the KMS can never be unsealed after a restart');
    expect(lines[5]).toBe('tee-kms: rotate: 2 of 5 shares not written to files, only printed on standard output');
    for (const share of current) expect(rotated.stderr).not.toContain(share.content);

    // After a restart, the two printed shares and one file recover the root key.
    await kms?.stop();
    kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: ADMIN_TOKEN });
    expect(await status()).toMatchObject({ sealed: true });
    for (const share of printed) expect((await run(['recover', '-'], { input: JSON.stringify(share), direct: true })).status).toBe(0);
    const last = await run(['recover', file(1)], { direct: true });
    expect(last.status, last.stderr).toBe(0);
    expect(last.stdout).toMatch(/^root key recovered: tee-kms is unsealed/);
  });

  it('a later rotate with --custodians and --json: the share that could not be written is in "unwritten", and verifies', async () => {
    const publicKeys = [];
    for (let i = 1; i <= 5; i++) {
      const keygen = await run(['custodian', 'keygen', join(tmp, `custodian-${i}`)]);
      expect(keygen.status, keygen.stderr).toBe(0);
      publicKeys.push(JSON.parse(keygen.stdout) as unknown);
    }
    const custodians = join(tmp, 'custodians.json');
    await writeFile(custodians, JSON.stringify(publicKeys));
    const currentFiles = [];
    for (const [i, share] of current.slice(0, 3).entries()) {
      currentFiles.push(join(tmp, `current-${i}.json`));
      await writeFile(currentFiles[i]!, JSON.stringify(share), { mode: 0o600 });
    }

    const outDir = join(tmp, 'custodians-out');
    await mkdir(outDir, { mode: 0o700 });
    onConnection = () => writeFileSync(join(outDir, 'share-5.json'), 'someone else\n', { flag: 'a' });
    const rotated = await run(['--json', 'rotate', '--custodians', custodians, '--shares', ...currentFiles, '--out-dir', outDir], { env: withAdmin });
    onConnection = () => undefined;

    expect(rotated.status, rotated.stderr).toBe(1);
    const answer = JSON.parse(rotated.stdout) as { state: string; files: string[]; unwritten: Array<{ file: string; share: Share }> };
    const file = (n: number) => join(outDir, `share-${n}.json`);
    expect(answer).toMatchObject({ state: 'pending-verification', files: [1, 2, 3, 4].map(file), unwritten: [{ file: file(5) }] });
    expect(rotated.stderr).toMatch(
      /^tee-kms: WARNING: the KMS was rotated: its new root key \S+ is pending verification .*, but 1 of its 5 shares could not be written:\n/,
    );
    expect(rotated.stderr).toContain('printed on standard output instead (in "unwritten"): the shares meant for');
    expect(rotated.stderr).toMatch(/rotate: 1 of 5 shares not written to files, only printed on standard output\n$/);
    expect(await status()).toMatchObject({ verificationPending: true });

    // The custodians open theirs, the fifth from what was printed; three of them verify.
    const sealedFifth = join(tmp, 'sealed-fifth.json');
    await writeFile(sealedFifth, JSON.stringify(answer.unwritten[0]!.share));
    const opened = [];
    for (const [n, sealed] of [
      [1, file(1)],
      [3, file(3)],
      [5, sealedFifth],
    ] as const) {
      const out = join(tmp, `opened-${n}.json`);
      const decrypted = await run(['custodian', 'decrypt', join(tmp, `custodian-${n}/custodian-key.json`), sealed, '-o', out]);
      expect(decrypted.status, decrypted.stderr).toBe(0);
      opened.push(out);
    }
    const verified = await run(['--json', 'verify', ...opened], { env: withAdmin });
    expect(verified.status, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ promoted: true });
  });

  it('rotate into /dev/null, or with standard output closed (Node opens /dev/null there): refused (exit 2), nothing sent', async () => {
    const before = await status();
    const env = { PATH: process.env.PATH ?? '', TEE_KMS_URL: `https://127.0.0.1:${port}`, TEE_KMS_CA: join(dataDir, 'tls/cert.pem'), ...withAdmin };
    for (const redirect of ['> /dev/null', '>&-']) {
      const script = `exec "${process.execPath}" "${cli}" rotate ${redirect}`;
      const result = spawnSync('bash', ['--norc', '--noprofile', '-c', script], { cwd: tmp, encoding: 'utf8', timeout: 60_000, env });
      expect(result.status, redirect).toBe(2);
      expect(result.stderr, redirect).toBe(
        'tee-kms: the shares would be lost in /dev/null (standard output is /dev/null or closed): give --out-dir <dir>, or redirect standard output to a file\n',
      );
    }
    expect(await status()).toEqual(before);
  });

  it('rotate interrupted (Ctrl-C) while its request is on the way: exit 130, and stderr says the shares may be lost and what to do', async () => {
    let release: () => void = () => undefined;
    gate = new Promise<void>((resolve) => (release = resolve));
    try {
      const before = connections;
      const child = spawn(process.execPath, [cli, 'rotate', '--out-dir', join(tmp, 'interrupted')], {
        cwd: tmp,
        env: { PATH: process.env.PATH ?? '', TEE_KMS_URL: `https://127.0.0.1:${proxyPort}`, TEE_KMS_CA: join(dataDir, 'tls/cert.pem'), ...withAdmin },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
      for (let i = 0; i < 200 && connections === before; i++) await new Promise((resolve) => setTimeout(resolve, 25));
      expect(connections).toBeGreaterThan(before);
      child.kill('SIGINT');
      expect(await closed).toBe(130);
      expect(stderr).toMatch(
        /^tee-kms: interrupted while rotating: if the KMS rotated, the new shares are lost .*: rotate again, while the KMS is unsealed\n$/,
      );
    } finally {
      gate = undefined;
      release();
    }
  });

  it('rotate to a standard output closed by its reader: exit 141, and stderr says the shares are lost and what to do', async () => {
    const rotated = await run(['rotate'], { env: withAdmin, direct: true, closeStdout: true });
    expect(rotated.status).toBe(141);
    expect(rotated.stderr).toMatch(
      /^tee-kms: standard output was closed before it took the shares: the KMS was rotated: its new root key \S+ is pending verification .*, and its shares are lost; rotate again for new shares \(the current root key stays\)\n$/,
    );
    expect(await status()).toMatchObject({ verificationPending: true });
  });
});
