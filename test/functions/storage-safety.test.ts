import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NO_METRICS, runLeanHostToExit, startFunctionsFramework } from '../support/processes.js';
import { createTestBucket } from '../support/s3.js';

describe('storage that ignores conditional writes (Ceph RGW 16.2 with a versioned bucket)', () => {
  it('the lean host exits 1 at start with one line saying what the storage ignored and what to use', async () => {
    const bucket = await createTestBucket({ versioned: true });
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-unsafe-'));
    const { code, output } = await runLeanHostToExit({ ...NO_METRICS, ...bucket.env, KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') });
    expect(code).toBe(1);
    const lines = output.split('\n').filter((line) => line.includes('STORAGE_UNSAFE'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^tee-kms: cannot start: STORAGE_UNSAFE: S3 bucket \S+ at \S+ does not honour conditional writes/);
    expect(lines[0]).toContain('it overwrote an existing object despite If-None-Match: *; it refused a replace whose If-Match was the current ETag');
    expect(lines[0]).toContain('Ceph RGW: unversioned buckets');
    expect([...(await bucket.readAll()).keys()]).toEqual([]); // the probe's scratch objects are gone
    await bucket.remove();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('as the adversary: once versioning is switched on, a second POST /user/alice is refused and alice stays hers', async () => {
    const bucket = await createTestBucket();
    const env = { ...bucket.env, KMS_ROOT_KEY: randomBytes(32).toString('base64') };
    const before = await startFunctionsFramework('enroll-user', 'enrollUser', env);
    expect((await before.request('/user/alice?token=alice-token', { method: 'POST' })).status).toBe(201);
    await before.stop();
    const alice = (await bucket.readAll()).get('users/alice.json');
    expect(alice).toBeDefined();

    // Whoever administers the bucket switches versioning on; a fresh function process (no start hook) serves next.
    await bucket.reader.setBucketVersioning(bucket.bucket, { Status: 'Enabled' });
    const after = await startFunctionsFramework('enroll-user', 'enrollUser', env);
    for (const attempt of [1, 2]) {
      const takeover = await after.request(`/user/alice?token=mallory-${attempt}`, { method: 'POST', headers: { accept: 'application/json' } });
      expect(takeover.status).toBe(500);
      expect(JSON.parse(takeover.body)).toMatchObject({
        error: { code: 'STORAGE_UNSAFE', message: expect.stringContaining('does not honour conditional writes') },
      });
    }
    const fresh = await after.request('/user/bob?token=bob-token', { method: 'POST' });
    expect(fresh.status).toBe(500); // no write at all on such storage, not only overwrites
    await after.stop();
    const stored = await bucket.readAll();
    expect(stored.get('users/alice.json')?.equals(alice!)).toBe(true);
    expect(stored.has('users/bob.json')).toBe(false);
    await bucket.remove();
  });
});
