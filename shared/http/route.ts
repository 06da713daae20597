import type { IncomingMessage, ServerResponse } from 'node:http';
import { KmsError } from '../errors.js';
import { log } from '../log.js';
import { metricsHooks } from '../metrics/hooks.js';
import { installFrameworkBodyLimit } from './framework-body-limit.js';
import { installFrameworkLogGuard } from './framework-log-guard.js';
import { installFrameworkServer } from './framework-server.js';
import { connectRefused } from './connect.js';
import { environmentContext, type RouteContext } from '../runtime.js';
import { KmsRequest, refusedBody, refuseDroppedHeaders } from './request.js';
import { authenticatedHeaders, openSealedRequest } from './sealed.js';
import type { SealedCredential } from '../sealed/credential.js';
import { STATUS_BY_CODE } from './status.js';

/** A request handler on Node's own types: runs under functions-framework and bare node:http alike. */
export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** What a route answers: BigDL KMS's plain-text sentence, or JSON when the client accepts it. */
export interface RouteResult {
  readonly status: number;
  readonly text: string;
  readonly json: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface RouteSpec {
  /** The functions-framework target name. */
  readonly name: string;
  readonly methods: readonly string[];
  /** `/dataKey/` matches `/dataKey/{name}`; `/` matches only `/`. */
  readonly path: string;
  /** Answers one request; everything beyond the request (storage, keys, the sealing service) comes from `ctx`. */
  readonly handle: (request: KmsRequest, ctx: RouteContext) => Promise<RouteResult>;
  /**
   * Answer headers (`x-kms-…`) that a sealed answer also carries authenticated, in its JWE protected
   * header as `kms-…` (docs/sealed-channel.md): values a client acts on, which an ingress could change.
   */
  readonly sealedHeaders?: readonly `x-kms-${string}`[];
  /** Starts what this route's first request would wait for; a host may call it at start-up. Never throws. */
  readonly warmUp?: (ctx: RouteContext) => void;
}

export interface Route extends RouteSpec {
  /** The handler on the context built from the environment: what functions-framework calls. */
  readonly handler: Handler;
  /** The handler on a context its host built (the lean host, or a test). */
  handlerFor(ctx: RouteContext): Handler;
  matches(pathname: string): boolean;
}

/** Builds a function's handler: the entry point where every error becomes an HTTP answer. */
export function defineRoute(spec: RouteSpec): Route {
  installFrameworkLogGuard();
  installFrameworkBodyLimit(answerRefusedBody);
  installFrameworkServer(answerConnectRefused);
  const takesName = spec.path.endsWith('/') && spec.path !== '/';
  const matches = (pathname: string) => (takesName ? pathname.startsWith(spec.path) && pathname.length > spec.path.length : pathname === spec.path);
  /** What the access log shows for a path it cannot vouch for: no name validated, no match, or a 400. */
  const template = takesName ? `${spec.path}{name}` : spec.path;
  const sealedHeaders = spec.sealedHeaders ?? [];
  for (const name of sealedHeaders) if (!SEALED_HEADER.test(name)) throw new Error(`${spec.name}: a sealed header is named x-kms-<lowercase>, not ${name}`);

  const handlerFor =
    (ctx: RouteContext): Handler =>
    async (req, res) => {
      await withinConnectionBudget(req, res, spec.name, async () => {
        const started = process.hrtime.bigint();
        let request: KmsRequest | undefined;
        let result: RouteResult;
        try {
          request = KmsRequest.of(req);
          refuseDroppedHeaders(req);
          if (!matches(request.pathname)) throw new KmsError('NOT_FOUND', `no such route: ${spec.name} serves ${template}`);
          if (!spec.methods.includes(request.method)) {
            throw new KmsError('METHOD_NOT_ALLOWED', `${request.method} is not allowed here; use ${spec.methods.join(' or ')}`, {
              details: { allow: spec.methods.join(', ') },
            });
          }
          // Waits for the whole request, and for Node to parse what followed it in the same read: if Node
          // refused that (it answers 400 and closes the connection), this request's answer could not be
          // delivered, so nothing is done for it. A first rotate's shares, say, would be lost with it.
          await request.received();
          if (req.socket?.destroyed === true) throw new KmsError('BAD_REQUEST', 'the connection was closed before the request could be served');
          await openSealedRequest(request, ctx);
          result = await spec.handle(request, ctx);
        } catch (error) {
          result = errorResult(error, spec.name);
        }
        if (res.headersSent && refusedBody(req) !== undefined) return; // answered and logged as it arrived
        const sealed = request?.sealed;
        if (sealed === undefined) sendResult(res, result, request?.wantsJson ?? false);
        else await sendSealed(res, result, sealed, sealedHeaders);
        // A 400 is a request the client got wrong: a "name" there may be a token in the wrong place.
        const path = result.status === 400 ? template : (request?.validatedPath ?? template);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        log.access(spec.name, req.method ?? '?', path, result.status, ms);
        metricsHooks.request(spec.name, result.status, ms / 1000);
      });
    };
  return { ...spec, handler: handlerFor(environmentContext), handlerFor, matches };
}

/**
 * How many requests one connection may have in the routes at once. Node parses pipelined requests
 * as they arrive and holds back only once answers waiting to be written back up, so a client that
 * pipelines without reading, to a route that waits (storage, the sealing service), would otherwise
 * have any number in flight, each holding memory. Past this a request is answered 503 at once and
 * nothing is done for it: those small answers queue behind the ones in flight, in order, until Node
 * stops reading the connection. Every request gets its answer; a real client pipelines a few.
 */
export const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION = 32;
const IN_FLIGHT = Symbol('tee-kms.in-flight');
type Counted = { [IN_FLIGHT]?: number };

/**
 * Runs `handle` for a request within its connection's budget (MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION);
 * past it, answers 503 at once, logged and counted for function `fn` (undefined: the host's own
 * answer, neither logged nor counted). Every handler that may wait goes through it: the routes, and
 * the lean host's readiness, which waits for the root key.
 */
export async function withinConnectionBudget(req: IncomingMessage, res: ServerResponse, fn: string | undefined, handle: () => Promise<void>): Promise<void> {
  if (!admitOnConnection(req)) return answerBusyConnection(req, res, fn);
  try {
    await handle();
  } finally {
    leaveConnection(req);
  }
}

function admitOnConnection(req: IncomingMessage): boolean {
  const socket = req.socket as (typeof req.socket & Counted) | null;
  if (socket == null) return true;
  const inFlight = (socket[IN_FLIGHT] ?? 0) + 1;
  socket[IN_FLIGHT] = inFlight;
  if (inFlight <= MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION) return true;
  socket[IN_FLIGHT] = inFlight - 1;
  return false;
}

function answerBusyConnection(req: IncomingMessage, res: ServerResponse, fn: string | undefined): void {
  const error = new KmsError(
    'BUSY',
    `more than ${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests are in flight on this connection: nothing was done for this one; send it again once answers have come`,
  );
  const result = errorResult(error, fn ?? 'host');
  sendResult(res, result, KmsRequest.of(req).wantsJson);
  if (fn === undefined) return;
  log.access(fn, req.method ?? '?', '(busy connection)', result.status, 0);
  metricsHooks.request(fn, result.status, 0);
}

function leaveConnection(req: IncomingMessage): void {
  const socket = req.socket as (typeof req.socket & Counted) | null;
  if (socket != null) socket[IN_FLIGHT] = (socket[IN_FLIGHT] ?? 1) - 1;
}

/**
 * The answer to a body refused as it arrived under functions-framework (framework-body-limit.ts),
 * when Express's parser holds the request and the route never runs. Its path is not logged: no
 * name in it was validated.
 */
function answerRefusedBody(req: IncomingMessage, res: ServerResponse, error: KmsError): void {
  const result = errorResult(error, 'functions-framework');
  sendResult(res, result, KmsRequest.of(req).wantsJson);
  log.access('functions-framework', req.method ?? '?', '(body refused)', result.status, 0);
}

/** The answer to a CONNECT under functions-framework (framework-server.ts), which no route sees. */
function answerConnectRefused(req: IncomingMessage, res: ServerResponse): void {
  const result = errorResult(connectRefused(), 'functions-framework');
  sendResult(res, result, KmsRequest.of(req).wantsJson);
  log.access('functions-framework', 'CONNECT', '(CONNECT refused)', result.status, 0);
}

export function errorResult(error: unknown, where: string): RouteResult {
  if (!(error instanceof KmsError)) {
    log.error(where, error);
    error = new KmsError('INTERNAL', 'internal error');
  }
  const e = error as KmsError;
  const status = STATUS_BY_CODE[e.code];
  // Unavailability is worth a warning; shed load (BUSY) is not, or a flood of requests would flood the log too.
  if (status >= 500 && e.code !== 'INTERNAL' && e.code !== 'BUSY') log.warn(where, e);
  const headers: Record<string, string> = {};
  if (e.code === 'METHOD_NOT_ALLOWED' && typeof e.details?.allow === 'string') headers.allow = e.details.allow;
  if (status === 503) headers['retry-after'] = '5';
  return {
    status,
    text: `${e.message}\n`,
    json: { error: { code: e.code, message: e.message, ...(e.details ?? {}) } },
    headers,
  };
}

export function sendResult(res: ServerResponse, result: RouteResult, json: boolean): void {
  send(res, result, json ? JSON.stringify(result.json) : result.text, json ? 'application/json' : 'text/plain; charset=utf-8');
}

/** The answer to a sealed request: its JSON answer, status kept, as a JWE only the client opens. */
/** The answer sealing code, loaded with the first sealed answer (then no module lookup per answer). */
let answerModule: Promise<typeof import('../sealed/answer.js')> | undefined;

async function sendSealed(res: ServerResponse, result: RouteResult, credential: SealedCredential, sealedHeaders: readonly `x-kms-${string}`[]): Promise<void> {
  let body: string;
  try {
    // Loaded with the first sealed answer: the credential's opening has loaded its JWE code already.
    const { sealAnswer } = await (answerModule ??= import('../sealed/answer.js'));
    // kms-jti: the answer to this credential and no other, so an ingress cannot hand a client
    // the sealed answer of another of its requests (same response key while keys are reused).
    body = sealAnswer(result.json, credential.responseKey, { ...authenticatedHeaders(result.headers, sealedHeaders), 'kms-jti': credential.jti });
  } catch (error) {
    sendResult(res, errorResult(error, 'sealed answer'), true); // the key was imported when the credential was opened
    return;
  }
  // X-KMS-Jti outside too, as for every sealed value: a client may check each against its header.
  send(res, { ...result, headers: { ...result.headers, 'x-kms-jti': credential.jti, 'content-type': 'application/jose' } }, body, 'application/jose');
}

const SEALED_HEADER = /^x-kms-[a-z0-9]+(?:-[a-z0-9]+)*$/;

function send(res: ServerResponse, result: RouteResult, body: string, contentType: string): void {
  if (res.headersSent) return;
  res.writeHead(result.status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    // Answers may carry key material: never cache them.
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...result.headers,
  });
  res.end(body);
}
