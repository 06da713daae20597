import { KmsError } from '../shared/errors.js';
import { loadKmsConfig } from '../shared/config.js';
import { exitIfStorageUnsafe } from '../shared/store/checked-store.js';
import { openObjectStore } from '../shared/store/from-config.js';
import { startSealer } from './app.js';
import { loadSealerOptions } from './options.js';
import { configuredVerifiers } from './verifiers.js';

/** The sealing service's entry point: `node dist/sealer/main.js`, configured by KMS_SEALER_*. */
async function main(): Promise<void> {
  const options = loadSealerOptions();
  // The state record is small and not secret. It lives where the keys live: the embedded store in
  // the sealer's data dir, or the same S3 bucket (KMS_STORE=s3 and KMS_S3_*, as for the functions).
  const storeConfig = loadKmsConfig();
  const store = openObjectStore({ ...storeConfig, dataDir: options.dataDir });
  exitIfStorageUnsafe(Promise.resolve(store), 'sealer'); // beside the rest of the start
  // Real TEE verifiers from KMS_SEALER_TDX_* (refuses to start on a policy it cannot apply).
  const verifiers = await configuredVerifiers(options);
  const sealer = await startSealer(options, store, { verifiers });
  const stop = (signal: string) => {
    process.stdout.write(`sealer: ${signal}: stopping (the root key leaves memory with the process)\n`);
    void sealer.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  if (options.stopWithParent) {
    // The parent holds our stdin open; when it dies, however it dies, stdin ends.
    process.stdout.on('error', () => process.exit(0)); // the parent's end of our stdout is gone too
    process.stdin.once('end', () => stop('parent exited'));
    process.stdin.resume();
  }
}

main().catch((error: unknown) => {
  const message = error instanceof KmsError ? `${error.code}: ${error.message}` : error instanceof Error ? `${error.name}: ${error.message}` : 'unknown error';
  process.stderr.write(`sealer: cannot start: ${message}\n`);
  process.exit(1);
});
