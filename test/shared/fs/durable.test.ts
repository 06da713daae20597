import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createFile, publish, writeSynced } from '../../../shared/fs/durable.js';

const dir = mkdtempSync(join(tmpdir(), 'tee-kms-durable-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('createFile', () => {
  it('writes a new file with the mode asked, and leaves no temporary file', async () => {
    expect(await createFile(join(dir, 'secret'), 'one\n')).toBe(true);
    expect(await createFile(join(dir, 'public'), 'two\n', 0o644)).toBe(true);
    expect(readFileSync(join(dir, 'secret'), 'utf8')).toBe('one\n');
    expect(statSync(join(dir, 'secret')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'public')).mode & 0o777).toBe(0o644);
    expect(readdirSync(dir).sort()).toEqual(['public', 'secret']);
  });

  it('never replaces an existing file: false, the file as it was, no temporary file', async () => {
    const target = join(dir, 'kept');
    writeFileSync(target, 'kept');
    expect(await createFile(target, 'new')).toBe(false);
    expect(readFileSync(target, 'utf8')).toBe('kept');
    expect(readdirSync(dir).filter((name) => name.includes('kept'))).toEqual(['kept']);
  });

  it('fails with the error of the file system, leaving nothing, where the directory does not exist', async () => {
    await expect(createFile(join(dir, 'missing', 'file'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('publish', () => {
  it('replaces when asked: the target holds the new bytes, the temporary is gone', async () => {
    const target = join(dir, 'replaced');
    writeFileSync(target, 'old');
    const temp = join(dir, 'replaced.tmp');
    await writeSynced(temp, 'new');
    await expect(writeSynced(temp, 'again')).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await publish(temp, target, { replace: true })).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('new');
    expect(readdirSync(dir)).not.toContain('replaced.tmp');
  });
});
