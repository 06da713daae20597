// Availability under sealer failure, from the outside: three sealing-service replicas and two
// function hosts on loopback, real processes sharing a Ceph RGW bucket; the project's client keeps
// a steady load on both hosts while each replica in turn is killed with kill -9. The hosts hold the
// root key without grace (KMS_ROOT_KEY_GRACE_SECONDS=0) and refresh it every second, so what keeps
// them serving is the failover between replicas, not a key held past its confirmation.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsClient, KmsError } from '../../client/index.js';
import { ROOT_KEY_RESOURCE, type SealStatus, type Share } from '../../shared/sealer-client/protocol.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import { logFields } from '../../shared/log.js';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';
import { allLogs, SecretRegistry, type SealerProcess } from '../support/sealer.js';
import { startReplicas, unsealedOn, untilStatus } from '../support/replicas.js';

const SEALER_IDENTITY = '5f'.repeat(48);
const ADMIN = 'availability-admin-token';
const USER = 'steady-user';
const TOKEN = 'steady-user-token';
/** Concurrent load loops per host. */
const LOOPS_PER_HOST = 2;
/** Generous: a host should not need any while one replica is up; Retry-After is honoured. */
const RETRIES = 8;
/** The only bound on time here: a restarted replica unsealed by a peer within it. */
const UNSEAL_BOUND_MS = 30_000;

const secrets = new SecretRegistry();
let dir: string;
let bucket: TestBucket;
const sealers: SealerProcess[] = [];
const sealerClients: SealerClient[] = [];
const hosts: ServerProcess[] = [];
const clients: KmsClient[] = [];
/** Each host's self-signed certificate. */
const hostCas: string[] = [];
let shares: Share[];

/** Polls replica i until `done` holds; the time it took, in ms. */
const until = (i: number, done: (s: SealStatus) => boolean, what: string): Promise<number> =>
  untilStatus(sealerClients[i]!, done, `replica ${i}: ${what}`, () => sealers[i]!.logs(), UNSEAL_BOUND_MS);

/** How many times each replica released the root key over KBS so far (its request log, across restarts). */
function releases(): number[] {
  return sealers.map((sealer) => sealer.requestLines().filter((line) => line === `GET /kbs/v0/resource/${ROOT_KEY_RESOURCE} 200`).length);
}

/** The statuses a host answered (its access log lines), counted. */
function statuses(host: ServerProcess): Map<number, number> {
  const counts = new Map<number, number>();
  for (const text of host.output().split('\n')) {
    const fields = logFields(text);
    if (typeof fields?.status === 'number' && typeof fields.method === 'string') counts.set(fields.status, (counts.get(fields.status) ?? 0) + 1);
  }
  return counts;
}

beforeAll(async () => {
  secrets.addText(ADMIN);
  secrets.addText(TOKEN);
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-availability-'));
  bucket = await createTestBucket();
  const replicas = await startReplicas(dir, bucket.env, SEALER_IDENTITY);
  sealers.push(...replicas.sealers);
  sealerClients.push(...replicas.clients);
  const caFile = replicas.caFile;
  for (const name of ['a', 'b']) {
    const dataDir = join(dir, `host-${name}`);
    const host = await startLeanHost({
      ...bucket.env,
      KMS_DATA_DIR: dataDir,
      // Every replica's own URL: the failover is the function's.
      KMS_SEALER_URL: sealers.map((sealer) => sealer.url).join(','),
      KMS_SEALER_CA_FILE: caFile,
      KMS_ATTESTER: 'sample',
      KMS_ADMIN_TOKEN: ADMIN,
      KMS_ROOT_KEY_REFRESH_SECONDS: '1',
      KMS_ROOT_KEY_GRACE_SECONDS: '0',
    });
    hosts.push(host);
    const ca = await readFile(join(dataDir, 'tls', 'cert.pem'), 'utf8');
    hostCas.push(ca);
    clients.push(new KmsClient({ url: host.url, ca, user: USER, token: TOKEN, adminToken: ADMIN, retries: RETRIES }));
  }
  const rotation = await clients[0]!.rotate();
  shares = [...rotation.shares];
  shares.forEach((share) => secrets.addShare(share));
  await until(1, unsealedOn(rotation.rootKeyId), 'unsealed by a peer after initialization');
  await until(2, unsealedOn(rotation.rootKeyId), 'unsealed by a peer after initialization');
  await clients[0]!.enroll();
  await clients[0]!.createPrimaryKey('pk');
}, 180_000);

afterAll(async () => {
  for (const client of clients) client.close();
  for (const host of hosts) await host.stop('SIGKILL');
  for (const client of sealerClients) client.close();
  for (const sealer of sealers) await sealer.cleanup();
  await bucket?.remove();
  await rm(dir, { recursive: true, force: true });
  const hostLogs = await Promise.all(hosts.map((host) => host.settledOutput()));
  for (const logs of [...allLogs, ...hostLogs.map((text) => () => text)]) expect(secrets.leaksIn(logs())).toEqual([]);
});

/** Every data key created under load, with the value read back right after its creation. */
const created = new Map<string, string>();

describe('steady load on two hosts while each replica is killed with kill -9', () => {
  it('no call fails beyond client retries; each killed replica, restarted, is unsealed by a peer', async () => {
    const id = (await sealerClients[0]!.sealStatus()).rootKeyId!;
    let running = true;
    let calls = 0;
    const failures: unknown[] = [];
    /** Each call's time, retries included (what a caller waited), in ms. */
    const waited: number[] = [];
    const timed = async <T>(call: () => Promise<T>): Promise<T> => {
      const started = performance.now();
      calls++;
      try {
        return await call();
      } finally {
        waited.push(performance.now() - started);
      }
    };
    for (const sealer of sealers) await sealer.settle();
    const releasedBefore = releases();
    const loop = async (client: KmsClient, name: string) => {
      for (let n = 0; running; n++) {
        const dk = `${name}-${n}`;
        try {
          await timed(() => client.createDataKey('pk', dk));
          const { key } = await timed(() => client.getDataKey('pk', dk));
          created.set(dk, key);
          secrets.add(Buffer.from(key, 'base64'));
        } catch (error) {
          failures.push(error);
        }
      }
    };
    const loops = clients.flatMap((client, h) => Array.from({ length: LOOPS_PER_HOST }, (_, l) => loop(client, `h${h}-l${l}`)));
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    await pause(1_000);
    const measured: string[] = [];
    for (const i of [0, 1, 2]) {
      const before = calls;
      const killedAt = performance.now();
      await sealers[i]!.stop('SIGKILL');
      await sealers[i]!.restart();
      const listening = performance.now();
      const unsealing = await until(i, unsealedOn(id), 'unsealed by a peer after kill -9');
      const total = performance.now() - killedAt;
      expect(total).toBeLessThan(UNSEAL_BOUND_MS);
      await sealers[i]!.settle();
      expect(sealers[i]!.messages()).toContain(`unsealed by a peer replica: root key ${id}`);
      measured.push(
        `replica ${i}: kill -9 -> listening ${(listening - killedAt).toFixed(0)} ms, -> unsealed by a peer ${unsealing.toFixed(0)} ms more (total ${total.toFixed(0)} ms); ${calls - before} calls meanwhile`,
      );
      await pause(1_000); // the hosts refresh (1 s) with this replica back and the next one still up
    }
    running = false;
    await Promise.all(loops);
    for (const sealer of sealers) await sealer.settle();
    const released = releases().map((count, i) => count - releasedBefore[i]!);
    const answered = hosts.map(statuses);
    waited.sort((a, b) => a - b);
    const quantile = (q: number) => waited[Math.min(waited.length - 1, Math.floor(q * waited.length))]!.toFixed(0);
    const retries = answered.reduce((sum, counts) => sum + (counts.get(503) ?? 0), 0);
    process.stdout.write(
      [
        ...measured,
        `load: ${calls} calls, ${created.size} data keys created and read, ${failures.length} failed; ${retries} answers 503 retried by the client`,
        `each call, retries included: median ${quantile(0.5)} ms, p99 ${quantile(0.99)} ms, max ${quantile(1)} ms`,
        `root key released to the hosts during the load, by replica: ${released.join(', ')}`,
        ...answered.map((counts, h) => `host ${h} answered: ${JSON.stringify(Object.fromEntries(counts))}`),
        '',
      ].join('\n'),
    );
    expect(failures).toEqual([]);
    expect(created.size).toBeGreaterThan(0);
    // The hosts moved: the first replica, which they asked first, was killed and another released the key.
    expect(released.filter((count) => count > 0).length).toBeGreaterThanOrEqual(2);
    // Every answer was a success or a 503 the client retried: nothing else reached the client.
    for (const counts of answered) expect([...counts.keys()].filter((status) => status !== 200 && status !== 201 && status !== 503)).toEqual([]);
    for (const [dk, key] of created) expect((await clients[1]!.getDataKey('pk', dk)).key, dk).toBe(key);
  }, 240_000);
});

describe('all three replicas killed', () => {
  it('sealed everywhere; three of the five shares recover it; the same data keys', async () => {
    const id = (await sealerClients[0]!.sealStatus()).rootKeyId!;
    for (const sealer of sealers) await sealer.stop('SIGKILL');
    for (const sealer of sealers) await sealer.restart();
    for (const i of [0, 1, 2]) expect(await sealerClients[i]!.sealStatus()).toMatchObject({ sealed: true, initialized: true, rootKeyId: id });
    // The hosts refuse within a refresh: a signed "sealed" from every replica drops the key.
    for (const [h, host] of hosts.entries()) {
      const once = new KmsClient({ url: host.url, ca: hostCas[h]!, user: USER, token: TOKEN, retries: 0 });
      try {
        for (let tries = 0; ; tries++) {
          const refused = await once.getDataKey('pk', created.keys().next().value!).then(
            () => undefined,
            (error: unknown) => error,
          );
          if (refused instanceof KmsError && refused.status === 503) break;
          if (tries > 400) throw new Error(`host ${h} kept serving with every replica sealed: ${String(refused)}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      } finally {
        once.close();
      }
    }
    for (const share of [shares[4]!, shares[0]!, shares[2]!]) await clients[1]!.recover(share);
    for (const i of [0, 1, 2]) await until(i, unsealedOn(id), 'unsealed after recovery');
    for (const [h, client] of clients.entries()) {
      for (const [dk, key] of created) expect((await client.getDataKey('pk', dk)).key, `host ${h}: ${dk}`).toBe(key);
    }
  }, 180_000);
});
