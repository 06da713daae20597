/**
 * Whoever relays the shares of a verification or of a change of custodians (the operator who
 * collects the custodians' bodies, docs/custodians.md step 4; the ingress on the way) keeps copies
 * of them, sealed to the recovery key. As that adversary, with the test's own protocol client and
 * jose: a real sealing-service process without a pin that refuses plaintext shares, so that the
 * sealed bodies are all an adversary ever sees. Sent again, to verify or to name custodians of the
 * adversary's own, they no longer open: the recovery key is made anew once shares sealed to it were
 * used, whatever came of it. Without that, a verification's bodies, once their key was current,
 * authorized a rotation to the operator's keys, and the operator read every new share.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { attestedAdmin, custodians, openShares, recoveryKeyAnswer, sealForRecovery, type Custodian } from '../support/custodians.js';
import { adminRoutes, ProtocolClient, type Answer } from '../support/protocol-client.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';

const { rotate, verify } = adminRoutes;
const secrets = new SecretRegistry();
let sealer: SealerProcess;
let admin: ProtocolClient;
let three: Custodian[];
let operators: Custodian[];

async function sealStatus(): Promise<Record<string, unknown>> {
  const answer = await admin.send('GET', '/tee-kms/v1/seal-status');
  expect(answer.status, answer.text).toBe(200);
  return answer.json();
}

/** The plaintext shares of a rotate's answer, as their custodians open them. */
async function opened(answer: Answer, holders: readonly Custodian[]): Promise<Share[]> {
  expect(answer.status, answer.text).toBe(200);
  return openShares(
    answer.json<{ shares: Share[] }>().shares,
    holders.map((each) => each.privateKey),
    secrets,
  );
}

/** Each custodian's body: its share sealed to the recovery key that the sealing service answers now. */
async function bodies(shares: readonly Share[]): Promise<Share[]> {
  const answer = await recoveryKeyAnswer(admin);
  return Promise.all(shares.map((share) => sealForRecovery(answer, share)));
}

/** A rotation that names `holders` as custodians, with `shares` as the current shares. */
function rotateTo(
  holders: readonly Custodian[],
  shares: readonly Share[] | undefined,
  expected: { current: string | null; pending: string | null },
): Promise<Answer> {
  return admin.admin(rotate.method, rotate.path, {
    body: {
      t: 2,
      n: 3,
      expectedCurrentId: expected.current,
      expectedPendingId: expected.pending,
      custodians: holders.map((each) => each.jwk),
      ...(shares === undefined ? {} : { currentShares: shares }),
    },
  });
}

function expectUndecryptable(answer: Answer): void {
  expect(answer.status, answer.text).toBe(400);
  expect(answer.json<{ shares?: unknown }>().shares).toBeUndefined();
  expect(answer.json<{ detail: string }>().detail).toContain("could not be decrypted with this sealing service's recovery key");
}

beforeAll(async () => {
  sealer = await startSealerProcess({ env: { KMS_SEALER_PLAINTEXT_SHARES: 'refuse' } });
  admin = await attestedAdmin(sealer, secrets);
  [three, operators] = await Promise.all([custodians(3), custodians(3)]);
});

afterAll(async () => {
  await sealer?.cleanup();
});

describe('shares sealed to the recovery key, sent again by whoever relayed them', () => {
  let currentId: string;
  let current: Share[];

  it('a verification: its bodies, once its key is current, do not authorize custodians of the operator', async () => {
    const first = await rotateTo(three, undefined, { current: null, pending: null });
    currentId = first.json<{ rootKeyId: string }>().rootKeyId;
    const next = await rotateTo(three, undefined, { current: currentId, pending: null });
    const pendingId = next.json<{ rootKeyId: string }>().rootKeyId;
    const pendingShares = await opened(next, three);

    const collected = await bodies(pendingShares.slice(0, 2));
    const verified = await admin.admin(verify.method, verify.path, { body: { shares: collected } });
    expect(verified.status, verified.text).toBe(200);
    expect(verified.json()).toMatchObject({ rootKeyId: pendingId, promoted: true });
    currentId = pendingId;
    current = pendingShares;

    const before = await sealStatus();
    expectUndecryptable(await rotateTo(operators, collected, { current: currentId, pending: null }));
    expect(await sealStatus()).toEqual(before);
  });

  it("a change of custodians: its current shares do not name other custodians in the new ones' place", async () => {
    const authorization = await bodies(current.slice(1, 3));
    const changed = await rotateTo(await custodians(3), authorization, { current: currentId, pending: null });
    expect(changed.status, changed.text).toBe(200);
    const pendingId = changed.json<{ rootKeyId: string }>().rootKeyId;

    const before = await sealStatus();
    expect(before).toMatchObject({ rootKeyId: currentId, pendingRootKeyId: pendingId });
    expectUndecryptable(await rotateTo(operators, authorization, { current: currentId, pending: pendingId }));
    expect(await sealStatus()).toEqual(before);
  });

  it('a verification that failed: its bodies are spent too, the good ones with the bad', async () => {
    const [good, other] = await bodies(current.slice(0, 2));
    const wrong = (await bodies([{ index: 3, content: Buffer.alloc(33, 7).toString('base64') }]))[0]!;
    const failed = await admin.admin(verify.method, verify.path, { body: { shares: [good, wrong] } });
    expect(failed.status, failed.text).toBe(400);
    expectUndecryptable(await admin.admin(verify.method, verify.path, { body: { shares: [good, other] } }));
    // Sealed again to the new recovery key, the same shares open: they rebuild the current key.
    const fresh = await admin.admin(verify.method, verify.path, { body: { shares: await bodies(current.slice(0, 2)) } });
    expect(fresh.status, fresh.text).toBe(400);
    expect(fresh.json<{ detail: string }>().detail).toContain('these shares rebuild the current root key, not the new one');
  });

  it('shares that a rotation does not need are refused, not ignored: 400, nothing rotated', async () => {
    const before = await sealStatus();
    const pending = before['pendingRootKeyId'] as string;
    const junk = [{ index: 1, content: 'a.b.c.d.e' }];
    // The stored custodians again: no shares are taken.
    const same = await rotateTo(three, junk, { current: currentId, pending });
    expect(same.status, same.text).toBe(400);
    expect(same.json<{ detail: string }>().detail).toContain("already hold the current root key's shares");
    // No custodians named: the shares would authorize nothing.
    const none = await admin.admin(rotate.method, rotate.path, {
      body: { t: 2, n: 3, expectedCurrentId: currentId, expectedPendingId: pending, currentShares: junk },
    });
    expect(none.status, none.text).toBe(400);
    expect(none.json<{ detail: string }>().detail).toContain('shares go with custodians');
    expect(await sealStatus()).toEqual(before);
  });

  it('logs no share, token or key', async () => {
    await sealer.settle();
    for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
  });
});
