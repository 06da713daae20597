import { subscribe } from 'node:diagnostics_channel';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { KmsError } from '../errors.js';
import { MAX_BODY_BYTES, hasBody, refuseBody, refusedBody, tooLarge } from './request.js';

/**
 * Under functions-framework (5.x, build/src/server.js `getServer`), Express's json, text, urlencoded
 * and raw body parsers run before a function does, each with a 1 GiB limit, and no option changes
 * it: a 400 MB body was read whole into memory before our 64 KiB limit answered 413. This caps every
 * body those parsers could read at MAX_BODY_BYTES, the lean host's limit, as it comes off the wire.
 *
 * The hook is Node's diagnostics channel `http.server.request.start`, published for each request
 * before the server's listener (Express) sees it. A body over the limit (declared, or counted while
 * a chunked one arrives) is refused: what still arrives is dropped and the socket is no longer read,
 * the answer is 413 with `Connection: close`, and the function never acts on it. A body with a
 * Content-Encoding is refused too (415): the parsers would inflate it, and 64 KiB of deflate data
 * inflates to about 64 MiB. Installed once, by route.ts (so by every function module), like the log
 * guard. Only servers whose listener is an Express app are capped: the lean host reads bodies itself,
 * bounded, and answers in its own order (404 and 405 before 413).
 */
const INSTALLED = Symbol.for('tee-kms.framework-body-limit');
/** How long a refused connection stays half-closed so that the client reads the answer. */
const LINGER_MS = 2_000;

/** Answers a refused request when no one else has: route.ts's error answer, logged. */
export type Refusal = (req: IncomingMessage, res: ServerResponse, error: KmsError) => void;

export function installFrameworkBodyLimit(answer: Refusal): void {
  const holder = globalThis as { [INSTALLED]?: true };
  if (holder[INSTALLED]) return;
  holder[INSTALLED] = true;
  subscribe('http.server.request.start', (message) => {
    const { request, response, server } = message as { request: IncomingMessage; response: ServerResponse; server: Server };
    if (isFrameworkServer(server)) capBody(request, response, answer);
  });
}

const expressServers = new WeakMap<Server, boolean>();

/** functions-framework serves `http.createServer(app)`: an Express app (a function with `handle` and `use`). */
export function isFrameworkServer(server: Server): boolean {
  let known = expressServers.get(server);
  if (known === undefined) {
    known = server
      .listeners('request')
      .some((l) => typeof (l as { handle?: unknown }).handle === 'function' && typeof (l as { use?: unknown }).use === 'function');
    expressServers.set(server, known);
  }
  return known;
}

function capBody(request: IncomingMessage, response: ServerResponse, answer: Refusal): void {
  const { headers } = request;
  if (!hasBody(request)) return;
  const encoding = headers['content-encoding'];
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
    return refuse(request, response, answer, new KmsError('UNSUPPORTED_MEDIA_TYPE', 'request bodies must not be compressed (Content-Encoding)'));
  }
  const declared = headers['content-length'];
  if (declared !== undefined && Number(declared) > MAX_BODY_BYTES) return refuse(request, response, answer, tooLarge());
  // Without Transfer-Encoding, Node's parser delivers exactly the declared length (at most the limit).
  if (headers['transfer-encoding'] === undefined) return;
  // Node's HTTP parser hands each piece of the body to push(): counted there, whoever reads it.
  const push = request.push;
  let received = 0;
  request.push = function countedPush(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding) {
    if (Buffer.isBuffer(chunk)) {
      received += chunk.length;
      if (received > MAX_BODY_BYTES) {
        refuse(request, response, answer, tooLarge());
        return false;
      }
    }
    return push.call(this, chunk, encoding);
  };
}

function refuse(request: IncomingMessage, response: ServerResponse, answer: Refusal, error: KmsError): void {
  if (refusedBody(request) !== undefined) return;
  refuseBody(request, error); // a function that reads the body itself gets this error at once
  // Dropped, and false: Node stops reading the socket (it waits for a read that never comes).
  request.push = () => false;
  // The rest of the body is never read: the connection cannot carry another request.
  if (!response.headersSent) response.setHeader('connection', 'close');
  // After the answer Node would close the socket at once; with body bytes unread that is a TCP reset,
  // which can reach the client before the answer does (it then sees EPIPE, not the 413). So: send
  // FIN after the answer, and close for good a moment later, still reading nothing.
  const { socket } = request;
  socket.destroySoon = function lingeringClose(this: typeof socket) {
    this.end();
    setTimeout(() => this.destroy(), LINGER_MS).unref();
  };
  // After the route, if it runs now (no parser took the body), has answered; else Express's parser
  // waits on the body for good, and this is the answer. Node closes the connection after it.
  setImmediate(() => {
    if (!response.headersSent) answer(request, response, error);
  });
  keepFirstAnswer(response);
}

/**
 * A parser that refuses the body itself (an encoding or charset it does not know) hands its error to
 * Express's final handler, which answers only once the request has ended: here, when the connection
 * closes, long after this answer. Its header changes would then throw (ERR_HTTP_HEADERS_SENT), an
 * uncaught exception that functions-framework answers with a 500 to whichever request came last
 * before it exits. So once this response is sent, later header changes are dropped; its end() is
 * already a no-op then.
 */
function keepFirstAnswer(response: ServerResponse): void {
  for (const method of ['setHeader', 'removeHeader', 'writeHead'] as const) {
    const original = response[method] as (...args: unknown[]) => unknown;
    (response as unknown as Record<string, unknown>)[method] = function afterAnswer(this: ServerResponse, ...args: unknown[]) {
      return this.headersSent ? this : original.apply(this, args);
    };
  }
}
