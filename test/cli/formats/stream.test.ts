import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { decryptStream, encryptStream, readKeyNames, type KeyNames } from '../../../cli/formats/stream.js';
import { isKmsError } from '../../../shared/errors.js';

/** A writable that keeps what it is given. */
function sink(out: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
}

const names: KeyNames = { user: 'alice', primaryKey: 'pk1', dataKey: 'dk1' };
const key = randomBytes(32);
const CHUNK = 256 * 1024;

async function run(input: Buffer, transform: Transform, pieceSize = 10_000): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let at = 0; at < input.length; at += pieceSize) pieces.push(input.subarray(at, at + pieceSize));
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), transform, sink(out));
  return Buffer.concat(out);
}

const encrypt = (plaintext: Buffer, chunkSize?: number) => run(plaintext, encryptStream(key, names, chunkSize === undefined ? {} : { chunkSize }));
const decrypt = (file: Buffer, k: Buffer = key, pieceSize?: number) =>
  run(
    file,
    decryptStream(async () => k),
    pieceSize,
  );

async function refused(file: Buffer, k: Buffer = key): Promise<string> {
  const out: Buffer[] = [];
  try {
    await pipeline(
      Readable.from([file]),
      decryptStream(async () => k),
      async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) out.push(chunk as Buffer);
      },
    );
  } catch (error) {
    expect(isKmsError(error), String(error)).toBe(true);
    return (error as { code: string }).code;
  }
  throw new Error(`decryption accepted the file (${Buffer.concat(out).length} bytes out)`);
}

const HEADER = 8 + 1 + 4 + 32 + 7 + 3 * 2 + 5 + 3 + 3;

describe('tee-kms stream format', () => {
  it.each([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])('round-trips %i bytes', async (size) => {
    const plaintext = randomBytes(size);
    const file = await encrypt(plaintext);
    const chunks = Math.max(1, Math.ceil(size / CHUNK));
    expect(file.length).toBe(HEADER + size + 16 * chunks);
    // Any input piece size: a byte at a time through the header, odd sizes across chunk boundaries.
    expect((await decrypt(file, key, 7919)).equals(plaintext)).toBe(true);
    if (size < 3000) expect((await decrypt(file, key, 1)).equals(plaintext)).toBe(true);
  });

  it('names the keys in the header, for decryption to fetch them', async () => {
    const file = await encrypt(Buffer.from('hello'));
    expect(readKeyNames(file.subarray(0, 20))).toBeUndefined();
    expect(readKeyNames(file)).toEqual(names);
    let asked: KeyNames | undefined;
    await run(
      file,
      decryptStream(async (n) => {
        asked = n;
        return key;
      }),
    );
    expect(asked).toEqual(names);
  });

  it('matches an independent decryption of its documented layout', async () => {
    const plaintext = randomBytes(CHUNK + 5);
    const file = await encrypt(plaintext);
    const header = file.subarray(0, HEADER);
    expect(header.subarray(0, 9)).toEqual(Buffer.from('tee-kms\0\x01', 'latin1'));
    expect(header.readUInt32BE(9)).toBe(CHUNK);
    const salt = header.subarray(13, 45);
    const prefix = header.subarray(45, 52);
    const fileKey = Buffer.from(hkdfSync('sha256', key, salt, 'tee-kms file v1 AES-256-GCM chunk key', 32));
    const open = (sealed: Buffer, counter: number, last: number) => {
      const nonce = Buffer.concat([prefix, Buffer.from([0, 0, 0, counter, last])]);
      const d = createDecipheriv('aes-256-gcm', fileKey, nonce);
      d.setAAD(header);
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
    };
    const body = file.subarray(HEADER);
    const first = open(body.subarray(0, CHUNK + 16), 0, 0);
    const second = open(body.subarray(CHUNK + 16), 1, 1);
    expect(Buffer.concat([first, second]).equals(plaintext)).toBe(true);
  });

  it('decrypts the test vector of docs/file-format.md (computed there with Python cryptography)', async () => {
    // The vector's inputs, sealed here with node:crypto directly, not through the module.
    const dataKey = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const salt = Buffer.from(Array.from({ length: 32 }, (_, i) => 0x40 + i));
    const prefix = Buffer.from('a0a1a2a3a4a5a6', 'hex');
    const plaintext = Buffer.from(Array.from({ length: 1500 }, (_, i) => i % 251));
    const header = Buffer.from(
      '7465652d6b6d73000100000400404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5fa0a1a2a3a4a5a60005616c6963650003706b310003646b31',
      'hex',
    );
    const fileKey = Buffer.from(hkdfSync('sha256', dataKey, salt, 'tee-kms file v1 AES-256-GCM chunk key', 32));
    expect(fileKey.toString('hex')).toBe('c88152404bcbf10c75bd6aefa6f5d625208e3724ac416eebce87a9242d9a832e');
    const seal = (part: Buffer, counter: number, last: number) => {
      const c = createCipheriv('aes-256-gcm', fileKey, Buffer.concat([prefix, Buffer.from([0, 0, 0, counter, last])]));
      c.setAAD(header);
      return Buffer.concat([c.update(part), c.final(), c.getAuthTag()]);
    };
    const file = Buffer.concat([header, seal(plaintext.subarray(0, 1024), 0, 0), seal(plaintext.subarray(1024), 1, 1)]);
    expect(file.subarray(69 + 1024, 69 + 1040).toString('hex')).toBe('845add6aa19d6d6e951818393882ea33');
    expect(file.subarray(file.length - 16).toString('hex')).toBe('b59d604507587dd571c6c1588d0d9ff2');
    expect(createHash('sha256').update(file).digest('hex')).toBe('6b8b897dc9ce1ec7aad0dd60fbbb802ea4bdbcefb44b8e2586b96abfc6bfe267');
    expect(readKeyNames(file)).toEqual(names);
    expect(
      (
        await run(
          file,
          decryptStream(async () => dataKey),
        )
      ).equals(plaintext),
    ).toBe(true);
  });

  describe('refuses every tampering', () => {
    const plaintext = randomBytes(3 * CHUNK + 100);
    const fileP = encrypt(plaintext);
    const sealed = CHUNK + 16;

    it('a flipped bit anywhere: header, any chunk, any tag', async () => {
      const file = await fileP;
      for (const at of [0, 8, 9, 12, 20, 50, HEADER - 1, HEADER, HEADER + sealed - 1, HEADER + 2 * sealed + 3, file.length - 1]) {
        const bad = Buffer.from(file);
        bad[at]! ^= 0x01;
        expect(await refused(bad), `bit at ${at}`).toMatch(/^(INTEGRITY|BAD_REQUEST)$/);
      }
    });

    it('truncation: at a chunk boundary, inside a chunk, inside the header, everything after the header', async () => {
      const file = await fileP;
      for (const length of [HEADER + 3 * sealed, HEADER + 2 * sealed, HEADER + sealed, HEADER + sealed + 100, HEADER, HEADER - 1, 10, file.length - 1]) {
        expect(await refused(file.subarray(0, length)), `cut at ${length}`).toBe('INTEGRITY');
      }
    });

    it('chunks reordered, dropped or duplicated', async () => {
      const file = await fileP;
      const c = (i: number) => file.subarray(HEADER + i * sealed, HEADER + (i + 1) * sealed);
      const last = file.subarray(HEADER + 3 * sealed);
      const header = file.subarray(0, HEADER);
      expect(await refused(Buffer.concat([header, c(1), c(0), c(2), last]))).toBe('INTEGRITY');
      expect(await refused(Buffer.concat([header, c(0), c(2), last]))).toBe('INTEGRITY');
      expect(await refused(Buffer.concat([header, c(0), c(0), c(1), c(2), last]))).toBe('INTEGRITY');
      expect(await refused(Buffer.concat([header, c(0), c(1), c(2), c(2), last]))).toBe('INTEGRITY');
      expect(await refused(Buffer.concat([file, Buffer.from([0])]))).toBe('INTEGRITY');
    });

    it('a chunk swapped in from another file under the same key and names', async () => {
      const file = await fileP;
      const other = await encrypt(randomBytes(3 * CHUNK + 100));
      const swapped = Buffer.from(file);
      other.copy(swapped, HEADER + sealed, HEADER + sealed, HEADER + 2 * sealed);
      expect(await refused(swapped)).toBe('INTEGRITY');
      // The other file's header on this file's chunks.
      expect(await refused(Buffer.concat([other.subarray(0, HEADER), file.subarray(HEADER)]))).toBe('INTEGRITY');
    });

    it('a header naming other keys, or the wrong key', async () => {
      const file = await fileP;
      const renamed = Buffer.from(file);
      renamed.write('dk2', HEADER - 3, 'latin1');
      expect(readKeyNames(renamed)?.dataKey).toBe('dk2');
      expect(await refused(renamed)).toBe('INTEGRITY');
      expect(await refused(file, randomBytes(32))).toBe('INTEGRITY');
    });

    it('bytes that are not the format, or an unknown version', async () => {
      expect(await refused(Buffer.from('plain text, not encrypted at all'))).toBe('BAD_REQUEST');
      const file = Buffer.from(await fileP);
      file[8] = 2;
      expect(await refused(file)).toBe('BAD_REQUEST');
    });

    it('releases no plaintext of a chunk that fails', async () => {
      const file = Buffer.from(await fileP);
      file[HEADER + 10]! ^= 0x80; // the first chunk
      const out: Buffer[] = [];
      await expect(
        pipeline(
          Readable.from([file]),
          decryptStream(async () => key),
          async (source: AsyncIterable<Buffer>) => {
            for await (const chunk of source) out.push(chunk as Buffer);
          },
        ),
      ).rejects.toThrow(/authentication/);
      expect(out).toEqual([]);
    });
  });

  it('refuses a data key of the wrong size and names no tee-kms key can have', () => {
    expect(() => encryptStream(randomBytes(16), names)).toThrow(/32 bytes/);
    expect(() => encryptStream(key, { ...names, user: '../x' })).toThrow(/invalid user/);
    expect(() => encryptStream(key, names, { chunkSize: 10 })).toThrow(/chunk size/);
  });

  it('uses a fresh salt and nonce prefix per file', async () => {
    const a = await encrypt(Buffer.from('same'));
    const b = await encrypt(Buffer.from('same'));
    expect(a.subarray(13, 52).equals(b.subarray(13, 52))).toBe(false);
    expect(createHash('sha256').update(a).digest()).not.toEqual(createHash('sha256').update(b).digest());
  });
});
