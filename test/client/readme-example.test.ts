// README "TypeScript client": its first example, run as it stands against `npm start` over TLS,
// importing `tee-kms/client` by the package's name (package.json "exports", built dist/client).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, startNpmStart, type ServerProcess } from '../support/processes.js';

const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');

/** The first ```js block of the section. */
function example(): string {
  const section = readme.slice(readme.indexOf('## TypeScript client'));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  if (match === null) throw new Error('README "TypeScript client" has no js example');
  return match[1]!;
}

describe('the README client example', () => {
  let dataDir: string;
  let kms: ServerProcess;
  let script: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-client-readme-'));
    kms = await startNpmStart({ KMS_DATA_DIR: dataDir });
    // Inside the package (dist/ is built by npm start), so that `tee-kms/client` resolves to it.
    script = join(repoRoot, 'dist', `readme-example-${randomBytes(6).toString('hex')}.mjs`);
    await writeFile(script, example());
  });
  afterAll(async () => {
    await kms?.stop();
    await rm(script, { force: true });
    await rm(dataDir, { recursive: true, force: true });
  });

  it('runs as written: initializes, enrolls, reads the same data key in the clear and sealed', async () => {
    const env = { PATH: process.env.PATH ?? '', KMS_URL: kms.url, KMS_CA_FILE: join(dataDir, 'tls/cert.pem') };
    const { stdout } = await promisify(execFile)(process.execPath, [script], { cwd: repoRoot, env });
    expect(stdout).toBe('root key initialized: 5 shares\nthe same data key, sealed end to end\n');
    // Run again: the root key exists, a new user gets the same result.
    const second = await promisify(execFile)(process.execPath, [script], { cwd: repoRoot, env });
    expect(second.stdout).toBe('the same data key, sealed end to end\n');
  });
});
