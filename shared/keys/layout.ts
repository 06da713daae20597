import { ROOT_KEY_ID_PATTERN } from '../crypto/root-key-id.js';
import { NAME_PATTERN } from '../names.js';

/**
 * The object layout (documented in docs/storage.md). Names are validated (shared/names.ts) before
 * they get here. Primary keys live apart from data keys so that rotation lists only primary keys.
 */
export const layout = {
  user: (user: string) => `users/${user}.json`,
  primaryKey: (user: string, primaryKey: string) => `primary-keys/${user}/${primaryKey}.json`,
  primaryKeys: () => 'primary-keys/',
  dataKey: (user: string, primaryKey: string, dataKey: string) => `data-keys/${user}/${primaryKey}/${dataKey}.json`,
  /**
   * A previous root key, wrapped under the root key that replaced it. Keyed by both ids and only
   * ever created, so concurrent or abandoned rotations cannot overwrite a link another one needs.
   */
  previousRootKey: (id: string, successorId: string) => `root-keys/${id}/${successorId}.json`,
  successorsOf: (id: string) => `root-keys/${id}/`,
  rotationJournal: () => 'rotation/journal.json',
  /** One range of a rotation's rewrap (a lease any instance may take), per target root key. */
  rotationRange: (to: string, index: number) => `rotation/ranges/${to}/${index}.json`,
  rotationRanges: (to: string) => `rotation/ranges/${to}/`,
} as const;

/**
 * The parts of listed object names, or undefined for a name the KMS never writes. A listing is
 * storage content: a name in it that the layout above cannot have built (another charset, a name
 * too long, a folder too many) was planted, and is never used to read, write or delete anything.
 */
export const listedName = {
  primaryKey(objectKey: string): { user: string; name: string } | undefined {
    const [, user, name] = /^primary-keys\/([^/]+)\/([^/]+)\.json$/.exec(objectKey) ?? [];
    return user !== undefined && name !== undefined && NAME_PATTERN.test(user) && NAME_PATTERN.test(name) ? { user, name } : undefined;
  },
  previousRootKey(objectKey: string): { id: string; successorId: string } | undefined {
    const [, id, successorId] = /^root-keys\/([^/]+)\/([^/]+)\.json$/.exec(objectKey) ?? [];
    return id !== undefined && successorId !== undefined && ROOT_KEY_ID_PATTERN.test(id) && ROOT_KEY_ID_PATTERN.test(successorId)
      ? { id, successorId }
      : undefined;
  },
  /** A range of the rotation to `to`: its index (decimal, as rotationRange writes it). */
  rotationRange(to: string, objectKey: string): number | undefined {
    const prefix = layout.rotationRanges(to);
    if (!objectKey.startsWith(prefix)) return undefined;
    const [, index] = /^(0|[1-9][0-9]{0,3})\.json$/.exec(objectKey.slice(prefix.length)) ?? [];
    return index === undefined ? undefined : Number(index);
  },
} as const;
