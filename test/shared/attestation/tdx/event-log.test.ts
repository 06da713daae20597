import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { trimCcel } from '../../../../shared/attestation/tdx/ccel.js';
import { parseCcelEventLog, replayRtmrs, type CcelEventLog } from '../../../../shared/attestation/tdx/event-log.js';
import {
  ALG_SHA256,
  ALG_SHA384,
  ALG_SM3_256,
  BOOT_EVENTS,
  EV_NO_ACTION,
  eventRecord,
  headerRecord,
  rtmrsOf,
  sha384,
  writeCcel,
  type LogEvent,
} from '../../../support/ccel-writer.js';

const ZERO48 = '00'.repeat(48);

function parsed(bytes: Uint8Array): CcelEventLog {
  const result = parseCcelEventLog(bytes);
  if (!result.ok) throw new Error(`expected a valid log, got: ${result.reason}`);
  return result.log;
}

function reasonFor(bytes: Uint8Array): string {
  const result = parseCcelEventLog(bytes);
  if (result.ok) throw new Error('expected a malformed log to be rejected');
  return result.reason;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

describe('parseCcelEventLog and replayRtmrs', () => {
  it('extends each RTMR from 48 zero bytes with SHA-384(RTMR || digest), MR index 1..4 = RTMR0..3', () => {
    const d1 = sha384('kernel');
    const d2 = sha384('initrd');
    const log = writeCcel([
      { mrIndex: 3, sha384: d1 },
      { mrIndex: 3, sha384: d2 },
    ]);
    const once = createHash('sha384').update(Buffer.alloc(48)).update(d1).digest();
    const twice = createHash('sha384').update(once).update(d2).digest();
    const replay = replayRtmrs(parsed(log));
    expect(replay.rtmr).toEqual([ZERO48, ZERO48, twice.toString('hex'), ZERO48]);
    expect(replay.digests).toEqual([[], [], [d1.toString('hex'), d2.toString('hex')], []]);
  });

  it('replays a boot log to the RTMRs the writer computes, whatever follows the events', () => {
    for (const end of ['marker', 'pad-ff', 'pad-00', 'none'] as const) {
      const log = parsed(writeCcel(BOOT_EVENTS, { end }));
      expect(log.events).toHaveLength(BOOT_EVENTS.length);
      expect(log.events.map((event) => event.mrIndex)).toEqual(BOOT_EVENTS.map((event) => event.mrIndex));
      expect(Buffer.from(log.events[3]!.data).toString()).toBe('vmlinuz-6.8 image');
      expect(replayRtmrs(log).rtmr).toEqual(rtmrsOf(BOOT_EVENTS));
    }
    expect(rtmrsOf(BOOT_EVENTS)[3]).toBe(ZERO48);
  });

  it('replays the trimmed log the attesters send to the same RTMRs as the firmware table', () => {
    for (const end of ['pad-ff', 'pad-00'] as const) {
      const table = writeCcel(BOOT_EVENTS, { end });
      const trimmed = trimCcel(table)!;
      expect(trimmed.length).toBeLessThan(table.length);
      expect(replayRtmrs(parsed(trimmed))).toEqual(replayRtmrs(parsed(table)));
    }
  });

  it('uses the SHA-384 digest of a log that declares several algorithms', () => {
    const events: LogEvent[] = [
      { mrIndex: 1, data: 'a', sha256: randomBytes(32) },
      { mrIndex: 2, data: 'b', sha256: randomBytes(32) },
    ];
    const log = parsed(
      writeCcel(events, {
        algorithms: [
          [ALG_SHA256, 32],
          [ALG_SHA384, 48],
        ],
      }),
    );
    expect(log.digestSizes).toEqual(
      new Map([
        [ALG_SHA256, 32],
        [ALG_SHA384, 48],
      ]),
    );
    expect(replayRtmrs(log).rtmr).toEqual(rtmrsOf(events));
  });

  it("reads the attestation agent's own header: zero signature, SHA-384 and SM3 declared", () => {
    // The CoCo agent starts a log of its run-time (RTMR3) events with this header when the TD has no CCEL.
    const events: LogEvent[] = [{ mrIndex: 4, data: 'domain operation content' }];
    const log = writeCcel(events, {
      signature: Buffer.alloc(16),
      algorithms: [
        [ALG_SHA384, 48],
        [ALG_SM3_256, 32],
      ],
    });
    expect(replayRtmrs(parsed(log)).rtmr).toEqual(rtmrsOf(events));
  });

  it('extends neither EV_NO_ACTION records nor MRTD (index 0) records', () => {
    const events: LogEvent[] = [
      { mrIndex: 1, data: 'config' },
      { mrIndex: 2, eventType: EV_NO_ACTION, sha384: sha384('informational only') },
      { mrIndex: 0, data: 'mrtd is built by the TDX module' },
    ];
    const log = parsed(writeCcel(events));
    expect(log.events).toHaveLength(3);
    const replay = replayRtmrs(log);
    expect(replay.rtmr).toEqual(rtmrsOf([events[0]!]));
    expect(replay.digests).toEqual([[sha384('config').toString('hex')], [], [], []]);
  });

  it('rejects what is not a crypto-agile TDX log, with a reason', () => {
    expect(reasonFor(new Uint8Array(0))).toMatch(/^truncated at byte 0 \(header index/);
    const sha1Log = Buffer.concat([u32(0), u32(0x80000001), Buffer.alloc(20), u32(0)]);
    expect(reasonFor(sha1Log)).toBe('the first record has event type 0x80000001, not EV_NO_ACTION');
    const trailing = Buffer.from(headerRecord());
    trailing.writeUInt32LE(trailing.readUInt32LE(28) + 1, 28);
    expect(reasonFor(Buffer.concat([trailing, Buffer.alloc(8, 0xff)]))).toBe('the Spec ID event has 1 unexplained trailing bytes');
    expect(reasonFor(writeCcel([], { algorithms: [[ALG_SHA256, 32]] }))).toBe('the log carries no SHA-384 digests (a TDX log must)');
    expect(reasonFor(writeCcel([], { algorithms: [[ALG_SHA384, 32]] }))).toMatch(/algorithm 0x000c an invalid or repeated digest size 32/);
    expect(reasonFor(writeCcel([], { algorithms: [[0x7777, 4096]] }))).toMatch(/invalid or repeated digest size 4096/);
    expect(
      reasonFor(
        writeCcel([], {
          algorithms: [
            [ALG_SHA384, 48],
            [ALG_SHA384, 48],
          ],
        }),
      ),
    ).toMatch(/repeated/);
    expect(reasonFor(writeCcel([{ mrIndex: 5, data: 'x' }]))).toMatch(/names register index 5 \(a TD has 0\.\.4\)/);
  });

  it('rejects absurd counts and sizes at once, without reading past the data', () => {
    const header = headerRecord();
    const event = eventRecord({ mrIndex: 1, data: 'x' });
    const withDigestCount = (count: number) => {
      const copy = Buffer.from(event);
      copy.writeUInt32LE(count, 8);
      return Buffer.concat([header, copy, Buffer.alloc(8, 0xff)]);
    };
    expect(reasonFor(withDigestCount(0xffffffff))).toBe(`record at byte ${header.length} has 4294967295 digests (the log declares 1 algorithms)`);
    expect(reasonFor(withDigestCount(0))).toMatch(/has 0 digests/);
    const hugeEvent = Buffer.from(event);
    hugeEvent.writeUInt32LE(0xfffffff0, 12 + 2 + 48);
    expect(reasonFor(Buffer.concat([header, hugeEvent, Buffer.alloc(8, 0xff)]))).toMatch(/^truncated at byte \d+ \(event data: 4294967280 bytes, \d+ left\)$/);
    const hugeSpecId = Buffer.from(header);
    hugeSpecId.writeUInt32LE(0xffffffff, 28);
    expect(reasonFor(hugeSpecId)).toMatch(/^truncated at byte 32 \(Spec ID event: 4294967295 bytes/);
    const manyAlgorithms = Buffer.from(header);
    manyAlgorithms.writeUInt32LE(0x40000000, 32 + 24);
    expect(reasonFor(manyAlgorithms)).toMatch(/lists 1073741824 algorithms/);
    const otherAlgorithm = Buffer.from(event);
    otherAlgorithm.writeUInt16LE(ALG_SHA256, 12);
    expect(reasonFor(Buffer.concat([header, otherAlgorithm]))).toMatch(/undeclared or repeated digest algorithm 0x000b/);
  });

  it('never throws on a truncated or corrupted log: a valid prefix or a reason', () => {
    const log = writeCcel(BOOT_EVENTS, { end: 'none' });
    for (let length = 0; length < log.length; length++) {
      const result = parseCcelEventLog(log.subarray(0, length));
      // A cut exactly between records is a shorter log; the RTMR comparison catches it.
      if (result.ok) expect(result.log.events.length).toBeLessThan(BOOT_EVENTS.length);
      else expect(result.reason).toMatch(/truncated at byte \d+/);
    }
    for (let i = 0; i < 3000; i++) {
      const corrupted = Buffer.from(log);
      for (let j = 0; j < 4; j++) corrupted[Math.floor(Math.random() * corrupted.length)] = Math.floor(Math.random() * 256);
      expect(() => parseCcelEventLog(corrupted)).not.toThrow();
    }
  });
});
