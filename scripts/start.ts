/**
 * `npm start`: the whole API on one port for development and evaluation, with the embedded store
 * in KMS_DATA_DIR (default .kms) and a local self-signed certificate.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { routes } from '../functions/index.js';
import { KmsError } from '../shared/errors.js';
import { startHost } from '../shared/http/host.js';
import { log } from '../shared/log.js';

const dataDir = process.env.KMS_DATA_DIR || '.kms';

try {
  if (!process.env.KMS_ROOT_KEY && !process.env.KMS_ROOT_KEY_FILE) {
    process.env.KMS_ROOT_KEY_FILE = await localRootKey();
    log.info('LOCAL-ONLY root key in use: generated once into the data directory, for development only', {
      file: process.env.KMS_ROOT_KEY_FILE,
    });
  }
  const host = await startHost(routes);
  log.info('tee-kms listening', { url: host.url, certificate: host.certFile, dataDir });
  const stop = () => void host.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (error) {
  process.stderr.write(`tee-kms: ${error instanceof KmsError ? error.message : String(error)}\n`);
  process.exit(1);
}

async function localRootKey(): Promise<string> {
  const file = join(dataDir, 'local-root-key');
  try {
    await readFile(file);
  } catch {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await writeFile(file, randomBytes(32).toString('base64'), { mode: 0o600, flag: 'wx' }).catch((error: unknown) => {
      if ((error as { code?: string }).code !== 'EEXIST') throw error;
    });
  }
  return file;
}
