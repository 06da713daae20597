import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, repoRoot, startServer, type ServerProcess } from '../support/processes.js';
import { createTestBucket, type TestBucket } from '../support/s3.js';

describe('the lean host as scripts/build.mjs bundles it (dist/scripts/serve.js)', () => {
  let dir: string;
  let bucket: TestBucket;
  let kms: ServerProcess;

  beforeAll(async () => {
    // The bundle alone, away from the repository: any module it failed to include has no
    // node_modules to come from, and the host would not start.
    dir = await mkdtemp(join(tmpdir(), 'tee-kms-bundle-'));
    await cp(join(repoRoot, 'dist/scripts/serve.js'), join(dir, 'serve.js'));
    await cp(join(repoRoot, 'dist/scripts/serve-chunks'), join(dir, 'serve-chunks'), { recursive: true });
    await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n');
    bucket = await createTestBucket();
    const port = await freePort();
    kms = await startServer({
      command: process.execPath,
      args: [join(dir, 'serve.js')],
      env: { ...bucket.env, KMS_ROOT_KEY: randomBytes(32).toString('base64'), KMS_DATA_DIR: join(dir, 'kms'), PORT: String(port) },
      url: `https://127.0.0.1:${port}`,
      caFile: join(dir, 'kms/tls/cert.pem'),
    });
  });
  afterAll(async () => {
    await kms?.stop();
    await bucket?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it('loads every chunk without node_modules, those only a sealing service or TDX would reach included', async () => {
    const chunks = (await readdir(join(dir, 'serve-chunks'))).filter((c) => c.endsWith('.js'));
    expect(chunks.length).toBeGreaterThan(10);
    const script = `for (const c of ${JSON.stringify(chunks)}) await import('./serve-chunks/' + c);`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  it("loads TDX verification (the sealing service's quotes) only on demand, from a chunk of its own", async () => {
    const chunks = (await readdir(join(dir, 'serve-chunks'))).map((c) => join('serve-chunks', c));
    const text = new Map(await Promise.all(['serve.js', ...chunks].map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const)));
    const verifier = /\b(verifyTdxQuoteDcap|appraiseTdx|TdxVerifier|fetchPccsCollateral|verifyChain|readDerExact)\b/;
    // Names are kept (no minifying): an attester's own function is there.
    expect([...text.values()].join('\n')).toMatch(/\bfunction decodeTdxEvidence\b/);
    expect(text.get('serve.js')).not.toMatch(verifier);
    const holders = [...text].filter(([, body]) => verifier.test(body)).map(([file]) => file.replace('serve-chunks/', ''));
    expect(holders).toHaveLength(1);
    // Reached only through a dynamic import (KMS_TRUSTED_SEALER_TDX_POLICY_FILE set), never statically.
    const importers = [...text].filter(([, body]) => body.includes(holders[0]!));
    expect(importers.map(([file]) => file)).toEqual([expect.stringMatching(/^serve-chunks\/trusted-sealer-/)]);
    expect(importers[0]![1]).toContain(`import("./${holders[0]}")`);
  });

  it('serves the whole flow on S3 over self-signed TLS without node_modules', async () => {
    expect((await kms.request('/user/b?token=b-token-1', { method: 'POST' })).status).toBe(201);
    expect((await kms.request('/primaryKey/pk?user=b&token=b-token-1', { method: 'POST' })).status).toBe(201);
    expect((await kms.request('/dataKey/dk?user=b&token=b-token-1&primaryKeyName=pk', { method: 'POST' })).status).toBe(201);
    const get = await kms.request('/dataKey/dk?user=b&token=b-token-1&primaryKeyName=pk');
    expect(get.status).toBe(200);
    expect(Buffer.from(get.body.trim(), 'base64')).toHaveLength(32);
    // S3's answer for a missing object is XML: the parser, loaded on demand, is in the bundle too.
    const missing = await kms.request('/dataKey/nope?user=b&token=b-token-1&primaryKeyName=pk', { headers: { accept: 'application/json' } });
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });
});
