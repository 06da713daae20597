/**
 * Writes TCG2 crypto-agile event logs as a TD's firmware lays out its CCEL (TCG PC Client PFP:
 * a SHA-1-format TCG_PCR_EVENT carrying the Spec ID event, then TCG_PCR_EVENT2 records, then an
 * end marker or padding), and computes the RTMRs such a log should produce. Written from the
 * specification, independently of shared/attestation/tdx/event-log.ts, so tests can check one
 * against the other and build quotes whose RTMRs agree (or disagree) with a log.
 */
import { createHash } from 'node:crypto';

export const ALG_SHA256 = 0x000b;
export const ALG_SHA384 = 0x000c;
export const ALG_SM3_256 = 0x0012;
export const EV_NO_ACTION = 0x3;
export const EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003;
export const EV_EVENT_TAG = 0x6;

const u8 = (n: number) => Buffer.from([n]);
const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

export const sha384 = (data: Uint8Array | string): Buffer => createHash('sha384').update(data).digest();

export interface LogEvent {
  /** CC measurement register index: 0 = MRTD, 1..4 = RTMR0..3. */
  readonly mrIndex: number;
  readonly eventType?: number;
  readonly data?: string;
  /** The SHA-384 digest; default SHA-384 of `data`, as firmware measures. */
  readonly sha384?: Buffer;
  /** Also carry a SHA-256 digest (a log declaring both algorithms). */
  readonly sha256?: Buffer;
}

export interface LogOptions {
  /** Algorithms the Spec ID event declares: [id, size] (default SHA-384 only). */
  readonly algorithms?: readonly (readonly [number, number])[];
  /** After the events: the 0xFF end marker (default), firmware-style padding, or nothing. */
  readonly end?: 'marker' | 'pad-ff' | 'pad-00' | 'none';
  /** The Spec ID event's 16-byte signature (default "Spec ID Event03\0", as firmware writes it). */
  readonly signature?: Buffer;
}

export function specIdEvent(algorithms: readonly (readonly [number, number])[], signature: Buffer = Buffer.from('Spec ID Event03\0', 'latin1')): Buffer {
  return Buffer.concat([
    signature,
    u32(0), // platformClass: client
    u8(0), // specVersionMinor
    u8(2), // specVersionMajor
    u8(0), // specErrata
    u8(2), // uintnSize: UINT64
    u32(algorithms.length),
    ...algorithms.map(([id, size]) => Buffer.concat([u16(id), u16(size)])),
    u8(0), // vendorInfoSize
  ]);
}

/** The first record: TCG_PCR_EVENT, SHA-1 format, carrying the Spec ID event. */
export function headerRecord(algorithms: readonly (readonly [number, number])[] = [[ALG_SHA384, 48]], signature?: Buffer): Buffer {
  const spec = specIdEvent(algorithms, signature);
  return Buffer.concat([u32(0), u32(EV_NO_ACTION), Buffer.alloc(20), u32(spec.length), spec]);
}

export const digestOf = (event: LogEvent): Buffer => event.sha384 ?? sha384(event.data ?? '');

/** One TCG_PCR_EVENT2 record. */
export function eventRecord(event: LogEvent): Buffer {
  const data = Buffer.from(event.data ?? '', 'utf8');
  const digests = [Buffer.concat([u16(ALG_SHA384), digestOf(event)])];
  if (event.sha256) digests.push(Buffer.concat([u16(ALG_SHA256), event.sha256]));
  return Buffer.concat([u32(event.mrIndex), u32(event.eventType ?? EV_EVENT_TAG), u32(digests.length), ...digests, u32(data.length), data]);
}

export function writeCcel(events: readonly LogEvent[], options: LogOptions = {}): Buffer {
  const body = Buffer.concat([headerRecord(options.algorithms, options.signature), ...events.map(eventRecord)]);
  switch (options.end ?? 'marker') {
    case 'marker':
      return Buffer.concat([body, Buffer.alloc(8, 0xff)]);
    case 'pad-ff':
      return Buffer.concat([body, Buffer.alloc(65536 - (body.length % 4096), 0xff)]);
    case 'pad-00':
      return Buffer.concat([body, Buffer.alloc(65536 - (body.length % 4096), 0x00)]);
    case 'none':
      return body;
  }
}

/** RTMR0..3 as a TD that logged `events` would report them: extend = SHA-384(RTMR || digest). */
export function rtmrsOf(events: readonly LogEvent[]): [string, string, string, string] {
  const rtmr: Buffer[] = [0, 1, 2, 3].map(() => Buffer.alloc(48));
  for (const event of events) {
    if (event.mrIndex < 1 || event.mrIndex > 4 || event.eventType === EV_NO_ACTION) continue;
    rtmr[event.mrIndex - 1] = sha384(Buffer.concat([rtmr[event.mrIndex - 1]!, digestOf(event)]));
  }
  const [r0, r1, r2, r3] = rtmr.map((r) => r.toString('hex')) as [string, string, string, string];
  return [r0, r1, r2, r3];
}

/** A boot like TDVF's direct boot: firmware configuration, kernel, command line and initrd. */
export const BOOT_EVENTS: readonly LogEvent[] = [
  { mrIndex: 1, data: 'TD HOB' },
  { mrIndex: 1, data: 'ACPI DATA' },
  { mrIndex: 1, data: 'EFI variable SecureBoot' },
  { mrIndex: 2, eventType: EV_EFI_BOOT_SERVICES_APPLICATION, data: 'vmlinuz-6.8 image' },
  { mrIndex: 3, data: 'console=hvc0 root=/dev/vda1 dm-verity.roothash=ab12' },
  { mrIndex: 3, data: 'initrd' },
];
