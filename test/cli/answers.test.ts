/**
 * `tee-kms` run as a real process against a server that answers what the test says: a KMS gone
 * wrong, or an impostor on the way. Answers of the wrong shape are refused (exit 1, PROTOCOL),
 * and nothing is printed or written from them; the server's words reach the terminal with their
 * control characters escaped. Then the command line's own edges: a standard output closed under
 * it, tokens and users that cannot be sent, and options that do not exist, none repeated.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/processes.js';

// dist/ is built once per run by test/global-setup.ts.
const cli = join(repoRoot, 'dist/cli/main.js');

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let tmp: string;
let server: Server;
let url: string;
/** What the server answers next, to every request. */
let answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(500).end();
let requests = 0;

const json =
  (status: number, body: unknown, headers: Record<string, string> = {}) =>
  (_req: IncomingMessage, res: ServerResponse) =>
    void res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

/**
 * The CLI as a child process, waited for without blocking: the server runs in this process. With
 * `closeStdout`, the reading end of its standard output is closed at once, as `| true` does.
 */
function run(args: readonly string[], env: Record<string, string> = {}, options: { closeStdout?: boolean } = {}): Promise<Run> {
  const child = spawn(process.execPath, [cli, ...args], {
    cwd: tmp,
    env: { PATH: process.env.PATH ?? '', TEE_KMS_URL: url, TEE_KMS_USER: 'alice', TEE_KMS_TOKEN: 'alices-token', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  if (options.closeStdout === true) child.stdout.destroy();
  else child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tee-kms-answers-'));
  server = createServer((req, res) => {
    requests++;
    req.resume().on('end', () => answer(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(tmp, { recursive: true, force: true });
});

const KEY = Buffer.alloc(32, 7).toString('base64');
const names = { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1' };

describe('answers of the wrong shape', () => {
  it('data-key get: an answer without a 32-byte base64 key is refused, and neither printed nor written', async () => {
    const refusal = 'tee-kms: PROTOCOL: the data key answer is not {user, primaryKey, dataKey, key} with key the base64 of 32 bytes: refused\n';
    const garbage: unknown[] = [
      {},
      { ...names, key: 123 },
      { ...names, key: 'undefined' },
      { ...names, key: Buffer.alloc(16).toString('base64') },
      { ...names, key: `${KEY}\n` },
      { key: KEY },
      [KEY],
      KEY,
    ];
    for (const body of garbage) {
      answer = json(200, body);
      const printed = await run(['data-key', 'get', 'pk1', 'dk1']);
      expect({ body, status: printed.status, stdout: printed.stdout, stderr: printed.stderr }).toEqual({ body, status: 1, stdout: '', stderr: refusal });
      const out = join(tmp, 'k');
      const written = await run(['data-key', 'get', 'pk1', 'dk1', '--out', out]);
      expect({ body, status: written.status, stdout: written.stdout, stderr: written.stderr }).toEqual({ body, status: 1, stdout: '', stderr: refusal });
      expect(await readdir(tmp)).toEqual([]);
    }
    // The shape the KMS answers goes through.
    answer = json(200, { ...names, key: KEY });
    expect(await run(['data-key', 'get', 'pk1', 'dk1'])).toMatchObject({ status: 0, stdout: `${KEY}\n` });
  });

  it('encrypt and decrypt: an answer without a key is refused (PROTOCOL, not a TypeError), and no output file appears', async () => {
    const plain = join(tmp, 'plain.txt');
    await writeFile(plain, 'attack at dawn\n');
    answer = json(200, {});
    for (const format of ['tee-kms', 'bigdl']) {
      const encrypted = await run(['encrypt', '--format', format, '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', join(tmp, 'out')]);
      expect({ format, status: encrypted.status, stdout: encrypted.stdout }).toEqual({ format, status: 1, stdout: '' });
      expect(encrypted.stderr).toMatch(/^tee-kms: PROTOCOL: the data key answer is not /);
      expect(await readdir(tmp)).toEqual(['plain.txt']);
    }
    // A real file, encrypted under a real answer, then decrypted under a bad one.
    answer = json(200, { ...names, key: KEY });
    expect((await run(['encrypt', '--primary-key', 'pk1', '--data-key', 'dk1', plain, '-o', join(tmp, 'plain.kms')])).status).toBe(0);
    answer = json(200, { ...names, key: 12 });
    const decrypted = await run(['decrypt', join(tmp, 'plain.kms'), '-o', join(tmp, 'back.txt')]);
    expect(decrypted).toMatchObject({ status: 1, stdout: '' });
    expect(decrypted.stderr).toMatch(/^tee-kms: PROTOCOL: the data key answer is not /);
    expect((await readdir(tmp)).sort()).toEqual(['plain.kms', 'plain.txt']);
    await rm(join(tmp, 'plain.kms'));
    await rm(plain);
  });

  it('enroll, primary-key create, data-key create: an answer that does not say created is refused', async () => {
    answer = json(201, {});
    const cases: Array<[string[], string]> = [
      [['enroll'], 'the enrollment answer is not {user, created: true}'],
      [['primary-key', 'create', 'pk1'], 'the primary key creation answer is not {user, primaryKey, created: true}'],
      [['data-key', 'create', 'pk1', 'dk1'], 'the data key creation answer is not {user, primaryKey, dataKey, created: true}'],
    ];
    for (const [args, message] of cases) {
      const refused = await run(args);
      expect({ args, status: refused.status, stdout: refused.stdout, stderr: refused.stderr }).toEqual({
        args,
        status: 1,
        stdout: '',
        stderr: `tee-kms: PROTOCOL: ${message}: refused\n`,
      });
    }
    answer = json(201, { ...names, created: true });
    for (const [args] of cases) expect((await run(args)).status, args.join(' ')).toBe(0);
  });
});

describe("the server's words on the terminal", () => {
  // Clear the screen, set the window title, a carriage return and a forged line, CSI as C1, DEL.
  const hostile = 'bad\u001b[2J\u001b]0;owned\u0007\r\ntee-kms: all is well\u009b31m\u007f';
  const shown = 'bad\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x0atee-kms: all is well\\x9b31m\\x7f';

  it('an error message: its control characters escaped, on one line', async () => {
    answer = json(409, { error: { code: 'CONFLICT', message: hostile } });
    const refused = await run(['primary-key', 'create', 'pk1']);
    expect(refused).toEqual({ status: 1, stdout: '', stderr: `tee-kms: CONFLICT: ${shown}\n` });
    answer = json(503, { error: { code: 'SEALED', message: hostile } });
    expect((await run(['data-key', 'get', 'pk1', 'dk1'])).stderr).toBe(`tee-kms: SEALED: ${shown}\n`);
  });

  it('what status prints: escaped in text; with --json, C1 and DEL as \\u escapes of the same JSON', async () => {
    answer = json(200, { sealed: false, initialized: true, rootKeyId: hostile });
    const text = await run(['status']);
    expect(text).toEqual({ status: 0, stdout: `sealed: false\ninitialized: true\nrootKeyId: ${shown}\n`, stderr: '' });
    const asJson = await run(['status', '--json']);
    expect(asJson.status).toBe(0);
    // eslint-disable-next-line no-control-regex
    expect(asJson.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(JSON.parse(asJson.stdout)).toEqual({ sealed: false, initialized: true, rootKeyId: hostile });
  });
});

describe('the command line', () => {
  const KEY_ANSWER = { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1', key: Buffer.alloc(32, 7).toString('base64') };

  it('standard output closed by its reader (`| true`): exit 141, as for SIGPIPE, and no stack trace', async () => {
    answer = json(200, KEY_ANSWER);
    for (const args of [['data-key', 'get', 'pk1', 'dk1'], ['--json', 'data-key', 'get', 'pk1', 'dk1'], ['status']]) {
      if (args[0] === 'status') answer = json(200, { sealed: false });
      expect(await run(args, {}, { closeStdout: true })).toEqual({ status: 141, stdout: '', stderr: '' });
    }
  });

  it('a token that cannot be sent, from the environment or a file: exit 2, nothing sent, the token never repeated', async () => {
    answer = json(200, KEY_ANSWER);
    const before = requests;
    const rule = 'must hold the token on one line, printable characters of ISO-8859-1 (Latin-1) only';
    for (const token of ['secret-\u20ac-token', 'secret\ntoken', 'secret\ttoken', 'secret\u007ftoken']) {
      const fromEnv = await run(['data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: token });
      expect({ token, ...fromEnv }).toEqual({ token, status: 2, stdout: '', stderr: `tee-kms: TEE_KMS_TOKEN ${rule}\n` });
      const admin = await run(['verify', 'share.json'], { TEE_KMS_ADMIN_TOKEN: token });
      expect({ token, ...admin }).toEqual({ token, status: 2, stdout: '', stderr: `tee-kms: TEE_KMS_ADMIN_TOKEN ${rule}\n` });
      const file = join(tmp, 'token');
      await writeFile(file, `${token}\n`);
      const fromFile = await run(['data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: '', TEE_KMS_TOKEN_FILE: file });
      expect({ token, ...fromFile }).toEqual({ token, status: 2, stdout: '', stderr: `tee-kms: the TEE_KMS_TOKEN_FILE file ${file} ${rule}\n` });
      const fromFlag = await run(['--token-file', file, 'data-key', 'get', 'pk1', 'dk1']);
      expect({ token, ...fromFlag }).toEqual({ token, status: 2, stdout: '', stderr: `tee-kms: the --token-file file ${file} ${rule}\n` });
      await rm(file);
    }
    // A token and a token file both in the environment: which is meant cannot be told. A flag wins.
    const file = join(tmp, 'token');
    await writeFile(file, 'alices-token\n');
    for (const variable of ['TEE_KMS_TOKEN', 'TEE_KMS_ADMIN_TOKEN']) {
      const both = await run(['data-key', 'get', 'pk1', 'dk1'], { [variable]: 'a-token', [`${variable}_FILE`]: file });
      expect(both).toEqual({
        status: 2,
        stdout: '',
        stderr: `tee-kms: ${variable} and ${variable}_FILE are both set: set only one of them (the token, or the file holding it)\n`,
      });
    }
    const user = await run(['data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_USER: 'alice\nbob' });
    expect(user).toEqual({
      status: 2,
      stdout: '',
      stderr: 'tee-kms: the user (TEE_KMS_USER) must be a name on one line, printable characters of ISO-8859-1 (Latin-1) only\n',
    });
    expect(requests).toBe(before);
    expect((await run(['--token-file', file, 'data-key', 'get', 'pk1', 'dk1'])).status).toBe(0); // beside TEE_KMS_TOKEN
    await rm(file);
    // Latin-1 goes through.
    expect((await run(['data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: 'caf\u00e9-token' })).status).toBe(0);

    // With --attest the token travels sealed, in JSON: only what the KMS refuses (control characters) is refused.
    const attest = join(tmp, 'attest.json');
    await writeFile(attest, '{"allowDevelopment": true}');
    const sealedRule = 'must hold the token on one line, without control characters';
    const refused = await run(['--attest', attest, 'data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: 'secret\ttoken' });
    expect(refused).toEqual({ status: 2, stdout: '', stderr: `tee-kms: TEE_KMS_TOKEN ${sealedRule}\n` });
    expect(requests).toBe(before + 2);
    const euro = await run(['--attest', attest, 'data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: 'secret-\u20ac-token' });
    expect(euro.stderr).not.toContain('must hold the token');
    expect(requests).toBeGreaterThan(before + 2); // it went on to attest (this fake server cannot)
    await rm(attest);
  });

  it('no token, no admin token, no user: exit 2, said in the command line\'s terms (never "as an argument")', async () => {
    const before = requests;
    const noToken = await run(['data-key', 'get', 'pk1', 'dk1'], { TEE_KMS_TOKEN: '' });
    expect(noToken).toEqual({
      status: 2,
      stdout: '',
      stderr: "tee-kms: no token: set TEE_KMS_TOKEN to the user's token, or name a file holding it with --token-file or TEE_KMS_TOKEN_FILE\n",
    });
    for (const args of [
      ['enroll'],
      ['primary-key', 'create', 'pk1'],
      ['data-key', 'create', 'pk1', 'dk1'],
      ['encrypt', '--primary-key', 'p', '--data-key', 'd', '-', '-o', '-'],
    ]) {
      expect(await run(args, { TEE_KMS_TOKEN: '' })).toEqual({ ...noToken });
    }
    expect(await run(['verify', 'share.json'])).toEqual({
      status: 2,
      stdout: '',
      stderr: 'tee-kms: no admin token: set TEE_KMS_ADMIN_TOKEN, or name a file holding it with --admin-token-file or TEE_KMS_ADMIN_TOKEN_FILE\n',
    });
    expect(await run(['primary-key', 'create', 'pk1'], { TEE_KMS_USER: '' })).toEqual({
      status: 2,
      stdout: '',
      stderr: 'tee-kms: no user: give --user or set TEE_KMS_USER\n',
    });
    expect(requests).toBe(before);
  });

  it('an option that does not exist is named without its value', async () => {
    const cases: Array<[string[], string]> = [
      [['--token=SECRET-TOKEN', 'enroll'], "error: unknown option '--token'\n"],
      [['enroll', '--admin-token=SECRET-TOKEN'], "error: unknown option '--admin-token'\n"],
      [['enroll', '-tSECRET-TOKEN'], "error: unknown option '-t'\n"],
      [['enroll', '--tok=SECRET\u001b[2J'], "error: unknown option '--tok'\n"],
    ];
    for (const [args, said] of cases) {
      const refused = await run(args);
      expect({ args, status: refused.status, stdout: refused.stdout }).toEqual({ args, status: 2, stdout: '' });
      expect(refused.stderr.startsWith(said), refused.stderr).toBe(true);
      expect(refused.stderr).not.toContain('SECRET');
    }
  });
});
