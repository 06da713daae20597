import { loadKmsConfig, type KmsConfig } from './config.js';
import { KmsError } from './errors.js';
import { KeyStore } from './keys/keystore.js';
import { RootKeyring } from './root-key/keyring.js';
import { RootKeyRotation } from './root-key/rotation.js';
import { SealerRootKeySource } from './root-key/sealer-source.js';
import { MissingRootKeySource, StaticRootKeySource, type RootKeySource } from './root-key/source.js';
import type { SealerClient } from './sealer/client.js';
import { openObjectStore } from './store/from-config.js';
import type { ObjectStore } from './store/object-store.js';

/** What a function needs, built once per process from the environment, on first use. */
export interface KmsRuntime {
  readonly config: KmsConfig;
  readonly store: ObjectStore;
  readonly rootKeys: RootKeyring;
  readonly keys: KeyStore;
  /** The sealing service, when the root key comes from one (not in mode 1 without a sealer). */
  readonly sealer: SealerClient | undefined;
  readonly rotation: RootKeyRotation | undefined;
}

let runtime: Promise<KmsRuntime> | undefined;

export function kmsRuntime(): Promise<KmsRuntime> {
  runtime ??= build().catch((error: unknown) => {
    runtime = undefined; // a configuration error is reported on every request until fixed
    throw error;
  });
  return runtime;
}

/**
 * Starts, before any request, what the first request of a key route would otherwise wait for in
 * turn: building the runtime and pulling the root key (a KBS exchange with the sealing service),
 * so that they overlap the host's start-up and that request's own storage reads and token check.
 * A failure is not reported here: neither the runtime nor the root key source keeps a failure, so
 * each request that needs them tries again and answers with the error.
 */
export function warmUpRootKey(): void {
  kmsRuntime()
    .then((runtime) => runtime.rootKeys.current())
    .catch(() => {});
}

async function build(): Promise<KmsRuntime> {
  const config = loadKmsConfig();
  const store = openObjectStore(config);
  const sealer = await sealerClient(config);
  const source: RootKeySource = sealer
    ? new SealerRootKeySource(sealer, config.rootKeyRefreshSeconds * 1000)
    : config.rootKey !== undefined
      ? new StaticRootKeySource(config.rootKey)
      : new MissingRootKeySource();
  const rootKeys = new RootKeyring(source, store);
  const ttlMs = config.keyCacheTtlSeconds * 1000;
  const keys = new KeyStore(store, rootKeys, { cacheTtlMs: ttlMs, cacheEntries: config.keyCacheEntries });
  const rotation = sealer
    ? new RootKeyRotation(store, rootKeys, sealer, {
        shares: config.shares,
        threshold: config.threshold,
        leaseMs: config.rotationLeaseSeconds * 1000,
        concurrency: config.rotationConcurrency,
      })
    : undefined;
  return { config, store, rootKeys, keys, sealer, rotation };
}

async function sealerClient(config: KmsConfig): Promise<SealerClient | undefined> {
  if (config.sealerUrl === '') return undefined;
  if (config.rootKey !== undefined) {
    throw new KmsError('CONFIG', 'set either KMS_ROOT_KEY (mode 1 without a sealing service) or KMS_SEALER_URL, not both');
  }
  if (config.sealerCaFile === '') {
    throw new KmsError('CONFIG', 'KMS_SEALER_URL needs KMS_SEALER_CA_FILE: the functions must authenticate the sealing service');
  }
  // Imported only here: the KBS client and jose cost start-up time that a function without a
  // sealing service (KMS_ROOT_KEY) does not need to pay.
  const [{ attesterFromConfig }, sealerModule] = await Promise.all([import('./attestation/from-config.js'), import('./sealer/client.js')]);
  return sealerModule.SealerClient.fromCaFile({ url: config.sealerUrl, caFile: config.sealerCaFile, attester: await attesterFromConfig(config) });
}
