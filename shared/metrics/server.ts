import { createServer, type Server, type ServerResponse } from 'node:http';
import { KmsError } from '../errors.js';
import { ADDRESS_ADVICE, closeServer, isAddressError, listen } from '../http/listen.js';
import { createRegistry, type Collector } from './registry.js';

export interface MetricsServer {
  /** `http://host:port/metrics`. */
  readonly url: string;
  close(): Promise<void>;
}

export interface MetricsServerOptions {
  readonly port: number;
  readonly bind: string;
  /** The variable that set the port: named when it cannot be bound. */
  readonly portEnv: string;
  /** The variable that set the address: named when it is not one of this machine. */
  readonly bindEnv: string;
  readonly collectors?: readonly Collector[];
}

/**
 * Serves `GET /metrics` (Prometheus text format) on its own port, apart from the public routes:
 * plain HTTP, no authentication, so it is bound to loopback unless a cluster scrapes it. Imported
 * only with metrics on (prom-client costs start-up time and memory): by the lean host before its
 * public port listens, by the sealing service after its HTTPS port does. A port that cannot be bound
 * rejects with a CONFIG error naming `portEnv` (`bindEnv` for an address not of this machine).
 */
export async function serveMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const registry = createRegistry(options.collectors);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return answer(res, 404, 'not found: GET /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return answer(res, 405, 'use GET\n');
    }
    registry.metrics().then(
      (text) => answer(res, 200, text, registry.contentType),
      () => answer(res, 503, 'metrics unavailable\n'),
    );
  });
  try {
    const { port } = await listen(server, options.port, options.bind);
    const host = options.bind.includes(':') ? `[${options.bind}]` : options.bind === '0.0.0.0' ? '127.0.0.1' : options.bind;
    return { url: `http://${host}:${port}/metrics`, close: () => closeServer(server) };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    if (isAddressError(code)) throw new KmsError('CONFIG', `cannot serve metrics on ${options.bind} (${options.bindEnv}): ${code}; ${ADDRESS_ADVICE}`);
    throw new KmsError(
      'CONFIG',
      `cannot serve metrics on ${options.bind}:${options.port} (${options.portEnv}): ${code}; choose another port, or 0 or off to disable`,
    );
  }
}

function answer(res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
