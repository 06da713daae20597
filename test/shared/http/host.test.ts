// The lean host (shared/http/host.ts) through real sockets, over plain HTTP and over TLS: keep-alive,
// and a CONNECT, which Node would close without a word, answered 405 and its connection closed.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRoutes } from '../../../functions/catalog.js';
import { loadKmsConfig } from '../../../shared/config.js';
import { startHost, type RunningHost } from '../../../shared/http/host.js';
import { StaticRootKeySource } from '../../../shared/root-key/source.js';
import { createRouteContext } from '../../../shared/runtime.js';
import { CheckedObjectStore } from '../../../shared/store/checked-store.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { NO_METRICS, rawCall } from '../../support/processes.js';

const post = (path: string, extra = '') => `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n${extra}\r\n`;

describe.each(['off', 'self-signed'] as const)('the lean host, KMS_TLS=%s', (tls) => {
  let dataDir: string;
  let host: RunningHost;
  let ca: string | undefined;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-host-'));
    const store = new FsObjectStore(dataDir);
    const context = createRouteContext({
      config: loadKmsConfig({ KMS_DATA_DIR: dataDir }),
      store: new CheckedObjectStore(store, () => store.removeLeftovers()),
      rootKeySource: new StaticRootKeySource(randomBytes(32)),
    });
    host = await startHost(loadRoutes, { PORT: '0', KMS_TLS: tls, KMS_DATA_DIR: dataDir, ...NO_METRICS }, { context });
    ca = host.certFile === undefined ? undefined : await readFile(host.certFile, 'utf8');
  });
  afterAll(async () => {
    await host?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('keeps a connection open for the next request', async () => {
    // The client closes after 500 ms: until then the host has answered both and kept the connection.
    const answer = await rawCall(host.url, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n', {
      ca,
      closeAfterMs: 500,
    });
    expect([...answer.matchAll(/^HTTP\/1\.1 200 /gm)]).toHaveLength(2);
    expect(answer).toContain('Connection: keep-alive');
  });

  it('answers a CONNECT 405, in the format the client accepts, and closes its connection', async () => {
    const connect = (accept: string) => `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAccept: ${accept}\r\n\r\n`;
    const started = Date.now();
    // What follows a CONNECT would be the tunnel's bytes: never read as a request.
    const text = await rawCall(host.url, connect('*/*') + 'POST /user/tunneled?token=t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n', { ca });
    expect(Date.now() - started).toBeLessThan(5_000); // closed by the host, not by the client's timer
    expect(text).toMatch(/^HTTP\/1\.1 405 /);
    expect(text).toMatch(/\r\nallow: \r\n/i);
    expect(text).toMatch(/\r\nConnection: close\r\n/);
    expect(text).toContain('\r\n\r\nCONNECT is not served: this is not a proxy\n');
    expect([...text.matchAll(/HTTP\/1\.1 /g)]).toHaveLength(1);
    const json = await rawCall(host.url, connect('application/json'), { ca });
    expect(JSON.parse(json.slice(json.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { code: 'METHOD_NOT_ALLOWED', message: 'CONNECT is not served: this is not a proxy', allow: '' },
    });
    // Nothing was done for the bytes after it.
    expect(await rawCall(host.url, post('/user/tunneled?token=t', 'Connection: close\r\n'), { ca })).toMatch(/^HTTP\/1\.1 201 /);
  });

  it('answers a CONNECT pipelined after other requests after theirs, in order', async () => {
    const answer = await rawCall(host.url, post('/user/beforeconnect?token=t') + 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', { ca });
    expect([...answer.matchAll(/^HTTP\/1\.1 (\d{3}) /gm)].map((m) => m[1])).toEqual(['201', '405']);
  });
});
