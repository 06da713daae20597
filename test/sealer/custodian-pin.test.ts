/**
 * Pinned custodians (KMS_SEALER_CUSTODIANS and KMS_SEALER_CUSTODIANS_THRESHOLD; docs/custodians.md,
 * "Pinning the custodians"), as their adversaries would act: a real sealing-service process that
 * allows plaintext shares (KMS_SEALER_PLAINTEXT_SHARES=allow, so that nothing but the pin keeps
 * shares encrypted), driven by this test's own protocol client (test/support/protocol-client.ts)
 * attested as an identity granted "rotate". Thumbprints are computed here with jose, not with the
 * project's code.
 *
 * The relay of the first rotate (the ingress, a port-forward's node) cannot seal it, so it can
 * rewrite its `custodians`: with the pin, a first rotate naming other keys is refused and the
 * service stays uninitialized. The admin token alone, even with the current shares, cannot name
 * other keys later either, nor can whoever sets the rotating function's KMS_THRESHOLD lower the
 * threshold. The pinned keys work, and their shares open only with them.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compactDecrypt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { storeRootKeyLink } from '../../shared/root-key/links.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { attestedAdmin, custodians, isJwe, openShares, rebuild, recoveryKeyAnswer, sealForRecovery, type Custodian } from '../support/custodians.js';
import { adminRoutes, ProtocolClient, rootKeyIdOf, type Answer } from '../support/protocol-client.js';
import { allLogs, makeShares, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';

const { rotate } = adminRoutes;
const secrets = new SecretRegistry();
let sealer: SealerProcess;
let admin: ProtocolClient;

async function sealStatusOf(client: ProtocolClient): Promise<Record<string, unknown>> {
  const answer = await client.send('GET', '/tee-kms/v1/seal-status');
  expect(answer.status, answer.text).toBe(200);
  return answer.json();
}

const sealStatus = () => sealStatusOf(admin);

/** Share i sealed by custodian i with its recovery challenge, each submitted and accepted; the answers. */
async function recoverWith(client: ProtocolClient, shares: readonly Share[], by: readonly Custodian[]): Promise<Answer[]> {
  const answer = await recoveryKeyAnswer(client);
  const answers: Answer[] = [];
  for (const [i, share] of shares.entries()) {
    const each = await client.admin(adminRoutes.recoveryShares.method, adminRoutes.recoveryShares.path, { body: await sealForRecovery(answer, share, by[i]) });
    expect(each.status, each.text).toBe(200);
    answers.push(each);
  }
  return answers;
}

function refused(answer: Answer, detail: string): void {
  expect(answer.status, answer.text).toBe(400);
  expect(answer.json<{ shares?: unknown }>().shares).toBeUndefined();
  expect(answer.json<{ detail: string }>().detail).toContain(detail);
  expect(answer.json<{ detail: string }>().detail).toContain('nothing was changed');
}

let pinned: Custodian[];
let relay: Custodian[];

/** A sealer that allows plaintext shares (so that only the pin keeps them encrypted), its custodians `pinned` with this threshold. */
const pinnedEnv = (threshold: string) => ({
  KMS_SEALER_PLAINTEXT_SHARES: 'allow',
  KMS_SEALER_CUSTODIANS: pinned.map((each) => each.thumbprint).join(','),
  KMS_SEALER_CUSTODIANS_THRESHOLD: threshold,
});

beforeAll(async () => {
  pinned = await custodians(3);
  relay = await custodians(3);
  sealer = await startSealerProcess({
    env: pinnedEnv('3'),
  });
  admin = await attestedAdmin(sealer, secrets);
});

afterAll(async () => {
  await sealer?.cleanup();
});

describe('KMS_SEALER_CUSTODIANS', () => {
  let currentId: string;
  let currentShares: Share[];

  it('refuses a first rotate whose custodians a relay replaced: the service stays uninitialized, no share leaves', async () => {
    const first = { t: 3, n: 3, expectedCurrentId: null, expectedPendingId: null };
    // Every key replaced, as a relay that wants every share would.
    refused(await admin.admin(rotate.method, rotate.path, { body: { ...first, custodians: relay.map((each) => each.jwk) } }), 'custodians[0] is not the key');
    // One key replaced: the index names it.
    const one = [pinned[0]!, relay[1]!, pinned[2]!];
    refused(await admin.admin(rotate.method, rotate.path, { body: { ...first, custodians: one.map((each) => each.jwk) } }), 'custodians[1] is not the key');
    // The pinned keys in another order: share order is pinned too.
    const swapped = [pinned[1]!, pinned[0]!, pinned[2]!];
    refused(await admin.admin(rotate.method, rotate.path, { body: { ...first, custodians: swapped.map((each) => each.jwk) } }), 'custodians[0] is not the key');
    // Custodians removed: shares would leave in plaintext (allowed here but for the pin).
    refused(await admin.admin(rotate.method, rotate.path, { body: first }), 'no share leaves in plaintext');
    // A fourth share to a key of the relay's, beside the pinned three.
    const four = [...pinned, relay[0]!].map((each) => each.jwk);
    refused(await admin.admin(rotate.method, rotate.path, { body: { ...first, n: 4, custodians: four } }), 'n must be 3, not 4');
    // The pinned keys, but fewer of them needed (whoever sets the rotating function's KMS_THRESHOLD).
    const lowered = { ...first, t: 2, custodians: pinned.map((each) => each.jwk) };
    refused(await admin.admin(rotate.method, rotate.path, { body: lowered }), 'KMS_SEALER_CUSTODIANS_THRESHOLD pins the threshold: t must be 3, not 2');
    expect(await sealStatus()).toMatchObject({ initialized: false, rootKeyId: null });
  });

  it('initializes with the pinned keys, logged at start: each share opens with its custodian only', async () => {
    const thumbprints = pinned.map((each) => each.thumbprint).join(',');
    expect(sealer.lines().some((line) => line.thumbprints === thumbprints)).toBe(true);
    const answer = await admin.admin(rotate.method, rotate.path, {
      body: { t: 3, n: 3, expectedCurrentId: null, expectedPendingId: null, custodians: pinned.map((each) => each.jwk) },
    });
    expect(answer.status, answer.text).toBe(200);
    const { shares, rootKeyId } = answer.json<{ shares: Share[]; rootKeyId: string }>();
    for (const share of shares) secrets.addText(share.content);
    expect(shares.map((share) => isJwe(share.content))).toEqual([true, true, true]);
    for (const [i, share] of shares.entries())
      for (const other of [...relay, ...pinned.filter((_, j) => j !== i)]) await expect(compactDecrypt(share.content, other.privateKey)).rejects.toThrow();
    currentShares = await openShares(
      shares,
      pinned.map((each) => each.privateKey),
      secrets,
    );
    currentId = rootKeyIdOf(await rebuild(currentShares.slice(0, 3)));
    expect(rootKeyId).toBe(currentId);
    expect(await sealStatus()).toMatchObject({ initialized: true, rootKeyId: currentId, t: 3, n: 3 });
  });

  it('later: other keys are refused even with the current shares; a rotate naming none uses the stored (pinned) keys', async () => {
    const next = { t: 3, n: 3, expectedCurrentId: currentId, expectedPendingId: null };
    const withShares = await admin.admin(rotate.method, rotate.path, {
      body: { ...next, custodians: relay.map((each) => each.jwk), currentShares: currentShares.slice(0, 3) },
    });
    refused(withShares, 'custodians[0] is not the key');
    const lowered = await admin.admin(rotate.method, rotate.path, {
      body: { ...next, t: 2, custodians: pinned.map((each) => each.jwk), currentShares: currentShares.slice(0, 3) },
    });
    refused(lowered, 't must be 3, not 2');
    expect(await sealStatus()).toMatchObject({ rootKeyId: currentId, pendingRootKeyId: null });
    const answer = await admin.admin(rotate.method, rotate.path, { body: next });
    expect(answer.status, answer.text).toBe(200);
    const { shares } = answer.json<{ shares: Share[] }>();
    for (const share of shares) secrets.addText(share.content);
    expect(shares.map((share) => isJwe(share.content))).toEqual([true, true, true]);
    await expect(compactDecrypt(shares[2]!.content, pinned[2]!.privateKey)).resolves.toBeDefined();
  });

  it('refuses the stored keys once the pin names others, and a start with a bad pin or threshold names the variable', async () => {
    sealer.env.KMS_SEALER_CUSTODIANS = relay.map((each) => each.thumbprint).join(',');
    await sealer.restart();
    admin = await attestedAdmin(sealer, secrets);
    const status = await sealStatus();
    const answer = await admin.admin(rotate.method, rotate.path, {
      body: { t: 3, n: 3, expectedCurrentId: currentId, expectedPendingId: status.pendingRootKeyId },
    });
    refused(answer, 'the stored custodian key 0 is not the one KMS_SEALER_CUSTODIANS pins');
    expect(await sealStatus()).toEqual(status);

    for (const value of [
      pinned[0]!.thumbprint,
      `${pinned[0]!.thumbprint},${pinned[0]!.thumbprint}`,
      `${pinned[0]!.thumbprint},abc`,
      `${pinned[0]!.thumbprint},`,
    ]) {
      await expect(startSealerProcess({ env: { KMS_SEALER_CUSTODIANS: value, KMS_SEALER_CUSTODIANS_THRESHOLD: '2' } })).rejects.toThrow(
        /cannot start: CONFIG: KMS_SEALER_CUSTODIANS/,
      );
    }
    const two = `${pinned[0]!.thumbprint},${pinned[1]!.thumbprint}`;
    const other = `${relay[0]!.thumbprint},${relay[1]!.thumbprint}`;
    const pin2 = { KMS_SEALER_CUSTODIANS: two, KMS_SEALER_CUSTODIANS_THRESHOLD: '2' };
    for (const [env, message] of [
      [{ KMS_SEALER_CUSTODIANS: two }, 'KMS_SEALER_CUSTODIANS needs KMS_SEALER_CUSTODIANS_THRESHOLD'],
      [{ KMS_SEALER_CUSTODIANS_THRESHOLD: '2' }, 'KMS_SEALER_CUSTODIANS_THRESHOLD is set without KMS_SEALER_CUSTODIANS'],
      [{ KMS_SEALER_CUSTODIANS: two, KMS_SEALER_CUSTODIANS_THRESHOLD: '3' }, 'KMS_SEALER_CUSTODIANS_THRESHOLD (3) exceeds the 2 custodians'],
      [{ KMS_SEALER_CUSTODIANS: two, KMS_SEALER_CUSTODIANS_THRESHOLD: '1' }, 'KMS_SEALER_CUSTODIANS_THRESHOLD'],
      [{ KMS_SEALER_CUSTODIANS: two, KMS_SEALER_CUSTODIANS_THRESHOLD: 'two' }, 'KMS_SEALER_CUSTODIANS_THRESHOLD'],
      [
        { KMS_SEALER_CUSTODIANS_PREVIOUS: two, KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD: '2' },
        'KMS_SEALER_CUSTODIANS_PREVIOUS names the custodians a change replaces',
      ],
      [{ ...pin2, KMS_SEALER_CUSTODIANS_PREVIOUS: other }, 'KMS_SEALER_CUSTODIANS_PREVIOUS needs KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD'],
      [{ ...pin2, KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD: '2' }, 'KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD is set without KMS_SEALER_CUSTODIANS_PREVIOUS'],
      [
        { ...pin2, KMS_SEALER_CUSTODIANS_PREVIOUS: other, KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD: '3' },
        'KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD (3) exceeds the 2',
      ],
      [
        { ...pin2, KMS_SEALER_CUSTODIANS_PREVIOUS: two, KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD: '2' },
        'KMS_SEALER_CUSTODIANS_PREVIOUS and its threshold are the pinned custodians and threshold: that is no change',
      ],
    ] as const) {
      await expect(startSealerProcess({ env })).rejects.toThrow(`cannot start: CONFIG: ${message}`);
    }
  });

  it('logs no share, token or key', async () => {
    await sealer.settle();
    for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
  });
});

describe('KMS_SEALER_CUSTODIANS_THRESHOLD raised while a promotion was under way', () => {
  // A promotion verified under the old pin stores its link (retiring the current key) before it
  // replaces the record: one interrupted there is completed by the new key's shares, the only key
  // left, and the sealer says that its shares are not as pinned.
  let sealer2: SealerProcess;
  afterAll(async () => {
    await sealer2?.cleanup();
  });

  it('is completed, and named as not pinned', async () => {
    const env = pinnedEnv;
    sealer2 = await startSealerProcess({ env: env('2') });
    let client = await attestedAdmin(sealer2, secrets);
    const privateKeys = pinned.map((each) => each.privateKey);
    const keys = pinned.map((each) => each.jwk);
    const first = await client.admin(rotate.method, rotate.path, { body: { t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null, custodians: keys } });
    expect(first.status, first.text).toBe(200);
    const currentId = first.json<{ rootKeyId: string }>().rootKeyId;
    const next = await client.admin(rotate.method, rotate.path, { body: { t: 2, n: 3, expectedCurrentId: currentId, expectedPendingId: null } });
    expect(next.status, next.text).toBe(200);
    const pendingId = next.json<{ rootKeyId: string }>().rootKeyId;
    const opened = async (answer: Answer) => {
      const shares = answer.json<{ shares: Share[] }>().shares;
      for (const share of shares) secrets.addText(share.content);
      return openShares(shares, privateKeys, secrets);
    };
    const [currentShares, pendingShares] = [await opened(first), await opened(next)];
    // Interrupted after the link, before the record: as the promotion writes it.
    const keyOf = async (shares: Share[]) => {
      const key = Buffer.from(await rebuild(shares.slice(0, 2)));
      secrets.add(key);
      return key;
    };
    await storeRootKeyLink(
      new FsObjectStore(sealer2.dataDir),
      { id: currentId, key: await keyOf(currentShares) },
      { id: pendingId, key: await keyOf(pendingShares) },
    );
    Object.assign(sealer2.env, env('3'));
    await sealer2.restart();
    client = await attestedAdmin(sealer2, secrets);
    // Its shares were made 2 of 3, but a recovery now takes the challenges of 3 pinned custodians.
    await recoverWith(client, pendingShares, pinned);
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: pendingId, pendingRootKeyId: null, t: 2, n: 3 });
    await sealer2.settle();
    expect(sealer2.messages().some((m) => m.includes(`the current root key ${pendingId} was made with t=2, n=3`))).toBe(true);
  });
});

describe('KMS_SEALER_CUSTODIANS_THRESHOLD raised with a rotation pending', () => {
  // A rotation made under the old pin (2 of 3): its shares exist as they were made, so verifying
  // them must not make that key current under the new pin (3 of 3).
  let old: SealerProcess;
  let client: ProtocolClient;
  const env = pinnedEnv;
  const { verify } = adminRoutes;

  afterAll(async () => {
    await old?.cleanup();
  });

  it('is not promoted by its shares, is named at start, and a rotation as pinned replaces it', async () => {
    old = await startSealerProcess({ env: env('2') });
    client = await attestedAdmin(old, secrets);
    const keys = pinned.map((each) => each.jwk);
    const privateKeys = pinned.map((each) => each.privateKey);
    const first = await client.admin(rotate.method, rotate.path, { body: { t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null, custodians: keys } });
    expect(first.status, first.text).toBe(200);
    const currentId = first.json<{ rootKeyId: string }>().rootKeyId;
    for (const share of first.json<{ shares: Share[] }>().shares) secrets.addText(share.content);
    const currentShares = await openShares(first.json<{ shares: Share[] }>().shares, privateKeys, secrets);
    const next = await client.admin(rotate.method, rotate.path, { body: { t: 2, n: 3, expectedCurrentId: currentId, expectedPendingId: null } });
    expect(next.status, next.text).toBe(200);
    const pendingId = next.json<{ rootKeyId: string }>().rootKeyId;
    for (const share of next.json<{ shares: Share[] }>().shares) secrets.addText(share.content);
    const pendingShares = await openShares(next.json<{ shares: Share[] }>().shares, privateKeys, secrets);

    Object.assign(old.env, env('3'));
    await old.restart();
    client = await attestedAdmin(old, secrets);
    const messages = old.messages();
    expect(messages.some((m) => m.includes(`the current root key ${currentId} was made with t=2, n=3`))).toBe(true);
    expect(messages.some((m) => m.includes(`the pending root key ${pendingId} was made with t=2, n=3`))).toBe(true);
    // The current key's shares unseal it, each with its custodian's challenge: 3 now, as pinned, though 2 were made enough for it.
    const progress = await recoverWith(client, currentShares, pinned);
    // Progress counts to the pinned threshold, not to the key's own t.
    expect(progress.map((each) => each.json<{ sealed: boolean; t: number }>())).toMatchObject([
      { sealed: true, t: 3 },
      { sealed: true, t: 3 },
      { sealed: false },
    ]);
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: currentId, pendingRootKeyId: pendingId });
    // 2 of the pending key's shares: it is not made current, and nothing changes.
    const refused = await client.admin(verify.method, verify.path, { body: { shares: pendingShares.slice(0, 2) } });
    expect(refused.status, refused.text).toBe(409);
    expect(refused.json<{ detail: string }>().detail).toContain(`the new root key ${pendingId} was made with t=2, n=3`);
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: currentId, pendingRootKeyId: pendingId, t: 2 });
    // A rotation as pinned replaces it, and its 3 shares make it current.
    const pinnedRotation = await client.admin(rotate.method, rotate.path, { body: { t: 3, n: 3, expectedCurrentId: currentId, expectedPendingId: pendingId } });
    expect(pinnedRotation.status, pinnedRotation.text).toBe(200);
    for (const share of pinnedRotation.json<{ shares: Share[] }>().shares) secrets.addText(share.content);
    const newShares = await openShares(pinnedRotation.json<{ shares: Share[] }>().shares, privateKeys, secrets);
    const promoted = await client.admin(verify.method, verify.path, { body: { shares: newShares } });
    expect(promoted.status, promoted.text).toBe(200);
    expect(await sealStatusOf(client)).toMatchObject({ rootKeyId: pinnedRotation.json<{ rootKeyId: string }>().rootKeyId, pendingRootKeyId: null, t: 3, n: 3 });
  });
});

describe("recovery challenges: the cluster administrator's own root key through emptied storage", () => {
  // docs/root-key.md ("Whoever can write storage"): storage that holds no key record is a fresh
  // start, so whoever writes it and restarts the sealing service can write a state record naming a
  // root key of their own (authentic under it) and naming the pinned custodians' public keys. With
  // pinned custodians, a share counts only with the recovery challenge given to a pinned
  // custodian, encrypted to that custodian's key, so shares of their own key recover nothing.
  // Plaintext shares are allowed on this sealer, so that nothing but the challenges stands in the way.
  let target: SealerProcess;
  let client: ProtocolClient;
  let realId: string;
  let real: Share[];
  const statePath = () => join(target.dataDir, 'objects', 'sealer', 'state.json');
  const submit = (share: Share) => client.admin(adminRoutes.recoveryShares.method, adminRoutes.recoveryShares.path, { body: share });
  const bad = (answer: Answer, detail: string) => {
    expect(answer.status, answer.text).toBe(400);
    expect(answer.json<{ detail: string }>().detail).toContain(detail);
  };

  afterAll(async () => {
    await target?.cleanup();
  });

  it("refuses shares without a pinned custodian's challenge, counts each custodian once, and recovers with the real custodians", async () => {
    target = await startSealerProcess({ env: pinnedEnv('2') });
    client = await attestedAdmin(target, secrets);
    const first = await client.admin(rotate.method, rotate.path, {
      body: { t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null, custodians: pinned.map((each) => each.jwk) },
    });
    expect(first.status, first.text).toBe(200);
    realId = first.json<{ rootKeyId: string }>().rootKeyId;
    for (const share of first.json<{ shares: Share[] }>().shares) secrets.addText(share.content);
    real = await openShares(
      first.json<{ shares: Share[] }>().shares,
      pinned.map((each) => each.privateKey),
      secrets,
    );
    const realRecord = await readFile(statePath(), 'utf8');

    // The administrator's key, its shares, and a record naming it and the pinned keys, authentic under it.
    const attackerKey = randomBytes(32);
    secrets.add(attackerKey);
    const attackerShares = await makeShares(attackerKey, 3, 2);
    attackerShares.forEach((share) => secrets.addShare(share));
    const { sealState } = await import('../../sealer/state-record.js');
    const { parseCustodianKeys } = await import('../../shared/custody/share-jwe.js');
    const forged = sealState(
      { generation: 1, current: { id: rootKeyId(attackerKey), t: 2, n: 3, custodians: parseCustodianKeys(pinned.map((each) => each.jwk)) }, pending: null },
      attackerKey,
    );
    await target.stop('SIGKILL');
    await writeFile(statePath(), JSON.stringify({ ...JSON.parse(realRecord), ...forged }));
    await target.restart();
    client = await attestedAdmin(target, secrets);
    expect(await sealStatusOf(client)).toMatchObject({ sealed: true, rootKeyId: rootKeyId(attackerKey) });

    const answer = await recoveryKeyAnswer(client);
    // Challenges go to the pinned keys only, encrypted: nobody but each custodian reads one.
    expect(Object.keys(answer.challenges ?? {}).sort()).toEqual(pinned.map((each) => each.thumbprint).sort());
    for (const jwe of Object.values(answer.challenges!)) expect(isJwe(jwe)).toBe(true);
    // A challenge is as good as a custodian's consent: none may reach a log.
    for (const each of pinned)
      secrets.addText(Buffer.from((await compactDecrypt(answer.challenges![each.thumbprint]!, each.privateKey)).plaintext).toString('utf8'));

    // Plaintext, sealed without a challenge, with one made up: none counts.
    bad(await submit(attackerShares[0]!), 'pins its custodians');
    bad(await submit(await sealForRecovery(answer, attackerShares[0]!)), 'pins its custodians');
    bad(
      await submit(await sealForRecovery(answer, attackerShares[0]!, undefined, { challenge: randomBytes(32).toString('base64url') })),
      'answers no recovery challenge',
    );
    // One custodian colludes, and hands over its challenge: it counts once, and one is below the pinned threshold.
    const colluding = pinned[0]!;
    expect((await submit(await sealForRecovery(answer, attackerShares[0]!, colluding))).status).toBe(200);
    bad(await submit(await sealForRecovery(answer, attackerShares[1]!, colluding)), 'already submitted a share');
    bad(await submit(await sealForRecovery(answer, attackerShares[1]!)), 'pins its custodians');
    expect(await sealStatusOf(client)).toMatchObject({ sealed: true, progress: 1 });
    // A challenge from before a restart is not one any more.
    await client.admin(adminRoutes.recoveryReset.method, adminRoutes.recoveryReset.path);
    await target.restart();
    client = await attestedAdmin(target, secrets);
    const fresh = await recoveryKeyAnswer(client);
    const stale = await sealForRecovery(answer, attackerShares[0]!, pinned[1]);
    const { plaintext } = await compactDecrypt(answer.challenges![pinned[1]!.thumbprint]!, pinned[1]!.privateKey);
    const staleChallenge = Buffer.from(plaintext).toString('utf8');
    bad(await submit(await sealForRecovery(fresh, attackerShares[0]!, undefined, { challenge: staleChallenge })), 'answers no recovery challenge');
    bad(await submit(stale), 'could not be decrypted');
    expect(await sealStatusOf(client)).toMatchObject({ sealed: true, progress: 0 });

    // The real record back: two real custodians, each with its own challenge, recover the real key.
    await target.stop('SIGKILL');
    await writeFile(statePath(), realRecord);
    await target.restart();
    client = await attestedAdmin(target, secrets);
    const round = await recoveryKeyAnswer(client);
    const bodies = await Promise.all(real.slice(1).map((share, i) => sealForRecovery(round, share, pinned[i + 1])));
    for (const body of bodies) expect((await submit(body)).status).toBe(200);
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: realId });

    // Sealed again by the operator: the round's sealed shares, captured at the ingress, no longer count.
    const sealed = await client.admin(adminRoutes.seal.method, adminRoutes.seal.path);
    expect(sealed.status, sealed.text).toBe(200);
    for (const body of bodies) bad(await submit(body), 'could not be decrypted');
    expect(await sealStatusOf(client)).toMatchObject({ sealed: true, progress: 0 });
    await recoverWith(client, real.slice(1), pinned.slice(1));
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: realId });
  });

  it("takes the previous custodians' shares during a change of custodians only where KMS_SEALER_CUSTODIANS_PREVIOUS names them", async () => {
    const next = await custodians(3);
    const nextPin = { KMS_SEALER_CUSTODIANS: next.map((each) => each.thumbprint).join(','), KMS_SEALER_CUSTODIANS_THRESHOLD: '2' };
    // Installed again with the new custodians pinned: the current key's shares are still the previous custodians'.
    Object.assign(target.env, nextPin);
    await target.restart();
    client = await attestedAdmin(target, secrets);
    const unpinned = await recoveryKeyAnswer(client);
    expect(unpinned.challenges).toEqual({});
    await target.settle();
    expect(target.messages().some((m) => m.includes(`the current root key ${realId} has too few shares held by custodians that KMS_SEALER_CUSTODIANS`))).toBe(
      true,
    );
    bad(await submit(await sealForRecovery(unpinned, real[0]!)), 'pins its custodians');

    Object.assign(target.env, {
      KMS_SEALER_CUSTODIANS_PREVIOUS: pinned.map((each) => each.thumbprint).join(','),
      KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD: '2',
    });
    await target.restart();
    client = await attestedAdmin(target, secrets);
    await recoverWith(client, real.slice(0, 2), pinned.slice(0, 2));
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: realId });

    // The change of custodians itself: the new keys, with the current shares, then their own shares verified.
    const shares = await Promise.all(real.slice(0, 2).map(async (share) => sealForRecovery(await recoveryKeyAnswer(client), share)));
    const changed = await client.admin(rotate.method, rotate.path, {
      body: { t: 2, n: 3, expectedCurrentId: realId, expectedPendingId: null, custodians: next.map((each) => each.jwk), currentShares: shares },
    });
    expect(changed.status, changed.text).toBe(200);
    for (const share of changed.json<{ shares: Share[] }>().shares) secrets.addText(share.content);
    const nextShares = await openShares(
      changed.json<{ shares: Share[] }>().shares,
      next.map((each) => each.privateKey),
      secrets,
    );
    // Restarted before the verification, the two groups send in one round: a new custodian's share
    // (of the pending key) first, then two previous ones' (of the current key). Rebuilt apart, the
    // current key's shares unseal it; rebuilt together, the round would fail.
    await target.restart();
    client = await attestedAdmin(target, secrets);
    const mixed = await recoveryKeyAnswer(client);
    const round = [
      await sealForRecovery(mixed, nextShares[0]!, next[0]),
      await sealForRecovery(mixed, real[0]!, pinned[0]),
      await sealForRecovery(mixed, real[1]!, pinned[1]),
    ];
    const answers = [];
    for (const body of round) answers.push((await submit(body)).json<{ sealed: boolean; rootKeyId?: string }>());
    expect(answers).toMatchObject([{ sealed: true }, { sealed: true }, { sealed: false, rootKeyId: realId }]);

    const verified = await client.admin(adminRoutes.verify.method, adminRoutes.verify.path, { body: { shares: nextShares.slice(0, 2) } });
    expect(verified.status, verified.text).toBe(200);

    // From here the new custodians recover it, and the previous ones' retired shares do not.
    await target.restart();
    client = await attestedAdmin(target, secrets);
    const answer = await recoveryKeyAnswer(client);
    expect(Object.keys(answer.challenges ?? {}).sort()).toEqual(next.map((each) => each.thumbprint).sort());
    await recoverWith(client, nextShares.slice(1), next.slice(1));
    expect(await sealStatusOf(client)).toMatchObject({ sealed: false, rootKeyId: changed.json<{ rootKeyId: string }>().rootKeyId });
  });

  it('logs no challenge, share, token or key', async () => {
    await target.settle();
    for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
  });
});
