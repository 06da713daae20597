/**
 * README.md's "Command line" session, run as it is written: its bash blocks (all but the first,
 * which starts the KMS and sets the URL, done here) against `npm start`, with `tee-kms` on the
 * PATH as `npm link` puts it, and a restart of `npm start` before the last block.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { freePort, repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';
import { findSecrets } from '../support/storage-snapshot.js';

const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('\n## Command line\n'), readme.indexOf('\n## ', readme.indexOf('\n## Command line\n') + 1));
const blocks = [...section.matchAll(/```bash\n([\s\S]*?)```/g)].map((match) => match[1]!);
const TOKEN = 'alices-session-token-7Rb';

const tmp = await mkdtemp(join(tmpdir(), 'tee-kms-session-'));
let kms: ServerProcess | undefined;
afterAll(async () => {
  await kms?.stop();
  await rm(tmp, { recursive: true, force: true });
});

it("README's command line session: custodians, rotate, keys, a file encrypted and decrypted, recovery after a restart", async () => {
  expect(blocks).toHaveLength(4);
  expect(blocks[0]).toContain('npm start');
  const dataDir = join(tmp, 'kms');
  const work = join(tmp, 'work');
  const bin = join(tmp, 'bin');
  await mkdir(work);
  await mkdir(bin);
  await writeFile(join(bin, 'tee-kms'), `#!/bin/sh\nexec "${process.execPath}" "${join(repoRoot, 'dist/cli/main.js')}" "$@"\n`);
  await chmod(join(bin, 'tee-kms'), 0o755);
  const port = await freePort();
  const start = async () => (kms = await startNpmStart({ KMS_DATA_DIR: dataDir, PORT: String(port) }));
  const outputs: string[] = [];
  const block = (script: string, input = '') => {
    const result = spawnSync('bash', ['-euo', 'pipefail', '-c', script], {
      cwd: work,
      encoding: 'utf8',
      timeout: 120_000,
      input,
      env: {
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        HOME: process.env.HOME ?? '/root',
        TEE_KMS_URL: `https://127.0.0.1:${port}`,
        TEE_KMS_CA: join(dataDir, 'tls/cert.pem'),
      },
    });
    outputs.push(result.stdout, result.stderr);
    expect(result.status, `${script}\n${result.stdout}\n${result.stderr}`).toBe(0);
    return result.stdout;
  };

  await start();
  const first = block(blocks[1]!);
  expect(first).toMatch(/5 shares written .*; the new root key is current/);
  expect(first).toContain('sealed: false');
  for (let n = 1; n <= 5; n++) {
    const share = await readFile(join(work, `shares/share-${n}.json`), 'utf8');
    expect((await stat(join(work, `shares/share-${n}.json`))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(share)).toMatchObject({ content: expect.stringMatching(/^ey[\w-]+\.[\w-]*\.[\w-]+\.[\w-]+\.[\w-]+$/) });
  }

  block(blocks[2]!, `${TOKEN}\n`);
  expect(await readFile(join(work, 'report.out.txt'), 'utf8')).toBe('attack at dawn\n');
  expect((await readFile(join(work, 'report.txt.kms'))).includes('attack at dawn')).toBe(false);

  await kms!.stop();
  await start();
  // The last block reads the token from the environment, as the second block left it in the shell.
  const shell = blocks[3]!.replace(/^/, `export TEE_KMS_USER=alice TEE_KMS_TOKEN=$(cat)\n`);
  const last = block(shell, TOKEN);
  expect(JSON.parse(last.split('\n')[0]!)).toMatchObject({ sealed: true, initialized: true });
  expect(last).toMatch(/root key recovered: tee-kms is unsealed/);
  expect(await readFile(join(work, 'report.again.txt'), 'utf8')).toBe('attack at dawn\n');
  expect(findSecrets([...outputs, await kms!.settledOutput()].join('\n'), [TOKEN])).toEqual([]);
});
