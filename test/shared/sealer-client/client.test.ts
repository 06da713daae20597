// SealerClient's configuration checks and error mapping to KmsError codes.
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester, SampleVerifier } from '../../../shared/attestation/sample.js';
import { KmsError } from '../../../shared/errors.js';
import { SealerClient } from '../../../shared/sealer-client/client.js';
import { isSealerOutage } from '../../../shared/sealer-client/outage.js';
import { adminAttester, startSealerProcess, type SealerProcess } from '../../support/sealer.js';
import { kmsFailure } from '../../support/failure.js';

function configError(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof KmsError ? `${error.code}: ${error.message}` : 'not a KmsError';
  }
  return undefined;
}

let sealer: SealerProcess;
let ca: string;

beforeAll(async () => {
  sealer = await startSealerProcess();
  ca = await sealer.caPem();
});

afterAll(async () => {
  await sealer?.cleanup();
});

describe('SealerClient configuration', () => {
  it('needs an https URL and a PEM CA', () => {
    const attester = new SampleAttester();
    expect(configError(() => new SealerClient({ url: sealer.url.replace('https:', 'http:'), ca, attester, sealerVerifier: new SampleVerifier() }))).toMatch(
      /^CONFIG: .*https/,
    );
    expect(configError(() => new SealerClient({ url: 'not a url', ca, attester, sealerVerifier: new SampleVerifier() }))).toMatch(/^CONFIG/);
    expect(configError(() => new SealerClient({ url: sealer.url, ca: 'not a certificate', attester, sealerVerifier: new SampleVerifier() }))).toMatch(
      /^CONFIG: .*PEM/,
    );
    expect(
      configError(() => SealerClient.fromCaFile({ url: sealer.url, caFile: '/nonexistent/ca.pem', attester, sealerVerifier: new SampleVerifier() })),
    ).toMatch(/^CONFIG: KMS_SEALER_CA_FILE/);
    // A file that is there but holds no certificate is named too.
    const notPem = join(tmpdir(), `not-a-ca-${process.pid}.txt`);
    writeFileSync(notPem, 'not a certificate\n');
    try {
      expect(configError(() => SealerClient.fromCaFile({ url: sealer.url, caFile: notPem, attester, sealerVerifier: new SampleVerifier() }))).toBe(
        `CONFIG: KMS_SEALER_CA_FILE must hold PEM certificates (-----BEGIN CERTIFICATE-----): ${notPem}`,
      );
    } finally {
      rmSync(notPem, { force: true });
    }
  });
});

describe('SealerClient error mapping', () => {
  it('unreachable → ROOT_KEY_UNAVAILABLE naming the URL', async () => {
    const url = 'https://127.0.0.1:1'; // nothing listens on port 1: refused every time (a released free port may be taken meanwhile)
    const client = new SealerClient({ url, ca, attester: new SampleAttester(), sealerVerifier: new SampleVerifier() });
    try {
      const error = await kmsFailure(client.rootKey());
      expect(error.code).toBe('ROOT_KEY_UNAVAILABLE');
      expect(error.message).toBe(`cannot reach the sealing service at ${url} (ECONNREFUSED)`);
      expect((await kmsFailure(client.sealStatus())).code).toBe('ROOT_KEY_UNAVAILABLE');
    } finally {
      client.close();
    }
  });

  it('sealed/uninitialized → SEALED with the seal status in details; conflicts → CONFLICT; bad shares → BAD_REQUEST with the detail', async () => {
    const client = SealerClient.fromCaFile({
      url: sealer.url,
      caFile: `${sealer.dataDir}/tls/cert.pem`,
      attester: adminAttester(),
      sealerVerifier: new SampleVerifier(),
    });
    try {
      const uninitialized = await kmsFailure(client.rootKey());
      expect(uninitialized).toMatchObject({ code: 'SEALED', details: { sealed: true, initialized: false, t: 0, n: 0, progress: 0, rootKeyId: null } });
      const { shares } = await client.installRootKey({ t: 3, n: 5, expectedCurrentId: null });
      expect(shares).toHaveLength(5);
      expect((await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: null }))).code).toBe('CONFLICT');
      expect((await kmsFailure(client.installRootKey({ t: 1, n: 5, expectedCurrentId: null }))).message).toContain('2 <= t <= n <= 255');
      expect((await kmsFailure(client.installRootKey({ t: 3, n: 256, expectedCurrentId: null }))).code).toBe('BAD_REQUEST');
      await client.seal();
      const sealed = await kmsFailure(client.rootKey());
      expect(sealed).toMatchObject({ code: 'SEALED', details: { sealed: true, initialized: true, t: 3, n: 5 } });
      expect(sealed.message).toContain('recover the root key with 3 shares');
      const bad = await kmsFailure(client.submitShare({ index: 0, content: 'AAAA' }));
      expect(bad).toMatchObject({ code: 'BAD_REQUEST' });
      expect(bad.message).toContain('index 0 is out of range');
      expect(await client.resetRecovery()).toEqual({ sealed: true, progress: 0, t: 3 });
      expect(isSealerOutage(sealed)).toBe(false); // sealed by an operator: the service's own word
    } finally {
      client.close();
    }
  });

  it('a restarted sealer that only shares can unseal (no peers): SEALED, its own word, preferred to the silence of another', async () => {
    await sealer.restart('SIGKILL'); // initialized above: it restarts sealed, with no peer to unseal it
    const client = new SealerClient({ url: ['https://127.0.0.1:1', sealer.url], ca, attester: adminAttester(), sealerVerifier: new SampleVerifier() });
    try {
      for (const failure of [await kmsFailure(client.rootKey()), await kmsFailure(client.currentRootKeyId())]) {
        expect(failure).toMatchObject({ code: 'SEALED', details: { sealed: true, initialized: true, sealedReason: 'restarted' } });
        expect(isSealerOutage(failure)).toBe(false);
      }
    } finally {
      client.close();
    }
  });
});
