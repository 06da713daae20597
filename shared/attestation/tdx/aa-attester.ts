/**
 * TDX attester for Confidential Containers pods: asks the CoCo attestation agent through its
 * REST front end (guest-components api-server-rest, default http://127.0.0.1:8006) for evidence:
 *
 *   GET /aa/evidence?runtime_data=<base64url, no padding>&encoding=base64
 *
 * Without `encoding=base64` the server takes the raw UTF-8 bytes of the query value as runtime
 * data (legacy behaviour), which cannot carry our 64 binary bytes; `encoding=base64` (URL-safe
 * alphabet, no padding) was added in guest-components in 2026-05. An older server would use
 * the base64 text itself and return a quote that binds the wrong value, so we check the quote's
 * report_data before returning. The response body is the agent's evidence JSON, which for TDX
 * is exactly what Trustee (and our TdxVerifier) expects: {"quote": base64, "cc_eventlog"?: base64}.
 */
import { KmsError } from '../../errors.js';
import type { Attester } from '../types.js';
import { decodeTdxEvidence, type TdxEvidence } from './evidence.js';
import { parseQuoteHeader, parseTdxQuote, TEE_TYPE_TDX } from './quote.js';

export const DEFAULT_AA_BASE_URL = 'http://127.0.0.1:8006';

export interface AaEvidenceAttesterOptions {
  readonly baseUrl?: string;
  /** Quote generation goes through the host's QGS and can take seconds; default 60 s. */
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

export class AaEvidenceAttester implements Attester {
  readonly tee = 'tdx' as const;
  private readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: AaEvidenceAttesterOptions = {}) {
    const base = options.baseUrl ?? DEFAULT_AA_BASE_URL;
    try {
      const url = new URL(base);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
    } catch (error) {
      throw new KmsError('CONFIG', 'attestation agent base URL must be an http(s) URL', { cause: error });
    }
    this.baseUrl = base.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** The evidence URL for `reportData`, as the api-server-rest decodes it. */
  evidenceUrl(reportData: Uint8Array): string {
    const runtimeData = Buffer.from(reportData).toString('base64url');
    return `${this.baseUrl}/aa/evidence?runtime_data=${runtimeData}&encoding=base64`;
  }

  async getEvidence(reportData: Uint8Array): Promise<TdxEvidence> {
    if (reportData.length !== 64) throw new KmsError('BAD_REQUEST', 'TDX report_data must be exactly 64 bytes');
    const body = await this.request(this.evidenceUrl(reportData));
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch (error) {
      throw new KmsError('INTERNAL', 'the attestation agent returned evidence that is not JSON', { cause: error });
    }
    let decoded;
    try {
      decoded = decodeTdxEvidence(json);
    } catch (error) {
      throw new KmsError('CONFIG', 'the attestation agent returned no TDX evidence (is this pod a TDX guest?)', { cause: error });
    }
    if (parseQuoteHeader(decoded.quote).teeType !== TEE_TYPE_TDX) {
      throw new KmsError('CONFIG', 'the attestation agent returned a quote that is not a TDX quote');
    }
    const quote = parseTdxQuote(decoded.quote);
    if (Buffer.compare(quote.reportData, reportData) !== 0) {
      throw new KmsError(
        'INTERNAL',
        'the attestation agent returned a quote that does not bind the requested report_data (api-server-rest without encoding=base64 support?)',
      );
    }
    const evidence = json as Record<string, unknown>;
    const out: TdxEvidence = { quote: evidence['quote'] as string };
    if (decoded.ccEventlog !== undefined) out.cc_eventlog = evidence['cc_eventlog'] as string;
    return out;
  }

  /**
   * The agent's answer. Failing to get one is ATTESTATION_UNAVAILABLE (a 503 that callers retry):
   * the agent restarting, or its quote generation (the host's QGS) failing, passes.
   */
  private async request(url: string): Promise<string> {
    let response: Response;
    try {
      response = await this.fetchImpl(url, { signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (error) {
      throw new KmsError('ATTESTATION_UNAVAILABLE', `the attestation agent at ${this.baseUrl} cannot be reached`, { cause: error });
    }
    if (!response.ok) {
      // The body may echo internal error text from the agent: not shown.
      await response.body?.cancel().catch(() => undefined);
      throw new KmsError('ATTESTATION_UNAVAILABLE', `the attestation agent answered HTTP ${response.status} to the evidence request`);
    }
    try {
      return await response.text();
    } catch (error) {
      throw new KmsError('ATTESTATION_UNAVAILABLE', `the attestation agent at ${this.baseUrl} broke off its answer`, { cause: error });
    }
  }
}
