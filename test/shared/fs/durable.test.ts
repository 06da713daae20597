import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createFile, publish, writeSynced } from '../../../shared/fs/durable.js';
import { repoRoot } from '../../support/processes.js';
import { findTool, requireTool, skipWithout } from '../../support/tools.js';

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

describe('makeDirSynced', () => {
  const strace = findTool('strace', ['-V'], 'apt-get install strace');

  it.skipIf(skipWithout(strace))('fsyncs the parent of every folder it creates, and the parent of one that exists', () => {
    requireTool(strace);
    const base = join(dir, 'synced');
    mkdirSync(base);
    const module = join(repoRoot, 'dist/shared/fs/durable.js');
    // Run in a process of its own under strace, which names each fsynced descriptor's path (-y).
    const traced = (target: string): string[] => {
      const log = join(dir, `strace-${Math.random().toString(36).slice(2)}.log`);
      const script = `import(${JSON.stringify(module)}).then((m) => m.makeDirSynced(${JSON.stringify(target)}))`;
      const run = spawnSync('strace', ['-f', '-y', '-e', 'trace=fsync', '-o', log, process.execPath, '-e', script], { encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(0);
      return [...readFileSync(log, 'utf8').matchAll(/fsync\(\d+<([^>]+)>\)\s+= 0/g)].map((m) => m[1]!);
    };
    expect(traced(join(base, 'a', 'b', 'c')).sort()).toEqual([base, join(base, 'a'), join(base, 'a', 'b')].sort());
    expect(statSync(join(base, 'a', 'b', 'c')).isDirectory()).toBe(true);
    expect(traced(join(base, 'a', 'b', 'c'))).toEqual([join(base, 'a', 'b')]);
    expect(traced(join(base, 'a', 'd'))).toEqual([join(base, 'a')]);
  });
});
