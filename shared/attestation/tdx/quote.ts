/**
 * TDX quote parsing (Intel TDX DCAP Quote Generation Library and Quote Verification Library,
 * appendix A: quote format v4 and v5). Pure structure, no cryptography: the sealing service checks
 * the signatures (sealer/attestation/tdx/verify.ts). Every read is bounds-checked, so hostile
 * input yields KmsError('BAD_REQUEST'), never a RangeError. Bytes after the signature data are
 * tolerated (some quote providers pad).
 */
import { KmsError } from '../../errors.js';

export const TEE_TYPE_SGX = 0x00000000;
export const TEE_TYPE_TDX = 0x00000081;
export const ATTESTATION_KEY_TYPE_ECDSA_P256 = 2;

export const HEADER_LENGTH = 48;
export const ENCLAVE_REPORT_LENGTH = 384;
export const TD_REPORT10_LENGTH = 584;
export const TD_REPORT15_LENGTH = 648;
/** Quote v5 puts a (type: u16, size: u32) descriptor before the body. */
export const V5_BODY_DESCRIPTOR_LENGTH = 6;

export const BODY_TYPE_SGX_ENCLAVE = 1;
export const BODY_TYPE_TD_REPORT10 = 2;
export const BODY_TYPE_TD_REPORT15 = 3;

/** Certification data types (QGL/QVL spec, table "Certification Data Type"). */
export const CERT_DATA_PCK_CERT_CHAIN = 5;
export const CERT_DATA_QE_REPORT = 6;

export interface QuoteHeader {
  readonly version: number;
  readonly attestationKeyType: number;
  readonly teeType: number;
  readonly qeSvn: number;
  readonly pceSvn: number;
  readonly qeVendorId: string;
  readonly userData: string;
}

/** TD report fields as lowercase hex, in quote byte order (no endianness conversion). */
export interface TdReport {
  readonly teeTcbSvn: string;
  readonly mrSeam: string;
  readonly mrSignerSeam: string;
  readonly seamAttributes: string;
  readonly tdAttributes: string;
  readonly xfam: string;
  readonly mrTd: string;
  readonly mrConfigId: string;
  readonly mrOwner: string;
  readonly mrOwnerConfig: string;
  readonly rtmr: readonly [string, string, string, string];
  readonly reportData: string;
  /** TD report 1.5 only (quote v5, body type 3). */
  readonly teeTcbSvn2?: string;
  readonly mrServiceTd?: string;
}

/** The SGX enclave report of the Quoting Enclave (signed by the PCK key). */
export interface QeReport {
  readonly cpuSvn: string;
  readonly miscSelect: number;
  readonly attributes: string;
  readonly mrEnclave: string;
  readonly mrSigner: string;
  readonly isvProdId: number;
  readonly isvSvn: number;
  readonly reportData: string;
}

export interface QuoteSignatureData {
  /** ECDSA P-256 signature r||s over the header and body, by the attestation key. */
  readonly quoteSignature: Uint8Array;
  /** Raw P-256 public key x||y (64 bytes). */
  readonly attestationKey: Uint8Array;
  readonly certificationDataType: number;
  readonly qeReportRaw: Uint8Array;
  readonly qeReport: QeReport;
  readonly qeReportSignature: Uint8Array;
  readonly qeAuthData: Uint8Array;
  readonly pckCertDataType: number;
  /** PEM certificates (leaf first) when pckCertDataType is 5; empty otherwise. */
  readonly pckCertChainPem: readonly string[];
}

export interface TdxQuote {
  readonly header: QuoteHeader;
  /** v5 only: the body descriptor. v4 bodies are always TD report 1.0. */
  readonly body: { readonly type: number; readonly size: number };
  readonly report: TdReport;
  /** The 64 report_data bytes (the KBS binding). */
  readonly reportData: Uint8Array;
  /** Header and body: what the attestation key signs. */
  readonly signedBytes: Uint8Array;
  readonly signature: QuoteSignatureData;
  /** Bytes after the signature data, ignored. */
  readonly trailingBytes: number;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** Sequential little-endian reader that turns every overrun into a BAD_REQUEST naming the field. */
class Reader {
  private offset = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}

  get position(): number {
    return this.offset;
  }

  get remaining(): number {
    return this.buf.length - this.offset;
  }

  bytes(length: number, field: string): Uint8Array {
    if (length > this.remaining) {
      throw new KmsError('BAD_REQUEST', `malformed ${this.what}: truncated at ${field}`);
    }
    const out = this.buf.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  u16(field: string): number {
    const b = this.bytes(2, field);
    return b[0]! | (b[1]! << 8);
  }

  u32(field: string): number {
    const b = this.bytes(4, field);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }
}

export function teeTypeName(teeType: number): string {
  if (teeType === TEE_TYPE_TDX) return 'tdx';
  if (teeType === TEE_TYPE_SGX) return 'sgx';
  return 'unknown';
}

export function teeTypeHex(teeType: number): string {
  return `0x${teeType.toString(16).padStart(8, '0')}`;
}

/** Parses only the 48-byte header: enough to tell SGX from TDX quotes of any version. */
export function parseQuoteHeader(quote: Uint8Array): QuoteHeader {
  return readHeader(new Reader(quote, 'quote'));
}

function readHeader(r: Reader): QuoteHeader {
  return {
    version: r.u16('header.version'),
    attestationKeyType: r.u16('header.attestation_key_type'),
    teeType: r.u32('header.tee_type'),
    qeSvn: r.u16('header.qe_svn'),
    pceSvn: r.u16('header.pce_svn'),
    qeVendorId: hex(r.bytes(16, 'header.qe_vendor_id')),
    userData: hex(r.bytes(20, 'header.user_data')),
  };
}

function readTdReport(r: Reader, withV15Fields: boolean): { report: TdReport; reportData: Uint8Array } {
  const f = (length: number, field: string) => hex(r.bytes(length, `td_report.${field}`));
  const teeTcbSvn = f(16, 'tee_tcb_svn');
  const mrSeam = f(48, 'mr_seam');
  const mrSignerSeam = f(48, 'mr_signer_seam');
  const seamAttributes = f(8, 'seam_attributes');
  const tdAttributes = f(8, 'td_attributes');
  const xfam = f(8, 'xfam');
  const mrTd = f(48, 'mr_td');
  const mrConfigId = f(48, 'mr_config_id');
  const mrOwner = f(48, 'mr_owner');
  const mrOwnerConfig = f(48, 'mr_owner_config');
  const rtmr = [f(48, 'rtmr0'), f(48, 'rtmr1'), f(48, 'rtmr2'), f(48, 'rtmr3')] as const;
  const reportData = Uint8Array.from(r.bytes(64, 'td_report.report_data'));
  const base = {
    teeTcbSvn,
    mrSeam,
    mrSignerSeam,
    seamAttributes,
    tdAttributes,
    xfam,
    mrTd,
    mrConfigId,
    mrOwner,
    mrOwnerConfig,
    rtmr,
    reportData: hex(reportData),
  };
  if (!withV15Fields) return { report: base, reportData };
  return {
    report: { ...base, teeTcbSvn2: f(16, 'tee_tcb_svn2'), mrServiceTd: f(48, 'mr_service_td') },
    reportData,
  };
}

export function parseQeReport(raw: Uint8Array): QeReport {
  const r = new Reader(raw, 'QE report');
  const cpuSvn = hex(r.bytes(16, 'cpu_svn'));
  const miscSelect = r.u32('misc_select');
  r.bytes(28, 'reserved1');
  const attributes = hex(r.bytes(16, 'attributes'));
  const mrEnclave = hex(r.bytes(32, 'mr_enclave'));
  r.bytes(32, 'reserved2');
  const mrSigner = hex(r.bytes(32, 'mr_signer'));
  r.bytes(96, 'reserved3');
  const isvProdId = r.u16('isv_prod_id');
  const isvSvn = r.u16('isv_svn');
  r.bytes(60, 'reserved4');
  const reportData = hex(r.bytes(64, 'report_data'));
  return { cpuSvn, miscSelect, attributes, mrEnclave, mrSigner, isvProdId, isvSvn, reportData };
}

/** PEM blocks in certification data (Intel appends a NUL; anything between blocks is ignored). */
export function splitPemChain(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g) ?? [];
}

function readSignatureData(r: Reader): QuoteSignatureData {
  const quoteSignature = Uint8Array.from(r.bytes(64, 'signature.quote_signature'));
  const attestationKey = Uint8Array.from(r.bytes(64, 'signature.attestation_key'));
  const certificationDataType = r.u16('signature.certification_data_type');
  const certificationDataSize = r.u32('signature.certification_data_size');
  if (certificationDataType !== CERT_DATA_QE_REPORT) {
    throw new KmsError('BAD_REQUEST', `unsupported quote: certification data type ${certificationDataType} (expected ${CERT_DATA_QE_REPORT}, QE report)`);
  }
  const c = new Reader(r.bytes(certificationDataSize, 'signature.certification_data'), 'quote certification data');
  const qeReportRaw = Uint8Array.from(c.bytes(ENCLAVE_REPORT_LENGTH, 'qe_report'));
  const qeReportSignature = Uint8Array.from(c.bytes(64, 'qe_report_signature'));
  const qeAuthData = Uint8Array.from(c.bytes(c.u16('qe_auth_data_size'), 'qe_auth_data'));
  const pckCertDataType = c.u16('pck_cert_data_type');
  const pckCertData = c.bytes(c.u32('pck_cert_data_size'), 'pck_cert_data');
  const pckCertChainPem = pckCertDataType === CERT_DATA_PCK_CERT_CHAIN ? splitPemChain(Buffer.from(pckCertData).toString('latin1')) : [];
  return {
    quoteSignature,
    attestationKey,
    certificationDataType,
    qeReportRaw,
    qeReport: parseQeReport(qeReportRaw),
    qeReportSignature,
    qeAuthData,
    pckCertDataType,
    pckCertChainPem,
  };
}

/**
 * Parses a TDX quote (v4, or v5 with a TD report 1.0 or 1.5 body). A quote of another TEE type
 * (e.g. SGX) is refused with BAD_REQUEST "not a TDX quote"; callers that must tell the two apart
 * read the header first (parseQuoteHeader).
 */
export function parseTdxQuote(quote: Uint8Array): TdxQuote {
  const r = new Reader(quote, 'quote');
  const header = readHeader(r);
  if (header.teeType !== TEE_TYPE_TDX) {
    throw new KmsError('BAD_REQUEST', `not a TDX quote: tee_type ${teeTypeHex(header.teeType)} (${teeTypeName(header.teeType)})`);
  }
  let body: { type: number; size: number };
  if (header.version === 4) {
    body = { type: BODY_TYPE_TD_REPORT10, size: TD_REPORT10_LENGTH };
  } else if (header.version === 5) {
    body = { type: r.u16('body.type'), size: r.u32('body.size') };
    const expected = body.type === BODY_TYPE_TD_REPORT10 ? TD_REPORT10_LENGTH : body.type === BODY_TYPE_TD_REPORT15 ? TD_REPORT15_LENGTH : undefined;
    if (expected === undefined) {
      throw new KmsError('BAD_REQUEST', `unsupported quote: v5 body type ${body.type} is not a TD report`);
    }
    if (body.size !== expected) {
      throw new KmsError('BAD_REQUEST', `malformed quote: v5 body size ${body.size}, expected ${expected}`);
    }
  } else {
    throw new KmsError('BAD_REQUEST', `unsupported quote version ${header.version} (TDX quotes are v4 or v5)`);
  }
  const { report, reportData } = readTdReport(r, body.type === BODY_TYPE_TD_REPORT15);
  const signedBytes = Uint8Array.from(quote.subarray(0, r.position));
  const signatureDataSize = r.u32('signature_data_size');
  const signature = readSignatureData(new Reader(r.bytes(signatureDataSize, 'signature_data'), 'quote signature data'));
  return { header, body, report, reportData, signedBytes, signature, trailingBytes: r.remaining };
}

/** TDATTRIBUTES bit 0 (TUD.DEBUG): the host can read and write the TD's memory and state. */
export function isDebugTd(report: Pick<TdReport, 'tdAttributes'>): boolean {
  const firstByte = Number.parseInt(report.tdAttributes.slice(0, 2), 16);
  return (firstByte & 0x01) !== 0;
}

/** The flat, JSON-friendly description used by the verifier's claims and the operator CLI. */
export interface TdxQuoteSummary {
  tee: 'tdx';
  quoteVersion: number;
  bodyType: number;
  teeTcbSvn: string;
  mrSeam: string;
  mrSignerSeam: string;
  seamAttributes: string;
  tdAttributes: string;
  debug: boolean;
  xfam: string;
  mrTd: string;
  mrConfigId: string;
  mrOwner: string;
  mrOwnerConfig: string;
  rtmr: string[];
  reportData: string;
  teeTcbSvn2?: string;
  mrServiceTd?: string;
}

export function summarizeTdxQuote(quote: TdxQuote): TdxQuoteSummary {
  const { report } = quote;
  const summary: TdxQuoteSummary = {
    tee: 'tdx',
    quoteVersion: quote.header.version,
    bodyType: quote.body.type,
    teeTcbSvn: report.teeTcbSvn,
    mrSeam: report.mrSeam,
    mrSignerSeam: report.mrSignerSeam,
    seamAttributes: report.seamAttributes,
    tdAttributes: report.tdAttributes,
    debug: isDebugTd(report),
    xfam: report.xfam,
    mrTd: report.mrTd,
    mrConfigId: report.mrConfigId,
    mrOwner: report.mrOwner,
    mrOwnerConfig: report.mrOwnerConfig,
    rtmr: [...report.rtmr],
    reportData: report.reportData,
  };
  if (report.teeTcbSvn2 !== undefined) summary.teeTcbSvn2 = report.teeTcbSvn2;
  if (report.mrServiceTd !== undefined) summary.mrServiceTd = report.mrServiceTd;
  return summary;
}
