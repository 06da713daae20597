import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { ROOT_KEY_ID_PATTERN } from '../crypto/root-key-id.js';
import { layout } from '../keys/layout.js';
import type { ObjectStore } from '../store/object-store.js';
import { MAX_RANGES } from './ranges.js';
import type { RootKey } from './source.js';

/**
 * The rotation journal: the running rewrap's target, range count, pass and progress, shared by
 * every instance that joins it (its ranges are the leases: ranges.ts); status and metrics read it.
 */
export interface RotationJournal {
  readonly format: 1;
  readonly kind: 'rotation';
  readonly holder: string;
  readonly leaseUntil: number;
  /** Always `rewrapping` (the lease is taken once the sealing service has verified): kept for status readers. */
  readonly phase: 'rewrapping';
  readonly to: string | null;
  readonly rewrapped: number;
  /** How many ranges the rewrap is split into (fixed by whoever created the journal). */
  readonly ranges?: number;
  readonly startedAt: string;
  /** This pass over the keys: random, new in every journal a rewrap creates; range records count only in their pass. */
  readonly pass?: string;
  /** HMAC-SHA256 (base64url) of the fields above under a key derived from the target root key. */
  readonly mac?: string;
}

/** A journal the rewrap can use: whole, and authentic under the target root key. */
export interface SealedJournal extends RotationJournal {
  readonly to: string;
  readonly ranges: number;
  readonly pass: string;
  readonly mac: string;
}

/**
 * Seals and checks the journals of the rotation to `target`. Storage may replay any journal it saw
 * and edit any field: only the instances that rewrap hold the key the MAC is under, so only they
 * extend a journal's lease, and a replayed one lapses (see RootKeyRotation.#openJournal).
 */
export class JournalSeal {
  readonly #key: Buffer;

  constructor(private readonly target: RootKey) {
    this.#key = Buffer.from(hkdfSync('sha256', target.key, Buffer.alloc(0), 'tee-kms/rotation-journal/v1', 32));
  }

  /** A new journal for a new pass, its lease `leaseMs` from now. */
  fresh(holder: string, ranges: number, leaseMs: number): SealedJournal {
    const fields = {
      format: 1,
      kind: 'rotation',
      holder,
      leaseUntil: Date.now() + leaseMs,
      phase: 'rewrapping',
      to: this.target.id,
      rewrapped: 0,
      ranges,
      startedAt: new Date().toISOString(),
      pass: randomBytes(16).toString('base64url'),
    } as const;
    return { ...fields, mac: this.#mac(fields) };
  }

  /** `journal` with its progress and lease changed, sealed again. */
  advance(journal: SealedJournal, rewrapped: number, leaseUntil: number): SealedJournal {
    const fields = { ...journal, rewrapped, leaseUntil };
    return { ...fields, mac: this.#mac(fields) };
  }

  /** The journal when it is this rotation's, with a range count in bounds and a valid MAC; else undefined. */
  open(journal: RotationJournal | undefined): SealedJournal | undefined {
    if (journal?.to !== this.target.id) return undefined;
    const { ranges, pass, mac } = journal;
    if (typeof ranges !== 'number' || !Number.isInteger(ranges) || ranges < 1 || ranges > MAX_RANGES) return undefined;
    if (typeof pass !== 'string' || typeof mac !== 'string') return undefined;
    const expected = Buffer.from(this.#mac({ ...journal, to: this.target.id, ranges, pass }));
    const given = Buffer.from(mac);
    return given.length === expected.length && timingSafeEqual(given, expected) ? (journal as SealedJournal) : undefined;
  }

  #mac(fields: Omit<SealedJournal, 'mac'>): string {
    const { to, pass, ranges, holder, leaseUntil, phase, rewrapped, startedAt } = fields;
    const signed = JSON.stringify(['rotation-journal', to, pass, ranges, holder, leaseUntil, phase, rewrapped, startedAt]);
    return createHmac('sha256', this.#key).update(signed).digest('base64url');
  }
}

/**
 * The rotation journal in `store`, when a verification holds (or held, and crashed with) its lease.
 * Read without any key, for status and metrics: its fields are shown, never trusted.
 */
export async function readRotationJournal(store: ObjectStore): Promise<RotationJournal | undefined> {
  const object = await store.get(layout.rotationJournal());
  return object === undefined ? undefined : parseJournal(object.body);
}

/**
 * The journal as stored, or undefined when it is not one: storage is untrusted, so every field is
 * checked for what it is used as (a message, a status answer, a folder name), never assumed.
 */
export function parseJournal(body: Buffer): RotationJournal | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || value.kind !== 'rotation') return undefined;
  const { leaseUntil, to, rewrapped, holder, startedAt, ranges, pass, mac } = value;
  const optionalText = (text: unknown) => text === undefined || (typeof text === 'string' && text.length <= 256);
  const wellFormed =
    typeof leaseUntil === 'number' &&
    Number.isFinite(leaseUntil) &&
    (to === null || (typeof to === 'string' && ROOT_KEY_ID_PATTERN.test(to))) &&
    typeof rewrapped === 'number' &&
    Number.isSafeInteger(rewrapped) &&
    rewrapped >= 0 &&
    typeof holder === 'string' &&
    holder.length <= 256 &&
    typeof startedAt === 'string' &&
    startedAt.length <= 64 &&
    (ranges === undefined || typeof ranges === 'number') &&
    optionalText(pass) &&
    optionalText(mac);
  return wellFormed ? (value as unknown as RotationJournal) : undefined;
}
