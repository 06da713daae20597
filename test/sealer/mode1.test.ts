// Mode 1 (root key from a secret) and start-up configuration, on real sealer processes.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { SampleAttester, SampleVerifier } from '../../shared/attestation/sample.js';
import { SealerClient } from '../../shared/sealer-client/client.js';
import { NO_METRICS, repoRoot } from '../support/processes.js';
import { allLogs, makeShares, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { kmsFailure } from '../support/failure.js';

const ROOT_KEY = randomBytes(32);
const secrets = new SecretRegistry();
secrets.add(ROOT_KEY);
let dir: string;
let sealer: SealerProcess;
let client: SealerClient;

/** Runs the sealer expecting it to refuse to start; returns exit code and output. */
function startFails(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(repoRoot, 'dist/sealer/main.js')], {
      env: { PATH: process.env.PATH ?? '', KMS_SEALER_PORT: '0', KMS_SEALER_DATA_DIR: dir, ...NO_METRICS, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-mode1-'));
  const secretFile = join(dir, 'root-key');
  await writeFile(secretFile, `${ROOT_KEY.toString('base64')}\n`, { mode: 0o600 });
  sealer = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY_FILE: secretFile } });
  client = await sealer.client();
});

afterAll(async () => {
  await sealer?.cleanup();
  await rm(dir, { recursive: true, force: true });
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

describe('mode 1: root key from a secret file', () => {
  it('is unsealed at once and releases the secret', async () => {
    expect(await client.sealStatus()).toEqual({
      sealed: false,
      initialized: true,
      t: 0,
      n: 0,
      progress: 0,
      rootKeyId: rootKeyId(ROOT_KEY),
      verificationPending: false,
      pendingRootKeyId: null,
      integrityAlarm: null,
      source: 'secret',
      sealedReason: null,
    });
    expect((await client.rootKey()).key.equals(ROOT_KEY)).toBe(true);
  });

  it('refuses rotation (409: rotate the secret instead), verification, recovery and sealing', async () => {
    const rotate = await kmsFailure(client.installRootKey({ t: 3, n: 5, expectedCurrentId: rootKeyId(ROOT_KEY) }));
    expect(rotate.code).toBe('CONFLICT');
    expect(rotate.message).toContain('rotate the secret instead');
    const shares = await makeShares(ROOT_KEY, 5, 3);
    shares.forEach((share) => secrets.addShare(share));
    expect((await kmsFailure(client.verifyShares(shares.slice(0, 3)))).code).toBe('CONFLICT');
    expect((await kmsFailure(client.submitShare(shares[0]!))).code).toBe('CONFLICT');
    expect((await kmsFailure(client.seal())).code).toBe('CONFLICT');
    expect((await client.rootKey()).key.equals(ROOT_KEY)).toBe(true);
  });

  it('comes back unsealed with the same key after SIGKILL', async () => {
    await sealer.restart('SIGKILL');
    client.close();
    client = await sealer.client();
    expect(await client.sealStatus()).toMatchObject({ sealed: false, rootKeyId: rootKeyId(ROOT_KEY) });
    expect((await client.rootKey()).key.equals(ROOT_KEY)).toBe(true);
  });
});

describe('start-up configuration', () => {
  it('refuses a malformed root key, naming the variable and never echoing the value', async () => {
    const value = `${randomBytes(20).toString('base64')}`;
    const { code, output } = await startFails({ KMS_SEALER_ROOT_KEY: value });
    expect(code).toBe(1);
    expect(output).toContain('KMS_SEALER_ROOT_KEY must be a base64-encoded 256-bit');
    expect(output).not.toContain(value);
  });

  it('refuses half a TLS configuration', async () => {
    const { code, output } = await startFails({ KMS_SEALER_TLS_CERT_FILE: join(dir, 'cert.pem') });
    expect(code).toBe(1);
    expect(output).toContain('set both KMS_SEALER_TLS_CERT_FILE and KMS_SEALER_TLS_KEY_FILE');
  });

  it('serves a configured certificate and key', async () => {
    const own = await startSealerProcess({
      env: {
        KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'),
        KMS_SEALER_TLS_CERT_FILE: join(sealer.dataDir, 'tls', 'cert.pem'),
        KMS_SEALER_TLS_KEY_FILE: join(sealer.dataDir, 'tls', 'key.pem'),
      },
    });
    try {
      expect(own.lines()).toContainEqual(expect.objectContaining({ message: 'TLS certificate', certFile: join(sealer.dataDir, 'tls', 'cert.pem') }));
      const viaOwn = new SealerClient({ url: own.url, ca: await sealer.caPem(), attester: new SampleAttester(), sealerVerifier: new SampleVerifier() });
      try {
        expect((await viaOwn.rootKey()).key.equals(ROOT_KEY)).toBe(true);
      } finally {
        viaOwn.close();
      }
    } finally {
      await own.cleanup();
    }
  });
});
