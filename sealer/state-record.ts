import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import canonicalize from 'canonicalize';
import { KmsError } from '../shared/errors.js';
import { parseCustodianKeys, type CustodianKey } from '../shared/custody/share-jwe.js';
import { validateThreshold } from '../shared/sealer-client/protocol.js';

/**
 * The sealer's one record in the object store. Not secret: it holds the custodians' public keys when
 * given, never a secret key, wrapped or not.
 */
export const STATE_OBJECT_KEY = 'sealer/state.json';
const FORMAT = 'tee-kms/sealer-state/v2' as const;
const LEGACY_FORMAT = 'tee-kms/sealer-state/v1';
const ID_PATTERN = /^[0-9a-f]{32}$/;

export interface KeyEntry {
  readonly id: string;
  readonly t: number;
  readonly n: number;
  /**
   * The public keys its shares were encrypted to, one per share: a later rotation reuses them.
   * Authenticated with the rest of the record, so storage cannot swap in keys of its own.
   */
  readonly custodians?: readonly CustodianKey[];
}

/**
 * `current` is the root key in use. `pending` is a rotation's new key whose shares were issued and
 * not yet verified: only its id is kept, never the key (wrapped under the current key it would let
 * the current shares, once retired, reach it for as long as any copy of this record exists).
 * `generation` counts changes. `mac` authenticates the rest under a key derived from the current
 * root key; it is null only in a record of the previous format, until the first recovery rewrites it.
 */
export interface StateRecord {
  readonly format: typeof FORMAT;
  readonly generation: number;
  readonly current: KeyEntry;
  readonly pending: KeyEntry | null;
  readonly mac: string | null;
}

export type StateBody = Omit<StateRecord, 'format' | 'mac'>;

export function sealState(body: StateBody, currentKey: Buffer): StateRecord {
  const unsigned = { format: FORMAT, generation: body.generation, current: entry(body.current), pending: body.pending && entry(body.pending) };
  return { ...unsigned, mac: macOf(unsigned, currentKey) };
}

/** Whether `record` was written by a holder of `currentKey` (the key whose id is record.current.id). */
export function stateAuthentic(record: StateRecord, currentKey: Buffer): boolean {
  if (record.mac === null) return false;
  const { mac, ...unsigned } = record;
  const expected = Buffer.from(macOf(unsigned, currentKey), 'base64url');
  const given = Buffer.from(mac, 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export function encodeState(record: StateRecord): Buffer {
  return Buffer.from(`${JSON.stringify(record, null, 2)}\n`);
}

/** `options.legacy`: convert a record of the previous format (KMS_SEALER_CONVERT_V1_STATE); else it is refused. */
export function decodeState(body: Buffer, options: { readonly legacy?: boolean } = {}): StateRecord {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw corrupt();
  }
  const record = value as Record<string, unknown> | null;
  if (record?.format === LEGACY_FORMAT) {
    if (options.legacy !== true) {
      throw new KmsError(
        'INTEGRITY',
        `the sealer state record (${STATE_OBJECT_KEY}) is in the previous format (v1), which a sealer that wrote v2 never goes back to: ` +
          'if this deployment is that old, start once with KMS_SEALER_CONVERT_V1_STATE=true (outside production) to convert it; otherwise storage was rolled back: restore it',
      );
    }
    return fromLegacy(record);
  }
  if (record?.format !== FORMAT || !Number.isSafeInteger(record.generation) || (record.generation as number) < 0) throw corrupt();
  if (typeof record.mac !== 'string' || record.mac.length === 0) throw corrupt();
  return {
    format: FORMAT,
    generation: record.generation as number,
    current: parseEntry(record.current),
    pending: record.pending === null ? null : parseEntry(record.pending),
    mac: record.mac,
  };
}

/**
 * The previous format kept a chain of unverified keys, each wrapped under its predecessor. A
 * single verified key converts as it is (authenticated at the next recovery); a chain is refused,
 * since accepting it would keep the wraps that let retired shares reach the newest key.
 */
function fromLegacy(record: Record<string, unknown>): StateRecord {
  const keys = record.keys;
  if (!Array.isArray(keys) || keys.length === 0) throw corrupt();
  if (keys.length > 1) {
    throw new KmsError(
      'CONFIG',
      `${STATE_OBJECT_KEY} holds ${keys.length - 1} unverified rotation(s) in the previous record format: verify the newest shares with the previous version of tee-kms first`,
    );
  }
  // That format named no custodians (they came later): such an entry was written by whoever can
  // write the bucket, to have its keys authenticated at the next recovery and used by the next rotation.
  if (typeof keys[0] === 'object' && keys[0] !== null && 'custodians' in keys[0]) throw corrupt();
  return { format: FORMAT, generation: 0, current: parseEntry(keys[0]), pending: null, mac: null };
}

function macOf(unsigned: Omit<StateRecord, 'mac'>, currentKey: Buffer): string {
  const macKey = Buffer.from(hkdfSync('sha256', currentKey, Buffer.alloc(0), 'tee-kms/sealer-state-mac/v2', 32));
  try {
    return createHmac('sha256', macKey).update(canonicalize(unsigned)!).digest('base64url');
  } finally {
    macKey.fill(0);
  }
}

function entry({ id, t, n, custodians }: KeyEntry): KeyEntry {
  return custodians === undefined
    ? { id, t, n }
    : { id, t, n, custodians: custodians.map(({ kty, crv, x, y, thumbprint }) => ({ kty, crv, x, y, thumbprint })) };
}

function parseEntry(value: unknown): KeyEntry {
  const { id, t, n, custodians } = (value ?? {}) as Record<string, unknown>;
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) throw corrupt();
  try {
    const threshold = validateThreshold(t, n);
    if (custodians === undefined) return { id, ...threshold };
    const keys = parseCustodianKeys(
      (custodians as unknown[]).map((key) => {
        const { kty, crv, x, y } = (key ?? {}) as Record<string, unknown>;
        return { kty, crv, x, y };
      }),
      threshold.n,
    );
    return { id, ...threshold, custodians: keys };
  } catch {
    throw corrupt();
  }
}

function corrupt(): KmsError {
  return new KmsError('INTEGRITY', `the sealer state record (${STATE_OBJECT_KEY}) is corrupted`);
}
