import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  collateralExpiry,
  collateralWindows,
  loadCollateralFile,
  parseCollateral,
  PccsCollateralSource,
  platformIdOf,
  type CollateralFetcher,
  type TdxCollateral,
} from '../../../../sealer/attestation/tdx/collateral.js';
import { crlToDer, fetchPccsCollateral, rawJsonMember } from '../../../../sealer/attestation/tdx/pccs.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { trustedRootFromPem, verifyTdxQuoteDcap } from '../../../../sealer/attestation/tdx/verify.js';
import { buildCollateral, buildTdxQuote, createTestPki, TEST_FMSPC, TEST_TIME } from '../../../support/tdx-quote-builder.js';
import { startFakePccs } from '../../../support/fake-pccs.js';
import { expectKmsError } from '../../../support/tdx-helpers.js';

const pki = await createTestPki();
const raw = await buildCollateral(pki);
const collateral = parseCollateral(raw, 'test');
const quote = parseTdxQuote(buildTdxQuote(pki).quote);
const tmp = await mkdtemp(join(tmpdir(), 'tdx-collateral-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe('collateral files and shape', () => {
  it('normalizes byte fields to lowercase hex, from hex strings or byte arrays', () => {
    const asArrays = { ...raw, pck_crl: [...Buffer.from(raw.pck_crl, 'hex')], tcb_info_signature: raw.tcb_info_signature.toUpperCase() };
    expect(parseCollateral(asArrays, 'test')).toEqual(collateral);
  });

  it('names the missing or malformed field', async () => {
    const { tcb_info: _omitted, ...missing } = raw;
    await expectKmsError(() => parseCollateral(missing, 'c.json'), 'CONFIG', 'TDX collateral from c.json: tcb_info is missing');
    await expectKmsError(
      () => parseCollateral({ ...raw, pck_crl: 'xyz' }, 'c.json'),
      'CONFIG',
      'TDX collateral from c.json: pck_crl must be hex or a byte array',
    );
    await expectKmsError(() => parseCollateral([], 'c.json'), 'CONFIG', 'TDX collateral from c.json must be a JSON object');
  });

  it('loads a collateral file and reports unreadable or non-JSON files', async () => {
    const path = join(tmp, 'collateral.json');
    await writeFile(path, JSON.stringify(raw));
    expect(await loadCollateralFile(path)).toEqual(collateral);
    await expectKmsError(() => loadCollateralFile(join(tmp, 'absent.json')), 'CONFIG', `TDX collateral file ${join(tmp, 'absent.json')} cannot be read`);
    await writeFile(join(tmp, 'bad.json'), '{not json');
    await expectKmsError(() => loadCollateralFile(join(tmp, 'bad.json')), 'CONFIG', `TDX collateral file ${join(tmp, 'bad.json')} is not JSON`);
  });

  it('reads validity windows and the cache expiry (earliest nextUpdate of documents and CRLs)', async () => {
    expect(collateralWindows(collateral).overall).toEqual({ issueDate: new Date('2030-01-01T00:00:00Z'), nextUpdate: new Date('2030-02-01T00:00:00Z') });
    expect(collateralExpiry(collateral)).toEqual(new Date('2030-02-01T00:00:00Z'));
    const shortCrl = await buildCollateral(pki, { nextUpdate: new Date('2030-01-20T00:00:00Z') });
    expect(collateralExpiry(parseCollateral({ ...raw, pck_crl: shortCrl.pck_crl }, 'test'))).toEqual(new Date('2030-01-20T00:00:00Z'));
  });

  it('identifies the platform (FMSPC, PCK CA) from the quote', () => {
    expect(platformIdOf(quote)).toEqual({ fmspc: TEST_FMSPC, ca: 'platform' });
  });
});

describe('PccsCollateralSource cache', () => {
  function counting(result: () => Promise<TdxCollateral>) {
    const calls: string[] = [];
    const fetcher: CollateralFetcher = async (request) => {
      calls.push(`${request.baseUrl} ${request.fmspc} ${request.ca}`);
      return result();
    };
    return { calls, fetcher };
  }

  it('fetches once per FMSPC and CA and serves the cache until nextUpdate', async () => {
    let now = TEST_TIME;
    const { calls, fetcher } = counting(async () => collateral);
    const source = new PccsCollateralSource({ baseUrl: 'https://pccs.example/', fetcher, now: () => now, maxAgeMs: 365 * 24 * 3600 * 1000 });
    expect(await source.collateralFor(quote)).toEqual(collateral);
    now = new Date('2030-01-31T23:59:00Z');
    await source.collateralFor(quote);
    expect(calls).toEqual([`https://pccs.example ${TEST_FMSPC} platform`]);
    now = new Date('2030-02-01T00:00:01Z');
    await source.collateralFor(quote);
    expect(calls).toHaveLength(2);

    const otherPlatform = await createTestPki({ fmspc: '00906ED50000' });
    await source.collateralFor(parseTdxQuote(buildTdxQuote(otherPlatform).quote));
    expect(calls[2]).toBe('https://pccs.example 00906ED50000 platform');
  });

  it('refetches after maxAge even if nextUpdate is later', async () => {
    let now = TEST_TIME;
    const { calls, fetcher } = counting(async () => collateral);
    const source = new PccsCollateralSource({ baseUrl: 'https://pccs.example', fetcher, now: () => now, maxAgeMs: 60_000 });
    await source.collateralFor(quote);
    now = new Date(TEST_TIME.getTime() + 59_000);
    await source.collateralFor(quote);
    now = new Date(TEST_TIME.getTime() + 61_000);
    await source.collateralFor(quote);
    expect(calls).toHaveLength(2);
  });

  it('shares one fetch between concurrent requests and does not cache failures', async () => {
    let fail = true;
    const { calls, fetcher } = counting(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (fail) throw new Error('secret-looking upstream text');
      return collateral;
    });
    const source = new PccsCollateralSource({ baseUrl: 'https://pccs.example', fetcher, now: () => TEST_TIME });
    const failures = await Promise.allSettled([source.collateralFor(quote), source.collateralFor(quote)]);
    expect(calls).toHaveLength(1);
    for (const failure of failures) {
      expect(failure.status).toBe('rejected');
      const error = (failure as PromiseRejectedResult).reason;
      expect(error.code).toBe('INTERNAL');
      expect(error.message).toBe(`TDX collateral for ${TEST_FMSPC}/platform could not be fetched from https://pccs.example`);
    }
    fail = false;
    expect(await source.collateralFor(quote)).toEqual(collateral);
    expect(calls).toHaveLength(2);
  });

  it('rejects a base URL that is not http(s)', async () => {
    await expectKmsError(() => new PccsCollateralSource({ baseUrl: 'ftp://pccs' }), 'CONFIG', 'TDX collateral: PCCS base URL must be http(s)');
    await expectKmsError(() => new PccsCollateralSource({ baseUrl: 'not a url' }), 'CONFIG', 'TDX collateral: PCCS base URL is not a URL');
  });
});

describe('PCCS v4 endpoints over HTTP', () => {
  const verifyAt = (fetched: TdxCollateral) => {
    const rawQuote = buildTdxQuote(pki).quote;
    return verifyTdxQuoteDcap(rawQuote, parseTdxQuote(rawQuote), fetched, { at: TEST_TIME, trustedRootCa: trustedRootFromPem(pki.root.pem) });
  };

  it('fetches collateral that verifies, asking for the PCK CA and FMSPC of the quote', async () => {
    const pccs = await startFakePccs(collateral, { spacedJson: true });
    try {
      const fetched = await fetchPccsCollateral({ baseUrl: `${pccs.url}/sgx/certification/v4/`, fmspc: TEST_FMSPC, ca: 'platform' });
      expect(fetched).toEqual(collateral);
      expect(verifyAt(fetched)).toMatchObject({ tcbStatus: 'UpToDate', advisoryIds: [] });
      expect([...pccs.requests].sort()).toEqual([
        '/sgx/certification/v4/pckcrl?ca=platform&encoding=der',
        '/sgx/certification/v4/rootcacrl',
        `/tdx/certification/v4/qe/identity?update=standard`,
        `/tdx/certification/v4/tcb?fmspc=${TEST_FMSPC}`,
      ]);
    } finally {
      await pccs.close();
    }
  });

  it('takes the root CA CRL from its distribution point when the service has no rootcacrl endpoint', async () => {
    const pccs = await startFakePccs(collateral, { withoutRootCaCrlEndpoint: true });
    try {
      const fetched = await fetchPccsCollateral({ baseUrl: pccs.url, fmspc: TEST_FMSPC, ca: 'platform', rootCaCrlUrl: `${pccs.url}/IntelSGXRootCA.der` });
      expect(fetched.root_ca_crl).toBe(collateral.root_ca_crl);
      expect(pccs.requests).toContain('/IntelSGXRootCA.der');
    } finally {
      await pccs.close();
    }
  });

  it('serves verifiers through PccsCollateralSource with one fetch per platform', async () => {
    const pccs = await startFakePccs(collateral);
    try {
      const source = new PccsCollateralSource({ baseUrl: pccs.url, now: () => TEST_TIME });
      expect(verifyAt(await source.collateralFor(quote)).tcbStatus).toBe('UpToDate');
      await source.collateralFor(quote);
      expect(pccs.requests).toHaveLength(4);
    } finally {
      await pccs.close();
    }
  });

  it('reports HTTP errors and timeouts as INTERNAL without the upstream text', async () => {
    const failing = await startFakePccs(collateral, { failWith: 500 });
    const hanging = await startFakePccs(collateral, { hang: true });
    try {
      const error = await expectKmsError(
        () => new PccsCollateralSource({ baseUrl: failing.url }).collateralFor(quote),
        'INTERNAL',
        `TDX collateral for ${TEST_FMSPC}/platform could not be fetched from ${failing.url}`,
      );
      expect(String((error.cause as Error).message)).toMatch(/answered HTTP 500/);
      await expectKmsError(() => new PccsCollateralSource({ baseUrl: hanging.url, timeoutMs: 200 }).collateralFor(quote), 'INTERNAL', /could not be fetched/);
    } finally {
      await failing.close();
      await hanging.close();
    }
  });
});

describe('PCCS response helpers', () => {
  it('extracts a member verbatim, whatever its spacing and string content', () => {
    const body = '{ "signature": "ab", "tcbInfo" : {"id":"TDX", "note":"a } \\" [ ]", "levels":[{"x":1}]} , "z": null }';
    expect(rawJsonMember(body, 'tcbInfo')).toBe('{"id":"TDX", "note":"a } \\" [ ]", "levels":[{"x":1}]}');
    expect(rawJsonMember(body, 'signature')).toBe('"ab"');
    expect(rawJsonMember(body, 'z')).toBe('null');
    expect(rawJsonMember(body, 'absent')).toBeUndefined();
    expect(() => rawJsonMember('{"a":', 'a')).toThrow();
  });

  it('accepts CRLs as DER, hex text or PEM', () => {
    const der = Buffer.from(collateral.pck_crl, 'hex');
    expect(crlToDer(der)).toEqual(der);
    expect(crlToDer(Buffer.from(collateral.pck_crl.toUpperCase()))).toEqual(der);
    const pem = `-----BEGIN X509 CRL-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END X509 CRL-----\n`;
    expect(crlToDer(Buffer.from(pem))).toEqual(der);
    expect(() => crlToDer(Buffer.from('nonsense'))).toThrow('CRL is neither DER, hex nor PEM');
  });
});
