import { loadKmsConfig, type KmsConfig } from './config.js';
import { KeyStore } from './keys/keystore.js';
import { RootKeyring } from './root-key/keyring.js';
import { MissingRootKeySource, StaticRootKeySource, type RootKeySource } from './root-key/source.js';
import { openObjectStore } from './store/from-config.js';
import type { ObjectStore } from './store/object-store.js';

/** What a function needs, built once per process from the environment, on first use. */
export interface KmsRuntime {
  readonly config: KmsConfig;
  readonly store: ObjectStore;
  readonly rootKeys: RootKeyring;
  readonly keys: KeyStore;
}

let runtime: Promise<KmsRuntime> | undefined;

export function kmsRuntime(): Promise<KmsRuntime> {
  runtime ??= build().catch((error: unknown) => {
    runtime = undefined; // a configuration error is reported on every request until fixed
    throw error;
  });
  return runtime;
}

async function build(): Promise<KmsRuntime> {
  const config = loadKmsConfig();
  const store = openObjectStore(config);
  const rootKeys = new RootKeyring(rootKeySource(config), store);
  const ttlMs = config.keyCacheTtlSeconds * 1000;
  const keys = new KeyStore(store, rootKeys, { cacheTtlMs: ttlMs, cacheEntries: config.keyCacheEntries });
  return { config, store, rootKeys, keys };
}

function rootKeySource(config: KmsConfig): RootKeySource {
  if (config.rootKey !== undefined) return new StaticRootKeySource(config.rootKey);
  return new MissingRootKeySource();
}
