import { timingSafeEqual } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { Attester, VerifiedClaims, Verifier } from './types.js';

/**
 * Trustee's "sample" TEE: no hardware, no signature, so it proves nothing. It exists to exercise
 * the protocol on a laptop; the sealing service accepts it only in insecure development mode.
 *
 * Evidence shape (guest-components attester/src/sample/mod.rs, trustee deps/verifier/src/sample):
 * `{"svn": "<string>", "report_data": "<standard base64 of the report data>"}`.
 */
export interface SampleEvidence {
  readonly svn: string;
  readonly report_data: string;
  /** The workload identity it claims (what MRCONFIGID is for TDX): 96 lowercase hex digits. */
  readonly init_data?: string;
}

/** A workload identity: an init-data digest, 48 bytes as 96 lowercase hex digits (docs/sealer-protocol.md). */
export const IDENTITY_PATTERN = /^[0-9a-f]{96}$/;
export const NO_INIT_DATA = '0'.repeat(96);

const REPORT_DATA_BYTES = 64;
const SVN_MAX_LENGTH = 64;
/** A SHA-384 digest: what Trustee's own KBS client hands its sample attester, unpadded. */
const UNPADDED_DIGEST_BYTES = 48;

export class SampleAttester implements Attester {
  readonly tee = 'sample' as const;

  constructor(
    private readonly svn = '1',
    /** The identity to claim (KMS_SAMPLE_INIT_DATA); none: all zeros, as a TD without init-data. */
    private readonly initData?: string,
  ) {
    if (initData !== undefined && !IDENTITY_PATTERN.test(initData)) throw new KmsError('CONFIG', 'sample init_data must be 96 lowercase hex digits');
  }

  async getEvidence(reportData: Uint8Array): Promise<SampleEvidence> {
    if (reportData.length !== REPORT_DATA_BYTES) throw new KmsError('INTERNAL', 'report data must be 64 bytes');
    return { svn: this.svn, report_data: Buffer.from(reportData).toString('base64'), ...(this.initData === undefined ? {} : { init_data: this.initData }) };
  }
}

export class SampleVerifier implements Verifier {
  readonly tee = 'sample' as const;

  /**
   * Accepts evidence whose report_data is the expected 64 bytes, or (as Trustee's own client sends
   * it) the 48-byte SHA-384 digest, which is compared zero-padded like Trustee's TDX verifier does.
   */
  async verify(evidence: unknown, expectedReportData: Uint8Array): Promise<VerifiedClaims> {
    if (typeof evidence !== 'object' || evidence === null || Array.isArray(evidence)) {
      throw new KmsError('FORBIDDEN', 'sample evidence must be a JSON object');
    }
    const { svn, report_data: reportDataB64, init_data: initData = NO_INIT_DATA } = evidence as Record<string, unknown>;
    // Bounded: it is copied into the token, which the sealer keeps for the token's lifetime.
    if (typeof svn !== 'string' || svn.length > SVN_MAX_LENGTH)
      throw new KmsError('FORBIDDEN', `sample evidence: svn must be a string of at most ${SVN_MAX_LENGTH} characters`);
    if (typeof reportDataB64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(reportDataB64)) {
      throw new KmsError('FORBIDDEN', 'sample evidence: report_data must be standard base64');
    }
    if (typeof initData !== 'string' || !IDENTITY_PATTERN.test(initData)) {
      throw new KmsError('FORBIDDEN', 'sample evidence: init_data must be 96 lowercase hex digits');
    }
    const raw = Buffer.from(reportDataB64, 'base64');
    if (raw.length !== REPORT_DATA_BYTES && raw.length !== UNPADDED_DIGEST_BYTES) {
      throw new KmsError('FORBIDDEN', 'sample evidence: report_data must be 64 bytes (or a 48-byte digest)');
    }
    const reportData = Buffer.alloc(REPORT_DATA_BYTES);
    reportData.set(raw);
    if (expectedReportData.length !== REPORT_DATA_BYTES || !timingSafeEqual(reportData, expectedReportData)) {
      throw new KmsError('FORBIDDEN', 'sample evidence: report_data does not bind this nonce and tee-pubkey');
    }
    return { tee: 'sample', reportData, claims: { svn, initData } };
  }
}
