import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { kmsOptions } from '../config.js';
import { KmsError } from '../errors.js';
import type { MetricsServer } from '../metrics/server.js';
import { parseMetricsPort } from '../metrics/port.js';
import { loadOptions, option, parse } from '../options.js';
import { LOCAL_HOSTNAMES, loadTls } from '../tls.js';
import { environmentContext, type RouteContext } from '../runtime.js';
import { answerConnect } from './connect.js';
import { closeServer, listen } from './listen.js';
import type { Route } from './route.js';
import { routeRequests } from './router.js';

/** Options of the lean node:http(s) host (npm start, and the container image). */
export const hostOptions = {
  port: option({ env: 'PORT', default: 9876, parse: parse.integer(0, 65_535), description: 'Port to listen on (Knative sets it).' }),
  bind: option({ env: 'KMS_BIND', default: '127.0.0.1', parse: parse.string, description: 'Address to listen on; the container image sets 0.0.0.0.' }),
  tls: option({
    env: 'KMS_TLS',
    default: 'self-signed' as 'self-signed' | 'files' | 'off',
    parse: parse.oneOf('self-signed', 'files', 'off'),
    description:
      '`self-signed`: a local certificate kept in KMS_DATA_DIR/tls; `files`: KMS_TLS_CERT_FILE and KMS_TLS_KEY_FILE; `off`: plain HTTP behind a TLS-terminating proxy (Knative).',
  }),
  certFile: option({ env: 'KMS_TLS_CERT_FILE', default: '', parse: parse.string, description: 'PEM certificate (chain) for KMS_TLS=files.' }),
  keyFile: option({ env: 'KMS_TLS_KEY_FILE', default: '', parse: parse.string, description: 'PEM private key for KMS_TLS=files.' }),
  functionTarget: option({
    env: 'FUNCTION_TARGET',
    default: '',
    parse: parse.string,
    description: 'Serve only this function (one per Knative service); empty serves all.',
  }),
  metricsPort: option({
    env: 'KMS_METRICS_PORT',
    default: 9464 as number | undefined,
    parse: parseMetricsPort,
    description: 'Port of GET /metrics (Prometheus), apart from the public routes; 0 or off disables it.',
  }),
  metricsBind: option({
    env: 'KMS_METRICS_BIND',
    default: '127.0.0.1',
    parse: parse.string,
    description: 'Address the metrics port listens on; the Knative manifests set 0.0.0.0 for in-cluster scraping.',
  }),
  dataDir: kmsOptions.dataDir,
  // Read by shared/log.ts when it is imported, which cannot report a bad value: checked here, at start.
  accessLog: kmsOptions.accessLog,
};

export interface RunningHost {
  readonly server: Server;
  readonly url: string;
  readonly certFile: string | undefined;
  /** `http://host:port/metrics`, unless KMS_METRICS_PORT disables it. */
  readonly metricsUrl: string | undefined;
  close(): Promise<void>;
}

/**
 * Serves the routes `loadRoutes` gives for FUNCTION_TARGET (functions/catalog.ts loadRoutes: only
 * that function's module, or every one), on `context` (by default the one the environment
 * configures). `warmUp`: start their warm-up work (Route.warmUp) before listening.
 */
export async function startHost(
  loadRoutes: (functionTarget: string) => Promise<readonly Route[]>,
  env: NodeJS.ProcessEnv = process.env,
  { warmUp = false, context = environmentContext }: { warmUp?: boolean; context?: RouteContext } = {},
): Promise<RunningHost> {
  const options = loadOptions(hostOptions, env);
  const allRoutes = await loadRoutes(options.functionTarget);
  const routes = options.functionTarget === '' ? allRoutes : allRoutes.filter((r) => r.name === options.functionTarget);
  if (routes.length === 0) {
    throw new KmsError('CONFIG', `FUNCTION_TARGET=${options.functionTarget} names no function; known: ${allRoutes.map((r) => r.name).join(', ')}`);
  }
  if (warmUp) for (const route of routes) route.warmUp?.(context);
  const handler = routeRequests(routes, context);
  const listener = (req: Parameters<typeof handler>[0], res: Parameters<typeof handler>[1]) => void handler(req, res);

  let server: Server;
  let certFile: string | undefined;
  if (options.tls === 'off') {
    server = createHttpServer({ keepAliveTimeout: 65_000 }, listener);
  } else {
    if (options.tls === 'files' && (options.certFile === '' || options.keyFile === '')) {
      throw new KmsError('CONFIG', 'KMS_TLS=files needs KMS_TLS_CERT_FILE and KMS_TLS_KEY_FILE');
    }
    const tls = await loadTls({
      dataDir: options.dataDir,
      certFile: options.tls === 'files' ? options.certFile : '',
      keyFile: options.tls === 'files' ? options.keyFile : '',
      hostnames: LOCAL_HOSTNAMES,
      envPrefix: 'KMS_TLS',
      commonName: 'tee-kms (self-signed, local use)',
      dataDirEnv: 'KMS_DATA_DIR',
    });
    certFile = tls.certFile;
    server = createHttpsServer({ cert: tls.cert, key: tls.key, keepAliveTimeout: 65_000 }, listener);
  }
  answerConnect(server, listener);

  // Metrics first: once the public port answers (a readiness probe), its metrics can be scraped.
  const metrics = options.metricsPort === undefined ? undefined : await startMetrics(options.metricsPort, options.metricsBind, context);
  let port: number;
  try {
    ({ port } = await listen(server, options.port, options.bind, { hostEnv: 'KMS_BIND', portEnv: 'PORT' }));
  } catch (error) {
    await metrics?.close();
    throw error;
  }
  const host = options.bind.includes(':') ? `[${options.bind}]` : options.bind === '0.0.0.0' ? '127.0.0.1' : options.bind;
  return {
    server,
    url: `${options.tls === 'off' ? 'http' : 'https'}://${host}:${port}`,
    certFile,
    metricsUrl: metrics?.url,
    close: async () => {
      await Promise.all([closeServer(server), metrics?.close()]);
    },
  };
}

/** Loaded before the public port listens, and only with metrics on: prom-client is then on the cold start's path. */
async function startMetrics(port: number, bind: string, context: RouteContext): Promise<MetricsServer> {
  const [{ serveMetrics }, { rotationCollector }, { readRotationJournal }] = await Promise.all([
    import('../metrics/server.js'),
    import('../metrics/rotation.js'),
    import('../root-key/rotation.js'),
  ]);
  const journal = async () => readRotationJournal((await context.keys()).store);
  return serveMetrics({ port, bind, portEnv: 'KMS_METRICS_PORT', bindEnv: 'KMS_METRICS_BIND', collectors: [rotationCollector(journal)] });
}
