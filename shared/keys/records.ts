import { isWrappedKey, type WrapContext, type WrappedKey } from '../crypto/aead.js';
import { ROOT_KEY_ID_PATTERN } from '../crypto/root-key-id.js';
import { isTokenVerifier, type TokenVerifier } from '../crypto/token-hash.js';
import { KmsError } from '../errors.js';

/**
 * Stored records. Everything in them is either public (names, ids, timestamps) or protected:
 * keys are AES-256-GCM wrapped with their place as AAD; tokens are scrypt verifiers.
 */
export interface UserRecord {
  readonly format: 1;
  readonly kind: 'user';
  readonly user: string;
  readonly token: TokenVerifier;
  readonly createdAt: string;
}

export interface PrimaryKeyRecord {
  readonly format: 1;
  readonly kind: 'primary-key';
  readonly user: string;
  readonly name: string;
  /** Random id of this key; data keys bind to it, so a recreated name never adopts old data keys. */
  readonly keyId: string;
  /** Digest of the owner's token verifier: a swapped user record cannot unlock this key. */
  readonly owner: string;
  readonly rootKeyId: string;
  readonly wrapped: WrappedKey;
  readonly createdAt: string;
}

export interface DataKeyRecord {
  readonly format: 1;
  readonly kind: 'data-key';
  readonly user: string;
  readonly primaryKey: string;
  readonly primaryKeyId: string;
  readonly name: string;
  readonly wrapped: WrappedKey;
  readonly createdAt: string;
}

export interface PreviousRootKeyRecord {
  readonly format: 1;
  readonly kind: 'previous-root-key';
  readonly id: string;
  readonly wrappedUnder: string;
  readonly wrapped: WrappedKey;
  readonly createdAt: string;
}

export const contexts = {
  primaryKey: (r: Pick<PrimaryKeyRecord, 'user' | 'name' | 'keyId' | 'owner' | 'rootKeyId'>): WrapContext => ({
    kind: 'primary-key',
    user: r.user,
    primaryKey: r.name,
    keyId: r.keyId,
    owner: r.owner,
    wrappingKeyId: r.rootKeyId,
  }),
  dataKey: (r: Pick<DataKeyRecord, 'user' | 'primaryKey' | 'primaryKeyId' | 'name'>): WrapContext => ({
    kind: 'data-key',
    user: r.user,
    primaryKey: r.primaryKey,
    dataKey: r.name,
    wrappingKeyId: r.primaryKeyId,
  }),
  previousRootKey: (r: Pick<PreviousRootKeyRecord, 'id' | 'wrappedUnder'>): WrapContext => ({
    kind: 'previous-root-key',
    rootKeyId: r.id,
    wrappingKeyId: r.wrappedUnder,
  }),
};

export function encodeRecord(record: object): Buffer {
  return Buffer.from(JSON.stringify(record), 'utf8');
}

type Checks<T> = { [K in keyof T]?: (value: unknown) => boolean };
const str = (v: unknown) => typeof v === 'string';
/** A root key id as rootKeyId() makes it: it names storage folders (root-keys/<id>/), so nothing else is taken. */
const rootKeyIdField = (v: unknown) => typeof v === 'string' && ROOT_KEY_ID_PATTERN.test(v);

function decode<T>(body: Buffer, kind: string, checks: Checks<T>, where: { user: string; name?: string }): T {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw corrupt(kind);
  }
  if (typeof value !== 'object' || value === null) throw corrupt(kind);
  const record = value as Record<string, unknown>;
  if (record.format !== 1 || record.kind !== kind) throw corrupt(kind);
  for (const [field, check] of Object.entries(checks) as [string, (v: unknown) => boolean][]) {
    if (!check(record[field])) throw corrupt(kind);
  }
  // A record must describe the place it was read from (a moved record is refused early).
  if (record.user !== where.user || (where.name !== undefined && record.name !== where.name)) throw corrupt(kind);
  return value as T;
}

export function decodeUser(body: Buffer, user: string): UserRecord {
  return decode<UserRecord>(body, 'user', { user: str, token: isTokenVerifier, createdAt: str }, { user });
}

export function decodePrimaryKey(body: Buffer, user: string, name: string): PrimaryKeyRecord {
  return decode<PrimaryKeyRecord>(
    body,
    'primary-key',
    { keyId: str, owner: str, rootKeyId: rootKeyIdField, wrapped: isWrappedKey, createdAt: str },
    { user, name },
  );
}

export function decodeDataKey(body: Buffer, user: string, primaryKey: string, name: string): DataKeyRecord {
  const record = decode<DataKeyRecord>(body, 'data-key', { primaryKeyId: str, wrapped: isWrappedKey, createdAt: str }, { user, name });
  if (record.primaryKey !== primaryKey) throw corrupt('data-key');
  return record;
}

export function decodePreviousRootKey(body: Buffer, id: string): PreviousRootKeyRecord {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw corrupt('previous-root-key');
  }
  const r = value as Partial<PreviousRootKeyRecord> | null;
  if (
    r === null ||
    typeof r !== 'object' ||
    r.format !== 1 ||
    r.kind !== 'previous-root-key' ||
    r.id !== id ||
    !rootKeyIdField(r.wrappedUnder) ||
    !isWrappedKey(r.wrapped)
  ) {
    throw corrupt('previous-root-key');
  }
  return r as PreviousRootKeyRecord;
}

function corrupt(kind: string): KmsError {
  return new KmsError('INTEGRITY', `a stored ${kind} record is malformed or was moved: storage was tampered with or corrupted`);
}
