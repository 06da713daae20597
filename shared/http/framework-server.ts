import { subscribe } from 'node:diagnostics_channel';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { answerConnect } from './connect.js';
import { isFrameworkServer } from './framework-body-limit.js';

/**
 * Under functions-framework, which creates its server itself (5.x, build/src/server.js `getServer`),
 * a CONNECT, which Node closes without a word on a server with no 'connect' listener (Express adds
 * none), is answered by `refuseConnect` (route.ts: 405, logged), as on the lean host.
 *
 * The hook is Node's diagnostics channel `net.server.socket`, published for each connection before
 * anything is read from it. Installed once, by route.ts (so by every function module); the lean
 * host's server is not an Express app and is left alone.
 */
const INSTALLED = Symbol.for('tee-kms.framework-server');
const answering = new WeakSet<Server>();

export function installFrameworkServer(refuseConnect: (req: IncomingMessage, res: ServerResponse) => void): void {
  const holder = globalThis as { [INSTALLED]?: true };
  if (holder[INSTALLED]) return;
  holder[INSTALLED] = true;
  subscribe('net.server.socket', (message) => {
    const server = (message as { socket: Socket & { server?: unknown } }).socket.server as Server | undefined;
    // Every net server's connections pass here (TLS, metrics): only an Express app's server is taken.
    if (server === undefined || answering.has(server) || !isFrameworkServer(server)) return;
    answering.add(server);
    answerConnect(server, refuseConnect);
  });
}
