/**
 * TDX TCB evaluation as Intel publishes it, over collateral whose signatures verify.ts has already
 * checked. @phala/dcap-qvl 0.3.9 compares all 16 TEE_TCB_SVN bytes with a level's
 * tdxtcbcomponents and ignores `tdxModule` / `tdxModuleIdentities`, so it misjudges any quote
 * whose TDX module is newer or older than the platform level assumes. These pure functions are the
 * authoritative verdict; they follow the rules of Intel's QVL (TcbLevelCheck, TdxModuleCheck,
 * TDRelaunchCheck) and google/go-tdx-guest verify/verify.go.
 */
import { X509Certificate } from 'node:crypto';
import { DER_TAG, DerError, derChildren, derOid, readDer, readDerExact, type DerNode } from './der.js';
import { refuse, TCB_STATUSES, type TcbStatus } from './policy.js';
import type { TdReport } from '../../../shared/attestation/tdx/quote.js';

// ---------------------------------------------------------------------------------------------
// Inputs

/** What the PCK certificate's Intel SGX extension says about the platform. */
export interface PckPlatformTcb {
  /** The 16 SGX TCB component SVNs (OIDs …2.1 to …2.16). */
  readonly sgxComponents: readonly number[];
  readonly pceSvn: number;
  /** Uppercase hex (2 bytes). */
  readonly pceId: string;
  /** Uppercase hex (6 bytes). */
  readonly fmspc: string;
}

interface Level<T> {
  readonly tcb: T;
  readonly tcbStatus: string;
  readonly advisoryIds: readonly string[];
}

export interface TdxModuleIdentity {
  readonly id: string;
  readonly mrsigner: string;
  readonly attributes: string;
  readonly attributesMask: string;
  readonly tcbLevels: readonly Level<{ readonly isvsvn: number }>[];
}

/** The parts of a TDX TCB info (v3) this evaluation reads; hex fields uppercase. */
export interface TdxTcbInfo {
  readonly pceId: string;
  readonly tcbEvaluationDataNumber: number;
  readonly tdxModule: { readonly mrsigner: string; readonly attributes: string; readonly attributesMask: string };
  readonly tdxModuleIdentities: readonly TdxModuleIdentity[];
  readonly tcbLevels: readonly Level<{ readonly sgx: readonly number[]; readonly pceSvn: number; readonly tdx: readonly number[] }>[];
}

/** The parts of a TD_QE identity this evaluation reads. */
export interface QeIdentityTcb {
  readonly tcbEvaluationDataNumber: number;
  readonly tcbLevels: readonly Level<{ readonly isvsvn: number }>[];
}

// ---------------------------------------------------------------------------------------------
// Parsing (signed JSON and the PCK extension); malformed input refuses 'collateral' / 'pck_chain'

type Json = Record<string, unknown>;

function malformed(what: string, detail: string): never {
  refuse('collateral', `the ${what} is malformed (${detail})`);
}

const obj = (value: unknown, what: string, field: string): Json => {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) malformed(what, `${field} is not an object`);
  return value as Json;
};
const arr = (value: unknown, what: string, field: string): unknown[] => {
  if (!Array.isArray(value)) malformed(what, `${field} is not a list`);
  return value;
};
const uint = (value: unknown, what: string, field: string): number => {
  if (!Number.isSafeInteger(value) || (value as number) < 0) malformed(what, `${field} is not a non-negative integer`);
  return value as number;
};
const hexField = (value: unknown, what: string, field: string, bytes: number): string => {
  if (typeof value !== 'string' || !new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`).test(value)) malformed(what, `${field} is not ${bytes} bytes of hex`);
  return value.toUpperCase();
};
const text = (value: unknown, what: string, field: string): string => {
  if (typeof value !== 'string' || value.length === 0) malformed(what, `${field} is not a string`);
  return value;
};
const advisories = (value: unknown, what: string, field: string): string[] =>
  value === undefined ? [] : arr(value, what, field).map((item, i) => text(item, what, `${field}[${i}]`));

function svnList(value: unknown, what: string, field: string): number[] {
  const list = arr(value, what, field).map((item, i) => uint(obj(item, what, `${field}[${i}]`)['svn'], what, `${field}[${i}].svn`));
  if (list.length !== 16) malformed(what, `${field} has ${list.length} components, not 16`);
  return list;
}

function isvLevels(value: unknown, what: string, field: string): Level<{ isvsvn: number }>[] {
  return arr(value, what, field).map((item, i) => {
    const level = obj(item, what, `${field}[${i}]`);
    return {
      tcb: { isvsvn: uint(obj(level['tcb'], what, `${field}[${i}].tcb`)['isvsvn'], what, `${field}[${i}].tcb.isvsvn`) },
      tcbStatus: text(level['tcbStatus'], what, `${field}[${i}].tcbStatus`),
      advisoryIds: advisories(level['advisoryIDs'], what, `${field}[${i}].advisoryIDs`),
    };
  });
}

function moduleFields(value: Json, what: string, field: string) {
  return {
    mrsigner: hexField(value['mrsigner'], what, `${field}.mrsigner`, 48),
    attributes: hexField(value['attributes'], what, `${field}.attributes`, 8),
    attributesMask: hexField(value['attributesMask'], what, `${field}.attributesMask`, 8),
  };
}

/** The signed JSON document as an object (refusal 'collateral' otherwise). */
function parseDocument(json: string, what: string): Json {
  try {
    return obj(JSON.parse(json), what, 'document');
  } catch (error) {
    if (error instanceof SyntaxError) malformed(what, 'not JSON');
    throw error;
  }
}

/** Parses the signed TCB info text (call only after its signature verified). */
export function parseTdxTcbInfo(json: string): TdxTcbInfo {
  const what = 'TCB info';
  const doc = parseDocument(json, what);
  const tdxModule = moduleFields(obj(doc['tdxModule'], what, 'tdxModule'), what, 'tdxModule');
  const identities = doc['tdxModuleIdentities'] === undefined ? [] : arr(doc['tdxModuleIdentities'], what, 'tdxModuleIdentities');
  return {
    pceId: hexField(doc['pceId'], what, 'pceId', 2),
    tcbEvaluationDataNumber: uint(doc['tcbEvaluationDataNumber'], what, 'tcbEvaluationDataNumber'),
    tdxModule,
    tdxModuleIdentities: identities.map((item, i) => {
      const identity = obj(item, what, `tdxModuleIdentities[${i}]`);
      return {
        id: text(identity['id'], what, `tdxModuleIdentities[${i}].id`),
        ...moduleFields(identity, what, `tdxModuleIdentities[${i}]`),
        tcbLevels: isvLevels(identity['tcbLevels'], what, `tdxModuleIdentities[${i}].tcbLevels`),
      };
    }),
    tcbLevels: arr(doc['tcbLevels'], what, 'tcbLevels').map((item, i) => {
      const level = obj(item, what, `tcbLevels[${i}]`);
      const tcb = obj(level['tcb'], what, `tcbLevels[${i}].tcb`);
      return {
        tcb: {
          sgx: svnList(tcb['sgxtcbcomponents'], what, `tcbLevels[${i}].tcb.sgxtcbcomponents`),
          pceSvn: uint(tcb['pcesvn'], what, `tcbLevels[${i}].tcb.pcesvn`),
          tdx: svnList(tcb['tdxtcbcomponents'], what, `tcbLevels[${i}].tcb.tdxtcbcomponents`),
        },
        tcbStatus: text(level['tcbStatus'], what, `tcbLevels[${i}].tcbStatus`),
        advisoryIds: advisories(level['advisoryIDs'], what, `tcbLevels[${i}].advisoryIDs`),
      };
    }),
  };
}

/** Parses the signed QE identity text (call only after its signature verified). */
export function parseQeIdentityTcb(json: string): QeIdentityTcb {
  const what = 'QE identity';
  const doc = parseDocument(json, what);
  return {
    tcbEvaluationDataNumber: uint(doc['tcbEvaluationDataNumber'], what, 'tcbEvaluationDataNumber'),
    tcbLevels: isvLevels(doc['tcbLevels'], what, 'tcbLevels'),
  };
}

const SGX_EXTENSION = '1.2.840.113741.1.13.1';

/** The value of `oid` in a SEQUENCE OF SEQUENCE { OID, value } (the SGX extension's shape). */
function sgxEntry(node: DerNode, oid: string): DerNode {
  for (const entry of derChildren(node)) {
    const [id, value] = derChildren(entry);
    if (id && value && derOid(id) === oid) return value;
  }
  throw new DerError(`SGX extension entry ${oid} is missing`);
}

function derUint(node: DerNode): number {
  if (node.tag !== DER_TAG.INTEGER || node.content.length === 0 || node.content.length > 3) throw new DerError('SGX extension SVN is not a small INTEGER');
  if (node.content[0]! & 0x80) throw new DerError('SGX extension SVN is negative');
  return node.content.reduce((value, byte) => value * 256 + byte, 0);
}

function octetHex(node: DerNode, length: number): string {
  if (node.tag !== DER_TAG.OCTET_STRING || node.content.length !== length) throw new DerError('SGX extension field has the wrong type or length');
  return Buffer.from(node.content).toString('hex').toUpperCase();
}

/** The Intel SGX extension of a PCK certificate (SGX PCK Certificate and CRL Profile). */
export function parsePckPlatformTcb(pck: X509Certificate): PckPlatformTcb {
  try {
    const tbs = derChildren(readDerExact(new Uint8Array(pck.raw), DER_TAG.SEQUENCE))[0];
    const wrapper = tbs && derChildren(tbs).find((child) => child.tag === 0xa3);
    if (!wrapper) throw new DerError('the certificate has no extensions');
    const matches = derChildren(readDerExact(wrapper.content, DER_TAG.SEQUENCE)).filter((ext) => derOid(derChildren(ext)[0]!) === SGX_EXTENSION);
    if (matches.length !== 1) throw new DerError('the certificate has no single Intel SGX extension');
    const parts = derChildren(matches[0]!);
    const value = parts[parts.length - 1]!;
    if (value.tag !== DER_TAG.OCTET_STRING) throw new DerError('the SGX extension value is not an OCTET STRING');
    const sgx = readDer(value.content).node;
    const tcb = sgxEntry(sgx, `${SGX_EXTENSION}.2`);
    const sgxComponents = Array.from({ length: 16 }, (_, i) => derUint(sgxEntry(tcb, `${SGX_EXTENSION}.2.${i + 1}`)));
    return {
      sgxComponents,
      pceSvn: derUint(sgxEntry(tcb, `${SGX_EXTENSION}.2.17`)),
      pceId: octetHex(sgxEntry(sgx, `${SGX_EXTENSION}.3`), 2),
      fmspc: octetHex(sgxEntry(sgx, `${SGX_EXTENSION}.4`), 6),
    };
  } catch (error) {
    if (error instanceof DerError) refuse('pck_chain', 'the PCK certificate has no readable Intel SGX extension (TCB, PCEID, FMSPC)', error);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

export interface TdxModuleVerdict {
  /** "TDX_01"…; null for a TDX module of major version 0, checked against `tdxModule` alone. */
  readonly identityId: string | null;
  /** TEE_TCB_SVN[0]: the module's SVN. */
  readonly svn: number;
  readonly tcbStatus: TcbStatus;
}

export interface TcbVerdict {
  readonly tcbStatus: TcbStatus;
  /** Union of the platform level's, the module level's and the QE identity level's advisories. */
  readonly advisoryIds: readonly string[];
  readonly tdxModule: TdxModuleVerdict;
  readonly tcbEvaluationDataNumber: { readonly tcbInfo: number; readonly qeIdentity: number };
}

export interface TcbEvaluationInput {
  readonly tcbInfo: TdxTcbInfo;
  readonly qeIdentity: QeIdentityTcb;
  readonly pck: PckPlatformTcb;
  readonly report: TdReport;
  /** The quoting enclave's ISVSVN (from its report, whose signature the library checked). */
  readonly qeIsvSvn: number;
}

/** Statuses a TCB info level may carry: the relaunch ones are derived (TD report 1.5), never listed. */
const PLATFORM_STATUSES: readonly string[] = TCB_STATUSES.filter((status) => !status.startsWith('TDRelaunch'));
const MODULE_STATUSES: readonly string[] = ['UpToDate', 'OutOfDate', 'Revoked'];

const bytesOf = (hex: string): Buffer => Buffer.from(hex, 'hex');
const hex2 = (n: number): string => n.toString(16).padStart(2, '0').toUpperCase();

function platformStatus(status: string): TcbStatus {
  if (!PLATFORM_STATUSES.includes(status)) refuse('tcb_status', `the TCB info level has an unrecognized status ${JSON.stringify(status)}`);
  return status as TcbStatus;
}

/** QVL isTdxTcbHigherOrEqual: a non-zero module major version (TEE_TCB_SVN[1]) moves the module out of the comparison. */
function tdxComponentsMeet(teeTcbSvn: Buffer, required: readonly number[]): boolean {
  const start = teeTcbSvn[1]! > 0 ? 2 : 0;
  for (let i = start; i < 16; i++) if (teeTcbSvn[i]! < required[i]!) return false;
  return true;
}

/** QVL matchTcbLevels: the first level (in order) whose SGX components and PCESVN the PCK meets. */
function sgxLevelMeets(pck: PckPlatformTcb, level: TdxTcbInfo['tcbLevels'][number]): boolean {
  return pck.pceSvn >= level.tcb.pceSvn && level.tcb.sgx.every((svn, i) => pck.sgxComponents[i]! >= svn);
}

/** go-tdx-guest verifyTdQuoteBody / QVL: MRSIGNERSEAM equal, SEAMATTRIBUTES under the mask equal to the expected attributes. */
function checkModuleSigner(report: TdReport, expected: TdxTcbInfo['tdxModule'], what: string): void {
  if (report.mrSignerSeam.toUpperCase() !== expected.mrsigner) {
    refuse('tdx_module', `MRSIGNERSEAM ${report.mrSignerSeam} is not the ${what} signer ${expected.mrsigner.toLowerCase()}`);
  }
  const attributes = bytesOf(report.seamAttributes);
  const mask = bytesOf(expected.attributesMask);
  const masked = Buffer.from(attributes.map((byte, i) => byte & mask[i]!));
  if (!masked.equals(bytesOf(expected.attributes))) {
    refuse('tdx_module', `SEAMATTRIBUTES ${report.seamAttributes} do not match the ${what} attributes under its mask`);
  }
}

function findModuleIdentity(tcbInfo: TdxTcbInfo, majorVersion: number): TdxModuleIdentity | undefined {
  const id = `TDX_${hex2(majorVersion)}`;
  return tcbInfo.tdxModuleIdentities.find((identity) => identity.id.toUpperCase() === id);
}

/** QVL TdxModuleCheck: the module identity of TEE_TCB_SVN[1] and its first level with isvsvn <= TEE_TCB_SVN[0]. */
export function evaluateTdxModule(tcbInfo: TdxTcbInfo, report: TdReport): { verdict: TdxModuleVerdict; advisoryIds: readonly string[] } {
  const teeTcbSvn = bytesOf(report.teeTcbSvn);
  const svn = teeTcbSvn[0]!;
  const major = teeTcbSvn[1]!;
  if (major === 0) {
    checkModuleSigner(report, tcbInfo.tdxModule, 'tdxModule');
    return { verdict: { identityId: null, svn, tcbStatus: 'UpToDate' }, advisoryIds: [] };
  }
  const identityId = `TDX_${hex2(major)}`;
  const identity = findModuleIdentity(tcbInfo, major);
  if (!identity) refuse('tdx_module', `the TCB info has no identity ${identityId} for TDX module major version ${major}`);
  checkModuleSigner(report, identity, identityId);
  const level = identity.tcbLevels.find((candidate) => svn >= candidate.tcb.isvsvn);
  if (!level) refuse('tdx_module', `TDX module SVN ${svn} is below every TCB level of ${identityId}`);
  if (!MODULE_STATUSES.includes(level.tcbStatus)) refuse('tdx_module', `${identityId} has an unrecognized status ${JSON.stringify(level.tcbStatus)}`);
  const tcbStatus = level.tcbStatus as TcbStatus;
  if (tcbStatus === 'Revoked') refuse('tdx_module', `TDX module ${identityId} SVN ${svn} is revoked`);
  return { verdict: { identityId, svn, tcbStatus }, advisoryIds: level.advisoryIds };
}

/** QVL convergeTcbStatusWithTdxModuleStatus / ...WithQeTcbStatus: an OutOfDate part makes the whole OutOfDate. */
function convergeOutOfDate(status: TcbStatus, partStatus: string): TcbStatus {
  if (partStatus === 'Revoked') return 'Revoked';
  if (partStatus !== 'OutOfDate') return status;
  if (status === 'UpToDate' || status === 'SWHardeningNeeded') return 'OutOfDate';
  if (status === 'ConfigurationNeeded' || status === 'ConfigurationAndSWHardeningNeeded') return 'OutOfDateConfigurationNeeded';
  return status;
}

const CONFIGURATION_NEEDED: readonly TcbStatus[] = [
  'ConfigurationNeeded',
  'OutOfDateConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'TDRelaunchAdvisedConfigurationNeeded',
];

/**
 * QVL TDRelaunchCheck (TD report 1.5): when only the TDX module is out of date and the module
 * already updated in place (TEE_TCB_SVN2) meets the latest level, relaunching the TD fixes it.
 */
export function relaunchStatus(
  tcbInfo: TdxTcbInfo,
  teeTcbSvn2Hex: string,
  sgxStatus: TcbStatus,
  tdxStatus: TcbStatus,
  moduleStatus: TcbStatus,
  qeStatus: string,
): TcbStatus {
  if (qeStatus === 'OutOfDate' || qeStatus === 'Revoked') return tdxStatus;
  if (!['UpToDate', 'SWHardeningNeeded', 'ConfigurationNeeded', 'ConfigurationAndSWHardeningNeeded'].includes(sgxStatus)) return tdxStatus;
  if (tdxStatus !== 'OutOfDate' && tdxStatus !== 'OutOfDateConfigurationNeeded') return tdxStatus;
  if (moduleStatus !== 'OutOfDate') return tdxStatus;
  const latest = tcbInfo.tcbLevels[0];
  if (!latest) refuse('tcb_status', 'the TCB info has no TCB levels');
  const svn2 = bytesOf(teeTcbSvn2Hex);
  let moduleMeetsLatest: boolean;
  if (svn2[1] === 0) {
    moduleMeetsLatest = svn2[0]! >= latest.tcb.tdx[0]!;
  } else {
    const identity = findModuleIdentity(tcbInfo, svn2[1]!);
    if (!identity) refuse('tdx_module', `the TCB info has no identity TDX_${hex2(svn2[1]!)} for the TEE_TCB_SVN2 module major version ${svn2[1]}`);
    const newest = identity.tcbLevels[0];
    if (!newest) refuse('tdx_module', `${identity.id} has no TCB levels`);
    moduleMeetsLatest = svn2[0]! >= newest.tcb.isvsvn;
  }
  if (!moduleMeetsLatest || svn2[2]! < latest.tcb.tdx[2]!) return tdxStatus;
  return CONFIGURATION_NEEDED.includes(sgxStatus) || CONFIGURATION_NEEDED.includes(tdxStatus) ? 'TDRelaunchAdvisedConfigurationNeeded' : 'TDRelaunchAdvised';
}

/** QE identity: the first level whose isvsvn the quoting enclave meets. */
function evaluateQe(qeIdentity: QeIdentityTcb, qeIsvSvn: number): Level<{ isvsvn: number }> {
  const level = qeIdentity.tcbLevels.find((candidate) => qeIsvSvn >= candidate.tcb.isvsvn);
  if (!level) refuse('qe_identity', "the quoting enclave's SVN is below every QE identity TCB level");
  if (level.tcbStatus === 'Revoked') refuse('qe_identity', `the quoting enclave's SVN ${qeIsvSvn} is revoked`);
  return level;
}

function union(...lists: ReadonlyArray<readonly string[]>): string[] {
  return [...new Set(lists.flat())];
}

/** The whole TCB verdict; refuses with the claim that fails. */
export function evaluateTdxTcb(input: TcbEvaluationInput): TcbVerdict {
  const { tcbInfo, pck, report } = input;
  // go-tdx-guest verifyTdQuoteBody: the TCB info is for the PCK's FMSPC (dcap-qvl checks it) and PCEID.
  if (pck.pceId !== tcbInfo.pceId) refuse('collateral', `the TCB info is for PCEID ${tcbInfo.pceId}, the PCK certificate for PCEID ${pck.pceId}`);

  const teeTcbSvn = bytesOf(report.teeTcbSvn);
  const sgxLevel = tcbInfo.tcbLevels.find((level) => sgxLevelMeets(pck, level));
  const platformLevel = tcbInfo.tcbLevels.find((level) => sgxLevelMeets(pck, level) && tdxComponentsMeet(teeTcbSvn, level.tcb.tdx));
  if (!sgxLevel || !platformLevel) refuse('tcb_status', 'the platform TCB is below every level of the TCB info (not UpToDate)');

  const module = evaluateTdxModule(tcbInfo, report);
  const qeLevel = evaluateQe(input.qeIdentity, input.qeIsvSvn);

  let status = convergeOutOfDate(platformStatus(platformLevel.tcbStatus), module.verdict.tcbStatus);
  if (status === 'Revoked') refuse('tcb_status', 'the platform TCB is revoked');
  if (report.teeTcbSvn2 !== undefined) {
    status = relaunchStatus(tcbInfo, report.teeTcbSvn2, platformStatus(sgxLevel.tcbStatus), status, module.verdict.tcbStatus, qeLevel.tcbStatus);
  }
  status = convergeOutOfDate(status, qeLevel.tcbStatus);
  return {
    tcbStatus: status,
    advisoryIds: union(platformLevel.advisoryIds, module.advisoryIds, qeLevel.advisoryIds),
    tdxModule: module.verdict,
    tcbEvaluationDataNumber: { tcbInfo: tcbInfo.tcbEvaluationDataNumber, qeIdentity: input.qeIdentity.tcbEvaluationDataNumber },
  };
}
