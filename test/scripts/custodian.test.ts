/**
 * The custodians' command (scripts/custodian.ts) run as a real child process from its build,
 * dist/scripts/custodian.js. The build is refreshed with tsc when missing or older than the
 * sources it depends on (the global test setup normally builds dist/ already).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompactEncrypt, compactDecrypt } from 'jose';
import { decodeProtectedHeader } from 'jose/decode/protected_header';
import { calculateJwkThumbprint } from 'jose/jwk/thumbprint';
import { split } from 'shamir-secret-sharing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { openShare, parseCustodianKeys, sealShare } from '../../shared/custody/share-jwe.js';
import { kbsReportData, type TeePubKey } from '../../shared/kbs/protocol.js';
import { buildCollateral, buildTdxQuote, createTestPki, DEFAULT_TD, DEFAULT_TD_POLICY, evidenceFor, TEST_TIME } from '../support/tdx-quote-builder.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cli = join(repo, 'dist/scripts/custodian.js');

// dist/ is built once per run by test/global-setup.ts.

interface Run {
  status: number | null;
  json: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

function run(...args: string[]): Run {
  return runWithInput('', ...args);
}

function runWithInput(input: string, ...args: string[]): Run {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: tmp, encoding: 'utf8', timeout: 60_000, input });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(result.stdout) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: result.status, json, stdout: result.stdout, stderr: result.stderr };
}

const tmp = await mkdtemp(join(tmpdir(), 'custodian-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

let files = 0;
async function file(content: string | object): Promise<string> {
  const path = join(tmp, `input-${files++}`);
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** Real shares of a random 256-bit key, as the sealing service makes them: base64 of 33 bytes, the last one the index. */
async function shares(): Promise<Array<{ index: number; content: string }>> {
  const parts = await split(new Uint8Array(randomBytes(32)), 3, 2);
  return parts.map((share) => ({ index: share[share.length - 1]!, content: Buffer.from(share).toString('base64') }));
}

/** The sealing service's recovery key: exactly kty, crv, alg, x, y. */
function recoveryKeyPair(): { jwk: TeePubKey; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { x, y } = publicKey.export({ format: 'jwk' });
  return { jwk: { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: x!, y: y! }, privateKey };
}

const newNonce = () => randomBytes(32).toString('base64url');
const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

describe('custodian keygen', () => {
  it('writes the private key (0600) in a new 0700 directory and the public key, and prints the public key', async () => {
    const dir = join(tmp, 'alice', 'keys');
    const { status, json, stderr } = run('keygen', dir);
    expect(status).toBe(0);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(tmp, 'alice'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'custodian-key.json'))).mode & 0o777).toBe(0o600);
    const publicJwk = JSON.parse(await readFile(join(dir, 'custodian-key.pub.json'), 'utf8')) as Record<string, string>;
    expect(json).toEqual(publicJwk);
    expect(Object.keys(publicJwk).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'x', 'y']);
    expect(publicJwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW' });
    expect(publicJwk['kid']).toBe(await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: publicJwk['x']!, y: publicJwk['y']! }));
    // The operator's side accepts it as it is.
    expect(parseCustodianKeys([publicJwk], 1)[0]!.thumbprint).toBe(publicJwk['kid']);

    const privateJwk = JSON.parse(await readFile(join(dir, 'custodian-key.json'), 'utf8')) as Record<string, string>;
    expect(privateJwk).toEqual({ ...publicJwk, d: expect.any(String) });
    const derived = createPrivateKey({ key: privateJwk, format: 'jwk' }).export({ format: 'jwk' });
    expect([derived.x, derived.y]).toEqual([publicJwk['x'], publicJwk['y']]);
    expect(stderr).not.toContain(privateJwk['d']);
  });

  it('run as `npm run custodian` from another directory, takes relative paths from there', async () => {
    const cwd = join(tmp, 'npm-cwd');
    await mkdir(cwd);
    const result = spawnSync('npm', ['--prefix', repo, 'run', '--silent', 'custodian', '--', 'keygen', 'keys'], { cwd, encoding: 'utf8', timeout: 120_000 });
    expect(result.status).toBe(0);
    expect(existsSync(join(cwd, 'keys', 'custodian-key.json'))).toBe(true);
    expect(existsSync(join(repo, 'keys'))).toBe(false);
  });

  it('warns of an existing directory other users can enter, and refuses a path that is no directory', async () => {
    const open = join(tmp, 'open-dir');
    await mkdir(open, { mode: 0o755 });
    await chmod(open, 0o755);
    const warned = run('keygen', open);
    expect(warned.status).toBe(0);
    expect(warned.stderr).toMatch(/^custodian: .*open-dir is open to other users: keep secret files in a directory only you can read\n/);
    expect((await stat(join(open, 'custodian-key.json'))).mode & 0o777).toBe(0o600);

    const notDir = await file('a file');
    const refused = run('keygen', notDir);
    expect({ status: refused.status, stdout: refused.stdout }).toEqual({ status: 1, stdout: '' });
    expect(refused.stderr).toBe(`custodian: refused: cannot use ${notDir} as a directory\n`);
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a directory of another user, even as root: its owner could replace the files', async () => {
    const theirs = join(tmp, 'theirs');
    await mkdir(theirs, { mode: 0o700 });
    await chown(theirs, 65534, 65534);
    const refused = run('keygen', theirs);
    expect({ status: refused.status, stdout: refused.stdout }).toEqual({ status: 1, stdout: '' });
    expect(refused.stderr).toBe(
      `custodian: refused: ${theirs} belongs to another user (uid 65534), who could replace or remove the files written there: give a directory of your own\n`,
    );
    expect(await readdir(theirs)).toEqual([]);
  });

  it('refuses to overwrite either file, and changes neither', async () => {
    const dir = join(tmp, 'bob');
    expect(run('keygen', dir).status).toBe(0);
    const before = await readFile(join(dir, 'custodian-key.json'), 'utf8');
    const again = run('keygen', dir);
    expect({ status: again.status, stdout: again.stdout }).toEqual({ status: 1, stdout: '' });
    expect(again.stderr).toMatch(/^custodian: refused: .*custodian-key\.json exists: nothing was overwritten/);
    expect(await readFile(join(dir, 'custodian-key.json'), 'utf8')).toBe(before);

    const other = join(tmp, 'carol');
    await mkdir(other, { mode: 0o700 });
    await writeFile(join(other, 'custodian-key.pub.json'), '{}');
    const refused = run('keygen', other);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/custodian-key\.pub\.json exists/);
    expect(existsSync(join(other, 'custodian-key.json'))).toBe(false);
  });
});

describe('custodian decrypt', async () => {
  const dir = join(tmp, 'dave');
  const otherDir = join(tmp, 'erin');
  let custodian: ReturnType<typeof parseCustodianKeys>[number];

  beforeAll(async () => {
    expect(run('keygen', dir).status).toBe(0);
    expect(run('keygen', otherDir).status).toBe(0);
    custodian = parseCustodianKeys([JSON.parse(await readFile(join(dir, 'custodian-key.pub.json'), 'utf8'))], 1)[0]!;
  });

  it('opens a share sealed to its key: the JWE as text or in a file, or the share object', async () => {
    const [share] = await shares();
    const jwe = await sealShare(share!.content, custodian);
    for (const input of [
      jwe,
      await file(`${jwe}\n`),
      JSON.stringify({ index: share!.index, content: jwe }),
      await file({ index: share!.index, content: jwe }),
    ]) {
      const { status, stdout, stderr } = run('decrypt', join(dir, 'custodian-key.json'), input);
      expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
      // The index comes from the share itself when only the JWE is given.
      expect(stdout).toBe(`${JSON.stringify(share)}\n`);
    }
  });

  it('-o writes the share to a new 0600 file, all or nothing, never over an existing one', async () => {
    const [share] = await shares();
    const jwe = await file(await sealShare(share!.content, custodian));
    const out = join(tmp, 'dave-share.json');
    const written = run('decrypt', join(dir, 'custodian-key.json'), jwe, '-o', out);
    expect({ status: written.status, stderr: written.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(written.stdout)).toEqual({ index: share!.index, file: out });
    expect(await readFile(out, 'utf8')).toBe(`${JSON.stringify(share)}\n`);
    expect((await stat(out)).mode & 0o777).toBe(0o600);

    const again = run('decrypt', join(dir, 'custodian-key.json'), jwe, '--out', out);
    expect({ status: again.status, stdout: again.stdout }).toEqual({ status: 1, stdout: '' });
    expect(again.stderr).toMatch(/^custodian: refused: .*dave-share\.json exists: it is never overwritten\n$/);
    // A share that does not open leaves no file behind.
    const refused = run('decrypt', join(otherDir, 'custodian-key.json'), jwe, '-o', join(tmp, 'erin-share.json'));
    expect(refused.status).toBe(1);
    expect(existsSync(join(tmp, 'erin-share.json'))).toBe(false);
  });

  it.skipIf(!hasScript)('refuses to print the share to a terminal unless --print-shares', async () => {
    const [share] = await shares();
    const jwe = await file(await sealShare(share!.content, custodian));
    // script(1) gives the command a terminal as its standard output.
    const onTerminal = (...flags: string[]) =>
      spawnSync('script', ['-qec', [process.execPath, cli, 'decrypt', join(dir, 'custodian-key.json'), jwe, ...flags].join(' '), '/dev/null'], {
        cwd: tmp,
        encoding: 'utf8',
        timeout: 60_000,
      });
    const refused = onTerminal();
    expect(refused.status).toBe(2);
    expect(refused.stdout).toMatch(
      /^custodian: the share would be printed to the terminal: give -o <file>, redirect standard output, or ask --print-shares\r?\n/,
    );
    expect(refused.stdout).not.toContain(share!.content);
    const asked = onTerminal('--print-shares');
    expect(asked.status).toBe(0);
    expect(asked.stdout).toContain(JSON.stringify(share));
  });

  it('refuses a share sealed to another custodian, or altered', async () => {
    const [share] = await shares();
    const jwe = await sealShare(share!.content, custodian);
    const other = run('decrypt', join(otherDir, 'custodian-key.json'), jwe);
    expect({ status: other.status, stdout: other.stdout }).toEqual({ status: 1, stdout: '' });
    expect(other.stderr).toMatch(new RegExp(`^custodian: refused: this share is encrypted to another custodian key \\(kid ${custodian.thumbprint}\\)`));

    const parts = jwe.split('.');
    const ciphertext = Buffer.from(parts[3]!, 'base64url');
    ciphertext[0] = ciphertext[0]! ^ 1;
    parts[3] = ciphertext.toString('base64url');
    const altered = run('decrypt', join(dir, 'custodian-key.json'), parts.join('.'));
    expect(altered.status).toBe(1);
    expect(altered.stderr).toBe('custodian: refused: the share could not be decrypted with this key (not a share encrypted to it, or altered)\n');
  });

  it('to a standard output closed by its reader (`| head -c0`): exit 141, no stack trace', async () => {
    const [share] = await shares();
    const jwe = await sealShare(share!.content, custodian);
    const child = spawn(process.execPath, [cli, 'decrypt', join(dir, 'custodian-key.json'), jwe], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(141);
    expect(stderr).not.toMatch(/at |Error/);
  });

  it('answers bad input with exit code 2 and never repeats the share', async () => {
    const [share, second] = await shares();
    const jwe = await sealShare(share!.content, custodian);
    const key = join(dir, 'custodian-key.json');
    const cases: Array<[string[], RegExp]> = [
      [[key], /^custodian: expected 2 arguments\nusage: custodian keygen/],
      [[key, share!.content], /^custodian: the share must be a compact JWE or a JSON share/],
      [[key, JSON.stringify(share)], /^custodian: the share is not encrypted \(its content is not a JWE\)/],
      [[key, JSON.stringify({ index: second!.index, content: jwe })], /^custodian: the decrypted share: index \d+ does not match the share/],
      [[join(tmp, 'missing.json'), jwe], /^custodian: cannot read private key file .*missing\.json\n$/],
      [[join(dir, 'custodian-key.pub.json'), jwe], /^custodian: the private key file .* is not a P-256 private JWK/],
      // A name that is an escape sequence is written out, never sent to the terminal.
      [[join(tmp, '\u001b]0;PWNED\u0007'), jwe], /^custodian: cannot read private key file .*\\x1b\]0;PWNED\\x07\n$/],
    ];
    for (const [args, message] of cases) {
      const { status, stdout, stderr } = run('decrypt', ...args);
      expect({ args, status, stdout }).toEqual({ args, status: 2, stdout: '' });
      expect(stderr).toMatch(message);
      expect(stderr).not.toContain(share!.content);
    }
  });
});

describe('custodian seal-share with sample evidence', async () => {
  const recovery = recoveryKeyPair();
  const nonce = newNonce();
  const evidence = await new SampleAttester().getEvidence(kbsReportData(nonce, recovery.jwk));
  const recoveryFile = await file({ recoveryKey: recovery.jwk, tee: 'sample', evidence });

  it('is refused without --allow-sample', async () => {
    const [share] = await shares();
    const { status, stdout, stderr } = run('seal-share', recoveryFile, String(share!.index), await file(share!), `--nonce=${nonce}`);
    expect({ status, stdout }).toEqual({ status: 1, stdout: '' });
    expect(stderr).toMatch(/^custodian: refused: the recovery key comes with sample evidence, which proves nothing .* without --allow-sample/);
  });

  it('with --allow-sample, seals the share to the recovery key, which alone opens it to the exact share text', async () => {
    const [share] = await shares();
    const inputs: Array<[string, string]> = [
      ['-', share!.content],
      ['-', JSON.stringify(share)],
      [await file(`${share!.content}\n`), ''],
      [await file(share!), ''],
    ];
    for (const [arg, stdin] of inputs) {
      const { status, json, stdout, stderr } = runWithInput(stdin, 'seal-share', recoveryFile, String(share!.index), arg, `--nonce=${nonce}`, '--allow-sample');
      expect(status).toBe(0);
      expect(stderr).toMatch(/^custodian: WARNING: sample evidence proves nothing/);
      expect(stderr).toMatch(/custodian: sample evidence binds the recovery key \(kid [\w-]{43}\) to the nonce; share \d+ is sealed to it\n$/);
      expect(stderr).not.toContain(share!.content);
      expect(stdout.endsWith('}\n') && !stdout.slice(0, -1).includes('\n')).toBe(true); // one line, for curl -d @file
      expect(Object.keys(json!).sort()).toEqual(['content', 'index']);
      expect(json!['index']).toBe(share!.index);
      const jwe = json!['content'] as string;
      expect(decodeProtectedHeader(jwe)).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: await calculateJwkThumbprint(recovery.jwk) });
      expect(await openShare(jwe, recovery.privateKey)).toBe(share!.content);
      await expect(openShare(jwe, recoveryKeyPair().privateKey)).rejects.toThrow(/could not be decrypted/);
    }
  });

  it('refuses a share given on the command line, where other users can read it: exit 2, nothing sealed, the share not repeated', async () => {
    const [share] = await shares();
    const jwe = await sealShare(share!.content, parseCustodianKeys([recovery.jwk], 1)[0]!);
    for (const arg of [share!.content, JSON.stringify(share), ` ${share!.content.slice(4)}`, share!.content.replace(/=+$/, ''), jwe]) {
      const { status, stdout, stderr } = run('seal-share', recoveryFile, String(share!.index), arg, `--nonce=${nonce}`, '--allow-sample');
      expect({ status, stdout }).toEqual({ status: 2, stdout: '' });
      expect(stderr).toMatch(
        /^custodian: the share argument names no file and looks like a share: a share is never taken from the command line.*; give a file holding it, or - and the share on standard input\nusage: /,
      );
      expect(stderr).not.toContain(share!.content.slice(4, 40));
    }
    // A path that names nothing is said as such.
    const missing = run('seal-share', recoveryFile, String(share!.index), join(tmp, 'no-such-share.json'), `--nonce=${nonce}`, '--allow-sample');
    expect({ status: missing.status, stdout: missing.stdout }).toEqual({ status: 2, stdout: '' });
    expect(missing.stderr).toMatch(/^custodian: cannot read share file .*no-such-share\.json\n$/);
  });

  it("takes the share from a pipe: decrypt's output straight into seal-share", async () => {
    const dir = join(tmp, 'frank');
    expect(run('keygen', dir).status).toBe(0);
    const custodian = parseCustodianKeys([JSON.parse(await readFile(join(dir, 'custodian-key.pub.json'), 'utf8'))], 1)[0]!;
    const [share] = await shares();
    const opened = run('decrypt', join(dir, 'custodian-key.json'), await sealShare(share!.content, custodian));
    expect(opened.status).toBe(0);
    const { status, json } = runWithInput(opened.stdout, 'seal-share', recoveryFile, String(share!.index), '-', `--nonce=${nonce}`, '--allow-sample');
    expect(status).toBe(0);
    expect(json!['index']).toBe(share!.index);
    expect(await openShare(json!['content'] as string, recovery.privateKey)).toBe(share!.content);
  });

  it('refuses evidence for another nonce, or for another key', async () => {
    const [share] = await shares();
    const shareFile = await file(share!);
    const wrongNonce = run('seal-share', recoveryFile, String(share!.index), shareFile, `--nonce=${newNonce()}`, '--allow-sample');
    expect({ status: wrongNonce.status, stdout: wrongNonce.stdout }).toEqual({ status: 1, stdout: '' });
    expect(wrongNonce.stderr).toMatch(/custodian: refused: the recovery key's evidence is refused: sample evidence: report_data does not bind this nonce/);

    // Someone on the way swaps in their own key and keeps the genuine evidence.
    const swapped = await file({ recoveryKey: recoveryKeyPair().jwk, tee: 'sample', evidence });
    const otherKey = run('seal-share', swapped, String(share!.index), shareFile, `--nonce=${nonce}`, '--allow-sample');
    expect({ status: otherKey.status, stdout: otherKey.stdout }).toEqual({ status: 1, stdout: '' });
    expect(otherKey.stderr).toMatch(/refused: the recovery key's evidence is refused/);
  });

  it('answers bad input with exit code 2 and never repeats the share', async () => {
    const [share, second] = await shares();
    const index = String(share!.index);
    const jwe = await sealShare(share!.content, parseCustodianKeys([recovery.jwk], 1)[0]!);
    const [shareFile, objectFile, jweFile, cutFile] = [await file(share!.content), await file(share!), await file(jwe), await file(share!.content.slice(4))];
    const cases: Array<[string[], RegExp]> = [
      [[recoveryFile, index, shareFile], /^custodian: --nonce is required/],
      [[recoveryFile, index, shareFile, '--nonce=short'], /^custodian: --nonce must be base64url \(no padding\) of 16 to 64 random bytes/],
      [[recoveryFile, index, shareFile, `--nonce=${nonce}=`], /^custodian: --nonce must be base64url/],
      [[recoveryFile, '0', shareFile, `--nonce=${nonce}`], /^custodian: <index> must be a whole number from 1 to 255/],
      [[recoveryFile, String(second!.index), shareFile, `--nonce=${nonce}`], /^custodian: the share: index \d+ does not match the share/],
      [[recoveryFile, String(second!.index), objectFile, `--nonce=${nonce}`], /^custodian: the share object's index \d+ is not the <index> given/],
      [[recoveryFile, index, jweFile, `--nonce=${nonce}`], /^custodian: the share is still encrypted \(a JWE\): decrypt it first/],
      [[recoveryFile, index, cutFile, `--nonce=${nonce}`], /^custodian: the share: content must decode to 33 bytes/],
      [[recoveryFile, index, shareFile, `--nonce=${nonce}`, '--collateral', recoveryFile], /^custodian: --tdx-policy and --collateral go together/],
      [[recoveryFile, index, shareFile, `--nonce=${nonce}`, '--at', '2030-01-01T00:00:00Z'], /^custodian: --root-ca and --at need --tdx-policy/],
      [[await file('{"recoveryKey": 1'), index, shareFile, `--nonce=${nonce}`], /^custodian: recovery key file .* is not JSON\n$/],
      [[await file({ tee: 'sample', evidence }), index, shareFile, `--nonce=${nonce}`], /is not an answer of GET \/rootKey\/recover/],
      [
        [await file({ recoveryKey: { ...recovery.jwk, kid: 'k' }, tee: 'sample', evidence }), index, shareFile, `--nonce=${nonce}`],
        /: recoveryKey is not a P-256 public JWK with exactly kty, crv, alg "ECDH-ES\+A256KW", x, y\n$/,
      ],
      [[await file({ recoveryKey: recovery.jwk, tee: 'sev', evidence }), index, shareFile, `--nonce=${nonce}`], /: tee must be "tdx" or "sample"\n$/],
    ];
    for (const [args, message] of cases) {
      const { status, stdout, stderr } = run('seal-share', ...args);
      expect({ args, status, stdout }).toEqual({ args, status: 2, stdout: '' });
      expect(stderr).toMatch(message);
      expect(stderr).not.toContain(share!.content);
    }
  });
});

describe('custodian seal-share with TDX evidence', async () => {
  const pki = await createTestPki();
  const rootCa = await file(pki.root.pem);
  const collateral = await file(await buildCollateral(pki));
  const policy = DEFAULT_TD_POLICY;
  const matching = await file(policy);
  const otherTd = await file({ ...policy, mrTd: ['7e'.repeat(48)] });
  const recovery = recoveryKeyPair();
  const nonce = newNonce();
  const { quote } = buildTdxQuote(pki, { report: { reportData: kbsReportData(nonce, recovery.jwk) } });
  const recoveryFile = await file({ recoveryKey: recovery.jwk, tee: 'tdx', evidence: evidenceFor(quote) });
  const tdx = (policyFile: string) => ['--tdx-policy', policyFile, '--collateral', collateral, '--root-ca', rootCa, '--at', TEST_TIME.toISOString()];

  it('accepts evidence that meets the sealing service reference values, and seals the share', async () => {
    const [share] = await shares();
    const { status, json, stderr } = run('seal-share', recoveryFile, String(share!.index), await file(share!), `--nonce=${nonce}`, ...tdx(matching));
    expect(status).toBe(0);
    expect(stderr).toMatch(/^custodian: WARNING: TDX quotes are verified against the root CA in .*, not Intel's/);
    expect(stderr).toContain(`custodian: tdx evidence (mrTd ${DEFAULT_TD.mrTd}, TCB UpToDate) binds the recovery key`);
    expect(json!['index']).toBe(share!.index);
    expect(await openShare(json!['content'] as string, recovery.privateKey)).toBe(share!.content);
  });

  it('refuses evidence of another TD, for another nonce, or without the reference values', async () => {
    const [share] = await shares();
    const shareFile = await file(share!);
    const args = [recoveryFile, String(share!.index), shareFile];
    const otherMrTd = run('seal-share', ...args, `--nonce=${nonce}`, ...tdx(otherTd));
    expect({ status: otherMrTd.status, stdout: otherMrTd.stdout }).toEqual({ status: 1, stdout: '' });
    expect(otherMrTd.stderr).toMatch(
      /\ncustodian: refused: the recovery key's evidence is refused: attestation refused: mr_td: [0-9a-f]{96} is not an allowed value\n$/,
    );
    expect(otherMrTd.stderr).toContain(DEFAULT_TD.mrTd);

    const otherNonce = run('seal-share', ...args, `--nonce=${newNonce()}`, ...tdx(matching));
    expect({ status: otherNonce.status, stdout: otherNonce.stdout }).toEqual({ status: 1, stdout: '' });
    expect(otherNonce.stderr).toMatch(/custodian: refused: the recovery key's evidence is refused: attestation refused: report_data/);

    const noPolicy = run('seal-share', ...args, `--nonce=${nonce}`, '--allow-sample');
    expect({ status: noPolicy.status, stdout: noPolicy.stdout }).toEqual({ status: 2, stdout: '' });
    expect(noPolicy.stderr).toMatch(/^custodian: TDX evidence needs --tdx-policy and --collateral/);

    // Sample evidence where TDX is expected is refused, --allow-sample or not.
    const sample = await file({
      recoveryKey: recovery.jwk,
      tee: 'sample',
      evidence: await new SampleAttester().getEvidence(kbsReportData(nonce, recovery.jwk)),
    });
    const downgraded = run('seal-share', sample, String(share!.index), shareFile, `--nonce=${nonce}`, '--allow-sample', ...tdx(matching));
    expect(downgraded.status).toBe(1);
    expect(downgraded.stderr).toMatch(/refused: the recovery key comes with sample evidence, not the TDX evidence that --tdx-policy asks for/);

    const badPolicy = run('seal-share', ...args, `--nonce=${nonce}`, ...tdx(await file({ ...policy, mrtd: [] })));
    expect(badPolicy.status).toBe(2);
    expect(badPolicy.stderr).toMatch(/^custodian: --tdx-policy .*: TDX policy: unknown field mrtd\n$/);
  });
});

describe('custodian seal-share --key: the recovery challenge of a sealing service with pinned custodians', async () => {
  // The recovery file is made here as a sealing service makes it: each challenge a JWE to its
  // custodian's key (cty tee-kms-recovery-challenge), by that key's thumbprint.
  const recovery = recoveryKeyPair();
  const nonce = newNonce();
  const evidence = await new SampleAttester().getEvidence(kbsReportData(nonce, recovery.jwk));
  const dir = join(tmp, 'grace');
  expect(run('keygen', dir).status).toBe(0);
  const keyFile = join(dir, 'custodian-key.json');
  const grace = parseCustodianKeys([JSON.parse(await readFile(join(dir, 'custodian-key.pub.json'), 'utf8'))], 1)[0]!;
  const challenge = randomBytes(32).toString('base64url');
  const challengeJwe = await new CompactEncrypt(new TextEncoder().encode(challenge))
    .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: grace.thumbprint, cty: 'tee-kms-recovery-challenge' })
    .encrypt(createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: grace.x, y: grace.y }, format: 'jwk' }));
  const withChallenges = (challenges: Record<string, string>) => file({ recoveryKey: recovery.jwk, tee: 'sample', evidence, challenges });
  const sealShareOf = (recoveryFile: string, share: { index: number; content: string }, ...rest: string[]) =>
    runWithInput(JSON.stringify(share), 'seal-share', recoveryFile, String(share.index), '-', `--nonce=${nonce}`, '--allow-sample', ...rest);

  it("seals the share with the custodian's own challenge, opened with its key", async () => {
    const [share] = await shares();
    const { status, json, stderr } = sealShareOf(await withChallenges({ [grace.thumbprint]: challengeJwe }), share!, '--key', keyFile);
    expect(status).toBe(0);
    expect(stderr).toMatch(/share \d+ is sealed to it with your recovery challenge\n$/);
    expect(stderr).not.toContain(challenge);
    const { plaintext } = await compactDecrypt(json!['content'] as string, recovery.privateKey);
    expect(JSON.parse(Buffer.from(plaintext).toString('utf8'))).toEqual({ share: share!.content, challenge });
  });

  it('without --key is a usage error, a share passed off as a challenge is refused, a key with no challenge is said', async () => {
    const [share] = await shares();
    const missing = sealShareOf(await withChallenges({ [grace.thumbprint]: challengeJwe }), share!);
    expect({ status: missing.status, stdout: missing.stdout }).toEqual({ status: 2, stdout: '' });
    expect(missing.stderr).toMatch(/^custodian: the sealing service pins its custodians .*: give your custodian private key with --key <file>/);

    // No challenge for this key (the sealer does not pin it): said, and the share sealed alone, for a verification.
    const other = sealShareOf(await withChallenges({ [randomBytes(32).toString('base64url')]: challengeJwe }), share!, '--key', keyFile);
    expect(other.status).toBe(0);
    expect(other.stderr).toContain(`holds no recovery challenge for the key in ${keyFile} (kid ${grace.thumbprint})`);
    expect(other.stderr).toContain('not recover');
    expect(await openShare(other.json!['content'] as string, recovery.privateKey)).toBe(share!.content);
    // No challenge for anyone (a pinned sealer whose key is not the pinned custodians'): no --key needed.
    const none = sealShareOf(await withChallenges({}), share!);
    expect(none.status).toBe(0);
    expect(none.stderr).toContain('holds no recovery challenge for anyone');

    // The custodian's own share, encrypted to its key, given as its "challenge": never opened as one.
    const shareJwe = await sealShare(share!.content, grace);
    const swapped = sealShareOf(await withChallenges({ [grace.thumbprint]: shareJwe }), share!, '--key', keyFile);
    expect({ status: swapped.status, stdout: swapped.stdout }).toEqual({ status: 1, stdout: '' });
    expect(swapped.stderr).toMatch(/refused: the recovery challenge for kid .*: the recovery challenge could not be decrypted with this key/);
    expect(swapped.stderr).not.toContain(share!.content);
    // And a challenge is never opened as a share by decrypt.
    const decrypted = run('decrypt', keyFile, challengeJwe);
    expect({ status: decrypted.status, stdout: decrypted.stdout }).toEqual({ status: 1, stdout: '' });
  });

  it('with a recovery file that holds no challenges, says that --key is not used and seals the share alone', async () => {
    const [share] = await shares();
    const plainFile = await file({ recoveryKey: recovery.jwk, tee: 'sample', evidence });
    const { status, json, stderr } = sealShareOf(plainFile, share!, '--key', keyFile);
    expect(status).toBe(0);
    expect(stderr).toContain('holds no recovery challenges (no custodians are pinned there): --key is not used');
    expect(await openShare(json!['content'] as string, recovery.privateKey)).toBe(share!.content);
  });
});
