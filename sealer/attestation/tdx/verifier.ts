/**
 * The TDX Verifier the sealing service plugs in: Trustee-shaped evidence in, verified claims out,
 * or a FORBIDDEN refusal naming the claim that failed. Order: quote structure, DCAP (is this a
 * genuine, current TD?), the event log if any (do its events account for the signed RTMRs?), then
 * the policy (is it the right TD for this secret, bound to this session?).
 */
import type { X509Certificate } from 'node:crypto';
import type { InitDataRequirement } from '../../../shared/attestation/init-data.js';
import type { VerifiedClaims, Verifier } from '../../../shared/attestation/types.js';
import type { CollateralSource } from './collateral.js';
import { decodeTdxEvidence } from '../../../shared/attestation/tdx/evidence.js';
import { parseCcelEventLog, replayRtmrs, RTMR_COUNT } from '../../../shared/attestation/tdx/event-log.js';
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
import { intelSgxRootCa, trustedRootFromPem, verifyTdxQuoteDcap, type DcapResult } from './verify.js';

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
  // The PCK chain must verify before its FMSPC selects (and perhaps fetches) collateral.
  const collateral = await source.collateralFor(quote, { trustedRootCa: options.trustedRootCa ?? intelSgxRootCa(), at: options.at });
  const dcap = verifyTdxQuoteDcap(rawQuote, quote, collateral, options);
  return { quote, summary: summarizeTdxQuote(quote), dcap };
}

/** What replaying the CCEL established: the events, and the RTMRs they were checked against. */
export interface VerifiedEventLog {
  readonly events: number;
  /** RTMR indexes (0-3) whose replay equals the quote's value. */
  readonly rtmrs: readonly number[];
  /** SHA-384 digests extended into each RTMR, per RTMR; empty for an RTMR that was not compared. */
  readonly digests: readonly (readonly string[])[];
}

/**
 * Replays the CCEL and refuses ('event_log') unless its events produce the quote's RTMRs, so every
 * event it lists is one the TD measured. RTMR0-2 must always match. RTMR3 must match when the log
 * has RTMR3 events (the attestation agent appends those it extends at run time). A log without
 * any says nothing about RTMR3, so RTMR3 is then not compared: the firmware's CCEL alone (as the
 * configfs-tsm attester sends it) stays valid when something extended RTMR3 without logging it.
 * Trustee compares all four and refuses that case; either way no unverified event is believed.
 */
export function checkEventLog(ccel: Uint8Array, quoteRtmr: readonly string[]): VerifiedEventLog {
  const parsed = parseCcelEventLog(ccel);
  if (!parsed.ok) refuse('event_log', `malformed event log: ${parsed.reason}`);
  const replay = replayRtmrs(parsed.log);
  const rtmrs: number[] = [];
  for (let i = 0; i < RTMR_COUNT; i++) {
    if (i === 3 && replay.digests[3].length === 0) continue;
    if (replay.rtmr[i] !== quoteRtmr[i]) {
      // Not secret: both values are in the evidence; showing them helps find the odd event.
      refuse('event_log', `rtmr${i}: the event log replays to ${replay.rtmr[i]}, the quote has ${quoteRtmr[i] ?? 'none'}`);
    }
    rtmrs.push(i);
  }
  return { events: parsed.log.events.length, rtmrs, digests: replay.digests.map((list, i) => (rtmrs.includes(i) ? list : [])) };
}

export class TdxVerifier implements Verifier {
  readonly tee = 'tdx' as const;
  /** The default policy's init-data demands: applied in kbsAttest, where the init-data is (sealer/init-data.ts). */
  readonly initData: InitDataRequirement | undefined;
  readonly admission: { readonly agentPolicies?: readonly string[]; readonly mrConfigId?: readonly string[]; readonly reference: TdxPolicy };
  private readonly policy: TdxPolicy;
  private readonly collateral: CollateralSource;
  private readonly trustedRootCa: X509Certificate | undefined;
  private readonly now: () => Date;

  constructor(options: TdxVerifierOptions) {
    this.policy = options.policy;
    this.initData = options.policy.initData;
    this.admission = {
      ...(options.policy.agentPolicies && { agentPolicies: options.policy.agentPolicies }),
      ...(options.policy.mrConfigId && { mrConfigId: options.policy.mrConfigId }),
      reference: options.policy,
    };
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
    const eventLog = decoded.ccEventlog === undefined ? undefined : checkEventLog(decoded.ccEventlog, summary.rtmr);
    appraiseTdx(
      {
        mrTd: summary.mrTd,
        rtmr: summary.rtmr,
        mrConfigId: summary.mrConfigId,
        debug: summary.debug,
        reportData: quote.reportData,
        tcbStatus: dcap.tcbStatus,
        advisoryIds: dcap.advisoryIds,
        tcbEvaluationDataNumber: dcap.tcbEvaluationDataNumber,
        ...(eventLog === undefined ? {} : { eventLog }),
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
        tdxModule: { ...dcap.tdxModule },
        tcbEvaluationDataNumber: { ...dcap.tcbEvaluationDataNumber },
        ccEventlogPresent: decoded.ccEventlog !== undefined,
        // The CCEL was replayed against the quote's RTMRs (checkEventLog) when present.
        eventLog: eventLog === undefined ? { replayed: false } : { replayed: true, events: eventLog.events, rtmrs: [...eventLog.rtmrs] },
      },
    };
  }
}
