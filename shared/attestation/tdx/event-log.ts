/**
 * The TD's CCEL event log, parsed and replayed, so the sealer can tell whether the events a TD
 * presents are the ones that produced the RTMRs in its signed quote.
 *
 * Format: TCG PC Client Platform Firmware Profile, "crypto agile" log. The first record is a
 * TCG_PCR_EVENT in SHA-1 format whose data is the Spec ID event (TCG_EfiSpecIDEvent: which digest
 * algorithms the log carries and their sizes); then TCG_PCR_EVENT2 records until an 8-byte 0xFF
 * end marker, zero padding, or the end of the data. For a TD (UEFI spec, EFI_CC_MEASUREMENT_PROTOCOL)
 * a record's index is the CC measurement register index: 0 is MRTD (built by the TDX module, never
 * extended by events), 1..4 are RTMR0..3. An RTMR starts as 48 zero bytes and each event extends it:
 * RTMR = SHA-384(RTMR || event's SHA-384 digest).
 *
 * The log is hostile input: every read is bounds-checked and counts and sizes are checked against
 * the bytes that remain, so a malformed log yields a reason, never a RangeError or a huge loop.
 */
import { createHash } from 'node:crypto';

export const TPM_ALG_SHA384 = 0x000c;
export const SHA384_SIZE = 48;
/** EV_NO_ACTION records are informational: the firmware did not extend them into any register. */
export const EV_NO_ACTION = 0x00000003;
/** CC measurement register indexes: 0 = MRTD, 1..4 = RTMR0..3. */
export const CC_MR_INDEX_MRTD = 0;
export const RTMR_COUNT = 4;

/** Sizes of the algorithms we know; the Spec ID event must agree with them (TCG algorithm registry). */
const KNOWN_DIGEST_SIZES: Readonly<Record<number, number>> = { 0x0004: 20, 0x000b: 32, 0x000c: 48, 0x000d: 64, 0x0012: 32 };
/** No TCG algorithm has a larger digest; a larger size in the Spec ID event is not a real log. */
const MAX_DIGEST_SIZE = 64;

export interface CcelEvent {
  /** CC measurement register index: 0 = MRTD, 1..4 = RTMR0..3. */
  readonly mrIndex: number;
  readonly eventType: number;
  /** The record's SHA-384 digest (every record of a TDX log carries one). */
  readonly sha384: Uint8Array;
  readonly data: Uint8Array;
  /** Byte offset of the record in the log (for messages). */
  readonly offset: number;
}

export interface CcelEventLog {
  /** Digest sizes by TCG algorithm ID, from the Spec ID event. */
  readonly digestSizes: ReadonlyMap<number, number>;
  /** The TCG_PCR_EVENT2 records, in log order (the Spec ID header is not one of them). */
  readonly events: readonly CcelEvent[];
  /** Byte offset just past the last record: where the end marker or padding starts, if any. */
  readonly end: number;
}

export type CcelParseResult = { readonly ok: true; readonly log: CcelEventLog } | { readonly ok: false; readonly reason: string };

/** Internal: ends parsing with a reason; caught only by parseCcelEventLog. */
class Malformed extends Error {}

/** Bounds-checked little-endian reader over the log. */
class Reader {
  offset = 0;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.offset;
  }

  private need(length: number, what: string): number {
    if (length > this.remaining) throw new Malformed(`truncated at byte ${this.offset} (${what}: ${length} bytes, ${this.remaining} left)`);
    const at = this.offset;
    this.offset += length;
    return at;
  }

  u8(what: string): number {
    return this.view.getUint8(this.need(1, what));
  }

  u16(what: string): number {
    return this.view.getUint16(this.need(2, what), true);
  }

  u32(what: string): number {
    return this.view.getUint32(this.need(4, what), true);
  }

  bytesOf(length: number, what: string): Uint8Array {
    const at = this.need(length, what);
    return this.bytes.subarray(at, at + length);
  }

  /** True at the end marker (8 bytes 0xFF), zero padding (8 zero bytes) or the end of the data. */
  atEnd(): boolean {
    if (this.remaining === 0) return true;
    if (this.remaining < 8) return false; // a truncated record: the next read says so
    const lo = this.view.getUint32(this.offset, true);
    const hi = this.view.getUint32(this.offset + 4, true);
    return (lo === 0xffffffff && hi === 0xffffffff) || (lo === 0 && hi === 0);
  }
}

/**
 * The Spec ID event: which digest algorithms the records carry and how long each digest is. Its
 * 16-byte signature is not checked: firmware writes "Spec ID Event03", but the CoCo attestation
 * agent's own header (a log of its run-time events when the TD has no CCEL) leaves it zero. The
 * structure must still add up exactly, and the replay, not the header, is what is trusted.
 */
function parseSpecIdEvent(data: Uint8Array): Map<number, number> {
  const r = new Reader(data);
  r.bytesOf(16, 'Spec ID signature');
  r.u32('platformClass');
  r.u8('specVersionMinor');
  r.u8('specVersionMajor');
  r.u8('specErrata');
  r.u8('uintnSize');
  const count = r.u32('numberOfAlgorithms');
  // Each entry is 4 bytes: a count the data cannot hold is refused before looping.
  if (count === 0 || count * 4 > r.remaining) throw new Malformed(`the Spec ID event lists ${count} algorithms in ${data.length} bytes`);
  const sizes = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    const alg = r.u16('algorithmId');
    const size = r.u16('digestSize');
    const known = KNOWN_DIGEST_SIZES[alg];
    if (size === 0 || size > MAX_DIGEST_SIZE || (known !== undefined && known !== size) || sizes.has(alg)) {
      throw new Malformed(`the Spec ID event gives algorithm 0x${alg.toString(16).padStart(4, '0')} an invalid or repeated digest size ${size}`);
    }
    sizes.set(alg, size);
  }
  const vendorInfoSize = r.u8('vendorInfoSize');
  r.bytesOf(vendorInfoSize, 'vendorInfo');
  if (r.remaining !== 0) throw new Malformed(`the Spec ID event has ${r.remaining} unexplained trailing bytes`);
  if (!sizes.has(TPM_ALG_SHA384)) throw new Malformed('the log carries no SHA-384 digests (a TDX log must)');
  return sizes;
}

function parseEvent(r: Reader, digestSizes: ReadonlyMap<number, number>): CcelEvent {
  const offset = r.offset;
  const mrIndex = r.u32('index');
  if (mrIndex > RTMR_COUNT) throw new Malformed(`record at byte ${offset} names register index ${mrIndex} (a TD has 0..4)`);
  const eventType = r.u32('eventType');
  const count = r.u32('digest count');
  // One digest per algorithm of the Spec ID event, at most: an absurd count is refused at once.
  if (count === 0 || count > digestSizes.size) {
    throw new Malformed(`record at byte ${offset} has ${count} digests (the log declares ${digestSizes.size} algorithms)`);
  }
  let sha384: Uint8Array | undefined;
  const seen = new Set<number>();
  for (let i = 0; i < count; i++) {
    const alg = r.u16('digest algorithm');
    const size = digestSizes.get(alg);
    if (size === undefined || seen.has(alg)) {
      throw new Malformed(`record at byte ${offset} has an undeclared or repeated digest algorithm 0x${alg.toString(16).padStart(4, '0')}`);
    }
    seen.add(alg);
    const digest = r.bytesOf(size, 'digest');
    if (alg === TPM_ALG_SHA384) sha384 = digest;
  }
  if (sha384 === undefined) throw new Malformed(`record at byte ${offset} has no SHA-384 digest`);
  const size = r.u32('event size');
  const data = r.bytesOf(size, 'event data');
  return { mrIndex, eventType, sha384, data, offset };
}

/** Parses a CCEL, trimmed (as attesters send it) or with the firmware's padding. */
export function parseCcelEventLog(bytes: Uint8Array): CcelParseResult {
  const r = new Reader(bytes);
  try {
    // TCG_PCR_EVENT (SHA-1 format): index u32, eventType u32, digest[20], eventSize u32, event.
    r.u32('header index');
    const headerType = r.u32('header eventType');
    if (headerType !== EV_NO_ACTION) throw new Malformed(`the first record has event type 0x${headerType.toString(16)}, not EV_NO_ACTION`);
    r.bytesOf(20, 'header digest');
    const specId = r.bytesOf(r.u32('header eventSize'), 'Spec ID event');
    const digestSizes = parseSpecIdEvent(specId);
    const events: CcelEvent[] = [];
    while (!r.atEnd()) events.push(parseEvent(r, digestSizes));
    return { ok: true, log: { digestSizes, events, end: r.offset } };
  } catch (error) {
    if (error instanceof Malformed) return { ok: false, reason: error.message };
    throw error;
  }
}

export interface RtmrReplay {
  /** RTMR0..3 as the log's events produce them (lowercase hex). */
  readonly rtmr: readonly [string, string, string, string];
  /** The SHA-384 digests extended into each RTMR, in order (lowercase hex). */
  readonly digests: readonly [readonly string[], readonly string[], readonly string[], readonly string[]];
}

/** Replays the events into RTMR0..3 (EV_NO_ACTION and MRTD records extend nothing). */
export function replayRtmrs(log: CcelEventLog): RtmrReplay {
  const registers = Array.from({ length: RTMR_COUNT }, () => Buffer.alloc(SHA384_SIZE));
  const digests: [string[], string[], string[], string[]] = [[], [], [], []];
  for (const event of log.events) {
    if (event.eventType === EV_NO_ACTION || event.mrIndex === CC_MR_INDEX_MRTD) continue;
    const rtmr = event.mrIndex - 1;
    registers[rtmr] = createHash('sha384').update(registers[rtmr]!).update(event.sha384).digest();
    digests[rtmr]!.push(Buffer.from(event.sha384).toString('hex'));
  }
  const hex = registers.map((register) => register.toString('hex'));
  return { rtmr: [hex[0]!, hex[1]!, hex[2]!, hex[3]!], digests };
}
