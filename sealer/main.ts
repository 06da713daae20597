import { KmsError } from '../shared/errors.js';
import { FsObjectStore } from '../shared/store/fs-store.js';
import { startSealer } from './app.js';
import { loadSealerOptions } from './options.js';

/** The sealing service's entry point: `node dist/sealer/main.js`, configured by KMS_SEALER_*. */
async function main(): Promise<void> {
  const options = loadSealerOptions();
  // The state record is small and not secret; an S3 option comes with the store factory.
  const store = new FsObjectStore(options.dataDir);
  const sealer = await startSealer(options, store);
  const stop = (signal: string) => {
    process.stdout.write(`sealer: ${signal}: stopping (the root key leaves memory with the process)\n`);
    void sealer.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  const message = error instanceof KmsError ? `${error.code}: ${error.message}` : error instanceof Error ? `${error.name}: ${error.message}` : 'unknown error';
  process.stderr.write(`sealer: cannot start: ${message}\n`);
  process.exit(1);
});
