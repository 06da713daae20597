// The sealed channel end to end through real processes: `npm start` behind a recording proxy that
// plays the ingress, and single functions under functions-framework. The test's own client
// (test/support/sealed-client.ts) speaks the protocol.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsClient } from '../../client/index.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { freePort, httpCall, startFunctionsFramework, startLeanHost, startServer, type ServerProcess } from '../support/processes.js';
import { encodings, leaked, recordingProxy, type RecordingProxy } from '../support/recording-proxy.js';
import { failure } from '../support/kms-error.js';
import { attest, seal, type Attested, type SealedRequest } from '../support/sealed-client.js';

const ADMIN_TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const USER_TOKEN = `user-${randomBytes(12).toString('hex')}`;

/**
 * `npm start` (plaintext HTTP, an admin token, `env` added) on a fresh data directory, behind a
 * recording proxy, for one describe block: `kms()` and `proxy()` once its beforeAll has run.
 */
function npmStartBehindProxy(tmpPrefix: string, env: Record<string, string> = {}): { kms: () => ServerProcess; proxy: () => RecordingProxy } {
  let dataDir: string | undefined;
  let kms: ServerProcess | undefined;
  let proxy: RecordingProxy | undefined;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), tmpPrefix));
    const port = await freePort();
    kms = await startServer({
      command: 'npm',
      args: ['start', '--silent'],
      env: { PORT: String(port), KMS_DATA_DIR: dataDir, KMS_TLS: 'off', KMS_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
      url: `http://127.0.0.1:${port}`,
    });
    proxy = await recordingProxy(port);
  });
  afterAll(async () => {
    await proxy?.close();
    await kms?.stop();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });
  return { kms: () => kms!, proxy: () => proxy! };
}

describe('npm start behind a recording proxy (KMS_TLS=off)', () => {
  const { kms, proxy } = npmStartBehindProxy('tee-kms-sealed-');
  const viaProxy = (path: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}) =>
    httpCall(`http://127.0.0.1:${proxy().port}${path}`, options);
  const sealedCall = async (attested: Attested, method: string, target: string, token: string, user?: string, body?: string) => {
    const request = await seal(attested, { method, target, token, ...(user === undefined ? {} : { user }), ...(body ? { body } : {}) });
    const answer = await viaProxy(target, {
      method,
      headers: { authorization: request.authorization, accept: 'application/json', ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body } : {}),
    });
    return { answer, json: answer.headers['content-type'] === 'application/jose' ? await request.open(answer.body) : JSON.parse(answer.body) };
  };

  it('the proxy sees neither the token, the admin token nor any data key; the keys equal the plaintext flow', async () => {
    // The first rotate initializes (no credentials), directly: its shares are not this channel's business.
    expect((await kms().request('/rootKey/rotate')).status).toBe(200);

    let attested = await attest((path) => viaProxy(path));
    expect((await sealedCall(attested, 'POST', '/user/alice', USER_TOKEN)).answer.status).toBe(201);
    expect((await sealedCall(attested, 'POST', '/primaryKey/pk1', USER_TOKEN, 'alice')).answer.status).toBe(201);
    expect((await sealedCall(attested, 'POST', '/dataKey/dk1?primaryKeyName=pk1', USER_TOKEN, 'alice')).answer.status).toBe(201);
    const got = await sealedCall(attested, 'GET', '/dataKey/dk1?primaryKeyName=pk1', USER_TOKEN, 'alice');
    expect(got.answer.status).toBe(200);
    const dataKey = (got.json as { key: string }).key;

    // A token in the query beside the sealed one crossed the way in the clear: refused, whatever it is.
    const both = await sealedCall(attested, 'GET', '/rootKey/rotate?token=not-the-admin-token', ADMIN_TOKEN);
    expect(both.answer.status).toBe(400);
    expect(both.json).toMatchObject({ error: { message: 'a sealed request carries its token sealed, never also in the query' } });
    expect(JSON.parse((await kms().request('/rootKey/status', { headers: { accept: 'application/json' } })).body)).toMatchObject({ pendingRootKeyId: null });

    // A rotation, sealed with the admin token: its answer (the new shares) is sealed too.
    const rotated = await sealedCall(attested, 'GET', '/rootKey/rotate', ADMIN_TOKEN);
    expect(rotated.answer.status).toBe(200);
    expect(rotated.answer.headers['x-kms-root-key-state']).toBe('pending-verification');
    const shares = rotated.json as Share[];
    const verified = await sealedCall(attested, 'POST', '/rootKey/verify', ADMIN_TOKEN, undefined, JSON.stringify({ shares: shares.slice(0, 3) }));
    expect(verified.answer.status).toBe(200);

    // The old service key is retired with its root key: attest again, same data key under the new one.
    const stale = await sealedCall(attested, 'GET', '/dataKey/dk1?primaryKeyName=pk1', USER_TOKEN, 'alice');
    expect(stale.answer.status).toBe(401);
    expect(stale.json).toMatchObject({ error: { code: 'SERVICE_KEY_CHANGED' } });
    const previous = attested.serviceKey.x;
    attested = await attest((path) => viaProxy(path));
    expect(attested.serviceKey.x).not.toBe(previous);
    const again = await sealedCall(attested, 'GET', '/dataKey/dk1?primaryKeyName=pk1', USER_TOKEN, 'alice');
    expect((again.json as { key: string }).key).toBe(dataKey);

    // BigDL KMS's plaintext flow, directly: the same key.
    const plain = await kms().request(`/dataKey/dk1?primaryKeyName=pk1&user=alice&token=${USER_TOKEN}`);
    expect(plain.body.trim()).toBe(dataKey);

    const capture = proxy().capture().toString('latin1');
    expect(capture).toContain('POST /user/alice'); // the proxy did see the traffic
    for (const secret of [USER_TOKEN, ADMIN_TOKEN, Buffer.from(dataKey, 'base64')]) {
      for (const encoded of encodings(secret)) expect(capture.includes(encoded), 'a secret crossed the proxy').toBe(false);
    }
  });

  it('keys agreed under one service key are never used under the next: a rotation drops them', async () => {
    const epk = (await generateKeyPair('ECDH-ES+A256KW', { crv: 'X25519', extractable: true })).privateKey;
    const reusing = (attested: Attested, method: string, target: string, token: string, kid?: string, body?: string) =>
      seal(attested, {
        method,
        target,
        token,
        ...(target.startsWith('/rootKey') ? {} : { user: 'alice' }),
        epk,
        ...(kid === undefined ? {} : { kid }),
        ...(body === undefined ? {} : { body }),
      });
    const call = async (request: SealedRequest, method: string, target: string, body?: string) => {
      const answer = await viaProxy(target, {
        method,
        headers: { authorization: request.authorization, accept: 'application/json', ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body } : {}),
      });
      return { answer, json: answer.headers['content-type'] === 'application/jose' ? await request.open(answer.body) : JSON.parse(answer.body) };
    };
    const read = '/dataKey/dk1?primaryKeyName=pk1';
    const old = await attest((path) => viaProxy(path));
    expect((await call(await reusing(old, 'GET', read, USER_TOKEN), 'GET', read)).answer.status).toBe(200); // epk agreed and cached

    const rotated = await call(await reusing(old, 'GET', '/rootKey/rotate', ADMIN_TOKEN), 'GET', '/rootKey/rotate');
    expect(rotated.answer.status).toBe(200);
    const body = JSON.stringify({ shares: (rotated.json as Share[]).slice(0, 3) });
    expect((await call(await reusing(old, 'POST', '/rootKey/verify', ADMIN_TOKEN, undefined, body), 'POST', '/rootKey/verify', body)).answer.status).toBe(200);
    const current = await attest((path) => viaProxy(path));
    expect(current.rootKeyId).not.toBe(old.rootKeyId);

    // Sealed to the old key with the cached epk, but naming the new key: were the old key's cache
    // consulted, it would open. It must not.
    const forged = await call(await reusing(old, 'GET', read, USER_TOKEN, current.rootKeyId), 'GET', read);
    expect(forged.answer.status).toBe(400);
    expect(forged.json).toMatchObject({ error: { code: 'BAD_REQUEST' } });
    // The same epk sealed to the new key is agreed with anew, and works.
    expect((await call(await reusing(current, 'GET', read, USER_TOKEN), 'GET', read)).answer.status).toBe(200);
  });

  it('a sealed rotate answer carries its X-KMS-* values in the protected header, which the ingress cannot change', async () => {
    const attested = await attest((path) => viaProxy(path));
    const request = await seal(attested, { method: 'GET', target: '/rootKey/rotate', token: ADMIN_TOKEN });
    const answer = await viaProxy('/rootKey/rotate', { headers: { authorization: request.authorization, accept: 'application/json' } });
    expect(answer.status).toBe(200);
    const { json, protectedHeader } = await request.openWithHeader(answer.body);
    expect(json).toHaveLength(5);
    const status = JSON.parse((await viaProxy('/rootKey/status')).body) as { pendingRootKeyId: string };
    expect(protectedHeader).toMatchObject({
      'kms-root-key-id': status.pendingRootKeyId,
      'kms-root-key-state': 'pending-verification',
      'kms-shares-encrypted': 'no',
      'kms-jti': request.jti, // the answer to this credential, and no other
    });
    // The headers outside say the same, for plain clients.
    for (const name of ['kms-root-key-id', 'kms-root-key-state', 'kms-shares-encrypted']) expect(answer.headers[`x-${name}`]).toBe(protectedHeader[name]);

    // An ingress that turns "pending-verification" into "current" in the protected header breaks the
    // answer: AES-GCM authenticates the header as it was sealed.
    const [header, ...rest] = answer.body.split('.');
    const forged = Buffer.from(
      JSON.stringify({ ...(JSON.parse(Buffer.from(header!, 'base64url').toString()) as object), 'kms-root-key-state': 'current' }),
    ).toString('base64url');
    await expect(request.open([forged, ...rest].join('.'))).rejects.toThrow();

    // An error answer (a wrong admin token) carries no such values, only the request it answers.
    const wrong = await seal(attested, { method: 'GET', target: '/rootKey/rotate', token: 'not-the-admin-token' });
    const refused = await viaProxy('/rootKey/rotate', { headers: { authorization: wrong.authorization, accept: 'application/json' } });
    expect(refused.status).toBe(401);
    const opened = await wrong.openWithHeader(refused.body);
    expect(opened.json).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    expect(Object.keys(opened.protectedHeader).filter((name) => name.startsWith('kms-'))).toEqual(['kms-jti']);
    expect(opened.protectedHeader['kms-jti']).toBe(wrong.jti);
    expect(refused.headers['x-kms-jti']).toBe(wrong.jti); // outside too, as every sealed value
  });

  it('a credential that binds its body (htb) is refused with another body or none, and its jti stays unspent', async () => {
    const attested = await attest((path) => viaProxy(path));
    const target = '/primaryKey/body-bound';
    const body = JSON.stringify({ custodians: ["the operator's"] });
    const request = await seal(attested, { method: 'POST', target, token: USER_TOKEN, user: 'alice', body });
    const send = (sent?: string) =>
      viaProxy(target, {
        method: 'POST',
        headers: { authorization: request.authorization, accept: 'application/json', ...(sent === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(sent === undefined ? {} : { body: sent }),
      });
    for (const other of [JSON.stringify({ custodians: ["the ingress's"] }), `${body} `, undefined]) {
      const refused = await send(other);
      expect(refused.status, String(other)).toBe(401);
      expect(refused.headers['content-type']).toContain('application/json'); // refused before the answer key is trusted
      expect(JSON.parse(refused.body).error).toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringContaining('another body') });
    }
    expect((await send(body)).status).toBe(201);
    expect((await send(body)).status).toBe(401); // now spent

    // Without htb (optional for a request without a body), a body is refused: the ingress could have put it there.
    const unbound = await seal(attested, { method: 'POST', target: '/primaryKey/body-unbound', token: USER_TOKEN, user: 'alice' });
    const withBody = await viaProxy('/primaryKey/body-unbound', {
      method: 'POST',
      headers: { authorization: unbound.authorization, accept: 'application/json', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(withBody.status).toBe(400);
    expect(JSON.parse(withBody.body).error).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('"htb" must bind it') });
    // Refused before its jti was spent: the same credential without the body is taken.
    const without = await viaProxy('/primaryKey/body-unbound', {
      method: 'POST',
      headers: { authorization: unbound.authorization, accept: 'application/json' },
    });
    expect(without.status).toBe(201);
  });

  it('a captured sealed request replayed through the proxy is refused and changes nothing', async () => {
    const attested = await attest((path) => viaProxy(path));
    const request = await seal(attested, { method: 'POST', target: '/primaryKey/once', token: USER_TOKEN, user: 'alice' });
    const send = () => viaProxy('/primaryKey/once', { method: 'POST', headers: { authorization: request.authorization, accept: 'application/json' } });
    expect((await send()).status).toBe(201);
    const replay = await send();
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.body).error.code).toBe('UNAUTHORIZED');
  });

  it('a sealed credential refused as malformed (its token or its user) does not spend its jti', async () => {
    const attested = await attest((path) => viaProxy(path));
    const jti = randomBytes(16).toString('base64url');
    const send = async (token: string, user: string) => {
      const request = await seal(attested, { method: 'POST', target: '/primaryKey/jti-kept', token, user, jti });
      return viaProxy('/primaryKey/jti-kept', { method: 'POST', headers: { authorization: request.authorization, accept: 'application/json' } });
    };
    for (const [token, user, code] of [
      [`${USER_TOKEN}\u0007`, 'alice', 'BAD_REQUEST'],
      // Lone surrogates: hashed as UTF-8 they would all be U+FFFD, one token for three strings.
      [`${USER_TOKEN}\ud800`, 'alice', 'BAD_REQUEST'],
      [`${USER_TOKEN}\udfff`, 'alice', 'BAD_REQUEST'],
      [USER_TOKEN, 'not a name!', 'INVALID_NAME'],
    ] as const) {
      const refused = await send(token, user);
      expect(refused.status).toBe(400);
      expect(JSON.parse(refused.body).error.code).toBe(code);
    }
    expect((await send(USER_TOKEN, 'alice')).status).toBe(201);
    expect((await send(USER_TOKEN, 'alice')).status).toBe(401); // spent now
  });
});

describe('KMS_REQUIRE_SEALED: the first rotate, which cannot be sealed, must name custodians', () => {
  const { proxy } = npmStartBehindProxy('tee-kms-sealed-init-', { KMS_REQUIRE_SEALED: 'true' });

  it('a rotate in the clear without custodians is refused with 400 and leaves the KMS uninitialized', async () => {
    const status = () => httpCall(`${proxy().url}/rootKey/status`).then((answer) => JSON.parse(answer.body) as { initialized: boolean; sealed: boolean });
    for (const options of [{}, { method: 'POST' }, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' }]) {
      const answer = await httpCall(`${proxy().url}/rootKey/rotate`, { ...options, headers: { ...options.headers, accept: 'application/json' } });
      expect(answer.status).toBe(400);
      const { error } = JSON.parse(answer.body) as { error: { code: string; message: string } };
      expect(error.code).toBe('BAD_REQUEST');
      expect(error.message).toContain('KMS_REQUIRE_SEALED');
      expect(error.message).toContain('{"custodians": [JWK, …]} or KMS_CUSTODIAN_KEYS_FILE');
      expect(await status()).toMatchObject({ initialized: false, sealed: true });
    }
    // The project's client, told to let plaintext shares through, is refused by the server all the same.
    const client = new KmsClient({ url: proxy().url, attest: { allowDevelopment: true }, retries: 0 });
    expect(await failure(client.rotate({ allowPlaintextShares: true }))).toMatchObject({ code: 'BAD_REQUEST', status: 400 });
    expect(await status()).toMatchObject({ initialized: false });

    // With the custodians' keys it initializes; no share crosses the proxy in plaintext.
    const custodians = await Promise.all(Array.from({ length: 5 }, () => generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256' })));
    const rotation = await client.rotate({ custodians: await Promise.all(custodians.map(({ publicKey }) => exportJWK(publicKey))) });
    expect(rotation).toMatchObject({ state: 'current', sharesEncrypted: true });
    expect(await status()).toMatchObject({ initialized: true, sealed: false });
    const plaintext = await Promise.all(
      rotation.shares.map(async ({ content }, i) => Buffer.from((await compactDecrypt(content, custodians[i]!.privateKey)).plaintext)),
    );
    expect(leaked(proxy().capture(), plaintext)).toEqual([]);
    client.close();
  });
});

describe('KMS_SEALED_REPLAY_ENTRIES: a full replay memory sheds, it never forgets', () => {
  let dataDir: string;
  let host: ServerProcess;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-sealed-replay-'));
    host = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_SEALED_REPLAY_ENTRIES: '100' });
  });
  afterAll(async () => {
    await host?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('past 100 live credentials a sealed create answers 503 BUSY and creates nothing; a replay is still 401', async () => {
    expect((await host.request(`/user/carol?token=${USER_TOKEN}`, { method: 'POST' })).status).toBe(201);
    const attested = await attest((path) => host.request(path));
    const create = async (name: string) => {
      const request = await seal(attested, { method: 'POST', target: `/primaryKey/${name}`, token: USER_TOKEN, user: 'carol' });
      const send = () => host.request(`/primaryKey/${name}`, { method: 'POST', headers: { authorization: request.authorization, accept: 'application/json' } });
      return { send, answer: await send() };
    };
    const first = await create('pk-0');
    expect(first.answer.status).toBe(201);
    for (let i = 1; i < 100; i++) expect((await create(`pk-${i}`)).answer.status).toBe(201);

    const shed = (await create('pk-100')).answer;
    expect(shed.status).toBe(503);
    expect(shed.headers['retry-after']).toBe('5');
    expect(JSON.parse(shed.body).error.code).toBe('BUSY');
    // Nothing was created: in the clear, the name is free.
    expect((await host.request(`/primaryKey/pk-100?user=carol&token=${USER_TOKEN}`, { method: 'POST' })).status).toBe(201);
    // The first credential is still remembered: played again it is refused as a replay, not shed.
    const replayed = await first.send();
    expect(replayed.status).toBe(401);
    expect(JSON.parse(replayed.body).error.code).toBe('UNAUTHORIZED');
  });
});

describe('single functions under functions-framework share the service key', () => {
  let dataDir: string;
  let host: ServerProcess;
  let attestation: ServerProcess;
  let getDataKey: ServerProcess;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-sealed-ff-'));
    const env = { KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') };
    [host, attestation, getDataKey] = await Promise.all([
      startLeanHost(env),
      startFunctionsFramework('attestation', 'attestation', env),
      startFunctionsFramework('get-data-key', 'getDataKey', env),
    ]);
  });
  afterAll(async () => {
    await Promise.all([host, attestation, getDataKey].map((p) => p?.stop()));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a key attested by one function opens requests at another; the sealed data key equals the plaintext one', async () => {
    expect((await host.request(`/user/bob?token=${USER_TOKEN}`, { method: 'POST' })).status).toBe(201);
    expect((await host.request(`/primaryKey/pk?user=bob&token=${USER_TOKEN}`, { method: 'POST' })).status).toBe(201);
    expect((await host.request(`/dataKey/dk?primaryKeyName=pk&user=bob&token=${USER_TOKEN}`, { method: 'POST' })).status).toBe(201);
    const plain = (await host.request(`/dataKey/dk?primaryKeyName=pk&user=bob&token=${USER_TOKEN}`)).body.trim();

    const attested = await attest((path) => attestation.request(path));
    const request = await seal(attested, { method: 'GET', target: '/dataKey/dk?primaryKeyName=pk', token: USER_TOKEN, user: 'bob' });
    const answer = await getDataKey.request('/dataKey/dk?primaryKeyName=pk', { headers: { authorization: request.authorization } });
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/jose');
    expect(await request.open(answer.body)).toMatchObject({ key: plain });
    // Moved to another key name, under functions-framework too: refused.
    const moved = await getDataKey.request('/dataKey/other?primaryKeyName=pk', { headers: { authorization: request.authorization } });
    expect(moved.status).toBe(401);
  });
});
