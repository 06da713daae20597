import { timingSafeEqual } from 'node:crypto';
import { combine } from 'shamir-secret-sharing';
import { isWrappedKey, unwrapKey, wrapKey, type WrappedKey } from '../shared/crypto/aead.js';
import { rootKeyId } from '../shared/crypto/root-key-id.js';
import { KmsError } from '../shared/errors.js';
import {
  parseShare,
  ROOT_KEY_BYTES,
  sealerProblems,
  validateThreshold,
  type InstallRootKeyRequest,
  type RecoveryProgress,
  type SealStatus,
} from '../shared/sealer/protocol.js';
import type { ObjectStore } from '../shared/store/object-store.js';
import { Problem, sealedProblem } from './problems.js';

/** The sealer's one record in the object store. Not secret; never holds a key in the clear. */
export const STATE_OBJECT_KEY = 'sealer/state.json';
const STATE_FORMAT = 'tee-kms/sealer-state/v1';
/** Rotations that may pile up unverified (each adds one small link to the record). */
export const MAX_UNVERIFIED_ROTATIONS = 64;
const ID_PATTERN = /^[0-9a-f]{32}$/;

interface KeyEntry {
  readonly id: string;
  readonly t: number;
  readonly n: number;
}

/**
 * keys[0] is the last root key whose shares were verified, keys[last] the current one; wraps[i] is
 * keys[i+1] wrapped (AES-256-GCM) under keys[i]. So the shares of ANY key in the chain rebuild the
 * current key: combine, match the id (the key check value), unwrap forward. Verifying the current
 * shares drops the chain: older shares stop working.
 */
interface StateRecord {
  readonly format: typeof STATE_FORMAT;
  readonly keys: readonly KeyEntry[];
  readonly wraps: readonly WrappedKey[];
}

interface Progress {
  readonly shares: Map<number, Buffer>;
  readonly startedAt: number;
}

export interface SealerCoreOptions {
  /** Mode 1: the root key from a secret. */
  readonly rootKey?: Buffer | undefined;
  readonly recoveryTtlMs: number;
  readonly now?: () => number;
  readonly log?: (line: string) => void;
}

function successorContext(wrappingKeyId: string, keyId: string) {
  return { purpose: 'tee-kms/sealer/successor-root-key', wrappingKeyId, keyId };
}

/**
 * The root key lifecycle: memory-only key, the state record, rotation (install), verification and
 * recovery from shares. Every change is serialized, and the record is durable before the key in
 * memory changes.
 */
export class SealerCore {
  readonly #store: ObjectStore;
  readonly #source: 'secret' | 'shares';
  readonly #recoveryTtlMs: number;
  readonly #now: () => number;
  #key: Buffer | undefined;
  #record: { state: StateRecord; etag: string } | undefined;
  #progress: Progress | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(store: ObjectStore, options: SealerCoreOptions) {
    this.#store = store;
    this.#source = options.rootKey === undefined ? 'shares' : 'secret';
    this.#recoveryTtlMs = options.recoveryTtlMs;
    this.#now = options.now ?? Date.now;
    if (options.rootKey !== undefined) this.#key = Buffer.from(options.rootKey);
  }

  static async open(store: ObjectStore, options: SealerCoreOptions): Promise<SealerCore> {
    const core = new SealerCore(store, options);
    if (core.#source === 'shares') core.#record = await core.#load();
    else {
      const stored = await core.#load().catch(() => undefined);
      const id = rootKeyId(core.#key!);
      if (stored !== undefined && stored.state.keys.at(-1)?.id !== id) {
        options.log?.(`sealer: note: ignoring the state record (root key ${stored.state.keys.at(-1)?.id}); the configured secret's key ${id} is used`);
      }
    }
    return core;
  }

  get source(): 'secret' | 'shares' {
    return this.#source;
  }

  status(): SealStatus {
    this.#expireProgress();
    if (this.#source === 'secret') {
      return { sealed: false, initialized: true, t: 0, n: 0, progress: 0, rootKeyId: rootKeyId(this.#key!), verificationPending: false, source: 'secret' };
    }
    const state = this.#record?.state;
    const current = state?.keys.at(-1);
    return {
      sealed: this.#key === undefined,
      initialized: current !== undefined,
      t: current?.t ?? 0,
      n: current?.n ?? 0,
      progress: this.#progress?.shares.size ?? 0,
      rootKeyId: current?.id ?? null,
      verificationPending: (state?.keys.length ?? 0) > 1,
      source: 'shares',
    };
  }

  /** A copy of the current root key (the caller wipes it); 503 problems while sealed. */
  currentKey(): Buffer {
    if (this.#key === undefined) throw sealedProblem(this.status());
    return Buffer.from(this.#key);
  }

  /** Rotation: installs a root key generated (and split) by the caller. */
  install(request: unknown): Promise<{ rootKeyId: string }> {
    return this.#serialized(() => this.#install(request));
  }

  /** Proves the current shares; drops the fallback to the last verified key. */
  verify(shares: unknown): Promise<{ rootKeyId: string; verified: true }> {
    return this.#serialized(() => this.#verify(shares));
  }

  submitShare(share: unknown): Promise<RecoveryProgress> {
    return this.#serialized(() => this.#submitShare(share));
  }

  resetRecovery(): Promise<RecoveryProgress> {
    return this.#serialized(async () => {
      this.#clearProgress();
      const status = this.status();
      return { sealed: status.sealed, progress: 0, t: status.t };
    });
  }

  /** Drops the key from memory (like `vault operator seal`); shares recover it. Mode 2 only. */
  seal(): Promise<SealStatus> {
    return this.#serialized(async () => {
      this.#refuseInSecretMode();
      if (this.#record === undefined) throw new Problem(409, sealerProblems.notInitialized, 'the sealing service is not initialized: there is nothing to seal');
      this.#key?.fill(0);
      this.#key = undefined;
      this.#clearProgress();
      return this.status();
    });
  }

  async #install(request: unknown): Promise<{ rootKeyId: string }> {
    this.#refuseInSecretMode();
    const { key, t, n, expectedCurrentId } = parseInstall(request);
    try {
      const newId = rootKeyId(key);
      if (this.#record === undefined) {
        if (expectedCurrentId !== null) {
          throw new Problem(409, sealerProblems.conflict, 'the sealing service is not initialized: initialize it with expectedCurrentId null');
        }
        const state: StateRecord = { format: STATE_FORMAT, keys: [{ id: newId, t, n }], wraps: [] };
        if (!(await this.#store.create(STATE_OBJECT_KEY, encode(state)))) {
          this.#record = await this.#load();
          throw new Problem(409, sealerProblems.conflict, 'the sealing service was initialized meanwhile');
        }
        await this.#reloadAfterWrite(state);
        this.#setKey(key);
        return { rootKeyId: newId };
      }

      if (this.#key === undefined) throw sealedProblem(this.status());
      const state = this.#record.state;
      const current = state.keys.at(-1)!;
      if (newId === current.id) {
        // A retry of the rotation that installed this very key: answer as then.
        if (t === current.t && n === current.n) return { rootKeyId: newId };
        throw new Problem(409, sealerProblems.conflict, 'this root key is already installed with other t/n');
      }
      if (expectedCurrentId !== current.id) {
        throw new Problem(409, sealerProblems.conflict, 'the root key changed meanwhile (another rotation won): expectedCurrentId is not the current root key id');
      }
      if (state.keys.some((entry) => entry.id === newId)) throw new Problem(409, sealerProblems.conflict, 'this root key was used before; generate a new one');
      if (state.keys.length > MAX_UNVERIFIED_ROTATIONS) {
        throw new Problem(409, sealerProblems.conflict, `${MAX_UNVERIFIED_ROTATIONS} rotations are unverified: verify the current shares before rotating again`);
      }
      const next: StateRecord = {
        format: STATE_FORMAT,
        keys: [...state.keys, { id: newId, t, n }],
        wraps: [...state.wraps, wrapKey(this.#key, key, successorContext(current.id, newId))],
      };
      await this.#replace(next);
      this.#setKey(key);
      this.#clearProgress();
      return { rootKeyId: newId };
    } finally {
      key.fill(0);
    }
  }

  async #verify(input: unknown): Promise<{ rootKeyId: string; verified: true }> {
    this.#refuseInSecretMode();
    if (this.#record === undefined || this.#key === undefined) throw sealedProblem(this.status());
    const list = (input as { shares?: unknown } | null)?.shares;
    if (!Array.isArray(list) || list.length === 0) throw new Problem(400, sealerProblems.badRequest, 'body must be {"shares": [{"index": n, "content": "<base64>"}, …]}');
    const state = this.#record.state;
    const current = state.keys.at(-1)!;
    if (list.length > 255) throw new Problem(400, sealerProblems.badShare, 'too many shares');
    const shares = new Map<number, Buffer>();
    try {
      list.forEach((item, i) => {
        const { index, bytes } = asBadShare(() => parseShare(item, `shares[${i}]`));
        if (shares.has(index)) throw new Problem(400, sealerProblems.badShare, `shares[${i}]: index ${index} appears twice`);
        shares.set(index, bytes);
      });
      if (shares.size < current.t) throw new Problem(400, sealerProblems.badShare, `need at least ${current.t} shares to verify, got ${shares.size}`);
      const combined = await combineShares([...shares.values()]);
      const ok = sameId(rootKeyId(combined), current.id);
      combined.fill(0);
      if (!ok) throw new Problem(400, sealerProblems.badShare, 'these shares do not rebuild the current root key (wrong, corrupted or stale shares); nothing changed');
    } finally {
      for (const bytes of shares.values()) bytes.fill(0);
    }
    if (state.keys.length > 1) await this.#replace({ format: STATE_FORMAT, keys: [current], wraps: [] });
    return { rootKeyId: current.id, verified: true };
  }

  async #submitShare(input: unknown): Promise<RecoveryProgress> {
    this.#refuseInSecretMode();
    if (this.#record === undefined) throw new Problem(409, sealerProblems.notInitialized, 'the sealing service is not initialized: there is nothing to recover; rotate initializes it');
    if (this.#key !== undefined) throw new Problem(409, sealerProblems.notSealed, 'the sealing service is not sealed: recovery never replaces a live root key');
    this.#expireProgress();
    const { index, bytes } = asBadShare(() => parseShare(input));
    const state = this.#record.state;
    const current = state.keys.at(-1)!;
    const progress = (this.#progress ??= { shares: new Map(), startedAt: this.#now() });
    if (progress.shares.has(index)) {
      bytes.fill(0);
      throw new Problem(400, sealerProblems.badShare, `a share with index ${index} was already submitted; progress unchanged (${progress.shares.size} of ${current.t})`);
    }
    progress.shares.set(index, bytes);
    const count = progress.shares.size;
    const thresholds = state.keys.map((entry) => entry.t);
    if (count < Math.min(...thresholds)) return { sealed: true, progress: count, t: current.t };

    // combine() cannot tell a wrong share: the id (key check value) of the result decides.
    let combined: Buffer;
    try {
      combined = await combineShares([...progress.shares.values()]);
    } catch {
      this.#clearProgress();
      throw new Problem(400, sealerProblems.badShare, 'the shares submitted cannot be combined; progress was reset');
    }
    const id = rootKeyId(combined);
    const at = state.keys.findIndex((entry) => sameId(entry.id, id));
    if (at === -1) {
      combined.fill(0);
      if (count < Math.max(...thresholds)) return { sealed: true, progress: count, t: current.t };
      this.#clearProgress();
      throw new Problem(400, sealerProblems.badShare, `the ${count} shares submitted do not rebuild the root key (wrong, corrupted or stale shares); progress was reset`);
    }
    let key: Buffer = combined;
    try {
      for (let i = at; i < state.keys.length - 1; i++) {
        const next = unwrapKey(key, state.wraps[i]!, successorContext(state.keys[i]!.id, state.keys[i + 1]!.id));
        key.fill(0);
        key = next;
        if (!sameId(rootKeyId(key), state.keys[i + 1]!.id)) throw new KmsError('INTEGRITY', 'successor id mismatch');
      }
    } catch {
      key.fill(0);
      this.#clearProgress();
      throw new Problem(500, sealerProblems.internal, 'the state record failed authentication (tampered with or corrupted); progress was reset');
    }
    this.#key = key;
    this.#clearProgress();
    return { sealed: false, progress: 0, t: current.t, rootKeyId: current.id };
  }

  #refuseInSecretMode(): void {
    if (this.#source === 'secret') {
      throw new Problem(409, sealerProblems.keyFromSecret, 'the root key comes from a configured secret (mode 1): rotate the secret instead; there are no shares');
    }
  }

  #setKey(key: Buffer): void {
    this.#key?.fill(0);
    this.#key = Buffer.from(key);
  }

  #expireProgress(): void {
    if (this.#progress !== undefined && this.#now() - this.#progress.startedAt > this.#recoveryTtlMs) this.#clearProgress();
  }

  #clearProgress(): void {
    if (this.#progress === undefined) return;
    for (const bytes of this.#progress.shares.values()) bytes.fill(0);
    this.#progress = undefined;
  }

  /** Compare-and-swap of the record; a lost race is a conflict and changes nothing. */
  async #replace(next: StateRecord): Promise<void> {
    if (!(await this.#store.replace(STATE_OBJECT_KEY, encode(next), this.#record!.etag))) {
      this.#record = await this.#load();
      throw new Problem(409, sealerProblems.conflict, 'the state record changed meanwhile; nothing was changed');
    }
    await this.#reloadAfterWrite(next);
  }

  async #reloadAfterWrite(written: StateRecord): Promise<void> {
    const loaded = await this.#load();
    this.#record = loaded ?? { state: written, etag: '' };
  }

  async #load(): Promise<{ state: StateRecord; etag: string } | undefined> {
    let object;
    try {
      object = await this.#store.get(STATE_OBJECT_KEY);
    } catch (error) {
      throw storage(error);
    }
    if (object === undefined) return undefined;
    return { state: decode(object.body), etag: object.etag };
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run.then(undefined, (error: unknown) => {
      throw storage(error);
    });
  }
}

function parseInstall(request: unknown): { key: Buffer; t: number; n: number; expectedCurrentId: string | null } {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    throw new Problem(400, sealerProblems.badRequest, 'body must be {"key": "<base64>", "t": n, "n": n, "expectedCurrentId": "<id>" | null}');
  }
  const { key, t, n, expectedCurrentId } = request as Partial<Record<keyof InstallRootKeyRequest, unknown>>;
  if (typeof key !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(key)) throw new Problem(400, sealerProblems.badRequest, 'key must be base64');
  if (expectedCurrentId !== null && (typeof expectedCurrentId !== 'string' || !ID_PATTERN.test(expectedCurrentId))) {
    throw new Problem(400, sealerProblems.badRequest, 'expectedCurrentId must be a root key id or null');
  }
  let threshold;
  try {
    threshold = validateThreshold(t, n);
  } catch (error) {
    throw new Problem(400, sealerProblems.badRequest, (error as Error).message);
  }
  const bytes = Buffer.from(key, 'base64');
  if (bytes.length !== ROOT_KEY_BYTES) {
    bytes.fill(0);
    throw new Problem(400, sealerProblems.badRequest, 'key must be 32 bytes (256 bits)');
  }
  return { key: bytes, ...threshold, expectedCurrentId };
}

/** shamir-secret-sharing wants plain Uint8Arrays (not Buffers); every copy is wiped. */
async function combineShares(shares: readonly Buffer[]): Promise<Buffer> {
  const copies = shares.map((share) => new Uint8Array(share));
  try {
    const secret = await combine(copies);
    const result = Buffer.from(secret);
    secret.fill(0);
    return result;
  } finally {
    for (const copy of copies) copy.fill(0);
  }
}

function asBadShare<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof KmsError) throw new Problem(400, sealerProblems.badShare, error.message);
    throw error;
  }
}

function sameId(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function encode(state: StateRecord): Buffer {
  return Buffer.from(`${JSON.stringify(state, null, 2)}\n`);
}

function decode(body: Buffer): StateRecord {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw corrupt();
  }
  const state = value as Partial<StateRecord> | null;
  if (state?.format !== STATE_FORMAT || !Array.isArray(state.keys) || !Array.isArray(state.wraps)) throw corrupt();
  const { keys, wraps } = state;
  if (keys.length === 0 || keys.length > MAX_UNVERIFIED_ROTATIONS + 1 || wraps.length !== keys.length - 1) throw corrupt();
  for (const entry of keys) {
    if (typeof entry?.id !== 'string' || !ID_PATTERN.test(entry.id)) throw corrupt();
    try {
      validateThreshold(entry.t, entry.n);
    } catch {
      throw corrupt();
    }
  }
  if (!wraps.every(isWrappedKey)) throw corrupt();
  return { format: STATE_FORMAT, keys: keys.map(({ id, t, n }) => ({ id, t, n })), wraps: wraps.map(({ iv, ciphertext, tag }) => ({ iv, ciphertext, tag })) };
}

function corrupt(): KmsError {
  return new KmsError('INTEGRITY', `the sealer state record (${STATE_OBJECT_KEY}) is corrupted`);
}

function storage(error: unknown): unknown {
  if (error instanceof KmsError && error.code === 'STORAGE_UNAVAILABLE') {
    return new Problem(503, sealerProblems.storageUnavailable, 'the sealing service cannot reach its storage; nothing was changed');
  }
  return error;
}
