/**
 * `tee-kms/client`: a typed client of tee-kms's REST API, one method per route. Credentials go in
 * headers (never the URL) unless asked otherwise. In attested mode (`attest`) it verifies the
 * service's evidence against a policy and seals every credential to the attested service key
 * (docs/sealed-channel.md), so a TLS-terminating ingress sees neither tokens nor keys.
 */
import { randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { isIPv4 } from 'node:net';
import { freshNonce, keyReuseSeconds, seal, sealSharesToRecoveryKey, verifyAttestation, type AttestOptions, type Sealed } from './attested.js';
import { KmsError, type KmsErrorCode } from './errors.js';
import { Transport, type HttpResponse } from './transport.js';
import type {
  Attestation,
  CreatedDataKey,
  CreatedPrimaryKey,
  DataKey,
  Enrollment,
  RecoveryProgress,
  Rotation,
  SealStatus,
  Share,
  Verification,
} from './types.js';

export { KmsError, isKmsError, type KmsErrorCode, type ClientErrorCode, type ServerErrorCode } from './errors.js';
export { spkiPin, MAX_ANSWER_BYTES } from './transport.js';
export type { AttestOptions } from './attested.js';
export type * from './types.js';

export interface KmsClientOptions {
  /** The KMS's base URL, e.g. https://kms.example or http://127.0.0.1:9876 (no credentials in it). */
  readonly url: string;
  /** The user the key methods act as, and its token. */
  readonly user?: string;
  readonly token?: string;
  /** The operator's token (KMS_ADMIN_TOKEN), for rotate and verify. */
  readonly adminToken?: string;
  /** PEM CA certificate(s) to trust instead of Node's default roots. */
  readonly ca?: string | readonly string[];
  /** `spkiPin` of the server's certificate (or several): with no `ca`, the pin alone is trusted. */
  readonly pin?: string | readonly string[];
  /** Per attempt, connection to last byte; default 10 000. */
  readonly timeoutMs?: number;
  /** Retries of an answer 503 (sealed, busy, storage down), after `Retry-After` or a backoff; default 2. */
  readonly retries?: number;
  /** Where plaintext credentials go: headers (default; kept out of URLs and access logs) or BigDL KMS's query. */
  readonly credentials?: 'headers' | 'query';
  /** Attested mode: verify the service's evidence and seal every credential (docs/sealed-channel.md). */
  readonly attest?: AttestOptions;
}

type Credential = 'user' | 'admin' | 'none' | { readonly user: string; readonly token: string };

interface Call {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly query?: Readonly<Record<string, string>>;
  readonly credential: Credential;
  readonly body?: unknown;
  /** The route only reads: sending it again can change nothing (GET /rootKey/rotate is no read). */
  readonly reads?: true;
}

/**
 * Errors answered in the clear to a sealed request. Anything on the way can write such an answer,
 * also after the KMS carried the request out, so it never makes a request that changes something
 * go out again.
 */
const inTheClear = new WeakSet<KmsError>();

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly json: unknown;
  /** A sealed answer's `kms-…` protected header values (authenticated); undefined for an answer in the clear. */
  readonly authenticated?: Readonly<Record<string, string>>;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRIES = 2;
/** The longest wait between retries, whatever Retry-After asks. */
const MAX_RETRY_DELAY_MS = 30_000;
const BACKOFF_BASE_MS = 250;

/** What clients made by `withCredentials` share: one connection pool, one attested service key. */
interface Shared {
  readonly transport: Transport;
  readonly base: string;
  attestation: Promise<Attestation> | undefined;
}

/** Set by withCredentials for the one constructor call it makes: sharing stays out of the public constructor. */
let adopting: Shared | undefined;

export class KmsClient {
  readonly #options: KmsClientOptions;
  readonly #shared: Shared;

  constructor(options: KmsClientOptions) {
    this.#options = options;
    if (adopting !== undefined) {
      this.#shared = adopting;
      adopting = undefined;
      return;
    }
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new KmsError('CONFIG', 'url must be an absolute http: or https: URL');
    }
    if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
      throw new KmsError('CONFIG', 'url must hold no credentials, query or fragment: give user and token as options');
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const retries = options.retries ?? DEFAULT_RETRIES;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new KmsError('CONFIG', 'timeoutMs must be a positive integer');
    if (!Number.isSafeInteger(retries) || retries < 0) throw new KmsError('CONFIG', 'retries must be a non-negative integer');
    if (options.attest !== undefined && options.credentials === 'query')
      throw new KmsError('CONFIG', 'attested mode seals credentials: credentials "query" does not apply');
    if (options.attest !== undefined) keyReuseSeconds(options.attest);
    if (url.protocol === 'http:' && options.attest === undefined && !isLoopback(url.hostname)) {
      throw new KmsError(
        'CONFIG',
        `${url.protocol}//${url.host} would carry tokens and shares in the clear past every hop on the way: use https:, or attested mode (the attest option; --attest on the command line), which seals them; plain http: is taken only to this machine (127.0.0.1, ::1, localhost)`,
      );
    }
    this.#shared = {
      transport: new Transport({
        url,
        timeoutMs,
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        ...(options.pin === undefined ? {} : { pin: options.pin }),
      }),
      base: url.pathname.replace(/\/$/, ''),
      attestation: undefined,
    };
  }

  /** A client acting as another user, sharing this one's connections and attested service key. */
  withCredentials(credentials: { readonly user: string; readonly token: string }): KmsClient {
    adopting = this.#shared;
    try {
      return new KmsClient({ ...this.#options, ...credentials });
    } finally {
      adopting = undefined;
    }
  }

  /**
   * POST /user/{user}: enrolls `user` (default: the client's) with `token`, generated (32 random
   * bytes, base64url) when neither it nor the client's own token is given. Keep the token answered.
   */
  async enroll(user?: string, token?: string): Promise<Enrollment> {
    const name = required(user ?? this.#options.user, 'user');
    const secret = token ?? (user === undefined ? this.#options.token : undefined) ?? randomBytes(32).toString('base64url');
    const answer = await this.#call({ method: 'POST', path: `/user/${segment(name)}`, credential: { user: name, token: secret } });
    answered(answer, 'enrollment', '{user, created: true}', (json) => typeof json.user === 'string' && json.created === true);
    return { user: name, token: secret };
  }

  /** POST /primaryKey/{name}. */
  async createPrimaryKey(name: string): Promise<CreatedPrimaryKey> {
    const answer = await this.#call({ method: 'POST', path: `/primaryKey/${segment(name)}`, credential: 'user' });
    return answered(
      answer,
      'primary key creation',
      '{user, primaryKey, created: true}',
      (json) => strings(json, 'user', 'primaryKey') && json.created === true,
    );
  }

  /** POST /dataKey/{name}?primaryKeyName=…: a data key under `primaryKeyName`. */
  async createDataKey(primaryKeyName: string, name: string): Promise<CreatedDataKey> {
    const call = { method: 'POST', path: `/dataKey/${segment(name)}`, query: { primaryKeyName: required(primaryKeyName, 'primaryKeyName') } } as const;
    const answer = await this.#call({ ...call, credential: 'user' });
    return answered(
      answer,
      'data key creation',
      '{user, primaryKey, dataKey, created: true}',
      (json) => strings(json, 'user', 'primaryKey', 'dataKey') && json.created === true,
    );
  }

  /**
   * GET /dataKey/{name}?primaryKeyName=…: the data key's plaintext (base64) in `key`. An answer
   * without a key of 32 bytes is refused (PROTOCOL), rather than handed on as one.
   */
  async getDataKey(primaryKeyName: string, name: string): Promise<DataKey> {
    const call = { method: 'GET', path: `/dataKey/${segment(name)}`, query: { primaryKeyName: required(primaryKeyName, 'primaryKeyName') } } as const;
    const answer = await this.#call({ ...call, credential: 'user', reads: true });
    return answered(
      answer,
      'data key',
      '{user, primaryKey, dataKey, key} with key the base64 of 32 bytes',
      (json) => strings(json, 'user', 'primaryKey', 'dataKey') && isKey(json.key),
    );
  }

  /**
   * GET /rootKey/rotate, or POST with `{custodians}` to encrypt the shares to them. With the
   * adminToken (every rotate after the first); without it, the first one, which initializes the
   * root key and needs no credentials: in attested mode it goes in the clear, as no service key
   * exists before a root key does, so there it needs `custodians`, or `allowPlaintextShares: true`
   * to let the shares cross the way in plaintext. The answer is the shares' only copy.
   */
  async rotate(
    options: { readonly custodians?: readonly unknown[]; readonly shares?: readonly Share[]; readonly allowPlaintextShares?: boolean } = {},
  ): Promise<Rotation> {
    if (options.shares !== undefined && (!Array.isArray(options.shares) || !options.shares.every(isShare))) {
      throw new KmsError('INVALID_ARGUMENT', 'rotate: shares must be the current shares [{index, content}]');
    }
    // The current shares authorize new custodians: in attested mode sealed to the recovery key first, as verify's are.
    const shares = options.shares === undefined || options.custodians === undefined ? undefined : await this.#sealShares(options.shares);
    const body = options.custodians === undefined ? undefined : { custodians: options.custodians, ...(shares === undefined ? {} : { shares }) };
    const credential = this.#options.adminToken === undefined ? 'none' : 'admin';
    if (this.#options.attest !== undefined && credential === 'none' && body === undefined && options.allowPlaintextShares !== true) {
      throw new KmsError(
        'INVALID_ARGUMENT',
        'a rotate without adminToken initializes the KMS, and goes in the clear (no service key exists yet to seal it to): ' +
          'without custodians its shares would cross every proxy on the way in plaintext. Give custodians (their public keys, one per share), ' +
          'or allowPlaintextShares: true where that way is trusted (or the KMS encrypts them to KMS_CUSTODIAN_KEYS_FILE)',
      );
    }
    const answer = await this.#call({
      method: body === undefined ? 'GET' : 'POST',
      path: '/rootKey/rotate',
      credential,
      ...(body === undefined ? {} : { body }),
    });
    // Sealed, these come from the answer's protected header (answerOf checked that the headers say
    // the same); the first rotate's answer is in the clear, where nothing authenticates them.
    const value = (name: string) => (answer.authenticated === undefined ? answer.headers[`x-${name}`] : answer.authenticated[name]);
    const rootKeyId = value('kms-root-key-id');
    const state = value('kms-root-key-state');
    const encrypted = value('kms-shares-encrypted');
    if (
      !Array.isArray(answer.json) ||
      typeof rootKeyId !== 'string' ||
      (state !== 'current' && state !== 'pending-verification') ||
      (answer.authenticated !== undefined && encrypted !== 'custodians' && encrypted !== 'no')
    ) {
      const where =
        answer.authenticated === undefined
          ? 'X-KMS-Root-Key-Id and X-KMS-Root-Key-State'
          : 'kms-root-key-id, kms-root-key-state and kms-shares-encrypted in its protected header';
      throw new KmsError('PROTOCOL', `the rotate answer is not a share list with ${where}`, { status: answer.status });
    }
    return { shares: answer.json as Share[], rootKeyId, state, sharesEncrypted: encrypted === 'custodians' };
  }

  /**
   * POST /rootKey/verify with the new shares (at least the threshold): the pending root key becomes
   * current. In attested mode plaintext shares are first sealed to the sealing service's recovery
   * key (as `recover` does), so they do not cross the ingress in the clear.
   */
  async verify(shares: readonly Share[]): Promise<Verification> {
    if (!Array.isArray(shares) || shares.length === 0 || !shares.every(isShare))
      throw new KmsError('INVALID_ARGUMENT', 'verify needs the new shares [{index, content}]');
    const body = { shares: await this.#sealShares(shares) };
    return (await this.#call({ method: 'POST', path: '/rootKey/verify', credential: 'admin', body })).json as Verification;
  }

  /**
   * PUT /rootKey/recover with one share (no credentials). In attested mode a plaintext share is
   * first sealed to the sealing service's recovery key, whose evidence is verified against
   * `attest.sealerPolicy` (default `attest.policy`); a share already a JWE is sent as it is. Where
   * the sealing service pins its custodians, give `custodianKey`, the custodian's private key (a
   * JWK or a KeyObject): it opens the custodian's recovery challenge, sealed with the share, without
   * which the share does not count (docs/custodians.md).
   */
  async recover(share: Share, options: { readonly custodianKey?: KeyObject | JsonWebKey } = {}): Promise<RecoveryProgress> {
    if (!isShare(share)) throw new KmsError('INVALID_ARGUMENT', 'recover needs a share {index, content}');
    if (options.custodianKey !== undefined && this.#options.attest === undefined) {
      throw new KmsError('INVALID_ARGUMENT', 'custodianKey needs attested mode (attest): the recovery challenge goes only sealed to an attested recovery key');
    }
    // Said before anything is sent: a share already sealed goes as it is, and no challenge can be added to it.
    if (options.custodianKey !== undefined && (await import('../shared/custody/share-jwe.js')).isCompactJwe(share.content)) {
      throw new KmsError(
        'INVALID_ARGUMENT',
        'custodianKey goes with a plaintext share: a share already sealed is sent as it is, and its challenge cannot be added',
      );
    }
    const [body] = await this.#sealShares([share], options.custodianKey);
    return (await this.#call({ method: 'PUT', path: '/rootKey/recover', credential: 'none', body })).json as RecoveryProgress;
  }

  /**
   * The `kid` of shares sealed to the sealing service's current recovery key: that key's RFC 7638
   * thumbprint, from GET /rootKey/recover (no credentials, nothing sent). Its evidence is NOT
   * verified here: it only tells, before a share is sent, whether a JWE share names that key in
   * its header; a share encrypted to a custodian names the custodian's. Never seal to it on this
   * word: `recover` and `verify` seal to an attested one.
   */
  async recoveryKeyId(): Promise<string> {
    const answer = await this.#call({ method: 'GET', path: '/rootKey/recover', query: { nonce: freshNonce() }, credential: 'none' });
    const json = answer.json;
    const recoveryKey = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['recoveryKey'] : undefined;
    const custody = await import('../shared/custody/share-jwe.js');
    try {
      return custody.parseCustodianKeys([recoveryKey], 1)[0]!.thumbprint;
    } catch {
      throw new KmsError('PROTOCOL', 'GET /rootKey/recover answered no P-256 recoveryKey');
    }
  }

  /** GET /rootKey/status. */
  async sealStatus(): Promise<SealStatus> {
    return (await this.#call({ method: 'GET', path: '/rootKey/status', credential: 'none' })).json as SealStatus;
  }

  /**
   * GET /attestation with a fresh nonce, verified against `attest`; in attested mode the key it
   * answers is pinned for the requests that follow.
   */
  async attestation(): Promise<Attestation> {
    const attestation = this.#attest();
    if (this.#options.attest !== undefined) this.#pin(attestation);
    return attestation;
  }

  /** Closes idle keep-alive connections (of every client made by withCredentials too). */
  close(): void {
    this.#shared.transport.close();
  }

  /** In attested mode, shares sealed to the attested recovery key of the sealing service; else as they are. */
  async #sealShares(shares: readonly Share[], custodianKey?: KeyObject | JsonWebKey): Promise<readonly Share[]> {
    const attest = this.#options.attest;
    if (attest === undefined) return shares;
    const nonce = freshNonce();
    const answer = await this.#call({ method: 'GET', path: '/rootKey/recover', query: { nonce }, credential: 'none' });
    return sealSharesToRecoveryKey(answer.json, nonce, shares, attest, custodianKey);
  }

  async #attest(): Promise<Attestation> {
    const nonce = freshNonce();
    const answer = await this.#call({ method: 'GET', path: '/attestation', query: { nonce }, credential: 'none' });
    return verifyAttestation(answer.json, nonce, this.#options.attest ?? {});
  }

  /** The pinned service key, attested once for all concurrent callers; forgotten if attesting failed. */
  #pinned(): Promise<Attestation> {
    return this.#shared.attestation ?? this.#pin(this.#attest());
  }

  /** Pins an attestation under way for every caller; forgotten if it fails, so the next call attests again. */
  #pin(attempt: Promise<Attestation>): Promise<Attestation> {
    const shared = this.#shared;
    shared.attestation = attempt;
    attempt.catch(() => {
      if (shared.attestation === attempt) shared.attestation = undefined;
    });
    return attempt;
  }

  /**
   * One route: retried on 503 after Retry-After or a backoff, re-attested once on
   * SERVICE_KEY_CHANGED. A sealed request that changes something goes out again only where an
   * answer in the clear cannot have hidden its effect (see inTheClear).
   */
  async #call(call: Call): Promise<Answer> {
    const retries = this.#options.retries ?? DEFAULT_RETRIES;
    let reattested = false;
    let resent503 = false;
    for (let attempt = 0; ; attempt++) {
      const sent: { rootKeyId?: string } = {};
      try {
        return await this.#once(call, sent);
      } catch (error) {
        if (!(error instanceof KmsError)) throw error;
        if (error.code === 'SERVICE_KEY_CHANGED' && !reattested && this.#sealing(call)) {
          reattested = true;
          this.#shared.attestation = undefined;
          const { rootKeyId } = await this.#pinned();
          // A forged refusal cannot change the attested key; a real one comes from a rotation.
          if (call.reads !== true && rootKeyId === sent.rootKeyId) {
            throw notSentAgain(
              call,
              error,
              `the service still attests root key ${rootKeyId}'s key, the one it was sealed to (right after a rotation the KMS's instances disagree for up to KMS_ROOT_KEY_REFRESH_SECONDS; otherwise the answer did not come from the KMS)`,
            );
          }
          attempt--;
          continue;
        }
        // A PROTOCOL error carries the status it came with, which travels outside the seal: an
        // ingress that turns a sealed success into a 503 must not make the client send it again.
        if (resent503 && error.code === 'CONFLICT' && isCreate(call)) throw conflictAfterResend(call, error);
        if (error.code === 'PROTOCOL' || error.status !== 503 || attempt >= retries) throw error;
        if (call.reads !== true && inTheClear.has(error)) throw notSentAgain(call, error, 'a 503 in the clear is not authenticated');
        await sleep(retryDelay(error.retryAfter, attempt));
        resent503 = true;
      }
    }
  }

  #sealing(call: Call): boolean {
    return this.#options.attest !== undefined && call.credential !== 'none';
  }

  /** One attempt; `sent.rootKeyId` says which service key a sealed one was sealed to. */
  async #once(call: Call, sent: { rootKeyId?: string }): Promise<Answer> {
    const { user, token } = this.#credentialOf(call.credential);
    const query = new URLSearchParams(call.query);
    const headers: Record<string, string> = { accept: 'application/json' };
    let sealed: Sealed | undefined;
    if (token !== undefined && !this.#sealing(call) && this.#options.credentials === 'query') {
      if (user !== undefined) query.set('user', user);
      query.set('token', token);
    }
    const search = query.size === 0 ? '' : `?${query.toString()}`;
    const target = `${call.path}${search}`;
    const body = call.body === undefined ? undefined : JSON.stringify(call.body);
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token !== undefined && this.#sealing(call)) {
      const attestation = await this.#pinned();
      sent.rootKeyId = attestation.rootKeyId;
      sealed = await seal(
        attestation,
        {
          ...(user === undefined ? {} : { user }),
          token,
          method: call.method,
          target: `${this.#shared.base}${target}`,
          ...(body === undefined ? {} : { body }),
        },
        keyReuseSeconds(this.#options.attest!),
      );
      headers.authorization = sealed.authorization;
    } else if (token !== undefined && this.#options.credentials !== 'query') {
      headers.authorization = `Bearer ${token}`;
      if (user !== undefined) headers['x-kms-user'] = user;
    }
    const response = await this.#shared.transport.send({ method: call.method, target, headers, ...(body === undefined ? {} : { body }) });
    return answerOf(response, sealed);
  }

  #credentialOf(credential: Credential): { user?: string; token?: string } {
    if (credential === 'none') return {};
    if (credential === 'admin') return { token: required(this.#options.adminToken, 'adminToken') };
    if (credential === 'user') return { user: required(this.#options.user, 'user'), token: required(this.#options.token, 'token') };
    return credential;
  }
}

/**
 * Parses an answer. A sealed request's answer must come sealed when it succeeds (an ingress could
 * forge a plain one), and whether it is an error is read from the sealed JSON, not from the
 * status, which travels outside the seal.
 */
async function answerOf(response: HttpResponse, sealed: Sealed | undefined): Promise<Answer> {
  const { status, headers } = response;
  const text = response.body.toString('utf8');
  const mediaType = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (sealed !== undefined && mediaType === 'application/jose') {
    const { json, authenticated } = await sealed.open(text);
    // The headers travel outside the seal: each value sealed with the answer must be answered as it is.
    for (const [name, value] of Object.entries(authenticated)) {
      if (headers[`x-${name}`] !== value) {
        throw new KmsError('PROTOCOL', `the answer's x-${name} header is missing or differs from the value sealed with it: refused`, { status });
      }
    }
    if (isErrorAnswer(json)) throw errorOf(status, headers, json);
    if (status >= 400) throw new KmsError('PROTOCOL', `the KMS answered ${status} with a sealed success: refused`, { status });
    return { status, headers, json, authenticated };
  }
  if (sealed !== undefined && status < 400) {
    throw new KmsError('PROTOCOL', `a sealed request was answered ${status} in the clear: refused (only the attested service answers sealed)`, { status });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    const error = new KmsError(status >= 400 ? serverCodeOf(status) : 'PROTOCOL', `the KMS answered ${status} without JSON`, {
      status,
      ...retryAfterOf(headers),
    });
    if (sealed !== undefined) inTheClear.add(error);
    throw error;
  }
  if (status >= 400) {
    const error = errorOf(status, headers, json);
    if (sealed !== undefined) inTheClear.add(error);
    throw error;
  }
  return { status, headers, json };
}

/** The error to throw instead of sending `call` again after `error`, an answer in the clear. */
function notSentAgain(call: Call, error: KmsError, why: string): KmsError {
  return new KmsError(
    error.code,
    `${error.message} (answered ${error.status} in the clear to a sealed ${call.method} ${call.path}, and ${why}: not sent again, since anything on the way can write such an answer, also after the KMS carried the request out; check before repeating it)`,
    { status: error.status, details: { ...error.details }, ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter }), cause: error },
  );
}

/** Enrolling a user, creating a primary or a data key: what a 409 says already exists. */
function isCreate(call: Call): boolean {
  return call.method === 'POST' && /^\/(user|primaryKey|dataKey)\//.test(call.path);
}

/**
 * A create sent again after a 503 and answered 409: storage may have stored the first attempt and
 * the answer been lost on the way back (a connection reset after storage acted), so "already
 * exists" may be this very call's doing.
 */
function conflictAfterResend(call: Call, error: KmsError): KmsError {
  return new KmsError(
    error.code,
    `${error.message} (this ${call.method} ${call.path} was sent again after an answer 503, and the earlier attempt may have created it: read it before creating it under another name)`,
    { status: error.status, details: { ...error.details }, cause: error },
  );
}

function isErrorAnswer(json: unknown): boolean {
  return typeof json === 'object' && json !== null && !Array.isArray(json) && typeof (json as { error?: unknown }).error === 'object';
}

function errorOf(status: number, headers: IncomingHttpHeaders, json: unknown): KmsError {
  const error = typeof json === 'object' && json !== null ? (json as { error?: unknown }).error : undefined;
  const { code, message, ...details } = (typeof error === 'object' && error !== null ? error : {}) as Record<string, unknown>;
  const known = typeof code === 'string' && /^[A-Z_]{2,40}$/.test(code) ? (code as KmsErrorCode) : serverCodeOf(status);
  return new KmsError(known, typeof message === 'string' ? message : `the KMS answered ${status}`, { status, details, ...retryAfterOf(headers) });
}

/** For an error answer without a code (a proxy's page, say): the nearest code by status. */
function serverCodeOf(status: number): KmsErrorCode {
  const byStatus: Record<number, KmsErrorCode> = {
    400: 'BAD_REQUEST',
    401: 'UNAUTHORIZED',
    403: 'FORBIDDEN',
    404: 'NOT_FOUND',
    405: 'METHOD_NOT_ALLOWED',
    409: 'CONFLICT',
    413: 'PAYLOAD_TOO_LARGE',
    503: 'BUSY',
  };
  return byStatus[status] ?? (status >= 500 ? 'INTERNAL' : 'PROTOCOL');
}

function retryAfterOf(headers: IncomingHttpHeaders): { retryAfter?: number } {
  const value = headers['retry-after'];
  if (value === undefined) return {};
  if (/^\d+$/.test(value)) return { retryAfter: Number(value) };
  const date = Date.parse(value);
  return Number.isNaN(date) ? {} : { retryAfter: Math.max(0, Math.ceil((date - Date.now()) / 1000)) };
}

function retryDelay(retryAfter: number | undefined, attempt: number): number {
  const backoff = BACKOFF_BASE_MS * 2 ** attempt * (0.5 + Math.random());
  return Math.min(MAX_RETRY_DELAY_MS, retryAfter === undefined ? backoff : retryAfter * 1000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A data key: 32 bytes, in canonical (padded) base64, as the KMS answers it. */
const DATA_KEY_BYTES = 32;

/**
 * An answer's JSON, once `valid` says it has the shape `shape`; else PROTOCOL with its status. The
 * message names the shape, never the answer, which may hold a key.
 */
function answered<T>(answer: Answer, what: string, shape: string, valid: (json: Readonly<Record<string, unknown>>) => boolean): T {
  const { json, status } = answer;
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !valid(json as Record<string, unknown>)) {
    throw new KmsError('PROTOCOL', `the ${what} answer is not ${shape}: refused`, { status });
  }
  return json as T;
}

function strings(json: Readonly<Record<string, unknown>>, ...names: readonly string[]): boolean {
  return names.every((name) => typeof json[name] === 'string');
}

function isKey(key: unknown): boolean {
  if (typeof key !== 'string') return false;
  const bytes = Buffer.from(key, 'base64');
  const canonical = bytes.length === DATA_KEY_BYTES && bytes.toString('base64') === key;
  bytes.fill(0);
  return canonical;
}

function isShare(share: unknown): share is Share {
  const { index, content } = (typeof share === 'object' && share !== null ? share : {}) as Record<string, unknown>;
  return Number.isSafeInteger(index) && typeof content === 'string';
}

function required(value: string | undefined, name: string): string {
  if (typeof value !== 'string' || value === '') throw new KmsError('INVALID_ARGUMENT', `${name} is needed: give it in the options or as an argument`);
  return value;
}

/** A name as one path segment: the server refuses unsafe names with 400; this only keeps the path whole. */
function segment(name: string): string {
  return encodeURIComponent(required(name, 'a name'));
}

/** Whether `hostname` (as URL gives it) is this machine: a loopback address or localhost. */
function isLoopback(hostname: string): boolean {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (host === 'localhost' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}
