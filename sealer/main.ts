import { KmsError } from '../shared/errors.js';
import { loadKmsConfig } from '../shared/config.js';
import { exitIfStorageUnsafe } from '../shared/store/checked-store.js';
import { openObjectStore } from '../shared/store/from-config.js';
import { FsObjectStore } from '../shared/store/fs-store.js';
import type { ObjectStore } from '../shared/store/object-store.js';
import { STATE_OBJECT_KEY } from './state-record.js';
import { sealerAttester, startSealer } from './app.js';
import { loadMeasuredPolicies } from './measured-policies.js';
import { sealerLog as log } from './log.js';
import { drainLog, onStdoutError } from '../shared/log.js';
import { loadSealerOptions } from './options.js';
import { configuredVerifiers } from './verifiers.js';

/** The sealing service's entry point: `node dist/sealer/main.js`, configured by KMS_SEALER_*. */
async function main(): Promise<void> {
  const options = loadSealerOptions();
  // The state record is small and not secret. It lives where the keys live, in the functions' own
  // store (KMS_STORE, KMS_DATA_DIR, KMS_S3_*): the service checks a recovered or new root key
  // against the keys stored there.
  const storeConfig = loadKmsConfig();
  const store = openObjectStore(storeConfig);
  exitIfStorageUnsafe(Promise.resolve(store), 'sealer'); // beside the rest of the start
  if (storeConfig.store === 'fs') await adoptEarlierStateRecord(store, options.dataDir);
  // The policies measured in this TD's init-data, once its own evidence confirms the document.
  const attester = options.initDataFile === '' ? undefined : await sealerAttester(options);
  const measured = attester && (await loadMeasuredPolicies(options, attester));
  // Real TEE verifiers from KMS_SEALER_TDX_* (refuses to start on a policy it cannot apply).
  const verifiers = await configuredVerifiers(options, measured?.tdxPolicy === undefined ? {} : { policy: measured.tdxPolicy });
  const sealer = await startSealer(options, store, { verifiers, ...(attester && { attester }), ...(measured && { measured }) });
  if (options.metricsPort !== undefined) {
    // After the HTTPS port listens: prom-client is not on the start's path.
    const { serveSealerMetrics } = await import('./metrics.js');
    const metrics = await serveSealerMetrics(sealer.core, options.metricsPort, options.metricsHost);
    log.info('metrics listening', { url: metrics.url });
  }
  const stop = (signal: string) => {
    log.info(`${signal}: stopping (the root key leaves memory with the process)`);
    void sealer
      .close()
      .finally(drainLog)
      .finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  if (options.stopWithParent) {
    // The parent holds our stdin open; when it dies, however it dies, stdin ends.
    onStdoutError(() => process.exit(0)); // the parent's end of our stdout is gone too
    process.stdin.once('end', () => stop('parent exited'));
    process.stdin.resume();
  }
  // Every port bound: npm start (scripts/start.ts) counts a replica as started from this line.
  log.info('started', { url: sealer.url });
}

/**
 * Earlier versions kept the embedded store's state record in the sealer's own data dir, apart from
 * the keys. It is copied (create-if-absent, never over a record already there) on first start; the
 * old file is left where it was.
 */
async function adoptEarlierStateRecord(store: ObjectStore, sealerDataDir: string): Promise<void> {
  const earlier = new FsObjectStore(sealerDataDir);
  const found = await earlier.get(STATE_OBJECT_KEY);
  if (found === undefined || (await store.get(STATE_OBJECT_KEY)) !== undefined) return;
  await store.create(STATE_OBJECT_KEY, found.body);
  log.info(`copied the state record from ${sealerDataDir} to the key store`);
}

main().catch((error: unknown) => {
  const message = error instanceof KmsError ? `${error.code}: ${error.message}` : error instanceof Error ? `${error.name}: ${error.message}` : 'unknown error';
  log.error(`cannot start: ${message}`);
  process.exit(1);
});
