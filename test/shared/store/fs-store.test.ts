import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, mkdir, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { describeObjectStore } from './conformance.js';

const run = promisify(execFile);

describeObjectStore('embedded filesystem store', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
  return {
    store: new FsObjectStore(dir),
    readRaw: (key) => readFile(join(dir, 'objects', key)).catch(() => undefined),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describe('embedded filesystem store: crash safety and processes', () => {
  it('ignores temporary files a crashed writer left behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const store = new FsObjectStore(dir);
    await store.create('a/k.json', Buffer.from('x'));
    await writeFile(join(dir, 'objects', 'a', '.tmp-deadbeef'), 'half-written');
    const keys: string[] = [];
    for await (const key of store.list('a/')) keys.push(key);
    expect(keys).toEqual(['a/k.json']);
    await rm(dir, { recursive: true, force: true });
  });

  it('breaks a replace lock older than the stale age, whoever it names', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const store = new FsObjectStore(dir);
    await store.create('a/k.json', Buffer.from('v1'));
    const lock = join(dir, 'objects', 'a', '.lock-k.json');
    await writeFile(lock, '');
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    const current = await store.get('a/k.json');
    expect(await store.replace('a/k.json', Buffer.from('v2'), current!.etag)).toBe(true);
    expect((await store.get('a/k.json'))?.body.toString()).toBe('v2');
    await rm(dir, { recursive: true, force: true });
  });

  it('lets exactly one of several processes create a key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    await mkdir(join(dir, 'objects'), { recursive: true });
    const script = `
      const { FsObjectStore } = await import(${JSON.stringify(new URL('../../../dist/shared/store/fs-store.js', import.meta.url).href)});
      const store = new FsObjectStore(process.argv[1]);
      const won = await store.create('race/k.json', Buffer.from('process-' + process.argv[2]));
      process.stdout.write(won ? 'won' : 'lost');`;
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => run(process.execPath, ['--input-type=module', '-e', script, dir, String(i)])),
    );
    const outcomes = results.map((r) => r.stdout);
    expect(outcomes.filter((o) => o === 'won')).toHaveLength(1);
    const winner = outcomes.indexOf('won');
    expect(await readFile(join(dir, 'objects', 'race', 'k.json'), 'utf8')).toBe(`process-${winner}`);
    await rm(dir, { recursive: true, force: true });
  });
});
