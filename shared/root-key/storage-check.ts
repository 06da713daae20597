import { unwrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { layout, listedName } from '../keys/layout.js';
import { contexts, decodePrimaryKey, type PrimaryKeyRecord } from '../keys/records.js';
import { reportForeignObjects } from '../keys/foreign.js';
import type { ObjectStore } from '../store/object-store.js';
import { RootKeyring } from './keyring.js';
import { openRootKeyLink } from './links.js';
import { StaticRootKeySource, type RootKey } from './source.js';

const READERS = 8;

/**
 * Refuses a recovered root key that does not open what storage already holds. The sealer's state
 * record is in storage too, so whoever can write the bucket can also forge it, under a key of their
 * own whose shares they hold. Their key cannot reach the real records: every primary key must name
 * a root key that `key` reaches (itself, or one linked under it), and at least one must unwrap.
 * Storage with no key records at all is a fresh start and accepts any key.
 *
 * Every primary key record is read (not a sample): an attacker can plant any number of records
 * under their own key, but cannot make the real ones name it without destroying them.
 */
export async function assertRootKeyOpensStorage(store: ObjectStore, key: RootKey, options: { legacy?: boolean } = {}): Promise<void> {
  // Links are written only when a successor's shares were verified: a key with one is retired,
  // whatever a (rolled back) state record says. Records of the previous format predate that rule.
  if (!options.legacy && (await holdsAny(store, layout.successorsOf(key.id)))) {
    throw new KmsError(
      'INTEGRITY',
      `the recovered root key ${key.id} was retired (storage links it to a successor): the state record was rolled back; nothing was unsealed`,
    );
  }
  const keyring = new RootKeyring(new StaticRootKeySource(key.key), store);
  const byRootKey = new Map<string, PrimaryKeyRecord[]>();
  let undecodable = 0;
  const places: { objectKey: string; user: string; name: string }[] = [];
  // Objects under primary-keys/ that are no record the KMS wrote: named as it never names one, or
  // failing to decode (a root key id of another form included). They prove nothing either way.
  const foreign: string[] = [];
  for await (const objectKey of store.list(layout.primaryKeys())) {
    const place = listedName.primaryKey(objectKey);
    if (place === undefined) foreign.push(objectKey);
    else places.push({ objectKey, ...place });
  }
  let next = 0;
  const reader = async (): Promise<void> => {
    while (next < places.length) {
      const { objectKey, user, name } = places[next++]!;
      const object = await store.get(objectKey);
      if (object === undefined) continue;
      try {
        const record = decodePrimaryKey(object.body, user, name);
        const list = byRootKey.get(record.rootKeyId) ?? [];
        if (list.length < 4) list.push(record); // a few candidates per root key for the unwrap proof
        byRootKey.set(record.rootKeyId, list);
      } catch (error) {
        if (!(error instanceof KmsError) || error.code !== 'INTEGRITY') throw error;
        undecodable++;
        foreign.push(objectKey);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READERS, places.length) }, reader));
  reportForeign(foreign);

  if (byRootKey.size === 0) {
    if (undecodable > 0 || (await holdsAny(store, 'data-keys/'))) {
      throw new KmsError('INTEGRITY', 'storage holds key records but no readable primary key: refusing to unseal with a key that opens nothing');
    }
    if (!(await opensALink(store, key)) && !options.legacy && (await holdsAny(store, 'root-keys/'))) {
      throw new KmsError('INTEGRITY', 'storage holds root key links but none under the recovered root key: refusing to unseal with a key that opens nothing');
    }
    return;
  }
  const unreachable: string[] = [];
  let opened = false;
  for (const [rootKeyId, records] of byRootKey) {
    let wrappingKey: Buffer;
    try {
      wrappingKey = await keyring.byId(rootKeyId);
    } catch (error) {
      if (!(error instanceof KmsError) || error.code !== 'INTEGRITY') throw error;
      unreachable.push(rootKeyId);
      continue;
    }
    for (const record of records) {
      if (opened) break;
      try {
        unwrapKey(wrappingKey, record.wrapped, contexts.primaryKey(record)).fill(0);
        opened = true;
      } catch {
        // tampered or corrupted: try another
      }
    }
  }
  if (unreachable.length > 0 || !opened) {
    throw new KmsError(
      'INTEGRITY',
      `the recovered root key does not open the keys in storage (${unreachable.length} root key id(s) it cannot reach, e.g. ${unreachable[0] ?? '-'}): ` +
        'the sealing service state record, or storage, was replaced or rolled back; nothing was unsealed',
    );
  }
}

/** Whether anything is stored under `prefix`. */
export async function holdsAny(store: ObjectStore, prefix: string): Promise<boolean> {
  for await (const _ of store.list(prefix)) return true;
  return false;
}

/**
 * Whether a few stored records open with `key` and nothing retired it: cheap evidence (not proof)
 * that it is the real root key, used to tell a replaced state record from wrong or stale shares.
 */
export async function opensSomeStoredKey(store: ObjectStore, key: RootKey): Promise<boolean> {
  if (await holdsAny(store, layout.successorsOf(key.id))) return false; // retired: stale shares, not a replaced record
  let tried = 0;
  const foreign: string[] = [];
  for await (const objectKey of store.list(layout.primaryKeys())) {
    if (++tried > 4) break;
    const place = listedName.primaryKey(objectKey);
    if (place === undefined) {
      foreign.push(objectKey);
      continue;
    }
    const object = await store.get(objectKey);
    if (object === undefined) continue;
    try {
      const record = decodePrimaryKey(object.body, place.user, place.name);
      if (record.rootKeyId !== key.id) continue;
      unwrapKey(key.key, record.wrapped, contexts.primaryKey(record)).fill(0);
      return true;
    } catch {
      // not this one
    }
  }
  reportForeign(foreign);
  return opensALink(store, key).catch(() => false);
}

/** Whether a link stored under `key` opens with it; a link under it that does not open is tampering. */
async function opensALink(store: ObjectStore, key: RootKey): Promise<boolean> {
  let opened = false;
  const foreign: string[] = [];
  for await (const objectKey of store.list('root-keys/')) {
    const link = listedName.previousRootKey(objectKey);
    if (link === undefined) foreign.push(objectKey);
    if (link === undefined || link.successorId !== key.id) continue;
    const previous = await openRootKeyLink(store, link.id, key);
    if (previous !== undefined) opened = true;
    previous?.fill(0);
  }
  reportForeign(foreign);
  return opened;
}

/** Objects that are no record the KMS wrote, which the check then left out. */
function reportForeign(objectKeys: readonly string[]): void {
  reportForeignObjects('root key check', 'stored object(s) are no record the KMS wrote (planted or corrupted), left out of the check', objectKeys);
}
