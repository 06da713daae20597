import type { IncomingMessage } from 'node:http';
import { KmsError } from '../errors.js';
import { validateName, validateToken, type NameKind } from '../names.js';
import type { SealedCredential } from '../sealed/credential.js';
import { authorizationHeader, bearerToken } from './bearer.js';
import { readBounded, type BodyError } from './body.js';

/** The largest request body any route accepts, under every host. */
export const MAX_BODY_BYTES = 64 * 1024;

/** A body refused as it arrived (framework-body-limit.ts), with the error that is its answer. */
const REFUSED = Symbol.for('tee-kms.body-refused');

export function refuseBody(raw: IncomingMessage, error: KmsError): void {
  (raw as { [REFUSED]?: KmsError })[REFUSED] = error;
}

export function refusedBody(raw: IncomingMessage): KmsError | undefined {
  return (raw as { [REFUSED]?: KmsError })[REFUSED];
}

/**
 * Node's HTTP server keeps a bounded number of a request's header lines and drops the rest unsaid
 * (when, as in both hosts, `maxHeadersCount` is not set, Node 20 keeps 1,000 in `headers` and
 * about 1,024 in `rawHeaders`, measured). More than this many are refused.
 */
const MAX_HEADER_LINES = 1000;

/**
 * Refuses a request with more header lines than MAX_HEADER_LINES: Node may have dropped some, and a
 * second Authorization or X-KMS-User among them (which a proxy on the way may read) would go unseen.
 */
export function refuseDroppedHeaders(raw: IncomingMessage): void {
  if (raw.rawHeaders.length > 2 * MAX_HEADER_LINES) {
    throw new KmsError('BAD_REQUEST', `the request has more than ${MAX_HEADER_LINES} header lines, past which they may not be read: send fewer`);
  }
}

/** Headers that carry credentials outside the URL (so tokens stay out of access logs). */
export const USER_HEADER = 'x-kms-user';

/**
 * The parsed request, kept on the request itself: a WeakMap entry per request cost the young
 * generation's garbage collector more than the parse it saves (docs/performance.md).
 */
const PARSED = Symbol('tee-kms.parsed');

/** A parsed request, independent of the host (functions-framework's Express or bare node:http). */
export class KmsRequest {
  /** Parsed once per request, however many layers (router, route) look at it. */
  static of(raw: IncomingMessage): KmsRequest {
    const holder = raw as IncomingMessage & { [PARSED]?: KmsRequest };
    return (holder[PARSED] ??= new KmsRequest(raw));
  }

  readonly method: string;
  /** The path and query exactly as the client sent them (a sealed credential's `htu`). */
  readonly target: string;
  readonly pathname: string;
  readonly wantsJson: boolean;
  readonly #rawQuery: string;
  #query: Map<string, string[]> | undefined;
  #body: Promise<Buffer> | undefined;
  #validatedPath: string | undefined;
  #sealed: SealedCredential | undefined;

  constructor(readonly raw: IncomingMessage) {
    this.method = raw.method ?? 'GET';
    // functions-framework may rewrite req.url; originalUrl keeps what the client sent.
    const url = (raw as { originalUrl?: string }).originalUrl ?? raw.url ?? '/';
    this.target = url;
    const q = url.indexOf('?');
    this.pathname = q === -1 ? url : url.slice(0, q);
    this.#rawQuery = q === -1 ? '' : url.slice(q + 1);
    this.wantsJson = (raw.headers.accept ?? '').toLowerCase().includes('application/json');
  }

  /** A query parameter given at most once. */
  param(name: string): string | undefined {
    // Parsed on first use, inside the route's error handling (a bad query is a 400 there).
    this.#query ??= parseQuery(this.#rawQuery);
    const values = this.#query.get(name) ?? [];
    if (values.length > 1) throw new KmsError('BAD_REQUEST', `parameter ${name} given more than once`);
    return values[0];
  }

  /** The `{name}` in `<prefix>{name}`, percent-decoded and validated. */
  pathName(prefix: string, kind: NameKind): string {
    let decoded: string;
    try {
      decoded = decodeURIComponent(this.pathname.slice(prefix.length));
    } catch {
      throw new KmsError('INVALID_NAME', `invalid ${kind}: bad percent-encoding`);
    }
    const name = validateName(kind, decoded);
    this.#validatedPath = `${prefix}${name}`;
    return name;
  }

  /**
   * The path with its `{name}` once that name has passed validation, for the access log. Before
   * then the path is whatever the client sent, which may hold a token (a `&` typed for `?`).
   */
  get validatedPath(): string | undefined {
    return this.#validatedPath;
  }

  /** A named query parameter, validated as a name. */
  name(param: string, kind: NameKind = param as NameKind): string {
    return validateName(kind, this.param(param));
  }

  /** The opened `Authorization: Sealed` credential (shared/http/sealed.ts), when the request carried one. */
  get sealed(): SealedCredential | undefined {
    return this.#sealed;
  }

  useSealed(credential: SealedCredential): void {
    this.#sealed = credential;
  }

  /** Whether a secret travels in the clear: an Authorization header (asked of requests not sealed), or a token in the query. */
  hasClearCredentials(): boolean {
    if (this.raw.headers.authorization !== undefined) return true;
    this.#query ??= parseQuery(this.#rawQuery);
    return this.#query.has('token'); // given twice too: refused as in the clear, before its form is judged
  }

  /**
   * The caller's credentials: sealed (`Authorization: Sealed`), or `Authorization: Bearer <token>`
   * with `X-KMS-User: <user>`, or the BigDL KMS's `?user=…&token=…`. Forms given together must agree.
   */
  credentials(): { user: string; token: string } {
    return { user: validateName('user', this.claimedUser()), token: this.token() };
  }

  /** The user the request names (sealed, `X-KMS-User` or `?user=`), if any: named twice, the same. */
  claimedUser(): string | undefined {
    const user = agree('user', single(this.raw.headers[USER_HEADER]), this.param('user'));
    const sealed = this.#sealed?.user;
    if (sealed !== undefined && user !== undefined && sealed !== user) {
      throw new KmsError('BAD_REQUEST', 'the sealed credential names another user than the header or the query');
    }
    return sealed ?? user;
  }

  /** The token: sealed, `Authorization: Bearer <token>` or `?token=…`. */
  token(): string {
    if (this.#sealed !== undefined) return this.#sealedToken(this.#sealed);
    const header = authorizationHeader(this.raw);
    return validateToken(agree('token', header === undefined ? undefined : bearer(header), this.param('token')));
  }

  /** The operator's token: sealed, or `Authorization: Bearer`; null when neither is given. */
  adminToken(): string | null {
    if (this.#sealed !== undefined) return this.#sealedToken(this.#sealed);
    const header = authorizationHeader(this.raw);
    if (typeof header === 'object') throw new KmsError('BAD_REQUEST', ONCE);
    return bearerToken(header) ?? null;
  }

  /**
   * Undefined if the request has no body, else the promise of the whole body. A route acts only once
   * the request has arrived whole: if its body is cut short or malformed, Node's HTTP layer has
   * already answered 400, and a create done meanwhile would be a change behind a rejection.
   */
  received(): Promise<Buffer> | undefined {
    return hasBody(this.raw) ? this.body() : undefined;
  }

  /** The raw body, bounded, read once. functions-framework has already read it into `rawBody`. */
  body(): Promise<Buffer> {
    return (this.#body ??= this.#readBody());
  }

  /** A sealed token; one in the query as well would have crossed the way in the clear. */
  #sealedToken(sealed: SealedCredential): string {
    if (this.param('token') !== undefined) throw new KmsError('BAD_REQUEST', 'a sealed request carries its token sealed, never also in the query');
    return sealed.token;
  }

  async #readBody(): Promise<Buffer> {
    const refused = refusedBody(this.raw);
    if (refused !== undefined) throw refused;
    const preRead = (this.raw as { rawBody?: unknown }).rawBody;
    if (Buffer.isBuffer(preRead)) {
      if (preRead.length > MAX_BODY_BYTES) throw tooLarge();
      return preRead;
    }
    try {
      return await readBounded(this.raw, MAX_BODY_BYTES);
    } catch (error) {
      if ((error as BodyError).kind === 'too-large') throw tooLarge();
      // Refused while it arrived: the connection was closed after that answer.
      const refusedMeanwhile = refusedBody(this.raw);
      if (refusedMeanwhile !== undefined) throw refusedMeanwhile;
      // The client closed the connection mid-body, or the HTTP layer refused its framing.
      throw new KmsError('BAD_REQUEST', 'the request body was cut short or malformed');
    }
  }

  /** The body as JSON (any value). */
  async jsonValue(): Promise<unknown> {
    const body = await this.body();
    try {
      return JSON.parse(body.toString('utf8')) as unknown;
    } catch {
      throw new KmsError('BAD_REQUEST', 'the body must be JSON');
    }
  }

  /** The body as a JSON object. */
  async json(): Promise<Record<string, unknown>> {
    const value = await this.jsonValue();
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new KmsError('BAD_REQUEST', 'the body must be a JSON object');
    }
    return value as Record<string, unknown>;
  }
}

/**
 * A query string as application/x-www-form-urlencoded (`+` is a space), but strict: a `%` sequence
 * that does not decode to UTF-8 is refused. URLSearchParams would replace it with U+FFFD, so the
 * tokens `%FF` and `%FE` would both be the same string and unlock each other's user.
 */
function parseQuery(query: string): Map<string, string[]> {
  const params = new Map<string, string[]>();
  for (const pair of query.split('&')) {
    if (pair === '') continue; // BigDL KMS's clients send `&&` between parameters
    const eq = pair.indexOf('=');
    const name = decodeQueryPart(eq === -1 ? pair : pair.slice(0, eq));
    const value = eq === -1 ? '' : decodeQueryPart(pair.slice(eq + 1));
    const values = params.get(name);
    if (values === undefined) params.set(name, [value]);
    else values.push(value);
  }
  return params;
}

function decodeQueryPart(part: string): string {
  if (!part.includes('%') && !part.includes('+')) return part; // the usual case, on every request
  try {
    return decodeURIComponent(part.replaceAll('+', ' '));
  } catch {
    throw new KmsError(
      'BAD_REQUEST',
      'bad percent-encoding in the query string: every %XX sequence must be hexadecimal and decode to UTF-8 (write a literal % as %25)',
    );
  }
}

const ONCE = 'the Authorization header must be "Bearer <token>", given once';

function bearer(header: string | readonly string[]): string {
  const token = bearerToken(header);
  if (token == null) throw new KmsError('BAD_REQUEST', ONCE);
  return token;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function agree(what: string, fromHeader: string | undefined, fromQuery: string | undefined): string | undefined {
  if (fromHeader !== undefined && fromQuery !== undefined && fromHeader !== fromQuery) {
    throw new KmsError('BAD_REQUEST', `${what} given both in a header and in the query, with different values`);
  }
  return fromHeader ?? fromQuery;
}

/** Whether the request has a body: chunked, or a length other than 0. */
export function hasBody(raw: IncomingMessage): boolean {
  const { headers } = raw;
  return headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0');
}

export function tooLarge(): KmsError {
  return new KmsError('PAYLOAD_TOO_LARGE', `the body is larger than ${MAX_BODY_BYTES} bytes`);
}
