import { execFile, spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile, mkdir, utimes } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { FsObjectStore } from '../../../shared/store/fs-store.js';
import { openObjectStore } from '../../../shared/store/from-config.js';
import { describeObjectStore } from './conformance.js';

const run = promisify(execFile);
const fsStoreModule = JSON.stringify(new URL('../../../dist/shared/store/fs-store.js', import.meta.url).href);

/** The embedded store as a process builds it from configuration (leftovers removed before the first write). */
function configuredFsStore(dataDir: string) {
  const s3 = { s3Endpoint: '', s3Region: '', s3Bucket: '', s3Prefix: '', s3AccessKeyId: '', s3SecretAccessKey: '', s3ForcePathStyle: true };
  return openObjectStore({ store: 'fs', dataDir, ...s3 });
}

/** How the store names a holder: pid, host and PID namespace (read here from /proc, as Linux gives it). */
const PID_NAMESPACE = readlinkSync('/proc/self/ns/pid').replace(/\D/g, '');
const holderOf = (pid: number | string | undefined) => `${pid}@${hostname()}@${PID_NAMESPACE}`;

/** The store's own files (temporaries, locks) in a folder of objects. */
async function ownFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.startsWith('.')).sort();
}

/** A writer process caught between taking the replace lock and renaming its temporary. */
interface CaughtWriter {
  readonly pid: number;
  /** Resolves once it has exited (and been reaped). */
  readonly exited: Promise<unknown>;
  /** What it printed: its replace's result (`true`, `false`) or error code. */
  said(): string;
  /** Sends it a signal, unless it has exited (its pid may then be another process's). */
  signal(signal: NodeJS.Signals): void;
}

/**
 * A real writer replacing a/k.json with a 128 MiB body of `fill` bytes, which keeps it between
 * taking the lock and renaming its temporary long enough to be sent `signal` there: once it holds
 * the lock and its own temporary has more than 1 KB. A writer that finished first is retried
 * (k.json set back to `v1`), five times at most.
 */
async function catchWriterMidWrite(dir: string, signal: 'SIGKILL' | 'SIGSTOP', fill = 0x20): Promise<CaughtWriter> {
  const objects = join(dir, 'objects', 'a');
  const script = `
    const { FsObjectStore } = await import(${fsStoreModule});
    const store = new FsObjectStore(process.argv[1]);
    const current = await store.get('a/k.json');
    await store.replace('a/k.json', Buffer.alloc(128 * 1024 * 1024, ${fill}), current.etag).then(
      (done) => process.stdout.write(String(done)),
      (error) => process.stdout.write(error.code),
    );`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const writer = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'ignore'] });
    let said = '';
    writer.stdout.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const exited = new Promise((resolve) => writer.once('exit', resolve));
    while (writer.exitCode === null && writer.signalCode === null) {
      const holder = await readFile(join(objects, '.lock-k.json'), 'utf8').catch(() => '');
      const temps = (await ownFiles(objects).catch(() => [])).filter((f) => f.startsWith(`.tmp-${holderOf(writer.pid)}-`));
      const sizes = await Promise.all(
        temps.map((f) =>
          stat(join(objects, f)).then(
            (st) => st.size,
            () => 0,
          ),
        ),
      );
      if (holder === holderOf(writer.pid) && sizes.some((size) => size > 1024) && writer.kill(signal)) {
        return { pid: writer.pid!, exited, said: () => said, signal: (sig) => void writer.kill(sig) };
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await exited; // it finished first: again, from the first value
    for (const name of await ownFiles(objects)) await rm(join(objects, name));
    await writeFile(join(objects, 'k.json'), 'v1');
  }
  throw new Error(`the writer was never caught holding the lock mid-write (${signal})`);
}

/**
 * What another writer does while a caught writer stalls: ages its lock past the stale age, then
 * replaces a/k.json with `v2` (breaking that lock). Returns the store it wrote with.
 */
async function replaceOverStalledWriter(dir: string): Promise<FsObjectStore> {
  const old = new Date(Date.now() - 60_000);
  await utimes(join(dir, 'objects', 'a', '.lock-k.json'), old, old);
  const store = new FsObjectStore(dir);
  expect(await store.replace('a/k.json', Buffer.from('v2'), (await store.get('a/k.json'))!.etag)).toBe(true);
  return store;
}

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
    await writeFile(lock, `1@another-host@${PID_NAMESPACE}`);
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    const current = await store.get('a/k.json');
    expect(await store.replace('a/k.json', Buffer.from('v2'), current!.etag)).toBe(true);
    expect((await store.get('a/k.json'))?.body.toString()).toBe('v2');
    await rm(dir, { recursive: true, force: true });
  });

  it('replaces at once, and leaves nothing behind, after a writer was killed (SIGKILL) holding the lock mid-write', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('v1'));
    const writer = await catchWriterMidWrite(dir, 'SIGKILL');
    await writer.exited; // reaped: its pid is gone, not a zombie
    const writerPid = writer.pid;
    const leftovers = await ownFiles(objects);
    expect(leftovers).toEqual(['.lock-k.json', expect.stringMatching(new RegExp(`^\\.tmp-${writerPid}@`))]);
    expect(await readFile(join(objects, '.lock-k.json'), 'utf8')).toBe(holderOf(writerPid));
    expect(await readFile(join(objects, 'k.json'), 'utf8')).toBe('v1');

    const store = configuredFsStore(dir);
    const started = Date.now();
    const current = await store.get('a/k.json');
    expect(await store.replace('a/k.json', Buffer.from('v2'), current!.etag)).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000); // not the 30 s a lock of unknown age waits
    expect(await readFile(join(objects, 'k.json'), 'utf8')).toBe('v2');
    expect(await ownFiles(objects)).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });

  it('a writer stalled past the stale age, its lock broken, neither writes over the next writer nor removes its lock', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('v1'));
    // Stopped as a writer stalled by a slow disk or a frozen machine would be, until its lock is old enough to break.
    const writer = await catchWriterMidWrite(dir, 'SIGSTOP');
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    try {
      await replaceOverStalledWriter(dir);
      // The next writer holds the lock now (a live process, named as the store names holders).
      await writeFile(join(objects, '.lock-k.json'), holderOf(sleeper.pid));
      writer.signal('SIGCONT');
      await writer.exited;
      expect(writer.said()).toBe('STORAGE_UNAVAILABLE');
      expect(await readFile(join(objects, 'k.json'), 'utf8')).toBe('v2');
      expect(await ownFiles(objects)).toEqual(['.lock-k.json']);
      expect(await readFile(join(objects, '.lock-k.json'), 'utf8')).toBe(holderOf(sleeper.pid));
    } finally {
      writer.signal('SIGKILL');
      sleeper.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a stalled writer whose lock was broken tells its lock from a later one that took its place, whatever inode that one got', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('v1'));
    const a = await catchWriterMidWrite(dir, 'SIGSTOP', 0x41);
    let c: CaughtWriter | undefined;
    try {
      const store = await replaceOverStalledWriter(dir);
      // Files come and go meanwhile (a freed inode is handed out again), then a writer based on v2
      // holds the lock: the file system may give its lock the inode A's lock had.
      await store.create('a/other.json', Buffer.from('x'));
      c = await catchWriterMidWrite(dir, 'SIGSTOP', 0x43);
      a.signal('SIGCONT');
      await a.exited;
      expect(a.said()).toBe('STORAGE_UNAVAILABLE');
      expect(await readFile(join(objects, '.lock-k.json'), 'utf8')).toBe(holderOf(c.pid)); // C's lock left alone
      expect(await readFile(join(objects, 'k.json'), 'utf8')).toBe('v2');
      c.signal('SIGCONT');
      await c.exited;
      expect(c.said()).toBe('true');
      const handle = await open(join(objects, 'k.json'), 'r');
      const { buffer } = await handle.read(Buffer.alloc(1), 0, 1, 0);
      await handle.close();
      expect(buffer.toString()).toBe('C');
      expect(await ownFiles(objects)).toEqual([]);
    } finally {
      a.signal('SIGKILL');
      c?.signal('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a delete waits for a replace in flight, so the replace never brings the object back or writes over a newer one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('v1'));
    const writer = await catchWriterMidWrite(dir, 'SIGSTOP');
    try {
      const store = new FsObjectStore(dir);
      let deleted = false;
      const deleting = store.delete('a/k.json').then(() => (deleted = true));
      await new Promise((resolve) => setTimeout(resolve, 300)); // time enough to delete, were it not waiting
      expect(deleted).toBe(false);
      writer.signal('SIGCONT');
      await writer.exited;
      expect(writer.said()).toBe('true');
      await deleting;
      expect(await store.get('a/k.json')).toBeUndefined();
      expect(await store.create('a/k.json', Buffer.from('fresh'))).toBe(true);
      expect(await readFile(join(objects, 'k.json'), 'utf8')).toBe('fresh');
      expect(await ownFiles(objects)).toEqual([]);
    } finally {
      writer.signal('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a writer killed (SIGKILL) at any moment leaves no lock that does not name it, so the next replace need not wait', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('0'));
    // A real writer replacing as fast as it can, killed wherever it happens to be: a lock whose
    // holder is not yet written would look like a live writer's and stall every replace for 30 s.
    const script = `
      const { FsObjectStore } = await import(${fsStoreModule});
      const store = new FsObjectStore(process.argv[1]);
      process.stdout.write('ready');
      for (let i = 1; ; i++) {
        const current = await store.get('a/k.json');
        await store.replace('a/k.json', Buffer.from(String(i)), current.etag);
      }`;
    for (let kill = 0; kill < 24; kill++) {
      const writer = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'pipe', 'ignore'] });
      await new Promise((resolve) => writer.stdout.once('data', resolve));
      await new Promise((resolve) => setTimeout(resolve, 5 + ((kill * 7) % 23)));
      const exited = new Promise((resolve) => writer.once('exit', resolve));
      writer.kill('SIGKILL');
      await exited;
      for (const lock of (await ownFiles(objects)).filter((name) => name.startsWith('.lock-'))) {
        expect(await readFile(join(objects, lock), 'utf8')).toBe(holderOf(writer.pid));
      }
      const store = new FsObjectStore(dir);
      const current = await store.get('a/k.json');
      expect(await store.replace('a/k.json', Buffer.from('0'), current!.etag)).toBe(true);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('removes a dead writer’s leftovers on opening, never a live one’s', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    await new FsObjectStore(dir).create('a/k.json', Buffer.from('v1'));
    // A process that has exited: its pid is free (until reused, which only the age then settles).
    const dead = (await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])).stdout;
    // Another process, alive while the store opens.
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    const live = holderOf(sleeper.pid);
    try {
      await writeFile(join(objects, `.tmp-${holderOf(dead)}-0123456789abcdef`), 'half');
      await writeFile(join(objects, '.lock-dead.json'), holderOf(dead));
      await writeFile(join(objects, '.break-dead.json'), holderOf(dead));
      await writeFile(join(objects, `.tmp-${live}-0123456789abcdef`), 'being written');
      await writeFile(join(objects, '.lock-live.json'), live);
      await writeFile(join(objects, '.lock-remote.json'), `${dead}@another-host@${PID_NAMESPACE}`); // another machine's pid: only age counts
      // This pid in another PID namespace (another container with this hostname), or a holder named
      // without one (an older version): not to be judged by pid, only by age.
      await writeFile(join(objects, '.lock-namespace.json'), `${process.pid}@${hostname()}@1`);
      await writeFile(join(objects, '.lock-unnamespaced.json'), `${dead}@${hostname()}`);
      // Named for this very process, which did not write them: an earlier process with the same pid,
      // host and PID namespace left them.
      await writeFile(join(objects, `.tmp-${holderOf(process.pid)}-0123456789abcdef`), 'half');
      await writeFile(join(objects, '.lock-earlier.json'), holderOf(process.pid));
      await configuredFsStore(dir).ready();
      expect(await ownFiles(objects)).toEqual([
        '.lock-live.json',
        '.lock-namespace.json',
        '.lock-remote.json',
        '.lock-unnamespaced.json',
        `.tmp-${live}-0123456789abcdef`,
      ]);
    } finally {
      sleeper.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('breaks at once a lock an earlier process with this pid, host and PID namespace left, however recent', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const store = new FsObjectStore(dir);
    await store.create('a/k.json', Buffer.from('v1'));
    const lock = join(dir, 'objects', 'a', '.lock-k.json');
    await writeFile(lock, holderOf(process.pid));
    // Written in the future: its age alone would not make it stale before the replace gives up.
    const later = new Date(Date.now() + 3_600_000);
    await utimes(lock, later, later);
    const current = await store.get('a/k.json');
    expect(await store.replace('a/k.json', Buffer.from('v2'), current!.etag)).toBe(true);
    expect((await store.get('a/k.json'))?.body.toString()).toBe('v2');
    expect(await ownFiles(join(dir, 'objects', 'a'))).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });

  it('never lets two writers hold the lock while a dead writer’s (and a dead breaker’s) is broken', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    const objects = join(dir, 'objects', 'a');
    const dead = (await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])).stdout;
    // Writers of separate stores, started a few milliseconds apart, all with the same etag: one
    // breaks the stale lock and takes its own, and no other may remove that one and win as well.
    const stores = Array.from({ length: 6 }, () => new FsObjectStore(dir));
    for (let trial = 0; trial < 250; trial++) {
      await rm(join(dir, 'objects'), { recursive: true, force: true });
      await stores[0]!.create('a/k.json', Buffer.from('v0'));
      await writeFile(join(objects, '.lock-k.json'), holderOf(dead));
      // Every other time, a breaker that crashed while breaking left its break lock too.
      if (trial % 2 === 1) await writeFile(join(objects, '.break-k.json'), holderOf(dead));
      const { etag } = (await stores[0]!.get('a/k.json'))!;
      const won = await Promise.all(
        stores.map(async (store, i) => {
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 8));
          return store.replace('a/k.json', Buffer.from(`v${i + 1}`), etag);
        }),
      );
      expect(won.filter(Boolean), `trial ${trial}`).toHaveLength(1);
      expect((await stores[0]!.get('a/k.json'))!.body.toString()).toBe(`v${won.indexOf(true) + 1}`);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('lets exactly one of several processes create a key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-'));
    await mkdir(join(dir, 'objects'), { recursive: true });
    const script = `
      const { FsObjectStore } = await import(${fsStoreModule});
      const store = new FsObjectStore(process.argv[1]);
      const won = await store.create('race/k.json', Buffer.from('process-' + process.argv[2]));
      process.stdout.write(won ? 'won' : 'lost');`;
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => run(process.execPath, ['--input-type=module', '-e', script, dir, String(i)])));
    const outcomes = results.map((r) => r.stdout);
    expect(outcomes.filter((o) => o === 'won')).toHaveLength(1);
    const winner = outcomes.indexOf('won');
    expect(await readFile(join(dir, 'objects', 'race', 'k.json'), 'utf8')).toBe(`process-${winner}`);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('embedded filesystem store: what whoever writes its folder may put there', () => {
  const planted = async (plant: (path: string) => Promise<void>) => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-planted-'));
    await mkdir(join(dir, 'objects', 'users'), { recursive: true });
    await plant(join(dir, 'objects', 'users', 'alice.json'));
    return { store: new FsObjectStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
  };

  it.each([
    ['a link to /dev/zero (read whole, it never ends)', (path: string) => symlink('/dev/zero', path), 'INTEGRITY', /is a link/],
    [
      'a named pipe (its open waits for a writer, holding a thread)',
      (path: string) => run('mkfifo', [path]).then(() => undefined),
      'INTEGRITY',
      /not a regular file/,
    ],
    ['a folder', (path: string) => mkdir(path), 'INTEGRITY', /not a regular file/],
    ['a file of 17 MiB', (path: string) => writeFile(path, Buffer.alloc(17 * 1024 * 1024)), 'STORAGE_UNAVAILABLE', /larger than 16 MiB/],
  ] as const)('in place of a record, %s: refused, nothing read', async (_what, plant, code, message) => {
    const { store, cleanup } = await planted(plant);
    try {
      await expect(store.get('users/alice.json')).rejects.toMatchObject({ code, message: expect.stringMatching(message) as unknown });
    } finally {
      await cleanup();
    }
  });
});

describe('embedded filesystem store: a chain of folders deeper than any key', () => {
  it('is not walked: a listing finds the records beside it, where the chain once stopped every listing (path too long)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-deep-'));
    try {
      const store = new FsObjectStore(dir);
      await store.create('primary-keys/alice/pk1.json', Buffer.from('{}'));
      // 2,502 nested folders, past PATH_MAX: bash makes them 500 at a time, each step relative to the last.
      const script =
        'cd "$1" && step=$(printf "d/%.0s" $(seq 500)) && for _ in 1 2 3 4 5; do mkdir -p "$step" && cd -P "$step" || exit 1; done && mkdir -p d/d && : > d/d/deep.json';
      await run('bash', ['--norc', '--noprofile', '-c', script, 'bash', join(dir, 'objects', 'primary-keys')]);
      const keys: string[] = [];
      for await (const key of store.list('primary-keys/')) keys.push(key);
      expect(keys).toEqual(['primary-keys/alice/pk1.json']);
    } finally {
      // Node's rm works with whole paths, which this tree's are too long for.
      await run('rm', ['-rf', dir]);
    }
  });
});

describe('embedded filesystem store: a folder made a link to one outside it', () => {
  it('is neither read, written, listed nor deleted from: the files outside are left, and the store says it was tampered with', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-fs-linked-'));
    try {
      const outside = join(dir, 'outside');
      await mkdir(outside);
      await writeFile(join(outside, '0.json'), 'not the store’s');
      await mkdir(join(dir, 'objects', 'rotation', 'ranges'), { recursive: true });
      await symlink(outside, join(dir, 'objects', 'rotation', 'ranges', 'ab'));
      const store = new FsObjectStore(dir);
      const tampered = { code: 'INTEGRITY', message: expect.stringMatching(/is a link, which this store never makes/) as unknown };
      await expect(
        (async () => {
          for await (const key of store.list('rotation/ranges/ab/')) void key;
        })(),
      ).rejects.toMatchObject(tampered);
      await expect(store.delete('rotation/ranges/ab/0.json')).rejects.toMatchObject(tampered);
      await expect(store.get('rotation/ranges/ab/0.json')).rejects.toMatchObject(tampered);
      await expect(store.create('rotation/ranges/ab/1.json', Buffer.from('{}'))).rejects.toMatchObject(tampered);
      await expect(store.replace('rotation/ranges/ab/0.json', Buffer.from('{}'), 'any')).rejects.toMatchObject(tampered);
      expect(await readdir(outside)).toEqual(['0.json']);
      expect(await readFile(join(outside, '0.json'), 'utf8')).toBe('not the store’s');
      // The store's own folders still work.
      expect(await store.create('rotation/ranges/cd/0.json', Buffer.from('{}'))).toBe(true);
      await store.delete('rotation/ranges/cd/0.json');
      expect(await store.get('rotation/ranges/cd/0.json')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
