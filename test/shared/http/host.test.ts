// The lean host (shared/http/host.ts) through real sockets, over plain HTTP and over TLS: a client
// that ends its side right after its request (`nc -N`, some HTTP/1.0 clients) gets the whole answer,
// then the connection closes; keep-alive and pipelining are as before.
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

  it('answers a create whose client half-closed right after sending it, then closes the connection', async () => {
    const answer = await rawCall(host.url, post('/user/halfclosed?token=t'), { ca, halfClose: true });
    expect(answer).toMatch(/^HTTP\/1\.1 201 /);
    expect(answer).toContain('user [halfclosed] is created successfully!\n');
    // The create took effect once, and its client was told.
    const again = await rawCall(host.url, post('/user/halfclosed?token=t', 'Connection: close\r\n'), { ca });
    expect(again).toMatch(/^HTTP\/1\.1 409 /);
  });

  it('answers every request pipelined before the half-close, in order', async () => {
    const answer = await rawCall(host.url, post('/user/piped1?token=t') + 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n' + post('/user/piped2?token=t'), {
      ca,
      halfClose: true,
    });
    const statuses = [...answer.matchAll(/^HTTP\/1\.1 (\d{3}) /gm)].map((m) => m[1]);
    expect(statuses).toEqual(['201', '200', '201']);
    expect(answer.indexOf('[piped1]')).toBeLessThan(answer.indexOf('[piped2]'));
  });

  it('keeps a connection that is not half-closed open for the next request', async () => {
    // The client closes after 500 ms: until then the host has answered both and kept the connection.
    const answer = await rawCall(host.url, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n', {
      ca,
      closeAfterMs: 500,
    });
    expect([...answer.matchAll(/^HTTP\/1\.1 200 /gm)]).toHaveLength(2);
    expect(answer).toContain('Connection: keep-alive');
  });
});
