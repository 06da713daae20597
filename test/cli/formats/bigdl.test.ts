import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { decryptBigdl, encryptBigdl, readBigdlHeader, type BigdlHeader } from '../../../cli/formats/bigdl.js';
import { peekFormat } from '../../../cli/formats/detect.js';
import { writeOutput } from '../../../cli/formats/output.js';
import { isKmsError } from '../../../shared/errors.js';

// The documented vector (docs/file-format.md): a tee-kms data key's text, as GET /dataKey answers it.
const KEY_TEXT = 'MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=';
const VECTOR_PLAINTEXT = 'BigDL PPML file, read by tee-kms.\n';
const VECTOR_IV = '000102030405060708090a0b0c0d0e0f';
const VECTOR_CIPHERTEXT = '3af5266a7eaba7cc8e2c2c4c62cb8ff67ad1d12333d075f29ccd898054b4429bd58fbb1db23fcec1d57b3de976c39a1d';
const VECTOR_HMAC = '561ccff3809f4e76eccabb40ea12c7ca8da114db82d0b6b955df1a1348e18d16';

const dir = mkdtempSync(join(tmpdir(), 'tee-kms-bigdl-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** BigDL's keys, taken as its code does: bytes 0-15 and 16-31 of the key text, zero-padded. */
function bigdlKeys(keyText: string): { mac: string; aes: string } {
  const text = Buffer.from(keyText, 'utf8');
  const aes = Buffer.alloc(16);
  text.copy(aes, 0, 16, 32);
  return { mac: text.subarray(0, 16).toString('hex'), aes: aes.toString('hex') };
}

/** AES-128-CBC with PKCS#7 and HMAC-SHA256, by the openssl command line: independent of the code under test. */
function opensslEncrypt(keyText: string, ivHex: string, plaintext: Buffer): { body: Buffer; mac: Buffer } {
  const { mac, aes } = bigdlKeys(keyText);
  const body = execFileSync('openssl', ['enc', '-aes-128-cbc', '-K', aes, '-iv', ivHex], { input: plaintext, maxBuffer: 64 << 20 });
  return { body, mac: opensslHmac(mac, body) };
}

function opensslHmac(macKeyHex: string, data: Buffer): Buffer {
  return execFileSync('openssl', ['dgst', '-sha256', '-mac', 'HMAC', '-macopt', `hexkey:${macKeyHex}`, '-binary'], { input: data });
}

/** BigDL 2.3+'s header, from its genHeader(): lengths, the data key name, the IV, then 0x80 to 400 bytes. */
function header23(name: string, ivHex: string): Buffer {
  const header = Buffer.alloc(400, 0x80);
  header.writeUInt32BE(name.length, 0);
  header.writeUInt32BE(16, 4);
  header.write(name, 8, 'utf8');
  Buffer.from(ivHex, 'hex').copy(header, 8 + name.length);
  return header;
}

/** BigDL 2.2's header: version 0x80, the epoch seconds (BE), the IV. */
function header22(ivHex: string): Buffer {
  const header = Buffer.alloc(25);
  header[0] = 0x80;
  header.writeBigInt64BE(1_700_000_000n, 1);
  Buffer.from(ivHex, 'hex').copy(header, 9);
  return header;
}

function bigdlFile(header: Buffer, keyText: string, ivHex: string, plaintext: Buffer): Buffer {
  const { body, mac } = opensslEncrypt(keyText, ivHex, plaintext);
  return Buffer.concat([header, body, mac]);
}

let fileCounter = 0;
function fileOf(bytes: Buffer): string {
  const path = join(dir, `in-${fileCounter++}`);
  writeFileSync(path, bytes);
  return path;
}

async function collect(stream: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of stream) out.push(chunk as Buffer);
  return Buffer.concat(out);
}

async function encryptToBuffer(keyText: string, name: string, plaintext: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      out.push(chunk);
      cb();
    },
  });
  await pipeline(Readable.from([plaintext]), encryptBigdl(keyText, name), sink);
  return Buffer.concat(out);
}

const withKey =
  (keyText: string, seen?: BigdlHeader[]) =>
  async (header: BigdlHeader): Promise<string> => {
    seen?.push(header);
    return keyText;
  };

async function refusal(input: string | Readable, keyText = KEY_TEXT): Promise<string> {
  try {
    const out = await collect(await decryptBigdl(input, withKey(keyText)));
    throw new Error(`accepted, ${out.length} bytes out`);
  } catch (error) {
    expect(isKmsError(error), String(error)).toBe(true);
    return (error as { code: string }).code;
  }
}

describe('BigDL format: files BigDL writes', () => {
  it('the documented vector: openssl agrees with the constants', () => {
    const { body, mac } = opensslEncrypt(KEY_TEXT, VECTOR_IV, Buffer.from(VECTOR_PLAINTEXT));
    expect(body.toString('hex')).toBe(VECTOR_CIPHERTEXT);
    expect(mac.toString('hex')).toBe(VECTOR_HMAC);
  });

  it('decrypts the vector in the 2.3+ layout, and reads the data key name from its header', async () => {
    const file = Buffer.concat([header23('dk1', VECTOR_IV), Buffer.from(VECTOR_CIPHERTEXT, 'hex'), Buffer.from(VECTOR_HMAC, 'hex')]);
    expect(peekFormat(file.subarray(0, 400))).toBe('bigdl');
    const seen: BigdlHeader[] = [];
    const out = await collect(await decryptBigdl(fileOf(file), withKey(KEY_TEXT, seen)));
    expect(out.toString()).toBe(VECTOR_PLAINTEXT);
    expect(seen[0]).toMatchObject({ layout: '2.3', length: 400, dataKeyName: 'dk1' });
  });

  it('decrypts the 2.2 layout (25-byte header), which names no key', async () => {
    const file = Buffer.concat([header22(VECTOR_IV), Buffer.from(VECTOR_CIPHERTEXT, 'hex'), Buffer.from(VECTOR_HMAC, 'hex')]);
    expect(peekFormat(file)).toBe('bigdl');
    const seen: BigdlHeader[] = [];
    expect((await collect(await decryptBigdl(fileOf(file), withKey(KEY_TEXT, seen)))).toString()).toBe(VECTOR_PLAINTEXT);
    expect(seen[0]).toMatchObject({ layout: '2.2', length: 25 });
    expect(seen[0]!.dataKeyName).toBeUndefined();
  });

  it.each([0, 1, 15, 16, 17, 1024 * 1024, 1024 * 1024 + 5])('decrypts %i bytes openssl encrypted, from a path and from a stream', async (size) => {
    const plaintext = randomBytes(size);
    const iv = randomBytes(16).toString('hex');
    const file = bigdlFile(header23('dk1', iv), KEY_TEXT, iv, plaintext);
    expect((await collect(await decryptBigdl(fileOf(file), withKey(KEY_TEXT)))).equals(plaintext)).toBe(true);
    const pieces = [file.subarray(0, 100), file.subarray(100, 5000), file.subarray(5000)];
    expect((await collect(await decryptBigdl(Readable.from(pieces), withKey(KEY_TEXT)))).equals(plaintext)).toBe(true);
  });

  it("accepts BigDL's own 24-character keys, with Java's zero padding in the AES key", async () => {
    const shortText = randomBytes(16).toString('base64'); // what BigDL's KeyGenerator(128) + base64 gives
    expect(shortText).toHaveLength(24);
    const iv = randomBytes(16).toString('hex');
    const file = bigdlFile(header23('dk1', iv), shortText, iv, Buffer.from('short key'));
    expect((await collect(await decryptBigdl(fileOf(file), withKey(shortText)))).toString()).toBe('short key');
    expect(await refusal(fileOf(file), shortText.slice(0, 23))).toBe('BAD_REQUEST');
  });
});

describe('BigDL format: files tee-kms writes', () => {
  it.each([0, 1, 16, 100_000])('are what BigDL reads: %i bytes, checked with openssl', async (size) => {
    const plaintext = randomBytes(size);
    const file = await encryptToBuffer(KEY_TEXT, 'dk1', plaintext);
    // The layout by hand: BigDL's getHeader() reads these offsets.
    expect(file.readUInt32BE(0)).toBe(3);
    expect(file.readUInt32BE(4)).toBe(16);
    expect(file.subarray(8, 11).toString()).toBe('dk1');
    expect(file.subarray(27, 400).every((b) => b === 0x80)).toBe(true);
    const iv = file.subarray(11, 27).toString('hex');
    const body = file.subarray(400, file.length - 32);
    const { mac, aes } = bigdlKeys(KEY_TEXT);
    expect(opensslHmac(mac, body).equals(file.subarray(file.length - 32))).toBe(true);
    const decrypted = execFileSync('openssl', ['enc', '-d', '-aes-128-cbc', '-K', aes, '-iv', iv], { input: body, maxBuffer: 64 << 20 });
    expect(decrypted.equals(plaintext)).toBe(true);
    expect(readBigdlHeader(file)).toMatchObject({ layout: '2.3', dataKeyName: 'dk1', iv: Buffer.from(iv, 'hex') });
    expect((await collect(await decryptBigdl(fileOf(file), withKey(KEY_TEXT)))).equals(plaintext)).toBe(true);
  });

  it('use a fresh random IV per file', async () => {
    const a = await encryptToBuffer(KEY_TEXT, 'dk1', Buffer.from('same'));
    const b = await encryptToBuffer(KEY_TEXT, 'dk1', Buffer.from('same'));
    expect(readBigdlHeader(a)!.iv.equals(readBigdlHeader(b)!.iv)).toBe(false);
  });

  it('refuse key texts under 32 bytes and names no tee-kms key can have', () => {
    expect(() => encryptBigdl(KEY_TEXT.slice(0, 31), 'dk1')).toThrow(/at least 32 bytes/);
    expect(() => encryptBigdl(KEY_TEXT, '../dk1')).toThrow(/invalid dataKeyName/);
  });
});

describe('BigDL format: tampering', () => {
  const plaintext = randomBytes(70_000);
  const iv = randomBytes(16).toString('hex');
  const file = bigdlFile(header23('dk1', iv), KEY_TEXT, iv, plaintext);

  it('refuses a flipped bit in the ciphertext or the HMAC, a cut, an addition, the wrong key', async () => {
    for (const at of [400, 401, 30_000, file.length - 33, file.length - 32, file.length - 1]) {
      const bad = Buffer.from(file);
      bad[at]! ^= 0x01;
      expect(await refusal(fileOf(bad)), `bit at ${at}`).toBe('INTEGRITY');
    }
    for (const cut of [file.length - 1, file.length - 16, file.length - 32, file.length - 48, 400 + 48, 400]) {
      expect(await refusal(fileOf(file.subarray(0, cut))), `cut at ${cut}`).toBe('INTEGRITY');
    }
    expect(await refusal(fileOf(Buffer.concat([file, randomBytes(16)])))).toBe('INTEGRITY');
    expect(await refusal(fileOf(file), randomBytes(32).toString('base64'))).toBe('INTEGRITY');
    expect(await refusal(Readable.from([Buffer.from(file.subarray(0, file.length - 1))]))).toBe('INTEGRITY');
  });

  it('refuses what is not a BigDL file', async () => {
    expect(await refusal(fileOf(Buffer.from('plain text')))).toBe('BAD_REQUEST');
    const badHeader = Buffer.from(file);
    badHeader.writeUInt32BE(12, 4); // an IV length BigDL never writes
    expect(await refusal(fileOf(badHeader))).toBe('BAD_REQUEST');
  });

  it('writes no output file for a refused input', async () => {
    const bad = Buffer.from(file);
    bad[50_000]! ^= 0x01;
    const target = join(dir, 'refused-out');
    await expect(
      (async () => {
        const plain = await decryptBigdl(fileOf(bad), withKey(KEY_TEXT));
        await writeOutput(target, plain);
      })(),
    ).rejects.toThrow(/HMAC/);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes('refused-out'))).toEqual([]);
  });

  it("documents BigDL's own weakness: its HMAC does not cover the IV, so the first block can be changed", async () => {
    // Flipping a bit of the IV flips the same bit of the first plaintext block and nothing fails.
    // This is BigDL's format, not a tee-kms choice: docs/file-format.md says to use the tee-kms format.
    const bad = Buffer.from(file);
    bad[8 + 3]! ^= 0x01; // first IV byte in the 2.3 header, after the 3-byte name
    const out = await collect(await decryptBigdl(fileOf(bad), withKey(KEY_TEXT)));
    expect(out[0]).toBe(plaintext[0]! ^ 0x01);
    expect(out.subarray(1).equals(plaintext.subarray(1))).toBe(true);
  });

  it('refuses a file changed between the HMAC check and decryption', async () => {
    const path = fileOf(file);
    const other = bigdlFile(header23('dk1', iv), KEY_TEXT, iv, randomBytes(70_000));
    const plain = await decryptBigdl(path, async () => KEY_TEXT);
    writeFileSync(path, Buffer.concat([other.subarray(0, file.length - 32), file.subarray(file.length - 32)]));
    await expect(collect(plain)).rejects.toThrow(/changed while it was decrypted/);
    expect(readFileSync(path).length).toBe(file.length);
  });
});
