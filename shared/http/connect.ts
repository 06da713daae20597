import { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { KmsError } from '../errors.js';

/** How long a refused CONNECT's connection stays half-closed so that the client reads the answer. */
const LINGER_MS = 2_000;

/**
 * Node answers a CONNECT nothing: without a 'connect' listener it destroys the socket
 * (lib/_http_server.js, onParserExecuteCommon), and the request never reaches the server's request
 * listener nor the diagnostics channel. This listener hands it to `answer`, the host's own request
 * handler, on a response that closes the connection: Node has stopped parsing it, and what follows
 * a CONNECT would be a tunnel's bytes, dropped unread.
 */
export function answerConnect(server: Server | HttpsServer, answer: (req: IncomingMessage, res: ServerResponse) => void): void {
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    // Node took its own error listener off with the parser: a reset must not be an uncaught error.
    socket.on('error', () => socket.destroy());
    socket.resume();
    whenFree(socket, () => {
      const res = new ServerResponse(req);
      res.shouldKeepAlive = false;
      res.assignSocket(socket as Parameters<ServerResponse['assignSocket']>[0]);
      res.once('finish', () => {
        res.detachSocket(socket as Parameters<ServerResponse['detachSocket']>[0]);
        // FIN after the answer, and closed for good a moment later: a client that never closes holds nothing.
        socket.end();
        setTimeout(() => socket.destroy(), LINGER_MS).unref();
      });
      answer(req, res);
    });
  });
}

/** A CONNECT pipelined after other requests is answered after theirs, in order, as they are. */
function whenFree(socket: Duplex, then: () => void): void {
  const earlier = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  if (earlier == null) return then();
  earlier.once('finish', () => whenFree(socket, then));
}

/**
 * The refusal of a CONNECT: 405, as nginx answers it. Its target names a host, not a resource
 * here, so its `Allow` is empty: no method is served on it.
 */
export function connectRefused(): KmsError {
  return new KmsError('METHOD_NOT_ALLOWED', 'CONNECT is not served: this is not a proxy', { details: { allow: '' } });
}
