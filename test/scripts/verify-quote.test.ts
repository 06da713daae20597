/**
 * The operator CLI (scripts/verify-quote.ts) run as a real child process from its build,
 * dist/scripts/verify-quote.js. The build is refreshed with tsc when missing or older than the
 * sources it depends on (the global test setup normally builds dist/ already).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCollateral, buildTdxQuote, createTestPki, DEFAULT_TD, evidenceFor, TD_ATTRIBUTES_DEBUG } from '../support/tdx-quote-builder.js';
import { FIXTURES_SKIP_NOTE, TDX_QUOTE_REPORT, fixturePath, fixturesPresent } from '../support/tdx-fixtures.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cli = join(repo, 'dist/scripts/verify-quote.js');

function newestSource(): number {
  const dirs = ['shared/attestation/tdx', 'sealer/attestation/tdx'].map((d) => join(repo, d));
  const files = [join(repo, 'scripts/verify-quote.ts'), join(repo, 'shared/errors.ts'), ...dirs.flatMap((dir) => readdirSync(dir).map((f) => join(dir, f)))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

beforeAll(() => {
  if (existsSync(cli) && statSync(cli).mtimeMs >= newestSource()) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  let output = '';
  try {
    execFileSync(process.execPath, [tsc, '-p', join(repo, 'tsconfig.json')], { cwd: repo, encoding: 'utf8', stdio: 'pipe' });
  } catch (error) {
    // tsc still emits when other files of the project have type errors; judge by the output file.
    output = String((error as { stdout?: string }).stdout ?? error);
  }
  if (!existsSync(cli) || statSync(cli).mtimeMs < newestSource()) throw new Error(`could not build ${cli}:\n${output}`);
}, 180_000);

interface Run {
  status: number | null;
  json: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

function run(...args: string[]): Run {
  return runWithEnv({}, ...args);
}

function runWithEnv(env: Record<string, string>, ...args: string[]): Run {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: repo, encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(result.stdout) as Record<string, unknown>; // the whole stdout is one JSON object
  } catch {
    json = undefined;
  }
  return { status: result.status, json, stdout: result.stdout, stderr: result.stderr };
}

const tmp = await mkdtemp(join(tmpdir(), 'verify-quote-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

const MRTD = TDX_QUOTE_REPORT.mrTd;

describe.skipIf(!fixturesPresent)(`verify-quote on real quotes${FIXTURES_SKIP_NOTE}`, () => {
  it('prints the measurements of a TDX quote as lowercase hex', () => {
    const { status, json, stderr } = run(fixturePath('tdx_quote'));
    expect(stderr).toBe('');
    expect(status).toBe(0);
    expect(json).toEqual({
      tee: 'tdx',
      quoteVersion: 4,
      bodyType: 2,
      ...TDX_QUOTE_REPORT,
      debug: false,
    });
  });

  it('accepts tdx_quote with its collateral inside the validity window', () => {
    const { status, json } = run(fixturePath('tdx_quote'), '--collateral', fixturePath('tdx_quote_collateral.json'), '--at', '2025-07-01T00:00:00Z');
    expect(status).toBe(0);
    expect(json).toMatchObject({
      mrTd: MRTD,
      tcbStatus: 'UpToDate',
      advisoryIds: [],
      evaluatedAt: '2025-07-01T00:00:00.000Z',
      verdict: 'accepted',
      reason: null,
    });
    expect(json).toMatchObject({
      tdxModule: { identityId: 'TDX_01', svn: 6, tcbStatus: 'UpToDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
    });
  });

  it('rejects tdx_quote after its collateral expired', () => {
    const { status, json } = run(fixturePath('tdx_quote'), '--collateral', fixturePath('tdx_quote_collateral.json'), '--at', '2025-08-01T00:00:00Z');
    expect(status).toBe(1);
    expect(json).toMatchObject({
      verdict: 'rejected',
      tcbStatus: null,
      reason: 'attestation refused: collateral: TCB info expired at 2025-07-19T10:16:03.000Z (evaluated at 2025-08-01T00:00:00.000Z)',
    });
  });

  it('never accepts tdx_quote_outdated as UpToDate', () => {
    const { status, json } = run(
      fixturePath('tdx_quote_outdated'),
      '--collateral',
      fixturePath('tdx_quote_outdated_collateral.json'),
      '--at',
      '2026-03-01T00:00:00Z',
    );
    expect(status).toBe(1);
    expect(json).toMatchObject({
      quoteVersion: 5,
      bodyType: 3,
      teeTcbSvn2: '0d010300000000000000000000000000',
      verdict: 'rejected',
      tcbStatus: null,
      tdxModule: null,
      tcbEvaluationDataNumber: null,
      reason: 'attestation refused: tcb_status: the platform TCB is below every level of the TCB info (not UpToDate)',
    });
  });

  it('says the SGX quote is not a TDX quote (rejected), with or without collateral', () => {
    for (const extra of [[], ['--collateral', fixturePath('sgx_quote_collateral.json'), '--at', '2025-07-01T00:00:00Z']]) {
      const { status, json } = run(fixturePath('sgx_quote'), ...extra);
      expect(status).toBe(1);
      expect(json).toEqual({
        tee: 'sgx',
        quoteVersion: 3,
        teeType: '0x00000000',
        verdict: 'rejected',
        reason: 'not a TDX quote: tee_type 0x00000000 (sgx), expected 0x00000081',
      });
    }
  });
});

describe('verify-quote on synthetic quotes', async () => {
  const pki = await createTestPki();
  const rootCa = join(tmp, 'root.pem');
  const collateral = join(tmp, 'collateral.json');
  await writeFile(rootCa, pki.root.pem);
  await writeFile(collateral, JSON.stringify(await buildCollateral(pki)));
  const at = ['--at', '2030-01-15T00:00:00Z'];
  const quoteFile = async (name: string, content: Buffer | string) => {
    const path = join(tmp, name);
    await writeFile(path, content);
    return path;
  };

  it('accepts a genuine quote under the given root, from raw, base64 or evidence JSON files', async () => {
    const { quote } = buildTdxQuote(pki);
    for (const file of [
      await quoteFile('q.bin', quote),
      await quoteFile('q.b64', `${quote.toString('base64').replace(/(.{76})/g, '$1\n')}\n`),
      await quoteFile('q.json', JSON.stringify(evidenceFor(quote))),
    ]) {
      const { status, json } = run(file, '--collateral', collateral, '--root-ca', rootCa, ...at);
      expect(status).toBe(0);
      expect(json).toMatchObject({ mrTd: DEFAULT_TD.mrTd, rtmr: [...DEFAULT_TD.rtmr], tcbStatus: 'UpToDate', verdict: 'accepted', reason: null });
    }
  });

  it('rejects a debug TD and names the claim', async () => {
    const file = await quoteFile('debug.bin', buildTdxQuote(pki, { report: { tdAttributes: TD_ATTRIBUTES_DEBUG } }).quote);
    const { status, json } = run(file, '--collateral', collateral, '--root-ca', rootCa, ...at);
    expect(status).toBe(1);
    expect(json).toMatchObject({
      debug: true,
      tdAttributes: TD_ATTRIBUTES_DEBUG,
      verdict: 'rejected',
      reason: 'attestation refused: debug: the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory',
    });
  });

  it('reports an OutOfDate TCB with its advisories, accepted only when allowed', async () => {
    const file = await quoteFile('outdated.bin', buildTdxQuote(pki, { report: { teeTcbSvn: '06010200000000000000000000000000' } }).quote);
    const rejected = run(file, '--collateral', collateral, '--root-ca', rootCa, ...at);
    expect(rejected.status).toBe(1);
    expect(rejected.json).toMatchObject({ tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036'], verdict: 'rejected' });
    expect(rejected.json?.['reason']).toBe(
      'attestation refused: tcb_status: OutOfDate is not allowed (allowed: UpToDate) (advisories: INTEL-SA-00837, INTEL-SA-01036)',
    );
    const allowed = run(file, '--collateral', collateral, '--root-ca', rootCa, ...at, '--allow-tcb-status', 'UpToDate', '--allow-tcb-status', 'OutOfDate');
    expect(allowed.status).toBe(0);
    expect(allowed.json).toMatchObject({ tcbStatus: 'OutOfDate', verdict: 'accepted' });
  });

  it('prints the TDX module verdict, the advisories of both levels and TEE_TCB_SVN2', async () => {
    const oldModule = { teeTcbSvn: '03010200000000000000000000000000' };
    const v4 = await quoteFile('old-module.bin', buildTdxQuote(pki, { report: oldModule }).quote);
    const { status, json } = run(v4, '--collateral', collateral, '--root-ca', rootCa, ...at, '--allow-tcb-status', 'OutOfDate');
    expect(status).toBe(0);
    expect(json).toMatchObject({
      teeTcbSvn: oldModule.teeTcbSvn,
      tcbStatus: 'OutOfDate',
      advisoryIds: ['INTEL-SA-00837', 'INTEL-SA-01036', 'INTEL-SA-01099'],
      tdxModule: { identityId: 'TDX_01', svn: 3, tcbStatus: 'OutOfDate' },
      tcbEvaluationDataNumber: { tcbInfo: 17, qeIdentity: 17 },
      verdict: 'accepted',
    });
    const relaunch = { teeTcbSvn: '03010300000000000000000000000000', teeTcbSvn2: '04010300000000000000000000000000' };
    const v5 = await quoteFile('relaunch.bin', buildTdxQuote(pki, { version: 5, bodyType: 3, report: relaunch }).quote);
    const advised = run(v5, '--collateral', collateral, '--root-ca', rootCa, ...at);
    expect(advised.status).toBe(1);
    expect(advised.json).toMatchObject({ quoteVersion: 5, teeTcbSvn2: relaunch.teeTcbSvn2, tcbStatus: 'TDRelaunchAdvised', verdict: 'rejected' });
  });

  it('refuses --root-ca when NODE_ENV=production', async () => {
    const file = await quoteFile('prod.bin', buildTdxQuote(pki).quote);
    const { status, stdout, stderr } = runWithEnv({ NODE_ENV: 'production' }, file, '--collateral', collateral, '--root-ca', rootCa, ...at);
    expect({ status, stdout }).toEqual({ status: 2, stdout: '' });
    expect(stderr).toMatch(/^verify-quote: --root-ca replaces the Intel SGX Root CA and is refused when NODE_ENV=production\n/);
    // Without --root-ca the command still runs in production (Intel's root).
    expect(runWithEnv({ NODE_ENV: 'production' }, file).status).toBe(0);
  });

  it('rejects a synthetic quote under the default Intel root', async () => {
    const file = await quoteFile('q2.bin', buildTdxQuote(pki).quote);
    const { status, json } = run(file, '--collateral', collateral, ...at);
    expect(status).toBe(1);
    expect(String(json?.['reason'])).toMatch(/^attestation refused: crl: root CA CRL is not issued by CN=Intel SGX Root CA/);
  });

  it('answers bad input with a message on stderr and exit code 2', async () => {
    const good = await quoteFile('good.bin', buildTdxQuote(pki).quote);
    const truncated = await quoteFile('truncated.bin', buildTdxQuote(pki).quote.subarray(0, 700));
    const badCollateral = await quoteFile('bad-collateral.json', '{"tcb_info": 1}');
    const cases: Array<[string[], RegExp]> = [
      [[], /^verify-quote: exactly one quote file is required\nusage: verify-quote <quote file>/],
      [[join(tmp, 'missing.bin')], /^verify-quote: cannot read quote file .*missing\.bin\n/],
      [[truncated], /^verify-quote: malformed quote: truncated at signature_data\n$/],
      [[good, '--collateral', collateral, '--at', 'yesterday'], /^verify-quote: --at yesterday is not an ISO 8601 time\n/],
      [[good, '--at', '2030-01-15T00:00:00Z'], /^verify-quote: --at, --root-ca and --allow-tcb-status need --collateral\n/],
      [[good, '--collateral', badCollateral], /^verify-quote: TDX collateral from .*bad-collateral\.json: pck_crl_issuer_chain is missing\n$/],
      [[good, '--collateral', collateral, '--allow-tcb-status', 'Fine'], /^verify-quote: --allow-tcb-status Fine is not a TCB status/],
      [[good, '--frobnicate'], /^verify-quote: Unknown option '--frobnicate'/],
      [[good, '--collateral', collateral, '--root-ca', good], /^verify-quote: the trusted root CA must be a self-signed CA certificate in PEM\n$/],
    ];
    for (const [args, message] of cases) {
      const { status, stdout, stderr } = run(...args);
      expect({ args, status, stdout }).toEqual({ args, status: 2, stdout: '' });
      expect(stderr).toMatch(message);
    }
  });
});
