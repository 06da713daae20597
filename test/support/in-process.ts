// The functions in this test's own process, as hono tests its app through app.request: the lean
// host's router on real HTTP (loopback), over a context the test builds from its own parts: the
// embedded store in a fresh folder and a static root key. No process is started, no S3 server or
// build is needed, so these tests belong to `npm run test:unit`.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRoutes } from '../../functions/catalog.js';
import { loadKmsConfig } from '../../shared/config.js';
import { startHost } from '../../shared/http/host.js';
import { StaticRootKeySource } from '../../shared/root-key/source.js';
import { createRouteContext } from '../../shared/runtime.js';
import { CheckedObjectStore } from '../../shared/store/checked-store.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { httpCall, NO_METRICS, type HttpAnswer, type RequestOptions } from './processes.js';

export interface InProcessKms {
  readonly url: string;
  /** The folder of the embedded store (objects under `objects/`). */
  readonly dataDir: string;
  readonly store: FsObjectStore;
  readonly rootKey: Buffer;
  request(path: string, options?: RequestOptions): Promise<HttpAnswer>;
  close(): Promise<void>;
}

/** Every function (or those `functionTarget` names) on one in-process host. `env`: more KMS_* settings. */
export async function startInProcess(options: { env?: Record<string, string>; functionTarget?: string } = {}): Promise<InProcessKms> {
  const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-in-process-'));
  const rootKey = randomBytes(32);
  const store = new FsObjectStore(dataDir);
  const context = createRouteContext({
    config: loadKmsConfig({ KMS_DATA_DIR: dataDir, ...options.env }),
    store: new CheckedObjectStore(store, () => store.removeLeftovers()),
    rootKeySource: new StaticRootKeySource(rootKey),
  });
  const host = await startHost(
    loadRoutes,
    { PORT: '0', KMS_TLS: 'off', KMS_DATA_DIR: dataDir, FUNCTION_TARGET: options.functionTarget ?? '', ...NO_METRICS },
    { context },
  );
  return {
    url: host.url,
    dataDir,
    store,
    rootKey,
    request: (path, requestOptions) => httpCall(`${host.url}${path}`, requestOptions),
    close: async () => {
      await host.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
