import { describe, expect, it } from 'vitest';
import { isKmsError, KmsError } from '../../../../shared/errors.js';
import { isDebugTd, parseQuoteHeader, parseTdxQuote, summarizeTdxQuote, TEE_TYPE_SGX, TEE_TYPE_TDX } from '../../../../shared/attestation/tdx/quote.js';
import { buildTdxQuote, createTestPki, DEFAULT_TD, reportDataFrom, TD_ATTRIBUTES_DEBUG } from '../../../support/tdx-quote-builder.js';
import { FIXTURES_SKIP_NOTE, TDX_QUOTE_REPORT, fixtureBytes, fixturesPresent } from '../../../support/tdx-fixtures.js';

/** Runs `fn` and returns the KmsError it throws (failing the test on anything else). */
function kmsErrorOf(fn: () => unknown): KmsError {
  try {
    fn();
  } catch (error) {
    if (error instanceof KmsError) return error;
    throw new Error(`expected a KmsError, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected a KmsError, nothing was thrown');
}

const ZERO48 = '00'.repeat(48);

describe(`real quotes${FIXTURES_SKIP_NOTE}`, () => {
  it.skipIf(!fixturesPresent)('parses the v4 TDX fixture with known measurements', () => {
    const quote = parseTdxQuote(fixtureBytes('tdx_quote'));
    expect(quote.header).toMatchObject({ version: 4, attestationKeyType: 2, teeType: TEE_TYPE_TDX, qeVendorId: '939a7233f79c4ca9940a0db3957f0607' });
    expect(quote.body).toEqual({ type: 2, size: 584 });
    expect(quote.report).toEqual(TDX_QUOTE_REPORT);
    expect(Buffer.from(quote.reportData).toString('hex')).toBe(quote.report.reportData);
    expect(quote.signedBytes.length).toBe(48 + 584);
    expect(quote.signature.certificationDataType).toBe(6);
    expect(quote.signature.pckCertDataType).toBe(5);
    expect(quote.signature.pckCertChainPem).toHaveLength(3);
    expect(quote.signature.qeReport.isvProdId).toBe(2);
    expect(quote.signature.qeReport.isvSvn).toBe(6);
    expect(quote.signature.attestationKey).toHaveLength(64);
    expect(isDebugTd(quote.report)).toBe(false);
  });

  it.skipIf(!fixturesPresent)('parses the v5 fixture with a TD report 1.5 body', () => {
    const quote = parseTdxQuote(fixtureBytes('tdx_quote_outdated'));
    expect(quote.header.version).toBe(5);
    expect(quote.body).toEqual({ type: 3, size: 648 });
    expect(quote.signedBytes.length).toBe(48 + 6 + 648);
    expect(quote.report.mrTd).toBe('273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd');
    expect(quote.report.teeTcbSvn).toBe('07010300000000000000000000000000');
    expect(quote.report.xfam).toBe('e718060000000000');
    expect(quote.report.teeTcbSvn2).toBe('0d010300000000000000000000000000');
    expect(quote.report.mrServiceTd).toBe(ZERO48);
    expect(quote.report.reportData).toBe(`d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce47728${'00'.repeat(32)}`);
    expect(quote.trailingBytes).toBe(0);
  });

  it.skipIf(!fixturesPresent)('reads the SGX fixture header and refuses it as not TDX', () => {
    const raw = fixtureBytes('sgx_quote');
    expect(parseQuoteHeader(raw)).toMatchObject({ version: 3, teeType: TEE_TYPE_SGX });
    const error = kmsErrorOf(() => parseTdxQuote(raw));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toBe('not a TDX quote: tee_type 0x00000000 (sgx)');
  });
});

describe('synthetic quotes', async () => {
  const pki = await createTestPki();

  it('round-trips every TD report 1.0 field of a v4 quote, as lowercase hex', () => {
    const reportData = reportDataFrom('nonce-1');
    const { quote: raw } = buildTdxQuote(pki, { report: { reportData } });
    const quote = parseTdxQuote(raw);
    expect(quote.header.version).toBe(4);
    expect(quote.report).toEqual({
      ...DEFAULT_TD,
      reportData: Buffer.from(reportData).toString('hex'),
      teeTcbSvn2: undefined,
      mrServiceTd: undefined,
      rtmr: DEFAULT_TD.rtmr,
    });
    expect(quote.report.teeTcbSvn2).toBeUndefined();
    expect(quote.reportData).toEqual(reportData);
    expect(quote.trailingBytes).toBe(0);
    const summary = summarizeTdxQuote(quote);
    for (const value of Object.values(summary)) {
      if (typeof value === 'string' && value !== 'tdx') expect(value).toMatch(/^[0-9a-f]+$/);
    }
    expect(summary).toMatchObject({ tee: 'tdx', quoteVersion: 4, bodyType: 2, debug: false, mrTd: DEFAULT_TD.mrTd, rtmr: [...DEFAULT_TD.rtmr] });
  });

  it('parses v5 quotes with a TD report 1.0 body and with a 1.5 body', () => {
    const v5td10 = parseTdxQuote(buildTdxQuote(pki, { version: 5, bodyType: 2 }).quote);
    expect(v5td10.body).toEqual({ type: 2, size: 584 });
    expect(v5td10.report.mrTd).toBe(DEFAULT_TD.mrTd);
    expect(v5td10.report.mrServiceTd).toBeUndefined();
    const v5td15 = parseTdxQuote(buildTdxQuote(pki, { version: 5, bodyType: 3, report: { mrServiceTd: 'ab'.repeat(48) } }).quote);
    expect(v5td15.body).toEqual({ type: 3, size: 648 });
    expect(v5td15.report.mrServiceTd).toBe('ab'.repeat(48));
    expect(v5td15.report.teeTcbSvn2).toBe(DEFAULT_TD.teeTcbSvn2);
    expect(v5td15.signedBytes.length).toBe(48 + 6 + 648);
  });

  it('tolerates trailing bytes after the signature data', () => {
    const { quote: raw } = buildTdxQuote(pki, { trailing: Buffer.alloc(17, 0xee) });
    const quote = parseTdxQuote(raw);
    expect(quote.trailingBytes).toBe(17);
    expect(quote.report.mrTd).toBe(DEFAULT_TD.mrTd);
    expect(quote.signature.pckCertChainPem).toHaveLength(3);
  });

  it('reports DEBUG from TDATTRIBUTES bit 0', () => {
    const quote = parseTdxQuote(buildTdxQuote(pki, { report: { tdAttributes: TD_ATTRIBUTES_DEBUG } }).quote);
    expect(isDebugTd(quote.report)).toBe(true);
    expect(summarizeTdxQuote(quote).debug).toBe(true);
    expect(quote.report.tdAttributes).toBe('0100001000000000');
  });

  it('refuses every truncation with BAD_REQUEST naming where, never a RangeError', () => {
    const { quote: raw } = buildTdxQuote(pki, { version: 5 });
    const messages = new Set<string>();
    for (let length = 0; length < raw.length; length++) {
      const error = kmsErrorOf(() => parseTdxQuote(raw.subarray(0, length)));
      expect(error.code).toBe('BAD_REQUEST');
      messages.add(error.message.replace(/ at .*/, ''));
    }
    expect([...messages]).toEqual(['malformed quote: truncated']);
    expect(kmsErrorOf(() => parseTdxQuote(raw.subarray(0, 6))).message).toBe('malformed quote: truncated at header.tee_type');
    expect(kmsErrorOf(() => parseTdxQuote(raw.subarray(0, 200))).message).toBe('malformed quote: truncated at td_report.mr_td');
    expect(kmsErrorOf(() => parseTdxQuote(raw.subarray(0, raw.length - 1))).message).toBe('malformed quote: truncated at signature_data');
  });

  it('refuses lengths that point past their container', () => {
    const { quote: raw, layout } = buildTdxQuote(pki);
    const hugeSignatureData = Buffer.from(raw);
    hugeSignatureData.writeUInt32LE(0xffffffff, layout.quoteSignature - 4);
    expect(kmsErrorOf(() => parseTdxQuote(hugeSignatureData)).message).toBe('malformed quote: truncated at signature_data');

    const hugeQeAuthData = Buffer.from(raw);
    hugeQeAuthData.writeUInt16LE(0xffff, layout.qeReportSignature + 64);
    expect(kmsErrorOf(() => parseTdxQuote(hugeQeAuthData)).message).toBe('malformed quote certification data: truncated at qe_auth_data');

    const hugeCertData = Buffer.from(raw);
    hugeCertData.writeUInt32LE(0x7fffffff, layout.attestationKey + 64 + 2);
    expect(kmsErrorOf(() => parseTdxQuote(hugeCertData)).message).toBe('malformed quote signature data: truncated at signature.certification_data');
  });

  it('refuses unsupported versions, body types, body sizes and certification data types', () => {
    const { quote: v4 } = buildTdxQuote(pki);
    const v3 = Buffer.from(v4);
    v3.writeUInt16LE(3, 0);
    expect(kmsErrorOf(() => parseTdxQuote(v3)).message).toBe('unsupported quote version 3 (TDX quotes are v4 or v5)');

    const { quote: v5 } = buildTdxQuote(pki, { version: 5 });
    const sgxBody = Buffer.from(v5);
    sgxBody.writeUInt16LE(1, 48);
    expect(kmsErrorOf(() => parseTdxQuote(sgxBody)).message).toBe('unsupported quote: v5 body type 1 is not a TD report');
    const wrongSize = Buffer.from(v5);
    wrongSize.writeUInt32LE(584, 50);
    expect(kmsErrorOf(() => parseTdxQuote(wrongSize)).message).toBe('malformed quote: v5 body size 584, expected 648');

    const { quote, layout } = buildTdxQuote(pki);
    const certType5 = Buffer.from(quote);
    certType5.writeUInt16LE(5, layout.attestationKey + 64);
    const error = kmsErrorOf(() => parseTdxQuote(certType5));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toBe('unsupported quote: certification data type 5 (expected 6, QE report)');
  });

  it('refuses a quote whose header says another TEE', () => {
    const { quote } = buildTdxQuote(pki);
    const other = Buffer.from(quote);
    other.writeUInt32LE(0x42, 4);
    const error = kmsErrorOf(() => parseTdxQuote(other));
    expect(isKmsError(error, 'BAD_REQUEST')).toBe(true);
    expect(error.message).toBe('not a TDX quote: tee_type 0x00000042 (unknown)');
  });
});
