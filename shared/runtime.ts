import { loadKmsConfig, type KmsConfig } from './config.js';
import { KmsError } from './errors.js';
import { KeyStore } from './keys/keystore.js';
import { onceSucceeded } from './once.js';
import { RootKeyring } from './root-key/keyring.js';
import { RootKeyRotation } from './root-key/rotation.js';
import { SealerRootKeySource } from './root-key/sealer-source.js';
import { MissingRootKeySource, StaticRootKeySource, type RootKeySource } from './root-key/source.js';
import type { SealerClient } from './sealer/client.js';
import type { CheckedObjectStore } from './store/checked-store.js';
import { openObjectStore } from './store/from-config.js';

/** What the key routes need, built once per process from the environment, on first use. */
export interface KeyRuntime {
  readonly config: KmsConfig;
  /** Writes wait for its check (shared/store/checked-store.ts); `ready()` starts that check. */
  readonly store: CheckedObjectStore;
  readonly rootKeys: RootKeyring;
  readonly keys: KeyStore;
}

/** Everything a function may need: the key routes' part, and the root key's lifecycle. */
export interface KmsRuntime extends KeyRuntime {
  /** The sealing service, when the root key comes from one (not in mode 1 without a sealer). */
  readonly sealer: SealerClient | undefined;
  readonly rotation: RootKeyRotation | undefined;
}

interface Core extends KeyRuntime {
  /** Loads the sealing service's client (its modules are imported on first use); undefined without one. */
  readonly sealer: (() => Promise<SealerClient>) | undefined;
}

let core: Core | undefined;

/**
 * Configuration, storage and the key store. It does not wait for the sealing service's client to
 * load: a cold function's first request checks its token (a storage read and scrypt) while that
 * client loads and pulls the root key, instead of after (docs/performance.md).
 */
export async function keyRuntime(): Promise<KeyRuntime> {
  return coreRuntime();
}

/** Not kept when it throws: a configuration error is reported on every request until fixed. */
function coreRuntime(): Core {
  return (core ??= buildCore());
}

/** The key routes' runtime with the sealing service's client loaded, and rotation (when there is one). */
export const kmsRuntime: () => Promise<KmsRuntime> = onceSucceeded(async () => {
  const { sealer: loadSealer, ...runtime } = coreRuntime();
  const sealer = await loadSealer?.();
  const { config, store, rootKeys } = runtime;
  const rotation = sealer
    ? new RootKeyRotation(store, rootKeys, sealer, {
        shares: config.shares,
        threshold: config.threshold,
        leaseMs: config.rotationLeaseSeconds * 1000,
        concurrency: config.rotationConcurrency,
      })
    : undefined;
  return { ...runtime, sealer, rotation };
});

/**
 * Starts, before any request, what the first request of a key route would otherwise wait for:
 * building the runtime and pulling the root key (a KBS exchange with the sealing service), so that
 * they overlap the host's start-up and that request's own storage reads and token check.
 * A failure is not reported here: neither the runtime nor the root key source keeps a failure, so
 * each request that needs them tries again and answers with the error.
 */
export function warmUpRootKey(): void {
  keyRuntime()
    .then((runtime) => runtime.rootKeys.current())
    .catch(() => {});
}

function buildCore(): Core {
  const config = loadKmsConfig();
  const store = openObjectStore(config);
  const sealer = sealerLoader(config);
  const source: RootKeySource = sealer
    ? new SealerRootKeySource(sealer, config.rootKeyRefreshSeconds * 1000)
    : config.rootKey !== undefined
      ? new StaticRootKeySource(config.rootKey)
      : new MissingRootKeySource();
  const rootKeys = new RootKeyring(source, store);
  const keys = new KeyStore(store, rootKeys, { cacheTtlMs: config.keyCacheTtlSeconds * 1000, cacheEntries: config.keyCacheEntries });
  return { config, store, rootKeys, keys, sealer };
}

function sealerLoader(config: KmsConfig): (() => Promise<SealerClient>) | undefined {
  if (config.sealerUrl === '') return undefined;
  if (config.rootKey !== undefined) {
    throw new KmsError('CONFIG', 'set either KMS_ROOT_KEY (mode 1 without a sealing service) or KMS_SEALER_URL, not both');
  }
  if (config.sealerCaFile === '') {
    throw new KmsError('CONFIG', 'KMS_SEALER_URL needs KMS_SEALER_CA_FILE: the functions must authenticate the sealing service');
  }
  return onceSucceeded(async () => {
    // Imported only here: the KBS client and jose cost start-up time that a function without a
    // sealing service (KMS_ROOT_KEY) does not need to pay.
    const [{ attesterFromConfig }, { SealerClient }] = await Promise.all([import('./attestation/from-config.js'), import('./sealer/client.js')]);
    return SealerClient.fromCaFile({ url: config.sealerUrl, caFile: config.sealerCaFile, attester: await attesterFromConfig(config) });
  });
}
