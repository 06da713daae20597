import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, type Transform } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { encryptBigdl } from '../../../cli/formats/bigdl.js';
import { PEEK_BYTES, peekFile, peekFormat, peekStream } from '../../../cli/formats/detect.js';
import { encryptStream } from '../../../cli/formats/stream.js';

const dir = mkdtempSync(join(tmpdir(), 'tee-kms-detect-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY_TEXT = 'MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=';

async function through(transform: Transform, plaintext: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const out = Readable.from([plaintext]).pipe(transform);
  for await (const chunk of out) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const teeKms = (plaintext: Buffer) => through(encryptStream(randomBytes(32), { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1' }), plaintext);
const bigdl = (plaintext: Buffer, name = 'dk1') => through(encryptBigdl(KEY_TEXT, name), plaintext);
/** BigDL 2.2's layout: version byte 0x80, 8-byte time, IV, then the body and HMAC. */
const bigdl22 = () => Buffer.concat([Buffer.from([0x80]), Buffer.alloc(8), randomBytes(16), randomBytes(48)]);

describe('peekFormat', () => {
  it('tells the two formats apart, small and large, and neither in anything else', async () => {
    expect(peekFormat(await teeKms(Buffer.alloc(0)))).toBe('tee-kms');
    expect(peekFormat((await teeKms(randomBytes(300_000))).subarray(0, PEEK_BYTES))).toBe('tee-kms');
    expect(peekFormat(await bigdl(Buffer.alloc(0)))).toBe('bigdl');
    expect(peekFormat((await bigdl(randomBytes(300_000), 'a'.repeat(64))).subarray(0, PEEK_BYTES))).toBe('bigdl');
    expect(peekFormat(bigdl22())).toBe('bigdl');
    expect(peekFormat(Buffer.from('attack at dawn\n'.repeat(40)))).toBeUndefined();
    expect(peekFormat(Buffer.alloc(0))).toBeUndefined();
    expect(peekFormat(Buffer.from('tee-kms'))).toBeUndefined(); // the magic cut short
    expect(peekFormat(Buffer.alloc(PEEK_BYTES))).toBeUndefined(); // zeros: lengths of 0, no 0x80 padding
  });

  it('never takes one format for the other: a tee-kms header is never a BigDL one, whatever follows', async () => {
    for (let i = 0; i < 50; i++) {
      const file = await teeKms(randomBytes(i * 13));
      // Whatever follows the magic (names, salt, a forger's bytes), it is no BigDL header.
      const forged = Buffer.concat([file.subarray(0, 8), Buffer.alloc(PEEK_BYTES, 0x80)]);
      expect([peekFormat(file), peekFormat(forged)]).toEqual(['tee-kms', 'tee-kms']);
    }
    // A BigDL file's first byte is 0x80 (2.2) or 0x00 (2.3+, a name length under 400): never 't'.
    for (const name of ['dk1', 'tee-kms', 'x'.repeat(64)]) expect((await bigdl(randomBytes(100), name))[0]).toBe(0);
  });
});

describe('peekFile', () => {
  it('reads the first bytes of a file, short or long', async () => {
    const files: Array<[Buffer, string | undefined]> = [
      [await teeKms(Buffer.alloc(0)), 'tee-kms'],
      [await bigdl(randomBytes(1000)), 'bigdl'],
      [Buffer.from('plain text'), undefined],
      [Buffer.alloc(0), undefined],
    ];
    for (const [i, [bytes, format]] of files.entries()) {
      writeFileSync(join(dir, `file-${i}`), bytes);
      expect(await peekFile(join(dir, `file-${i}`))).toBe(format);
    }
  });
});

describe('peekStream', () => {
  it('puts back what it read: the stream then yields every byte, however it came in', async () => {
    const file = await bigdl(randomBytes(5000));
    for (const pieces of [[file], [...file].map((byte) => Buffer.from([byte])), [file.subarray(0, 399), file.subarray(399, 401), file.subarray(401)]]) {
      const input = new PassThrough();
      const written = (async () => {
        for (const piece of pieces) if (!input.write(piece)) await new Promise((resolve) => input.once('drain', resolve));
        input.end();
      })();
      const { format, stream } = await peekStream(input);
      expect(format).toBe('bigdl');
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      await written;
      expect(Buffer.concat(chunks).equals(file)).toBe(true);
    }
  });

  it('a stream shorter than the peek: its bytes all come back, and empty input is neither format', async () => {
    const file = await teeKms(Buffer.from('x'));
    expect(file.length).toBeLessThan(PEEK_BYTES);
    const { format, stream } = await peekStream(Readable.from([file.subarray(0, 10), file.subarray(10)]));
    expect(format).toBe('tee-kms');
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(file)).toBe(true);
    expect((await peekStream(Readable.from([]))).format).toBeUndefined();
  });
});
