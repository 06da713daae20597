import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { reportForeignObjects } from '../keys/foreign.js';
import { layout, listedName } from '../keys/layout.js';
import { encodeRecord } from '../keys/records.js';
import type { ObjectStore } from '../store/object-store.js';
import type { RootKey } from './source.js';

/**
 * A rotation's rewrap split into ranges of the primary-key listing, so that every instance that
 * joins shares it. Each range is a lease object (`rotation/ranges/<to>/<i>.json`) written only with
 * compare-and-swap: free or lapsed, an instance takes it, rewraps its keys, marks it done. A holder
 * that dies leaves a lease that lapses, and the next instance takes the range over; rewrapping a key
 * twice is harmless (the rewrap re-reads and skips a key already under the new root key).
 *
 * Storage is untrusted, and a rotation's target id is public before it is verified: a range record
 * planted "done" would skip its keys (left under the retired root key, which retired shares open),
 * one planted "held" for ever would stall the rotation. So every record carries a MAC under a key
 * derived from the new root key, which only the instances that rewrap hold, over its fields, its
 * index, the number of ranges the keys are split into and the pass (the journal's random id: a
 * done record of an earlier pass, replayed, would skip keys created under an older root key since);
 * a record without a valid one is no record, and its range is taken (and rewrapped) again.
 */
export interface RangeRecord {
  readonly format: 1;
  readonly kind: 'rotation-range';
  readonly holder: string;
  readonly leaseUntil: number;
  readonly done: boolean;
  readonly rewrapped: number;
  /** Records of the range that failed authentication (left under an older root key): 0 until done. */
  readonly unreadable: number;
  /** HMAC-SHA256 (base64url) of the fields above with the target, the pass, the number of ranges and the range's index. */
  readonly mac: string;
}

/** Keys per range aimed at: small enough that a lapsed range costs little, large enough that leases are rare writes. */
export const RANGE_KEYS = 200;
export const MAX_RANGES = 4_096;

export function rangeCount(keys: number): number {
  return Math.min(MAX_RANGES, Math.max(1, Math.ceil(keys / RANGE_KEYS)));
}

/** The range of a primary key's object name: a hash, so every lister agrees without coordination. */
export function rangeOf(objectKey: string, ranges: number): number {
  return createHash('sha256').update(objectKey).digest().readUInt32BE(0) % ranges;
}

export interface RangeLease {
  readonly index: number;
  /** Extends the lease (compare-and-swap); false once another instance took the range over. */
  renew(): Promise<boolean>;
  /** Marks the range done; false when the lease was lost meanwhile (its new holder will finish it). */
  finish(rewrapped: number, unreadable: number): Promise<boolean>;
}

/** A range some holder of this pass marked done, and how many of its records failed authentication. */
export interface DoneRange {
  readonly unreadable: number;
}

export type TakeResult = RangeLease | DoneRange | 'held';

type State = Pick<RangeRecord, 'done' | 'rewrapped' | 'unreadable'>;

export class RotationRanges {
  private readonly to: string;
  readonly #macKey: Buffer;

  constructor(
    private readonly store: ObjectStore,
    /** The root key the rotation rewraps under. */
    target: RootKey,
    private readonly holder: string,
    private readonly leaseMs: number,
    /** How many ranges the keys are split into: a record counts only for the split it was made in. */
    private readonly count: number,
    /** The journal's pass: a record counts only in the pass it was made in. */
    private readonly pass: string,
  ) {
    this.to = target.id;
    this.#macKey = Buffer.from(hkdfSync('sha256', target.key, Buffer.alloc(0), 'tee-kms/rotation-range/v1', 32));
  }

  /** Takes range `index` when it is free or its lease lapsed. */
  async take(index: number): Promise<TakeResult> {
    const key = layout.rotationRange(this.to, index);
    const existing = await this.store.get(key);
    if (existing !== undefined) {
      const range = this.#parse(existing.body, index);
      if (range?.done === true) return { unreadable: range.unreadable };
      if (range !== undefined && range.leaseUntil > Date.now()) return 'held';
    }
    // Free, or lapsed (its holder died or stalled), or unreadable or unauthentic: take it; of two takers one wins.
    const etag = await this.#write(key, index, { done: false, rewrapped: 0, unreadable: 0 }, existing?.etag ?? null);
    return etag === undefined ? 'held' : this.#lease(index, key, etag);
  }

  /** Range `index` when it is done (by whichever instance of this pass), else undefined. */
  async done(index: number): Promise<DoneRange | undefined> {
    const existing = await this.store.get(layout.rotationRange(this.to, index));
    const range = existing === undefined ? undefined : this.#parse(existing.body, index);
    return range?.done === true ? { unreadable: range.unreadable } : undefined;
  }

  /** Deletes the range objects once the rotation is complete (removeRanges). */
  remove(): Promise<void> {
    return removeRanges(this.store, this.to);
  }

  #record(index: number, state: State): RangeRecord {
    const fields = { holder: this.holder, leaseUntil: Date.now() + this.leaseMs, ...state };
    return { format: 1, kind: 'rotation-range', ...fields, mac: this.#mac(index, fields) };
  }

  #mac(index: number, fields: Pick<RangeRecord, 'holder' | 'leaseUntil' | keyof State>): string {
    // The split too: a range done under one split is not the same keys under another. And the pass:
    // a done record of an earlier pass, replayed, would skip keys wrapped under an older key since.
    const { holder, leaseUntil, done, rewrapped, unreadable } = fields;
    const signed = JSON.stringify(['rotation-range', this.to, this.pass, this.count, index, holder, leaseUntil, done, rewrapped, unreadable]);
    return createHmac('sha256', this.#macKey).update(signed).digest('base64url');
  }

  /** A range record as stored, or undefined when it is not one this rotation's holders wrote. */
  #parse(body: Buffer, index: number): RangeRecord | undefined {
    let value: Partial<RangeRecord>;
    try {
      value = JSON.parse(body.toString('utf8')) as Partial<RangeRecord>;
    } catch {
      return undefined;
    }
    if (typeof value !== 'object' || value === null || value.kind !== 'rotation-range') return undefined;
    const { holder, leaseUntil, done, rewrapped, unreadable, mac } = value;
    if (
      typeof holder !== 'string' ||
      typeof leaseUntil !== 'number' ||
      typeof done !== 'boolean' ||
      typeof rewrapped !== 'number' ||
      typeof unreadable !== 'number' ||
      typeof mac !== 'string'
    ) {
      return undefined;
    }
    const expected = Buffer.from(this.#mac(index, { holder, leaseUntil, done, rewrapped, unreadable }));
    const given = Buffer.from(mac);
    return given.length === expected.length && timingSafeEqual(given, expected) ? (value as RangeRecord) : undefined;
  }

  /**
   * Writes this holder's record (compare-and-swap on `expected`, null: create); its etag, or
   * undefined when the write lost. The etag is the PUT's answer: a read after the write could see
   * the record of whoever took the range over meanwhile. Only a store that names no etag is read
   * back, and then the record must still be exactly ours.
   */
  async #write(key: string, index: number, state: State, expected: string | null): Promise<string | undefined> {
    const body = encodeRecord(this.#record(index, state));
    const written = await this.store.write(key, body, expected);
    if (written === undefined) return undefined;
    if (written.etag !== undefined) return written.etag;
    const stored = await this.store.get(key);
    return stored?.body.equals(body) === true ? stored.etag : undefined;
  }

  #lease(index: number, key: string, initialEtag: string): RangeLease {
    let etag: string | undefined = initialEtag;
    const write = async (state: State): Promise<boolean> => {
      if (etag === undefined) return false;
      etag = await this.#write(key, index, state, etag);
      return etag !== undefined;
    };
    return {
      index,
      renew: () => write({ done: false, rewrapped: 0, unreadable: 0 }),
      finish: (rewrapped, unreadable) => write({ done: true, rewrapped, unreadable }),
    };
  }
}

/** Deletes a rotation's range objects (once it is complete); any other object listed there was planted: reported, left. */
export async function removeRanges(store: ObjectStore, to: string): Promise<void> {
  const foreign: string[] = [];
  for await (const key of store.list(layout.rotationRanges(to))) {
    if (listedName.rotationRange(to, key) === undefined) foreign.push(key);
    else await store.delete(key);
  }
  reportForeignObjects('rotation', "object(s) among the rotation's ranges are no range the KMS wrote, left as they are", foreign);
}
