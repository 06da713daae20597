/**
 * Quoting enclave checks that @phala/dcap-qvl 0.3.9 skips:
 * - the quote header's QE vendor ID must be Intel's (as Intel's QVL and Trustee's TDX policy
 *   require): the QE identity and TCB info we verify against describe Intel's quoting enclave only;
 * - the QE report's 64-byte report data must be SHA-256(attestation key || QE auth data) followed
 *   by 32 zero bytes. The library compares only the first 32 bytes, leaving 32 bytes of a
 *   PCK-signed report that nothing constrains.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TdxQuote } from '../../../shared/attestation/tdx/quote.js';
import { refuse } from './policy.js';

/** Intel's QE vendor ID (939A7233-F79C-4CA9-940A-0DB3957F0607), lowercase hex as quote.ts prints it. */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';

export function checkQeVendorId(quote: TdxQuote): void {
  if (quote.header.qeVendorId !== INTEL_QE_VENDOR_ID) {
    refuse('qe_vendor_id', `the quote names QE vendor ${quote.header.qeVendorId}, not Intel's ${INTEL_QE_VENDOR_ID}`);
  }
}

export function checkQeReportBinding(quote: TdxQuote): void {
  const { attestationKey, qeAuthData, qeReport } = quote.signature;
  const reportData = Buffer.from(qeReport.reportData, 'hex');
  const binding = createHash('sha256').update(attestationKey).update(qeAuthData).digest();
  if (reportData.length !== 64 || !timingSafeEqual(reportData.subarray(0, 32), binding)) {
    refuse('qe_report_binding', 'the QE report does not bind the attestation key');
  }
  if (!timingSafeEqual(reportData.subarray(32), Buffer.alloc(32))) {
    refuse('qe_report_binding', 'the QE report data is SHA-256(attestation key || QE auth data) but its upper 32 bytes are not zero');
  }
}

/** Both checks; verify.ts calls this before the library's DCAP verification. */
export function checkQuotingEnclave(quote: TdxQuote): void {
  checkQeVendorId(quote);
  checkQeReportBinding(quote);
}
