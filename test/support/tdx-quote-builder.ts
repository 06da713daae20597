/**
 * Builds synthetic but structurally real TDX quotes and DCAP collateral for tests: an own test
 * root CA, PCK CA and PCK leaf (with the Intel SGX extension carrying FMSPC/CPUSVN/PCESVN), a
 * TCB signing certificate, signed TCB info and QE identity, CRLs, a QE report signed by the PCK
 * key that binds the attestation key, and the quote signed by the attestation key. The same
 * DCAP code that verifies Intel's quotes verifies these, given this PKI's root as trust anchor.
 *
 * Certificates and CRLs are encoded here with node:crypto and a small DER writer: @peculiar/x509
 * would need a reflect-metadata polyfill that the project does not declare.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';

/** The default evaluation time; collateral below is valid around it. */
export const TEST_TIME = new Date('2030-01-15T00:00:00Z');
export const COLLATERAL_ISSUE = new Date('2030-01-01T00:00:00Z');
export const COLLATERAL_NEXT_UPDATE = new Date('2030-02-01T00:00:00Z');
const CERT_NOT_BEFORE = new Date('2029-01-01T00:00:00Z');
const CERT_NOT_AFTER = new Date('2039-01-01T00:00:00Z');

export const TEST_FMSPC = '00806F050000';
export const TEST_CPU_SVN = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
export const TEST_PCE_SVN = 11;
/** QE identity MRSIGNER of the synthetic quoting enclave. */
export const TEST_QE_MRSIGNER = 'dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5';

// ---------------------------------------------------------------------------------------------
// DER writer (certificates, CRLs and the Intel SGX extension)

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, content: Uint8Array): Buffer => Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const octets = (bytes: Uint8Array): Buffer => tlv(0x04, bytes);
const bits = (bytes: Uint8Array, unused = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unused]), bytes]));
const utf8 = (text: string): Buffer => tlv(0x0c, Buffer.from(text, 'utf8'));
const bool = (value: boolean): Buffer => tlv(0x01, Buffer.from([value ? 0xff : 0x00]));
const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 + n, inner);
const integer = (value: number): Buffer => {
  const bytes: number[] = [];
  for (let n = value; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  if (bytes.length === 0 || bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
};
const integerHex = (hex: string): Buffer => tlv(0x02, Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex'));
const enumerated = (value: number): Buffer => tlv(0x0a, Buffer.from([value]));
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as number[];
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const chunk = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}
function time(date: Date): Buffer {
  // RFC 5280: UTCTime through 2049, GeneralizedTime after.
  const iso = date
    .toISOString()
    .replace(/[-:T]/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
  return date.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2), 'latin1')) : tlv(0x18, Buffer.from(iso, 'latin1'));
}

const ECDSA_WITH_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/** Name from "CN=…,O=…,C=…" (each RDN one attribute, in the given order). */
function name(dn: string): Buffer {
  const types: Record<string, string> = { CN: '2.5.4.3', O: '2.5.4.10', C: '2.5.4.6' };
  return seq(
    ...dn.split(',').map((part) => {
      const [type, value] = part.split('=') as [string, string];
      return set(seq(oid(types[type]!), utf8(value)));
    }),
  );
}

const extension = (id: string, critical: boolean, value: Buffer): Buffer => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));

const SGX_EXT = '1.2.840.113741.1.13.1';

function intelSgxExtension(fmspc: string, cpuSvn: number[], pceSvn: number, pceId: string): Buffer {
  const tcbComponents = cpuSvn.map((svn, i) => seq(oid(`${SGX_EXT}.2.${i + 1}`), integer(svn)));
  return seq(
    seq(oid(`${SGX_EXT}.1`), octets(randomBytes(16))), // PPID
    seq(oid(`${SGX_EXT}.2`), seq(...tcbComponents, seq(oid(`${SGX_EXT}.2.17`), integer(pceSvn)), seq(oid(`${SGX_EXT}.2.18`), octets(Buffer.from(cpuSvn))))),
    seq(oid(`${SGX_EXT}.3`), octets(Buffer.from(pceId, 'hex'))), // PCEID
    seq(oid(`${SGX_EXT}.4`), octets(Buffer.from(fmspc, 'hex'))),
    seq(oid(`${SGX_EXT}.5`), enumerated(0)), // SGX type: Standard
  );
}

// ---------------------------------------------------------------------------------------------
// PKI

export interface TestCert {
  readonly cert: X509Certificate;
  readonly pem: string;
  /** The Name DER string it was issued with ("CN=…,O=…,C=…"). */
  readonly dn: string;
  readonly key: KeyObject;
  /** Uppercase hex without leading zeros, as node:crypto prints it. */
  readonly serial: string;
}

export interface TestPki {
  readonly root: TestCert;
  readonly pckCa: TestCert;
  readonly pckLeaf: TestCert;
  readonly tcbSigner: TestCert;
  readonly fmspc: string;
}

function newSerial(): string {
  // Positive, no leading zero byte: every printer agrees on it.
  const bytes = randomBytes(10);
  bytes[0] = 0x10 | (bytes[0]! & 0x6f);
  return bytes.toString('hex').toUpperCase();
}

function issue(
  dn: string,
  issuer: { dn: string; key: KeyObject } | 'self',
  options: { ca: boolean; extensions?: Buffer[]; notBefore?: Date; notAfter?: Date },
): TestCert {
  const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const serial = newSerial();
  const extensions = [
    // CA:TRUE for issuers; an empty BasicConstraints (CA:FALSE) for end entities, as Intel's PCK certificates.
    extension('2.5.29.19', true, options.ca ? seq(bool(true)) : seq()),
    // keyCertSign|cRLSign for CAs, digitalSignature|nonRepudiation otherwise.
    extension('2.5.29.15', true, options.ca ? bits(Buffer.from([0x06]), 1) : bits(Buffer.from([0xc0]), 6)),
    ...(options.extensions ?? []),
  ];
  const tbs = seq(
    explicit(0, integer(2)),
    integerHex(serial),
    ECDSA_WITH_SHA256,
    name(issuer === 'self' ? dn : issuer.dn),
    seq(time(options.notBefore ?? CERT_NOT_BEFORE), time(options.notAfter ?? CERT_NOT_AFTER)),
    name(dn),
    keys.publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(...extensions)),
  );
  const signature = sign('sha256', tbs, issuer === 'self' ? keys.privateKey : issuer.key);
  const der = seq(tbs, ECDSA_WITH_SHA256, bits(signature));
  const cert = new X509Certificate(der);
  return { cert, pem: cert.toString(), dn, key: keys.privateKey, serial };
}

export interface PkiOptions {
  /** Distinguishes PKIs in names (e.g. an attacker's look-alike). */
  readonly label?: string;
  readonly fmspc?: string;
  readonly cpuSvn?: number[];
  readonly pceSvn?: number;
  /** PCEID in the PCK certificate (hex, 2 bytes; default 0000 as Intel's). */
  readonly pceId?: string;
  /** Validity of the PCK leaf (e.g. an expired one). */
  readonly pckLeafNotAfter?: Date;
  /**
   * Validity of every certificate (default 2029-01-01 to 2039-01-01, around TEST_TIME). Tests
   * against a process that evaluates at the wall clock (the sealer) set a window around now.
   */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

export async function createTestPki(options: PkiOptions = {}): Promise<TestPki> {
  const label = options.label ?? 'Test';
  const fmspc = options.fmspc ?? TEST_FMSPC;
  const validity = { ...(options.notBefore ? { notBefore: options.notBefore } : {}), ...(options.notAfter ? { notAfter: options.notAfter } : {}) };
  const root = issue(`CN=${label} SGX Root CA,O=tee-kms tests,C=US`, 'self', { ca: true, ...validity });
  const pckCa = issue(`CN=${label} SGX PCK Platform CA,O=tee-kms tests,C=US`, root, { ca: true, ...validity });
  const pckLeaf = issue(`CN=${label} SGX PCK Certificate,O=tee-kms tests,C=US`, pckCa, {
    ca: false,
    extensions: [extension(SGX_EXT, false, intelSgxExtension(fmspc, options.cpuSvn ?? TEST_CPU_SVN, options.pceSvn ?? TEST_PCE_SVN, options.pceId ?? '0000'))],
    ...validity,
    ...(options.pckLeafNotAfter ? { notAfter: options.pckLeafNotAfter } : {}),
  });
  const tcbSigner = issue(`CN=${label} SGX TCB Signing,O=tee-kms tests,C=US`, root, { ca: false, ...validity });
  return { root, pckCa, pckLeaf, tcbSigner, fmspc };
}

// ---------------------------------------------------------------------------------------------
// Collateral

export interface CollateralOptions {
  readonly issueDate?: Date;
  readonly nextUpdate?: Date;
  /** Serials (TestCert.serial) the PCK CA revokes. */
  readonly revokedPckSerials?: readonly string[];
  /** Serials the root CA revokes (intermediates). */
  readonly revokedCaSerials?: readonly string[];
  /** Sign the PCK CRL with this key instead of the PCK CA's (a forged CRL). */
  readonly pckCrlSigner?: TestCert;
  /** TCB info `tdxModule` (default: zero MRSIGNER, attributes 0 under a full mask, as Intel's). */
  readonly tdxModule?: TestTdxModule;
  /** TCB info `tdxModuleIdentities` (default DEFAULT_TDX_MODULE_IDENTITIES). */
  readonly tdxModuleIdentities?: readonly TestTdxModuleIdentity[];
  /** TCB info `tcbLevels` (default DEFAULT_TCB_LEVELS). */
  readonly tcbLevels?: readonly TestTcbLevel[];
  /** tcbEvaluationDataNumber of the TCB info and the QE identity (default 17). */
  readonly tcbEvaluationDataNumber?: number;
  readonly qeTcbEvaluationDataNumber?: number;
  /** TCB info `pceId` (default 0000). */
  readonly pceId?: string;
  /** QE identity `tcbLevels` (default: isvsvn 4 UpToDate, the synthetic QE's SVN). */
  readonly qeTcbLevels?: readonly { isvsvn: number; tcbStatus: string; advisoryIDs?: string[] }[];
}

export interface TestTdxModule {
  readonly mrsigner: string;
  readonly attributes: string;
  readonly attributesMask: string;
}

export interface TestTdxModuleIdentity extends TestTdxModule {
  readonly id: string;
  readonly tcbLevels: readonly { isvsvn: number; tcbStatus: string; advisoryIDs?: string[] }[];
}

export interface TestTcbLevel {
  readonly sgx: number[];
  readonly pceSvn: number;
  /** tdxtcbcomponents (padded with zeros to 16). */
  readonly tdx: number[];
  readonly tcbStatus: string;
  readonly advisoryIDs?: string[];
}

export const DEFAULT_TDX_MODULE: TestTdxModule = { mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' };

/** Like Intel's: TDX module major version 1 (TEE_TCB_SVN[1] = 1), SVN 4 and up UpToDate. */
export const DEFAULT_TDX_MODULE_IDENTITIES: readonly TestTdxModuleIdentity[] = [
  { id: 'TDX_03', ...DEFAULT_TDX_MODULE, tcbLevels: [{ isvsvn: 3, tcbStatus: 'UpToDate' }] },
  {
    id: 'TDX_01',
    ...DEFAULT_TDX_MODULE,
    tcbLevels: [
      { isvsvn: 4, tcbStatus: 'UpToDate' },
      { isvsvn: 2, tcbStatus: 'OutOfDate', advisoryIDs: ['INTEL-SA-01036', 'INTEL-SA-01099'] },
    ],
  },
];

export const DEFAULT_TCB_LEVELS: readonly TestTcbLevel[] = [
  { sgx: TEST_CPU_SVN, pceSvn: TEST_PCE_SVN, tdx: [5, 0, 3], tcbStatus: 'UpToDate' },
  {
    sgx: [2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
    pceSvn: 5,
    tdx: [5, 0, 2],
    tcbStatus: 'OutOfDate',
    advisoryIDs: ['INTEL-SA-00837', 'INTEL-SA-01036'],
  },
];

const isoSeconds = (date: Date): string => date.toISOString().replace(/\.\d{3}Z$/, 'Z');
const svnList = (svns: number[]) => svns.map((svn) => ({ svn }));
const p1363 = (data: string, key: KeyObject): string => sign('sha256', Buffer.from(data, 'utf8'), { key, dsaEncoding: 'ieee-p1363' }).toString('hex');

/** A DER CRL (v2) by `issuer`, listing `revoked` serials. */
function crl(issuer: TestCert, signer: KeyObject, thisUpdate: Date, nextUpdate: Date, revoked: readonly string[]): string {
  const entries = revoked.map((serial) => seq(integerHex(serial), time(thisUpdate)));
  const tbs = seq(integer(1), ECDSA_WITH_SHA256, name(issuer.dn), time(thisUpdate), time(nextUpdate), ...(entries.length ? [seq(...entries)] : []));
  return seq(tbs, ECDSA_WITH_SHA256, bits(sign('sha256', tbs, signer))).toString('hex');
}

/** Collateral in dcap-qvl's JSON shape (the fixture files' shape), signed by `pki`. */
export async function buildCollateral(pki: TestPki, options: CollateralOptions = {}) {
  const issueDate = options.issueDate ?? COLLATERAL_ISSUE;
  const nextUpdate = options.nextUpdate ?? COLLATERAL_NEXT_UPDATE;
  const tdxComponents = (svns: number[]) => svnList([...svns, ...Array(16 - svns.length).fill(0)]);
  const tcbInfo = JSON.stringify({
    id: 'TDX',
    version: 3,
    issueDate: isoSeconds(issueDate),
    nextUpdate: isoSeconds(nextUpdate),
    fmspc: pki.fmspc,
    pceId: options.pceId ?? '0000',
    tcbType: 0,
    tcbEvaluationDataNumber: options.tcbEvaluationDataNumber ?? 17,
    tdxModule: options.tdxModule ?? DEFAULT_TDX_MODULE,
    tdxModuleIdentities: (options.tdxModuleIdentities ?? DEFAULT_TDX_MODULE_IDENTITIES).map((identity) => ({
      ...identity,
      tcbLevels: identity.tcbLevels.map(({ isvsvn, tcbStatus, advisoryIDs }) => ({
        tcb: { isvsvn },
        tcbDate: '2029-11-13T00:00:00Z',
        tcbStatus,
        ...(advisoryIDs ? { advisoryIDs } : {}),
      })),
    })),
    tcbLevels: (options.tcbLevels ?? DEFAULT_TCB_LEVELS).map((level) => ({
      tcb: { sgxtcbcomponents: svnList(level.sgx), pcesvn: level.pceSvn, tdxtcbcomponents: tdxComponents(level.tdx) },
      tcbDate: '2029-11-13T00:00:00Z',
      tcbStatus: level.tcbStatus,
      ...(level.advisoryIDs ? { advisoryIDs: level.advisoryIDs } : {}),
    })),
  });
  const qeIdentity = JSON.stringify({
    id: 'TD_QE',
    version: 2,
    issueDate: isoSeconds(issueDate),
    nextUpdate: isoSeconds(nextUpdate),
    tcbEvaluationDataNumber: options.qeTcbEvaluationDataNumber ?? options.tcbEvaluationDataNumber ?? 17,
    miscselect: '00000000',
    miscselectMask: 'FFFFFFFF',
    attributes: '11000000000000000000000000000000',
    attributesMask: 'FBFFFFFFFFFFFFFF0000000000000000',
    mrsigner: TEST_QE_MRSIGNER.toUpperCase(),
    isvprodid: 2,
    tcbLevels: (options.qeTcbLevels ?? [{ isvsvn: 4, tcbStatus: 'UpToDate' }]).map(({ isvsvn, tcbStatus, advisoryIDs }) => ({
      tcb: { isvsvn },
      tcbDate: '2029-11-13T00:00:00Z',
      tcbStatus,
      ...(advisoryIDs ? { advisoryIDs } : {}),
    })),
  });
  const pckCrlSigner = options.pckCrlSigner ?? pki.pckCa;
  return {
    pck_crl_issuer_chain: `${pki.pckCa.pem}\n${pki.root.pem}\n`,
    root_ca_crl: crl(pki.root, pki.root.key, issueDate, nextUpdate, options.revokedCaSerials ?? []),
    pck_crl: crl(pki.pckCa, pckCrlSigner.key, issueDate, nextUpdate, options.revokedPckSerials ?? []),
    tcb_info_issuer_chain: `${pki.tcbSigner.pem}\n${pki.root.pem}\n`,
    tcb_info: tcbInfo,
    tcb_info_signature: p1363(tcbInfo, pki.tcbSigner.key),
    qe_identity_issuer_chain: `${pki.tcbSigner.pem}\n${pki.root.pem}\n`,
    qe_identity: qeIdentity,
    qe_identity_signature: p1363(qeIdentity, pki.tcbSigner.key),
  };
}

// ---------------------------------------------------------------------------------------------
// Quotes

export interface TdReportFields {
  teeTcbSvn: string;
  mrSeam: string;
  mrSignerSeam: string;
  seamAttributes: string;
  tdAttributes: string;
  xfam: string;
  mrTd: string;
  mrConfigId: string;
  mrOwner: string;
  mrOwnerConfig: string;
  rtmr: [string, string, string, string];
  reportData: Uint8Array;
  /** TD report 1.5 (v5, body type 3) only. */
  teeTcbSvn2: string;
  mrServiceTd: string;
}

const filled = (byte: number, length = 48): string => byte.toString(16).padStart(2, '0').repeat(length);

/** TDATTRIBUTES with only SEPT_VE_DISABLE (bit 28) set, as production TDs run. */
export const TD_ATTRIBUTES_PRODUCTION = '0000001000000000';
/** The same plus DEBUG (bit 0). */
export const TD_ATTRIBUTES_DEBUG = '0100001000000000';

export const DEFAULT_TD: Readonly<TdReportFields> = {
  teeTcbSvn: '06010300000000000000000000000000',
  mrSeam: filled(0x5e),
  mrSignerSeam: filled(0x00),
  seamAttributes: '0000000000000000',
  tdAttributes: TD_ATTRIBUTES_PRODUCTION,
  xfam: 'e702060000000000',
  mrTd: filled(0x7d),
  mrConfigId: filled(0xc0),
  mrOwner: filled(0x00),
  mrOwnerConfig: filled(0x00),
  rtmr: [filled(0xa0), filled(0xa1), filled(0xa2), filled(0xa3)],
  reportData: new Uint8Array(64),
  teeTcbSvn2: '06010300000000000000000000000000',
  mrServiceTd: filled(0x00),
};

/** The reference values an operator would write for DEFAULT_TD (values as verify-quote prints them). */
export const DEFAULT_TD_POLICY = {
  mrTd: [DEFAULT_TD.mrTd],
  rtmr0: [DEFAULT_TD.rtmr[0]],
  rtmr1: [DEFAULT_TD.rtmr[1]],
  rtmr2: [DEFAULT_TD.rtmr[2]],
  mrConfigId: [DEFAULT_TD.mrConfigId],
  allowedTcbStatuses: ['UpToDate'],
};

export interface QuoteOptions {
  readonly version?: 4 | 5;
  /** v5 body type: 2 = TD report 1.0, 3 = TD report 1.5 (default 3 for v5). */
  readonly bodyType?: 2 | 3;
  readonly report?: Partial<TdReportFields>;
  readonly qeAuthData?: Uint8Array;
  /** Bytes appended after the signature data (real providers sometimes pad). */
  readonly trailing?: Uint8Array;
  /** Set the QE report's DEBUG attribute. */
  readonly debugQe?: boolean;
  /** Leave the PCK chain out (certification data type 5 with an empty chain). */
  readonly omitPckChain?: boolean;
  /** The header's QE vendor ID (32 hex digits; default Intel's), signed like any header field. */
  readonly qeVendorId?: string;
  /** The QE report data's upper 32 bytes (default zero), signed by the PCK key like the rest. */
  readonly qeReportDataUpperHalf?: Uint8Array;
}

/** Offsets of interesting regions, for tests that corrupt them. */
export interface QuoteLayout {
  readonly mrTd: number;
  readonly reportData: number;
  readonly quoteSignature: number;
  readonly attestationKey: number;
  readonly qeReport: number;
  readonly qeReportSignature: number;
}

export interface BuiltQuote {
  readonly quote: Buffer;
  readonly layout: QuoteLayout;
}

const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const hexBytes = (hex: string, length: number): Buffer => {
  const bytes = Buffer.from(hex, 'hex');
  if (bytes.length !== length) throw new Error(`builder: expected ${length} bytes, got ${bytes.length}`);
  return bytes;
};

function tdReport(fields: TdReportFields, v15: boolean): Buffer {
  if (fields.reportData.length !== 64) throw new Error('builder: reportData must be 64 bytes');
  return Buffer.concat([
    hexBytes(fields.teeTcbSvn, 16),
    hexBytes(fields.mrSeam, 48),
    hexBytes(fields.mrSignerSeam, 48),
    hexBytes(fields.seamAttributes, 8),
    hexBytes(fields.tdAttributes, 8),
    hexBytes(fields.xfam, 8),
    hexBytes(fields.mrTd, 48),
    hexBytes(fields.mrConfigId, 48),
    hexBytes(fields.mrOwner, 48),
    hexBytes(fields.mrOwnerConfig, 48),
    ...fields.rtmr.map((r) => hexBytes(r, 48)),
    Buffer.from(fields.reportData),
    ...(v15 ? [hexBytes(fields.teeTcbSvn2, 16), hexBytes(fields.mrServiceTd, 48)] : []),
  ]);
}

function qeReport(reportData: Buffer, debug: boolean): Buffer {
  const attributes = Buffer.alloc(16);
  attributes[0] = debug ? 0x13 : 0x11; // INIT | MODE64BIT (| DEBUG)
  const report = Buffer.concat([
    Buffer.from(TEST_CPU_SVN), // cpu_svn
    u32(0), // misc_select
    Buffer.alloc(28),
    attributes,
    randomBytes(32), // mr_enclave
    Buffer.alloc(32),
    Buffer.from(TEST_QE_MRSIGNER, 'hex'),
    Buffer.alloc(96),
    u16(2), // isv_prod_id
    u16(4), // isv_svn
    Buffer.alloc(60),
    reportData,
  ]);
  if (report.length !== 384) throw new Error('builder: QE report size');
  return report;
}

/** A TDX quote signed by a fresh attestation key certified by `pki`'s PCK key. */
export function buildTdxQuote(pki: TestPki, options: QuoteOptions = {}): BuiltQuote {
  const version = options.version ?? 4;
  const bodyType = version === 5 ? (options.bodyType ?? 3) : 2;
  const fields: TdReportFields = { ...DEFAULT_TD, ...options.report } as TdReportFields;
  const body = tdReport(fields, bodyType === 3);
  const header = Buffer.concat([
    u16(version),
    u16(2), // ECDSA-256 with P-256
    u32(0x81), // TDX
    u16(0),
    u16(0),
    hexBytes(options.qeVendorId ?? '939a7233f79c4ca9940a0db3957f0607', 16), // Intel QE vendor ID
    Buffer.alloc(20),
  ]);
  const descriptor = version === 5 ? Buffer.concat([u16(bodyType), u32(body.length)]) : Buffer.alloc(0);
  const signed = Buffer.concat([header, descriptor, body]);

  const attestation = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const jwk = attestation.publicKey.export({ format: 'jwk' });
  const attestationKey = Buffer.concat([Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  const quoteSignature = sign('sha256', signed, { key: attestation.privateKey, dsaEncoding: 'ieee-p1363' });

  const qeAuthData = Buffer.from(options.qeAuthData ?? randomBytes(32));
  const binding = createHash('sha256').update(attestationKey).update(qeAuthData).digest();
  const upper = Buffer.from(options.qeReportDataUpperHalf ?? Buffer.alloc(32));
  if (upper.length !== 32) throw new Error('builder: qeReportDataUpperHalf must be 32 bytes');
  const qe = qeReport(Buffer.concat([binding, upper]), options.debugQe === true);
  const qeSignature = sign('sha256', qe, { key: pki.pckLeaf.key, dsaEncoding: 'ieee-p1363' });
  const chain = options.omitPckChain ? Buffer.alloc(0) : Buffer.from(`${pki.pckLeaf.pem}\n${pki.pckCa.pem}\n${pki.root.pem}\n\0`, 'latin1');
  const certificationData = Buffer.concat([qe, qeSignature, u16(qeAuthData.length), qeAuthData, u16(5), u32(chain.length), chain]);
  const signatureData = Buffer.concat([quoteSignature, attestationKey, u16(6), u32(certificationData.length), certificationData]);
  const quote = Buffer.concat([signed, u32(signatureData.length), signatureData, options.trailing ?? Buffer.alloc(0)]);

  const bodyStart = header.length + descriptor.length;
  const sigStart = signed.length + 4;
  return {
    quote,
    layout: {
      mrTd: bodyStart + 16 + 48 + 48 + 8 + 8 + 8,
      reportData: bodyStart + 520,
      quoteSignature: sigStart,
      attestationKey: sigStart + 64,
      qeReport: sigStart + 64 + 64 + 6,
      qeReportSignature: sigStart + 64 + 64 + 6 + 384,
    },
  };
}

/** A copy of `bytes` with one bit flipped. */
export function flipBit(bytes: Uint8Array, offset: number, bit = 0): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = copy[offset]! ^ (1 << bit);
  return copy;
}

/** Trustee-shaped evidence for a quote. */
export function evidenceFor(quote: Uint8Array, ccEventlog?: Uint8Array): { quote: string; cc_eventlog?: string } {
  return ccEventlog
    ? { quote: Buffer.from(quote).toString('base64'), cc_eventlog: Buffer.from(ccEventlog).toString('base64') }
    : { quote: Buffer.from(quote).toString('base64') };
}

/** 64-byte report_data: `seed` hashed and zero-padded, like the KBS binding. */
export function reportDataFrom(seed: string): Uint8Array {
  const out = new Uint8Array(64);
  out.set(createHash('sha384').update(seed).digest());
  return out;
}
