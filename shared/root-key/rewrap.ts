import { unwrapKey, wrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { layout, listedName } from '../keys/layout.js';
import { contexts, decodePrimaryKey, encodeRecord, type PrimaryKeyRecord } from '../keys/records.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKeyring } from './keyring.js';
import type { RootKey } from './source.js';

/** The rewrap's target was retired by a newer rotation, whose verification rewraps every key. */
export function retargeted(targetId: string): KmsError {
  return new KmsError(
    'CONFLICT',
    `the root key changed again meanwhile (storage links ${targetId} to a successor: a newer rotation retired it): this rewrap stopped, and the newer rotation's verification rewraps every primary key; verify again`,
  );
}

/**
 * Whether a promotion retired `targetId`: storage holds a link from it to a successor. Positive
 * evidence, unlike a keyring's current key, which any replica of the sealing service refills and
 * one that has not yet followed a promotion refills with the key it replaced.
 */
export async function retired(store: ObjectStore, targetId: string): Promise<boolean> {
  for await (const _link of store.list(layout.successorsOf(targetId))) return true;
  return false;
}

/**
 * Rewraps one primary key record under `target` (compare-and-swap, retried if it changed
 * meanwhile). Resolves true when it rewrote the record, false when there was nothing to do.
 */
export async function rewrapPrimaryKey(store: ObjectStore, keyring: RootKeyring, objectKey: string, target: RootKey): Promise<boolean> {
  const place = listedName.primaryKey(objectKey);
  if (place === undefined) return false; // no record the KMS wrote (the rotation reports it)
  const { user, name } = place;
  for (let attempt = 0; attempt < 5; attempt++) {
    const object = await store.get(objectKey);
    if (object === undefined) return false;
    const record = decodePrimaryKey(object.body, user, name);
    if (record.rootKeyId === target.id) return false;
    const material = unwrapKey(await keyring.byId(record.rootKeyId), record.wrapped, contexts.primaryKey(record));
    // A record under a key newer than `target` made the keyring look the current key up again: a
    // rewrap to `target` now would move keys back under a retired root key. It stops instead, once
    // storage confirms it (the keyring's answer alone may come from a lagging replica).
    if ((await keyring.current()).id !== target.id && (await retired(store, target.id))) {
      material.fill(0);
      throw retargeted(target.id);
    }
    try {
      const rewrapped: PrimaryKeyRecord = {
        ...record,
        rootKeyId: target.id,
        wrapped: wrapKey(target.key, material, contexts.primaryKey({ ...record, rootKeyId: target.id })),
      };
      if (await store.replace(objectKey, encodeRecord(rewrapped), object.etag)) return true;
    } finally {
      material.fill(0);
    }
  }
  throw new KmsError('STORAGE_UNAVAILABLE', `could not rewrap ${objectKey}: it kept changing`);
}
