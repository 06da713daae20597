import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLeanHost, type ServerProcess } from '../support/processes.js';

/**
 * An attacker floods the lean host over real HTTPS from its own client, while real users log in for
 * the first time (no cached credentials: each its own user, first request). They must be served,
 * not shed with 503 BUSY. Two attackers:
 * - one knows no user and asks for users that do not exist (each costs the server a dummy scrypt);
 * - one enrolls a user of its own (enrolling is open) and sends wrong tokens for it: each a real
 *   check of a user that exists, queued with every other such user's.
 */
describe('token checks under a flood (lean host, real HTTPS)', () => {
  let dataDir: string;
  let kms: ServerProcess;
  let ca: string;
  const usersNamed = (prefix: string) =>
    Array.from({ length: 20 }, (_, i) => ({ user: `${prefix}${i}`, token: `${prefix}-token-${i}-${randomBytes(6).toString('hex')}` }));
  const fresh = usersNamed('fresh');
  const others = usersNamed('other');

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-fair-'));
    kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_ACCESS_LOG: 'false' });
    ca = await readFile(join(dataDir, 'tls/cert.pem'), 'utf8');
    // Enrolled before the flood, one at a time: enrollment itself is not what this test measures.
    for (const { user, token } of [...fresh, ...others]) expect((await kms.request(`/user/${user}?token=${token}`, { method: 'POST' })).status).toBe(201);
  });
  afterAll(async () => {
    await kms?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const call = (path: string, agent: Agent | false) =>
    new Promise<number>((resolve, reject) => {
      const { port } = new URL(kms.url);
      const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, ca }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });

  /**
   * 100 workers on their own connections each send `floodPath(worker, i)` for i < `perWorker`,
   * stopping once the logins are done; the logins of `users` start once the server sheds the flood
   * (its first 503). Every status the flood got, and each login's status.
   */
  async function loginsUnderFlood(users: typeof fresh, floodPath: (worker: number, i: number) => string, perWorker: number) {
    const floodAgent = new Agent({ keepAlive: true, maxSockets: 100, ca });
    const flood = { answers: new Map<number, number>(), answered: 0, workersLeft: 100, loginsDone: false };
    let firstBusy!: () => void;
    const saturated = new Promise<void>((resolve) => (firstBusy = resolve));
    const workers = Array.from({ length: 100 }, async (_, w) => {
      try {
        for (let i = 0; i < perWorker && !flood.loginsDone; i++) {
          const status = await call(floodPath(w, i), floodAgent);
          flood.answers.set(status, (flood.answers.get(status) ?? 0) + 1);
          flood.answered++;
          if (status === 503) firstBusy();
        }
      } finally {
        flood.workersLeft--;
      }
    });

    await Promise.race([saturated, Promise.all(workers)]);
    const answeredBefore = flood.answered;
    const logins = await Promise.all(
      users.map(async ({ user, token }) => {
        const status = await call(`/primaryKey/first?user=${user}&token=${token}`, false);
        return { status, floodStillRunning: flood.workersLeft > 0 };
      }),
    );
    const answeredDuring = flood.answered - answeredBefore;
    flood.loginsDone = true;
    await Promise.all(workers);
    floodAgent.destroy();
    return { answers: flood.answers, answeredDuring, logins };
  }

  it('20 fresh logins of enrolled users all succeed while ~100 connections ask for unknown users', async () => {
    // At most 6 requests each (600 in all).
    const { answers, logins } = await loginsUnderFlood(fresh, (w, i) => `/primaryKey/pk?user=ghost${w}x${i}&token=guess-${w}-${i}`, 6);

    // The flood was real: it was shed (503) and it lasted past every login.
    expect(answers.get(503) ?? 0).toBeGreaterThan(0);
    expect(logins.every((l) => l.floodStillRunning)).toBe(true);
    expect([...answers.keys()].every((s) => s === 401 || s === 503)).toBe(true);
    // Every fresh login was served.
    expect(logins.map((l) => l.status)).toEqual(fresh.map(() => 201));
  });

  it("20 other users' first logins succeed while ~100 connections send wrong tokens for a user the attacker enrolled", async () => {
    const attacker = `mallory${randomBytes(3).toString('hex')}`;
    expect(await call(`/user/${attacker}?token=own-token-${randomBytes(6).toString('hex')}`, false)).toBe(201);
    // Each a different wrong token (checks of the same credentials would share one run); the
    // server answers 503 to the shed ones at once, so the workers go on until the logins are done.
    const { answers, answeredDuring, logins } = await loginsUnderFlood(
      others,
      (w, i) => `/primaryKey/pk?user=${attacker}&token=wrong-${w}-${i}`,
      Number.POSITIVE_INFINITY,
    );

    // The flood was real: its checks ran (401) and were shed (503), while the logins were made.
    expect(answers.get(401) ?? 0).toBeGreaterThan(0);
    expect(answers.get(503) ?? 0).toBeGreaterThan(0);
    expect(answeredDuring).toBeGreaterThan(0);
    expect(logins.every((l) => l.floodStillRunning)).toBe(true);
    expect([...answers.keys()].every((s) => s === 401 || s === 503)).toBe(true);
    // Every other user's first login was served.
    expect(logins.map((l) => l.status)).toEqual(others.map(() => 201));
  });
});
