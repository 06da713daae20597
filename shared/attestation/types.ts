/**
 * Attestation plumbing shared by the functions (attesters) and the sealing service (verifiers).
 * One attester/verifier pair per TEE type; the KBS protocol (Trustee, version 0.4.0) carries the
 * evidence. `reportData` is always the 64-byte KBS binding:
 * SHA-384(JCS({"additional-evidence":"", "nonce": n, "tee-pubkey": jwk})) zero-padded to 64 bytes.
 */
import type { TdxPolicy } from '../../sealer/attestation/tdx/policy.js';
import type { InitDataRequirement } from './init-data.js';

export type TeeType = 'sample' | 'tdx';

export interface Attester {
  readonly tee: TeeType;
  /** Evidence in the JSON shape Trustee expects for this TEE, binding `reportData` (64 bytes). */
  getEvidence(reportData: Uint8Array): Promise<unknown>;
}

/** What a verifier established about an attested workload; the policy decides on these. */
export interface VerifiedClaims {
  readonly tee: TeeType;
  /** The 64-byte report_data found in the evidence (the verifier checks it equals the expected). */
  readonly reportData: Uint8Array;
  /** TEE-specific claims, flattened, measurements as lowercase hex (e.g. mrTd, rtmr, tcbStatus). */
  readonly claims: Record<string, unknown>;
}

/**
 * The workload identity in verified claims: its init-data digest (TDX: MRCONFIGID, which
 * Confidential Containers sets from the pod's init-data; sample: the evidence's init_data).
 */
export function workloadIdentity(verified: VerifiedClaims): string {
  const value = verified.tee === 'tdx' ? verified.claims.mrConfigId : verified.claims.initData;
  return typeof value === 'string' ? value.toLowerCase() : '0'.repeat(96);
}

export interface Verifier {
  readonly tee: TeeType;
  /** What this verifier's policy demands of the workload's init-data (checked once it is bound to the evidence). */
  readonly initData?: InitDataRequirement;
  /**
   * Workloads admitted by their agent policy (a TDX policy's agentPolicies) besides the identities
   * in mrConfigId: decided once the init-data is bound to the evidence (sealer/init-data.ts).
   */
  readonly admission?: {
    readonly agentPolicies?: readonly string[];
    readonly mrConfigId?: readonly string[];
    /** The whole policy: a function's policy for this service may admit no TD it refuses. */
    readonly reference?: TdxPolicy;
  };
  /**
   * Verifies `evidence` and that it binds `expectedReportData`. Throws KmsError('FORBIDDEN', …)
   * naming the claim that failed; never returns for evidence it does not accept.
   */
  verify(evidence: unknown, expectedReportData: Uint8Array): Promise<VerifiedClaims>;
}
