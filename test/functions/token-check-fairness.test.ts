import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLeanHost, type ServerProcess } from '../support/processes.js';

/**
 * The attacker of this test knows no user: it floods the lean host, over real HTTPS from its own
 * client, with requests for users that do not exist (each costs the server a dummy scrypt). Real
 * users logging in for the first time meanwhile (no cached credentials: each its own user, first
 * request) must be served, not shed with 503 BUSY.
 */
describe('token checks under an unknown-user flood (lean host, real HTTPS)', () => {
  let dataDir: string;
  let kms: ServerProcess;
  let ca: string;
  const users = Array.from({ length: 20 }, (_, i) => ({ user: `fresh${i}`, token: `fresh-token-${i}-${randomBytes(6).toString('hex')}` }));

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-fair-'));
    kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_ACCESS_LOG: 'false' });
    ca = await readFile(join(dataDir, 'tls/cert.pem'), 'utf8');
    // Enrolled before the flood, one at a time: enrollment itself is not what this test measures.
    for (const { user, token } of users) expect((await kms.request(`/user/${user}?token=${token}`, { method: 'POST' })).status).toBe(201);
  });
  afterAll(async () => {
    await kms?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('20 fresh logins of enrolled users all succeed while ~100 connections ask for unknown users', async () => {
    const floodAgent = new Agent({ keepAlive: true, maxSockets: 100, ca });
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

    // The flood: 100 workers, at most 6 requests each (600 in all), stopping once the logins are done.
    const flood = { answers: new Map<number, number>(), workersLeft: 100, loginsDone: false };
    let firstBusy!: () => void;
    const saturated = new Promise<void>((resolve) => (firstBusy = resolve));
    const workers = Array.from({ length: 100 }, async (_, w) => {
      try {
        for (let i = 0; i < 6 && !flood.loginsDone; i++) {
          const status = await call(`/primaryKey/pk?user=ghost${w}x${i}&token=guess-${w}-${i}`, floodAgent);
          flood.answers.set(status, (flood.answers.get(status) ?? 0) + 1);
          if (status === 503) firstBusy();
        }
      } finally {
        flood.workersLeft--;
      }
    });

    // Logins start once the flood fills the unknown-user queue (the server sheds some of it).
    await Promise.race([saturated, Promise.all(workers)]);
    const logins = await Promise.all(
      users.map(async ({ user, token }) => {
        const status = await call(`/primaryKey/first?user=${user}&token=${token}`, false);
        return { status, floodStillRunning: flood.workersLeft > 0 };
      }),
    );
    flood.loginsDone = true;
    await Promise.all(workers);
    floodAgent.destroy();

    // The flood was real: it was shed (503) and it lasted past every login.
    expect(flood.answers.get(503) ?? 0).toBeGreaterThan(0);
    expect(logins.every((l) => l.floodStillRunning)).toBe(true);
    expect([...flood.answers.keys()].every((s) => s === 401 || s === 503)).toBe(true);
    // Every fresh login was served.
    expect(logins.map((l) => l.status)).toEqual(users.map(() => 201));
  });
});
