/**
 * Workload binding by init-data in the KBS attest step (docs/sealer-protocol.md, "Workload binding
 * by init-data"). The host picks the init-data a request carries, so it counts only once its digest
 * equals the identity of evidence the verifier accepted (TDX: MRCONFIGID, which only the host could
 * have set at TD creation and which the quote signs); then the policy may look at its content, and
 * the token records it, as Trustee's init_data_claims.
 */
import { timingSafeEqual } from 'node:crypto';
import { initDataClaims, initDataFromKbs, type InitData } from '../shared/attestation/init-data.js';
import { workloadIdentity, type VerifiedClaims, type Verifier } from '../shared/attestation/types.js';
import { KmsError } from '../shared/errors.js';
import { checkAgentPolicy, checkInitData, refuse, trustingFunction } from './attestation/tdx/policy.js';
import { kbsError } from './problems.js';

/**
 * The `init-data` member of a KBS Attestation message, parsed before any evidence is looked at: a
 * malformed or unsupported one is a KBS AttestationError naming init-data, and no token is issued.
 */
export function attestedInitData(attestation: unknown): InitData | undefined {
  const member = typeof attestation === 'object' && attestation !== null ? (attestation as Record<string, unknown>)['init-data'] : undefined;
  try {
    return initDataFromKbs(member);
  } catch (error) {
    if (error instanceof KmsError) throw kbsError.attestation(error.message);
    throw error;
  }
}

/** What a token records of verified init-data. */
export interface AppraisedInitData {
  /** init_data_claims: undefined when there was no init-data. */
  readonly claims?: Record<string, unknown>;
  /** The agent policy of a function's init-data that trusts this service (trustingFunction), for admin grants. */
  readonly agentPolicy?: string;
}

/**
 * After the evidence is verified: the init-data (if any) must be the one the evidence names, and
 * must meet the verifier's policy. Throws refuse('init_data', …). `self` is this service's own
 * identity, when its policies are measured (agent policies apply only then).
 */
export function appraiseInitData(
  initData: InitData | undefined,
  verified: VerifiedClaims,
  verifier: Pick<Verifier, 'initData' | 'admission'>,
  self?: string,
): AppraisedInitData {
  const identity = workloadIdentity(verified);
  if (initData !== undefined) {
    const same = identity.length === initData.digest.length && timingSafeEqual(Buffer.from(identity), Buffer.from(initData.digest));
    if (!same) {
      const field = verified.tee === 'tdx' ? 'MRCONFIGID' : 'init_data';
      refuse('init_data', `the init-data digest ${initData.digest} (${initData.algorithm}) is not the evidence's ${field} ${identity}`);
    }
  }
  checkInitData(initData, verifier.initData);
  if (verifier.admission !== undefined) checkAgentPolicy(initData, verifier.admission, identity, self);
  if (initData === undefined) return {};
  const found = trustingFunction(initData.data, self, verifier.admission?.reference);
  return { claims: initDataClaims(initData), ...('agentPolicy' in found && { agentPolicy: found.agentPolicy }) };
}
