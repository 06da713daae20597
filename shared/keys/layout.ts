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
