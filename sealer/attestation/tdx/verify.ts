/**
 * DCAP verification of a TDX quote against collateral, at an explicit evaluation time.
 *
 * Split of work, and why:
 * - @phala/dcap-qvl 0.3.9 runs the DCAP algorithm: TCB info and QE identity signatures, QE report
 *   signature by the PCK key, the QE report's binding of the attestation key
 *   (SHA-256(attestation key || QE auth data)), QE identity (MRSIGNER, ISVPRODID, masked
 *   MISCSELECT/ATTRIBUTES, ISVSVN level), the quote signature, FMSPC equality, and TD attribute
 *   sanity. Its own TCB level matching (16 TEE_TCB_SVN bytes, no TDX module identities) is not
 *   the verdict: tcb.ts evaluates the TCB as Intel's QVL does, and that verdict is returned. Its QuoteVerifier takes the trusted root CA as DER
 *   (newWithRootCa), so synthetic test quotes go through the very same code as real ones.
 * - Before calling it we check with node:crypto (pki.ts) what the library leaves out or reports
 *   too coarsely: CRL signatures and currency (the library only matches serial numbers), the PCK
 *   CRL issuer chain (ignored by the library), and the quote's PCK chain and the collateral
 *   signing chains, so a refusal names the claim that failed (pck_chain vs collateral vs crl).
 * - The library's errors are plain Error texts; we map the known ones to claims and keep the
 *   text only as `cause` (client-visible messages never carry a dependency's exception text).
 */
import { X509Certificate, createHash } from 'node:crypto';
import dcapQvl from '@phala/dcap-qvl';
import { KmsError } from '../../../shared/errors.js';
import { collateralWindows, type TdxCollateral } from './collateral.js';
import { PkiError, parseCrl, parsePemBundle, verifyChain, verifyCrl, type Crl } from './pki.js';
import { refuse, type TcbStatus, type TdxClaimName } from './policy.js';
import { checkQuotingEnclave } from './qe-checks.js';
import { isDebugTd, type TdReport, type TdxQuote } from '../../../shared/attestation/tdx/quote.js';
import { evaluateTdxTcb, parsePckPlatformTcb, parseQeIdentityTcb, parseTdxTcbInfo, type TdxModuleVerdict } from './tcb.js';

/** SHA-256 of the DER of Intel's "Intel SGX Root CA" (valid 2018-05-21 to 2049-12-31). */
export const INTEL_SGX_ROOT_CA_SHA256 = '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3';

let intelRoot: X509Certificate | undefined;

/** Intel's root, taken from dcap-qvl but pinned by fingerprint so a tampered package is caught. */
export function intelSgxRootCa(): X509Certificate {
  if (intelRoot) return intelRoot;
  const der: Buffer = dcapQvl.constants.TRUSTED_ROOT_CA_DER;
  if (createHash('sha256').update(der).digest('hex') !== INTEL_SGX_ROOT_CA_SHA256) {
    throw new KmsError('CONFIG', 'the Intel SGX Root CA bundled with @phala/dcap-qvl does not match the pinned fingerprint');
  }
  intelRoot = new X509Certificate(der);
  return intelRoot;
}

/** A trust anchor from PEM (tests, or a private DCAP PKI). */
export function trustedRootFromPem(pem: string): X509Certificate {
  try {
    const root = new X509Certificate(pem);
    if (!root.ca || !root.verify(root.publicKey)) throw new Error('not a self-signed CA');
    return root;
  } catch (error) {
    throw new KmsError('CONFIG', 'the trusted root CA must be a self-signed CA certificate in PEM', { cause: error });
  }
}

export interface DcapOptions {
  /** Evaluation time for every validity window (collateral, CRLs, certificates). */
  readonly at: Date;
  /** Default: the pinned Intel SGX Root CA. */
  readonly trustedRootCa?: X509Certificate;
}

export interface DcapResult {
  readonly tcbStatus: TcbStatus;
  readonly advisoryIds: readonly string[];
  readonly tdxModule: TdxModuleVerdict;
  readonly tcbEvaluationDataNumber: { readonly tcbInfo: number; readonly qeIdentity: number };
}

function pki<T>(claim: TdxClaimName, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof PkiError) refuse(claim, error.message, error);
    throw error;
  }
}

/** TCB info and QE identity must be issued and not past their nextUpdate at `at`. */
export function checkCollateralCurrency(collateral: TdxCollateral, at: Date): void {
  const windows = collateralWindows(collateral);
  for (const [name, window] of [
    ['TCB info', windows.tcbInfo],
    ['QE identity', windows.qeIdentity],
  ] as const) {
    if (at < window.issueDate) refuse('collateral', `${name} is not yet valid at ${at.toISOString()} (issued ${window.issueDate.toISOString()})`);
    if (at > window.nextUpdate) refuse('collateral', `${name} expired at ${window.nextUpdate.toISOString()} (evaluated at ${at.toISOString()})`);
  }
}

/** Root CA CRL signed by the root; PCK CRL signed by the PCK CA whose chain leads to the root. */
export function verifyCollateralCrls(collateral: TdxCollateral, root: X509Certificate, at: Date): Crl[] {
  return pki('crl', () => {
    const rootCrl = parseCrl(Buffer.from(collateral.root_ca_crl, 'hex'), 'root CA CRL');
    verifyCrl(rootCrl, root, at, 'root CA CRL');
    const pckCrlChain = parsePemBundle(collateral.pck_crl_issuer_chain, 'PCK CRL issuer chain');
    const pckCrlIssuer = pckCrlChain[0]!;
    // The CRL issuer is a CA (the PCK CA), so verify its chain as "CA + rest" without the leaf rule.
    verifyChain([pckCrlIssuer, ...pckCrlChain.slice(1)], root, at, [rootCrl], 'PCK CRL issuer chain', { leafIsCa: true });
    const pckCrl = parseCrl(Buffer.from(collateral.pck_crl, 'hex'), 'PCK CRL');
    verifyCrl(pckCrl, pckCrlIssuer, at, 'PCK CRL');
    return [rootCrl, pckCrl];
  });
}

function verifyCollateralSigners(collateral: TdxCollateral, root: X509Certificate, at: Date, crls: Crl[]): void {
  pki('collateral', () => {
    verifyChain(parsePemBundle(collateral.tcb_info_issuer_chain, 'TCB info issuer chain'), root, at, crls, 'TCB info issuer chain');
    verifyChain(parsePemBundle(collateral.qe_identity_issuer_chain, 'QE identity issuer chain'), root, at, crls, 'QE identity issuer chain');
  });
}

function verifyPckChain(quote: TdxQuote, root: X509Certificate, at: Date, crls: Crl[]): void {
  if (quote.signature.pckCertChainPem.length === 0) {
    refuse('pck_chain', `the quote carries no PCK certificate chain (certification data type ${quote.signature.pckCertDataType})`);
  }
  pki('pck_chain', () => {
    verifyChain(parsePemBundle(quote.signature.pckCertChainPem.join('\n'), 'PCK chain'), root, at, crls, 'PCK chain');
  });
}

/** Known dcap-qvl 0.3.9 error texts → the claim that failed and a message of our own. */
const LIBRARY_ERRORS: ReadonlyArray<readonly [RegExp, TdxClaimName, string]> = [
  [/^Signature is invalid for qe_report/, 'qe_report_signature', 'the QE report is not signed by the PCK key'],
  [/^QE report hash mismatch/, 'qe_report_binding', 'the QE report does not bind the attestation key'],
  [/^ISV enclave report signature is invalid/, 'quote_signature', 'the quote signature does not verify under the attestation key'],
  [/^QE (MRSIGNER|ISVPRODID|MISCSELECT|ATTRIBUTES) mismatch/, 'qe_identity', "the quoting enclave does not match Intel's QE identity"],
  [/^QE ISVSVN .* below minimum|^No TCB levels found in QE Identity/, 'qe_identity', "the quoting enclave's SVN is below every QE identity TCB level"],
  [/^No matching TCB level found/, 'tcb_status', 'the platform TCB is below every level of the TCB info (not UpToDate)'],
  [/^TCB status is invalid/, 'tcb_status', 'the platform TCB is revoked'],
  [/^Reserved bits in TD attributes are set/, 'td_attributes', 'reserved TDATTRIBUTES bits are set'],
  [/^SEPT_VE_DISABLE is not enabled/, 'td_attributes', 'TDATTRIBUTES.SEPT_VE_DISABLE is not set'],
  [/^Invalid mr service td/, 'mr_service_td', 'MRSERVICETD is not zero (service TDs are not accepted)'],
  [/^Fmspc mismatch/, 'collateral', 'the TCB info is for another platform (FMSPC differs from the PCK certificate)'],
  [/non-TDX TCB info|^Unsupported QE Identity id/, 'collateral', 'the collateral is not TDX collateral (TCB info / QE identity type)'],
  [/expired|in the future/i, 'collateral', 'the collateral is outside its validity window'],
  [/^Signature is invalid for (tcb_info|qe_identity)/, 'collateral', 'a collateral document signature does not verify'],
  [/^Unsupported DCAP attestation key type/, 'quote_signature', 'the attestation key type is not ECDSA P-256'],
];

function mapLibraryError(error: unknown, quote: TdxQuote): never {
  const message = error instanceof Error ? error.message : String(error);
  if (/^Debug mode is enabled/.test(message)) {
    // The library raises this both for a debug TD and for a debug quoting enclave.
    if (isDebugTd(quote.report)) refuse('debug', 'the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory', error);
    refuse('qe_identity', 'the quoting enclave runs in debug mode', error);
  }
  for (const [pattern, claim, detail] of LIBRARY_ERRORS) {
    if (pattern.test(message)) refuse(claim, detail, error);
  }
  refuse('dcap', 'the quote failed DCAP verification', error);
}

/**
 * Verifies `rawQuote` (already parsed into `quote`) with `collateral` at `options.at`.
 * Returns the TCB status and advisories; throws a refusal naming the claim otherwise.
 */
export function verifyTdxQuoteDcap(rawQuote: Uint8Array, quote: TdxQuote, collateral: TdxCollateral, options: DcapOptions): DcapResult {
  const at = options.at;
  if (Number.isNaN(at.getTime())) throw new KmsError('INTERNAL', 'DCAP evaluation time is invalid');
  const root = options.trustedRootCa ?? intelSgxRootCa();

  checkCollateralCurrency(collateral, at);
  const crls = verifyCollateralCrls(collateral, root, at);
  verifyCollateralSigners(collateral, root, at, crls);
  verifyPckChain(quote, root, at, crls);
  checkQuotingEnclave(quote);

  try {
    dcapQvl.QuoteVerifier.newWithRootCa(Buffer.from(root.raw)).verify(Buffer.from(rawQuote), { ...collateral }, at.getTime() / 1000);
  } catch (error) {
    if (!isLibraryTcbMismatch(error)) mapLibraryError(error, quote);
    // Thrown only after every signature, chain and FMSPC check passed: what the library would
    // have checked next (TD attributes, MRSERVICETD) we check here; tcb.ts judges the TCB.
    checkTdAttributes(quote.report);
  }
  const verdict = evaluateTdxTcb({
    tcbInfo: parseTdxTcbInfo(collateral.tcb_info),
    qeIdentity: parseQeIdentityTcb(collateral.qe_identity),
    pck: parsePckPlatformTcb(new X509Certificate(quote.signature.pckCertChainPem[0]!)),
    report: quote.report,
    qeIsvSvn: quote.signature.qeReport.isvSvn,
  });
  return { ...verdict, advisoryIds: [...verdict.advisoryIds] };
}

/** dcap-qvl 0.3.9's own TCB matching failed (its last step before the TD attribute checks). */
function isLibraryTcbMismatch(error: unknown): boolean {
  return error instanceof Error && error.message === 'No matching TCB level found';
}

const hasBits = (bytes: Buffer, index: number, mask: number): boolean => (bytes[index]! & mask) !== 0;

/** TDATTRIBUTES (TDX module ABI): DEBUG off, reserved bits clear, SEPT_VE_DISABLE set; no service TD. */
export function checkTdAttributes(report: TdReport): void {
  if (isDebugTd(report)) refuse('debug', 'the TD is debuggable (TDATTRIBUTES.DEBUG is set): the host can read its memory');
  const a = Buffer.from(report.tdAttributes, 'hex');
  // TUD bits 1-7, SEC bits 8-27 and 29, OTHER bits 32-62 are reserved.
  const reserved =
    hasBits(a, 0, 0xfe) ||
    hasBits(a, 1, 0xff) ||
    hasBits(a, 2, 0xff) ||
    hasBits(a, 3, 0x2f) ||
    [4, 5, 6].some((i) => hasBits(a, i, 0xff)) ||
    hasBits(a, 7, 0x7f);
  if (reserved) refuse('td_attributes', 'reserved TDATTRIBUTES bits are set');
  if (!hasBits(a, 3, 0x10)) refuse('td_attributes', 'TDATTRIBUTES.SEPT_VE_DISABLE is not set');
  if (report.mrServiceTd !== undefined && /[^0]/.test(report.mrServiceTd)) refuse('mr_service_td', 'MRSERVICETD is not zero (service TDs are not accepted)');
}
