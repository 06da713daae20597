// The sealing service's server (sealer/app.ts) through real TLS sockets, started in this process:
// keep-alive, and a CONNECT, which Node would close without a word, answered 405 and its
// connection closed.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { FsObjectStore } from '../../shared/store/fs-store.js';
import { startSealer, type RunningSealer } from '../../sealer/app.js';
import { loadSealerOptions } from '../../sealer/options.js';
import { NO_METRICS, rawCall } from '../support/processes.js';

describe('the sealing service over raw TLS sockets', () => {
  let dataDir: string;
  let sealer: RunningSealer;
  let ca: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-sealer-app-'));
    const options = loadSealerOptions({ KMS_SEALER_DATA_DIR: dataDir, KMS_SEALER_PORT: '0', KMS_SEALER_INSECURE_DEV_MODE: 'true', ...NO_METRICS });
    sealer = await startSealer(options, new FsObjectStore(dataDir), { attester: new SampleAttester() });
    ca = await readFile(sealer.certFile, 'utf8');
  });
  afterAll(async () => {
    await sealer?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('keeps a connection open for the next request', async () => {
    const probe = 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const answer = await rawCall(sealer.url, probe + probe, { ca, closeAfterMs: 500 });
    expect([...answer.matchAll(/HTTP\/1\.1 200 /g)]).toHaveLength(2);
  });

  it('answers a CONNECT 405 as a problem, after the requests pipelined before it, and closes its connection', async () => {
    const started = Date.now();
    const answer = await rawCall(
      sealer.url,
      'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n',
      { ca },
    );
    expect(Date.now() - started).toBeLessThan(5_000); // closed by the service, not by the client's timer
    const [healthz, refused, ...rest] = answer.split(/(?=HTTP\/1\.1 )/);
    expect(healthz).toMatch(/^HTTP\/1\.1 200 /);
    expect(rest).toEqual([]); // what follows a CONNECT is never read as a request
    expect(refused).toMatch(/^HTTP\/1\.1 405 /);
    expect(refused).toMatch(/\r\nallow: \r\n/i);
    expect(refused).toMatch(/\r\nConnection: close\r\n/);
    expect(refused).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/);
    expect(JSON.parse(refused!.slice(refused!.indexOf('\r\n\r\n') + 4))).toMatchObject({ status: 405, detail: 'CONNECT is not served: this is not a proxy' });
  });
});
