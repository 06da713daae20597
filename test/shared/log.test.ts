import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { componentLog, logFields } from '../../shared/log.js';
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

describe('componentLog', () => {
  it("writes the functions' JSON lines with its component: requests on stdout, warnings and errors on stderr", async () => {
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const log = componentLog('sealer');
      log.request('POST', '/kbs/v0/auth', 200, 1.23456);
      log.info('listening', { url: 'https://127.0.0.1:1' });
      log.warn('attestation refused');
      log.error('cannot start: CONFIG: x');
      await new Promise((resolve) => setImmediate(resolve)); // stdout lines are written once per turn
      const lines = (spy: typeof out) =>
        spy.mock.calls
          .map(([text]) => String(text))
          .join('')
          .split('\n')
          .flatMap((l) => logFields(l) ?? []);
      expect(lines(out)).toEqual([
        { time: expect.any(String), level: 'info', component: 'sealer', method: 'POST', path: '/kbs/v0/auth', status: 200, ms: 1.23 },
        { time: expect.any(String), level: 'info', component: 'sealer', message: 'listening', url: 'https://127.0.0.1:1' },
      ]);
      expect(lines(err)).toEqual([
        { time: expect.any(String), level: 'warn', component: 'sealer', message: 'attestation refused' },
        { time: expect.any(String), level: 'error', component: 'sealer', message: 'cannot start: CONFIG: x' },
      ]);
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  });

  it('logFields reads JSON object lines and nothing else', () => {
    expect(logFields('{"a":1}')).toEqual({ a: 1 });
    for (const text of ['', 'sealer: listening on x', '{not json', '[1]', 'null', ' {"a":1}']) expect(logFields(text)).toBeUndefined();
  });
});
