import { unwrapKey, wrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { listedName } from '../keys/layout.js';
import { contexts, decodePrimaryKey, encodeRecord, type PrimaryKeyRecord } from '../keys/records.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKeyring } from './keyring.js';
import type { RootKey } from './source.js';

/** The rewrap's target is no longer the current root key: a newer rotation's verification rewraps every key. */
export function retargeted(currentId: string, targetId: string): KmsError {
  return new KmsError(
    'CONFLICT',
    `the root key changed again meanwhile (${currentId} is current, not ${targetId}): this rewrap stopped, and the newer rotation's verification rewraps every primary key; verify again`,
  );
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
    // rewrap to `target` now would move keys back under a retired root key. It stops instead.
    const current = await keyring.current();
    if (current.id !== target.id) {
      material.fill(0);
      throw retargeted(current.id, target.id);
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
