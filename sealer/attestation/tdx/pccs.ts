/**
 * Fetches TDX collateral from a PCCS or Intel PCS over the standard v4 REST endpoints.
 *
 * Why not dcap-qvl's getCollateral: in 0.3.9 its PCK issuer detection (utils.getCertIssuer)
 * returns an empty string, so it always asks for the *processor* CA's PCK CRL, also for the
 * (common) platform-CA TDX hosts; with CRLs checked properly every such TD would be refused. It
 * also has no timeout. The endpoints are simple, so we call them ourselves with the CA taken
 * from the PCK certificate, and keep the library for verification.
 */
import type { PckCa, TdxCollateral } from './collateral.js';

export const INTEL_PCS_URL = 'https://api.trustedservices.intel.com';
/** The Intel SGX Root CA's CRL distribution point (Intel PCS has no rootcacrl endpoint). */
export const INTEL_ROOT_CA_CRL_URL = 'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der';

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
  readonly fetch?: typeof fetch;
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
  const fetchImpl = request.fetch ?? fetch;
  const timeoutMs = request.timeoutMs ?? 30_000;

  const get = async (url: string, what: string): Promise<Response> => {
    const response = await fetchImpl(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw new PccsError(`${what} request answered HTTP ${response.status}`);
    }
    return response;
  };
  const header = (response: Response, names: string[], what: string): string => {
    for (const name of names) {
      const value = response.headers.get(name);
      if (value) return decodeURIComponent(value);
    }
    throw new PccsError(`${what} response lacks the ${names[0]} header`);
  };
  const signedDocument = async (response: Response, member: string, what: string) => {
    const body = await response.text();
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
    return {
      chain: header(response, ['SGX-PCK-CRL-Issuer-Chain'], 'PCK CRL'),
      crl: crlToDer(new Uint8Array(await response.arrayBuffer())),
    };
  })();
  const tcbInfo = (async () => {
    const response = await get(`${base}/tdx/certification/v4/tcb?fmspc=${request.fmspc}`, 'TCB info');
    const chain = header(response, ['TCB-Info-Issuer-Chain', 'SGX-TCB-Info-Issuer-Chain'], 'TCB info');
    return { chain, ...(await signedDocument(response, 'tcbInfo', 'TCB info')) };
  })();
  const qeIdentity = (async () => {
    const response = await get(`${base}/tdx/certification/v4/qe/identity?update=standard`, 'QE identity');
    const chain = header(response, ['SGX-Enclave-Identity-Issuer-Chain'], 'QE identity');
    return { chain, ...(await signedDocument(response, 'enclaveIdentity', 'QE identity')) };
  })();
  const rootCrl = (async () => {
    // A PCCS serves the root CA CRL itself (hex); Intel PCS does not, so fall back to the CDP.
    const fromService = base.startsWith(INTEL_PCS_URL) ? undefined : await get(`${base}/sgx/certification/v4/rootcacrl`, 'root CA CRL').catch(() => undefined);
    const response = fromService ?? (await get(request.rootCaCrlUrl ?? INTEL_ROOT_CA_CRL_URL, 'root CA CRL'));
    return crlToDer(new Uint8Array(await response.arrayBuffer()));
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
