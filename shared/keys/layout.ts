/**
 * The object layout (documented in docs/storage.md). Names are validated (shared/names.ts) before
 * they get here. Primary keys live apart from data keys so that rotation lists only primary keys.
 */
export const layout = {
  user: (user: string) => `users/${user}.json`,
  primaryKey: (user: string, primaryKey: string) => `primary-keys/${user}/${primaryKey}.json`,
  primaryKeys: () => 'primary-keys/',
  dataKey: (user: string, primaryKey: string, dataKey: string) => `data-keys/${user}/${primaryKey}/${dataKey}.json`,
  /** A previous root key, wrapped under the root key that replaced it. */
  previousRootKey: (id: string) => `root-keys/${id}.json`,
  rotationJournal: () => 'rotation/journal.json',
} as const;
