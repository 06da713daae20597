/**
 * Reference-value policy for TDX evidence, applied after DCAP verification established the quote
 * is genuine: which images (MRTD, RTMR0-3, MRCONFIGID = the CoCo init-data hash, events of the
 * replayed CCEL) may receive a secret, that the TD is not debuggable, which TCB statuses are
 * acceptable, and the KBS report_data binding. Every refusal is KmsError('FORBIDDEN') whose
 * message names the claim, so operators can see why a pod was refused.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { AGENT_POLICY_ENTRY, FUNCTION_ENTRIES, TRUSTED_SEALER_ENTRY } from '../../../shared/attestation/function-entries.js';
import type { InitDataRequirement } from '../../../shared/attestation/init-data.js';
import { KmsError } from '../../../shared/errors.js';

/** Intel's TCB statuses; the two TDRelaunchAdvised ones come from TD report 1.5 (tcb.ts). */
export type TcbStatus =
  | 'UpToDate'
  | 'SWHardeningNeeded'
  | 'ConfigurationNeeded'
  | 'ConfigurationAndSWHardeningNeeded'
  | 'OutOfDate'
  | 'OutOfDateConfigurationNeeded'
  | 'TDRelaunchAdvised'
  | 'TDRelaunchAdvisedConfigurationNeeded'
  | 'Revoked';

export const TCB_STATUSES: readonly TcbStatus[] = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'TDRelaunchAdvised',
  'TDRelaunchAdvisedConfigurationNeeded',
  'Revoked',
];

export const DEFAULT_ALLOWED_TCB_STATUSES: readonly TcbStatus[] = ['UpToDate'];

/** Claim names used in refusals (Trustee's snake_case names where Trustee has one). */
export type TdxClaimName =
  | 'tee_type'
  | 'quote_version'
  | 'collateral'
  | 'crl'
  | 'pck_chain'
  | 'qe_report_signature'
  | 'qe_report_binding'
  | 'qe_vendor_id'
  | 'qe_identity'
  | 'quote_signature'
  | 'tcb_status'
  | 'tdx_module'
  | 'advisory_ids'
  | 'tcb_evaluation_data_number'
  | 'debug'
  | 'td_attributes'
  | 'mr_service_td'
  | 'mr_td'
  | 'rtmr_0'
  | 'rtmr_1'
  | 'rtmr_2'
  | 'rtmr_3'
  | 'event_log'
  | 'mr_config_id'
  | 'report_data'
  | 'additional_evidence'
  | 'init_data'
  | 'dcap';

/**
 * Throws the one refusal shape: FORBIDDEN, "attestation refused: <claim>: <detail>", with the
 * claim also in `details` for programmatic use. `detail` must be our own text (measurements,
 * statuses, dates), never a dependency's exception message: that goes in `cause` only.
 */
export function refuse(claim: TdxClaimName, detail: string, cause?: unknown): never {
  throw new KmsError('FORBIDDEN', `attestation refused: ${claim}: ${detail}`, {
    details: { claim },
    ...(cause === undefined ? {} : { cause }),
  });
}

export interface TdxPolicy {
  /** Allowed MRTD values (the TD's initial memory: firmware). Required: never "any image". */
  readonly mrTd: readonly string[];
  /** Allowed RTMR0/1/2/3 values; an absent list leaves that register unconstrained. */
  readonly rtmr0?: readonly string[];
  readonly rtmr1?: readonly string[];
  readonly rtmr2?: readonly string[];
  readonly rtmr3?: readonly string[];
  /** Events that must be in the replayed CCEL of that RTMR (e.g. one kernel among several allowed). */
  readonly eventDigests?: readonly EventDigest[];
  /** Allowed MRCONFIGID values (CoCo: the init-data digest, zero-padded to 48 bytes). */
  readonly mrConfigId?: readonly string[];
  /**
   * Admits, besides the identities in `mrConfigId`, a workload whose init-data is a function's
   * (only the entries FUNCTION_ENTRIES) with a `policy.rego` of one of these SHA-384 digests:
   * workloads named by what the host may do in them, not by their whole document.
   */
  readonly agentPolicies?: readonly string[];
  readonly allowedTcbStatuses: readonly TcbStatus[];
  /** Advisory IDs (e.g. INTEL-SA-01036) that refuse a TD whatever its status; default none. */
  readonly deniedAdvisoryIds: readonly string[];
  /** Lowest acceptable tcbEvaluationDataNumber of the TCB info and QE identity; default 0. */
  readonly minTcbEvaluationDataNumber: number;
  /** What the workload's init-data must hold (checked in kbsAttest, sealer/init-data.ts); absent: nothing. */
  readonly initData?: InitDataRequirement;
}

/** One required event: its SHA-384 digest (lowercase hex) in RTMR `rtmr` (0-3). */
export interface EventDigest {
  readonly rtmr: 0 | 1 | 2 | 3;
  readonly digest: string;
}

export interface TdxPolicyConfig {
  mrTd: string[];
  rtmr0?: string[];
  rtmr1?: string[];
  rtmr2?: string[];
  rtmr3?: string[];
  eventDigests?: { rtmr: number; digest: string }[];
  mrConfigId?: string[];
  agentPolicies?: string[];
  /** Default ['UpToDate']. */
  allowedTcbStatuses?: string[];
  /** Default []. */
  deniedAdvisoryIds?: string[];
  /** Default 0 (any). */
  minTcbEvaluationDataNumber?: number;
  /** {"required": true, "data"?: {"<entry name>": "<SHA-384 hex of its text>" or a list of them}} */
  initData?: { required: boolean; data?: Record<string, string | string[]> };
}

const MEASUREMENT = /^[0-9a-f]{96}$/;
const ADVISORY_ID = /^INTEL-[A-Z]+-\d+$/;

function advisoryList(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new KmsError('CONFIG', 'TDX policy: deniedAdvisoryIds must be a list of advisory IDs');
  return value.map((item, index) => {
    // Intel's IDs are uppercase; a typo must not silently deny nothing.
    if (typeof item !== 'string' || !ADVISORY_ID.test(item)) {
      throw new KmsError('CONFIG', `TDX policy: deniedAdvisoryIds[${index}] is not an advisory ID such as INTEL-SA-01036`);
    }
    return item;
  });
}

function evaluationDataNumber(value: unknown): number {
  if (value === undefined) return 0;
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    throw new KmsError('CONFIG', 'TDX policy: minTcbEvaluationDataNumber must be a non-negative integer');
  }
  return value as number;
}

const normalizeMeasurement = (item: unknown): string => (typeof item === 'string' ? item.trim().toLowerCase().replace(/^0x/, '') : '');

function measurementList(value: unknown, field: string, required: boolean): string[] | undefined {
  if (value === undefined && !required) return undefined;
  if (!Array.isArray(value) || value.length === 0) {
    // An empty list would refuse every TD: almost certainly a configuration mistake.
    throw new KmsError('CONFIG', `TDX policy: ${field} must be a non-empty list of 48-byte hex measurements`);
  }
  return value.map((item, index) => {
    const normalized = normalizeMeasurement(item);
    if (!MEASUREMENT.test(normalized)) {
      throw new KmsError('CONFIG', `TDX policy: ${field}[${index}] is not a 48-byte (96 hex digit) measurement`);
    }
    return normalized;
  });
}

function eventDigestList(value: unknown): EventDigest[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0) {
    throw new KmsError('CONFIG', 'TDX policy: eventDigests must be a non-empty list of {"rtmr": 0-3, "digest": 48-byte hex}');
  }
  return value.map((item: unknown, index) => {
    const at = `TDX policy: eventDigests[${index}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new KmsError('CONFIG', `${at} must be an object {"rtmr": 0-3, "digest": 48-byte hex}`);
    }
    const entry = item as Record<string, unknown>;
    // As for the policy itself: a misspelt key must not drop a constraint.
    const unknown = Object.keys(entry).find((key) => key !== 'rtmr' && key !== 'digest');
    if (unknown !== undefined) throw new KmsError('CONFIG', `${at}: unknown field ${unknown}`);
    const rtmr = entry['rtmr'];
    if (rtmr !== 0 && rtmr !== 1 && rtmr !== 2 && rtmr !== 3) throw new KmsError('CONFIG', `${at}.rtmr must be 0, 1, 2 or 3`);
    const digest = normalizeMeasurement(entry['digest']);
    if (!MEASUREMENT.test(digest)) throw new KmsError('CONFIG', `${at}.digest is not a 48-byte (96 hex digit) SHA-384 digest`);
    return { rtmr, digest };
  });
}

/**
 * `initData` of a policy: only the sealing service's policy for workloads may have it (their KBS
 * attestation carries init-data); elsewhere (the functions' or custodians' check of the sealing
 * service, whose own evidence carries none) it would be a constraint silently not applied.
 */
function initDataRequirement(value: unknown): InitDataRequirement {
  const shape = 'TDX policy: initData must be {"required": true, "data"?: {"<entry name>": "<SHA-384 hex of its text>" or a list of them}}';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KmsError('CONFIG', shape);
  const { required, data = {}, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0 || typeof required !== 'boolean' || typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new KmsError('CONFIG', shape);
  }
  const entries = Object.entries(data as Record<string, unknown>);
  // Entries to match are moot if evidence without init-data passes.
  if (!required && entries.length > 0) throw new KmsError('CONFIG', 'TDX policy: initData.data needs "required": true');
  const pinned = Object.create(null) as Record<string, string[]>; // a name such as __proto__ stays a name
  for (const [name, digests] of entries) {
    const list = Array.isArray(digests) ? digests : [digests];
    if (list.length === 0) throw new KmsError('CONFIG', `TDX policy: initData.data[${JSON.stringify(name)}] must not be an empty list`);
    pinned[name] = list.map((digest: unknown) => {
      const normalized = typeof digest === 'string' ? digest.trim().toLowerCase().replace(/^0x/, '') : '';
      if (!MEASUREMENT.test(normalized))
        throw new KmsError('CONFIG', `TDX policy: initData.data[${JSON.stringify(name)}] must be SHA-384 digests (96 hex digits)`);
      return normalized;
    });
  }
  return { required, data: pinned };
}

/**
 * Validates a policy from configuration (KmsError('CONFIG') naming the bad field). `initData` is
 * accepted only with `options.initData` (the sealing service's KMS_SEALER_TDX_POLICY_FILE).
 */
export function createTdxPolicy(config: unknown, options: { initData?: boolean } = {}): TdxPolicy {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new KmsError('CONFIG', 'TDX policy must be an object');
  }
  const c = config as Record<string, unknown>;
  const known = new Set([
    'mrTd',
    'rtmr0',
    'rtmr1',
    'rtmr2',
    'rtmr3',
    'eventDigests',
    'mrConfigId',
    'allowedTcbStatuses',
    'deniedAdvisoryIds',
    'minTcbEvaluationDataNumber',
    'initData',
    'agentPolicies',
  ]);
  for (const key of Object.keys(c)) {
    // A typo such as "mrtd" must not silently drop a constraint.
    if (!known.has(key)) throw new KmsError('CONFIG', `TDX policy: unknown field ${key}`);
  }
  const statuses = c['allowedTcbStatuses'] ?? [...DEFAULT_ALLOWED_TCB_STATUSES];
  if (!Array.isArray(statuses) || statuses.length === 0) {
    throw new KmsError('CONFIG', 'TDX policy: allowedTcbStatuses must be a non-empty list');
  }
  for (const status of statuses) {
    if (!TCB_STATUSES.includes(status as TcbStatus) || status === 'Revoked') {
      throw new KmsError('CONFIG', `TDX policy: allowedTcbStatuses has an unknown or unacceptable status ${String(status)}`);
    }
  }
  const policy: {
    -readonly [K in keyof TdxPolicy]: TdxPolicy[K];
  } = {
    mrTd: measurementList(c['mrTd'], 'mrTd', true)!,
    allowedTcbStatuses: statuses as TcbStatus[],
    deniedAdvisoryIds: advisoryList(c['deniedAdvisoryIds']),
    minTcbEvaluationDataNumber: evaluationDataNumber(c['minTcbEvaluationDataNumber']),
  };
  for (const field of ['rtmr0', 'rtmr1', 'rtmr2', 'rtmr3', 'mrConfigId'] as const) {
    const list = measurementList(c[field], field, false);
    if (list !== undefined) policy[field] = list;
  }
  const eventDigests = eventDigestList(c['eventDigests']);
  if (eventDigests !== undefined) policy.eventDigests = eventDigests;
  if (c['agentPolicies'] !== undefined) {
    if (options.initData !== true) {
      throw new KmsError('CONFIG', "TDX policy: agentPolicies applies only to the sealing service's policy for workloads (KMS_SEALER_TDX_POLICY_FILE)");
    }
    policy.agentPolicies = measurementList(c['agentPolicies'], 'agentPolicies', true)!;
  }
  if (c['initData'] !== undefined) {
    if (options.initData !== true) {
      throw new KmsError('CONFIG', "TDX policy: initData applies only to the sealing service's policy for workloads (KMS_SEALER_TDX_POLICY_FILE)");
    }
    policy.initData = initDataRequirement(c['initData']);
  }
  return policy;
}

/** What the policy looks at: the authenticated quote claims plus the DCAP outcome. */
export interface TdxAppraisalInput {
  readonly mrTd: string;
  readonly rtmr: readonly string[];
  readonly mrConfigId: string;
  readonly debug: boolean;
  readonly reportData: Uint8Array;
  readonly tcbStatus: TcbStatus;
  readonly advisoryIds: readonly string[];
  /** tcbEvaluationDataNumber of the TCB info and of the QE identity. */
  readonly tcbEvaluationDataNumber: { readonly tcbInfo: number; readonly qeIdentity: number };
  /**
   * The digests of the CCEL events that the verifier replayed and found to match the quote's
   * RTMRs, per RTMR; absent when the evidence has no event log.
   */
  readonly eventLog?: { readonly digests: readonly (readonly string[])[] };
}

export function checkReportDataBinding(actual: Uint8Array, expected: Uint8Array): void {
  if (expected.length !== 64) {
    // The KBS binding is always 64 bytes; anything else is a caller bug, not client input.
    throw new KmsError('INTERNAL', 'expected report_data must be 64 bytes');
  }
  if (actual.length !== 64 || !timingSafeEqual(actual, expected)) {
    refuse('report_data', 'the quote does not bind this session (report_data differs from the expected KBS binding)');
  }
}

/** Platform checks that hold for every secret: DEBUG off and an acceptable TCB status. */
export function checkPlatform(
  input: Pick<TdxAppraisalInput, 'debug' | 'tcbStatus' | 'advisoryIds'>,
  allowedTcbStatuses: readonly TcbStatus[] = DEFAULT_ALLOWED_TCB_STATUSES,
): void {
  if (input.debug) refuse('debug', 'the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory');
  if (!allowedTcbStatuses.includes(input.tcbStatus)) {
    const advisories = input.advisoryIds.length > 0 ? ` (advisories: ${input.advisoryIds.join(', ')})` : '';
    refuse('tcb_status', `${input.tcbStatus} is not allowed (allowed: ${allowedTcbStatuses.join(', ')})${advisories}`);
  }
}

/** Operator's TCB recency rules: no denied advisory, collateral at least as recent as required. */
export function checkTcbRecency(
  input: Pick<TdxAppraisalInput, 'advisoryIds' | 'tcbEvaluationDataNumber'>,
  policy: Pick<TdxPolicy, 'deniedAdvisoryIds' | 'minTcbEvaluationDataNumber'>,
): void {
  const denied = input.advisoryIds.filter((id) => policy.deniedAdvisoryIds.includes(id));
  if (denied.length > 0) refuse('advisory_ids', `the platform is affected by denied advisories: ${denied.join(', ')}`);
  const { tcbInfo, qeIdentity } = input.tcbEvaluationDataNumber;
  const oldest = Math.min(tcbInfo, qeIdentity);
  if (oldest < policy.minTcbEvaluationDataNumber) {
    refuse(
      'tcb_evaluation_data_number',
      `the collateral's tcbEvaluationDataNumber (TCB info ${tcbInfo}, QE identity ${qeIdentity}) is below the required ${policy.minTcbEvaluationDataNumber}`,
    );
  }
}

function checkAllowed(claim: TdxClaimName, value: string, allowed: readonly string[] | undefined): void {
  if (allowed !== undefined && !allowed.includes(value)) refuse(claim, `${value} is not an allowed value`);
}

/** The image measurements against the reference values. */
export function checkReferenceValues(input: Pick<TdxAppraisalInput, 'mrTd' | 'rtmr' | 'mrConfigId'>, policy: TdxPolicy): void {
  checkAllowed('mr_td', input.mrTd, policy.mrTd);
  // With agentPolicies, mrConfigId lists identities admitted besides: decided with the init-data (checkAgentPolicy).
  if (policy.agentPolicies === undefined) checkAllowed('mr_config_id', input.mrConfigId, policy.mrConfigId);
  checkAllowed('rtmr_0', input.rtmr[0] ?? '', policy.rtmr0);
  checkAllowed('rtmr_1', input.rtmr[1] ?? '', policy.rtmr1);
  checkAllowed('rtmr_2', input.rtmr[2] ?? '', policy.rtmr2);
  checkAllowed('rtmr_3', input.rtmr[3] ?? '', policy.rtmr3);
}

/** Each required event must be among the verified events of its RTMR. */
export function checkEventDigests(eventLog: TdxAppraisalInput['eventLog'], policy: TdxPolicy): void {
  if (policy.eventDigests === undefined) return;
  if (eventLog === undefined) refuse('event_log', 'the policy requires event digests, but the evidence carries no event log');
  for (const { rtmr, digest } of policy.eventDigests) {
    if (!(eventLog.digests[rtmr] ?? []).includes(digest)) refuse('event_log', `rtmr${rtmr}: the required event ${digest} is not in the event log`);
  }
}

/** The whole appraisal; returns only when every claim is acceptable. */
export function appraiseTdx(input: TdxAppraisalInput, policy: TdxPolicy, expectedReportData: Uint8Array): void {
  checkReportDataBinding(input.reportData, expectedReportData);
  checkPlatform(input, policy.allowedTcbStatuses);
  checkTcbRecency(input, policy);
  checkReferenceValues(input, policy);
  checkEventDigests(input.eventLog, policy);
}

/**
 * The agent policy of a tee-kms function's init-data that trusts this sealing service alone: the
 * SHA-384 of its `policy.rego`, when the document has exactly the entries FUNCTION_ENTRIES and its
 * policy for the sealer pins `mrConfigId` to `self` (this service's own MRCONFIGID) alone and, given
 * `reference` (this service's own policy for workloads, which its own TD meets), admits no TD that
 * `reference` would refuse. MRCONFIGID is what the host wrote at TD creation: it stands for this
 * service only in a guest measured as this service's is, so a function whose policy left the
 * kernel or the TCB open would trust a TD the host made with this MRCONFIGID, and could take
 * shares or requests sealed to this service's keys there. Otherwise, why the document is not one.
 */
export function trustingFunction(
  data: Readonly<Record<string, string>>,
  self: string | undefined,
  reference?: TdxPolicy,
): { agentPolicy: string } | { reason: string } {
  if (self === undefined) return { reason: "this sealing service's own identity is unknown (no KMS_SEALER_INIT_DATA_FILE)" };
  const stray = Object.keys(data).find((name) => !FUNCTION_ENTRIES.includes(name));
  if (stray !== undefined)
    return { reason: `entry ${JSON.stringify(stray.slice(0, 64))} is not one a function's init-data has (${FUNCTION_ENTRIES.join(', ')})` };
  const missing = FUNCTION_ENTRIES.find((name) => !Object.hasOwn(data, name));
  if (missing !== undefined) return { reason: `entry ${JSON.stringify(missing)} is missing from the init-data` };
  const its = `its policy for the sealing service (${TRUSTED_SEALER_ENTRY})`;
  let trusted: TdxPolicy;
  try {
    // Parsed as the function parses it (shared/sealer-client/trusted-sealer.ts), so both read the same values.
    trusted = createTdxPolicy(JSON.parse(data[TRUSTED_SEALER_ENTRY]!), { initData: false });
  } catch {
    return { reason: `${its} is not a TDX policy a function can apply` };
  }
  if (trusted.mrConfigId?.length !== 1 || trusted.mrConfigId[0] !== self) {
    return { reason: `${its} does not pin mrConfigId to this one's alone (${self}): it would trust another` };
  }
  const wider = reference === undefined ? undefined : widerThan(trusted, reference);
  if (wider !== undefined) return { reason: `${its} ${wider}: it would trust a TD this service's own policy refuses` };
  return { agentPolicy: createHash('sha384').update(data[AGENT_POLICY_ENTRY]!, 'utf8').digest('hex') };
}

/** How `policy` would admit a TD that `reference` refuses (mrConfigId aside); undefined when it would not. */
export function widerThan(policy: TdxPolicy, reference: TdxPolicy): string | undefined {
  for (const field of ['mrTd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3'] as const) {
    const own = reference[field];
    if (own === undefined) continue;
    const theirs = policy[field];
    if (theirs === undefined) return `leaves ${field} open`;
    const extra = theirs.find((value) => !own.includes(value));
    if (extra !== undefined) return `admits ${field} ${extra}`;
  }
  const status = policy.allowedTcbStatuses.find((value) => !reference.allowedTcbStatuses.includes(value));
  if (status !== undefined) return `admits TCB status ${status}`;
  const advisory = reference.deniedAdvisoryIds.find((id) => !policy.deniedAdvisoryIds.includes(id));
  if (advisory !== undefined) return `does not deny ${advisory}`;
  if (policy.minTcbEvaluationDataNumber < reference.minTcbEvaluationDataNumber)
    return `admits tcbEvaluationDataNumber below ${reference.minTcbEvaluationDataNumber}`;
  const event = reference.eventDigests?.find((e) => !(policy.eventDigests ?? []).some((f) => f.rtmr === e.rtmr && f.digest === e.digest));
  if (event !== undefined) return `does not require event ${event.digest} in rtmr${event.rtmr}`;
  return undefined;
}

/**
 * With `agentPolicies`: a workload not in `mrConfigId` must bring init-data (already found to be
 * its identity's) that is a function's trusting this sealing service (trustingFunction), with one
 * of the allowed agent policies.
 */
export function checkAgentPolicy(
  initData: { readonly data: Readonly<Record<string, string>> } | undefined,
  policy: Pick<TdxPolicy, 'agentPolicies' | 'mrConfigId'> & { readonly reference?: TdxPolicy },
  identity: string,
  self: string | undefined,
): void {
  if (policy.agentPolicies === undefined || policy.mrConfigId?.includes(identity)) return;
  if (initData === undefined) {
    refuse('mr_config_id', `${identity} is not an allowed value, and the attestation carried no init-data whose agent policy the policy admits`);
  }
  const found = trustingFunction(initData.data, self, policy.reference);
  if ('reason' in found) refuse('init_data', found.reason);
  if (!policy.agentPolicies.includes(found.agentPolicy)) {
    refuse('init_data', `the agent policy (${AGENT_POLICY_ENTRY}) has SHA-384 ${found.agentPolicy}, which is not an allowed value`);
  }
}

/**
 * The policy's demands on init-data whose digest was already found equal to the evidence's
 * identity (or none was sent): required at all, and each pinned entry present with an allowed text.
 */
export function checkInitData(initData: { readonly data: Readonly<Record<string, string>> } | undefined, requirement: InitDataRequirement | undefined): void {
  if (requirement === undefined || !requirement.required) return;
  if (initData === undefined) refuse('init_data', 'the policy requires init-data, and the attestation carried none (KBS Attestation "init-data")');
  for (const [name, allowed] of Object.entries(requirement.data)) {
    const text = Object.hasOwn(initData.data, name) ? initData.data[name] : undefined;
    if (text === undefined) refuse('init_data', `entry ${JSON.stringify(name)} is missing from the init-data`);
    const actual = createHash('sha384').update(text, 'utf8').digest('hex'); // as init-data.ts entryDigest, without loading the TOML parser
    if (!allowed.includes(actual)) refuse('init_data', `entry ${JSON.stringify(name)} has SHA-384 ${actual}, which is not an allowed value`);
  }
}
