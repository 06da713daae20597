/**
 * The quoting enclave checks the DCAP library skips (qe-checks.ts), through verifyTdxQuoteDcap on
 * quotes signed correctly by the test PKI, so that only the rule under test can refuse them.
 */
import { describe, expect, it } from 'vitest';
import { parseCollateral } from '../../../../sealer/attestation/tdx/collateral.js';
import { INTEL_QE_VENDOR_ID } from '../../../../sealer/attestation/tdx/qe-checks.js';
import { trustedRootFromPem, verifyTdxQuoteDcap } from '../../../../sealer/attestation/tdx/verify.js';
import { parseTdxQuote } from '../../../../shared/attestation/tdx/quote.js';
import { buildCollateral, buildTdxQuote, createTestPki, TEST_TIME, type QuoteOptions } from '../../../support/tdx-quote-builder.js';
import { expectRefusal } from '../../../support/tdx-helpers.js';
import { fixtureBytes, fixturesPresent, FIXTURES_SKIP_NOTE } from '../../../support/tdx-fixtures.js';

describe('quoting enclave checks', async () => {
  const pki = await createTestPki();
  const collateral = parseCollateral(await buildCollateral(pki), 'test');
  const root = trustedRootFromPem(pki.root.pem);
  const dcap = (options: QuoteOptions = {}) => {
    const raw = buildTdxQuote(pki, options).quote;
    return verifyTdxQuoteDcap(raw, parseTdxQuote(raw), collateral, { at: TEST_TIME, trustedRootCa: root });
  };

  it.skipIf(!fixturesPresent)(`pins Intel's QE vendor ID as a real quote carries it${FIXTURES_SKIP_NOTE}`, () => {
    expect(parseTdxQuote(fixtureBytes('tdx_quote')).header.qeVendorId).toBe(INTEL_QE_VENDOR_ID);
  });

  it("accepts a quote from Intel's QE whose report data ends in 32 zero bytes", () => {
    expect(dcap()).toMatchObject({ tcbStatus: 'UpToDate', advisoryIds: [] });
  });

  it('refuses a correctly signed quote naming another QE vendor', async () => {
    const other = '00112233445566778899aabbccddeeff';
    await expectRefusal(() => dcap({ qeVendorId: other }), 'qe_vendor_id', `the quote names QE vendor ${other}, not Intel's ${INTEL_QE_VENDOR_ID}`);
    // One bit away from Intel's is still another vendor.
    await expectRefusal(() => dcap({ qeVendorId: '939a7233f79c4ca9940a0db3957f0606' }), 'qe_vendor_id');
  });

  it('refuses a PCK-signed QE report whose report data upper half is not zero', async () => {
    const upper = Buffer.alloc(32);
    upper[31] = 1;
    await expectRefusal(
      () => dcap({ qeReportDataUpperHalf: upper }),
      'qe_report_binding',
      'the QE report data is SHA-256(attestation key || QE auth data) but its upper 32 bytes are not zero',
    );
    await expectRefusal(() => dcap({ qeReportDataUpperHalf: Buffer.alloc(32, 0xff) }), 'qe_report_binding');
  });
});
