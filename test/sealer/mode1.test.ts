// Mode 1 (root key from a secret) and start-up configuration, on real sealer processes; and the
// cluster administrator who sets a root key secret on a sealer whose store was installed in mode 2.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootKeyId } from '../../shared/crypto/root-key-id.js';
import { SampleAttester, SampleVerifier } from '../../shared/attestation/sample.js';
import { combine } from 'shamir-secret-sharing';
import { SealerClient } from '../../shared/sealer-client/client.js';
import { NO_METRICS, repoRoot, TEST_ADMIN_IDENTITY } from '../support/processes.js';
import { adminRoutes, ProtocolClient, rootKeyIdOf } from '../support/protocol-client.js';
import { allLogs, makeShares, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { fsAdversary } from '../support/adversary.js';
import { readFsObjects } from '../support/storage-snapshot.js';
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

  it('refuses KMS_SEALER_ROOT_KEY beside KMS_SEALER_ROOT_KEY_FILE, naming both, whichever would have won', async () => {
    const value = randomBytes(32).toString('base64');
    const { code, output } = await startFails({ KMS_SEALER_ROOT_KEY: value, KMS_SEALER_ROOT_KEY_FILE: join(dir, 'root-key') });
    expect(code).toBe(1);
    expect(output).toContain(
      'KMS_SEALER_ROOT_KEY and KMS_SEALER_ROOT_KEY_FILE are both set: set only one of them (the value, or the file holding it) and unset the other',
    );
    expect(output).not.toContain(value);
    expect(output).not.toContain('listening');
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

describe('a store installed in mode 2 (Shamir shares), restarted with a root key secret', () => {
  let installed: SealerProcess;
  let storeDir: string;
  let modeTwoKey: Buffer;
  let modeTwoId: string;

  beforeAll(async () => {
    storeDir = await mkdtemp(join(tmpdir(), 'tee-kms-mode2-store-'));
    installed = await startSealerProcess({ dataDir: storeDir });
    const admin = new ProtocolClient({ url: installed.url, ca: await installed.caPem(), initData: TEST_ADMIN_IDENTITY });
    secrets.addText(await admin.attest());
    const answer = await admin.admin(adminRoutes.rotate.method, adminRoutes.rotate.path, {
      body: { t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null },
    });
    expect(answer.status, answer.text).toBe(200);
    const { rootKeyId: id, shares } = answer.json<{ rootKeyId: string; shares: Array<{ content: string }> }>();
    shares.forEach((share) => secrets.addText(share.content));
    modeTwoKey = Buffer.from(await combine(shares.slice(0, 2).map((share) => new Uint8Array(Buffer.from(share.content, 'base64')))));
    secrets.add(modeTwoKey);
    modeTwoId = id;
    expect(rootKeyIdOf(modeTwoKey)).toBe(modeTwoId);
    await installed.stop();
  });

  afterAll(async () => {
    await installed?.cleanup();
    await rm(storeDir, { recursive: true, force: true });
  });

  it('refuses to start with another root key (exit 1, naming both ids), and storage is unchanged', async () => {
    const chosen = randomBytes(32);
    secrets.add(chosen);
    const secretFile = join(dir, 'chosen-root-key');
    await writeFile(secretFile, chosen.toString('base64'), { mode: 0o600 });
    const before = await readFsObjects(storeDir);
    expect([...before.keys()]).toContain('sealer/state.json');
    const configured: Array<Record<string, string>> = [{ KMS_SEALER_ROOT_KEY_FILE: secretFile }, { KMS_SEALER_ROOT_KEY: chosen.toString('base64') }];
    for (const env of configured) {
      const { code, output } = await startFails({ ...env, KMS_SEALER_DATA_DIR: storeDir, KMS_DATA_DIR: storeDir });
      allLogs.push(() => output);
      expect(code).toBe(1);
      expect(output).toContain('CONFIG');
      expect(output).toContain(`is root key ${rootKeyId(chosen)}`);
      expect(output).toContain(`current root key ${modeTwoId}`);
      expect(output).toContain('switching an installed mode-2 store to mode 1 would orphan every key');
      expect(output).not.toContain('listening');
    }
    expect(await readFsObjects(storeDir)).toEqual(before);
  });

  it("starts with the state record's own root key, and serves it", async () => {
    const own = await startSealerProcess({ dataDir: storeDir, env: { KMS_SEALER_ROOT_KEY: modeTwoKey.toString('base64') } });
    try {
      const function_ = new ProtocolClient({ url: own.url, ca: await own.caPem() });
      secrets.addText(await function_.attest());
      const answer = await function_.send('GET', '/kbs/v0/resource/tee-kms/root-key/current', { token: function_.token! });
      expect(answer.status, answer.text).toBe(200);
      expect((await function_.open(answer.json())).equals(modeTwoKey)).toBe(true);
    } finally {
      await own.cleanup();
    }
  });

  it('refuses to start while the state record cannot be read: no check is skipped', async () => {
    await fsAdversary(storeDir).write('sealer/state.json', 'not a state record');
    const { code, output } = await startFails({
      KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64'),
      KMS_SEALER_DATA_DIR: storeDir,
      KMS_DATA_DIR: storeDir,
    });
    allLogs.push(() => output);
    expect(code).toBe(1);
    expect(output).toContain('INTEGRITY: the sealer state record (sealer/state.json) is corrupted');
  });
});
