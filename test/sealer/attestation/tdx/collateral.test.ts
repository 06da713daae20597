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
  type ChainTrust,
  type CollateralFetcher,
  type PccsCollateralSourceOptions,
  type TdxCollateral,
} from '../../../../sealer/attestation/tdx/collateral.js';
import { crlToDer, fetchPccsCollateral, rawJsonMember } from '../../../../sealer/attestation/tdx/pccs.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { trustedRootFromPem, verifyTdxQuoteDcap } from '../../../../sealer/attestation/tdx/verify.js';
import { verifyTdxQuote } from '../../../../sealer/attestation/tdx/verifier.js';
import { buildCollateral, buildTdxQuote, createTestPki, TEST_FMSPC, TEST_TIME, type TestPki } from '../../../support/tdx-quote-builder.js';
import { startFakePccs } from '../../../support/fake-pccs.js';
import { expectKmsError, expectRefusal } from '../../../support/tdx-helpers.js';

const pki = await createTestPki();
const raw = await buildCollateral(pki);
const collateral = parseCollateral(raw, 'test');
const quote = parseTdxQuote(buildTdxQuote(pki).quote);
const trust: ChainTrust = { trustedRootCa: trustedRootFromPem(pki.root.pem), at: TEST_TIME };
/** A look-alike PKI: its chain is well-formed but ends at a root nobody trusts. */
const impostor = await createTestPki({ label: 'Impostor', fmspc: '00A0FF000000' });
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

  it('identifies the platform (FMSPC, PCK CA) from the quote once its PCK chain verifies', () => {
    expect(platformIdOf(quote, trust)).toEqual({ fmspc: TEST_FMSPC, ca: 'platform' });
  });

  it('reads no FMSPC from a PCK chain that does not verify up to the trusted root at the evaluation time', async () => {
    await expectRefusal(
      () => platformIdOf(parseTdxQuote(buildTdxQuote(impostor).quote), trust),
      'pck_chain',
      'PCK chain ends at a root CA that is not the trusted root',
    );
    const expiredLeaf = await createTestPki({ pckLeafNotAfter: new Date('2030-01-10T00:00:00Z') });
    const expiredTrust = { trustedRootCa: trustedRootFromPem(expiredLeaf.root.pem), at: TEST_TIME };
    await expectRefusal(() => platformIdOf(parseTdxQuote(buildTdxQuote(expiredLeaf).quote), expiredTrust), 'pck_chain', /leaf certificate is not valid at/);
    await expectRefusal(
      () => platformIdOf(parseTdxQuote(buildTdxQuote(pki, { omitPckChain: true }).quote), trust),
      'pck_chain',
      'the quote carries no PCK certificate chain',
    );
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
    expect(await source.collateralFor(quote, trust)).toEqual(collateral);
    now = new Date('2030-01-31T23:59:00Z');
    await source.collateralFor(quote, trust);
    expect(calls).toEqual([`https://pccs.example ${TEST_FMSPC} platform`]);
    now = new Date('2030-02-01T00:00:01Z');
    await source.collateralFor(quote, trust);
    expect(calls).toHaveLength(2);

    const otherPlatform = await createTestPki({ fmspc: '00906ED50000' });
    await source.collateralFor(parseTdxQuote(buildTdxQuote(otherPlatform).quote), { ...trust, trustedRootCa: trustedRootFromPem(otherPlatform.root.pem) });
    expect(calls[2]).toBe('https://pccs.example 00906ED50000 platform');
  });

  it('refetches after maxAge even if nextUpdate is later', async () => {
    let now = TEST_TIME;
    const { calls, fetcher } = counting(async () => collateral);
    const source = new PccsCollateralSource({ baseUrl: 'https://pccs.example', fetcher, now: () => now, maxAgeMs: 60_000 });
    await source.collateralFor(quote, trust);
    now = new Date(TEST_TIME.getTime() + 59_000);
    await source.collateralFor(quote, trust);
    now = new Date(TEST_TIME.getTime() + 61_000);
    await source.collateralFor(quote, trust);
    expect(calls).toHaveLength(2);
  });

  it('shares one fetch between concurrent requests and remembers a failure for failureTtlMs', async () => {
    let now = TEST_TIME;
    let fail = true;
    const { calls, fetcher } = counting(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (fail) throw new Error('secret-looking upstream text');
      return collateral;
    });
    const source = new PccsCollateralSource({ baseUrl: 'https://pccs.example', fetcher, now: () => now, failureTtlMs: 45_000 });
    const failures = await Promise.allSettled([source.collateralFor(quote, trust), source.collateralFor(quote, trust)]);
    expect(calls).toHaveLength(1);
    for (const failure of failures) {
      expect(failure.status).toBe('rejected');
      const error = (failure as PromiseRejectedResult).reason;
      expect(error.code).toBe('ATTESTATION_UNAVAILABLE');
      expect(error.message).toBe(`TDX collateral for ${TEST_FMSPC}/platform could not be fetched from https://pccs.example`);
    }
    fail = false;
    // Within the failure TTL the PCCS is not asked again, however many quotes arrive.
    now = new Date(TEST_TIME.getTime() + 44_000);
    for (let i = 0; i < 20; i++) await expect(source.collateralFor(quote, trust)).rejects.toThrow('could not be fetched');
    expect(calls).toHaveLength(1);
    now = new Date(TEST_TIME.getTime() + 46_000);
    expect(await source.collateralFor(quote, trust)).toEqual(collateral);
    expect(calls).toHaveLength(2);
  });

  it('keeps at most maxEntries platforms, dropping expired entries first, then the oldest', async () => {
    let now = TEST_TIME;
    // Platform A1's collateral is served (cached until maxAge); every other platform's fetch fails.
    const calls: string[] = [];
    const fetcher: CollateralFetcher = async (request) => {
      calls.push(request.fmspc);
      if (request.fmspc === '00A0000000A1') return collateral;
      throw new Error('down');
    };
    const [a, b, c] = await Promise.all(['00A0000000A1', '00A0000000A2', '00A0000000A3'].map((fmspc) => createTestPki({ fmspc })));
    const quotes = new Map([a!, b!, c!].map((p) => [p, parseTdxQuote(buildTdxQuote(p).quote)]));
    const bounded = () => new PccsCollateralSource({ baseUrl: 'https://pccs.example', fetcher, now: () => now, failureTtlMs: 30_000, maxEntries: 2 });
    let source = bounded();
    const ask = (p: TestPki) => source.collateralFor(quotes.get(p)!, { trustedRootCa: trustedRootFromPem(p.root.pem), at: TEST_TIME }).catch(() => undefined);

    await ask(b!);
    await ask(c!);
    await ask(b!); // remembered
    expect(calls).toEqual(['00A0000000A2', '00A0000000A3']);
    await ask(a!); // full, nothing expired: the oldest (b) gives way
    await ask(c!); // still remembered
    expect(calls).toHaveLength(3);
    await ask(b!);
    expect(calls).toEqual(['00A0000000A2', '00A0000000A3', '00A0000000A1', '00A0000000A2']);

    // The oldest entry is A1's collateral (an hour); B's failure, younger, expires after 30 s.
    calls.length = 0;
    source = bounded();
    await ask(a!);
    await ask(b!);
    now = new Date(TEST_TIME.getTime() + 31_000);
    await ask(c!); // full: the expired failure gives way, not the older live collateral
    await ask(a!);
    expect(calls).toEqual(['00A0000000A1', '00A0000000A2', '00A0000000A3']);
  });

  it('refuses an http base URL unless allowHttp, and anything but http(s)', async () => {
    await expectKmsError(() => new PccsCollateralSource({ baseUrl: 'http://pccs.example:8081' }), 'CONFIG', 'TDX collateral: PCCS base URL must be https');
    expect(new PccsCollateralSource({ baseUrl: 'http://pccs.example:8081', allowHttp: true })).toBeInstanceOf(PccsCollateralSource);
    await expectKmsError(
      () => new PccsCollateralSource({ baseUrl: 'ftp://pccs', allowHttp: true }),
      'CONFIG',
      'TDX collateral: PCCS base URL must be https or http',
    );
    await expectKmsError(() => new PccsCollateralSource({ baseUrl: 'not a url' }), 'CONFIG', 'TDX collateral: PCCS base URL is not a URL');
  });
});

describe('PCCS v4 endpoints over real HTTP(S)', () => {
  const verifyAt = (fetched: TdxCollateral) => {
    const rawQuote = buildTdxQuote(pki).quote;
    return verifyTdxQuoteDcap(rawQuote, parseTdxQuote(rawQuote), fetched, { at: TEST_TIME, trustedRootCa: trustedRootFromPem(pki.root.pem) });
  };
  /** Every test names the root CA CRL location, so a fallback never leaves this machine. */
  const sourceFor = (pccs: { url: string; tlsCa: string | undefined }, options: Partial<PccsCollateralSourceOptions> = {}) =>
    new PccsCollateralSource({
      baseUrl: pccs.url,
      rootCaCrlUrl: `${pccs.url}/IntelSGXRootCA.der`,
      now: () => TEST_TIME,
      ...(pccs.tlsCa === undefined ? {} : { tlsCa: pccs.tlsCa }),
      ...options,
    });

  it('fetches collateral that verifies over https, asking for the PCK CA and FMSPC of the quote', async () => {
    const pccs = await startFakePccs(collateral, { spacedJson: true, https: true });
    try {
      const fetched = await fetchPccsCollateral({ baseUrl: `${pccs.url}/sgx/certification/v4/`, fmspc: TEST_FMSPC, ca: 'platform', tlsCa: pccs.tlsCa! });
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

  it('sends nothing to an https PCCS whose certificate the configured CA does not vouch for', async () => {
    const pccs = await startFakePccs(collateral, { https: true });
    const other = await startFakePccs(collateral, { https: true });
    try {
      // The system's CAs do not know the test certificate; another certificate is not this one.
      for (const tlsCa of [undefined, other.tlsCa]) {
        const error = await expectKmsError(
          () => sourceFor({ url: pccs.url, tlsCa }).collateralFor(quote, trust),
          'ATTESTATION_UNAVAILABLE',
          `TDX collateral for ${TEST_FMSPC}/platform could not be fetched from ${pccs.url}`,
        );
        expect(String((error.cause as Error).message)).toMatch(/request failed/);
      }
      expect(pccs.requests).toEqual([]);
    } finally {
      await pccs.close();
      await other.close();
    }
  });

  it('refuses http unless allowed, before any request', async () => {
    const pccs = await startFakePccs(collateral);
    try {
      await expect(fetchPccsCollateral({ baseUrl: pccs.url, fmspc: TEST_FMSPC, ca: 'platform' })).rejects.toThrow(/URL must be https/);
      // A root CA CRL location over http is refused as well, even from an https service.
      const tls = await startFakePccs(collateral, { https: true, withoutRootCaCrlEndpoint: true });
      try {
        await expect(
          fetchPccsCollateral({ baseUrl: tls.url, fmspc: TEST_FMSPC, ca: 'platform', tlsCa: tls.tlsCa!, rootCaCrlUrl: `${pccs.url}/IntelSGXRootCA.der` }),
        ).rejects.toThrow('root CA CRL URL must be https');
      } finally {
        await tls.close();
      }
      expect(pccs.requests).toEqual([]);
      const fetched = await fetchPccsCollateral({ baseUrl: pccs.url, fmspc: TEST_FMSPC, ca: 'platform', allowHttp: true });
      expect(fetched).toEqual(collateral);
    } finally {
      await pccs.close();
    }
  });

  it('takes the root CA CRL from its distribution point when the service has no rootcacrl endpoint, trusting its own CA there', async () => {
    const pccs = await startFakePccs(collateral, { withoutRootCaCrlEndpoint: true, https: true });
    const distribution = await startFakePccs(collateral, { https: true });
    try {
      const request = {
        baseUrl: pccs.url,
        fmspc: TEST_FMSPC,
        ca: 'platform' as const,
        rootCaCrlUrl: `${distribution.url}/IntelSGXRootCA.der`,
        tlsCa: pccs.tlsCa!,
      };
      // The PCCS's CA does not vouch for the distribution point (Intel's is public: the bundled roots do).
      await expect(fetchPccsCollateral(request)).rejects.toThrow('root CA CRL request failed');
      expect(distribution.requests).toEqual([]);
      const fetched = await fetchPccsCollateral({ ...request, rootCaCrlTlsCa: distribution.tlsCa! });
      expect(fetched.root_ca_crl).toBe(collateral.root_ca_crl);
      expect(distribution.requests).toEqual(['/IntelSGXRootCA.der']);
    } finally {
      await pccs.close();
      await distribution.close();
    }
  });

  it('refuses an empty or malformed TLS CA before any request: Node would read it as its default store', async () => {
    const pccs = await startFakePccs(collateral, { https: true });
    try {
      for (const tlsCa of ['', ' ', 'not a certificate', `  ${pccs.tlsCa!}`]) {
        await expect(fetchPccsCollateral({ baseUrl: pccs.url, fmspc: TEST_FMSPC, ca: 'platform', tlsCa }), JSON.stringify(tlsCa)).rejects.toThrow(
          /a TLS CA must be PEM certificates/,
        );
        await expectKmsError(() => sourceFor({ url: pccs.url, tlsCa }), 'CONFIG', /the PCCS's CA must be PEM certificates/);
      }
      expect(pccs.requests).toEqual([]);
    } finally {
      await pccs.close();
    }
  });

  it('serves verifiers through PccsCollateralSource with one fetch per platform', async () => {
    const pccs = await startFakePccs(collateral, { https: true });
    try {
      const source = sourceFor(pccs);
      expect(verifyAt(await source.collateralFor(quote, trust)).tcbStatus).toBe('UpToDate');
      await source.collateralFor(quote, trust);
      expect(pccs.requests).toHaveLength(4);
    } finally {
      await pccs.close();
    }
  });

  it('asks the PCCS nothing for a quote whose PCK chain does not lead to the trusted root', async () => {
    const pccs = await startFakePccs(collateral, { https: true });
    try {
      const source = sourceFor(pccs);
      const forged = buildTdxQuote(impostor).quote;
      for (let i = 0; i < 5; i++) {
        await expectRefusal(() => verifyTdxQuote(forged, source, { at: TEST_TIME, trustedRootCa: trust.trustedRootCa }), 'pck_chain');
      }
      expect(pccs.requests).toEqual([]);
      // The genuine platform is served as before.
      expect((await verifyTdxQuote(buildTdxQuote(pki).quote, source, trust)).dcap.tcbStatus).toBe('UpToDate');
      expect(pccs.requests.length).toBeGreaterThan(0);
    } finally {
      await pccs.close();
    }
  });

  it('remembers a failing PCCS: a flood of quotes makes one round of requests per failure TTL', async () => {
    const failing = await startFakePccs(collateral, { failWith: 500, https: true });
    try {
      let now = TEST_TIME;
      const source = sourceFor(failing, { now: () => now, failureTtlMs: 30_000 });
      const flood = await Promise.allSettled(Array.from({ length: 50 }, () => source.collateralFor(quote, trust)));
      expect(flood.every((result) => result.status === 'rejected')).toBe(true);
      // Wait for the requests of the one fetch that were still in flight when it failed.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const oneRound = failing.requests.length;
      expect(oneRound).toBeGreaterThanOrEqual(1);
      expect(oneRound).toBeLessThanOrEqual(5);
      for (let i = 0; i < 50; i++) await source.collateralFor(quote, trust).catch(() => undefined);
      expect(failing.requests).toHaveLength(oneRound);
      now = new Date(TEST_TIME.getTime() + 30_001);
      await source.collateralFor(quote, trust).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(failing.requests.length).toBeGreaterThan(oneRound);
    } finally {
      await failing.close();
    }
  });

  it('reports HTTP errors and timeouts as ATTESTATION_UNAVAILABLE (a 503) without the upstream text', async () => {
    const failing = await startFakePccs(collateral, { failWith: 500, https: true });
    const hanging = await startFakePccs(collateral, { hang: true, https: true });
    try {
      const error = await expectKmsError(
        () => sourceFor(failing).collateralFor(quote, trust),
        'ATTESTATION_UNAVAILABLE',
        `TDX collateral for ${TEST_FMSPC}/platform could not be fetched from ${failing.url}`,
      );
      expect(String((error.cause as Error).message)).toMatch(/answered HTTP 500/);
      expect(error.message).not.toContain('internal details');
      await expectKmsError(() => sourceFor(hanging, { timeoutMs: 200 }).collateralFor(quote, trust), 'ATTESTATION_UNAVAILABLE', /could not be fetched/);
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
