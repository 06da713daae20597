import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLeanHost, startNpmStart, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';
import { findSecrets, readFsObjects } from '../support/storage-snapshot.js';

interface Deployment {
  readonly server: ServerProcess;
  /** Every stored object, read independently of the KMS. */
  snapshot(): Promise<Map<string, Buffer>>;
  stop(): Promise<void>;
}

const rootKey = randomBytes(32).toString('base64');

const deployments: Record<string, () => Promise<Deployment>> = {
  'npm start, embedded store': async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-api-'));
    const server = await startNpmStart({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: rootKey });
    return {
      server,
      snapshot: () => readFsObjects(dataDir),
      stop: async () => {
        await server.stop();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  },
  'lean host, S3 (Ceph RGW)': async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-api-'));
    const bucket: TestBucket = await createTestBucket();
    const server = await startLeanHost({ ...bucket.env, KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: rootKey });
    return {
      server,
      snapshot: () => bucket.readAll(),
      stop: async () => {
        await server.stop();
        await bucket.remove();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  },
};

const json = { accept: 'application/json' };

for (const [name, deploy] of Object.entries(deployments)) {
  describe(`REST API over real HTTPS: ${name}`, () => {
    let d: Deployment;
    let kms: ServerProcess;
    beforeAll(async () => {
      d = await deploy();
      kms = d.server;
    });
    afterAll(async () => d?.stop());

    it("runs BigDL KMS's curl flow verbatim (&& in query strings)", async () => {
      const welcome = await kms.request('/');
      expect(welcome.status).toBe(200);
      expect(welcome.body).toContain('create a user like: POST /user/{userName}?token=a_token_string_for_the_user');

      const enroll = await kms.request('/user/seeduser?token=seedtoken123', { method: 'POST' });
      expect(enroll).toMatchObject({ status: 201, body: 'user [seeduser] is created successfully!\n' });
      const primary = await kms.request('/primaryKey/seedpk?user=seeduser&&token=seedtoken123', { method: 'POST' });
      expect(primary).toMatchObject({ status: 201, body: 'primaryKey [seedpk] is generated successfully!\n' });
      const data = await kms.request('/dataKey/seeddk?user=seeduser&&token=seedtoken123&&primaryKeyName=seedpk', { method: 'POST' });
      expect(data).toMatchObject({ status: 201, body: 'dataKey [seeddk] is generated successfully!\n' });
      const get = await kms.request('/dataKey/seeddk?user=seeduser&&token=seedtoken123&&primaryKeyName=seedpk');
      expect(get.status).toBe(200);
      expect(get.headers['cache-control']).toBe('no-store');
      const key = Buffer.from(get.body.trim(), 'base64');
      expect(key).toHaveLength(32);
      // Stable: the same key every time.
      const again = await kms.request('/dataKey/seeddk?primaryKeyName=seedpk&user=seeduser&token=seedtoken123');
      expect(again.body).toBe(get.body);
    });

    it('answers JSON on every route when asked, and takes credentials in headers', async () => {
      const headers = { ...json, authorization: 'Bearer json-token-1', 'x-kms-user': 'jsonuser' };
      expect(JSON.parse((await kms.request('/', { headers: json })).body)).toMatchObject({ service: 'tee-kms' });
      const enroll = await kms.request('/user/jsonuser', { method: 'POST', headers });
      expect(enroll.status).toBe(201);
      expect(JSON.parse(enroll.body)).toEqual({ user: 'jsonuser', created: true });
      expect(JSON.parse((await kms.request('/primaryKey/pk', { method: 'POST', headers })).body)).toEqual({
        user: 'jsonuser',
        primaryKey: 'pk',
        created: true,
      });
      expect(JSON.parse((await kms.request('/dataKey/dk?primaryKeyName=pk', { method: 'POST', headers })).body)).toEqual({
        user: 'jsonuser',
        primaryKey: 'pk',
        dataKey: 'dk',
        created: true,
      });
      const get = await kms.request('/dataKey/dk?primaryKeyName=pk', { headers });
      expect(get.headers['content-type']).toBe('application/json');
      const body = JSON.parse(get.body) as { key: string };
      expect(Buffer.from(body.key, 'base64')).toHaveLength(32);
      const conflict = await kms.request('/dataKey/dk?primaryKeyName=pk', { method: 'POST', headers });
      expect(conflict.status).toBe(409);
      expect(JSON.parse(conflict.body)).toEqual({ error: { code: 'CONFLICT', message: 'dataKey [dk] already exists; it was not changed' } });
      // Header and query must agree.
      const mixed = await kms.request('/dataKey/dk?primaryKeyName=pk&token=other', { headers });
      expect(mixed.status).toBe(400);
      expect(mixed.body).not.toContain('json-token-1');
    });

    it('answers every documented status code', async () => {
      const t = 'status-token';
      expect((await kms.request(`/user/st?token=${t}`, { method: 'POST' })).status).toBe(201);
      expect((await kms.request(`/primaryKey/pk?user=st&token=${t}`, { method: 'POST' })).status).toBe(201);
      // 400: missing parameters and unsafe names.
      expect(await kms.request('/user/st2', { method: 'POST' })).toMatchObject({ status: 400, body: 'missing token\n' });
      expect(await kms.request(`/primaryKey/pk2?token=${t}`, { method: 'POST' })).toMatchObject({ status: 400, body: 'missing user\n' });
      expect(await kms.request(`/dataKey/dk?user=st&token=${t}`, { method: 'POST' })).toMatchObject({ status: 400, body: 'missing primaryKeyName\n' });
      for (const bad of ['%2E%2E', 'a%2Fb', 'a%00b', 'x'.repeat(65), '%E0%A4%A', '.hidden', 'a%20b']) {
        const answer = await kms.request(`/primaryKey/${bad}?user=st&token=${t}`, { method: 'POST' });
        expect(answer.status, bad).toBe(400);
      }
      expect((await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=..`)).status).toBe(400);
      expect((await kms.request(`/dataKey/dk?user=st&user=other&token=${t}&primaryKeyName=pk`)).status).toBe(400);
      // 401: unknown user and wrong token get one answer.
      const unknown = await kms.request(`/primaryKey/pk?user=nobody&token=${t}`, { method: 'POST' });
      const wrong = await kms.request('/primaryKey/pk?user=st&token=wrong-token', { method: 'POST' });
      expect(unknown).toMatchObject({ status: 401, body: 'unknown user or wrong token\n' });
      expect(wrong).toMatchObject({ status: 401, body: unknown.body });
      expect((await kms.request('/dataKey/dk?user=st&token=wrong&primaryKeyName=pk')).status).toBe(401);
      expect((await kms.request('/primaryKey/pk', { method: 'POST', headers: { authorization: 'Basic abc', 'x-kms-user': 'st' } })).status).toBe(400);
      // 404: missing keys and routes.
      expect(await kms.request(`/dataKey/nope?user=st&token=${t}&primaryKeyName=pk`)).toMatchObject({
        status: 404,
        body: 'dataKey [nope] not found under primaryKey [pk]\n',
      });
      expect(await kms.request(`/dataKey/nope?user=st&token=${t}&primaryKeyName=nopk`)).toMatchObject({ status: 404, body: 'primaryKey [nopk] not found\n' });
      expect((await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=nopk`, { method: 'POST' })).status).toBe(404);
      expect((await kms.request('/no/such/route')).status).toBe(404);
      // 405 with Allow.
      const put = await kms.request('/dataKey/dk', { method: 'PUT' });
      expect(put.status).toBe(405);
      expect(put.headers.allow).toBe('POST, GET');
      // 413: a body over 64 KiB, on a route that reads it and on one that does not; nothing created.
      const big = 'a'.repeat(64 * 1024 + 1);
      expect(await kms.request('/rootKey/recover', { method: 'PUT', body: big })).toMatchObject({ status: 413, body: 'the body is larger than 65536 bytes\n' });
      expect(await kms.request('/user/big?token=big-token', { method: 'POST', body: big })).toMatchObject({ status: 413 });
      expect((await kms.request('/user/big?token=big-token', { method: 'POST' })).status).toBe(201);
      // 409: the existing record stays untouched.
      expect((await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(201);
      const before = await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=pk`);
      expect((await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=pk`, { method: 'POST' })).status).toBe(409);
      expect((await kms.request(`/primaryKey/pk?user=st&token=${t}`, { method: 'POST' })).status).toBe(409);
      expect(await kms.request('/user/st?token=another-token', { method: 'POST' })).toMatchObject({ status: 409 });
      expect((await kms.request(`/dataKey/dk?user=st&token=${t}&primaryKeyName=pk`)).body).toBe(before.body);
      expect((await kms.request('/dataKey/dk?user=st&token=another-token&primaryKeyName=pk')).status).toBe(401);
    });

    it('decodes query strings strictly: a %-sequence that is not UTF-8 is a 400, never a lossy token that others would match', async () => {
      // URLSearchParams would make both of these U+FFFD, one token unlocking the other's user.
      for (const token of ['%FF', '%FE', '%ED%A0%80', 'a%zz', 'a%']) {
        const answer = await kms.request(`/user/lossy?token=${token}`, { method: 'POST' });
        expect(answer, token).toMatchObject({ status: 400, body: expect.stringContaining('bad percent-encoding in the query string') });
      }
      // Valid UTF-8 is a token like any other, and distinct from its neighbours; `+` is a space, as in forms.
      expect((await kms.request('/user/lossy?token=caf%C3%A9+au+lait', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/primaryKey/pk?user=lossy&token=caf%C3%A9%20au%20lait', { method: 'POST' })).status).toBe(201);
      expect((await kms.request('/primaryKey/pk2?user=lossy&token=caf%C3%A8+au+lait', { method: 'POST' })).status).toBe(401);
      const headerForm = { authorization: 'Bearer caf%C3%A9+au+lait', 'x-kms-user': 'lossy' }; // headers are not form-decoded
      expect((await kms.request('/primaryKey/pk3', { method: 'POST', headers: headerForm })).status).toBe(401);
    });

    it('acts on no request that arrives broken: a malformed or cut-short body changes nothing, is logged as 400, never 500', async () => {
      const t = 'broken-token';
      const auth = `X-KMS-User: broken\r\nAuthorization: Bearer ${t}\r\n`;
      await kms.request(`/user/broken?token=${t}`, { method: 'POST' });
      await kms.request(`/primaryKey/pk?user=broken&token=${t}`, { method: 'POST' });
      await kms.request(`/dataKey/dk?user=broken&token=${t}&primaryKeyName=pk`, { method: 'POST' });
      const before = await d.snapshot();
      const logFrom = kms.output().length;
      // Chunked framing that Node's parser refuses ("zz" is no chunk size): Node answers 400 itself.
      const badChunk = (line: string) => `${line} HTTP/1.1\r\nHost: localhost\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n`;
      const broken = ['POST /user/late1?token=t', 'POST /primaryKey/late1', 'POST /dataKey/late1?primaryKeyName=pk', 'GET /dataKey/dk?primaryKeyName=pk'];
      for (const line of broken) expect(await kms.raw(badChunk(line)), line).toMatch(/^HTTP\/1\.1 400 /);
      // A body announced and never finished: the client gives up and closes.
      const cut = (line: string) => `${line} HTTP/1.1\r\nHost: localhost\r\n${auth}Content-Length: 100\r\n\r\n{`;
      const abandoned = ['POST /user/late2?token=t', 'POST /primaryKey/late2', 'PUT /rootKey/recover'];
      for (const line of abandoned) expect(await kms.raw(cut(line), { closeAfterMs: 300 }), line).toBe('');

      const logged = () =>
        kms
          .output()
          .slice(logFrom)
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { level: string; fn?: string; status?: number });
      const deadline = Date.now() + 5_000;
      while (logged().filter((l) => l.fn !== undefined).length < broken.length + abandoned.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const lines = logged();
      expect(
        lines
          .filter((l) => l.fn !== undefined)
          .map((l) => `${l.fn} ${l.status}`)
          .sort(),
      ).toEqual(
        [
          'createDataKey 400',
          'createPrimaryKey 400',
          'createPrimaryKey 400',
          'enrollUser 400',
          'enrollUser 400',
          'getDataKey 400',
          'recoverRootKey 400',
        ].sort(),
      );
      expect(lines.filter((l) => l.level !== 'info')).toEqual([]);
      expect(await d.snapshot()).toEqual(before);
      // The names are free: nothing was created behind the 400s.
      expect((await kms.request('/user/late1?token=t', { method: 'POST' })).status).toBe(201);

      // A whole request followed by bytes Node refuses, in one write: Node answers 400 and closes the
      // connection, so the first request's answer could not arrive; it must not take effect either.
      expect(await kms.raw('POST /user/late3?token=t HTTP/1.1\r\nHost: localhost\r\n\r\nGARBAGE\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
      expect((await kms.request('/user/late3?token=t', { method: 'POST' })).status).toBe(201);
    });

    it('bounds what a flood of unauthenticated token checks can queue: the excess is 503 BUSY at once, never 500; a known user is served meanwhile', async () => {
      const t = 'flood-token';
      await kms.request(`/user/flood?token=${t}`, { method: 'POST' });
      await kms.request(`/primaryKey/pk?user=flood&token=${t}`, { method: 'POST' }); // its credentials are now cached
      // Each unknown user costs a dummy scrypt (so timing does not reveal who exists).
      const flood = Array.from({ length: 250 }, (_, i) =>
        kms.request('/dataKey/dk?primaryKeyName=pk', { headers: { authorization: `Bearer wrong-${i}`, 'x-kms-user': `nobody${i}` } }),
      );
      const known = await kms.request(`/dataKey/dk?user=flood&token=${t}&primaryKeyName=pk`, { method: 'POST' });
      const answers = await Promise.all(flood);
      expect(known.status).toBe(201);
      expect([...new Set(answers.map((a) => a.status))].sort()).toEqual([401, 503]);
      const busy = answers.find((a) => a.status === 503)!;
      expect(busy.body).toBe('too many token checks in progress; retry shortly\n');
      expect(busy.headers['retry-after']).toBeDefined();
      expect(kms.output()).not.toContain('"level":"error"');
    });

    it('lets exactly one of 16 concurrent creates of one name win; the rest are 409', async () => {
      const t = 'race-token';
      await kms.request(`/user/racer?token=${t}`, { method: 'POST' });
      await kms.request(`/primaryKey/pk?user=racer&token=${t}`, { method: 'POST' });
      const answers = await Promise.all(
        Array.from({ length: 16 }, () => kms.request(`/dataKey/raced?user=racer&token=${t}&primaryKeyName=pk`, { method: 'POST' })),
      );
      expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
      expect(answers.filter((a) => a.status === 409)).toHaveLength(15);
      const primaries = await Promise.all(Array.from({ length: 8 }, () => kms.request(`/primaryKey/racedpk?user=racer&token=${t}`, { method: 'POST' })));
      expect(primaries.map((a) => a.status).sort()).toEqual([201, 409, 409, 409, 409, 409, 409, 409]);
      const users = await Promise.all(Array.from({ length: 8 }, (_, i) => kms.request(`/user/raceduser?token=tok-${i}`, { method: 'POST' })));
      const winner = users.findIndex((a) => a.status === 201);
      expect(users.filter((a) => a.status === 201)).toHaveLength(1);
      // The stored user is the winner's: only the winner's token works.
      for (let i = 0; i < 8; i++) {
        const status = (await kms.request(`/primaryKey/p${i}?user=raceduser&token=tok-${i}`, { method: 'POST' })).status;
        expect(status, `token ${i}`).toBe(i === winner ? 201 : 401);
      }
    });

    it('isolates users: same key names, no way across', async () => {
      await kms.request('/user/alice?token=alice-token', { method: 'POST' });
      await kms.request('/user/bob?token=bob-token-x', { method: 'POST' });
      for (const user of ['alice', 'bob']) {
        const tok = `${user}-token${user === 'bob' ? '-x' : ''}`;
        expect((await kms.request(`/primaryKey/pk1?user=${user}&token=${tok}`, { method: 'POST' })).status).toBe(201);
        expect((await kms.request(`/dataKey/dk1?user=${user}&token=${tok}&primaryKeyName=pk1`, { method: 'POST' })).status).toBe(201);
      }
      const alice = (await kms.request('/dataKey/dk1?user=alice&token=alice-token&primaryKeyName=pk1')).body;
      const bob = (await kms.request('/dataKey/dk1?user=bob&token=bob-token-x&primaryKeyName=pk1')).body;
      expect(alice).not.toBe(bob);
      expect((await kms.request('/dataKey/dk1?user=bob&token=alice-token&primaryKeyName=pk1')).status).toBe(401);
      await kms.request('/primaryKey/only-alice?user=alice&token=alice-token', { method: 'POST' });
      expect((await kms.request('/dataKey/dk1?user=bob&token=bob-token-x&primaryKeyName=only-alice')).status).toBe(404);
    });

    it('writes nothing for rejected requests', async () => {
      await kms.request('/user/carol?token=carol-token', { method: 'POST' });
      await kms.request('/primaryKey/pk?user=carol&token=carol-token', { method: 'POST' });
      const before = await d.snapshot();
      const rejected = [
        ['POST', '/user/carol?token=x'],
        ['POST', '/user/%2E%2E?token=x'],
        ['POST', '/user/ok'],
        ['POST', '/primaryKey/pk?user=carol&token=wrong'],
        ['POST', '/primaryKey/pk?user=carol&token=carol-token'],
        ['POST', '/primaryKey/a%2Fb?user=carol&token=carol-token'],
        ['POST', '/dataKey/dk?user=carol&token=carol-token&primaryKeyName=missing'],
        ['POST', '/dataKey/dk?user=carol&token=wrong&primaryKeyName=pk'],
        ['POST', '/dataKey/..?user=carol&token=carol-token&primaryKeyName=pk'],
        ['POST', '/primaryKey/x?user=nobody&token=t'],
        ['DELETE', '/dataKey/dk'],
      ] as const;
      for (const [method, path] of rejected) {
        const answer = await kms.request(path, { method });
        expect(answer.status, `${method} ${path}`).toBeGreaterThanOrEqual(400);
        expect(answer.status, `${method} ${path}`).toBeLessThan(500);
      }
      expect(await d.snapshot()).toEqual(before);
    });

    it('keeps keys and tokens out of storage and logs', async () => {
      const token = `scan-token-${randomBytes(8).toString('hex')}`;
      await kms.request(`/user/scanner?token=${token}`, { method: 'POST' });
      // `&` typed for `?`: the whole query lands in the path, which the name check refuses. The access
      // log shows the route's template then, never the path the client sent.
      const typo = await kms.request(`/dataKey/dk0&user=scanner&token=${token}&primaryKeyName=pk`);
      expect(typo.status).toBe(400);
      expect(typo.body).not.toContain(token);
      await kms.request('/primaryKey/pk', { method: 'POST', headers: { authorization: `Bearer ${token}`, 'x-kms-user': 'scanner' } });
      const keys: Buffer[] = [];
      for (let i = 0; i < 5; i++) {
        await kms.request(`/dataKey/dk${i}?user=scanner&token=${token}&primaryKeyName=pk`, { method: 'POST' });
        keys.push(Buffer.from((await kms.request(`/dataKey/dk${i}?user=scanner&token=${token}&primaryKeyName=pk`)).body.trim(), 'base64'));
      }
      await kms.request(`/dataKey/dk0?user=scanner&token=wrong-${token}&primaryKeyName=pk`);
      const stored = [...(await d.snapshot()).values()].map((b) => b.toString('latin1')).join('\n');
      expect(stored).toContain('"kind":"data-key"');
      const secrets = [token, Buffer.from(rootKey, 'base64'), ...keys];
      expect(findSecrets(stored, secrets)).toEqual([]);
      await kms.outputContaining('"path":"/dataKey/dk0"');
      await kms.outputContaining('"fn":"getDataKey","method":"GET","path":"/dataKey/{name}","status":400');
      // A token where a name goes passes the name rules; a 400 logs the template, not that "name".
      expect((await kms.request(`/user/${token}`, { method: 'POST' })).status).toBe(400);
      await kms.request('/'); // a later request, so the line above has been written
      expect(findSecrets(await kms.settledOutput(), secrets)).toEqual([]);
    });
  });
}
