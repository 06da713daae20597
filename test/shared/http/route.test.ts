// A route's sealed headers (shared/http/route.ts), through real HTTP on loopback: a route defined
// here, served with the attestation route over one context (the embedded store, a static root
// key), and opened with the test's own client (test/support/sealed-client.ts).
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attestationRoute } from '../../../functions/attestation.js';
import { loadKmsConfig } from '../../../shared/config.js';
import { defineRoute } from '../../../shared/http/route.js';
import { StaticRootKeySource } from '../../../shared/root-key/source.js';
import { createRouteContext } from '../../../shared/runtime.js';
import { CheckedObjectStore } from '../../../shared/store/checked-store.js';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { httpCall } from '../../support/processes.js';
import { attest, seal } from '../../support/sealed-client.js';

const probe = defineRoute({
  name: 'probe',
  methods: ['GET'],
  path: '/probe',
  sealedHeaders: ['x-kms-probe-state', 'x-kms-probe-absent'],
  handle: async () => ({
    status: 200,
    text: 'ok\n',
    json: { ok: true },
    headers: { 'x-kms-probe-state': 'pending', 'x-kms-undeclared': 'outside only', 'content-type': 'application/json' },
  }),
});

describe('a route that declares sealed headers', () => {
  let dataDir: string;
  let server: Server;
  let url: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-route-'));
    const store = new FsObjectStore(dataDir);
    const context = createRouteContext({
      config: loadKmsConfig({ KMS_DATA_DIR: dataDir }),
      store: new CheckedObjectStore(store, () => store.removeLeftovers()),
      rootKeySource: new StaticRootKeySource(randomBytes(32)),
    });
    const [attestation, probed] = [attestationRoute.handlerFor(context), probe.handlerFor(context)];
    server = createServer((req, res) => void (req.url?.startsWith('/attestation') ? attestation(req, res) : probed(req, res)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await rm(dataDir, { recursive: true, force: true });
  });

  it('seals the values it answers of those, and only those, in the protected header; the headers stay outside', async () => {
    const attested = await attest((path) => httpCall(`${url}${path}`));
    const request = await seal(attested, { method: 'GET', target: '/probe', token: 'any-token-0123456789' });
    const answer = await httpCall(`${url}/probe`, { headers: { authorization: request.authorization } });
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/jose');
    const { json, protectedHeader } = await request.openWithHeader(answer.body);
    expect(json).toEqual({ ok: true });
    expect(Object.keys(protectedHeader).filter((name) => name.startsWith('kms-'))).toEqual(['kms-probe-state', 'kms-jti']);
    expect(protectedHeader['kms-probe-state']).toBe('pending');
    expect(protectedHeader['kms-jti']).toBe(request.jti);
    expect(answer.headers['x-kms-probe-state']).toBe('pending');
    expect(answer.headers['x-kms-undeclared']).toBe('outside only');

    // Unsealed, the same route answers its headers as before, and no JWE.
    const plain = await httpCall(`${url}/probe`, { headers: { accept: 'application/json' } });
    expect(plain.headers['x-kms-probe-state']).toBe('pending');
    expect(JSON.parse(plain.body)).toEqual({ ok: true });
  });

  it('a sealed header must be named x-kms-<lowercase>: anything else is refused when the route is defined', () => {
    for (const name of ['x-custom', 'x-kms-', 'X-KMS-Probe', 'x-kms-probe state']) {
      const define = () => defineRoute({ ...probe, name: 'bad', sealedHeaders: [name as `x-kms-${string}`] });
      expect(define, name).toThrow(/x-kms-<lowercase>/);
    }
  });
});
