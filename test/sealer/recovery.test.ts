// Recovery from shares on a real sealer process: every order, other thresholds, and every kind of
// bad share (none ever installs a key), reset, expiry and concurrent submissions.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsError } from '../../shared/errors.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { sealForRecovery } from '../support/custodians.js';
import { kmsFailure } from '../support/failure.js';

const secrets = new SecretRegistry();
let sealer: SealerProcess;
let client: SealerClient;
let current: { id: string; shares: Share[]; t: number; n: number };

/** Rotates to a key the sealing service makes, with t-of-n shares, and verifies them. */
async function rotate(t: number, n: number): Promise<void> {
  const { rootKeyId: id, shares } = await client.installRootKey({ t, n, expectedCurrentId: current?.id ?? null });
  shares.forEach((share) => secrets.addShare(share));
  await client.verifyShares(shares.slice(0, t));
  current = { id, shares, t, n };
}

/** Every ordered choice of k items. */
function arrangements<T>(items: readonly T[], k: number): T[][] {
  if (k === 0) return [[]];
  return items.flatMap((item, i) => arrangements([...items.slice(0, i), ...items.slice(i + 1)], k - 1).map((rest) => [item, ...rest]));
}

async function expectRecoversInOrder(order: readonly Share[]): Promise<void> {
  await client.seal();
  for (let i = 0; i < order.length - 1; i++) {
    expect(await client.submitShare(order[i]!)).toEqual({ sealed: true, progress: i + 1, t: current.t });
  }
  expect(await client.submitShare(order.at(-1)!)).toEqual({ sealed: false, progress: 0, t: current.t, rootKeyId: current.id });
}

/** A random share at an x coordinate none of the current shares uses. */
function randomShare(): Share {
  let x = 1;
  while (current.shares.some((share) => share.index === x)) x++;
  return { index: x, content: Buffer.concat([randomBytes(32), Buffer.of(x)]).toString('base64') };
}

function corrupt(share: Share, at: number): Share {
  const bytes = Buffer.from(share.content, 'base64');
  bytes[at] = bytes[at]! ^ 0x5a;
  return { index: share.index, content: bytes.toString('base64') };
}

beforeAll(async () => {
  sealer = await startSealerProcess();
  client = await sealer.client();
  await rotate(3, 5);
});

afterAll(async () => {
  await sealer?.cleanup();
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe('recovery orders', () => {
  it('3-of-5: every ordered choice of 3 shares (60) recovers the key', async () => {
    const orders = arrangements(current.shares, 3);
    expect(orders).toHaveLength(60);
    for (const order of orders) await expectRecoversInOrder(order);
    expect((await client.rootKey()).id).toBe(current.id);
  });

  it('2-of-3: every order; 5-of-5: several orders; 2-of-2 both orders', async () => {
    await rotate(2, 3);
    for (const order of arrangements(current.shares, 2)) await expectRecoversInOrder(order);
    await rotate(5, 5);
    const all = arrangements(current.shares, 5);
    for (const order of [all[0]!, all[37]!, all[77]!, all[119]!]) await expectRecoversInOrder(order);
    await rotate(2, 2);
    for (const order of arrangements(current.shares, 2)) await expectRecoversInOrder(order);
    expect((await client.rootKey()).id).toBe(current.id);
  });

  it('more shares than the threshold are never needed: the sealer unseals at t', async () => {
    await rotate(3, 5);
    await expectRecoversInOrder(current.shares.slice(0, 3));
    const late = await kmsFailure(client.submitShare(current.shares[3]!));
    expect(late.code).toBe('CONFLICT');
  });
});

describe('bad shares never install a key', () => {
  beforeAll(async () => {
    await client.seal();
  });

  async function expectSealedWith(progress: number) {
    expect(await client.sealStatus()).toMatchObject({ sealed: true, progress, rootKeyId: current.id });
  }

  it.each([
    ['index 0 (x = 0)', (s: Share) => ({ index: 0, content: s.content }), 'out of range'],
    ['index 256', (s: Share) => ({ index: 256, content: s.content }), 'out of range'],
    ['index -1', (s: Share) => ({ index: -1, content: s.content }), 'out of range'],
    ['a fractional index', (s: Share) => ({ index: 1.5, content: s.content }), 'whole number'],
    ['a string index', (s: Share) => ({ index: String(s.index), content: s.content }) as unknown as Share, 'whole number'],
    ["an index that is not the share's x", (s: Share) => ({ index: (s.index % 255) + 1, content: s.content }), 'does not match'],
    [
      'a share whose x byte is 0',
      (s: Share) => ({ index: s.index, content: Buffer.concat([Buffer.from(s.content, 'base64').subarray(0, 32), Buffer.of(0)]).toString('base64') }),
      'does not match',
    ],
    ['32 bytes', (s: Share) => ({ index: s.index, content: Buffer.from(s.content, 'base64').subarray(1).toString('base64') }), '33 bytes'],
    ['34 bytes', (s: Share) => ({ index: s.index, content: Buffer.concat([Buffer.of(1), Buffer.from(s.content, 'base64')]).toString('base64') }), '33 bytes'],
    ['not base64', (s: Share) => ({ index: s.index, content: `${s.content.slice(0, -4)}!!!!` }), 'not valid base64'],
    ['empty content', (s: Share) => ({ index: s.index, content: '' }), 'base64 string'],
  ])('refuses %s at once with 400, progress unchanged', async (_label, mutate, message) => {
    await client.resetRecovery();
    await client.submitShare(current.shares[0]!);
    const error = await kmsFailure(client.submitShare(mutate(current.shares[1]!)));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toContain(message);
    await expectSealedWith(1);
  });

  it("refuses a recovery's sealed shares replayed after a seal, as captured on the way: the recovery key is made anew", async () => {
    await client.resetRecovery();
    const answer = await client.recoveryKey(randomBytes(32).toString('base64url'));
    const bodies = await Promise.all(current.shares.slice(0, current.t).map((share) => sealForRecovery({ recoveryKey: { ...answer.recoveryKey } }, share)));
    let last;
    for (const body of bodies) last = await client.submitShare(body);
    expect(last).toMatchObject({ sealed: false, rootKeyId: current.id });
    await client.seal();
    const replayed = await kmsFailure(client.submitShare(bodies[0]!));
    expect(replayed.code).toBe('BAD_REQUEST');
    expect(replayed.message).toContain("could not be decrypted with this sealing service's recovery key");
    await expectSealedWith(0);
    expect((await client.recoveryKey(randomBytes(32).toString('base64url'))).recoveryKey).not.toEqual(answer.recoveryKey);
  });

  it('refuses a duplicated index without losing progress', async () => {
    await client.resetRecovery();
    await client.submitShare(current.shares[0]!);
    await client.submitShare(current.shares[1]!);
    const again = await kmsFailure(client.submitShare(current.shares[1]!));
    expect(again.code).toBe('BAD_REQUEST');
    expect(again.message).toContain('already submitted');
    await expectSealedWith(2);
    const tampered = await kmsFailure(client.submitShare(corrupt(current.shares[0]!, 3)));
    expect(tampered.message).toContain('already submitted');
    expect(await client.submitShare(current.shares[2]!)).toMatchObject({ sealed: false, rootKeyId: current.id });
    await client.seal();
  });

  it.each([
    ['a corrupted share', () => [current.shares[0]!, corrupt(current.shares[1]!, 0), current.shares[2]!]],
    ['a random share', () => [current.shares[0]!, current.shares[1]!, randomShare()]],
  ])('refuses %s at the threshold: 400, progress reset, still sealed', async (_label, shares) => {
    await client.resetRecovery();
    const list = shares();
    for (const share of list.slice(0, -1)) await client.submitShare(share);
    const error = await kmsFailure(client.submitShare(list.at(-1)!));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toContain('progress was reset');
    await expectSealedWith(0);
    expect((await kmsFailure(client.rootKey())).code).toBe('SEALED');
  });

  it('refuses stale shares (of the previous root key, after verification)', async () => {
    const previous = current;
    await client.submitShare(previous.shares[0]!);
    await client.submitShare(previous.shares[1]!);
    await client.submitShare(previous.shares[2]!); // unsealed
    await rotate(3, 5);
    await client.seal();
    for (const share of previous.shares.slice(0, 2)) await client.submitShare(share);
    const stale = await kmsFailure(client.submitShare(previous.shares[2]!));
    expect(stale.code).toBe('BAD_REQUEST');
    await expectSealedWith(0);
  });

  it('too few shares leave it sealed; reset clears progress; then t good shares recover', async () => {
    await client.submitShare(current.shares[3]!);
    await client.submitShare(current.shares[4]!);
    await expectSealedWith(2);
    expect((await kmsFailure(client.rootKey())).details).toMatchObject({ sealed: true, progress: 2, t: 3 });
    expect(await client.resetRecovery()).toEqual({ sealed: true, progress: 0, t: 3 });
    await expectSealedWith(0);
    await expectRecoversInOrder([current.shares[4]!, current.shares[2]!, current.shares[0]!]);
  });

  it('serializes concurrent submissions: exactly one completes, later ones find it unsealed', async () => {
    await client.seal();
    const results = await Promise.allSettled(current.shares.map((share) => client.submitShare(share)));
    const ok = results.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<{ sealed: boolean; progress: number }>).value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as KmsError);
    expect(ok.filter((r) => !r.sealed)).toHaveLength(1);
    expect(
      ok
        .filter((r) => r.sealed)
        .map((r) => r.progress)
        .sort(),
    ).toEqual([1, 2]);
    expect(refused.map((e) => e.code)).toEqual(['CONFLICT', 'CONFLICT']);
    expect((await client.rootKey()).id).toBe(current.id);
  });
});

describe('recovery progress expiry', () => {
  let short: SealerProcess;
  let shortClient: SealerClient;

  beforeAll(async () => {
    short = await startSealerProcess({ env: { KMS_SEALER_RECOVERY_TTL_SECONDS: '1' } });
    shortClient = await short.client();
  });

  afterAll(async () => {
    await short?.cleanup();
  });

  it('discards shares received longer ago than the TTL', async () => {
    const { shares, rootKeyId: id } = await shortClient.installRootKey({ t: 3, n: 5, expectedCurrentId: null });
    shares.forEach((share) => secrets.addShare(share));
    await shortClient.seal();
    await shortClient.submitShare(shares[0]!);
    await shortClient.submitShare(shares[1]!);
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    expect(await shortClient.sealStatus()).toMatchObject({ sealed: true, progress: 0 });
    expect(await shortClient.submitShare(shares[2]!)).toEqual({ sealed: true, progress: 1, t: 3 });
    await shortClient.submitShare(shares[3]!);
    expect(await shortClient.submitShare(shares[4]!)).toMatchObject({ sealed: false, rootKeyId: id });
  });
});
