// The sealing service's state record as storage holds it: what decodes, what is refused, and what
// its MAC covers. Records are written here by hand, as whoever can write the bucket would.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeState, encodeState, sealState, stateAuthentic } from '../../sealer/state-record.js';
import { custodians } from '../support/custodians.js';

const id = (byte: string) => byte.repeat(32);
const legacy = (keys: unknown[]) => Buffer.from(JSON.stringify({ format: 'tee-kms/sealer-state/v1', keys }));

describe('the previous record format (v1)', () => {
  it('converts a single verified key as it is, unauthenticated until the next recovery signs it', () => {
    expect(decodeState(legacy([{ id: id('a'), t: 3, n: 5 }]))).toEqual({
      format: 'tee-kms/sealer-state/v2',
      generation: 0,
      current: { id: id('a'), t: 3, n: 5 },
      pending: null,
      mac: null,
    });
  });

  it('refuses a key that names custodians, which that format never did: the bucket writer would have its keys signed', async () => {
    const keys = (await custodians(3)).map((each) => each.jwk);
    expect(() => decodeState(legacy([{ id: id('a'), t: 2, n: 3, custodians: keys }]))).toThrow(
      expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining('is corrupted') }),
    );
  });

  it('refuses a chain of unverified rotations', () => {
    expect(() =>
      decodeState(
        legacy([
          { id: id('a'), t: 2, n: 3 },
          { id: id('b'), t: 2, n: 3 },
        ]),
      ),
    ).toThrow(expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('1 unverified rotation(s)') }));
  });
});

describe('the record (v2)', () => {
  it('is authentic under its current key only, and any edit of t, n or the generation breaks it', () => {
    const key = randomBytes(32);
    const record = decodeState(encodeState(sealState({ generation: 4, current: { id: id('c'), t: 3, n: 5 }, pending: null }, key)));
    expect(stateAuthentic(record, key)).toBe(true);
    expect(stateAuthentic(record, randomBytes(32))).toBe(false);
    for (const edited of [
      { ...record, current: { ...record.current, t: 2 } },
      { ...record, current: { ...record.current, n: 4 } },
      { ...record, generation: 3 },
    ])
      expect(stateAuthentic(edited, key), JSON.stringify(edited)).toBe(false);
  });
});
