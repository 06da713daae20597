// The sealing service's state record as storage holds it: what decodes, what is refused, and what
// its MAC covers. Records are written here by hand, as whoever can write the bucket would.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeState, encodeState, sealState, stateAuthentic } from '../../sealer/state-record.js';
import { custodians } from '../support/custodians.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';

const id = (byte: string) => byte.repeat(32);
const legacy = (keys: unknown[]) => Buffer.from(JSON.stringify({ format: 'tee-kms/sealer-state/v1', keys }));

describe('the previous record format (v1)', () => {
  it('is refused unless conversion was asked for: a sealer that wrote v2 never goes back', () => {
    expect(() => decodeState(legacy([{ id: id('a'), t: 3, n: 5 }]))).toThrow(
      expect.objectContaining({ code: 'INTEGRITY', message: expect.stringContaining('KMS_SEALER_CONVERT_V1_STATE=true') }),
    );
  });

  it('converts a single verified key as it is, unauthenticated until the next recovery signs it', () => {
    expect(decodeState(legacy([{ id: id('a'), t: 3, n: 5 }]), { legacy: true })).toEqual({
      format: 'tee-kms/sealer-state/v2',
      generation: 0,
      current: { id: id('a'), t: 3, n: 5 },
      pending: null,
      mac: null,
    });
  });

  it('refuses a key that names custodians, which that format never did: the bucket writer would have its keys signed', async () => {
    const keys = (await custodians(3)).map((each) => each.jwk);
    expect(() => decodeState(legacy([{ id: id('a'), t: 2, n: 3, custodians: keys }]), { legacy: true })).toThrow(
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
        { legacy: true },
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

describe('a v2 record replaced by a v1 one, as whoever can write the bucket would, to drop the custodians and have it signed', () => {
  let sealer: SealerProcess | undefined;
  afterAll(async () => {
    await sealer?.cleanup();
  });

  it('stops the start; converting takes KMS_SEALER_CONVERT_V1_STATE, which production refuses', async () => {
    sealer = await startSealerProcess();
    const client = await sealer.client();
    const { rootKeyId, shares } = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: null });
    client.close();
    expect(shares).toHaveLength(3);
    const recordPath = join(sealer.dataDir, 'objects', 'sealer', 'state.json');
    expect(JSON.parse(await readFile(recordPath, 'utf8'))).toMatchObject({ format: 'tee-kms/sealer-state/v2' });
    const downgraded = JSON.stringify({ format: 'tee-kms/sealer-state/v1', keys: [{ id: rootKeyId, t: 2, n: 3 }] });
    await writeFile(recordPath, downgraded);
    await expect(sealer.restart()).rejects.toThrow(/cannot start: INTEGRITY: .*previous format \(v1\)/);
    expect(await readFile(recordPath, 'utf8')).toBe(downgraded); // nothing rewritten
    sealer.env.NODE_ENV = 'production';
    delete sealer.env.KMS_SEALER_INSECURE_DEV_MODE; // refused in production before this is
    sealer.env.KMS_SEALER_CONVERT_V1_STATE = 'true';
    await expect(sealer.restart()).rejects.toThrow(/cannot start: CONFIG: KMS_SEALER_CONVERT_V1_STATE=true .* refused when NODE_ENV=production/);
  });
});
