import { describe, expect, it } from 'vitest';
import { trimCcel } from '../../../../shared/attestation/tdx/ccel.js';
import { syntheticCcel } from '../../../support/tdx-helpers.js';

/** The synthetic log's Spec ID event: one algorithm, no vendor info. */
const SPEC_ID_EVENT_BYTES = 33;

describe('trimCcel', () => {
  it('keeps the events, drops 0xFF or 0x00 padding and ends with the 8-byte 0xFF marker', () => {
    for (const padding of [0xff, 0x00]) {
      const { log, trimmed } = syntheticCcel(padding);
      expect(Buffer.from(trimCcel(log)!)).toEqual(trimmed);
    }
  });

  it('gives up (undefined) on malformed logs instead of reading past the end', () => {
    const { log } = syntheticCcel(0xff);
    expect(trimCcel(log.subarray(0, 10))).toBeUndefined();
    const events = syntheticCcel(0xff).trimmed.subarray(0, -8);
    expect(trimCcel(events)).toBeUndefined(); // no end marker
    const unknownAlgorithm = Buffer.from(log);
    unknownAlgorithm.writeUInt16LE(0x99, 32 + SPEC_ID_EVENT_BYTES + 12); // the first record's digest algorithm
    expect(trimCcel(unknownAlgorithm)).toBeUndefined();
  });
});
