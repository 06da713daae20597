import { unwrapKey, wrapKey, isWrappedKey, type WrappedKey } from '../shared/crypto/aead.js';
import { rootKeyId } from '../shared/crypto/root-key-id.js';
import { KmsError } from '../shared/errors.js';
import type { ComponentLog } from '../shared/log.js';
import { readFile } from 'node:fs/promises';
import type { Attester } from '../shared/attestation/types.js';
import { KbsClient } from '../shared/kbs/client.js';
import type { ObjectStore } from '../shared/store/object-store.js';
import type { SealerCore } from './core.js';
import type { SealerOptions } from './options.js';

/** The root key wrapped under the key-encryption key (KEK) that a KBS releases to this sealer. */
export const AUTO_UNSEAL_OBJECT_KEY = 'sealer/auto-unseal.json';

const KEK_BYTES = 32;

interface AutoUnsealRecord {
  readonly format: 1;
  readonly kind: 'auto-unseal';
  readonly rootKeyId: string;
  readonly wrapped: WrappedKey;
  readonly createdAt: string;
}

export interface AutoUnsealOptions {
  readonly store: ObjectStore;
  /** The KEK as the KBS releases it, after attesting (a KbsClient resource); throws when it cannot. */
  readonly fetchKek: () => Promise<Buffer>;
  /** Where the KEK comes from, for messages: the KBS URL and resource, never the key. */
  readonly source: string;
  readonly retryMs: number;
  readonly log: Pick<ComponentLog, 'info' | 'warn' | 'error'>;
}

/**
 * Auto-unseal (Vault's, for this service): at start the sealer attests to a KBS, gets the KEK and
 * unseals with the root key stored wrapped under it; every new current key is wrapped again. The
 * KEK is kept in memory, beside the root key, so a rotation re-wraps without the KBS.
 *
 * A KEK that does not open the stored wrap is refused for the life of the process: nothing is
 * unsealed with it and nothing is re-wrapped under it (a KBS that now serves another KEK, or
 * storage that was edited, is an operator's to resolve). Shares always still unseal.
 */
export class AutoUnseal {
  readonly #store: ObjectStore;
  readonly #fetchKek: () => Promise<Buffer>;
  readonly #source: string;
  readonly #retryMs: number;
  readonly #log: AutoUnsealOptions['log'];
  #core: SealerCore | undefined;
  #kek: Buffer | undefined;
  #refused = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Writes of the wrap, one at a time. */
  #writes: Promise<unknown> = Promise.resolve();

  constructor(options: AutoUnsealOptions) {
    this.#store = options.store;
    this.#fetchKek = options.fetchKek;
    this.#source = options.source;
    this.#retryMs = options.retryMs;
    this.#log = options.log;
  }

  /** The core's onKeyChange: wraps the new current key under the KEK, once one is held. */
  readonly onKeyChange = async (key: { readonly id: string; readonly key: Buffer }): Promise<void> => {
    if (this.#kek === undefined || this.#refused) return; // the start attempt wraps it once the KEK comes
    await this.#write(key);
  };

  /** Whether it may still unseal: until a KEK is held (then it has tried) or refused. */
  get pending(): boolean {
    return !this.#closed && !this.#refused && this.#kek === undefined;
  }

  /** Starts the first attempt; a failed one is retried every retryMs until the KEK is held. */
  start(core: SealerCore): void {
    this.#core = core;
    void this.#attempt();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#kek?.fill(0);
    this.#kek = undefined;
  }

  async #attempt(): Promise<void> {
    let kek: Buffer;
    try {
      kek = await this.#fetchKek();
      if (kek.length !== KEK_BYTES) {
        kek.fill(0);
        throw new KmsError('CONFIG', `the resource is not a 256-bit key`);
      }
    } catch (error) {
      if (this.#closed) return;
      this.#log.warn(
        `auto-unseal: no key-encryption key from ${this.#source}: ${messageOf(error)}; retrying in ${this.#retryMs / 1000} s (shares still unseal)`,
      );
      this.#timer = setTimeout(() => void this.#attempt(), this.#retryMs);
      this.#timer.unref();
      return;
    }
    if (this.#closed) {
      kek.fill(0);
      return;
    }
    await this.#use(kek).catch((error: unknown) => this.#log.error(`auto-unseal: ${messageOf(error)}`));
  }

  async #use(kek: Buffer): Promise<void> {
    const core = this.#core!;
    const stored = await this.#read();
    let key: Buffer | undefined;
    if (stored !== undefined) {
      key = this.#open(kek, stored.record);
      if (key === undefined) {
        kek.fill(0);
        return;
      }
    }
    this.#kek = kek;
    const wrappedId = stored?.record?.rootKeyId;
    try {
      const status = core.status();
      if (key !== undefined && status.sealed && status.initialized) {
        await core.unsealWithKey(key);
        this.#log.info(`auto-unseal: unsealed with root key ${wrappedId}, wrapped under the key-encryption key from ${this.#source}`);
      }
    } catch (error) {
      this.#log.error(`auto-unseal: the stored root key (${wrappedId}) did not unseal: ${messageOf(error)}; shares still unseal`);
    } finally {
      key?.fill(0);
    }
    // Enrol the current key when the wrap is missing or stale (e.g. shares unsealed before the KBS
    // answered). A wrap of the pending key is a promotion in progress: its hook wrote it.
    const status = core.status();
    if (status.sealed || wrappedId === status.rootKeyId || (wrappedId !== undefined && wrappedId === status.pendingRootKeyId)) return;
    const current = core.currentKey();
    try {
      await this.#write({ id: rootKeyId(current), key: current });
    } finally {
      current.fill(0);
    }
  }

  /** The root key in the record, or undefined (and refused from now on) when the KEK does not open it, or it is no record. */
  #open(kek: Buffer, record: AutoUnsealRecord | undefined): Buffer | undefined {
    try {
      if (record === undefined) throw new KmsError('INTEGRITY', 'not an auto-unseal record');
      const key = unwrapKey(kek, record.wrapped, contextOf(record.rootKeyId));
      if (rootKeyId(key) === record.rootKeyId) return key;
      key.fill(0);
    } catch {
      // below
    }
    this.#refuse();
    return undefined;
  }

  #refuse(): void {
    this.#refused = true;
    this.#kek?.fill(0);
    this.#kek = undefined;
    this.#log.error(
      `auto-unseal: the key-encryption key from ${this.#source} does not open ${AUTO_UNSEAL_OBJECT_KEY}: ` +
        'this process neither unseals with it nor re-wraps under it (shares still unseal). If the KBS now deliberately serves another key, ' +
        `delete ${AUTO_UNSEAL_OBJECT_KEY} after unsealing with shares, and restart`,
    );
  }

  /** Replaces the wrap (compare-and-swap), only if the KEK opens the one there: never a silent switch of KEK. */
  #write(key: { readonly id: string; readonly key: Buffer }): Promise<void> {
    const run = this.#writes.then(async () => {
      const kek = this.#kek;
      if (kek === undefined || this.#refused) return;
      const body = Buffer.from(
        JSON.stringify({
          format: 1,
          kind: 'auto-unseal',
          rootKeyId: key.id,
          wrapped: wrapKey(kek, key.key, contextOf(key.id)),
          createdAt: new Date().toISOString(),
        } satisfies AutoUnsealRecord),
      );
      const stored = await this.#read();
      if (stored === undefined) {
        if (!(await this.#store.create(AUTO_UNSEAL_OBJECT_KEY, body))) throw new KmsError('CONFLICT', `${AUTO_UNSEAL_OBJECT_KEY} was written meanwhile`);
      } else {
        const previous = this.#open(kek, stored.record);
        if (previous === undefined) return;
        previous.fill(0);
        // It already wraps this key (unsealed from it): nothing to write, nothing a kill could interrupt.
        if (stored.record!.rootKeyId === key.id) return;
        if (!(await this.#store.replace(AUTO_UNSEAL_OBJECT_KEY, body, stored.etag)))
          throw new KmsError('CONFLICT', `${AUTO_UNSEAL_OBJECT_KEY} changed meanwhile`);
      }
      this.#log.info(`auto-unseal: root key ${key.id} is wrapped under the key-encryption key (${AUTO_UNSEAL_OBJECT_KEY})`);
    });
    this.#writes = run.catch(() => undefined);
    return run;
  }

  /** The stored wrap; `record` is undefined when the object is not one (it then opens under no KEK). */
  async #read(): Promise<{ record: AutoUnsealRecord | undefined; etag: string } | undefined> {
    const object = await this.#store.get(AUTO_UNSEAL_OBJECT_KEY);
    if (object === undefined) return undefined;
    return { record: decodeRecord(object.body), etag: object.etag };
  }
}

/**
 * Auto-unseal as configured (KMS_SEALER_UNSEAL_*), or undefined when KMS_SEALER_UNSEAL_KBS_URL is
 * unset. `attester` is the sealer's own: the KBS appraises the same evidence functions do.
 */
export async function configuredAutoUnseal(
  options: SealerOptions,
  store: ObjectStore,
  attester: Attester,
  log: AutoUnsealOptions['log'],
): Promise<{ autoUnseal: AutoUnseal; close(): void } | undefined> {
  if (options.unsealKbsUrl === '') return undefined;
  if (options.rootKey !== undefined) throw new KmsError('CONFIG', 'KMS_SEALER_UNSEAL_KBS_URL is for mode 2 (shares); KMS_SEALER_ROOT_KEY is set');
  if ((options.unsealCa === '') === (options.unsealCaFile === '')) {
    throw new KmsError('CONFIG', 'KMS_SEALER_UNSEAL_KBS_URL needs exactly one of KMS_SEALER_UNSEAL_CA and KMS_SEALER_UNSEAL_CA_FILE');
  }
  // A file reaches the TD from a ConfigMap, outside the measured configuration: whoever swaps it
  // chooses the KBS, and with it the key the root key is wrapped under.
  if (options.unsealCaFile !== '' && process.env.NODE_ENV === 'production') {
    throw new KmsError(
      'CONFIG',
      'KMS_SEALER_UNSEAL_CA_FILE is refused when NODE_ENV=production: give the CA inline in KMS_SEALER_UNSEAL_CA, which the agent policy pins',
    );
  }
  const ca =
    options.unsealCa !== ''
      ? options.unsealCa
      : await readFile(options.unsealCaFile, 'utf8').catch(() => {
          throw new KmsError('CONFIG', `KMS_SEALER_UNSEAL_CA_FILE names a file that cannot be read: ${options.unsealCaFile}`);
        });
  const client = new KbsClient({ url: options.unsealKbsUrl, ca, attester });
  const autoUnseal = new AutoUnseal({
    store,
    fetchKek: () => client.getResource(options.unsealResource),
    source: `${client.url} (resource ${options.unsealResource})`,
    retryMs: options.unsealRetrySeconds * 1000,
    log,
  });
  return {
    autoUnseal,
    close: () => {
      autoUnseal.close();
      client.close();
    },
  };
}

/** The AAD: a wrap moved to another root key id does not open. */
function contextOf(id: string): { kind: string; rootKeyId: string } {
  return { kind: 'auto-unseal', rootKeyId: id };
}

function decodeRecord(body: Buffer): AutoUnsealRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  const record = value as Partial<AutoUnsealRecord> | null;
  if (
    record?.format !== 1 ||
    record.kind !== 'auto-unseal' ||
    typeof record.rootKeyId !== 'string' ||
    !/^[0-9a-f]{32}$/.test(record.rootKeyId) ||
    !isWrappedKey(record.wrapped)
  ) {
    return undefined;
  }
  return record as AutoUnsealRecord;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : 'unknown error';
}
