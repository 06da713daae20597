/**
 * DCAP collateral: Intel's signed statements (TCB info, QE identity, CRLs and their issuer chains)
 * that say which platforms are genuine and up to date. It comes from a file (the JSON shape of
 * dcap-qvl's `Collateral`, as in ../shared/tdx-fixtures) or from a PCCS / Intel PCS URL (pccs.ts),
 * cached in memory per FMSPC and CA until its earliest nextUpdate. Nothing here is trusted yet:
 * verify.ts checks every signature. The FMSPC that selects what to fetch comes only from a PCK
 * certificate whose chain verifies up to the trusted root, so a forged certificate cannot make the
 * verifier fetch anything.
 */
import type { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import dcapQvl from '@phala/dcap-qvl';
import { PEM_CERTIFICATES, pemBundle } from '../../../shared/crypto/pem-bundle.js';
import { KmsError } from '../../../shared/errors.js';
import { parseCrl, parsePemBundle, PkiError, verifyChain } from './pki.js';
import { fetchPccsCollateral, type PccsRequest } from './pccs.js';
import { refuse } from './policy.js';
import type { TdxQuote } from '../../../shared/attestation/tdx/quote.js';

/** Byte-valued fields are lowercase hex; JSON documents are kept verbatim (they are signed as text). */
export interface TdxCollateral {
  readonly pck_crl_issuer_chain: string;
  readonly root_ca_crl: string;
  readonly pck_crl: string;
  readonly tcb_info_issuer_chain: string;
  readonly tcb_info: string;
  readonly tcb_info_signature: string;
  readonly qe_identity_issuer_chain: string;
  readonly qe_identity: string;
  readonly qe_identity_signature: string;
}

const TEXT_FIELDS = ['pck_crl_issuer_chain', 'tcb_info_issuer_chain', 'tcb_info', 'qe_identity_issuer_chain', 'qe_identity'] as const;
const BYTE_FIELDS = ['root_ca_crl', 'pck_crl', 'tcb_info_signature', 'qe_identity_signature'] as const;

function bytesAsHex(value: unknown, field: string, source: string): string {
  // dcap-qvl's fetch helpers return byte arrays; the fixture files use hex strings.
  if (typeof value === 'string' && /^([0-9a-fA-F]{2})+$/.test(value)) return value.toLowerCase();
  if (Array.isArray(value) && value.length > 0 && value.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) {
    return Buffer.from(value as number[]).toString('hex');
  }
  throw new KmsError('CONFIG', `TDX collateral from ${source}: ${field} must be hex or a byte array`);
}

/** Validates the collateral JSON shape; KmsError('CONFIG') names the bad field. */
export function parseCollateral(value: unknown, source: string): TdxCollateral {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KmsError('CONFIG', `TDX collateral from ${source} must be a JSON object`);
  }
  const record = value as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const field of TEXT_FIELDS) {
    const text = record[field];
    if (typeof text !== 'string' || text.length === 0) {
      throw new KmsError('CONFIG', `TDX collateral from ${source}: ${field} is missing`);
    }
    out[field] = text;
  }
  for (const field of BYTE_FIELDS) out[field] = bytesAsHex(record[field], field, source);
  return out as unknown as TdxCollateral;
}

export async function loadCollateralFile(path: string): Promise<TdxCollateral> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new KmsError('CONFIG', `TDX collateral file ${path} cannot be read`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new KmsError('CONFIG', `TDX collateral file ${path} is not JSON`, { cause: error });
  }
  return parseCollateral(json, path);
}

export interface ValidityWindow {
  readonly issueDate: Date;
  readonly nextUpdate: Date;
}

function documentWindow(json: string, field: string): ValidityWindow {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (error) {
    return refuse('collateral', `${field} is not JSON`, error);
  }
  const { issueDate, nextUpdate } = (doc ?? {}) as { issueDate?: unknown; nextUpdate?: unknown };
  const issued = new Date(typeof issueDate === 'string' ? issueDate : Number.NaN);
  const next = new Date(typeof nextUpdate === 'string' ? nextUpdate : Number.NaN);
  if (Number.isNaN(issued.getTime()) || Number.isNaN(next.getTime())) {
    refuse('collateral', `${field} lacks a valid issueDate/nextUpdate`);
  }
  return { issueDate: issued, nextUpdate: next };
}

export interface CollateralWindows {
  readonly tcbInfo: ValidityWindow;
  readonly qeIdentity: ValidityWindow;
  /** Latest issue date and earliest next update over TCB info and QE identity. */
  readonly overall: ValidityWindow;
}

/** The issue/nextUpdate dates of the signed JSON documents (refusal 'collateral' if unreadable). */
export function collateralWindows(collateral: TdxCollateral): CollateralWindows {
  const tcbInfo = documentWindow(collateral.tcb_info, 'tcb_info');
  const qeIdentity = documentWindow(collateral.qe_identity, 'qe_identity');
  const latest = (a: Date, b: Date) => (a > b ? a : b);
  const earliest = (a: Date, b: Date) => (a < b ? a : b);
  return {
    tcbInfo,
    qeIdentity,
    overall: {
      issueDate: latest(tcbInfo.issueDate, qeIdentity.issueDate),
      nextUpdate: earliest(tcbInfo.nextUpdate, qeIdentity.nextUpdate),
    },
  };
}

/** When cached collateral must be refetched: the earliest nextUpdate of the documents and CRLs. */
export function collateralExpiry(collateral: TdxCollateral): Date {
  let expiry = collateralWindows(collateral).overall.nextUpdate;
  for (const field of ['root_ca_crl', 'pck_crl'] as const) {
    try {
      const next = parseCrl(Buffer.from(collateral[field], 'hex'), field).nextUpdate;
      if (next !== undefined && next < expiry) expiry = next;
    } catch {
      // A malformed CRL is refused at verification; for caching, the document dates suffice.
    }
  }
  return expiry;
}

export type PckCa = 'processor' | 'platform';

export interface PlatformId {
  /** Uppercase hex, as PCCS URLs and TCB info spell it. */
  readonly fmspc: string;
  readonly ca: PckCa;
}

/** What a PCK chain is checked against: the trust anchor and the evaluation time. */
export interface ChainTrust {
  readonly trustedRootCa: X509Certificate;
  readonly at: Date;
}

/**
 * The quote's PCK leaf, once its chain verifies up to the trusted root at `trust.at` (signatures,
 * names, validity, CA flags). Revocation needs the CRLs, which come with the collateral: verify.ts
 * checks the whole chain again with them.
 */
function verifiedPckLeaf(quote: TdxQuote, trust: ChainTrust): X509Certificate {
  if (quote.signature.pckCertChainPem.length === 0) refuse('pck_chain', 'the quote carries no PCK certificate chain');
  try {
    const chain = parsePemBundle(quote.signature.pckCertChainPem.join('\n'), 'PCK chain');
    verifyChain(chain, trust.trustedRootCa, trust.at, [], 'PCK chain', { checkRevocation: false });
    return chain[0]!;
  } catch (error) {
    if (error instanceof PkiError) refuse('pck_chain', error.message, error);
    throw error;
  }
}

/** FMSPC (from the Intel SGX extension of the verified PCK certificate) and its issuing CA. */
export function platformIdOf(quote: TdxQuote, trust: ChainTrust): PlatformId {
  const leaf = verifiedPckLeaf(quote, trust);
  try {
    const extension = dcapQvl.utils.getIntelExtension(Buffer.from(leaf.raw));
    const fmspc = Buffer.from(dcapQvl.utils.getFmspc(extension)).toString('hex').toUpperCase();
    // Intel names the two PCK issuers "Intel SGX PCK Platform CA" and "… Processor CA".
    const ca: PckCa = /PCK Platform CA/i.test(leaf.issuer) ? 'platform' : 'processor';
    return { fmspc, ca };
  } catch (error) {
    return refuse('pck_chain', 'the PCK certificate lacks a readable Intel SGX extension (FMSPC)', error);
  }
}

/** Where the verifier gets collateral for a quote. */
export interface CollateralSource {
  /** `trust`: what the quote's PCK chain must verify against before it selects any collateral. */
  collateralFor(quote: TdxQuote, trust: ChainTrust): Promise<TdxCollateral>;
}

/** The same collateral for every quote (a file, or tests). */
export class StaticCollateralSource implements CollateralSource {
  constructor(private readonly collateral: TdxCollateral) {}

  static async fromFile(path: string): Promise<StaticCollateralSource> {
    return new StaticCollateralSource(await loadCollateralFile(path));
  }

  async collateralFor(_quote: TdxQuote, _trust: ChainTrust): Promise<TdxCollateral> {
    return this.collateral;
  }
}

/** Fetches collateral for one platform type; default: the PCCS v4 endpoints (pccs.ts). */
export type CollateralFetcher = (request: PccsRequest) => Promise<TdxCollateral>;

export interface PccsCollateralSourceOptions {
  /** PCCS base URL (e.g. https://pccs.example:8081) or Intel PCS (https://api.trustedservices.intel.com). */
  readonly baseUrl: string;
  /**
   * Accept an http base URL (tests only). Whoever controls an http PCCS connection can serve
   * older collateral that is still valid (a TCB level before a new advisory, a CRL before a
   * revocation). Default false.
   */
  readonly allowHttp?: boolean;
  /** PEM CA certificate(s) the PCCS's TLS certificate must chain to (KMS_SEALER_PCCS_CA); default Node's bundled roots only (pccs.ts). */
  readonly tlsCa?: string;
  /** Clock for cache expiry; default the wall clock. */
  readonly now?: () => Date;
  /** Refetch at the latest after this long even if nextUpdate is later (new revocations); default 1 h. */
  readonly maxAgeMs?: number;
  /** A failed fetch is remembered this long per (FMSPC, CA), so a flood of quotes is not a flood of PCCS requests; default 30 s. */
  readonly failureTtlMs?: number;
  /** Bound on cached platforms (successes and failures); when full, expired entries go first, then the oldest. Default 1024. */
  readonly maxEntries?: number;
  readonly timeoutMs?: number;
  /** Root CA CRL location when the service has no rootcacrl endpoint; default Intel's. */
  readonly rootCaCrlUrl?: string;
  readonly fetcher?: CollateralFetcher;
}

interface CacheEntry {
  readonly promise: Promise<TdxCollateral>;
  expiresAt: number;
}

/**
 * Collateral from a PCCS or Intel PCS, cached per (FMSPC, CA): every TD on one platform type
 * shares it. Concurrent requests for one key share one fetch; a failed fetch is remembered for
 * failureTtlMs. Keys come only from PCK chains that verify up to the trusted root, so the cache
 * holds real platform types, which are few.
 */
export class PccsCollateralSource implements CollateralSource {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly now: () => Date;
  private readonly maxAgeMs: number;
  private readonly failureTtlMs: number;
  private readonly maxEntries: number;
  private readonly timeoutMs: number;
  private readonly fetcher: CollateralFetcher;
  private readonly baseUrl: string;
  private readonly rootCaCrlUrl: string | undefined;
  private readonly allowHttp: boolean;
  private readonly tlsCa: string | undefined;

  constructor(options: PccsCollateralSourceOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch (error) {
      throw new KmsError('CONFIG', 'TDX collateral: PCCS base URL is not a URL', { cause: error });
    }
    this.allowHttp = options.allowHttp === true;
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.allowHttp)) {
      throw new KmsError('CONFIG', `TDX collateral: PCCS base URL must be https${this.allowHttp ? ' or http' : ''}`);
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.now = options.now ?? (() => new Date());
    this.maxAgeMs = options.maxAgeMs ?? 60 * 60 * 1000;
    this.failureTtlMs = options.failureTtlMs ?? 30_000;
    this.maxEntries = Math.max(1, options.maxEntries ?? 1024);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.rootCaCrlUrl = options.rootCaCrlUrl;
    if (options.tlsCa !== undefined && pemBundle(options.tlsCa) === undefined) {
      throw new KmsError('CONFIG', `TDX collateral: the PCCS's CA must be ${PEM_CERTIFICATES}`);
    }
    this.tlsCa = options.tlsCa;
    this.fetcher = options.fetcher ?? fetchPccsCollateral;
  }

  async collateralFor(quote: TdxQuote, trust: ChainTrust): Promise<TdxCollateral> {
    const platform = platformIdOf(quote, trust);
    const key = `${platform.fmspc}/${platform.ca}`;
    const nowMs = this.now().getTime();
    const cached = this.cache.get(key);
    if (cached && nowMs < cached.expiresAt) return cached.promise;

    if (cached) this.cache.delete(key);
    this.makeRoom(nowMs);
    const entry: CacheEntry = { promise: this.fetch(platform, key), expiresAt: Number.POSITIVE_INFINITY };
    this.cache.set(key, entry);
    try {
      const collateral = await entry.promise;
      entry.expiresAt = Math.min(collateralExpiry(collateral).getTime(), nowMs + this.maxAgeMs);
      return collateral;
    } catch (error) {
      entry.expiresAt = this.now().getTime() + this.failureTtlMs;
      throw error;
    }
  }

  /** Keeps the cache within maxEntries: expired entries go first, then the oldest. */
  private makeRoom(nowMs: number): void {
    if (this.cache.size < this.maxEntries) return;
    for (const [key, entry] of this.cache) if (nowMs >= entry.expiresAt) this.cache.delete(key);
    for (const key of this.cache.keys()) {
      if (this.cache.size < this.maxEntries) break;
      this.cache.delete(key);
    }
  }

  private async fetch(platform: PlatformId, key: string): Promise<TdxCollateral> {
    let fetched: TdxCollateral;
    try {
      fetched = await this.fetcher({
        baseUrl: this.baseUrl,
        fmspc: platform.fmspc,
        ca: platform.ca,
        timeoutMs: this.timeoutMs,
        allowHttp: this.allowHttp,
        ...(this.rootCaCrlUrl === undefined ? {} : { rootCaCrlUrl: this.rootCaCrlUrl }),
        ...(this.tlsCa === undefined ? {} : { tlsCa: this.tlsCa }),
      });
    } catch (error) {
      // The URL and FMSPC are configuration, not secrets; the dependency's text stays in `cause`.
      // A 503 to whoever waits on it: a PCCS outage passes, and the failure is kept only failureTtlMs.
      throw new KmsError('ATTESTATION_UNAVAILABLE', `TDX collateral for ${key} could not be fetched from ${this.baseUrl}`, { cause: error });
    }
    try {
      return parseCollateral(fetched, this.baseUrl);
    } catch (error) {
      throw new KmsError('INTERNAL', `TDX collateral for ${key} from ${this.baseUrl} is malformed`, { cause: error });
    }
  }
}
