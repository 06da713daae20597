/**
 * The ceiling for the warm read: bare node:http(s) answering every request with the same bytes as a
 * warm `GET /dataKey` (same status, headers and a 45-byte body), and nothing else.
 *
 *   node dist/bench/bare-server.js http|https [TLS_DIR]   prints `listening <url>` on stdout
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { selfSignedTls } from '../shared/tls.js';

const body = `${Buffer.alloc(32, 7).toString('base64')}\n`;
const headers = {
  'content-type': 'text/plain; charset=utf-8',
  'content-length': Buffer.byteLength(body),
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
};

const listener = (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(200, headers);
  res.end(body);
};

const protocol = process.argv[2] === 'https' ? 'https' : 'http';
const server =
  protocol === 'https'
    ? createHttpsServer({ ...(await selfSignedTls(process.argv[3] ?? '.kms', 'bench-bare')), keepAliveTimeout: 65_000 }, listener)
    : createHttpServer({ keepAliveTimeout: 65_000 }, listener);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${protocol}://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
