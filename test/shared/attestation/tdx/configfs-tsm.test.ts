/**
 * ConfigfsTsmAttester against a real temporary directory tree. A plain directory cannot produce
 * an outblob when inblob is written, so a small fake kernel (the TsmFileSystem hook) performs
 * configfs-tsm's side effects on that tree: populating a new entry (provider, generation),
 * generating the quote on an inblob write (a synthetic quote over the written report_data),
 * counting generations, and removing the attributes with the entry.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import {
  ConfigfsTsmAttester,
  DEFAULT_CCEL_PATH,
  DEFAULT_TSM_ROOT,
  nodeTsmFileSystem,
  type TsmFileSystem,
} from '../../../../shared/attestation/tdx/configfs-tsm.js';
import { parseCollateral, StaticCollateralSource } from '../../../../sealer/attestation/tdx/collateral.js';
import { createTdxPolicy } from '../../../../sealer/attestation/tdx/policy.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { TdxVerifier } from '../../../../sealer/attestation/tdx/verifier.js';
import { buildCollateral, buildTdxQuote, createTestPki, DEFAULT_TD, reportDataFrom, TEST_TIME, type TestPki } from '../../../support/tdx-quote-builder.js';
import type { KmsErrorCode } from '../../../../shared/errors.js';
import { expectKmsError, syntheticCcel } from '../../../support/tdx-helpers.js';

class FakeTsmKernel implements TsmFileSystem {
  readonly created: string[] = [];
  readonly removed: string[] = [];
  /** Inblob writes by "another process" still to inject, one per entry. */
  racesLeft: number;

  constructor(
    private readonly pki: TestPki,
    /**
     * quoteFails: reading outblob fails with this errno, as when the host's QGS cannot make the
     * quote; emptyQuote: it reads empty instead, as older kernels report that failure.
     */
    private readonly options: { provider?: string; races?: number; quoteFails?: string; emptyQuote?: boolean } = {},
  ) {
    this.racesLeft = options.races ?? 0;
  }

  async mkdir(path: string): Promise<void> {
    await mkdir(path); // fails like configfs when <root>/report is missing
    this.created.push(basename(path));
    await writeFile(join(path, 'provider'), this.options.provider ?? 'tdx_guest\n');
    await writeFile(join(path, 'generation'), '0\n');
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    await writeFile(path, data);
    if (basename(path) !== 'inblob') return;
    const entry = dirname(path);
    let generation = Number((await readFile(join(entry, 'generation'), 'utf8')).trim()) + 1;
    let reportData: Uint8Array = new Uint8Array(data);
    if (this.racesLeft > 0) {
      // Another writer slipped in its own report_data right after ours.
      this.racesLeft -= 1;
      generation += 1;
      reportData = reportDataFrom('someone else');
    }
    await writeFile(join(entry, 'generation'), `${generation}\n`);
    await writeFile(join(entry, 'outblob'), this.options.emptyQuote === true ? new Uint8Array(0) : buildTdxQuote(this.pki, { report: { reportData } }).quote);
  }

  readFile(path: string): Promise<Uint8Array> {
    const quoteFails = this.options.quoteFails;
    if (quoteFails !== undefined && basename(path) === 'outblob') {
      return Promise.reject(Object.assign(new Error(`${quoteFails}: read ${path}`), { code: quoteFails }));
    }
    return readFile(path);
  }

  async rmdir(path: string): Promise<void> {
    // configfs removes an entry's attributes with it; a plain directory must be emptied first.
    for (const name of await readdir(path)) await rm(join(path, name));
    await rmdir(path);
    this.removed.push(basename(path));
  }
}

const pki = await createTestPki();
const tmp = await mkdtemp(join(tmpdir(), 'tdx-tsm-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

let root: string;
let counter = 0;
beforeEach(async () => {
  root = join(tmp, `tsm-${++counter}`);
  await mkdir(join(root, 'report'), { recursive: true });
});
const entries = () => readdir(join(root, 'report'));

describe('ConfigfsTsmAttester', () => {
  const nonce = reportDataFrom('kbs-binding');

  it('uses the documented default paths', () => {
    expect(DEFAULT_TSM_ROOT).toBe('/sys/kernel/config/tsm');
    expect(DEFAULT_CCEL_PATH).toBe('/sys/firmware/acpi/tables/data/CCEL');
  });

  it('returns Trustee evidence whose quote binds the report_data, verified end to end, and removes its entry', async () => {
    const kernel = new FakeTsmKernel(pki);
    const attester = new ConfigfsTsmAttester({ root, fs: kernel, ccelPath: join(tmp, 'no-such-ccel') });
    const evidence = await attester.getEvidence(nonce);
    expect(attester.tee).toBe('tdx');
    expect(Object.keys(evidence)).toEqual(['quote']);
    expect(parseTdxQuote(Buffer.from(evidence.quote, 'base64')).reportData).toEqual(nonce);
    expect(kernel.created).toHaveLength(1);
    expect(kernel.removed).toEqual(kernel.created);
    expect(await entries()).toEqual([]);

    const verifier = new TdxVerifier({
      policy: createTdxPolicy({ mrTd: [DEFAULT_TD.mrTd] }),
      collateral: new StaticCollateralSource(parseCollateral(await buildCollateral(pki), 'test')),
      trustedRootCaPem: pki.root.pem,
      now: () => TEST_TIME,
    });
    expect((await verifier.verify(evidence, nonce)).claims['mrTd']).toBe(DEFAULT_TD.mrTd);
  });

  it('attaches the CCEL, trimmed, as base64 cc_eventlog', async () => {
    const { log, trimmed } = syntheticCcel(0xff);
    const ccelPath = join(tmp, 'CCEL');
    await writeFile(ccelPath, log);
    const evidence = await new ConfigfsTsmAttester({ root, fs: new FakeTsmKernel(pki), ccelPath }).getEvidence(nonce);
    expect(Buffer.from(evidence.cc_eventlog!, 'base64')).toEqual(Buffer.from(trimmed));
    const none = await new ConfigfsTsmAttester({ root, fs: new FakeTsmKernel(pki), ccelPath: null }).getEvidence(nonce);
    expect(none.cc_eventlog).toBeUndefined();
  });

  /** The attester fails with `code` and `message` on `kernel`, and removes every entry it made. */
  async function failsAndCleansUp(kernel: FakeTsmKernel, code: KmsErrorCode, message: string): Promise<void> {
    await expectKmsError(() => new ConfigfsTsmAttester({ root, fs: kernel }).getEvidence(nonce), code, message);
    expect(kernel.created).not.toEqual([]);
    expect(kernel.removed).toEqual(kernel.created);
    expect(await entries()).toEqual([]);
  }

  it('refuses a provider other than tdx_guest, and still removes the entry', async () => {
    await failsAndCleansUp(
      new FakeTsmKernel(pki, { provider: 'sev_guest\n' }),
      'CONFIG',
      'configfs-tsm: provider is "sev_guest", not tdx_guest (not a TDX guest)',
    );
  });

  it('retries with a fresh entry when a concurrent writer raced (generation ≠ 1), then succeeds', async () => {
    const kernel = new FakeTsmKernel(pki, { races: 2 });
    const quote = await new ConfigfsTsmAttester({ root, fs: kernel, maxAttempts: 3 }).getQuote(nonce);
    expect(parseTdxQuote(quote).reportData).toEqual(nonce);
    expect(kernel.created).toHaveLength(3);
    expect(new Set(kernel.created).size).toBe(3);
    expect(kernel.removed).toEqual(kernel.created);
    expect(await entries()).toEqual([]);
  });

  it('gives up after a bounded number of raced attempts, as ATTESTATION_UNAVAILABLE (a 503, retried)', async () => {
    const kernel = new FakeTsmKernel(pki, { races: 10 });
    await expectKmsError(
      () => new ConfigfsTsmAttester({ root, fs: kernel, maxAttempts: 2 }).getQuote(nonce),
      'ATTESTATION_UNAVAILABLE',
      'configfs-tsm: another writer changed our report entry in each of 2 attempts (generation ≠ 1)',
    );
    expect(kernel.created).toHaveLength(2);
    expect(kernel.removed).toEqual(kernel.created);
  });

  it('reports a quote the host could not make (outblob unreadable, or empty) as ATTESTATION_UNAVAILABLE, and removes the entry', async () => {
    await failsAndCleansUp(
      new FakeTsmKernel(pki, { quoteFails: 'EIO' }),
      'ATTESTATION_UNAVAILABLE',
      "configfs-tsm: the quote could not be generated (EIO; is the host's quote generation service up?)",
    );
    // Older kernels: an empty quote instead of an error.
    await failsAndCleansUp(
      new FakeTsmKernel(pki, { emptyQuote: true }),
      'ATTESTATION_UNAVAILABLE',
      "configfs-tsm: the quote (outblob) is empty; is the host's quote generation service up?",
    );
  });

  it('explains a missing configfs-tsm directory', async () => {
    const missing = join(tmp, 'no-tsm-here');
    await expectKmsError(
      () => new ConfigfsTsmAttester({ root: missing, fs: new FakeTsmKernel(pki) }).getQuote(nonce),
      'CONFIG',
      `configfs-tsm: ${join(missing, 'report')} does not exist (needs Linux 6.7+ with configfs mounted at ${missing}, inside a TDX guest)`,
    );
  });

  it('with plain node:fs on a plain directory: no provider attribute, and the entry is removed', async () => {
    await expectKmsError(() => new ConfigfsTsmAttester({ root, fs: nodeTsmFileSystem }).getQuote(nonce), 'INTERNAL', 'configfs-tsm: cannot read provider');
    expect(await entries()).toEqual([]);
  });

  it('requires 64 bytes of report_data and a sane attempt count', async () => {
    await expectKmsError(() => new ConfigfsTsmAttester({ root }).getQuote(new Uint8Array(32)), 'BAD_REQUEST', 'TDX report_data must be exactly 64 bytes');
    await expectKmsError(() => new ConfigfsTsmAttester({ maxAttempts: 0 }), 'CONFIG', 'configfs-tsm: maxAttempts must be a positive integer');
  });
});
