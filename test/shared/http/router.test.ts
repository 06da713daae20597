// The lean host's router (shared/http/router.ts) through real HTTP on loopback: its readiness
// probe waits for the root key, so while that waits (a sealing service that takes connections and
// never answers, here a root key source that never answers) a client that pipelines probes without
// reading must meet the same per-connection bound as the routes.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKmsConfig } from '../../../shared/config.js';
import { MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION } from '../../../shared/http/route.js';
import { READY_PATH, routeRequests } from '../../../shared/http/router.js';
import type { RootKey, RootKeySource } from '../../../shared/root-key/source.js';
import { createRouteContext } from '../../../shared/runtime.js';
import { CheckedObjectStore } from '../../../shared/store/checked-store.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';

/** A root key source whose sealing service never answers. */
class SilentRootKeySource implements RootKeySource {
  current(): Promise<RootKey> {
    return new Promise<RootKey>(() => undefined);
  }
}

describe('GET /readyz while the root key is being obtained', () => {
  let dataDir: string;
  let server: Server;
  let port: number;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-router-'));
    const store = new FsObjectStore(dataDir);
    const context = createRouteContext({
      config: loadKmsConfig({ KMS_DATA_DIR: dataDir }),
      store: new CheckedObjectStore(store, () => store.removeLeftovers()),
      rootKeySource: new SilentRootKeySource(),
    });
    const route = routeRequests([], context);
    server = createServer((req, res) => void route(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('answers probes past the connection bound 503 at once, without waiting; each probe gets its answer', async () => {
    const count = 500;
    const bodies = await new Promise<string[]>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () =>
        socket.write(
          Array.from({ length: count }, (_, i) => `GET ${READY_PATH} HTTP/1.1\r\nHost: kms\r\n${i === count - 1 ? 'Connection: close\r\n' : ''}\r\n`).join(''),
        ),
      );
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', reject);
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1').split('HTTP/1.1 ').slice(1)));
    });
    expect(bodies).toHaveLength(count);
    expect(bodies.every((answer) => answer.startsWith('503 '))).toBe(true);
    const waited = bodies.filter((answer) => answer.includes('still obtaining the root key'));
    const shed = bodies.filter((answer) => answer.includes('requests are in flight on this connection'));
    // The first probes wait for the key (each within its 900 ms); the rest are shed.
    expect(waited.length).toBeLessThanOrEqual(MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION);
    expect(waited.length + shed.length).toBe(count);
  });
});
