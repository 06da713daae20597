import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { findSecrets, readFsObjects } from '../support/storage-snapshot.js';

const ADMIN = `admin-${randomBytes(8).toString('hex')}`;
const admin = { authorization: `Bearer ${ADMIN}` };
const json = { accept: 'application/json' };

/** A sealing service process and function processes (lean host) that pull the root key from it. */
interface Cluster {
  readonly sealer: SealerProcess;
  readonly storeEnv: Record<string, string>;
  readonly dataDir: string;
  /** Every stored object (or those under `prefix`), read independently of the KMS. */
  snapshot(prefix?: string): Promise<Map<string, Buffer>>;
  kms(extraEnv?: Record<string, string>): Promise<ServerProcess>;
  cleanup(): Promise<void>;
}

async function cluster(store: 'fs' | 's3'): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-rotate-'));
  let bucket: TestBucket | undefined;
  const storeEnv = store === 's3' ? (bucket = await createTestBucket()).env : { KMS_STORE: 'fs' };
  // The sealing service sees the functions' storage: it checks root keys against the keys stored there.
  const sealer = await startSealerProcess({ env: { ...storeEnv, KMS_DATA_DIR: dir } });
  const caFile = join(dir, 'sealer-ca.pem');
  await writeFile(caFile, await sealer.caPem());
  const started: ServerProcess[] = [];
  return {
    sealer,
    storeEnv,
    dataDir: dir,
    snapshot: async (prefix = '') => (bucket ? bucket.readAll(prefix) : new Map([...(await readFsObjects(dir))].filter(([key]) => key.startsWith(prefix)))),
    async kms(extraEnv = {}) {
      const kms = await startLeanHost({
        ...storeEnv,
        KMS_DATA_DIR: dir,
        KMS_SEALER_URL: sealer.url,
        KMS_SEALER_CA_FILE: caFile,
        KMS_ATTESTER: 'sample',
        KMS_ADMIN_TOKEN: ADMIN,
        KMS_ROTATION_LEASE_SECONDS: '1',
        KMS_ROOT_KEY_REFRESH_SECONDS: '1',
        ...extraEnv,
      });
      started.push(kms);
      return kms;
    },
    async cleanup() {
      await Promise.all(started.map((k) => k.stop('SIGKILL')));
      await sealer.cleanup();
      await bucket?.remove();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function rotate(kms: ServerProcess, headers: Record<string, string> = admin): Promise<Share[]> {
  const answer = await kms.request('/rootKey/rotate', { headers });
  expect(answer.status, answer.body).toBe(200);
  expect(answer.headers['content-type']).toBe('application/json');
  const shares = JSON.parse(answer.body) as Share[];
  expect(shares).toHaveLength(5);
  return shares;
}

async function recover(kms: ServerProcess, shares: readonly Share[]): Promise<void> {
  for (const [i, share] of shares.entries()) {
    const answer = await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share), headers: json });
    expect(answer.status, answer.body).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject(i < shares.length - 1 ? { sealed: true, progress: i + 1, t: 3 } : { sealed: false });
  }
}

async function status(kms: ServerProcess): Promise<Record<string, unknown>> {
  const answer = await kms.request('/rootKey/status');
  expect(answer.headers['content-type']).toBe('application/json'); // JSON without Accept too, and labelled so
  return JSON.parse(answer.body) as Record<string, unknown>;
}

/** POST /rootKey/verify with these shares; answers when every primary key is rewrapped. */
async function verify(kms: ServerProcess, shares: readonly Share[]): Promise<Record<string, unknown>> {
  const answer = await kms.request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares }), headers: { ...admin, ...json } });
  expect(answer.status, answer.body).toBe(200);
  return JSON.parse(answer.body) as Record<string, unknown>;
}

/** A rotation, verified: the new key is current and every primary key is under it. */
async function rotateAndVerify(kms: ServerProcess): Promise<Share[]> {
  const shares = await rotate(kms);
  expect(await verify(kms, shares.slice(0, 3))).toMatchObject({ verified: true, promoted: true });
  return shares;
}

/** Creates `count` primary keys for `user` (16 at a time) and one data key under each. */
async function populate(kms: ServerProcess, user: string, count: number): Promise<Map<string, string>> {
  const token = `${user}-token`;
  expect((await kms.request(`/user/${user}?token=${token}`, { method: 'POST' })).status).toBe(201);
  const values = new Map<string, string>();
  for (let i = 0; i < count; i += 32) {
    await Promise.all(
      Array.from({ length: Math.min(32, count - i) }, async (_, j) => {
        const pk = `pk${i + j}`;
        expect((await kms.request(`/primaryKey/${pk}?user=${user}&token=${token}`, { method: 'POST' })).status).toBe(201);
        expect((await kms.request(`/dataKey/dk?user=${user}&token=${token}&primaryKeyName=${pk}`, { method: 'POST' })).status).toBe(201);
        values.set(pk, (await kms.request(`/dataKey/dk?user=${user}&token=${token}&primaryKeyName=${pk}`)).body);
      }),
    );
  }
  return values;
}

async function expectAllReadable(kms: ServerProcess, user: string, values: Map<string, string>): Promise<void> {
  const entries = [...values];
  for (let i = 0; i < entries.length; i += 64) {
    await Promise.all(
      entries.slice(i, i + 64).map(async ([pk, value]) => {
        const answer = await kms.request(`/dataKey/dk?user=${user}&token=${user}-token&primaryKeyName=${pk}`);
        expect(answer.status, `${pk}: ${answer.body}`).toBe(200);
        expect(answer.body, pk).toBe(value);
      }),
    );
  }
}

function rootKeyIdsOfPrimaryKeys(snapshot: Map<string, Buffer>): Set<string> {
  return new Set(
    [...snapshot].filter(([key]) => key.startsWith('primary-keys/')).map(([, body]) => (JSON.parse(body.toString()) as { rootKeyId: string }).rootKeyId),
  );
}

describe('root key lifecycle through the functions (mode 2: Shamir shares)', () => {
  let c: Cluster;
  let kms: ServerProcess;
  beforeAll(async () => {
    c = await cluster('fs');
    kms = await c.kms();
  });
  afterAll(async () => c?.cleanup());

  it("runs BigDL KMS's story: rotate first, keys, restart sealed, recover 3 shares, every key unchanged", async () => {
    expect((await kms.request('/')).body).toContain('state: uninitialized');
    expect((await kms.request('/primaryKey/x?user=u&token=t', { method: 'POST' })).status).toBe(401);
    // The first rotate initializes, without operator credentials (like `vault operator init`).
    const shares = await rotate(kms, {});
    expect(new Set(shares.map((s) => s.index)).size).toBe(5);
    const values = await populate(kms, 'story', 20);

    await c.sealer.restart('SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // functions re-ask after KMS_ROOT_KEY_REFRESH_SECONDS
    const sealed = await kms.request('/dataKey/dk?user=story&token=story-token&primaryKeyName=pk0', { headers: json });
    expect(sealed.status).toBe(503);
    expect(JSON.parse(sealed.body)).toMatchObject({ error: { code: 'SEALED', message: expect.stringContaining('recover') } });
    expect((await kms.request('/')).body).toContain('state: sealed: send 3 shares with PUT /rootKey/recover (0 received)');
    expect(await status(kms)).toMatchObject({ sealed: true, initialized: true, t: 3, n: 5, progress: 0 });

    await recover(kms, [shares[4]!, shares[1]!, shares[2]!]);
    await expectAllReadable(kms, 'story', values);
    expect((await kms.request('/')).body).toContain('state: unsealed');
  });

  it('guards rotate with the admin token once initialized, and refuses recover while unsealed', async () => {
    expect((await kms.request('/rootKey/rotate')).status).toBe(401);
    const wrong = await kms.request('/rootKey/rotate', { method: 'POST', headers: { authorization: 'Bearer wrong' } });
    expect(wrong).toMatchObject({ status: 401, body: 'wrong admin token\n' });
    const share = { index: 1, content: Buffer.alloc(33, 1).toString('base64') };
    const live = await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share), headers: json });
    expect(live.status).toBe(409);
    for (const body of ['not json', '{"index":0,"content":"AAAA"}', '{"index":1}', '[]', '{"index":1.5,"content":"AAAA"}']) {
      expect((await kms.request('/rootKey/recover', { method: 'PUT', body })).status, body).toBe(400);
    }
    expect((await kms.request('/rootKey/verify', { method: 'POST', body: '{"shares":[]}', headers: admin })).status).toBe(400);
  });

  it('rotates without losing a key: the new key is used only once its shares are verified', async () => {
    const values = await populate(kms, 'rot', 40);
    const before = (await status(kms)).rootKeyId as string;
    const oldShares = await rotate(kms);
    const pending = await status(kms);
    // Nothing is wrapped under the new key before its shares are proven; the old shares still recover.
    expect(pending).toMatchObject({ sealed: false, rootKeyId: before, verificationPending: true });
    expect(rootKeyIdsOfPrimaryKeys(await c.snapshot('primary-keys/'))).toEqual(new Set([before]));
    const newShares = await rotate(kms); // a second rotate replaces the unverified one
    const next = (await status(kms)).pendingRootKeyId as string;
    expect(next).not.toBe(pending.pendingRootKeyId);

    // Verification: a wrong set is refused and changes nothing; the right set makes the new key current.
    const bad = await kms.request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares: oldShares.slice(0, 3) }), headers: admin });
    expect(bad.status).toBe(400);
    expect((await status(kms)).verificationPending).toBe(true);
    const ok = await kms.request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares: newShares.slice(1, 4) }), headers: admin });
    expect(ok.status, ok.body).toBe(200);
    expect(ok.body).toContain(`root key ${next} is current`);
    expect(await status(kms)).toMatchObject({ rootKeyId: next, verificationPending: false, pendingRootKeyId: null, rotation: null });
    expect(rootKeyIdsOfPrimaryKeys(await c.snapshot('primary-keys/'))).toEqual(new Set([next]));
    await expectAllReadable(kms, 'rot', values);

    // No stored record lets the retired shares reach the current key: nothing is wrapped under the
    // retired key, and the sealing service's record holds no key at all.
    const stored = await c.snapshot();
    for (const [key, body] of stored) {
      if (key.startsWith('root-keys/')) expect((JSON.parse(body.toString()) as { wrappedUnder: string }).wrappedUnder, key).toBe(next);
    }
    expect(Object.keys(JSON.parse(stored.get('sealer/state.json')!.toString())).sort()).toEqual(['current', 'format', 'generation', 'mac', 'pending']);

    await c.sealer.restart('SIGKILL');
    const stale = oldShares.slice(0, 3);
    for (const share of stale.slice(0, 2)) expect((await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share) })).status).toBe(200);
    const refused = await kms.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(stale[2]), headers: json });
    expect(refused.status).toBe(400);
    expect((await status(kms)).sealed).toBe(true);
    await recover(kms, newShares.slice(2, 5));
    await expectAllReadable(kms, 'rot', values);
  });

  it('a function that has not seen a verified rotation yet never wraps a new key under the retired root key', async () => {
    // Both cache the root key for an hour: the stale one would otherwise keep the retired key.
    const a = await c.kms({ KMS_ROOT_KEY_REFRESH_SECONDS: '3600' });
    const b = await c.kms({ KMS_ROOT_KEY_REFRESH_SECONDS: '3600' });
    await populate(b, 'stale', 1); // b has pulled the current key
    const retired = (await status(b)).rootKeyId;
    await rotateAndVerify(a);
    const current = (await status(a)).rootKeyId;
    expect(current).not.toBe(retired);
    expect((await b.request('/primaryKey/after?user=stale&token=stale-token', { method: 'POST' })).status).toBe(201);
    const record = (await c.snapshot('primary-keys/stale/')).get('primary-keys/stale/after.json')!;
    expect((JSON.parse(record.toString()) as { rootKeyId: string }).rootKeyId).toBe(current);
    expect((await b.request('/dataKey/dk?user=stale&token=stale-token&primaryKeyName=after', { method: 'POST' })).status).toBe(201);
    expect((await b.request('/dataKey/dk?user=stale&token=stale-token&primaryKeyName=after')).status).toBe(200);
    await Promise.all([a.stop(), b.stop()]);
  });

  it('rewraps around a tampered primary key record, reports it, and answers 500 INTEGRITY', async () => {
    const values = await populate(kms, 'tamper', 5);
    const bad = join(c.dataDir, 'objects', 'primary-keys', 'tamper', 'pk0.json');
    const genuine = await readFile(bad);
    const record = JSON.parse(genuine.toString()) as { wrapped: { tag: string } };
    record.wrapped.tag = Buffer.alloc(16).toString('base64url');
    await writeFile(bad, JSON.stringify(record));
    const shares = await rotate(kms);
    const answer = await kms.request('/rootKey/verify', {
      method: 'POST',
      body: JSON.stringify({ shares: shares.slice(0, 3) }),
      headers: { ...admin, ...json },
    });
    expect(answer.status, answer.body).toBe(500);
    const current = (await status(kms)).rootKeyId as string;
    expect(JSON.parse(answer.body)).toMatchObject({
      error: {
        code: 'INTEGRITY',
        message: expect.stringContaining('1 primary key record(s) failed authentication and were left under an older root key') as unknown,
      },
    });
    expect(answer.body).toContain(`every other one is under ${current}`);
    expect(await status(kms)).toMatchObject({ verificationPending: false, rotation: null }); // promoted, and the rewrap is over
    const ids = [...(await c.snapshot())].filter(([key]) => key.startsWith('primary-keys/tamper/'));
    expect(ids).toHaveLength(5);
    for (const [key, body] of ids) {
      expect((JSON.parse(body.toString()) as { rootKeyId: string }).rootKeyId === current, key).toBe(!key.endsWith('/pk0.json'));
    }
    await kms.outputContaining('failed authentication and were left as they are: primary-keys/tamper/pk0.json');
    const pk0 = values.get('pk0')!;
    values.delete('pk0');
    await expectAllReadable(kms, 'tamper', values);
    // A fresh function (nothing cached) sees the tampering.
    const fresh = await c.kms();
    const tampered = await fresh.request('/dataKey/dk?user=tamper&token=tamper-token&primaryKeyName=pk0', { headers: json });
    expect(tampered.status).toBe(500);
    expect(JSON.parse(tampered.body)).toMatchObject({ error: { code: 'INTEGRITY' } });
    // Storage repaired (the genuine record put back, still under the retired root key): verifying again finishes.
    await writeFile(bad, genuine);
    expect(await verify(kms, shares.slice(1, 4))).toMatchObject({ promoted: false, rewrapped: 1 });
    expect(rootKeyIdsOfPrimaryKeys(await c.snapshot('primary-keys/tamper/'))).toEqual(new Set([current]));
    await expectAllReadable(kms, 'tamper', values.set('pk0', pk0));
  });

  it('keeps shares, root keys and tokens out of logs and storage', async () => {
    const shares = await rotateAndVerify(kms);
    const secrets: (string | Buffer)[] = [ADMIN, 'story-token', 'rot-token', ...shares.map((s) => Buffer.from(s.content, 'base64'))];
    const stored = [...(await c.snapshot()).values()].map((b) => b.toString('latin1')).join('\n');
    expect(findSecrets(stored, secrets)).toEqual([]);
    expect(findSecrets(await kms.settledOutput(), secrets)).toEqual([]);
    expect(findSecrets(c.sealer.logs(), secrets)).toEqual([]);
  });

  it('a bad KMS_CUSTODIAN_KEYS_FILE, read at every rotate: rotate answers 500 CONFIG naming it and what to do, and changes nothing', async () => {
    // The lean host reads it at every rotate (it may be replaced), not at start.
    const file = join(c.dataDir, 'custodians.json');
    const other = await c.kms({ KMS_CUSTODIAN_KEYS_FILE: file });
    const before = await status(other);
    for (const [content, problem] of [
      [undefined, `names a file that cannot be read: ${file} (ENOENT); point it at a JSON array`],
      ['{"custodians"', `names a file that is not JSON: ${file}; it must hold a JSON array`],
      ['[]', `names a file of keys that cannot be used: ${file}: custodians must be a non-empty JSON array`],
    ] as const) {
      if (content !== undefined) await writeFile(file, content);
      const answer = await other.request('/rootKey/rotate', { method: 'POST', headers: { ...admin, ...json } });
      expect(answer.status, answer.body).toBe(500);
      const { error } = JSON.parse(answer.body) as { error: { code: string; message: string } };
      expect(error.code).toBe('CONFIG');
      expect(error.message).toContain(`KMS_CUSTODIAN_KEYS_FILE ${problem}`);
      expect(error.message).toMatch(/Nothing was changed; or give the custodians' keys in the body \(\{"custodians": \[JWK, …\]\}\)$/);
    }
    expect(await status(other)).toEqual(before);
  });

  it('custodians the sealing service would refuse are a 400 from the function, nested 20,000 deep too; nothing changes', async () => {
    const before = await status(kms);
    const mark = kms.output().length;
    const deep = `{"custodians": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    for (const [body, message] of [
      [deep, 'custodians[0] must be a JWK object'],
      ['{"custodians": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}', 'custodians[0] must be an EC P-256 key'],
      ['{"custodians": []}', 'custodians must be a non-empty JSON array'],
    ] as const) {
      const answer = await kms.request('/rootKey/rotate', { method: 'POST', headers: { ...admin, ...json }, body });
      expect(answer.status, answer.body).toBe(400);
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'BAD_REQUEST', message: expect.stringContaining(message) } });
    }
    expect(await status(kms)).toEqual(before);
    // Refused before any call to the sealing service: none is reported as failing.
    expect(kms.output().slice(mark)).not.toContain('sealing service');
  });
});

describe('rotation with thousands of primary keys on S3 (Ceph RGW), killed at every step', () => {
  let c: Cluster;
  let values: Map<string, string>;
  beforeAll(async () => {
    c = await cluster('s3');
    const kms = await c.kms();
    await rotate(kms, {});
    values = await populate(kms, 'bulk', 1200);
    await kms.stop();
  }, 600_000);
  afterAll(async () => c?.cleanup());

  for (const point of ['rotate:after-install', 'verify:after-promote', 'rewrap:500']) {
    it(`survives kill -9 at ${point}: every key readable, rotation resumes`, async () => {
      const doomed = await c.kms({ KMS_FAULT_INJECTION: point, KMS_ROTATION_CONCURRENCY: '8' });
      const answer = await doomed.request('/rootKey/rotate', { headers: admin }).catch(() => undefined);
      let shares: Share[] | undefined;
      if (point !== 'rotate:after-install') {
        expect(answer?.status).toBe(200);
        shares = JSON.parse(answer!.body) as Share[];
        await doomed
          .request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares: shares.slice(0, 3) }), headers: admin })
          .catch(() => undefined);
      }
      await new Promise<void>((resolve) =>
        doomed.child.exitCode !== null || doomed.child.signalCode !== null ? resolve() : doomed.child.once('exit', () => resolve()),
      );
      expect(doomed.child.signalCode).toBe('SIGKILL');

      const kms = await c.kms();
      await expectAllReadable(kms, 'bulk', values);
      if (shares === undefined) {
        // The shares never reached the caller: rotating again replaces the pending key.
        shares = await rotate(kms);
      } else {
        // The new key was made current; restart the sealing service and recover with the new shares.
        await c.sealer.restart('SIGKILL');
        await recover(kms, shares.slice(1, 4));
        await expectAllReadable(kms, 'bulk', values);
      }
      await new Promise((resolve) => setTimeout(resolve, 1_100)); // the crashed verification's lease lapses
      const verified = await verify(kms, shares.slice(2, 5));
      if (point === 'rotate:after-install') expect(verified).toMatchObject({ promoted: true, rewrapped: 1200 });
      else expect(verified.rewrapped).toBeGreaterThan(0);
      const current = (await status(kms)).rootKeyId;
      expect(rootKeyIdsOfPrimaryKeys(await c.snapshot('primary-keys/'))).toEqual(new Set([current]));
      await expectAllReadable(kms, 'bulk', values);
      await kms.stop();
    }, 600_000);
  }
});

describe('rotation scaled out over function processes on S3 (Ceph RGW)', () => {
  const KEYS = 800; // four ranges of the key space
  let c: Cluster;
  let values: Map<string, string>;
  beforeAll(async () => {
    c = await cluster('s3');
    const kms = await c.kms();
    await rotate(kms, {});
    values = await populate(kms, 'spread', KEYS);
    await kms.stop();
  }, 600_000);
  afterAll(async () => c?.cleanup());

  /** Waits until a rotation journal exists (the first verification has started its rewrap). */
  async function rewrapStarted(kms: ServerProcess): Promise<void> {
    while ((await status(kms)).rotation === null) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  async function expectRotationComplete(kms: ServerProcess): Promise<void> {
    const current = (await status(kms)).rootKeyId;
    expect(rootKeyIdsOfPrimaryKeys(await c.snapshot('primary-keys/'))).toEqual(new Set([current]));
    expect([...(await c.snapshot('rotation/')).keys()]).toEqual([]); // journal and range leases removed
    expect((await status(kms)).rotation).toBeNull();
    await expectAllReadable(kms, 'spread', values);
  }

  it('two processes share one rewrap: each rewraps a part, every key exactly once', async () => {
    const [a, b] = await Promise.all([c.kms({ KMS_ROTATION_CONCURRENCY: '2' }), c.kms({ KMS_ROTATION_CONCURRENCY: '2' })]);
    const shares = await rotate(a);
    const first = verify(a, shares.slice(0, 3));
    await rewrapStarted(b);
    // The same shares at another process: proven (the key is already current), and it joins the rewrap.
    const second = await verify(b, shares.slice(1, 4));
    const [byA, byB] = [(await first).rewrapped as number, second.rewrapped as number];
    expect(byA).toBeGreaterThan(0);
    expect(byB).toBeGreaterThan(0);
    expect(byA + byB).toBe(KEYS);
    await expectRotationComplete(a);
    await Promise.all([a.stop(), b.stop()]);
  }, 600_000);

  it('kill -9 of one process mid-rewrap: the other takes its ranges over once their leases lapse and finishes', async () => {
    const doomed = await c.kms({ KMS_ROTATION_CONCURRENCY: '2', KMS_FAULT_INJECTION: 'rewrap:150' });
    const survivor = await c.kms({ KMS_ROTATION_CONCURRENCY: '2' });
    const shares = await rotate(doomed);
    const crashed = doomed
      .request('/rootKey/verify', { method: 'POST', body: JSON.stringify({ shares: shares.slice(0, 3) }), headers: admin })
      .catch(() => undefined);
    await rewrapStarted(survivor);
    const finished = verify(survivor, shares.slice(2, 5));
    expect(await crashed).toBeUndefined(); // killed before it could answer
    await new Promise<void>((resolve) =>
      doomed.child.exitCode !== null || doomed.child.signalCode !== null ? resolve() : doomed.child.once('exit', () => resolve()),
    );
    expect(doomed.child.signalCode).toBe('SIGKILL');
    const rewrapped = (await finished).rewrapped as number;
    // Everything the dead process had not rewritten (its second worker may have had one more in flight).
    expect(rewrapped).toBeGreaterThanOrEqual(KEYS - 151);
    expect(rewrapped).toBeLessThan(KEYS);
    await expectRotationComplete(survivor);
    await survivor.stop();
  }, 600_000);
});
