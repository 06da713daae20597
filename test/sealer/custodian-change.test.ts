/**
 * The operator with admin rights and no shares, as its adversary would act (docs/custodians.md,
 * "Changing custodians"; docs/sealer-protocol.md, "Shares encrypted to custodians"): a real
 * sealing-service process that allows plaintext shares (KMS_SEALER_PLAINTEXT_SHARES=allow, so that
 * nothing but the stored custodian keys keeps shares encrypted), driven by this test's own
 * protocol client (test/support/protocol-client.ts) attested as an identity granted "rotate".
 *
 * Once custodian keys are stored, a rotation that asks for another number of shares without naming
 * custodians is refused (400) and changes nothing: the admin call alone never turns the next shares
 * into plaintext, even with the current shares beside it. Naming the new custodians with the
 * threshold of the current shares is the way, and its shares go to the new keys.
 */
import { compactDecrypt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { attestedAdmin, custodians, isJwe, openShares, rebuild, type Custodian } from '../support/custodians.js';
import { adminRoutes, ProtocolClient, rootKeyIdOf, type Answer } from '../support/protocol-client.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';

const { rotate } = adminRoutes;
const secrets = new SecretRegistry();
let sealer: SealerProcess;
let admin: ProtocolClient;

async function sealStatus(): Promise<Record<string, unknown>> {
  const answer = await admin.send('GET', '/tee-kms/v1/seal-status');
  expect(answer.status, answer.text).toBe(200);
  return answer.json();
}

function sharesOf(answer: Answer): Share[] {
  expect(answer.status, answer.text).toBe(200);
  const { shares } = answer.json<{ shares: Share[] }>();
  for (const share of shares) secrets.addText(share.content);
  return shares;
}

beforeAll(async () => {
  sealer = await startSealerProcess({ env: { KMS_SEALER_PLAINTEXT_SHARES: 'allow' } });
  admin = await attestedAdmin(sealer, secrets);
});

afterAll(async () => {
  await sealer?.cleanup();
});

describe('custodian keys stored with the current root key', () => {
  let five: Custodian[];
  let currentId: string;
  let currentShares: Share[];
  let pendingId: string;

  it('initializes with five custodians (t=3): every share a JWE that only its custodian opens', async () => {
    five = await custodians(5);
    const answer = await admin.admin(rotate.method, rotate.path, {
      body: { t: 3, n: 5, expectedCurrentId: null, expectedPendingId: null, custodians: five.map((each) => each.jwk) },
    });
    const shares = sharesOf(answer);
    expect(shares.map((share) => isJwe(share.content))).toEqual([true, true, true, true, true]);
    currentShares = await openShares(
      shares,
      five.map((each) => each.privateKey),
      secrets,
    );
    currentId = rootKeyIdOf(await rebuild(currentShares.slice(0, 3)));
    expect(answer.json<{ rootKeyId: string }>().rootKeyId).toBe(currentId);
  });

  it('reuses them for a rotation of the same size that names none', async () => {
    const answer = await admin.admin(rotate.method, rotate.path, { body: { t: 3, n: 5, expectedCurrentId: currentId, expectedPendingId: null } });
    const shares = sharesOf(answer);
    expect(shares.map((share) => isJwe(share.content))).toEqual([true, true, true, true, true]);
    pendingId = answer.json<{ rootKeyId: string }>().rootKeyId;
    expect(await sealStatus()).toMatchObject({ rootKeyId: currentId, pendingRootKeyId: pendingId, t: 3, n: 5 });
  });

  it('refuses (400) a rotation to another number of shares that names no custodians: no share leaves in plaintext, nothing changes', async () => {
    const before = await sealStatus();
    for (const [t, n] of [
      [2, 4],
      [3, 6],
    ] as const) {
      const answer = await admin.admin(rotate.method, rotate.path, { body: { t, n, expectedCurrentId: currentId, expectedPendingId: pendingId } });
      expect(answer.status, answer.text).toBe(400);
      expect(answer.json<{ shares?: unknown }>().shares).toBeUndefined();
      expect(answer.json<{ detail: string }>().detail).toContain(`the stored custodian keys are 5, for ${n} shares`);
      expect(answer.json<{ detail: string }>().detail).toContain(`name ${n} custodian keys`);
      expect(answer.json<{ detail: string }>().detail).toContain('3 shares of the current root key');
    }
    // The current shares beside it do not make plaintext shares acceptable either: custodians must be named.
    const withShares = await admin.admin(rotate.method, rotate.path, {
      body: { t: 2, n: 4, expectedCurrentId: currentId, expectedPendingId: pendingId, currentShares: currentShares.slice(0, 3) },
    });
    expect(withShares.status, withShares.text).toBe(400);
    expect(withShares.json<{ shares?: unknown }>().shares).toBeUndefined();
    expect(await sealStatus()).toEqual(before);
  });

  it('rotates to four new custodians (t=2) named with three current shares: their shares go to the new keys only', async () => {
    const four = await custodians(4);
    const answer = await admin.admin(rotate.method, rotate.path, {
      body: {
        t: 2,
        n: 4,
        expectedCurrentId: currentId,
        expectedPendingId: pendingId,
        custodians: four.map((each) => each.jwk),
        currentShares: currentShares.slice(1, 4),
      },
    });
    const shares = sharesOf(answer);
    expect(shares.map((share) => isJwe(share.content))).toEqual([true, true, true, true]);
    const next = await openShares(
      shares,
      four.map((each) => each.privateKey),
      secrets,
    );
    const nextId = answer.json<{ rootKeyId: string }>().rootKeyId;
    expect(rootKeyIdOf(await rebuild(next.slice(2, 4)))).toBe(nextId);
    await expect(compactDecrypt(shares[0]!.content, five[0]!.privateKey)).rejects.toThrow();
    expect(await sealStatus()).toMatchObject({ rootKeyId: currentId, pendingRootKeyId: nextId, t: 3, n: 5 });
  });

  it('logs no share, token or key', async () => {
    await sealer.settle();
    for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
  });
});
