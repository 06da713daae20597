/**
 * Fetches TDX collateral from a PCCS or Intel PCS over the standard v4 REST endpoints.
 *
 * Why not dcap-qvl's getCollateral: in 0.3.9 its PCK issuer detection (utils.getCertIssuer)
 * returns an empty string, so it always asks for the *processor* CA's PCK CRL, also for the
 * (common) platform-CA TDX hosts; with CRLs checked properly every such TD would be refused. It
 * also has no timeout. The endpoints are simple, so we call them ourselves with the CA taken
 * from the PCK certificate, and keep the library for verification.
 *
 * Why node:http(s) rather than fetch: https only (a redirect is not followed, so it cannot lead
 * to http), a CA of our choosing for a private PCCS or tests (fetch takes none without another
 * package), and a bound on every response body.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import { PEM_CERTIFICATES, pemBundle } from '../../../shared/crypto/pem-bundle.js';
import { readBounded } from '../../../shared/http/body.js';
import type { PckCa, TdxCollateral } from './collateral.js';

export const INTEL_PCS_URL = 'https://api.trustedservices.intel.com';
/** The Intel SGX Root CA's CRL distribution point (Intel PCS has no rootcacrl endpoint). */
export const INTEL_ROOT_CA_CRL_URL = 'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der';
/** Node's bundled root certificates (Mozilla's), without NODE_EXTRA_CA_CERTS: PccsRequest.tlsCa's default. */
const BUNDLED_ROOTS = [...rootCertificates];
/** Intel's largest answer (a PCK CRL) is tens of kilobytes; a PCCS sending more is refused. */
export const MAX_PCCS_RESPONSE_BYTES = 4 * 1024 * 1024;

export class PccsError extends Error {
  override readonly name = 'PccsError';
}

export interface PccsRequest {
  /** PCCS or PCS base URL, with or without the /sgx|tdx/certification/v4 suffix. */
  readonly baseUrl: string;
  /** Uppercase hex. */
  readonly fmspc: string;
  readonly ca: PckCa;
  readonly timeoutMs?: number;
  /** Where to get the root CA CRL when the service has no rootcacrl endpoint (Intel PCS). */
  readonly rootCaCrlUrl?: string;
  /**
   * Permit http URLs (tests only): whoever controls an http PCCS connection can serve older
   * collateral that is still within its validity window. Default false: every URL must be https.
   */
  readonly allowHttp?: boolean;
  /**
   * PEM CA certificate(s) the service's TLS certificate must chain to. Default: Node's bundled root
   * certificates only, never those NODE_EXTRA_CA_CERTS adds (in Kubernetes the internal CA, which
   * the cluster administrator can replace, and with it serve older collateral from a PCCS of their
   * own under the PCCS's name).
   */
  readonly tlsCa?: string;
  /** The same for rootCaCrlUrl (tests); default Node's bundled roots, which vouch for Intel's distribution point. */
  readonly rootCaCrlTlsCa?: string;
}

interface PccsResponse {
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

/** One GET: https unless allowHttp, trusting tlsCa or the bundled roots, no redirects, a deadline for the whole answer, a bounded body. */
async function httpGet(url: string, what: string, request: PccsRequest, tlsCa: string | undefined): Promise<PccsResponse> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new PccsError(`${what} URL is not a URL`, { cause: error });
  }
  if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && request.allowHttp === true)) {
    throw new PccsError(`${what} URL must be https`);
  }
  const signal = AbortSignal.timeout(request.timeoutMs ?? 30_000);
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const options = { method: 'GET', signal, ca: tlsCa ?? BUNDLED_ROOTS };
    const req = parsed.protocol === 'https:' ? httpsRequest(parsed, options, resolve) : httpRequest(parsed, options, resolve);
    req.on('error', (error) => reject(new PccsError(`${what} request failed`, { cause: error })));
    req.end();
  });
  if (response.statusCode !== 200) {
    response.destroy();
    throw new PccsError(`${what} request answered HTTP ${response.statusCode}`);
  }
  try {
    return { headers: response.headers, body: await readBounded(response, MAX_PCCS_RESPONSE_BYTES) };
  } catch (error) {
    throw new PccsError(`${what} response could not be read`, { cause: error });
  }
}

function skipString(s: string, i: number): number {
  for (i += 1; i < s.length; i++) {
    if (s[i] === '\\') i += 1;
    else if (s[i] === '"') return i + 1;
  }
  throw new PccsError('unterminated JSON string');
}

function skipWhitespace(s: string, i: number): number {
  while (i < s.length && /\s/.test(s[i]!)) i++;
  return i;
}

function skipValue(s: string, i: number): number {
  if (s[i] === '"') return skipString(s, i);
  if (s[i] === '{' || s[i] === '[') {
    let depth = 0;
    while (i < s.length) {
      const c = s[i]!;
      if (c === '"') {
        i = skipString(s, i);
        continue;
      }
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    throw new PccsError('unbalanced JSON');
  }
  while (i < s.length && !/[,}\]\s]/.test(s[i]!)) i++;
  return i;
}

/**
 * The exact text of a top-level member's value. Intel signs the bytes of the "tcbInfo" /
 * "enclaveIdentity" object as served, so re-serializing parsed JSON could break the signature.
 */
export function rawJsonMember(body: string, key: string): string | undefined {
  JSON.parse(body); // validates; the scan below may then assume well-formed JSON
  let i = skipWhitespace(body, 0);
  if (body[i] !== '{') return undefined;
  i = skipWhitespace(body, i + 1);
  while (body[i] === '"') {
    const nameEnd = skipString(body, i);
    const name = JSON.parse(body.slice(i, nameEnd)) as string;
    i = skipWhitespace(body, skipWhitespace(body, nameEnd) + 1); // past ':'
    const valueEnd = skipValue(body, i);
    if (name === key) return body.slice(i, valueEnd);
    i = skipWhitespace(body, valueEnd);
    if (body[i] !== ',') return undefined;
    i = skipWhitespace(body, i + 1);
  }
  return undefined;
}

/** CRL bytes as DER, whichever of DER, hex text (PCCS) or PEM the service sent. */
export function crlToDer(body: Uint8Array): Buffer {
  if (body[0] === 0x30) return Buffer.from(body);
  const text = Buffer.from(body).toString('latin1').trim();
  if (/^([0-9a-fA-F]{2})+$/.test(text)) return Buffer.from(text, 'hex');
  const pem = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\s]+)-----END X509 CRL-----/.exec(text);
  if (pem) return Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64');
  throw new PccsError('CRL is neither DER, hex nor PEM');
}

export async function fetchPccsCollateral(request: PccsRequest): Promise<TdxCollateral> {
  const base = request.baseUrl.replace(/\/+$/, '').replace(/\/(sgx|tdx)\/certification\/v4$/, '');
  for (const ca of [request.tlsCa, request.rootCaCrlTlsCa]) {
    // An empty or malformed CA would be read as "the default store", NODE_EXTRA_CA_CERTS included.
    if (ca !== undefined && pemBundle(ca) === undefined) throw new PccsError(`a TLS CA must be ${PEM_CERTIFICATES}`);
  }
  const get = (url: string, what: string) => httpGet(url, what, request, request.tlsCa);
  const header = (response: PccsResponse, names: string[], what: string): string => {
    for (const name of names) {
      const value = response.headers[name.toLowerCase()];
      if (typeof value === 'string' && value !== '') return decodeURIComponent(value);
    }
    throw new PccsError(`${what} response lacks the ${names[0]} header`);
  };
  const signedDocument = (response: PccsResponse, member: string, what: string) => {
    const body = response.body.toString('utf8');
    let parsed: { signature?: unknown };
    try {
      parsed = JSON.parse(body) as { signature?: unknown };
    } catch (error) {
      throw new PccsError(`${what} is not JSON`, { cause: error });
    }
    const text = rawJsonMember(body, member);
    if (text === undefined || typeof parsed.signature !== 'string') throw new PccsError(`${what} lacks ${member} or signature`);
    return { text, signature: parsed.signature };
  };

  const pckCrl = (async () => {
    const response = await get(`${base}/sgx/certification/v4/pckcrl?ca=${request.ca}&encoding=der`, 'PCK CRL');
    return { chain: header(response, ['SGX-PCK-CRL-Issuer-Chain'], 'PCK CRL'), crl: crlToDer(response.body) };
  })();
  const tcbInfo = (async () => {
    const response = await get(`${base}/tdx/certification/v4/tcb?fmspc=${request.fmspc}`, 'TCB info');
    const chain = header(response, ['TCB-Info-Issuer-Chain', 'SGX-TCB-Info-Issuer-Chain'], 'TCB info');
    return { chain, ...signedDocument(response, 'tcbInfo', 'TCB info') };
  })();
  const qeIdentity = (async () => {
    const response = await get(`${base}/tdx/certification/v4/qe/identity?update=standard`, 'QE identity');
    const chain = header(response, ['SGX-Enclave-Identity-Issuer-Chain'], 'QE identity');
    return { chain, ...signedDocument(response, 'enclaveIdentity', 'QE identity') };
  })();
  const rootCrl = (async () => {
    // A PCCS serves the root CA CRL itself (hex); Intel PCS does not, so fall back to the CDP.
    const fromService = base.startsWith(INTEL_PCS_URL) ? undefined : await get(`${base}/sgx/certification/v4/rootcacrl`, 'root CA CRL').catch(() => undefined);
    // Intel's distribution point is not the PCCS: its certificate is a public one.
    const response = fromService ?? (await httpGet(request.rootCaCrlUrl ?? INTEL_ROOT_CA_CRL_URL, 'root CA CRL', request, request.rootCaCrlTlsCa));
    return crlToDer(response.body);
  })();

  const [pck, tcb, qe, root] = await Promise.all([pckCrl, tcbInfo, qeIdentity, rootCrl]);
  return {
    pck_crl_issuer_chain: pck.chain,
    root_ca_crl: root.toString('hex'),
    pck_crl: pck.crl.toString('hex'),
    tcb_info_issuer_chain: tcb.chain,
    tcb_info: tcb.text,
    tcb_info_signature: tcb.signature.toLowerCase(),
    qe_identity_issuer_chain: qe.chain,
    qe_identity: qe.text,
    qe_identity_signature: qe.signature.toLowerCase(),
  };
}
