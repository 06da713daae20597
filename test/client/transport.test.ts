// The client's transport against real local servers (node:http/https on loopback): trust by CA or
// by pin checked before any request byte, retries honouring Retry-After, timeouts, the answer
// limit, keep-alive, and transport failures as typed errors.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KmsClient, spkiPin } from '../../client/index.js';
import { freePort } from '../support/processes.js';
import { writeTlsFiles } from '../support/tls-files.js';
import { failure } from '../support/kms-error.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A local server: `handler` answers; it counts requests, connections, and what it received. */
async function serve(handler: Handler, tls?: { cert: string; key: string }) {
  const seen = { requests: 0, connections: 0, received: [] as { url: string; headers: IncomingMessage['headers'] }[] };
  const onRequest: Handler = (req, res) => {
    seen.requests++;
    seen.received.push({ url: req.url ?? '', headers: req.headers });
    handler(req, res);
  };
  const server: Server = tls === undefined ? createHttpServer(onRequest) : createHttpsServer(tls, onRequest);
  server.on(tls === undefined ? 'connection' : 'secureConnection', () => seen.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    seen,
    url: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

const statusJson = { sealed: false, initialized: true, t: 3, n: 5, progress: 0, rootKeyId: 'r1', verificationPending: false, pendingRootKeyId: null };
const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

describe('TLS trust', () => {
  let dir: string;
  let tls: { cert: string; key: string };
  let other: string;
  let server: Awaited<ReturnType<typeof serve>>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-client-tls-'));
    const files = writeTlsFiles(dir, 'server');
    tls = { cert: files.certPem, key: await readFile(files.keyFile, 'utf8') };
    other = writeTlsFiles(dir, 'other').certPem;
    server = await serve((_req, res) => json(res, 200, statusJson), tls);
  });
  afterAll(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('trusts the configured CA, or the pin alone for a self-signed certificate', async () => {
    expect(await new KmsClient({ url: server.url, ca: tls.cert }).sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    expect(await new KmsClient({ url: server.url, pin: spkiPin(tls.cert) }).sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    expect(await new KmsClient({ url: server.url, ca: tls.cert, pin: [spkiPin(other), spkiPin(tls.cert)] }).sealStatus()).toMatchObject({ rootKeyId: 'r1' });
  });

  it('refuses an untrusted certificate or a wrong pin before sending the request', async () => {
    const before = server.seen.requests;
    expect((await failure(new KmsClient({ url: server.url }).sealStatus())).code).toBe('TLS');
    expect((await failure(new KmsClient({ url: server.url, ca: other }).sealStatus())).code).toBe('TLS');
    const pinned = await failure(new KmsClient({ url: server.url, pin: spkiPin(other), token: 'secret-token', user: 'alice' }).getDataKey('pk', 'dk'));
    expect(pinned).toMatchObject({ code: 'TLS', status: 0 });
    // A CA that holds but a pin that does not: refused too.
    expect((await failure(new KmsClient({ url: server.url, ca: tls.cert, pin: spkiPin(other) }).sealStatus())).code).toBe('TLS');
    expect(server.seen.requests).toBe(before);
  });

  it('refuses options it cannot honour', () => {
    expect(() => new KmsClient({ url: 'http://127.0.0.1:1', ca: tls.cert })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(() => new KmsClient({ url: server.url, pin: 'not-a-pin' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(() => new KmsClient({ url: `${server.url}/?token=x` })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
    expect(() => new KmsClient({ url: 'ftp://host' })).toThrow(expect.objectContaining({ code: 'CONFIG' }));
  });

  it('refuses http: to another machine, where tokens and shares would cross every hop in the clear, unless attested', () => {
    for (const url of ['http://kms.example:8080', 'http://10.1.2.3', 'http://[fe80::1]:80', 'http://127.example', 'http://localhost.example']) {
      expect(() => new KmsClient({ url, user: 'alice', token: 'a-token' }), url).toThrow(
        expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('in the clear') }),
      );
      expect(() => new KmsClient({ url, attest: { allowDevelopment: true } }), url).not.toThrow();
    }
    for (const url of ['http://127.0.0.1:1', 'http://127.3.2.1:1', 'http://localhost:1', 'http://[::1]:1']) {
      expect(() => new KmsClient({ url, user: 'alice', token: 'a-token' }), url).not.toThrow();
    }
  });
});

describe('HTTP behaviour', () => {
  const servers: { close(): Promise<void> }[] = [];
  const start = async (handler: Handler) => {
    const server = await serve(handler);
    servers.push(server);
    return server;
  };
  afterAll(async () => Promise.all(servers.map((s) => s.close())));

  it('sends credentials in headers by default, in the query when asked', async () => {
    const server = await start((_req, res) => json(res, 200, { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1', key: Buffer.alloc(32).toString('base64') }));
    await new KmsClient({ url: server.url, user: 'alice', token: 'alices token+/' }).getDataKey('pk1', 'dk1');
    await new KmsClient({ url: server.url, user: 'alice', token: 'alices token+/', credentials: 'query' }).getDataKey('pk1', 'dk1');
    const [inHeaders, inQuery] = server.seen.received;
    expect(inHeaders).toMatchObject({ url: '/dataKey/dk1?primaryKeyName=pk1', headers: { authorization: 'Bearer alices token+/', 'x-kms-user': 'alice' } });
    expect(inQuery?.url).toBe('/dataKey/dk1?primaryKeyName=pk1&user=alice&token=alices+token%2B%2F');
    expect(inQuery?.headers.authorization).toBeUndefined();
  });

  it("retries a 503 after its Retry-After, then carries the server's code", async () => {
    let calls = 0;
    const times: number[] = [];
    const flaky = await start((_req, res) => {
      times.push(Date.now());
      if (++calls < 3) json(res, 503, { error: { code: 'SEALED', message: 'sealed' } }, { 'retry-after': '1' });
      else json(res, 200, statusJson);
    });
    expect(await new KmsClient({ url: flaky.url, retries: 2 }).sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    expect(calls).toBe(3);
    // Honoured, not raced: each retry came at least Retry-After later (a lower bound only).
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);

    calls = 0;
    const error = await failure(new KmsClient({ url: flaky.url, retries: 1 }).sealStatus());
    expect(error).toMatchObject({ code: 'SEALED', status: 503, retryAfter: 1, message: 'sealed' });
    expect(calls).toBe(2);
  });

  it('does not retry other errors, and keeps their details', async () => {
    const server = await start((_req, res) => json(res, 405, { error: { code: 'METHOD_NOT_ALLOWED', message: 'no', allow: 'GET' } }));
    const error = await failure(new KmsClient({ url: server.url }).sealStatus());
    expect(error).toMatchObject({ code: 'METHOD_NOT_ALLOWED', status: 405, details: { allow: 'GET' } });
    expect(server.seen.requests).toBe(1);
  });

  it('times out, refuses answers over 1 MiB or not JSON, and reports an unreachable server', async () => {
    const silent = await start(() => undefined);
    expect(await failure(new KmsClient({ url: silent.url, timeoutMs: 200 }).sealStatus())).toMatchObject({ code: 'TIMEOUT', status: 0 });
    const huge = await start((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(`"${'a'.repeat(1024 * 1024 + 10)}"`));
    expect((await failure(new KmsClient({ url: huge.url }).sealStatus())).code).toBe('PROTOCOL');
    const html = await start((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'));
    expect((await failure(new KmsClient({ url: html.url }).sealStatus())).code).toBe('PROTOCOL');
    const port = await freePort();
    expect(await failure(new KmsClient({ url: `http://127.0.0.1:${port}` }).sealStatus())).toMatchObject({ code: 'UNREACHABLE', status: 0 });
  });

  it('keeps connections alive across requests', async () => {
    const server = await start((_req, res) => json(res, 200, statusJson));
    const client = new KmsClient({ url: server.url });
    for (let i = 0; i < 3; i++) await client.sealStatus();
    client.close();
    expect(server.seen).toMatchObject({ requests: 3, connections: 1 });
  });

  it('sends a request once more on a new connection when the server had closed the kept-alive one', async () => {
    // Raw TCP: the first connection answers one request and then drops the next one unanswered, as a
    // server whose idle timeout fired just as the client reused the connection.
    let connections = 0;
    const server = createNetServer((socket) => {
      const connection = ++connections;
      let requests = 0;
      socket.on('data', (chunk: Buffer) => {
        for (let i = chunk.toString('latin1').split('\r\n\r\n').length - 1; i > 0; i--) {
          if (connection === 1 && ++requests > 1) return void socket.destroy();
          const body = JSON.stringify(statusJson);
          socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
    const client = new KmsClient({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, retries: 0 });
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    client.close();
    expect(connections).toBe(2);
  });

  it('never sends a POST again after a reset: the server may already have acted on it', async () => {
    // As above, but the request the reused connection drops is a POST: it may have reached the
    // server, so the client reports the failure instead of creating the key a second time.
    let connections = 0;
    let posts = 0;
    const server = createNetServer((socket) => {
      const connection = ++connections;
      let requests = 0;
      socket.on('data', (chunk: Buffer) => {
        const text = chunk.toString('latin1');
        posts += text.split('\r\n').filter((line) => line.startsWith('POST ')).length;
        for (let i = text.split('\r\n\r\n').length - 1; i > 0; i--) {
          if (connection === 1 && ++requests > 1) return void socket.destroy();
          const body = JSON.stringify(statusJson);
          socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers.push({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
    const client = new KmsClient({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, user: 'alice', token: 'a-token', retries: 0 });
    expect(await client.sealStatus()).toMatchObject({ rootKeyId: 'r1' });
    expect((await failure(client.createDataKey('pk', 'dk'))).code).toBe('UNREACHABLE');
    client.close();
    expect(posts).toBe(1);
    expect(connections).toBe(1);
  });

  it('refuses a missing argument or credential before sending anything', async () => {
    const server = await start((_req, res) => json(res, 200, {}));
    const client = new KmsClient({ url: server.url, user: 'alice' });
    expect((await failure(client.getDataKey('pk', 'dk'))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(client.verify([]))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(client.createDataKey('', 'dk'))).code).toBe('INVALID_ARGUMENT');
    expect(server.seen.requests).toBe(0);
  });
});
