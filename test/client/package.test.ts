// `tee-kms/client` as a TypeScript consumer sees it: imported by the package's name (package.json
// "exports"), its declarations from the build (tsconfig.client.json), checked with lib checks on.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/processes.js';

const CONSUMER = `import { KmsClient, KmsError, spkiPin, type DataKey, type KmsErrorCode } from 'tee-kms/client';

const client = new KmsClient({ url: 'https://kms.example', pin: spkiPin('x'), attest: { allowDevelopment: true } });
const key: DataKey = await client.getDataKey('pk', 'dk');
const text: string = key.key;
const code: KmsErrorCode = new KmsError('TLS', 'm').code;
// The types are real, not any: each misuse below must fail to compile.
// @ts-expect-error a data key's key is a string
const wrong: number = key.key;
// @ts-expect-error codes are a closed union
const unknown: KmsErrorCode = 'NOPE';
// @ts-expect-error url is required
new KmsClient({});
export { text, code, wrong, unknown };
`;

describe('tee-kms/client for a TypeScript consumer', () => {
  // In dist/ (built by test/global-setup.ts), inside the package, so that its name resolves to itself.
  const file = join(repoRoot, 'dist', `consumer-${randomBytes(6).toString('hex')}.ts`);
  afterAll(() => rm(file, { force: true }));

  it('type-checks against the emitted declarations', async () => {
    await writeFile(file, CONSUMER);
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const args = [tsc, '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--strict', '--types', 'node', file];
    const run = await promisify(execFile)(process.execPath, args, { cwd: repoRoot }).catch((error: { stdout: string }) => error);
    expect(run.stdout).toBe('');
  });
});
