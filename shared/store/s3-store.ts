import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import aws4 from 'aws4';
import { KmsError } from '../errors.js';
import { readBounded, type BodyError } from '../http/body.js';
import { assertObjectKey, assertPrefix } from './keys.js';
import type { ObjectStore, StoredObject, Written } from './object-store.js';

export interface S3StoreOptions {
  readonly endpoint: string;
  readonly region: string;
  readonly bucket: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly forcePathStyle: boolean;
  /** Prepended to every key (e.g. `tee-kms/`), so one bucket can hold several deployments. */
  readonly prefix: string;
  readonly maxSockets?: number;
}

/** Transient failures (a reused keep-alive socket closed by the server, a 5xx) are retried. */
const ATTEMPTS = 3;
/** Storage-side conflicts under concurrent conditional writes (S3 answers 409 "retry"). */
const CONDITIONAL_CONFLICT_RETRIES = 5;
/** A request with no progress for this long is abandoned (and retried when that is safe). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Idle pooled connections are closed before servers typically drop them (MinIO, RGW: 5 s and more). */
const IDLE_SOCKET_MS = 4_000;
/** Records are small; a list page is ~100 KB. Anything far larger is not ours. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const RETRYABLE_STATUS = new Set([500, 502, 503, 504]);

interface S3Response {
  readonly status: number;
  readonly etag: string;
  readonly body: Buffer;
}

/** A request that never reached an answer (refused, reset, timed out): it may or may not have been applied. */
class TransportError extends Error {}

/**
 * S3-compatible storage (MinIO, Ceph RGW, AWS S3) over node:http(s) keep-alive connections, each
 * request signed with AWS Signature V4 (`aws4`). The store needs five operations; a full SDK costs
 * 2-3.5 ms of CPU per call and ~145 ms at start-up (docs/performance.md), this about 0.1 ms.
 *
 * Creates use `If-None-Match: *` and replaces `If-Match: <etag>`, so the server arbitrates
 * concurrent writers: exactly one create wins. A conditional write retried after a lost answer
 * is judged by what is stored: our own body there means our write won.
 */
export class S3ObjectStore implements ObjectStore {
  readonly #endpoint: URL;
  readonly #host: string;
  readonly #basePath: string;
  readonly #region: string;
  readonly #credentials: { accessKeyId: string; secretAccessKey: string };
  readonly #prefix: string;
  readonly #agent: HttpAgent;
  readonly #send: typeof httpRequest;

  constructor(options: S3StoreOptions) {
    if (options.prefix !== '') assertPrefix(options.prefix);
    const endpoint = new URL(options.endpoint);
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
      throw new KmsError('CONFIG', 'the S3 endpoint must be an http: or https: URL');
    }
    this.#endpoint = endpoint;
    this.#host = options.forcePathStyle ? endpoint.host : `${options.bucket}.${endpoint.host}`;
    this.#basePath = options.forcePathStyle ? `/${encodeURIComponent(options.bucket)}/` : '/';
    this.#region = options.region;
    this.#credentials = { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey };
    this.#prefix = options.prefix;
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 64, timeout: IDLE_SOCKET_MS };
    const https = endpoint.protocol === 'https:';
    this.#agent = https ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
    this.#send = https ? httpsRequest : httpRequest;
  }

  async get(key: string): Promise<StoredObject | undefined> {
    assertObjectKey(key);
    const response = await this.#retrying('GET', this.#objectPath(key));
    if (response.status === 200) return { body: response.body, etag: response.etag };
    if (response.status === 404 && (await errorCode(response)) !== 'NoSuchBucket') return undefined;
    throw await unavailable(response);
  }

  async create(key: string, body: Buffer): Promise<boolean> {
    return (await this.write(key, body, null)) !== undefined;
  }

  async replace(key: string, body: Buffer, etag: string): Promise<boolean> {
    return (await this.write(key, body, etag)) !== undefined;
  }

  write(key: string, body: Buffer, expected: string | null): Promise<Written | undefined> {
    assertObjectKey(key);
    // RGW answers 412 to If-Match when the ETag is quoted: send it bare.
    return this.#conditionalPut(key, body, expected === null ? { 'If-None-Match': '*' } : { 'If-Match': stripQuotes(expected) });
  }

  async delete(key: string): Promise<void> {
    assertObjectKey(key);
    const response = await this.#retrying('DELETE', this.#objectPath(key));
    if (response.status === 204 || response.status === 200) return;
    if (response.status === 404 && (await errorCode(response)) !== 'NoSuchBucket') return;
    throw await unavailable(response);
  }

  async *list(prefix: string): AsyncIterable<string> {
    assertPrefix(prefix);
    let token: string | undefined;
    do {
      const query = new URLSearchParams({ 'list-type': '2', prefix: this.#prefix + prefix });
      if (token !== undefined) query.set('continuation-token', token);
      const response = await this.#retrying('GET', `${this.#basePath}?${query}`);
      if (response.status !== 200) throw await unavailable(response);
      const page = await parseListPage(response.body);
      for (const key of page.keys) yield key.slice(this.#prefix.length);
      token = page.nextToken;
    } while (token !== undefined);
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }

  #objectPath(key: string): string {
    // Keys are checked to be [A-Za-z0-9._-/] only: nothing to escape but the prefix joins them.
    return this.#basePath + this.#prefix + key;
  }

  /** The PUT answer's ETag (S3, MinIO and RGW send one); after a lost answer, that of our own body found stored. */
  async #conditionalPut(key: string, body: Buffer, condition: Record<string, string>): Promise<Written | undefined> {
    const headers = { 'Content-Type': 'application/json', ...condition };
    let failures = 0; // transport failures and 5xx answers: the write may or may not have been applied
    let conflicts = 0;
    for (;;) {
      let response: S3Response;
      try {
        response = await this.#request('PUT', this.#objectPath(key), headers, body);
      } catch (error) {
        if (!(error instanceof TransportError)) throw error;
        if (++failures >= ATTEMPTS) throw unreachable(error);
        await backoff(failures);
        continue;
      }
      if (response.status === 200) return { etag: response.etag === '' ? undefined : response.etag };
      if (response.status === 412 || (response.status === 404 && 'If-Match' in condition && (await errorCode(response)) !== 'NoSuchBucket')) {
        // A refusal after an unanswered attempt may be that attempt, applied: our own body is there.
        if (failures === 0) return undefined;
        const stored = await this.get(key);
        return stored?.body.equals(body) === true ? { etag: stored.etag } : undefined;
      }
      if (response.status === 409 && ++conflicts <= CONDITIONAL_CONFLICT_RETRIES) {
        await backoff(conflicts);
        continue;
      }
      if (RETRYABLE_STATUS.has(response.status) && ++failures < ATTEMPTS) {
        await backoff(failures);
        continue;
      }
      throw await unavailable(response);
    }
  }

  /** An idempotent request, retried on transport failures and 5xx answers. */
  async #retrying(method: 'GET' | 'DELETE', path: string): Promise<S3Response> {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await this.#request(method, path, {});
        if (!RETRYABLE_STATUS.has(response.status) || attempt + 1 >= ATTEMPTS) return response;
      } catch (error) {
        if (!(error instanceof TransportError)) throw error;
        if (attempt + 1 >= ATTEMPTS) throw unreachable(error);
      }
      await backoff(attempt);
    }
  }

  #request(method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<S3Response> {
    const signed = aws4.sign(
      { service: 's3', region: this.#region, method, host: this.#host, path, headers: { ...headers }, ...(body ? { body } : {}) },
      this.#credentials,
    );
    return new Promise<S3Response>((resolve, reject) => {
      let answered = false;
      const request = this.#send(
        {
          protocol: this.#endpoint.protocol,
          hostname: this.#endpoint.hostname,
          port: this.#endpoint.port,
          method,
          path: signed.path,
          headers: signed.headers as OutgoingHttpHeaders,
          agent: this.#agent,
          timeout: REQUEST_TIMEOUT_MS,
        },
        (response) => {
          answered = true; // from here on, readBody reports what goes wrong
          readBody(response).then(
            (bytes) => resolve({ status: response.statusCode ?? 0, etag: stripQuotes(String(response.headers.etag ?? '')), body: bytes }),
            reject,
          );
        },
      );
      request.on('timeout', () => request.destroy(new TransportError('timed out')));
      request.on('error', (error) => {
        if (!answered)
          reject(error instanceof TransportError ? error : new TransportError((error as NodeJS.ErrnoException).code ?? error.message, { cause: error }));
      });
      request.end(body);
    });
  }
}

async function readBody(response: IncomingMessage): Promise<Buffer> {
  try {
    return await readBounded(response, MAX_RESPONSE_BYTES);
  } catch (error) {
    const { kind, cause } = error as BodyError;
    // Not a transient failure to retry: the same object would be as large again.
    if (kind === 'too-large') throw new KmsError('STORAGE_UNAVAILABLE', 'object storage answered more than 16 MiB');
    throw cause instanceof TransportError ? cause : new TransportError(cause instanceof Error ? cause.message : 'answer cut short', { cause });
  }
}

function backoff(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 10 * 2 ** attempt));
}

function stripQuotes(etag: string): string {
  return etag.replace(/^"|"$/g, '');
}

/** The XML parser is loaded only for listings and error answers, never on a served read. */
async function xml(body: Buffer): Promise<Record<string, unknown>> {
  const { XMLParser } = await import('fast-xml-parser');
  return new XMLParser({ parseTagValue: false, isArray: (name) => name === 'Contents' }).parse(body) as Record<string, unknown>;
}

async function parseListPage(body: Buffer): Promise<{ keys: string[]; nextToken: string | undefined }> {
  const result = (await xml(body)).ListBucketResult as { Contents?: { Key?: unknown }[]; IsTruncated?: unknown; NextContinuationToken?: unknown } | undefined;
  if (result === undefined) throw new KmsError('STORAGE_UNAVAILABLE', 'object storage answered a listing we cannot read');
  const keys = (result.Contents ?? []).map((c) => String(c.Key ?? ''));
  const truncated = String(result.IsTruncated) === 'true';
  const token = typeof result.NextContinuationToken === 'string' ? result.NextContinuationToken : undefined;
  if (truncated && token === undefined) throw new KmsError('STORAGE_UNAVAILABLE', 'object storage answered a truncated listing without a continuation token');
  return { keys, nextToken: truncated ? token : undefined };
}

/** The S3 error code (`NoSuchKey`, `NoSuchBucket`, …) of an error answer, or '' when it has none. */
async function errorCode(response: S3Response): Promise<string> {
  if (response.body.length === 0) return '';
  try {
    const error = (await xml(response.body)).Error as { Code?: unknown } | undefined;
    return typeof error?.Code === 'string' ? error.Code : '';
  } catch {
    return '';
  }
}

/** RGW error replies carry no message; the status and error code are what we can report. */
async function unavailable(response: S3Response): Promise<KmsError> {
  const code = await errorCode(response);
  const what = response.status === 403 ? 'refused our credentials' : `answered ${response.status}`;
  return new KmsError('STORAGE_UNAVAILABLE', `object storage ${what}${code ? ` (${code})` : ''}`);
}

function unreachable(error: TransportError): KmsError {
  return new KmsError('STORAGE_UNAVAILABLE', `object storage cannot be reached (${error.message})`, { cause: error });
}
