import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { writeOutput } from '../../../cli/formats/output.js';
import { repoRoot } from '../../support/processes.js';
import { decryptStream, encryptStream } from '../../../cli/formats/stream.js';

const dir = mkdtempSync(join(tmpdir(), 'tee-kms-output-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const key = randomBytes(32);
const names = { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1' };

describe('writeOutput', () => {
  it('publishes the whole output, mode 0600, and leaves no temporary file', async () => {
    const target = join(dir, 'plain');
    const plaintext = randomBytes(300_000);
    await writeOutput(join(dir, 'sealed'), Readable.from([plaintext]), [encryptStream(key, names)]);
    await writeOutput(target, Readable.from([readFileSync(join(dir, 'sealed'))]), [decryptStream(async () => key)]);
    expect(readFileSync(target).equals(plaintext)).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('writes nothing when the input fails late: a truncated file that authenticated up to its cut', async () => {
    const sealed = join(dir, 'sealed-cut');
    await writeOutput(sealed, Readable.from([randomBytes(5 * 262144)]), [encryptStream(key, names)]);
    const cut = readFileSync(sealed).subarray(0, 69 + 3 * (262144 + 16)); // three whole chunks: each authenticates, the last-chunk flag is missing
    const target = join(dir, 'cut-out');
    await expect(writeOutput(target, Readable.from([cut]), [decryptStream(async () => key)])).rejects.toMatchObject({ code: 'INTEGRITY' });
    expect(readdirSync(dir).filter((n) => n.includes('cut-out'))).toEqual([]);
  });

  it('writes nothing when any stage fails, and removes its temporary file', async () => {
    const failing = new Transform({
      transform(chunk, _e, callback) {
        callback(new Error('stage failed'));
      },
    });
    const target = join(dir, 'failed-out');
    await expect(writeOutput(target, Readable.from([Buffer.from('x')]), [failing])).rejects.toThrow('stage failed');
    expect(readdirSync(dir).filter((n) => n.includes('failed-out'))).toEqual([]);
  });

  it('never replaces an existing file unless asked', async () => {
    const target = join(dir, 'existing');
    writeFileSync(target, 'keep me');
    await expect(writeOutput(target, Readable.from([Buffer.from('new')]))).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(readFileSync(target, 'utf8')).toBe('keep me');
    expect(readdirSync(dir).filter((n) => n.includes('existing'))).toEqual(['existing']);
    await writeOutput(target, Readable.from([Buffer.from('new')]), [], { overwrite: true });
    expect(readFileSync(target, 'utf8')).toBe('new');
  });

  it('names the target, never its hidden temporary file, when the target cannot be created', async () => {
    const target = join(dir, 'no-such-dir', 'out.kms');
    const error = await writeOutput(target, Readable.from([Buffer.from('x')])).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'open', path: target });
    expect(String((error as Error).message)).not.toMatch(/\.tmp/);
  });

  it("writes to standard output for '-', in a real process", () => {
    const script = `
      import { Readable } from 'node:stream';
      import { writeOutput } from ${JSON.stringify(join(repoRoot, 'dist/cli/formats/output.js'))};
      await writeOutput('-', Readable.from([Buffer.from('hello, '), Buffer.from('stdout')]));
      process.stdout.write(' and after');
    `;
    expect(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })).toBe('hello, stdout and after');
  });
});
