/**
 * The lean host: the functions on bare node:http(s), without functions-framework's Express stack.
 * The container image runs this with FUNCTION_TARGET (one function per Knative service).
 */
import { loadRoutes } from '../functions/catalog.js';
import { startHost } from '../shared/http/host.js';
import { drainLog, log } from '../shared/log.js';
import { KmsError } from '../shared/errors.js';
import { exitIfStorageUnsafe } from '../shared/store/checked-store.js';

try {
  // Beside the host's start, not before it: a storage that ignores conditional writes stops us.
  exitIfStorageUnsafe(
    import('../shared/runtime.js').then(async ({ environmentContext }) => (await environmentContext.keys()).store),
    'tee-kms',
  );
  const host = await startHost(loadRoutes, process.env, { warmUp: true });
  log.info('tee-kms listening', { url: host.url, functions: process.env.FUNCTION_TARGET || 'all', metrics: host.metricsUrl ?? 'off' });
  const stop = () =>
    void host
      .close()
      .then(drainLog)
      .then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (error) {
  process.stderr.write(`tee-kms: ${error instanceof KmsError ? error.message : String(error)}\n`);
  process.exit(1);
}
