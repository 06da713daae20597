// The client end to end through real processes: `npm start` (KMS_TLS=off) with the client in
// attested mode behind a recording proxy that plays the ingress, and single functions under
// functions-framework behind a routing proxy. Sealed requests the real client made are captured,
// then replayed, moved, made stale and tampered with, as an ingress could.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { KmsClient, type Share } from '../../client/index.js';
import { freePort, httpCall, startFunctionsFramework, startLeanHost, startServer, type ServerProcess } from '../support/processes.js';
import { calculateJwkThumbprint, compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { leaked, recordingProxy, routingProxy, tamperingProxy, type Exchange, type RecordingProxy } from '../support/recording-proxy.js';
import { failure } from '../support/kms-error.js';

const ADMIN_TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const DEVELOPMENT = { allowDevelopment: true } as const;

/** The sealed credentials in a capture, in the order they crossed. */
function sealedCredentials(capture: Buffer): string[] {
  return [...capture.toString('latin1').matchAll(/authorization: (Sealed [A-Za-z0-9_.-]+)/gi)].map((m) => m[1]!);
}

describe('npm start (KMS_TLS=off), the client behind a recording proxy', () => {
  let dataDir: string;
  let kms: ServerProcess;
  let proxy: RecordingProxy;
  let plain: KmsClient;
  let start: () => Promise<ServerProcess>;
  const secrets: (string | Buffer)[] = [ADMIN_TOKEN];
  /** The current root key's shares, once the attested test has rotated; and bob's data key. */
  let current: { shares: readonly Share[]; key: string; bob: { user: string; token: string } } | undefined;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-client-'));
    const port = await freePort();
    start = () =>
      startServer({
        command: 'npm',
        args: ['start', '--silent'],
        env: { PORT: String(port), KMS_DATA_DIR: dataDir, KMS_TLS: 'off', KMS_ADMIN_TOKEN: ADMIN_TOKEN },
        url: `http://127.0.0.1:${port}`,
      });
    kms = await start();
    proxy = await recordingProxy(port);
    plain = new KmsClient({ url: kms.url }); // directly: BigDL KMS's flow in the clear, not through the proxy
  });
  afterAll(async () => {
    plain?.close();
    await proxy?.close();
    await kms?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('the plaintext flow: first rotate, enroll, keys, typed errors with the server code', async () => {
    // In attested mode the first rotate (no admin token, so in the clear) needs custodians or an
    // explicit opt-in: refused before anything is sent.
    const attested = new KmsClient({ url: proxy.url, attest: DEVELOPMENT });
    const refused = await failure(attested.rotate());
    expect(refused).toMatchObject({ code: 'INVALID_ARGUMENT', status: 0 });
    expect(refused.message).toContain('allowPlaintextShares');
    expect(proxy.capture().toString('latin1')).not.toContain('/rootKey/rotate');
    expect(await plain.sealStatus()).toMatchObject({ initialized: false });
    attested.close();

    const first = await plain.rotate();
    expect(first).toMatchObject({ state: 'current', sharesEncrypted: false });
    expect(first.shares).toHaveLength(5);
    expect(await plain.sealStatus()).toMatchObject({ sealed: false, initialized: true, rootKeyId: first.rootKeyId });

    const alice = plain.withCredentials(await plain.enroll('alice'));
    expect(await alice.createPrimaryKey('pk1')).toEqual({ user: 'alice', primaryKey: 'pk1', created: true });
    expect(await alice.createDataKey('pk1', 'dk1')).toEqual({ user: 'alice', primaryKey: 'pk1', dataKey: 'dk1', created: true });
    const { key } = await alice.getDataKey('pk1', 'dk1');
    expect(Buffer.from(key, 'base64')).toHaveLength(32);

    expect(await failure(alice.createPrimaryKey('pk1'))).toMatchObject({ code: 'CONFLICT', status: 409 });
    expect(await failure(plain.withCredentials({ user: 'alice', token: 'wrong-token-0123456789' }).getDataKey('pk1', 'dk1'))).toMatchObject({
      code: 'UNAUTHORIZED',
      status: 401,
    });
    expect(await failure(alice.getDataKey('pk1', 'nope'))).toMatchObject({ code: 'NOT_FOUND', status: 404 });
    expect(await failure(alice.createPrimaryKey('../x'))).toMatchObject({ code: 'INVALID_NAME', status: 400 });
    expect(await failure(plain.enroll('alice'))).toMatchObject({ code: 'CONFLICT' });
  });

  it('attested: the same data key as the plaintext flow; rotation re-attests once; the proxy sees no secret', async () => {
    const bob = await plain.enroll('bob'); // enrolled in the clear, directly
    const admin = new KmsClient({ url: proxy.url, adminToken: ADMIN_TOKEN, attest: DEVELOPMENT });
    const sealedBob = admin.withCredentials(bob);
    secrets.push(bob.token);

    // Enrollment sealed too: carol's token never crosses the proxy.
    const carol = await admin.enroll('carol');
    secrets.push(carol.token);
    const sealedCarol = admin.withCredentials(carol);
    expect(await sealedCarol.createPrimaryKey('pk')).toMatchObject({ created: true });

    expect(await sealedBob.createPrimaryKey('pk1')).toEqual({ user: 'bob', primaryKey: 'pk1', created: true });
    expect(await sealedBob.createDataKey('pk1', 'dk1')).toMatchObject({ created: true });
    const sealed = await sealedBob.getDataKey('pk1', 'dk1');
    const clear = await plain.withCredentials(bob).getDataKey('pk1', 'dk1');
    expect(sealed.key).toBe(clear.key);
    secrets.push(Buffer.from(sealed.key, 'base64'));
    // Server errors come through the seal with their code.
    expect(await failure(sealedBob.createPrimaryKey('pk1'))).toMatchObject({ code: 'CONFLICT', status: 409 });

    const attestations = () =>
      (
        proxy
          .capture()
          .toString('latin1')
          .match(/GET \/attestation\?nonce=/g) ?? []
      ).length;
    expect(attestations()).toBe(1); // one attestation, shared by every client withCredentials made

    // A sealed rotation and verification: the new shares come back sealed.
    const rotation = await admin.rotate();
    expect(rotation.state).toBe('pending-verification');
    // The rotate answer came sealed; verify seals the shares it sends to the sealing service's
    // attested recovery key: no share crosses the proxy in the clear.
    for (const share of rotation.shares) secrets.push(share.content);
    const verified = await admin.verify(rotation.shares.slice(0, 3));
    expect(verified).toMatchObject({ promoted: true, rootKeyId: rotation.rootKeyId });

    // The service key changed with the root key: the client attests again, once, and sends the
    // request again, a create too, since the attested key did change.
    expect(await sealedBob.createDataKey('pk1', 'dk-after-rotation')).toMatchObject({ created: true });
    expect(attestations()).toBe(2);
    expect((await sealedBob.getDataKey('pk1', 'dk1')).key).toBe(clear.key);
    expect(attestations()).toBe(2);
    expect((await admin.attestation()).rootKeyId).toBe(rotation.rootKeyId);
    admin.close();
    current = { shares: rotation.shares, key: clear.key, bob };

    expect(proxy.capture().toString('latin1')).toContain('POST /primaryKey/pk1');
    expect(leaked(proxy.capture(), secrets)).toEqual([]);
  });

  it('refuses sample evidence unless development is allowed, before sending any credential', async () => {
    const before = sealedCredentials(proxy.capture()).length;
    const strict = new KmsClient({ url: proxy.url, user: 'bob', token: 'never-sent-0123456789', attest: {} });
    expect(await failure(strict.getDataKey('pk1', 'dk1'))).toMatchObject({ code: 'ATTESTATION', status: 0 });
    expect(await failure(strict.attestation())).toMatchObject({ code: 'ATTESTATION' });
    expect(sealedCredentials(proxy.capture())).toHaveLength(before);
    expect(leaked(proxy.capture(), ['never-sent-0123456789'])).toEqual([]);
  });

  it("the real client's sealed requests replayed, moved, stale or tampered are refused and change nothing", async () => {
    const dave = await plain.enroll('dave');
    const sealedDave = new KmsClient({ url: proxy.url, ...dave, attest: DEVELOPMENT });
    expect(await sealedDave.createPrimaryKey('once')).toMatchObject({ created: true });
    const captured = sealedCredentials(proxy.capture()).at(-1)!;
    const send = (method: string, path: string, authorization: string) =>
      httpCall(`${proxy.url}${path}`, { method, headers: { authorization, accept: 'application/json' } });

    const replayed = await send('POST', '/primaryKey/once', captured);
    expect(replayed.status).toBe(401);
    const moved = await send('POST', '/primaryKey/moved', captured);
    expect(moved.status).toBe(401);
    const [header, key, iv, ciphertext, tag] = captured.slice('Sealed '.length).split('.') as [string, string, string, string, string];
    const flipped = `${ciphertext.slice(0, -2)}${ciphertext.at(-2) === 'A' ? 'B' : 'A'}${ciphertext.at(-1)}`;
    const tampered = await send('POST', '/primaryKey/tampered', `Sealed ${[header, key, iv, flipped, tag].join('.')}`);
    expect(tampered.status).toBe(400);
    for (const answer of [replayed, moved, tampered]) expect(answer.headers['content-type']).not.toBe('application/jose');

    // Sealed two minutes in the past (the client's clock, not the server's): refused as stale.
    const now = Date.now();
    const clock = vi.spyOn(Date, 'now').mockReturnValue(now - 120_000);
    try {
      expect(await failure(sealedDave.createPrimaryKey('stale'))).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
    } finally {
      clock.mockRestore();
    }

    // Nothing was created by any refused request: each name is still free.
    const clear = plain.withCredentials(dave);
    for (const name of ['moved', 'tampered', 'stale']) expect(await clear.createPrimaryKey(name)).toMatchObject({ created: true });
    sealedDave.close();
  });

  it('recovers after a restart with the shares sealed to the attested recovery key; keys read again', async () => {
    expect(current).toBeDefined();
    const { shares, key, bob } = current!;
    await kms.stop();
    kms = await start();
    const operator = new KmsClient({ url: proxy.url, attest: DEVELOPMENT, retries: 0 });
    expect(await operator.sealStatus()).toMatchObject({ sealed: true });
    const mark = proxy.capture().length;
    const progress = [];
    for (const share of shares.slice(0, 3)) progress.push(await operator.recover(share));
    expect(progress.map((p) => p.sealed)).toEqual([true, true, false]);
    expect(
      leaked(
        proxy.capture().subarray(mark),
        shares.map((share) => share.content),
      ),
    ).toEqual([]);
    expect(proxy.capture().subarray(mark).toString('latin1')).toContain('PUT /rootKey/recover');
    expect((await plain.withCredentials(bob).getDataKey('pk1', 'dk1')).key).toBe(key);
    operator.close();
  });

  it("an ingress that rewrites the sealed rotate answer's X-KMS-* headers is caught; nothing becomes current", async () => {
    const before = await plain.sealStatus();
    let rewrite = (headers: IncomingHttpHeaders): IncomingHttpHeaders => headers;
    const ingress = await routingProxy(() => Number(new URL(kms.url).port), {
      rewriteAnswerHeaders: (path, headers) => (path.startsWith('/rootKey/rotate') ? rewrite(headers) : headers),
    });
    const admin = new KmsClient({ url: ingress.url, adminToken: ADMIN_TOKEN, attest: DEVELOPMENT, retries: 0 });
    try {
      // Passed on as they are, the values sealed and outside agree.
      const honest = await admin.rotate();
      expect(honest).toMatchObject({ state: 'pending-verification', sharesEncrypted: false });
      expect((await plain.sealStatus()).pendingRootKeyId).toBe(honest.rootKeyId);

      const forgeries: Array<[string, (headers: IncomingHttpHeaders) => IncomingHttpHeaders]> = [
        ['pending turned current', (headers) => ({ ...headers, 'x-kms-root-key-state': 'current' })],
        ['another root key id', (headers) => ({ ...headers, 'x-kms-root-key-id': before.rootKeyId ?? '0'.repeat(32) })],
        ['plaintext shares said encrypted', (headers) => ({ ...headers, 'x-kms-shares-encrypted': 'custodians' })],
        ['the headers removed', ({ 'x-kms-root-key-id': _id, 'x-kms-root-key-state': _state, 'x-kms-shares-encrypted': _encrypted, ...headers }) => headers],
      ];
      for (const [label, forge] of forgeries) {
        rewrite = forge;
        const refused = await failure(admin.rotate());
        expect(refused, label).toMatchObject({ code: 'PROTOCOL', status: 200 });
        expect(refused.message, label).toMatch(/x-kms-root-key-\w+|x-kms-shares-encrypted/);
      }
      // The ingress did pass a forged state on; the KMS still holds the key it had, the last rotation pending.
      expect(ingress.capture().toString('latin1')).toContain('"x-kms-root-key-state":"pending-verification"');
      const after = await plain.sealStatus();
      expect(after.rootKeyId).toBe(before.rootKeyId);
      expect(after.pendingRootKeyId).not.toBeNull();
      expect(after.pendingRootKeyId).not.toBe(before.rootKeyId);
    } finally {
      admin.close();
      await ingress.close();
    }
  });

  it('an ingress that hands a client the sealed answer of another of its requests is caught (kms-jti)', async () => {
    expect(current).toBeDefined();
    const { bob, key } = current!;
    await plain.withCredentials(bob).createDataKey('pk1', 'dk-other');
    // It keeps the sealed answer to dk1 and gives it back for dk-other: while keys are reused
    // (the default), both answers are sealed to the same response key.
    let kept: Exchange | undefined;
    const ingress = await tamperingProxy(Number(new URL(kms.url).port), {
      answer: (request, answer) => {
        if (request.path.startsWith('/dataKey/dk1')) kept = answer;
        return request.path.startsWith('/dataKey/dk-other') && kept !== undefined ? kept : answer;
      },
    });
    const client = new KmsClient({ url: ingress.url, attest: DEVELOPMENT, retries: 0 }).withCredentials(bob);
    try {
      expect((await client.getDataKey('pk1', 'dk1')).key).toBe(key);
      const refused = await failure(client.getDataKey('pk1', 'dk-other'));
      expect(refused.code).toBe('PROTOCOL');
      expect(refused.message).toContain('kms-jti');
    } finally {
      client.close();
      await ingress.close();
    }
  });

  it('an answer in the clear that an ingress forges after the KMS acted sends no create again; a read is retried', async () => {
    expect(current).toBeDefined();
    const { bob, key } = current!;
    const inTheClear = (answer: Exchange, status: number, error: Record<string, string>): Exchange => ({
      ...answer,
      status,
      headers: { 'content-type': 'application/json', 'retry-after': '0' },
      body: Buffer.from(JSON.stringify({ error })),
    });
    // The ingress passes each request on, then drops the KMS's sealed answer for one of its own.
    const forged: Record<string, (answer: Exchange) => Exchange> = {
      'POST /dataKey/dk-forged-key-change': (answer) => inTheClear(answer, 401, { code: 'SERVICE_KEY_CHANGED', message: 'attest again', rootKeyId: 'forged' }),
      'POST /dataKey/dk-forged-busy': (answer) => inTheClear(answer, 503, { code: 'BUSY', message: 'busy' }),
      'GET /dataKey/dk1': (answer) => inTheClear(answer, 503, { code: 'BUSY', message: 'busy' }),
    };
    const sent: string[] = [];
    const ingress = await tamperingProxy(Number(new URL(kms.url).port), {
      request: (request) => (sent.push(`${request.method} ${request.path.split('?')[0]!}`), request),
      answer: (request, answer) => {
        const route = `${request.method} ${request.path.split('?')[0]!}`;
        const forge = forged[route];
        delete forged[route]; // once each
        return forge === undefined ? answer : forge(answer);
      },
    });
    const client = new KmsClient({ url: ingress.url, attest: DEVELOPMENT, retries: 2 }).withCredentials(bob);
    const times = (route: string) => sent.filter((each) => each === route).length;
    try {
      // A forged SERVICE_KEY_CHANGED: the client attests again, finds the same key, and sends nothing more.
      const keyChange = await failure(client.createDataKey('pk1', 'dk-forged-key-change'));
      expect(keyChange).toMatchObject({ code: 'SERVICE_KEY_CHANGED', status: 401 });
      expect(keyChange.message).toContain('not sent again');
      expect(times('GET /attestation')).toBe(2);
      // A forged 503, which the client would otherwise retry.
      const busy = await failure(client.createDataKey('pk1', 'dk-forged-busy'));
      expect(busy).toMatchObject({ code: 'BUSY', status: 503 });
      expect(busy.message).toContain('not sent again');
      // Each create reached the KMS once, and was carried out once.
      expect([times('POST /dataKey/dk-forged-key-change'), times('POST /dataKey/dk-forged-busy')]).toEqual([1, 1]);
      for (const name of ['dk-forged-key-change', 'dk-forged-busy'])
        expect((await plain.withCredentials(bob).getDataKey('pk1', name)).key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      // A read changes nothing: after the forged 503 it is sent again, and answered.
      expect((await client.getDataKey('pk1', 'dk1')).key).toBe(key);
      expect(times('GET /dataKey/dk1')).toBe(2);
    } finally {
      client.close();
      await ingress.close();
    }
  });

  it('a create answered 503 after the KMS stored it, then 409 when sent again, says that its first attempt may have made it', async () => {
    expect(current).toBeDefined();
    const { bob } = current!;
    let lost = false; // the first answer to the create is lost on the way back, as after a connection reset
    const ingress = await tamperingProxy(Number(new URL(kms.url).port), {
      answer: (request, answer) => {
        if (lost || request.method !== 'POST' || !request.path.startsWith('/dataKey/dk-lost-answer')) return answer;
        lost = true;
        return {
          ...answer,
          status: 503,
          headers: { 'content-type': 'application/json', 'retry-after': '0' },
          body: Buffer.from('{"error":{"code":"STORAGE_UNAVAILABLE","message":"object storage cannot be reached (ECONNRESET)"}}'),
        };
      },
    });
    const client = new KmsClient({ url: ingress.url, retries: 2 }).withCredentials(bob);
    try {
      const conflict = await failure(client.createDataKey('pk1', 'dk-lost-answer'));
      expect(conflict).toMatchObject({ code: 'CONFLICT', status: 409 });
      expect(conflict.message).toContain('sent again after an answer 503, and the earlier attempt may have created it');
      expect((await client.getDataKey('pk1', 'dk-lost-answer')).key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      // A 409 without a 503 before it is said as the KMS said it.
      expect((await failure(client.createDataKey('pk1', 'dk-lost-answer'))).message).not.toContain('sent again');
    } finally {
      client.close();
      await ingress.close();
    }
  });

  it('an ingress that gives a sealed rotate other custodians is refused (htb); the current shares never cross in the clear', async () => {
    expect(current).toBeDefined();
    const { shares } = current!;
    const custodians = async () =>
      Promise.all(Array.from({ length: 5 }, async () => exportJWK((await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256' })).publicKey)));
    const [operators, attackers] = [await custodians(), await custodians()];
    let tamper = true;
    const ingress = await tamperingProxy(Number(new URL(kms.url).port), {
      request: (request) => {
        if (!tamper || !request.path.startsWith('/rootKey/rotate')) return request;
        const body = JSON.parse(request.body.toString()) as { custodians: unknown[] };
        return { ...request, body: Buffer.from(JSON.stringify({ ...body, custodians: attackers })) };
      },
    });
    const admin = new KmsClient({ url: ingress.url, adminToken: ADMIN_TOKEN, attest: DEVELOPMENT, retries: 0 });
    try {
      const before = await plain.sealStatus();
      const refused = await failure(admin.rotate({ custodians: operators, shares: shares.slice(0, 3) }));
      expect(refused).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
      expect(refused.message).toContain('another body');
      expect(await plain.sealStatus()).toEqual(before);

      tamper = false;
      const rotation = await admin.rotate({ custodians: operators, shares: shares.slice(0, 3) });
      expect(rotation).toMatchObject({ state: 'pending-verification', sharesEncrypted: true });
      // The current shares that authorized the new custodians went sealed to the recovery key.
      expect(
        leaked(
          ingress.capture(),
          shares.map((share) => share.content),
        ),
      ).toEqual([]);
      expect(ingress.capture().toString('latin1')).toContain('POST /rootKey/rotate');

      // The new shares as rotate answered them (each a JWE to its custodian) are refused here,
      // before a share is sent: the sealing service could not open them, and would spend the rest.
      const unopened = await failure(admin.verify(rotation.shares.slice(0, 3)));
      expect(unopened).toMatchObject({ code: 'INVALID_ARGUMENT', status: 0 });
      expect(unopened.message).toContain('tee-kms custodian decrypt');
      expect(ingress.capture().toString('latin1')).not.toContain('POST /rootKey/verify');
    } finally {
      admin.close();
      await ingress.close();
    }
  });

  it('an attestation that failed is attested again by the next call', async () => {
    let refuse = 1;
    const ingress = await tamperingProxy(Number(new URL(kms.url).port), {
      answer: (request, answer) =>
        request.path.startsWith('/attestation') && refuse-- > 0
          ? { ...answer, status: 503, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"error":{"code":"BUSY","message":"busy"}}') }
          : answer,
    });
    const client = new KmsClient({ url: ingress.url, attest: DEVELOPMENT, retries: 0 });
    try {
      expect(await failure(client.attestation())).toMatchObject({ code: 'BUSY', status: 503 });
      expect(await client.sealStatus()).toMatchObject({ sealed: false });
      expect(current).toBeDefined();
      expect((await client.withCredentials(current!.bob).getDataKey('pk1', 'dk1')).key).toBe(current!.key);
    } finally {
      client.close();
      await ingress.close();
    }
  });

  it('refuses a success answered in the clear to a sealed request', async () => {
    // An impostor on the way: it relays the real attestation but answers key requests itself.
    const impostor: Server = createServer((req, res) => {
      if (req.url?.startsWith('/attestation')) {
        void kms.request(req.url).then((answer) => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body));
      } else
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ user: 'bob', primaryKey: 'pk1', dataKey: 'dk1', key: 'Zm9yZ2Vk' }));
    });
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = impostor.address() as { port: number };
      const client = new KmsClient({ url: `http://127.0.0.1:${port}`, user: 'bob', token: 'any-token-0123456789', attest: DEVELOPMENT });
      expect(await failure(client.getDataKey('pk1', 'dk1'))).toMatchObject({ code: 'PROTOCOL', status: 200 });
      client.close();
    } finally {
      impostor.closeAllConnections();
      await new Promise((resolve) => impostor.close(resolve));
    }
  });
});

describe('single functions under functions-framework, the client behind a routing proxy', () => {
  let dataDir: string;
  let host: ServerProcess;
  let attestation: ServerProcess;
  let getDataKey: ServerProcess;
  let proxy: RecordingProxy;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-client-ff-'));
    const env = { KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') };
    [host, attestation, getDataKey] = await Promise.all([
      startLeanHost(env),
      startFunctionsFramework('attestation', 'attestation', env),
      startFunctionsFramework('get-data-key', 'getDataKey', env),
    ]);
    const port = (server: ServerProcess) => Number(new URL(server.url).port);
    proxy = await routingProxy((path) => (path === '/attestation' ? port(attestation) : port(getDataKey)));
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([host, attestation, getDataKey].map((p) => p?.stop()));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('the data key read sealed through getDataKey alone equals the plaintext one', async () => {
    // Set up over HTTPS against the lean host, trusting its certificate as a CA.
    const direct = new KmsClient({ url: host.url, ca: await readFile(join(dataDir, 'tls/cert.pem'), 'utf8') });
    const credentials = await direct.enroll('erin');
    const erin = direct.withCredentials(credentials);
    await erin.createPrimaryKey('pk');
    await erin.createDataKey('pk', 'dk');
    const { key } = await erin.getDataKey('pk', 'dk');
    direct.close();

    const sealed = new KmsClient({ url: proxy.url, ...credentials, attest: DEVELOPMENT });
    expect((await sealed.getDataKey('pk', 'dk')).key).toBe(key);
    sealed.close();
    expect(proxy.capture().toString('latin1')).toContain('GET /dataKey/dk?primaryKeyName=pk');
    expect(leaked(proxy.capture(), [Buffer.from(key, 'base64'), credentials.token])).toEqual([]);
  });
});

describe("npm start with pinned custodians: a recovery through the function carries each custodian's challenge", () => {
  // KMS_SEALER_CUSTODIANS pins three custodians, two of whom recover. The custodians' keys and the
  // shares they open are the test's own (jose); the client seals each share with its custodian's
  // challenge, which the recording proxy (the ingress) never sees in the clear.
  let dataDir: string;
  let kms: ServerProcess;
  let proxy: RecordingProxy;
  let start: () => Promise<ServerProcess>;

  afterAll(async () => {
    await proxy?.close();
    await kms?.stop();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it('refuses a share without the challenge, and recovers with the challenges of two pinned custodians', async () => {
    const custodians = await Promise.all(
      Array.from({ length: 3 }, async () => {
        const { publicKey, privateKey } = await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256', extractable: true });
        const jwk = await exportJWK(publicKey);
        return { jwk, privateJwk: await exportJWK(privateKey), privateKey, thumbprint: await calculateJwkThumbprint(jwk) };
      }),
    );
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-pinned-'));
    const port = await freePort();
    const env = {
      PORT: String(port),
      KMS_DATA_DIR: dataDir,
      KMS_TLS: 'off',
      KMS_ADMIN_TOKEN: ADMIN_TOKEN,
      KMS_SHARES: '3',
      KMS_THRESHOLD: '2',
      KMS_SEALER_CUSTODIANS: custodians.map((each) => each.thumbprint).join(','),
      KMS_SEALER_CUSTODIANS_THRESHOLD: '2',
    };
    start = () => startServer({ command: 'npm', args: ['start', '--silent'], env, url: `http://127.0.0.1:${port}` });
    kms = await start();
    proxy = await recordingProxy(port);
    const plain = new KmsClient({ url: kms.url });
    const rotation = await plain.rotate({ custodians: custodians.map((each) => each.jwk) });
    expect(rotation).toMatchObject({ state: 'current', sharesEncrypted: true });
    const shares = await Promise.all(
      rotation.shares.map(async (share, i) => ({
        index: share.index,
        content: Buffer.from((await compactDecrypt(share.content, custodians[i]!.privateKey)).plaintext).toString('utf8'),
      })),
    );
    plain.close();

    await kms.stop();
    kms = await start();
    const operator = new KmsClient({ url: proxy.url, attest: DEVELOPMENT, retries: 0 });
    const mark = proxy.capture().length;
    const refused = await failure(operator.recover(shares[0]!));
    expect(refused).toMatchObject({ status: 400 });
    expect(refused.message).toContain('pins its custodians');
    // A share already sealed cannot take the challenge: said, not dropped.
    expect(await failure(operator.recover(rotation.shares[0]!, { custodianKey: custodians[0]!.privateJwk }))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    // A key that is no P-256 private key is refused before anything is sent.
    expect(await failure(operator.recover(shares[0]!, { custodianKey: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd' } }))).toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(await operator.recover(shares[0]!, { custodianKey: custodians[0]!.privateJwk })).toMatchObject({ sealed: true, progress: 1 });
    // The same custodian again, with another share: each custodian counts once.
    expect(await failure(operator.recover(shares[2]!, { custodianKey: custodians[0]!.privateJwk }))).toMatchObject({ status: 400 });
    expect(await operator.recover(shares[2]!, { custodianKey: custodians[2]!.privateJwk })).toMatchObject({ sealed: false, rootKeyId: rotation.rootKeyId });
    expect(
      leaked(
        proxy.capture().subarray(mark),
        shares.map((share) => share.content),
      ),
    ).toEqual([]);
    operator.close();
  });
});
