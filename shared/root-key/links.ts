import { timingSafeEqual } from 'node:crypto';
import { unwrapKey, wrapKey } from '../crypto/aead.js';
import { KmsError } from '../errors.js';
import { layout } from '../keys/layout.js';
import { contexts, decodePreviousRootKey, encodeRecord, type PreviousRootKeyRecord } from '../keys/records.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKey } from './source.js';

/**
 * Stores `previous` wrapped under `successor` (`root-keys/<previous>/<successor>.json`), so that
 * records still under the previous root key stay readable to whoever holds the successor. Only the
 * holder of both keys writes it: the sealing service, when verified shares make the successor
 * current. Create-if-absent; an existing link is accepted only if it opens to `previous` (a retry
 * after a crash), never overwritten.
 */
export async function storeRootKeyLink(store: ObjectStore, previous: RootKey, successor: RootKey): Promise<void> {
  const fields = { id: previous.id, wrappedUnder: successor.id };
  const record: PreviousRootKeyRecord = {
    format: 1,
    kind: 'previous-root-key',
    ...fields,
    wrapped: wrapKey(successor.key, previous.key, contexts.previousRootKey(fields)),
    createdAt: new Date().toISOString(),
  };
  if (await store.create(layout.previousRootKey(previous.id, successor.id), encodeRecord(record))) return;
  const existing = await openRootKeyLink(store, previous.id, successor);
  // Compared in constant time; a key of another length is simply not the one.
  const matches = existing !== undefined && existing.length === previous.key.length && timingSafeEqual(existing, previous.key);
  existing?.fill(0);
  if (!matches) throw new KmsError('INTEGRITY', `storage holds a root key link ${previous.id} -> ${successor.id} that does not open to the previous root key`);
}

/** Deletes the link `previousId -> successorId`: only for a successor that can no longer become current. */
export async function deleteRootKeyLink(store: ObjectStore, previousId: string, successorId: string): Promise<void> {
  await store.delete(layout.previousRootKey(previousId, successorId));
}

/** The previous root key from its link under `successor`, or undefined when there is no such link. */
export async function openRootKeyLink(store: ObjectStore, previousId: string, successor: RootKey): Promise<Buffer | undefined> {
  const object = await store.get(layout.previousRootKey(previousId, successor.id));
  if (object === undefined) return undefined;
  const record = decodePreviousRootKey(object.body, previousId);
  if (record.wrappedUnder !== successor.id) throw new KmsError('INTEGRITY', 'a root key link was moved: storage was tampered with');
  return unwrapKey(successor.key, record.wrapped, contexts.previousRootKey(record));
}
