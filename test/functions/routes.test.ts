/**
 * Every route in this test's own process (test/support/in-process.ts): the lean host's router on
 * loopback HTTP, over a context built from the embedded store in a fresh folder and a static root
 * key. Fast, with no process, S3 server or build: part of `npm run test:unit`. The same routes in
 * real processes, on RGW and under functions-framework, are test/functions/api.test.ts and
 * standalone.test.ts.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFsObjects } from '../support/storage-snapshot.js';
import { startInProcess, type InProcessKms } from '../support/in-process.js';

const json = { accept: 'application/json' };
let kms: InProcessKms;

beforeAll(async () => {
  kms = await startInProcess({ env: { KMS_ADMIN_TOKEN: 'operator-token' } });
});
afterAll(async () => kms?.close());

/** Enrolls `user` with `token`, creates primary key `pk` and data key `dk` under it. */
async function seed(user: string, token = `${user}-token`): Promise<void> {
  expect((await kms.request(`/user/${user}?token=${token}`, { method: 'POST' })).status).toBe(201);
  expect((await kms.request(`/primaryKey/pk?user=${user}&token=${token}`, { method: 'POST' })).status).toBe(201);
  expect((await kms.request(`/dataKey/dk?user=${user}&token=${token}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
}

describe('welcome and status', () => {
  it('GET / lists the routes and the state of a root key from a secret', async () => {
    const text = await kms.request('/');
    expect(text.status).toBe(200);
    expect(text.body).toContain('get the data key like: GET /dataKey/{dataKeyName}');
    expect(text.body).toContain(`state: unsealed (root key `);
    const body = JSON.parse((await kms.request('/', { headers: json })).body) as { routes: string[]; state: { source: string } };
    expect(body.routes).toContain('GET /dataKey/{dataKeyName}');
    expect(body.state).toMatchObject({ sealed: false, source: 'secret' });
  });

  it('GET /rootKey/status is JSON either way and names the key in use', async () => {
    const answer = await kms.request('/rootKey/status');
    expect(answer.headers['content-type']).toBe('application/json');
    expect(JSON.parse(answer.body)).toMatchObject({ sealed: false, initialized: true, verificationPending: false, pendingRootKeyId: null, rotation: null });
  });
});

describe('keys', () => {
  it('serves one stable key per name, in text and JSON, with credentials in the query or in headers', async () => {
    await seed('kim');
    const text = await kms.request('/dataKey/dk?user=kim&&token=kim-token&&primaryKeyName=pk');
    expect(text.headers['cache-control']).toBe('no-store');
    const key = text.body.trim();
    expect(Buffer.from(key, 'base64')).toHaveLength(32);
    const headers = { ...json, authorization: 'Bearer kim-token', 'x-kms-user': 'kim' };
    expect(JSON.parse((await kms.request('/dataKey/dk?primaryKeyName=pk', { headers })).body)).toEqual({ user: 'kim', primaryKey: 'pk', dataKey: 'dk', key });
  });

  it('keeps what exists: a second create of any name is 409 and the key stays the same', async () => {
    await seed('lee');
    const before = (await kms.request('/dataKey/dk?user=lee&token=lee-token&primaryKeyName=pk')).body;
    for (const path of ['/user/lee?token=other', '/primaryKey/pk?user=lee&token=lee-token', '/dataKey/dk?user=lee&token=lee-token&primaryKeyName=pk']) {
      const answer = await kms.request(path, { method: 'POST', headers: json });
      expect(answer.status, path).toBe(409);
      expect(JSON.parse(answer.body).error.code).toBe('CONFLICT');
    }
    expect((await kms.request('/dataKey/dk?user=lee&token=lee-token&primaryKeyName=pk')).body).toBe(before);
    expect((await kms.request('/dataKey/dk?user=lee&token=other&primaryKeyName=pk')).status).toBe(401);
  });

  it('of concurrent creates of one name exactly one wins', async () => {
    await seed('max');
    const answers = await Promise.all(
      Array.from({ length: 12 }, () => kms.request('/dataKey/same?user=max&token=max-token&primaryKeyName=pk', { method: 'POST' })),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([201, ...Array<number>(11).fill(409)]);
  });

  it('keeps users apart: the same names under two users are two keys, and no token crosses', async () => {
    await seed('ann');
    await seed('bob');
    const ann = (await kms.request('/dataKey/dk?user=ann&token=ann-token&primaryKeyName=pk')).body;
    const bob = (await kms.request('/dataKey/dk?user=bob&token=bob-token&primaryKeyName=pk')).body;
    expect(ann).not.toBe(bob);
    expect((await kms.request('/dataKey/dk?user=bob&token=ann-token&primaryKeyName=pk')).status).toBe(401);
  });
});

describe('refusals', () => {
  it('answers each mistake with its status and a message, never a 500', async () => {
    await seed('ray');
    const cases: Array<[string, string, number, string?]> = [
      ['POST', '/user/nobody', 400, 'missing token\n'],
      ['POST', '/primaryKey/x?token=t', 400, 'missing user\n'],
      ['POST', '/primaryKey/%2E%2E?user=ray&token=ray-token', 400],
      ['GET', '/dataKey/dk?user=ray&token=ray-token&primaryKeyName=%FF', 400],
      ['POST', '/primaryKey/x?user=ray&token=wrong', 401, 'unknown user or wrong token\n'],
      ['POST', '/primaryKey/x?user=ghost&token=ray-token', 401, 'unknown user or wrong token\n'],
      ['GET', '/dataKey/none?user=ray&token=ray-token&primaryKeyName=pk', 404, 'dataKey [none] not found under primaryKey [pk]\n'],
      ['GET', '/dataKey/dk?user=ray&token=ray-token&primaryKeyName=none', 404, 'primaryKey [none] not found\n'],
      ['GET', '/no/such/route', 404],
      ['PUT', '/dataKey/dk', 405],
    ];
    for (const [method, path, status, body] of cases) {
      const answer = await kms.request(path, { method });
      expect(answer.status, `${method} ${path}`).toBe(status);
      if (body !== undefined) expect(answer.body, `${method} ${path}`).toBe(body);
    }
    expect((await kms.request('/dataKey/dk', { method: 'PUT' })).headers.allow).toBe('POST, GET');
  });

  it('refuses root key operations without a sealing service (409, saying why), with or without the operator token', async () => {
    expect((await kms.request('/rootKey/rotate')).status).toBe(409);
    const rotate = await kms.request('/rootKey/rotate', { headers: { ...json, authorization: 'Bearer operator-token' } });
    expect(rotate.status).toBe(409);
    expect(JSON.parse(rotate.body).error.message).toContain('rotate it by replacing the secret');
    expect((await kms.request('/rootKey/recover', { method: 'PUT', body: '{"index":1,"content":"AAAA"}' })).status).toBe(409);
  });

  it("takes a token with spaces (BigDL KMS's tokens are free text) in a Bearer header as in the query", async () => {
    await seed('spaced', 'two%20words');
    const headers = { 'x-kms-user': 'spaced', authorization: 'Bearer two words' };
    expect((await kms.request('/dataKey/dk?primaryKeyName=pk', { headers })).status).toBe(200);
    expect((await kms.request('/dataKey/dk?primaryKeyName=pk', { headers: { ...headers, authorization: 'Bearer two  words' } })).status).toBe(401);
  });

  it('refuses an Authorization header given twice (400), whichever of the two is right, and creates nothing', async () => {
    await seed('twice');
    // Node keeps the first of two in `headers`; a proxy on the way may read the last. Past about a
    // thousand header lines Node drops the rest unsaid, the second Authorization with them: refused too.
    const past = 'a: 1\r\n'.repeat(1990);
    for (const [line, first, second, between = '', refusal = 'given once'] of [
      ['POST /primaryKey/pk-twice', 'Bearer twice-token', 'Bearer wrong-token'],
      ['POST /primaryKey/pk-twice', 'Bearer wrong-token', 'Bearer twice-token'],
      ['POST /rootKey/verify', 'Bearer operator-token', 'Bearer operator-token'], // the operator's, too
      ['POST /primaryKey/pk-twice', 'Bearer twice-token', 'Bearer wrong-token', past, 'more than 1000 header lines'],
    ]) {
      // Raw bytes: Node's HTTP client does not send one header twice.
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const { hostname, port } = new URL(kms.url);
        const socket = connect(Number(port), hostname, () =>
          socket.end(
            `${line} HTTP/1.1\r\nHost: kms\r\nAccept: application/json\r\nContent-Length: 0\r\nX-KMS-User: twice\r\n` +
              `Authorization: ${first}\r\n${between}Authorization: ${second}\r\nConnection: close\r\n\r\n`,
          ),
        );
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('end', () => {
          const [head, body] = Buffer.concat(chunks).toString().split('\r\n\r\n') as [string, string];
          resolve({ status: Number(head.split(' ')[1]), body });
        });
      });
      expect(answer.status, answer.body).toBe(400);
      expect(JSON.parse(answer.body).error.message).toContain(refusal);
    }
    expect((await kms.request('/primaryKey/pk-twice?user=twice&token=twice-token', { method: 'POST' })).status).toBe(201);
  });

  it('answers 503 at once, doing nothing, past 32 requests in the routes on one connection; each request gets its answer', async () => {
    /** Writes the requests at once on one connection; the status of each answer, in order, until the server is done. */
    const pipeline = (requests: string[]) =>
      new Promise<number[]>((resolve, reject) => {
        const { hostname, port } = new URL(kms.url);
        const last = requests.length - 1;
        const socket = connect(Number(port), hostname, () =>
          socket.write(
            requests.map((line, i) => `${line} HTTP/1.1\r\nHost: kms\r\nContent-Length: 0\r\n${i === last ? 'Connection: close\r\n' : ''}\r\n`).join(''),
          ),
        );
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        socket.on('close', () =>
          resolve(
            [
              ...Buffer.concat(chunks)
                .toString('latin1')
                .matchAll(/HTTP\/1\.1 (\d{3}) /g),
            ].map((m) => Number(m[1])),
          ),
        );
      });
    // A few pipelined requests are answered, each.
    expect(await pipeline(Array.from({ length: 8 }, () => 'GET /rootKey/status'))).toEqual(Array.from({ length: 8 }, () => 200));

    // 2,000 at once: 32 are served, the rest answered 503, every one of them answered.
    const statuses = await pipeline(Array.from({ length: 2_000 }, () => 'GET /rootKey/status'));
    expect(statuses).toHaveLength(2_000);
    expect(statuses.filter((status) => status === 503).length).toBeGreaterThan(0);
    expect(statuses.filter((status) => status !== 200 && status !== 503)).toEqual([]);

    // Enrollments: each one answered 201 was made, each one answered 503 was not, none answered neither.
    const users = Array.from({ length: 40 }, (_, i) => `piped${i}`);
    const enrolled = await pipeline(users.map((user) => `POST /user/${user}?token=${user}-token`));
    expect(enrolled).toHaveLength(users.length);
    expect(enrolled.filter((status) => status === 503).length).toBeGreaterThan(0);
    for (const [i, user] of users.entries()) {
      const again = (await kms.request(`/user/${user}?token=${user}-token`, { method: 'POST' })).status;
      expect([user, enrolled[i], again]).toEqual([user, enrolled[i], enrolled[i] === 201 ? 409 : 201]);
    }
    expect((await kms.request('/rootKey/status')).status).toBe(200);
  });

  it('writes nothing for a rejected request', async () => {
    await seed('sam');
    const before = await readFsObjects(kms.dataDir);
    for (const [method, path] of [
      ['POST', '/user/sam?token=again'],
      ['POST', '/primaryKey/pk2?user=sam&token=wrong'],
      ['POST', '/dataKey/dk2?user=sam&token=sam-token&primaryKeyName=missing'],
      ['POST', '/dataKey/..?user=sam&token=sam-token&primaryKeyName=pk'],
      ['POST', '/user/big?token=big'],
    ] as const) {
      const body = path.startsWith('/user/big') ? 'x'.repeat(64 * 1024 + 1) : undefined;
      const answer = await kms.request(path, { method, body });
      expect(answer.status, path).toBeGreaterThanOrEqual(400);
      expect(answer.status, path).toBeLessThan(500);
    }
    expect(await readFsObjects(kms.dataDir)).toEqual(before);
  });
});
