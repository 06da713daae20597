import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTls } from '../../shared/tls.js';
import { startFunctionsFramework, startLeanHost, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';

describe('each function alone under functions-framework, sharing one S3 bucket', () => {
  let bucket: TestBucket;
  const fns: Record<string, ServerProcess> = {};
  const targets = [
    ['welcome', 'welcome'],
    ['enroll-user', 'enrollUser'],
    ['create-primary-key', 'createPrimaryKey'],
    ['create-data-key', 'createDataKey'],
    ['get-data-key', 'getDataKey'],
  ] as const;

  beforeAll(async () => {
    bucket = await createTestBucket();
    const env = { ...bucket.env, KMS_ROOT_KEY: randomBytes(32).toString('base64') };
    await Promise.all(targets.map(async ([module, target]) => (fns[target] = await startFunctionsFramework(module, target, env))));
  });
  afterAll(async () => {
    await Promise.all(Object.values(fns).map((f) => f.stop()));
    await bucket?.remove();
  });

  it('serves the whole flow across independent, stateless processes', async () => {
    expect((await fns.welcome!.request('/')).status).toBe(200);
    expect(await fns.enrollUser!.request('/user/ff?token=ff-token', { method: 'POST' })).toMatchObject({
      status: 201,
      body: 'user [ff] is created successfully!\n',
    });
    expect((await fns.createPrimaryKey!.request('/primaryKey/pk?user=ff&&token=ff-token', { method: 'POST' })).status).toBe(201);
    expect((await fns.createDataKey!.request('/dataKey/dk?user=ff&&token=ff-token&&primaryKeyName=pk', { method: 'POST' })).status).toBe(201);
    const get = await fns.getDataKey!.request('/dataKey/dk?user=ff&&token=ff-token&&primaryKeyName=pk');
    expect(get.status).toBe(200);
    expect(Buffer.from(get.body.trim(), 'base64')).toHaveLength(32);
  });

  it('keeps a connection open for the next request', async () => {
    const kept = await fns.enrollUser!.raw('GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n', { closeAfterMs: 500 });
    expect([...kept.matchAll(/^HTTP\/1\.1 \d{3} /gm)]).toHaveLength(2);
  });

  it('answers a CONNECT 405, logged, after the requests pipelined before it, and closes its connection', async () => {
    const started = Date.now();
    const answer = await fns.enrollUser!.raw(
      'POST /user/beforeconnect?token=t HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n' +
        'POST /user/tunneled?token=t HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n',
    );
    expect(Date.now() - started).toBeLessThan(5_000); // closed by the server, not by the client's timer
    expect([...answer.matchAll(/^HTTP\/1\.1 (\d{3}) /gm)].map((m) => m[1])).toEqual(['201', '405']);
    expect(answer).toMatch(/\r\nallow: \r\n/i);
    expect(answer).toContain('CONNECT is not served: this is not a proxy\n');
    await fns.enrollUser!.outputContaining('"method":"CONNECT","path":"(CONNECT refused)","status":405');
    // What followed the CONNECT was never read as a request.
    expect((await fns.enrollUser!.request('/user/tunneled?token=t', { method: 'POST' })).status).toBe(201);
  });

  it("a malformed JSON body, refused by functions-framework's parser before the function runs, is a 400 and its content is not logged", async () => {
    const secret = `share-${randomBytes(12).toString('hex')}`;
    const answer = await fns.enrollUser!.request('/user/parsefail?token=t', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"content": "${secret}",`,
    });
    expect(answer.status).toBe(400);
    await fns.enrollUser!.outputContaining('functions-framework refused a request body: entity.parse.failed (400); the body is not logged');
    const output = await fns.enrollUser!.settledOutput();
    expect(output).not.toContain(secret);
    expect(output).not.toContain(secret.slice(0, 10));
    // Nothing was created behind the 400.
    expect((await fns.enrollUser!.request('/user/parsefail?token=t', { method: 'POST' })).status).toBe(201);
  });

  it("a form body nested past the parser's depth is a 400 and its content is not logged", async () => {
    // body-parser's urlencoded parser refuses it with its own error type (querystring.parse.rangeError).
    const secret = `share${randomBytes(12).toString('hex')}`;
    const answer = await fns.enrollUser!.request('/user/deepform?token=t', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `a${'[b]'.repeat(1_000)}=${secret}`,
    });
    expect(answer.status).toBe(400);
    await fns.enrollUser!.outputContaining('functions-framework refused a request body: querystring.parse.rangeError (400); the body is not logged');
    const output = await fns.enrollUser!.settledOutput();
    expect(output).not.toContain(secret);
    expect(output).not.toContain('[b][b]');
  });

  it("a path that is not valid percent-encoding, refused by functions-framework's router, is a 400 and is not logged", async () => {
    // A client that typed `&` for `?`: the token is in the path.
    const secret = `S3cret${randomBytes(12).toString('hex')}`;
    const answer = await fns.enrollUser!.request(`/user/carol&token=${secret}%zz`, { method: 'POST' });
    expect(answer.status).toBe(400);
    await fns.enrollUser!.outputContaining('functions-framework refused a request path: bad percent-encoding (400); the path is not logged');
    const output = await fns.enrollUser!.settledOutput();
    expect(output).not.toContain(secret);
    expect(output).not.toContain(secret.slice(0, 10));
  });

  it('a body over 64 KiB is refused with 413 as it streams in, not buffered first; nothing is created', async () => {
    // functions-framework's own body parsers would accept up to 1 GiB: the cap must stop them too.
    const enroll = fns.enrollUser!;
    const create = fns.createPrimaryKey!;
    expect((await enroll.request('/user/streamer?token=streamer-token', { method: 'POST' })).status).toBe(201);
    const peakBefore = await peakRss(create.child.pid!);
    const cases = [
      // chunked, with a content type that the raw parser takes
      [enroll, '/user/bigbody?token=t', { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' }],
      [create, '/primaryKey/bigbody?user=streamer&token=streamer-token', { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' }],
      // the length declared up front, JSON
      [create, '/primaryKey/bigbody?user=streamer&token=streamer-token', { 'content-type': 'application/json', 'content-length': String(BIG) }],
      // no content type: functions-framework leaves the body to the function
      [create, '/primaryKey/bigbody?user=streamer&token=streamer-token', { 'transfer-encoding': 'chunked' }],
    ] as const;
    for (const [fn, path, headers] of cases) {
      const answer = await streamBody(fn.url, path, headers);
      expect(answer.status, `${path} ${JSON.stringify(headers)}`).toBe(413);
      expect(answer.body).toBe('the body is larger than 65536 bytes\n');
      // The server stopped reading: far less than the body went out.
      expect(answer.sent).toBeLessThan(BIG / 2);
    }
    expect(await peakRss(create.child.pid!)).toBeLessThan(peakBefore + 16 * 1024 * 1024);
    // Nothing was created behind the 413s.
    expect((await enroll.request('/user/bigbody?token=t', { method: 'POST' })).status).toBe(201);
    expect((await create.request('/primaryKey/bigbody?user=streamer&token=streamer-token', { method: 'POST' })).status).toBe(201);
    // A compressed body is refused before the parsers could inflate it.
    const gzip = await create.request('/primaryKey/zipped?user=streamer&token=streamer-token', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', accept: 'application/json' },
      body: '{}',
    });
    expect(gzip.status).toBe(415);
    expect(JSON.parse(gzip.body)).toMatchObject({ error: { code: 'UNSUPPORTED_MEDIA_TYPE' } });
    expect((await create.request('/primaryKey/zipped?user=streamer&token=streamer-token', { method: 'POST' })).status).toBe(201);
    // Encodings and charsets the parsers refuse themselves: Express's final handler answers too,
    // once the connection closes. One answer each, and the process lives on.
    const refusedByBoth: [Record<string, string>, number][] = [
      [{ 'content-type': 'application/json', 'content-encoding': 'bogus' }, 415],
      [{ 'content-type': 'text/plain', 'content-encoding': 'x-gzip' }, 415],
      [{ 'content-type': 'application/json;charset=bogus', 'content-length': '100000' }, 413],
    ];
    for (const [headers, status] of refusedByBoth) {
      const refused = await create.request('/primaryKey/odd?user=streamer&token=streamer-token', {
        method: 'POST',
        headers: { ...headers, accept: 'application/json' },
        body: '{}',
      });
      expect(refused.status, JSON.stringify(headers)).toBe(status);
    }
    // A refused connection is closed for good 2 s after its answer (LINGER_MS), at the latest.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect((await create.request('/primaryKey/odd?user=streamer&token=streamer-token', { method: 'POST' })).status).toBe(201);
    expect(create.output()).not.toContain('Uncaught exception');
    expect(create.output()).not.toContain('ERR_HTTP_HEADERS_SENT');
    // And a body within the limit still reaches the function (a create ignores it).
    const small = await create.request('/primaryKey/smallbody?user=streamer&token=streamer-token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(60_000) }),
    });
    expect(small.status).toBe(201);
  });

  it('answers only its own route', async () => {
    expect((await fns.getDataKey!.request('/dataKey/dk?user=ff&token=ff-token&primaryKeyName=pk', { method: 'POST' })).status).toBe(405);
    expect((await fns.createPrimaryKey!.request('/user/x?token=t', { method: 'POST' })).status).toBe(404);
    const json = await fns.enrollUser!.request('/user/%2E%2E?token=t', { method: 'POST', headers: { accept: 'application/json' } });
    expect(json.status).toBe(400);
    expect(JSON.parse(json.body)).toMatchObject({ error: { code: 'INVALID_NAME' } });
  });
});

const BIG = 64 * 1024 * 1024;

/** The process's peak resident set (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no VmHWM for ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * POSTs up to BIG bytes in 64 KiB chunks, as fast as the server takes them, and stops at its answer
 * or at an error (the server closing the connection). Resolves with the answer and how much was sent.
 */
function streamBody(url: string, path: string, headers: OutgoingHttpHeaders): Promise<{ status: number; body: string; sent: number }> {
  const { hostname, port } = new URL(url);
  const chunk = Buffer.alloc(64 * 1024, 'a');
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = httpRequest({ host: hostname, port, path, method: 'POST', headers, agent: false }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), sent }));
      res.on('error', reject);
    });
    req.on('error', (error) => (answered ? undefined : reject(error)));
    const pump = () => {
      while (!answered && !req.destroyed && sent < BIG) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (sent >= BIG && !req.destroyed) req.end();
    };
    pump();
  });
}

/**
 * Nothing listens on port 1 (privileged; no test binds it), so a connection there is refused every
 * time. A "free" port from freePort() is released at once and a parallel test's server can take it.
 */
const closedPort = 1;

describe('503 when the root key or storage is unavailable', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-503-'));
  });
  afterAll(async () => rm(dataDir, { recursive: true, force: true }));

  it('without a root key: key routes answer 503 and say how to provide one', async () => {
    const kms = await startLeanHost({ KMS_DATA_DIR: dataDir });
    try {
      expect((await kms.request('/user/u?token=tok-12345', { method: 'POST' })).status).toBe(201);
      const answer = await kms.request('/primaryKey/pk?user=u&token=tok-12345', { method: 'POST' });
      expect(answer.status).toBe(503);
      expect(answer.headers['retry-after']).toBe('5');
      expect(answer.body).toContain('set KMS_ROOT_KEY (base64 of 32 random bytes) or KMS_ROOT_KEY_FILE');
      expect((await kms.request('/primaryKey/pk?user=u&token=wrong', { method: 'POST' })).status).toBe(401);
    } finally {
      await kms.stop();
    }
  });

  it('with the sealing service down: the start-up root key pull fails quietly, each request says why', async () => {
    const ca = await loadTls({
      dataDir: join(dataDir, 'sealer-ca'),
      certFile: '',
      keyFile: '',
      hostnames: ['127.0.0.1'],
      envPrefix: 'TEST',
      commonName: 'test CA',
    });
    const kms = await startLeanHost({
      KMS_DATA_DIR: dataDir,
      KMS_SEALER_URL: `https://127.0.0.1:${closedPort}`,
      KMS_SEALER_CA_FILE: ca.certFile,
      KMS_ATTESTER: 'sample',
    });
    try {
      expect((await kms.request('/user/s?token=tok-12345', { method: 'POST' })).status).toBe(201);
      for (let i = 0; i < 2; i++) {
        const answer = await kms.request('/primaryKey/pk?user=s&token=tok-12345', { method: 'POST', headers: { accept: 'application/json' } });
        expect(answer.status).toBe(503);
        expect(JSON.parse(answer.body)).toMatchObject({
          error: { code: 'ROOT_KEY_UNAVAILABLE', message: `cannot reach the sealing service at https://127.0.0.1:${closedPort} (ECONNREFUSED)` },
        });
      }
      expect((await kms.request('/healthz')).status).toBe(200);
    } finally {
      await kms.stop();
    }
  });

  it('with storage down: 503 naming the storage, never a 500', async () => {
    const kms = await startLeanHost({
      KMS_DATA_DIR: dataDir,
      KMS_ROOT_KEY: randomBytes(32).toString('base64'),
      KMS_STORE: 's3',
      KMS_S3_ENDPOINT: `http://127.0.0.1:${closedPort}`,
      KMS_S3_ACCESS_KEY_ID: 'id',
      KMS_S3_SECRET_ACCESS_KEY: 'storage-secret-value',
    });
    try {
      for (const [method, path] of [
        ['POST', '/user/u?token=t'],
        ['POST', '/primaryKey/pk?user=u&token=t'],
        ['GET', '/dataKey/dk?user=u&token=t&primaryKeyName=pk'],
      ] as const) {
        const answer = await kms.request(path, { method, headers: { accept: 'application/json' } });
        expect(answer.status).toBe(503);
        expect(JSON.parse(answer.body)).toEqual({ error: { code: 'STORAGE_UNAVAILABLE', message: 'object storage cannot be reached (ECONNREFUSED)' } });
      }
      expect(await kms.settledOutput()).not.toContain('storage-secret-value');
    } finally {
      await kms.stop();
    }
  });
});
