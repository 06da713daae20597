import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { unwrapKey, wrapKey } from '../crypto/aead.js';
import { hashToken, verifyToken, type TokenVerifier } from '../crypto/token-hash.js';
import { BoundedCache } from '../cache.js';
import { KmsError } from '../errors.js';
import type { RootKeyring } from '../root-key/keyring.js';
import { rewrapPrimaryKey } from '../root-key/rewrap.js';
import type { ObjectStore } from '../store/object-store.js';
import { layout } from './layout.js';
import { contexts, decodeDataKey, decodePrimaryKey, decodeUser, encodeRecord, type DataKeyRecord, type PrimaryKeyRecord, type UserRecord } from './records.js';

export interface KeyStoreOptions {
  readonly cacheTtlMs: number;
  readonly cacheEntries: number;
}

/** An authenticated caller: the user's record proves who they are. */
export interface Principal {
  readonly user: string;
  readonly owner: string;
}

const UNAUTHORIZED = 'unknown user or wrong token';

/**
 * The key hierarchy: users (token verifiers), primary keys wrapped by the root key, data keys wrapped
 * by their primary key. Every create is create-if-absent: a name that exists is a CONFLICT and the
 * stored record stays as it was. Caches hold only immutable or unwrapped-and-verified values.
 */
export class KeyStore {
  /**
   * Salt of the credential cache's digests: tokens are never kept in memory in the clear, and a
   * digest of one process is useless in another. A one-shot salted SHA-256, not an HMAC: it is only
   * compared for equality, never exposed, and costs less than half as much (docs/performance.md).
   */
  readonly #cacheSalt = randomBytes(32).toString('base64');
  readonly #credentials: BoundedCache<string, { digest: Buffer; principal: Principal }>;
  /** Credential checks under way, by the salted digest of the credentials they check. */
  readonly #checksInFlight = new Map<string, Promise<Principal>>();
  /** Unwrapped primary keys, with the owner their record names: checked on every use, cached or not. */
  readonly #primaryKeys: BoundedCache<string, UnwrappedPrimaryKey>;
  readonly #dataKeyRecords: BoundedCache<string, DataKeyRecord>;
  /**
   * A cached record's unwrapped (so verified) key, kept only while that very record object is in
   * #dataKeyRecords and reused only with the very primary key entry that unwrapped it: a warm read
   * then skips the AES-GCM unwrap and its canonical-JSON AAD (docs/performance.md).
   */
  readonly #unwrappedDataKeys = new WeakMap<DataKeyRecord, { wrappingKey: Buffer; key: Buffer }>();

  constructor(
    private readonly store: ObjectStore,
    private readonly rootKeys: RootKeyring,
    options: KeyStoreOptions,
  ) {
    this.#credentials = new BoundedCache(options.cacheEntries, options.cacheTtlMs, 'credentials');
    this.#primaryKeys = new BoundedCache(options.cacheEntries, options.cacheTtlMs, 'primary_keys');
    this.#dataKeyRecords = new BoundedCache(options.cacheEntries, options.cacheTtlMs, 'data_keys');
  }

  async enrollUser(user: string, token: string): Promise<void> {
    const record: UserRecord = { format: 1, kind: 'user', user, token: await hashToken(token), createdAt: now() };
    if (!(await this.store.create(layout.user(user), encodeRecord(record)))) {
      throw new KmsError('CONFLICT', `user [${user}] already exists; its token was not changed`);
    }
  }

  /**
   * One answer for an unknown user and a wrong token. A verified token is cached as a salted
   * digest, and concurrent checks of the same credentials share one scrypt (a cold pod's first burst).
   */
  async authenticate(user: string, token: string): Promise<Principal> {
    const digest = hash('sha256', `${this.#cacheSalt}\0${user}\0${token}`, 'buffer');
    const cached = this.#credentials.getIf(user, (entry) => timingSafeEqual(entry.digest, digest));
    if (cached !== undefined) return cached.principal;
    const flightKey = digest.toString('base64');
    let check = this.#checksInFlight.get(flightKey);
    if (check === undefined) {
      check = this.#verify(user, token, digest).finally(() => this.#checksInFlight.delete(flightKey));
      this.#checksInFlight.set(flightKey, check);
    }
    return check;
  }

  async #verify(user: string, token: string, digest: Buffer): Promise<Principal> {
    const object = await this.store.get(layout.user(user));
    if (object === undefined) {
      // Spend the same effort as for a wrong token, so timing does not reveal which users exist; in its
      // own lane, so a flood of unknown users cannot shed known users' checks (token-hash.ts).
      await verifyToken(token, DUMMY_VERIFIER, { lane: 'unknown' });
      throw new KmsError('UNAUTHORIZED', UNAUTHORIZED);
    }
    const record = decodeUser(object.body, user);
    // Queued under the user's name: a flood of wrong tokens for one user sheds only that user's checks.
    if (!(await verifyToken(token, record.token, { lane: 'known', user }))) throw new KmsError('UNAUTHORIZED', UNAUTHORIZED);
    const principal = { user, owner: ownerOf(record.token) };
    this.#credentials.set(user, { digest, principal });
    return principal;
  }

  async createPrimaryKey(principal: Principal, name: string): Promise<void> {
    const rootKey = await this.rootKeys.currentForWrapping();
    const key = randomBytes(32);
    const fields = { user: principal.user, name, keyId: randomBytes(16).toString('hex'), owner: principal.owner, rootKeyId: rootKey.id };
    const record: PrimaryKeyRecord = {
      format: 1,
      kind: 'primary-key',
      ...fields,
      wrapped: wrapKey(rootKey.key, key, contexts.primaryKey(fields)),
      createdAt: now(),
    };
    const objectKey = layout.primaryKey(principal.user, name);
    if (!(await this.store.create(objectKey, encodeRecord(record)))) {
      throw new KmsError('CONFLICT', `primaryKey [${name}] already exists; it was not changed`);
    }
    // A verification may have made another root key current while this one was written.
    const successor = await this.rootKeys.replacedSince(rootKey.id);
    if (successor !== undefined) await rewrapPrimaryKey(this.store, this.rootKeys, objectKey, successor);
    this.#primaryKeys.set(`${principal.user}/${name}`, { owner: fields.owner, keyId: fields.keyId, key });
  }

  async createDataKey(principal: Principal, primaryKeyName: string, name: string): Promise<void> {
    const primary = await this.#primaryKey(principal, primaryKeyName);
    const fields = { user: principal.user, primaryKey: primaryKeyName, primaryKeyId: primary.keyId, name };
    const record: DataKeyRecord = {
      format: 1,
      kind: 'data-key',
      ...fields,
      wrapped: wrapKey(primary.key, randomBytes(32), contexts.dataKey(fields)),
      createdAt: now(),
    };
    if (!(await this.store.create(layout.dataKey(principal.user, primaryKeyName, name), encodeRecord(record)))) {
      throw new KmsError('CONFLICT', `dataKey [${name}] already exists; it was not changed`);
    }
    this.#dataKeyRecords.set(`${principal.user}/${primaryKeyName}/${name}`, record);
  }

  /** The data key's plaintext. */
  async getDataKey(principal: Principal, primaryKeyName: string, name: string): Promise<Buffer> {
    const cacheKey = `${principal.user}/${primaryKeyName}/${name}`;
    const cachedRecord = this.#dataKeyRecords.get(cacheKey);
    // A record not cached is read beside the primary key (a cold function's first read of a key:
    // one storage round trip instead of two); the primary key's error, if any, is the answer.
    const [primary, record] =
      cachedRecord === undefined
        ? await firstErrorInOrder(this.#primaryKey(principal, primaryKeyName), this.#readDataKey(principal, primaryKeyName, name))
        : [await this.#primaryKey(principal, primaryKeyName), cachedRecord];
    if (record.primaryKeyId !== primary.keyId) {
      throw new KmsError('INTEGRITY', `dataKey [${name}] does not belong to primaryKey [${primaryKeyName}]`);
    }
    const unwrapped = this.#unwrappedDataKeys.get(record);
    let key: Buffer;
    if (unwrapped !== undefined && unwrapped.wrappingKey === primary.key) {
      key = Buffer.from(unwrapped.key); // a copy: callers may wipe what they get
    } else {
      key = unwrapKey(primary.key, record.wrapped, contexts.dataKey(record));
      this.#unwrappedDataKeys.set(record, { wrappingKey: primary.key, key: Buffer.from(key) });
    }
    // Cached when read and verified, not refreshed by later reads: the plaintext kept beside the
    // record lives at most one cache lifetime (KMS_KEY_CACHE_TTL_SECONDS), however hot the key.
    if (cachedRecord === undefined) this.#dataKeyRecords.set(cacheKey, record);
    return key;
  }

  async #readDataKey(principal: Principal, primaryKeyName: string, name: string): Promise<DataKeyRecord> {
    const object = await this.store.get(layout.dataKey(principal.user, primaryKeyName, name));
    if (object === undefined) throw new KmsError('NOT_FOUND', `dataKey [${name}] not found under primaryKey [${primaryKeyName}]`);
    return decodeDataKey(object.body, principal.user, primaryKeyName, name);
  }

  async #primaryKey(principal: Principal, name: string): Promise<UnwrappedPrimaryKey> {
    // The root key gates every key operation, cached keys included: while the sealing service is
    // sealed (checked every KMS_ROOT_KEY_REFRESH_SECONDS; free in between) keys are not served.
    const cacheKey = `${principal.user}/${name}`;
    const cached = this.#primaryKeys.get(cacheKey);
    if (cached !== undefined) {
      await this.rootKeys.current();
      // A cached key is checked against the caller too: a user record forged in storage yields a
      // principal with another owner, which must not be served the key the real owner left cached.
      assertOwner(cached.owner, principal, name);
      return cached;
    }
    // The record is read while the root key is pulled (a cold function's first request); an
    // unavailable root key is the answer before a missing record.
    const [, object] = await firstErrorInOrder(this.rootKeys.current(), this.store.get(layout.primaryKey(principal.user, name)));
    if (object === undefined) throw new KmsError('NOT_FOUND', `primaryKey [${name}] not found`);
    const record = decodePrimaryKey(object.body, principal.user, name);
    assertOwner(record.owner, principal, name);
    const key = unwrapKey(await this.rootKeys.byId(record.rootKeyId), record.wrapped, contexts.primaryKey(record));
    const value = { owner: record.owner, keyId: record.keyId, key };
    this.#primaryKeys.set(cacheKey, value);
    return value;
  }
}

interface UnwrappedPrimaryKey {
  /** The owner digest of the record it was unwrapped from (bound into that record's AAD). */
  readonly owner: string;
  readonly keyId: string;
  readonly key: Buffer;
}

/**
 * Compared with plain equality, not in constant time: both sides are public digests (stored in the
 * clear in records), not credentials, so timing reveals nothing that storage does not already show.
 */
function assertOwner(owner: string, principal: Principal, name: string): void {
  if (owner !== principal.owner) {
    throw new KmsError('INTEGRITY', `primaryKey [${name}] was not created by this user's enrollment`);
  }
}

/** Both values; when both fail, the first one's error (Promise.all would answer whichever failed first). */
async function firstErrorInOrder<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [resultA, resultB] = await Promise.allSettled([a, b]);
  if (resultA.status === 'rejected') throw resultA.reason;
  if (resultB.status === 'rejected') throw resultB.reason;
  return [resultA.value, resultB.value];
}

/** Binds keys to one enrollment: the digest of the user's (salted) token verifier. */
export function ownerOf(verifier: TokenVerifier): string {
  return createHash('sha256').update(verifier.salt).update('\0').update(verifier.hash).digest('base64url');
}

const DUMMY_VERIFIER: TokenVerifier = {
  alg: 'scrypt',
  N: 16384,
  r: 8,
  p: 1,
  salt: randomBytes(16).toString('base64url'),
  hash: randomBytes(32).toString('base64url'),
};

function now(): string {
  return new Date().toISOString();
}
