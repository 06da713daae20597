/**
 * `tee-kms` run as a real process against a server that answers what the test says: a KMS gone
 * wrong, or an impostor on the way. Answers of the wrong shape are refused (exit 1, PROTOCOL),
 * and nothing is printed or written from them.
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

const json =
  (status: number, body: unknown, headers: Record<string, string> = {}) =>
  (_req: IncomingMessage, res: ServerResponse) =>
    void res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

/** The CLI as a child process, waited for without blocking: the server runs in this process. */
function run(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [cli, ...args], {
    cwd: tmp,
    env: { PATH: process.env.PATH ?? '', TEE_KMS_URL: url, TEE_KMS_USER: 'alice', TEE_KMS_TOKEN: 'alices-token', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'tee-kms-answers-'));
  server = createServer((req, res) => {
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
