// The sealed channel through real HTTP on the in-process lean host, attacked from the protocol with
// the test's own client (test/support/sealed-client.ts).
import { randomBytes } from 'node:crypto';
import { decodeProtectedHeader, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, type InProcessKms } from '../../support/in-process.js';
import { attest, seal, type Attested } from '../../support/sealed-client.js';

const USER = 'sealed-user';
const TOKEN = `tok-${randomBytes(12).toString('hex')}`;

describe('sealed requests and answers', () => {
  let kms: InProcessKms;
  let attested: Attested;
  const sealedCall = async (method: string, target: string, options: { token?: string; user?: string } = {}) => {
    const request = await seal(attested, { method, target, token: options.token ?? TOKEN, user: options.user ?? USER });
    const answer = await kms.request(target, { method, headers: { authorization: request.authorization } });
    return { answer, request };
  };

  beforeAll(async () => {
    kms = await startInProcess();
    attested = await attest((path) => kms.request(path));
    // Set up in the clear: BigDL KMS's flow keeps working beside the sealed one.
    expect((await kms.request(`/user/${USER}?token=${TOKEN}`, { method: 'POST' })).status).toBe(201);
    expect((await kms.request(`/primaryKey/pk?user=${USER}&token=${TOKEN}`, { method: 'POST' })).status).toBe(201);
  });
  afterAll(() => kms?.close());

  it('attestation needs a base64url nonce of 16 to 64 bytes, and binds it with the service key', async () => {
    for (const query of ['', '?nonce=', `?nonce=${randomBytes(15).toString('base64url')}`, `?nonce=${randomBytes(65).toString('base64url')}`, '?nonce=a+b/c']) {
      const answer = await kms.request(`/attestation${query}`, { headers: { accept: 'application/json' } });
      expect(answer.status, query).toBe(400);
      expect(JSON.parse(answer.body).error.code).toBe('BAD_REQUEST');
    }
    const again = await attest((path) => kms.request(path));
    expect(again.serviceKey).toEqual(attested.serviceKey); // one key per root key, whatever the nonce
    expect(attested.serviceKey).toMatchObject({ kty: 'OKP', crv: 'X25519', kid: attested.rootKeyId });
  });

  it('a sealed data key round trip: the answer keeps its status and is a JWE only the client opens', async () => {
    const create = await sealedCall('POST', '/dataKey/dk1?primaryKeyName=pk');
    expect(create.answer.status).toBe(201);
    expect(create.answer.headers['content-type']).toBe('application/jose');
    expect(await create.request.open(create.answer.body)).toEqual({ user: USER, primaryKey: 'pk', dataKey: 'dk1', created: true });

    const get = await sealedCall('GET', '/dataKey/dk1?primaryKeyName=pk');
    expect(get.answer.status).toBe(200);
    const { key } = (await get.request.open(get.answer.body)) as { key: string };
    expect(get.answer.body).not.toContain(key);
    const plain = await kms.request(`/dataKey/dk1?primaryKeyName=pk&user=${USER}&token=${TOKEN}`);
    expect(plain.body.trim()).toBe(key);
  });

  it('errors after the credential is opened are sealed too; an enrollment sealed works', async () => {
    const wrong = await sealedCall('GET', '/dataKey/dk1?primaryKeyName=pk', { token: 'not-the-token' });
    expect(wrong.answer.status).toBe(401);
    expect(wrong.answer.headers['content-type']).toBe('application/jose');
    expect(await wrong.request.open(wrong.answer.body)).toMatchObject({ error: { code: 'UNAUTHORIZED' } });

    const token = `new-${randomBytes(8).toString('hex')}`;
    const enroll = await seal(attested, { method: 'POST', target: '/user/sealed-enrollee', token });
    const answer = await kms.request('/user/sealed-enrollee', { method: 'POST', headers: { authorization: enroll.authorization } });
    expect(answer.status).toBe(201);
    expect((await kms.request(`/primaryKey/x?user=sealed-enrollee&token=${token}`, { method: 'POST' })).status).toBe(201);

    // A credential naming another user than the path's is refused, and enrolls nobody.
    const other = await seal(attested, { method: 'POST', target: '/user/sealed-other', token, user: 'someone-else' });
    const refused = await kms.request('/user/sealed-other', { method: 'POST', headers: { authorization: other.authorization } });
    expect(refused.status).toBe(400);
    expect(await other.open(refused.body)).toMatchObject({ error: { code: 'BAD_REQUEST' } });
    expect((await kms.request(`/user/sealed-other?token=${token}`, { method: 'POST' })).status).toBe(201);
  });

  it('a replayed credential is refused and changes nothing', async () => {
    const request = await seal(attested, { method: 'POST', target: '/dataKey/replayed?primaryKeyName=pk', token: TOKEN, user: USER });
    const call = () =>
      kms.request('/dataKey/replayed?primaryKeyName=pk', { method: 'POST', headers: { authorization: request.authorization, accept: 'application/json' } });
    expect((await call()).status).toBe(201);
    const replay = await call();
    expect(replay.status).toBe(401); // not 409: the replay never reached the route
    expect(replay.headers['content-type']).toBe('application/json');
    expect(JSON.parse(replay.body).error.message).toContain('used already');
  });

  it('a credential moved to another route, key, method or query is refused, and nothing is created', async () => {
    const made = await seal(attested, { method: 'GET', target: '/dataKey/dk1?primaryKeyName=pk', token: TOKEN, user: USER });
    const moves: [string, string][] = [
      ['GET', '/dataKey/dk2?primaryKeyName=pk'],
      ['POST', '/dataKey/dk1?primaryKeyName=pk'],
      ['GET', '/dataKey/dk1?primaryKeyName=pk&x=1'],
      ['POST', '/primaryKey/moved'],
    ];
    for (const [method, target] of moves) {
      const answer = await kms.request(target, { method, headers: { authorization: made.authorization, accept: 'application/json' } });
      expect(answer.status, `${method} ${target}`).toBe(401);
      expect(JSON.parse(answer.body).error.message).toContain('another request');
    }
    expect((await kms.request(`/primaryKey/moved?user=${USER}&token=${TOKEN}`, { method: 'POST' })).status).toBe(201);
  });

  it('a stale or future iat is refused in plain JSON', async () => {
    for (const skew of [-90, 90]) {
      const request = await seal(attested, {
        method: 'GET',
        target: '/dataKey/dk1?primaryKeyName=pk',
        token: TOKEN,
        user: USER,
        iat: Math.floor(Date.now() / 1000) + skew,
      });
      const answer = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: request.authorization, accept: 'application/json' } });
      expect(answer.status).toBe(401);
      expect(answer.headers['content-type']).toBe('application/json');
      expect(JSON.parse(answer.body).error.message).toContain('stale');
    }
  });

  it('tampered, truncated, foreign and malformed credentials are 400s that reveal nothing', async () => {
    const request = await seal(attested, { method: 'GET', target: '/dataKey/dk1?primaryKeyName=pk', token: TOKEN, user: USER });
    const jwe = request.authorization.slice('Sealed '.length);
    const parts = jwe.split('.');
    const flip = (part: string) => {
      const bytes = Buffer.from(part, 'base64url');
      bytes[bytes.length - 1]! ^= 1;
      return bytes.toString('base64url');
    };
    const tampered = [
      [parts[0], parts[1], parts[2], flip(parts[3]!), parts[4]].join('.'), // ciphertext
      [parts[0], parts[1], parts[2], parts[3], flip(parts[4]!)].join('.'), // tag
      [parts[0], flip(parts[1]!), parts[2], parts[3], parts[4]].join('.'), // wrapped key
      parts.slice(0, 4).join('.'),
      'not-a-jwe',
      '',
    ];
    for (const value of tampered) {
      const answer = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: `Sealed ${value}`, accept: 'application/json' } });
      expect(answer.status, value.slice(0, 40)).toBe(400);
      expect(answer.headers['content-type']).toBe('application/json');
      expect(answer.body).not.toContain(TOKEN);
    }
    // Sealed to a key of this service's making, but with claims that are not a credential.
    for (const claims of [
      { token: TOKEN },
      { ...{ token: TOKEN, htm: 'GET', htu: '/dataKey/dk1?primaryKeyName=pk', iat: Math.floor(Date.now() / 1000), jti: 'short' } },
    ]) {
      const bad = await seal(attested, { method: 'GET', target: '', token: '', claims });
      const answer = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: bad.authorization, accept: 'application/json' } });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.body).error.message).toContain('malformed sealed credential');
    }
  });

  it('a response key the answer cannot be sealed to is a 400 before the route runs, and creates nothing', async () => {
    // Small-order X25519 points (RFC 7748, section 6.1): every key agreement with them fails, so the
    // answer could never be sealed; a non-point P-256 key and a private JWK are refused alike.
    const smallOrder = ['00'.repeat(32), '01' + '00'.repeat(31), 'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'];
    const responseKeys = [
      ...smallOrder.map((hex) => ({ kty: 'OKP', crv: 'X25519', x: Buffer.from(hex, 'hex').toString('base64url') })),
      { kty: 'EC', crv: 'P-256', x: Buffer.alloc(32).toString('base64url'), y: Buffer.alloc(32).toString('base64url') },
    ];
    for (const [i, responseKey] of responseKeys.entries()) {
      const target = `/dataKey/unsealable-${i}?primaryKeyName=pk`;
      const claims = {
        user: USER,
        token: TOKEN,
        htm: 'POST',
        htu: target,
        iat: Math.floor(Date.now() / 1000),
        jti: randomBytes(16).toString('base64url'),
        responseKey,
      };
      const bad = await seal(attested, { method: 'POST', target, token: TOKEN, claims });
      const answer = await kms.request(target, { method: 'POST', headers: { authorization: bad.authorization, accept: 'application/json' } });
      expect(answer.status, JSON.stringify(responseKey)).toBe(400);
      expect(JSON.parse(answer.body).error.message).toContain('"responseKey"');
      const plain = await kms.request(`/dataKey/unsealable-${i}?primaryKeyName=pk&user=${USER}&token=${TOKEN}`);
      expect(plain.status).toBe(404); // the route never ran
    }
  });

  it('a credential sealed to another root key is SERVICE_KEY_CHANGED, naming the current one', async () => {
    const request = await seal(attested, { method: 'GET', target: '/dataKey/dk1?primaryKeyName=pk', token: TOKEN, user: USER, kid: 'ab'.repeat(16) });
    const answer = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: request.authorization, accept: 'application/json' } });
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.body).error).toMatchObject({ code: 'SERVICE_KEY_CHANGED', rootKeyId: attested.rootKeyId });
  });

  it('takes ECDH-ES direct and P-256 response keys; refuses a token also given in the clear', async () => {
    const direct = await seal(attested, {
      method: 'GET',
      target: '/dataKey/dk1?primaryKeyName=pk',
      token: TOKEN,
      user: USER,
      alg: 'ECDH-ES',
      responseCurve: 'P-256',
    });
    const answer = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: direct.authorization } });
    expect(answer.status).toBe(200);
    expect(await direct.open(answer.body)).toMatchObject({ dataKey: 'dk1' });

    const target = `/dataKey/dk1?primaryKeyName=pk&token=${TOKEN}`;
    const both = await seal(attested, { method: 'GET', target, token: TOKEN, user: USER });
    const refused = await kms.request(target, { headers: { authorization: both.authorization } });
    expect(refused.status).toBe(400);
    expect(await both.open(refused.body)).toMatchObject({ error: { code: 'BAD_REQUEST' } });

    // A sealed user that another user in the header or query contradicts, named as such.
    const named = await seal(attested, { method: 'GET', target: '/dataKey/dk1?primaryKeyName=pk', token: TOKEN, user: USER });
    const contradicted = await kms.request('/dataKey/dk1?primaryKeyName=pk', { headers: { authorization: named.authorization, 'x-kms-user': 'someone-else' } });
    expect(contradicted.status).toBe(400);
    expect(await named.open(contradicted.body)).toMatchObject({ error: { message: 'the sealed credential names another user than the header or the query' } });
  });

  it('a client reusing its epk and response key gets answers under one ephemeral key; tampering still fails', async () => {
    const epk = (await generateKeyPair('ECDH-ES+A256KW', { crv: 'X25519', extractable: true })).privateKey;
    const response = await generateKeyPair('ECDH-ES+A256KW', { crv: 'X25519' });
    const target = '/dataKey/dk1?primaryKeyName=pk';
    const reusing = () => seal(attested, { method: 'GET', target, token: TOKEN, user: USER, epk, response });
    const keys: string[] = [];
    const answerEpks: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const request = await reusing();
      const answer = await kms.request(target, { headers: { authorization: request.authorization } });
      expect(answer.status).toBe(200);
      keys.push(((await request.open(answer.body)) as { key: string }).key);
      answerEpks.push(decodeProtectedHeader(answer.body).epk);
    }
    expect(new Set(keys).size).toBe(1);
    expect(answerEpks[1]).toEqual(answerEpks[0]); // the server's ephemeral key for this response key, reused
    expect(answerEpks[2]).toEqual(answerEpks[0]);

    // Every part of a message under the cached epk still counts: each tampered copy is refused unread.
    const good = (await reusing()).authorization.slice('Sealed '.length);
    const parts = good.split('.');
    const flip = (part: string) => `${part.slice(0, -2)}${part.at(-2) === 'A' ? 'B' : 'A'}${part.at(-1)}`;
    for (const i of [1, 2, 3, 4]) {
      const tampered = parts.map((p, j) => (j === i ? flip(p) : p)).join('.');
      const answer = await kms.request(target, { headers: { authorization: `Sealed ${tampered}`, accept: 'application/json' } });
      expect(answer.status, `part ${i}`).toBe(400);
      expect(JSON.parse(answer.body).error.code).toBe('BAD_REQUEST');
    }
    const intact = await kms.request(target, { headers: { authorization: `Sealed ${good}` } });
    expect(intact.status).toBe(200);
    // A fresh response key (a standard client) gets a fresh ephemeral key of the server's.
    const standard = await seal(attested, { method: 'GET', target, token: TOKEN, user: USER });
    const answer = await kms.request(target, { headers: { authorization: standard.authorization } });
    expect(answer.status).toBe(200);
    expect(decodeProtectedHeader(answer.body).epk).not.toEqual(answerEpks[0]);
  });
});

describe('KMS_REQUIRE_SEALED', () => {
  let kms: InProcessKms;
  beforeAll(async () => {
    kms = await startInProcess({ env: { KMS_REQUIRE_SEALED: 'true' } });
  });
  afterAll(() => kms?.close());

  it('refuses credentials in the clear with 401 saying to seal them, and changes nothing', async () => {
    for (const [path, headers] of [
      ['/user/clear?token=clear-token', {}],
      ['/user/clear?token=clear-token&token=other', {}],
      ['/user/clear', { authorization: 'Bearer clear-token' }],
    ] as const) {
      const answer = await kms.request(path, { method: 'POST', headers: { ...headers, accept: 'application/json' } });
      expect(answer.status).toBe(401);
      expect(JSON.parse(answer.body).error.message).toContain('Authorization: Sealed');
    }
    // Public routes need no credentials.
    expect((await kms.request('/')).status).toBe(200);
    const attested = await attest((path) => kms.request(path));
    const enroll = await seal(attested, { method: 'POST', target: '/user/clear', token: 'clear-token' });
    expect((await kms.request('/user/clear', { method: 'POST', headers: { authorization: enroll.authorization } })).status).toBe(201); // not 409: nothing was enrolled before
  });
});

describe('the operator token sealed, with KMS_REQUIRE_SEALED', () => {
  const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
  let kms: InProcessKms;
  let attested: Attested;

  beforeAll(async () => {
    kms = await startInProcess({ env: { KMS_ADMIN_TOKEN: ADMIN, KMS_REQUIRE_SEALED: 'true' } });
    attested = await attest((path) => kms.request(path));
  });
  afterAll(() => kms?.close());

  it('refuses a sealed verify that also carries a token in the query, which crossed the way in the clear', async () => {
    // Rotate reads the operator token the same way: test/functions/sealed-channel.test.ts.
    for (const [method, path] of [['POST', '/rootKey/verify']] as const) {
      for (const token of [ADMIN, 'anything-else']) {
        const target = `${path}?token=${token}`;
        const request = await seal(attested, { method, target, token: ADMIN });
        const answer = await kms.request(target, { method, headers: { authorization: request.authorization, accept: 'application/json' } });
        expect(answer.status, `${method} ${target}`).toBe(400);
        expect(await request.open(answer.body)).toMatchObject({
          error: { code: 'BAD_REQUEST', message: 'a sealed request carries its token sealed, never also in the query' },
        });
      }
    }
  });
});

describe('enrollment names its user in the path', () => {
  let kms: InProcessKms;
  beforeAll(async () => {
    kms = await startInProcess();
  });
  afterAll(() => kms?.close());

  it('refuses another user in X-KMS-User or the query (400), and enrolls nobody; the same user there is taken', async () => {
    const token = `tok-${randomBytes(12).toString('hex')}`;
    for (const [query, headers] of [
      ['&user=frank', {}],
      ['', { 'x-kms-user': 'eve' }],
    ] as const) {
      const answer = await kms.request(`/user/dave?token=${token}${query}`, { method: 'POST', headers: { ...headers, accept: 'application/json' } });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.body).error.message).toBe('the header or query names another user than the path');
    }
    const same = await kms.request(`/user/dave?token=${token}&user=dave`, { method: 'POST', headers: { 'x-kms-user': 'dave' } });
    expect(same.status).toBe(201); // not 409: the refusals enrolled nobody
  });
});
