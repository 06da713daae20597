// Three sealing-service replicas on loopback sharing a real S3 bucket (Ceph RGW): they unseal each
// other over KBS, follow rotations through the shared record, and only the sealer-peer role gets
// the key from a peer; a key from a peer also makes the recovery key anew.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { KbsClient, KbsResponseError } from '../../shared/kbs/client.js';
import { decryptFromKbs, generateTeeKeyPair } from '../../shared/kbs/tee-key.js';
import { sealerPaths, type SealStatus, type Share } from '../../shared/sealer-client/protocol.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import { custodians, sealForRecovery } from '../support/custodians.js';
import { httpCall, startLeanHost, TEST_ADMIN_IDENTITY, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { startReplicas, unsealedOn, untilStatus } from '../support/replicas.js';

const SEALER_IDENTITY = '5e'.repeat(48);
const ADMIN = 'replicas-admin-token';
const admin = { authorization: `Bearer ${ADMIN}` };
const json = { accept: 'application/json' };
const USER = 'replica-user';

const secrets = new SecretRegistry();
let dir: string;
let bucket: TestBucket;
const sealers: SealerProcess[] = [];
const clients: SealerClient[] = [];
let host: ServerProcess;
let shares: Share[];
let dataKey: string;

async function status(i: number): Promise<SealStatus> {
  return clients[i]!.sealStatus();
}

/** Polls replica i until `done` holds; the time it took, in ms. */
const until = (i: number, done: (s: SealStatus) => boolean, what: string): Promise<number> =>
  untilStatus(clients[i]!, done, `replica ${i}: ${what}`, () => sealers[i]!.logs(), 30_000);

/** GET /readyz of a replica: its status code. */
async function readyz(sealer: SealerProcess): Promise<number> {
  return (await httpCall(`${sealer.url}/readyz`, { ca: await sealer.caPem() })).status;
}

async function readDataKey(): Promise<string> {
  const answer = await host.request(`/dataKey/dk?user=${USER}&token=${USER}-token&primaryKeyName=pk`);
  expect(answer.status, answer.body).toBe(200);
  return answer.body;
}

async function currentId(): Promise<string> {
  return (await status(0)).rootKeyId!;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-replicas-'));
  bucket = await createTestBucket();
  const replicas = await startReplicas(dir, bucket.env, SEALER_IDENTITY);
  sealers.push(...replicas.sealers);
  clients.push(...replicas.clients);
  const caFile = replicas.caFile;
  host = await startLeanHost({
    ...bucket.env,
    KMS_DATA_DIR: dir,
    KMS_SEALER_URL: sealers[0]!.url,
    KMS_SEALER_CA_FILE: caFile,
    KMS_ATTESTER: 'sample',
    KMS_ADMIN_TOKEN: ADMIN,
    KMS_ROTATION_LEASE_SECONDS: '1',
  });
  const rotated = await host.request('/rootKey/rotate', { headers: admin });
  expect(rotated.status, rotated.body).toBe(200);
  shares = JSON.parse(rotated.body) as Share[];
  shares.forEach((share) => secrets.addShare(share));
  const id = await currentId();
  // Replicas 1 and 2 had no record at start: they adopt it and a peer hands them the key.
  await until(1, unsealedOn(id), 'unsealed by a peer after initialization');
  await until(2, unsealedOn(id), 'unsealed by a peer after initialization');
  expect((await host.request(`/user/${USER}?token=${USER}-token`, { method: 'POST' })).status).toBe(201);
  expect((await host.request(`/primaryKey/pk?user=${USER}&token=${USER}-token`, { method: 'POST' })).status).toBe(201);
  expect((await host.request(`/dataKey/dk?user=${USER}&token=${USER}-token&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
  dataKey = await readDataKey();
}, 180_000);

afterAll(async () => {
  await host?.stop('SIGKILL');
  for (const client of clients) client.close();
  for (const sealer of sealers) await sealer.cleanup();
  await bucket?.remove();
  await rm(dir, { recursive: true, force: true });
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe('the peer root key route', () => {
  async function askAsPeer(identity: string): Promise<Buffer> {
    const teeKey = await generateTeeKeyPair();
    const client = new KbsClient({ url: sealers[1]!.url, ca: await sealers[1]!.caPem(), attester: new SampleAttester('1', identity), teeKey });
    try {
      const answer = await client.authorized('GET', sealerPaths.peerRootKey, undefined, 'peer root key');
      return await decryptFromKbs(answer.body, teeKey.privateKey);
    } finally {
      client.close();
    }
  }

  it("refuses a function's identity (granted every admin operation, not sealer-peer): 403, no key", async () => {
    const refused = await askAsPeer(TEST_ADMIN_IDENTITY).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(KbsResponseError);
    expect((refused as KbsResponseError).status).toBe(403);
    expect((refused as KbsResponseError).problem?.detail).toContain('"sealer-peer"');
  });

  it('answers an attested sealer identity the current key, only as a JWE to its TEE key', async () => {
    const key = await askAsPeer(SEALER_IDENTITY);
    secrets.add(key);
    expect(rootKeyId(key)).toBe(await currentId());
  });
});

describe('replicas unseal each other', () => {
  it('kill -9 of any one replica: the host keeps serving; restarted, a peer unseals it', async () => {
    const id = await currentId();
    for (const i of [1, 2, 0]) {
      const killedAt = performance.now();
      await sealers[i]!.stop('SIGKILL');
      if (i !== 0) expect(await readDataKey()).toBe(dataKey);
      await sealers[i]!.restart();
      const listening = performance.now();
      const afterStart = await until(i, unsealedOn(id), 'unsealed by a peer after kill -9');
      // The measurement docs/performance.md reports.
      process.stdout.write(
        `replica ${i}: kill -9 -> restarted and listening ${(listening - killedAt).toFixed(0)} ms; listening -> unsealed by a peer ${afterStart.toFixed(0)} ms\n`,
      );
      await sealers[i]!.settle();
      expect(sealers[i]!.messages()).toContain(`unsealed by a peer replica: root key ${id}`);
    }
    expect(await readDataKey()).toBe(dataKey);
  });

  it('a rotation while one replica is down: it comes back on the new key; nothing is lost', async () => {
    const previous = await currentId();
    await sealers[2]!.stop('SIGKILL');
    const rotated = await host.request('/rootKey/rotate', { method: 'POST', headers: admin });
    expect(rotated.status, rotated.body).toBe(200);
    shares = JSON.parse(rotated.body) as Share[];
    shares.forEach((share) => secrets.addShare(share));
    const verified = await host.request('/rootKey/verify', {
      method: 'POST',
      body: JSON.stringify({ shares: shares.slice(0, 3) }),
      headers: { ...admin, ...json },
    });
    expect(verified.status, verified.body).toBe(200);
    const next = await currentId();
    expect(next).not.toBe(previous);
    // Replica 1 was up: it follows the shared record (drops the retired key, a peer hands the new one).
    await until(1, unsealedOn(next), 'following the rotation');
    await sealers[2]!.restart();
    await until(2, unsealedOn(next), 'unsealed on the new key after the rotation');
    await sealers[2]!.settle();
    expect(sealers[2]!.messages()).toContain(`unsealed by a peer replica: root key ${next}`);
    expect(await readDataKey()).toBe(dataKey);
  });

  it('seal on one replica: peers do not unseal it again, it stays ready for shares, which recover it', async () => {
    const id = await currentId();
    expect(await clients[1]!.seal()).toMatchObject({ sealed: true, rootKeyId: id, sealedReason: 'operator' });
    // Several sync rounds (1 s each) pass: a peer would have handed the key back by now.
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(await status(1)).toMatchObject({ sealed: true, rootKeyId: id });
    expect(await readyz(sealers[1]!)).toBe(200);
    expect(await status(0)).toMatchObject({ sealed: false, rootKeyId: id });
    for (const share of shares.slice(0, 3)) await clients[1]!.submitShare(share);
    expect(await status(1)).toMatchObject({ sealed: false, rootKeyId: id });
  });

  it('all three killed: sealed; shares recover one, which unseals the rest; same data keys', async () => {
    const id = await currentId();
    for (const sealer of sealers) await sealer.stop('SIGKILL');
    for (const sealer of sealers) await sealer.restart();
    for (const i of [0, 1, 2]) expect(await status(i)).toMatchObject({ sealed: true, initialized: true, rootKeyId: id });
    // Ready once each has found every peer sealed: their shares are needed, so they must be reachable.
    for (const sealer of sealers) {
      for (let tries = 0; (await readyz(sealer)) !== 200; tries++) {
        if (tries > 200) throw new Error(`never ready while every peer is sealed:\n${sealer.logs()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    // No peer holds the key: only shares unseal them, which functions hear as a seal (not "starting").
    for (const i of [0, 1, 2]) expect(await status(i)).toMatchObject({ sealed: true, sealedReason: 'restarted' });
    // Custodians seal shares for replica 1's recovery; whoever relays them holds them back.
    const answer = await clients[1]!.recoveryKey(randomBytes(32).toString('base64url'));
    const held = await Promise.all(shares.slice(0, 3).map((share) => sealForRecovery(answer as never, share)));
    for (const share of shares.slice(1, 4)) {
      const answer = await host.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(share), headers: json });
      expect(answer.status, answer.body).toBe(200);
    }
    await until(0, unsealedOn(id), 'recovered with shares');
    await until(1, unsealedOn(id), 'unsealed by the recovered peer');
    await until(2, unsealedOn(id), 'unsealed by the recovered peer');
    expect(await readDataKey()).toBe(dataKey);
    // Unsealed by a peer, replica 1 made a new recovery key: as the current shares, the held-back
    // bodies cannot name custodians of the relay's choosing.
    const before = await status(1);
    const refused = await clients[1]!
      .installRootKey({ t: 2, n: 3, expectedCurrentId: id, custodians: (await custodians(3)).map((each) => each.jwk), currentShares: held })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(refused).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining("could not be decrypted with this sealing service's recovery key") });
    expect(await status(1)).toEqual(before);
  });
});

describe('a sealed replica takes the key from no one else', () => {
  it('refuses a peer whose identity is not granted sealer-peer, and a granted one whose key does not authenticate the record', async () => {
    const id = await currentId();
    const policyFile = join(dir, 'admin-policy.json');
    /** Another deployment's sealing service: its own bucket, initialized with its own key. */
    const stranger = async (identity: string) => {
      const own = await createTestBucket();
      const sealer = await startSealerProcess({
        env: {
          ...own.env,
          KMS_SEALER_TLS_CERT_FILE: join(dir, 'sealer-tls-cert.pem'),
          KMS_SEALER_TLS_KEY_FILE: join(dir, 'sealer-tls-key.pem'),
          KMS_SEALER_ADMIN_POLICY_FILE: policyFile,
          KMS_SEALER_SAMPLE_INIT_DATA: identity,
        },
      });
      const client = await sealer.client();
      const { shares: strangerShares } = await client.installRootKey({ t: 2, n: 3, expectedCurrentId: null });
      strangerShares.forEach((share) => secrets.addShare(share));
      await sealer.settle();
      return { sealer, bucket: own, attestsBefore: sealer.requestLines().filter((line) => line.startsWith('POST /kbs/v0/attest')).length };
    };
    const impostor = await stranger(TEST_ADMIN_IDENTITY); // a function's identity, claiming to be a sealer
    const rogue = await stranger(SEALER_IDENTITY); // a real sealer identity, of another deployment
    const replica = await startSealerProcess({
      env: {
        ...bucket.env,
        KMS_SEALER_TLS_CERT_FILE: join(dir, 'sealer-tls-cert.pem'),
        KMS_SEALER_TLS_KEY_FILE: join(dir, 'sealer-tls-key.pem'),
        KMS_SEALER_ADMIN_POLICY_FILE: policyFile,
        KMS_SEALER_PEERS: `${impostor.sealer.url},${rogue.sealer.url}`,
        KMS_SEALER_SAMPLE_INIT_DATA: SEALER_IDENTITY,
        KMS_SEALER_SYNC_SECONDS: '1',
      },
    });
    try {
      const refusals = () => replica.messages().filter((m) => m.startsWith(`peer ${impostor.sealer.url} `) || m.startsWith('a peer'));
      for (let i = 0; refusals().length < 2; i++) {
        if (i > 300) throw new Error(`no refusals logged:\n${replica.logs()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(refusals().join('\n')).toContain(`attested as identity ${TEST_ADMIN_IDENTITY}, which is not granted "sealer-peer": not a replica`);
      expect(refusals().join('\n')).toContain(`a peer's root key is not the current key of an authentic state record (${id}): not used`);
      const client = await replica.client();
      expect(await client.sealStatus()).toMatchObject({ sealed: true, rootKeyId: id });
      // Not ready: a peer it cannot trust might still hold the key, so it does not count as up.
      expect(await readyz(replica)).toBe(503);
      // The impostor saw neither the replica's evidence nor a request for the key: it was attested first.
      await impostor.sealer.settle();
      expect(impostor.sealer.requestLines().filter((line) => line.startsWith('GET /tee-kms/v1/peer/root-key'))).toEqual([]);
      expect(impostor.sealer.requestLines().filter((line) => line.startsWith('POST /kbs/v0/attest'))).toHaveLength(impostor.attestsBefore);
    } finally {
      await replica.cleanup();
      for (const { sealer, bucket: own } of [impostor, rogue]) {
        await sealer.cleanup();
        await own.remove();
      }
    }
  });
});

describe('the peers CA', () => {
  it('a KMS_SEALER_PEER_CA_FILE that cannot be read stops the start, naming the variable', async () => {
    await expect(
      startSealerProcess({
        env: { KMS_SEALER_ROOT_KEY: '', KMS_SEALER_PEERS: 'https://peer.invalid:9877', KMS_SEALER_PEER_CA_FILE: '/nonexistent/peers-ca.pem' },
      }),
    ).rejects.toThrow(
      /cannot start: CONFIG: KMS_SEALER_PEER_CA_FILE names a file that cannot be read \(the CA for KMS_SEALER_PEERS\): \/nonexistent\/peers-ca\.pem/,
    );
  });
});
