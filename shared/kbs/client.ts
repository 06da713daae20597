import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { Agent, request as httpsRequest } from 'node:https';
import type { CryptoKey } from 'jose';
import { decodeJwt } from 'jose/jwt/decode'; // a subpath: see tee-key.ts
import type { Attester } from '../attestation/types.js';
import { KmsError } from '../errors.js';
import { readBounded, type BodyError } from '../http/body.js';
import {
  KBS_PREFIX,
  KBS_PROTOCOL_VERSION,
  KBS_SESSION_COOKIE,
  kbsReportData,
  selectedHash,
  type KbsAttestation,
  type KbsProblem,
  type KbsRequest,
} from './protocol.js';
import { answerSigned, type ServerAttestation } from '../sealer-client/attest-sealer.js';
import { ANSWER_SIGNATURE_HEADER, REQUEST_NONCE_HEADER } from '../sealer-client/protocol.js';
import { KbsResponseError, KbsTransportError } from './errors.js';
import { signProof } from './proof.js';
import { decryptFromKbs, processTeeKeyPair, type TeeKeyPair } from './tee-key.js';

export { KbsResponseError, KbsTransportError };

export interface KbsClientOptions {
  /** https://host:port of the KBS (the sealing service, or a Trustee KBS). */
  readonly url: string;
  /** PEM certificate(s) trusted for the KBS's TLS certificate, and nothing else (no system CAs). */
  readonly ca: string | Buffer;
  /** Makes the evidence for this TEE (SampleAttester in development, TDX later). */
  readonly attester: Attester;
  /** Per request (connect + answer); default 10 s. */
  readonly timeoutMs?: number;
  /** Default: one ephemeral key pair per process (processTeeKeyPair). */
  readonly teeKey?: TeeKeyPair | Promise<TeeKeyPair>;
  /**
   * The sealing service's extension (docs/sealer-protocol.md): attest the server first, and accept
   * an answer only with its attested key's signature over it and this request's nonce.
   */
  readonly server?: ServerAttestation;
  /**
   * This TEE's init-data TOML (KMS_INIT_DATA_FILE), sent as the `init-data` of every attest request:
   * the KBS checks its digest against the evidence's MRCONFIGID and may look at its content.
   */
  readonly initData?: string;
}

export interface KbsHttpResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON, or the text when the body is not JSON; undefined when empty. */
  readonly body: unknown;
}

const MAX_RESPONSE_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;
/** A token is renewed this long before it expires (at most a fifth of its lifetime). */
const REFRESH_MARGIN_MS = 30_000;
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_|EPROTO|HOSTNAME_MISMATCH|ERR_OSSL_)/;

/**
 * A KBS client (Trustee protocol 0.4.0): auth → attest → GET resource, as guest-components'
 * kbs_protocol does. It keeps the attestation token until shortly before it expires and attests
 * again on a 401. The server is authenticated by TLS against the configured CA only, so a server
 * with any other certificate is refused during the handshake, before evidence or a secret moves.
 * Connections are kept alive (this is on the functions' cold-start path).
 */
export class KbsClient {
  readonly url: string;
  readonly #agent: Agent;
  readonly #host: string;
  readonly #port: number;
  readonly #attester: Attester;
  readonly #timeoutMs: number;
  readonly #teeKey: Promise<TeeKeyPair>;
  #cookie: string | undefined;
  #token: { value: string; refreshAt: number } | undefined;
  #handshake: Promise<string> | undefined;
  readonly #server: ServerAttestation | undefined;
  readonly #initData: string | undefined;
  #serverKey: Promise<CryptoKey | KeyObject> | undefined;

  constructor(options: KbsClientOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new KmsError('CONFIG', 'the KBS URL is not a URL');
    }
    if (url.protocol !== 'https:') throw new KmsError('CONFIG', 'the KBS URL must be https:// (the KBS is authenticated by TLS)');
    if (!String(options.ca).includes('-----BEGIN CERTIFICATE-----')) throw new KmsError('CONFIG', 'the KBS CA must be a PEM certificate');
    this.url = `${url.protocol}//${url.host}`;
    this.#host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = url.port === '' ? 443 : Number(url.port);
    // `ca` replaces Node's built-in Mozilla CA list: only this CA is trusted.
    this.#agent = new Agent({ ca: options.ca, keepAlive: true, keepAliveMsecs: 10_000, maxSockets: 16, scheduling: 'lifo', rejectUnauthorized: true });
    this.#attester = options.attester;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#teeKey = Promise.resolve(options.teeKey ?? processTeeKeyPair());
    this.#server = options.server;
    this.#initData = options.initData;
  }

  /** Whether every answer `request` returns was checked against the attested server's signature. */
  get signsAnswers(): boolean {
    return this.#server !== undefined;
  }

  /** The current attestation token, attesting first when there is none or it is about to expire. */
  async token(): Promise<string> {
    const cached = this.#token;
    if (cached !== undefined && Date.now() < cached.refreshAt) return cached.value;
    return this.attest();
  }

  /** Runs the RCAR handshake now (concurrent callers share one). */
  attest(): Promise<string> {
    this.#handshake ??= this.#rcar().finally(() => {
      this.#handshake = undefined;
    });
    return this.#handshake;
  }

  /** GET /kbs/v0/resource/<repository>/<type>/<tag>, decrypted with this TEE's key. */
  async getResource(resourcePath: string): Promise<Buffer> {
    const response = await this.authorized('GET', `${KBS_PREFIX}/resource/${resourcePath}`, undefined, 'get resource');
    return decryptFromKbs(response.body, (await this.#teeKey).privateKey);
  }

  /**
   * A request carrying the attestation token (Bearer, and the session cookie as Trustee accepts)
   * and a proof of possession of this TEE's key for it (`DPoP`, which a Trustee KBS ignores); on
   * 401 it attests again once and retries. Non-2xx answers throw KbsResponseError.
   */
  async authorized(method: string, path: string, body: unknown, operation: string): Promise<KbsHttpResponse> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token();
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = {
        Authorization: `Bearer ${token}`,
        DPoP: await signProof(await this.#teeKey, { method, target: path, token, body: payload }),
      };
      if (this.#cookie !== undefined) headers.Cookie = this.#cookie;
      const response = await this.request(method, path, payload, headers);
      if (response.status === 401 && attempt === 0) {
        this.#forget(token);
        continue;
      }
      if (response.status < 200 || response.status > 299) {
        throw new KbsResponseError(response.status, problemOf(response.body), operation, this.signsAnswers);
      }
      return response;
    }
  }

  /**
   * One HTTPS request over the authenticated, kept-alive connection; no token. With `server`, the
   * answer must carry the attested server's signature over it and this request's fresh nonce.
   */
  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<KbsHttpResponse> {
    // Bytes are sent as they are (a proof may cover them); anything else as JSON.
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    try {
      if (this.#server === undefined) return stripRaw(await this.#exchange(method, path, payload, headers));
      // Attested before anything is sent to it, not just before its answer is believed (joining an
      // attestation in flight, so no request overtakes it).
      const attested = this.#attestServer();
      const key = await attested;
      const nonce = randomBytes(32).toString('base64url');
      const response = await this.#exchange(method, path, payload, { ...headers, [REQUEST_NONCE_HEADER]: nonce });
      await this.#checkSigned({ method, target: path, nonce, response }, key, attested);
      return stripRaw(response);
    } finally {
      payload?.fill(0);
    }
  }

  #exchange(method: string, path: string, payload: Buffer | undefined, headers: Record<string, string>): Promise<RawResponse> {
    const idempotent = method === 'GET' || method === 'DELETE' || path === `${KBS_PREFIX}/auth`;
    return this.#send(method, path, payload, headers)
      .catch((error: unknown) => {
        // A kept-alive socket the server closed just as we reused it: safe to send again when idempotent.
        if (idempotent && (error as { reusedSocket?: boolean }).reusedSocket && (error as { code?: string }).code === 'ECONNRESET') {
          return this.#send(method, path, payload, headers);
        }
        throw error;
      })
      .catch((error: unknown) => {
        throw this.#transportError(error);
      });
  }

  /** An answer counts only if the attested server signed it; a restarted server (new key) is attested again, once. */
  async #checkSigned(
    request: { method: string; target: string; nonce: string; response: RawResponse },
    key: CryptoKey | KeyObject,
    attested: Promise<CryptoKey | KeyObject>,
  ): Promise<void> {
    const { method, target, nonce, response } = request;
    const header = response.headers[ANSWER_SIGNATURE_HEADER];
    const signature = typeof header === 'string' ? header : undefined;
    const expected = { method, target, status: response.status, nonce, bodyDigest: createHash('sha256').update(response.raw).digest('base64url') };
    if (await answerSigned(signature, key, expected)) return;
    if (this.#serverKey === attested) this.#serverKey = undefined;
    if (await answerSigned(signature, await this.#attestServer(), expected)) return;
    throw new KmsError('ROOT_KEY_UNAVAILABLE', `the answer from ${this.url} is not signed by the attested sealing service; it was not used`);
  }

  /** The server's attested signing key (one attestation shared by concurrent callers; a failed one is not kept). */
  #attestServer(): Promise<CryptoKey | KeyObject> {
    const server = this.#server!;
    this.#serverKey ??= (async () => {
      const nonce = randomBytes(32).toString('base64url');
      const response = await this.#exchange('GET', `${server.path}?nonce=${nonce}`, undefined, {});
      if (response.status !== 200) throw new KbsResponseError(response.status, problemOf(response.body), 'attest the sealing service');
      return server.verify(response.body, nonce);
    })();
    const attempt = this.#serverKey;
    attempt.catch(() => {
      if (this.#serverKey === attempt) this.#serverKey = undefined;
    });
    return attempt;
  }

  /** Releases the kept-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  async #rcar(): Promise<string> {
    const teeKey = await this.#teeKey;
    this.#cookie = undefined;
    const request: KbsRequest = {
      version: KBS_PROTOCOL_VERSION,
      tee: this.#attester.tee,
      'extra-params': { 'supported-hash-algorithms': ['sha256', 'sha384', 'sha512'] },
    };
    const auth = await this.request('POST', `${KBS_PREFIX}/auth`, request);
    if (auth.status !== 200) throw new KbsResponseError(auth.status, problemOf(auth.body), 'auth', this.signsAnswers);
    const challenge = auth.body as { nonce?: unknown; 'extra-params'?: unknown } | undefined;
    if (typeof challenge?.nonce !== 'string') throw new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS challenge has no nonce');
    const cookie = sessionCookie(auth.headers['set-cookie']);
    if (cookie === undefined) throw new KmsError('ROOT_KEY_UNAVAILABLE', `the KBS did not set a ${KBS_SESSION_COOKIE} cookie`);

    const hash = selectedHash(challenge['extra-params']);
    const reportData = kbsReportData(challenge.nonce, teeKey.publicJwk, hash);
    const evidence = await this.#attester.getEvidence(reportData);
    const attestation: KbsAttestation = {
      ...(this.#initData === undefined ? {} : { 'init-data': { format: 'toml', body: this.#initData } }),
      'runtime-data': { nonce: challenge.nonce, 'tee-pubkey': teeKey.publicJwk },
      'tee-evidence': { primary_evidence: evidence, additional_evidence: '' },
    };
    const attest = await this.request('POST', `${KBS_PREFIX}/attest`, attestation, { Cookie: cookie });
    if (attest.status !== 200) throw new KbsResponseError(attest.status, problemOf(attest.body), 'attest', this.signsAnswers);
    const token = (attest.body as { token?: unknown } | undefined)?.token;
    if (typeof token !== 'string' || token === '') throw new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS attest response has no token');
    this.#cookie = sessionCookie(attest.headers['set-cookie']) ?? cookie;
    this.#token = { value: token, refreshAt: refreshTime(token) };
    return token;
  }

  #forget(token: string): void {
    if (this.#token?.value === token) this.#token = undefined;
    this.#cookie = undefined;
  }

  #send(method: string, path: string, payload: Buffer | undefined, headers: Record<string, string>): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: this.#host,
          port: this.#port,
          method,
          path,
          agent: this.#agent,
          headers: {
            Accept: 'application/json',
            ...(payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': payload.length }),
            ...headers,
          },
          timeout: this.#timeoutMs,
        },
        (res) => {
          readBounded(res, MAX_RESPONSE_BYTES).then(
            (bytes) => {
              const text = bytes.toString('utf8');
              let body: unknown = undefined;
              if (text !== '') {
                try {
                  body = JSON.parse(text);
                } catch {
                  body = text;
                }
              }
              resolve({ status: res.statusCode ?? 0, headers: res.headers, body, raw: bytes });
            },
            (error: BodyError) =>
              reject(error.kind === 'too-large' ? new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS response is too large') : (error.cause ?? error)),
          );
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT_KBS' })));
      req.on('error', (error) => reject(Object.assign(error, { reusedSocket: req.reusedSocket })));
      req.end(payload);
    });
  }

  #transportError(error: unknown): unknown {
    if (error instanceof KmsError || error instanceof KbsResponseError) return error;
    const code = String((error as { code?: unknown }).code ?? 'ERROR');
    if (code === 'ETIMEDOUT_KBS') return new KbsTransportError('timeout', code, this.url);
    if (TLS_CODES.test(code)) return new KbsTransportError('tls', code, this.url);
    return new KbsTransportError('unreachable', code, this.url);
  }
}

/** An answer with the bytes its signature covers. */
interface RawResponse extends KbsHttpResponse {
  readonly raw: Buffer;
}

function stripRaw({ status, headers, body }: RawResponse): KbsHttpResponse {
  return { status, headers, body };
}

export function problemOf(body: unknown): KbsProblem | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { type, detail } = body as Record<string, unknown>;
  if (typeof type !== 'string') return undefined;
  return { ...(body as Record<string, unknown>), type, detail: typeof detail === 'string' ? detail : '' };
}

function sessionCookie(header: string | string[] | undefined): string | undefined {
  for (const line of Array.isArray(header) ? header : header === undefined ? [] : [header]) {
    const first = line.split(';')[0]?.trim() ?? '';
    if (first.startsWith(`${KBS_SESSION_COOKIE}=`)) return first;
  }
  return undefined;
}

function refreshTime(token: string): number {
  try {
    const { exp, iat } = decodeJwt(token);
    if (typeof exp === 'number') {
      const lifetime = typeof iat === 'number' ? (exp - iat) * 1000 : REFRESH_MARGIN_MS * 5;
      return exp * 1000 - Math.min(REFRESH_MARGIN_MS, Math.max(0, lifetime / 5));
    }
  } catch {
    // Not a JWT we can read: use it once.
  }
  return 0;
}
