import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { freePort, repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';
import { findSecrets } from '../support/storage-snapshot.js';
import { findTool, requireTool, skipWithout } from '../support/tools.js';

/** `ps`, which lists the sealing-service processes npm start runs. */
const PS = findTool('ps', ['-p', String(process.pid), '-o', 'pid='], 'apt-get install procps');

/** `npm start` in its default mode (Shamir shares), stopped and started again like a user would. */
describe('npm start: the BigDL KMS story on one machine', () => {
  let dataDir: string;
  let port: number;
  let kms: ServerProcess | undefined;
  const start = async () => (kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port), KMS_ADMIN_TOKEN: 'local-admin-token' }));

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-'));
    port = await freePort();
  });
  afterAll(async () => {
    await kms?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('rotate first, create keys, restart (sealed), recover 3 shares one by one: every key unchanged', async () => {
    let server = await start();
    expect((await server.request('/')).body).toContain('state: uninitialized');
    expect((await server.request('/primaryKey/pk?user=u&token=t')).status).toBe(405);

    const rotated = await server.request('/rootKey/rotate');
    expect(rotated.status).toBe(200);
    const shares = JSON.parse(rotated.body) as Share[];
    expect(shares).toHaveLength(5);

    const keys = new Map<string, string>();
    expect((await server.request('/user/alice?token=alices-token', { method: 'POST' })).status).toBe(201);
    for (const pk of ['pk1', 'pk2']) {
      expect((await server.request(`/primaryKey/${pk}?user=alice&&token=alices-token`, { method: 'POST' })).status).toBe(201);
      for (const dk of ['dk1', 'dk2']) {
        expect((await server.request(`/dataKey/${dk}?user=alice&&token=alices-token&&primaryKeyName=${pk}`, { method: 'POST' })).status).toBe(201);
        keys.set(`${pk}/${dk}`, (await server.request(`/dataKey/${dk}?user=alice&&token=alices-token&&primaryKeyName=${pk}`)).body);
      }
    }

    await server.stop();
    server = await start();
    const sealed = await server.request('/dataKey/dk1?user=alice&&token=alices-token&&primaryKeyName=pk1');
    expect(sealed.status).toBe(503);
    expect(sealed.body).toContain('sealed');
    expect((await server.request('/')).body).toContain('state: sealed: send 3 shares with PUT /rootKey/recover (0 received)');

    // Progress can be reset (no credentials, as Vault's unseal reset): the share sent is forgotten.
    const first = shares[1]!;
    expect((await server.request('/rootKey/recover', { method: 'PUT', body: JSON.stringify(first) })).body).toBe('share accepted: 1 of 3 received\n');
    expect((await server.request('/rootKey/recover', { method: 'DELETE' })).body).toBe('recovery progress reset: send the shares again\n');
    expect((await server.request('/')).body).toContain('(0 received)');
    for (const [i, share] of [shares[3]!, shares[0]!, shares[2]!].entries()) {
      const answer = await server.request('/rootKey/recover', { method: 'PUT', body: `{"index" : ${share.index},"content" : "${share.content}"}` });
      expect(answer.status).toBe(200);
      if (i < 2) expect(answer.body).toBe(`share accepted: ${i + 1} of 3 received\n`);
      else expect(answer.body).toMatch(/^root key recovered: tee-kms is unsealed/);
    }
    for (const [name, value] of keys) {
      const [pk, dk] = name.split('/');
      expect((await server.request(`/dataKey/${dk}?user=alice&&token=alices-token&&primaryKeyName=${pk}`)).body, name).toBe(value);
    }
    expect(await server.request('/rootKey/recover', { method: 'DELETE' })).toMatchObject({ status: 200, body: 'nothing to reset: tee-kms is not sealed\n' });
    const secrets = [
      'alices-token',
      'local-admin-token',
      ...shares.map((s) => Buffer.from(s.content, 'base64')),
      ...[...keys.values()].map((k) => Buffer.from(k.trim(), 'base64')),
    ];
    expect(findSecrets(await server.settledOutput(), secrets)).toEqual([]);
  });
});

describe('npm start: stopping', () => {
  it('SIGTERM to the npm process alone (kill <pid>) stops the server and the sealing service: the port is free again', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-stop-'));
    // Empty is unset, as for every option: a free port, and the sealing service's own certificate.
    const server = await startNpmStart({ KMS_DATA_DIR: dataDir, KMS_SEALER_PORT: '', KMS_SEALER_CA_FILE: '' });
    try {
      expect((await server.request('/rootKey/status', { headers: { accept: 'application/json' } })).status).toBe(200);
      const sealerPort = /"sealer":"https:\/\/127\.0\.0\.1:(\d+)"/.exec(server.output())?.[1];
      expect(sealerPort).toMatch(/^\d+$/);
      expect(sealerPort).not.toBe('9877');
      process.kill(server.child.pid!, 'SIGTERM'); // npm only, not its process group
      // The functions' listener closes first, then the sealing service is stopped: wait for each.
      expect(await closedWithin(Number(new URL(server.url).port), 15_000)).toBe(true);
      const sealerUrl = /"sealer":"(https:\/\/[^"]+)"/.exec(server.output())?.[1];
      expect(sealerUrl).toBeDefined();
      expect(await closedWithin(Number(new URL(sealerUrl!).port))).toBe(true);
    } finally {
      await server.stop('SIGKILL');
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('npm start: configuration errors name what the user set', () => {
  /** Runs npm start with `env` on a fresh KMS_DATA_DIR (unless `env` names one), to its exit. */
  const refusedStart = async (env: Record<string, string>) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-config-'));
    try {
      return spawnSync('npm', ['start', '--silent'], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, KMS_DATA_DIR: dataDir, PORT: String(await freePort()), ...env },
        encoding: 'utf8',
        timeout: 60_000,
      });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  };

  it.each([
    ['KMS_ROOT_KEY', { KMS_ROOT_KEY: 'not-a-key' }, /^tee-kms: KMS_ROOT_KEY must be a base64-encoded 256-bit \(32-byte\) key\n$/],
    [
      'KMS_ROOT_KEY_FILE',
      { KMS_ROOT_KEY_FILE: '/nonexistent/root-key' },
      /^tee-kms: KMS_ROOT_KEY_FILE names a file that cannot be read: \/nonexistent\/root-key\n$/,
    ],
    [
      'KMS_INIT_DATA_FILE',
      { KMS_INIT_DATA_FILE: '/nonexistent/initdata.toml' },
      /^tee-kms: KMS_INIT_DATA_FILE names a file that cannot be read: \/nonexistent\/initdata.toml\n$/,
    ],
    ['KMS_ACCESS_LOG', { KMS_ACCESS_LOG: 'flase' }, /^tee-kms: KMS_ACCESS_LOG must be true or false, got "flase"\n$/],
    [
      'KMS_S3_PREFIX',
      { KMS_S3_PREFIX: 'tenant-a' },
      /^tee-kms: KMS_S3_PREFIX must be path segments of letters, digits, \. _ - \(each starting with a letter or digit\), ending with \/\n$/,
    ],
    [
      'KMS_THRESHOLD above KMS_SHARES',
      { KMS_SHARES: '5', KMS_THRESHOLD: '6' },
      /^tee-kms: KMS_THRESHOLD \(6\) exceeds KMS_SHARES \(5\): a root key split into 5 shares cannot need 6 to recover; set KMS_THRESHOLD to at most KMS_SHARES, or raise KMS_SHARES\n$/,
    ],
    [
      'KMS_CUSTODIAN_KEYS_FILE (missing)',
      { KMS_CUSTODIAN_KEYS_FILE: '/nonexistent/custodians.json' },
      /^tee-kms: KMS_CUSTODIAN_KEYS_FILE names a file that cannot be read: \/nonexistent\/custodians\.json \(ENOENT\); point it at a JSON array of the custodians' public JWKs, one per share \(KMS_SHARES\), in share order, or unset it\n$/,
    ],
    [
      'KMS_CUSTODIAN_KEYS_FILE (not keys)',
      { KMS_CUSTODIAN_KEYS_FILE: join(repoRoot, 'package.json') },
      /^tee-kms: KMS_CUSTODIAN_KEYS_FILE names a file of keys that cannot be used: .*package\.json: custodians must be a non-empty JSON array of public JWKs\n$/,
    ],
    [
      'KMS_ROOT_KEY beside KMS_ROOT_KEY_FILE',
      { KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_ROOT_KEY_FILE: '/nonexistent/root-key' },
      /^tee-kms: KMS_ROOT_KEY and KMS_ROOT_KEY_FILE are both set: set only one of them \(the value, or the file holding it\) and unset the other\n$/,
    ],
    [
      'KMS_ROOT_KEY beside KMS_SEALER_ROOT_KEY',
      { KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64') },
      /^tee-kms: KMS_ROOT_KEY and KMS_SEALER_ROOT_KEY are both set: npm start gives KMS_ROOT_KEY to its sealing service; set only one of them\n$/,
    ],
    [
      'KMS_ADMIN_TOKEN beside KMS_ADMIN_TOKEN_FILE',
      { KMS_ADMIN_TOKEN: 'local-admin-token', KMS_ADMIN_TOKEN_FILE: '/nonexistent/admin-token' },
      /^tee-kms: KMS_ADMIN_TOKEN and KMS_ADMIN_TOKEN_FILE are both set: set only one of them \(the value, or the file holding it\) and unset the other\n$/,
    ],
    [
      'KMS_DATA_DIR (a file)',
      { KMS_DATA_DIR: join(repoRoot, 'package.json') },
      /^tee-kms: KMS_DATA_DIR: cannot use .*package\.json as a folder \(EEXIST: it is a file, not a folder\); point KMS_DATA_DIR at a folder this process can create and write\n$/,
    ],
    [
      'KMS_DATA_DIR (below a file)',
      { KMS_DATA_DIR: join(repoRoot, 'package.json', 'kms') },
      /^tee-kms: KMS_DATA_DIR: cannot use .*package\.json\/kms as a folder \(ENOTDIR: a part of the path is a file, not a folder\); point KMS_DATA_DIR at a folder this process can create and write\n$/,
    ],
  ] as Array<[string, Record<string, string>, RegExp]>)(
    'a bad %s stops it before the sealing service starts, under that name, never echoing a secret',
    async (_name, env, message) => {
      const result = await refusedStart(env);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(message);
      // The sealing service's own names appear only where the user set one.
      if (!Object.keys(env).some((name) => name.startsWith('KMS_SEALER_'))) expect(result.stderr).not.toContain('KMS_SEALER_');
      for (const secret of [env.KMS_ROOT_KEY, env.KMS_SEALER_ROOT_KEY, env.KMS_ADMIN_TOKEN])
        if (secret !== undefined) expect(result.stderr + result.stdout).not.toContain(secret);
      expect(result.stdout).not.toContain('"component":"sealer","message":"listening"');
    },
  );
});

/** `npm start` with `env` (over a minimal PATH and HOME), run until it exits on its own: its exit code and output. */
async function npmStartUntilExit(env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn('npm', ['start', '--silent'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: a start that never ends is killed whole
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 60_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/** Waits up to `ms` for 127.0.0.1:`port` to stop accepting connections; whether it did. */
async function closedWithin(port: number, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while ((await listening(port)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  return !(await listening(port));
}

describe('npm start: an address or port the functions cannot listen on', () => {
  it.each([
    [
      'KMS_BIND',
      async () => ({ KMS_BIND: 'nonsense-host.invalid' }),
      /tee-kms: KMS_BIND: cannot listen on nonsense-host\.invalid \((ENOTFOUND|EAI_AGAIN)\); set it to an address or name of this machine \(127\.0\.0\.1 for this machine only, 0\.0\.0\.0 for every interface\)\n$/,
    ],
    [
      'PORT',
      async (port: number) => ({ PORT: String(port) }),
      /tee-kms: PORT: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\): another process uses it; choose another port, or stop that process\n$/,
    ],
  ] as Array<[string, (busyPort: number) => Promise<Record<string, string>>, RegExp]>)(
    'a bad %s stops it, naming the variable, and the sealing service with it',
    async (_name, envOf, message) => {
      const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-listen-'));
      const busy = createServer();
      busy.listen(await freePort(), '127.0.0.1');
      await once(busy, 'listening');
      try {
        const env = await envOf((busy.address() as { port: number }).port);
        const { code, stdout, stderr } = await npmStartUntilExit({ KMS_DATA_DIR: dataDir, PORT: String(await freePort()), KMS_METRICS_PORT: 'off', ...env });
        expect(code, stderr).toBe(1);
        expect(stderr).toMatch(message);
        expect(stderr).not.toContain('Error:');
        expect(stdout).not.toContain('tee-kms listening');
        // The sealing service had started: it stops with npm start (KMS_SEALER_STOP_WITH_PARENT).
        const sealerUrl = /"component":"sealer","message":"started","url":"https:\/\/127\.0\.0\.1:(\d+)"/.exec(stdout);
        expect(sealerUrl, stdout).not.toBeNull();
        expect(await closedWithin(Number(sealerUrl![1]))).toBe(true);
      } finally {
        busy.close();
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  );
});

describe('npm start: a replica that fails at its first start', () => {
  it("stops npm start with the replica's message (its metrics port taken), and the replica that started with it", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-busy-'));
    // Replica i serves metrics on KMS_SEALER_METRICS_PORT + i: replica 1's port is taken here.
    const metricsPort = await freePort();
    const busy = createServer();
    busy.listen(metricsPort + 1, '127.0.0.1');
    await once(busy, 'listening');
    try {
      const { code, stdout, stderr } = await npmStartUntilExit({
        KMS_DATA_DIR: dataDir,
        PORT: String(await freePort()),
        KMS_METRICS_PORT: 'off',
        KMS_SEALER_REPLICAS: '2',
        KMS_SEALER_METRICS_PORT: String(metricsPort),
      });

      expect(code, stderr).toBe(1);
      expect(stderr).toContain(`cannot serve metrics on 127.0.0.1:${metricsPort + 1} (KMS_SEALER_METRICS_PORT): EADDRINUSE`);
      expect(stderr).toMatch(/tee-kms: sealing service replica 1 did not start \(exit 1\)\n$/);
      expect(stderr).not.toContain('starting it again');
      expect(stdout).not.toContain('tee-kms listening'); // the functions never served
      // Replica 0 had started (its metrics port bound): it is stopped too.
      expect(stdout).toContain(`"message":"metrics listening","url":"http://127.0.0.1:${metricsPort}/metrics"`);
      expect(await closedWithin(metricsPort)).toBe(true);
    } finally {
      busy.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('npm start with KMS_INIT_DATA_FILE', () => {
  it("claims the file's digest as the functions' identity, sends the init-data, and grants that identity the admin operations", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-initdata-'));
    let kms: ServerProcess | undefined;
    try {
      const toml = 'algorithm = "sha256"\nversion = "0.1.0"\n\n[data]\n"policy.rego" = "package agent_policy"\n';
      const file = join(dataDir, 'initdata.toml');
      await writeFile(file, toml);
      const identity = createHash('sha256').update(toml).digest('hex') + '00'.repeat(16);
      kms = await startNpmStart({ KMS_DATA_DIR: dataDir, KMS_INIT_DATA_FILE: file });
      // Rotation is an admin call: it passes only if the sealer grants the identity the functions
      // attested with, and refuses init-data that is not that identity's.
      const rotated = await kms.request('/rootKey/rotate');
      expect(rotated.status, rotated.body).toBe(200);
      const policy = JSON.parse(await readFile(join(dataDir, 'sealer', 'admin-policy.json'), 'utf8')) as Record<string, string[]>;
      expect(policy.rotate).toEqual([identity]);
    } finally {
      await kms?.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('npm start with KMS_SEALER_REPLICAS=3', () => {
  /** The sealing-service processes npm start runs now (descendants of `root` running sealer/main.js). */
  function sealerPids(root: number): number[] {
    const rows = spawnSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
      .stdout.split('\n')
      .flatMap((line) => {
        const match = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line);
        return match === null ? [] : [{ pid: Number(match[1]), ppid: Number(match[2]), args: match[3]! }];
      });
    const tree = new Set([root]);
    for (let grew = true; grew;) {
      grew = false;
      for (const row of rows) {
        if (tree.has(row.ppid) && !tree.has(row.pid)) {
          tree.add(row.pid);
          grew = true;
        }
      }
    }
    return rows.filter((row) => tree.has(row.pid) && row.args.includes('dist/sealer/main.js')).map((row) => row.pid);
  }

  it.skipIf(skipWithout(PS))('runs three replicas; kill -9 of one: the host keeps serving, the replica is started again and a peer unseals it', async () => {
    requireTool(PS);
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-start-replicas-'));
    let kms: ServerProcess | undefined;
    try {
      kms = await startNpmStart({ KMS_DATA_DIR: dataDir, KMS_SEALER_REPLICAS: '3', KMS_ADMIN_TOKEN: 'local-admin-token' });
      const server = kms;
      expect((await server.request('/rootKey/rotate')).status).toBe(200);
      const read = () => server.request('/dataKey/dk?user=alice&token=alices-token&primaryKeyName=pk');
      expect((await server.request('/user/alice?token=alices-token', { method: 'POST' })).status).toBe(201);
      expect((await server.request('/primaryKey/pk?user=alice&token=alices-token', { method: 'POST' })).status).toBe(201);
      expect((await server.request('/dataKey/dk?user=alice&token=alices-token&primaryKeyName=pk', { method: 'POST' })).status).toBe(201);
      const value = (await read()).body;
      const waitFor = async (what: string, done: () => boolean) => {
        for (let i = 0; !done(); i++) {
          if (i > 600) throw new Error(`${what} did not happen:\n${server.output()}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      };
      const peerUnseals = () => server.output().split('unsealed by a peer replica').length - 1;
      // Replicas 1 and 2 started before the first rotate: a peer hands them the new key.
      await waitFor('two replicas unsealed by a peer', () => peerUnseals() >= 2);
      const before = sealerPids(server.child.pid!);
      expect(before).toHaveLength(3);
      // The functions get the three replicas' own URLs (their KMS_SEALER_URL list), not one forwarder.
      expect(await server.outputContaining('"message":"tee-kms listening"')).toMatch(
        /"message":"tee-kms listening".*"sealer":"https:\/\/[^",]+:\d+,https:\/\/[^",]+:\d+,https:\/\/[^",]+:\d+"/,
      );

      // The first replica: the one the functions ask first (the first URL of their KMS_SEALER_URL list).
      process.kill(before[0]!, 'SIGKILL');
      expect(await read()).toMatchObject({ status: 200, body: value });
      // Creating a primary key asks the sealing service which key is current: another replica answers.
      expect((await server.request('/primaryKey/pk2?user=alice&token=alices-token', { method: 'POST' })).status).toBe(201);
      await waitFor('the replica started again', () => sealerPids(server.child.pid!).filter((pid) => !before.includes(pid)).length === 1);
      await waitFor('the restarted replica unsealed by a peer', () => peerUnseals() >= 3);
      await server.outputContaining('sealing service replica 0 exited (SIGKILL); starting it again');
      expect(await read()).toMatchObject({ status: 200, body: value });
      expect(findSecrets(await server.settledOutput(), ['alices-token', 'local-admin-token', Buffer.from(value.trim(), 'base64')])).toEqual([]);
    } finally {
      await kms?.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
