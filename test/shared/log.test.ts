import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startLeanHost } from '../support/processes.js';

describe('access log', () => {
  it('writes one line per request, batched, all of them by a SIGTERM exit, and never the query', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tee-kms-log-'));
    const kms = await startLeanHost({ KMS_DATA_DIR: dataDir, KMS_ROOT_KEY: randomBytes(32).toString('base64') });
    const token = `tok-${randomBytes(12).toString('hex')}`;
    const requests = 60;
    await kms.request(`/user/alice?token=${token}`, { method: 'POST' });
    await Promise.all(Array.from({ length: requests - 1 }, (_, i) => kms.request(`/dataKey/dk${i}?user=alice&token=${token}&primaryKeyName=absent`)));
    await kms.stop('SIGTERM');

    const lines = kms
      .output()
      .split('\n')
      .filter((l) => l.includes('"fn"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(requests);
    expect(lines[0]).toMatchObject({ fn: 'enrollUser', method: 'POST', path: '/user/alice', status: 201 });
    expect(lines.filter((l) => l.fn === 'getDataKey' && l.status === 404)).toHaveLength(requests - 1);
    expect(kms.output()).not.toContain(token);
    await rm(dataDir, { recursive: true, force: true });
  });
});
