import type { InitData } from './attestation/init-data.js';
import type { Attester } from './attestation/types.js';
import { loadKmsConfig, type KmsConfig } from './config.js';
import { KmsError } from './errors.js';
import { KeyStore } from './keys/keystore.js';
import { onceSucceeded } from './once.js';
import { RootKeyring } from './root-key/keyring.js';
import { RootKeyRotation } from './root-key/rotation.js';
import { SealerRootKeySource } from './root-key/sealer-source.js';
import { MissingRootKeySource, StaticRootKeySource, type RootKeySource } from './root-key/source.js';
import type { SealerClient } from './sealer-client/client.js';
import type { CheckedObjectStore } from './store/checked-store.js';
import { openObjectStore } from './store/from-config.js';

/** What the key routes need: configuration, storage, the root keys and the key store. */
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

/**
 * What a route reaches storage, keys and the sealing service through. Its host builds it (the lean
 * host and functions-framework from the environment, tests from parts of their own), and every
 * part is built on first use, so a route that never needs the sealing service never loads it.
 */
export interface RouteContext {
  /**
   * Configuration, storage and the key store. It does not wait for the sealing service's client to
   * load: a cold function's first request checks its token (a storage read and scrypt) while that
   * client loads and pulls the root key, instead of after (docs/performance.md). A configuration
   * error is not kept: it is reported on every request until fixed.
   */
  keys(): Promise<KeyRuntime>;
  /** The key runtime with the sealing service's client loaded, and rotation (when there is one). */
  runtime(): Promise<KmsRuntime>;
  /**
   * Starts, before any request, what the first request of a key route would otherwise wait for:
   * building the runtime and pulling the root key (a KBS exchange with the sealing service), so that
   * they overlap the host's start-up and that request's own storage reads and token check. A
   * failure is not reported here: nothing keeps it, so the request that needs it tries again.
   */
  warmUp(): void;
  /**
   * How this pod proves itself (KMS_ATTESTER, with its init-data): to the sealing service, and to
   * clients at GET /attestation. Loaded on first use.
   */
  attester(): Promise<Attester>;
}

/** Parts a host (or a test) gives instead of what the environment configures. */
export interface RuntimeParts {
  /** Instead of the KMS_* environment. */
  readonly config?: KmsConfig;
  /** Instead of the store the configuration names. */
  readonly store?: CheckedObjectStore;
  /** Instead of the root key source the configuration names (no sealing service is then used). */
  readonly rootKeySource?: RootKeySource;
  /** Instead of the attester the configuration names. */
  readonly attester?: Attester;
}

export function createRouteContext(parts: RuntimeParts = {}): RouteContext {
  let core: Core | undefined;
  // Read once: both the attester (its digest) and the sealing service's client (its text) need it.
  const initData = onceSucceeded(async () => initDataOf(coreRuntime().config));
  const attester = onceSucceeded(async () => parts.attester ?? (await attesterOf(coreRuntime().config, await initData())));
  const coreRuntime = (): Core => (core ??= buildCore(parts, { attester, initData }));
  const keys = async (): Promise<KeyRuntime> => coreRuntime();
  return {
    keys,
    runtime: onceSucceeded(async () => {
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
    }),
    warmUp: () => {
      keys()
        .then((runtime) => runtime.rootKeys.current())
        .catch(() => {});
    },
    attester,
  };
}

let fromEnvironment: RouteContext | undefined;

/**
 * The context built from the environment, once per process and on first use: what functions-
 * framework's handlers and the lean host use.
 */
const environment = (): RouteContext => (fromEnvironment ??= createRouteContext());
export const environmentContext: RouteContext = {
  keys: () => environment().keys(),
  runtime: () => environment().runtime(),
  warmUp: () => environment().warmUp(),
  attester: () => environment().attester(),
};

/** What the sealing service's client shares with GET /attestation: this pod's attester and init-data. */
interface PodIdentity {
  readonly attester: () => Promise<Attester>;
  readonly initData: () => Promise<InitData | undefined>;
}

function buildCore(parts: RuntimeParts, pod: PodIdentity): Core {
  const config = parts.config ?? loadKmsConfig();
  const store = parts.store ?? openObjectStore(config);
  const sealer = parts.rootKeySource === undefined ? sealerLoader(config, pod) : undefined;
  const source: RootKeySource =
    parts.rootKeySource ??
    (sealer
      ? new SealerRootKeySource(sealer, { refreshMs: config.rootKeyRefreshSeconds * 1000, graceMs: config.rootKeyGraceSeconds * 1000 })
      : config.rootKey !== undefined
        ? new StaticRootKeySource(config.rootKey)
        : new MissingRootKeySource());
  const rootKeys = new RootKeyring(source, store);
  const keys = new KeyStore(store, rootKeys, { cacheTtlMs: config.keyCacheTtlSeconds * 1000, cacheEntries: config.keyCacheEntries });
  return { config, store, rootKeys, keys, sealer };
}

function sealerLoader(config: KmsConfig, pod: PodIdentity): (() => Promise<SealerClient>) | undefined {
  if (config.sealerUrls.length === 0) return undefined;
  if (config.rootKey !== undefined) {
    throw new KmsError('CONFIG', 'set either KMS_ROOT_KEY (mode 1 without a sealing service) or KMS_SEALER_URL, not both');
  }
  if (config.sealerCaFile === '') {
    throw new KmsError('CONFIG', 'KMS_SEALER_URL needs KMS_SEALER_CA_FILE: the functions must authenticate the sealing service');
  }
  return onceSucceeded(async () => {
    // Imported only here: the KBS client and jose cost start-up time that a function without a
    // sealing service (KMS_ROOT_KEY) does not need to pay.
    const [{ SealerClient }, { trustedSealerVerifier }] = await Promise.all([import('./sealer-client/client.js'), import('./sealer-client/trusted-sealer.js')]);
    const initData = await pod.initData();
    return SealerClient.fromCaFile({
      url: config.sealerUrls,
      caFile: config.sealerCaFile,
      attester: await pod.attester(),
      sealerVerifier: await trustedSealerVerifier(config, process.env, { initData, attester: pod.attester }),
      ...(initData === undefined ? {} : { initData: initData.toml }),
    });
  });
}

/** This pod's init-data (KMS_INIT_DATA_FILE); the TOML parser is loaded only for a pod that has one. */
async function initDataOf(config: KmsConfig): Promise<InitData | undefined> {
  return config.initDataFile === '' ? undefined : (await import('./attestation/init-data.js')).loadInitDataFile(config.initDataFile);
}

async function attesterOf(config: KmsConfig, initData: InitData | undefined): Promise<Attester> {
  const { attesterFromConfig } = await import('./attestation/from-config.js');
  return attesterFromConfig({ ...config, ...(initData === undefined ? {} : { initData }) });
}
