/**
 * The TDX Verifier the sealing service plugs in: Trustee-shaped evidence in, verified claims out,
 * or a FORBIDDEN refusal naming the claim that failed. Order: quote structure, DCAP (is this a
 * genuine, current TD?), then the policy (is it the right TD for this secret, bound to this
 * session?).
 */
import type { X509Certificate } from 'node:crypto';
import type { InitDataRequirement } from '../../../shared/attestation/init-data.js';
import type { VerifiedClaims, Verifier } from '../../../shared/attestation/types.js';
import type { CollateralSource } from './collateral.js';
import { decodeTdxEvidence } from '../../../shared/attestation/tdx/evidence.js';
import { appraiseTdx, refuse, type TdxPolicy } from './policy.js';
import {
  parseQuoteHeader,
  parseTdxQuote,
  summarizeTdxQuote,
  teeTypeHex,
  teeTypeName,
  TEE_TYPE_TDX,
  type TdxQuote,
  type TdxQuoteSummary,
} from '../../../shared/attestation/tdx/quote.js';
import { trustedRootFromPem, verifyTdxQuoteDcap, type DcapResult } from './verify.js';

export interface TdxVerifierOptions {
  /** Default policy, used by verify(); verifyWithPolicy() takes one per released secret. */
  readonly policy: TdxPolicy;
  readonly collateral: CollateralSource;
  /** Trust this root instead of the pinned Intel SGX Root CA (tests, private DCAP PKIs). */
  readonly trustedRootCaPem?: string;
  /** Evaluation time for collateral and certificates; default the wall clock. */
  readonly now?: () => Date;
}

/** Refuses anything but a TDX quote (e.g. an SGX quote replayed as TDX evidence). */
export function parseTdxQuoteOrRefuse(rawQuote: Uint8Array): TdxQuote {
  const header = parseQuoteHeader(rawQuote);
  if (header.teeType !== TEE_TYPE_TDX) {
    refuse('tee_type', `not a TDX quote (tee_type ${teeTypeHex(header.teeType)}, ${teeTypeName(header.teeType)})`);
  }
  return parseTdxQuote(rawQuote);
}

export interface TdxQuoteVerification {
  readonly quote: TdxQuote;
  readonly summary: TdxQuoteSummary;
  readonly dcap: DcapResult;
}

/** Parse + DCAP, without any policy: shared by the verifier and the operator CLI. */
export async function verifyTdxQuote(
  rawQuote: Uint8Array,
  source: CollateralSource,
  options: { readonly at: Date; readonly trustedRootCa?: X509Certificate },
): Promise<TdxQuoteVerification> {
  const quote = parseTdxQuoteOrRefuse(rawQuote);
  const collateral = await source.collateralFor(quote);
  const dcap = verifyTdxQuoteDcap(rawQuote, quote, collateral, options);
  return { quote, summary: summarizeTdxQuote(quote), dcap };
}

export class TdxVerifier implements Verifier {
  readonly tee = 'tdx' as const;
  /** The default policy's init-data demands: applied in kbsAttest, where the init-data is (sealer/init-data.ts). */
  readonly initData: InitDataRequirement | undefined;
  private readonly policy: TdxPolicy;
  private readonly collateral: CollateralSource;
  private readonly trustedRootCa: X509Certificate | undefined;
  private readonly now: () => Date;

  constructor(options: TdxVerifierOptions) {
    this.policy = options.policy;
    this.initData = options.policy.initData;
    this.collateral = options.collateral;
    this.trustedRootCa = options.trustedRootCaPem === undefined ? undefined : trustedRootFromPem(options.trustedRootCaPem);
    this.now = options.now ?? (() => new Date());
  }

  verify(evidence: unknown, expectedReportData: Uint8Array): Promise<VerifiedClaims> {
    return this.verifyWithPolicy(evidence, expectedReportData, this.policy);
  }

  async verifyWithPolicy(evidence: unknown, expectedReportData: Uint8Array, policy: TdxPolicy): Promise<VerifiedClaims> {
    const decoded = decodeTdxEvidence(evidence);
    const { quote, summary, dcap } = await verifyTdxQuote(decoded.quote, this.collateral, {
      at: this.now(),
      ...(this.trustedRootCa ? { trustedRootCa: this.trustedRootCa } : {}),
    });
    appraiseTdx(
      {
        mrTd: summary.mrTd,
        rtmr: summary.rtmr,
        mrConfigId: summary.mrConfigId,
        debug: summary.debug,
        reportData: quote.reportData,
        tcbStatus: dcap.tcbStatus,
        advisoryIds: dcap.advisoryIds,
      },
      policy,
      expectedReportData,
    );
    return {
      tee: 'tdx',
      reportData: quote.reportData,
      claims: {
        ...summary,
        tcbStatus: dcap.tcbStatus,
        advisoryIds: [...dcap.advisoryIds],
        // RTMRs are signed in the quote, so the policy needs no event log; the CCEL is only
        // carried along (it is not replayed against the RTMRs here).
        ccEventlogPresent: decoded.ccEventlog !== undefined,
      },
    };
  }
}
