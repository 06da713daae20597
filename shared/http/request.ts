import type { IncomingMessage } from 'node:http';
import { KmsError } from '../errors.js';
import { validateName, validateToken, type NameKind } from '../names.js';

const MAX_BODY_BYTES = 64 * 1024;

/** Headers that carry credentials outside the URL (so tokens stay out of access logs). */
export const USER_HEADER = 'x-kms-user';

const parsed = new WeakMap<IncomingMessage, KmsRequest>();

/** A parsed request, independent of the host (functions-framework's Express or bare node:http). */
export class KmsRequest {
  /** Parsed once per request, however many layers (router, route) look at it. */
  static of(raw: IncomingMessage): KmsRequest {
    let request = parsed.get(raw);
    if (request === undefined) parsed.set(raw, (request = new KmsRequest(raw)));
    return request;
  }

  readonly method: string;
  readonly pathname: string;
  readonly query: URLSearchParams;
  readonly wantsJson: boolean;

  constructor(readonly raw: IncomingMessage) {
    this.method = raw.method ?? 'GET';
    // functions-framework may rewrite req.url; originalUrl keeps what the client sent.
    const url = (raw as { originalUrl?: string }).originalUrl ?? raw.url ?? '/';
    const q = url.indexOf('?');
    this.pathname = q === -1 ? url : url.slice(0, q);
    // The seed's clients send `&&` between parameters: empty pairs are simply skipped.
    this.query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    this.wantsJson = (raw.headers.accept ?? '').toLowerCase().includes('application/json');
  }

  /** A query parameter given at most once. */
  param(name: string): string | undefined {
    const values = this.query.getAll(name);
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
    return validateName(kind, decoded);
  }

  /** A named query parameter, validated as a name. */
  name(param: string, kind: NameKind = param as NameKind): string {
    return validateName(kind, this.param(param));
  }

  /**
   * The caller's credentials: `Authorization: Bearer <token>` with `X-KMS-User: <user>`, or the
   * seed's `?user=…&token=…`. Both forms at once must agree.
   */
  credentials(): { user: string; token: string } {
    const user = agree('user', single(this.raw.headers[USER_HEADER]), this.param('user'));
    return { user: validateName('user', user), token: this.token() };
  }

  /** The token: `Authorization: Bearer <token>` or `?token=…`. */
  token(): string {
    const header = this.raw.headers.authorization;
    return validateToken(agree('token', header === undefined ? undefined : bearer(header), this.param('token')));
  }

  /** The raw body, bounded. functions-framework has already read it into `rawBody`. */
  async body(): Promise<Buffer> {
    const preRead = (this.raw as { rawBody?: unknown }).rawBody;
    if (Buffer.isBuffer(preRead)) {
      if (preRead.length > MAX_BODY_BYTES) throw tooLarge();
      return preRead;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of this.raw as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) throw tooLarge();
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
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

function bearer(header: string): string {
  const match = /^Bearer[ ]+(\S+)$/i.exec(header.trim());
  if (match === null) throw new KmsError('BAD_REQUEST', 'the Authorization header must be "Bearer <token>"');
  return match[1]!;
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

function tooLarge(): KmsError {
  return new KmsError('PAYLOAD_TOO_LARGE', `the body is larger than ${MAX_BODY_BYTES} bytes`);
}
