/**
 * BigDL PPML's file format (`BigDLEncrypt`, AES/CBC/PKCS5Padding), read and written as BigDL does,
 * but verified strictly (docs/file-format.md explains every field and BigDL's flaws).
 *
 *   encryptBigdl(keyText, dataKeyName) -> Transform            BigDL 2.3+ layout (400-byte header)
 *   decryptBigdl(input: path | Readable, getKeyText: (header) => Promise<string>) -> Promise<Readable>
 *   readBigdlHeader(firstBytes) -> BigdlHeader | undefined     (undefined: not BigDL, or too short)
 *
 * `keyText` is the data key as BigDL handles it: its TEXT (the base64 that GET /dataKey answers),
 * not the decoded bytes. BigDL takes the HMAC-SHA256 key from bytes 0-15 of that text and the
 * AES-128 key from bytes 16-31. decryptBigdl verifies the HMAC over the whole file before it
 * releases one byte of plaintext (a stream input is first spooled to a private, unlinked temporary
 * file), and checks it again while decrypting, so a file changed between the two passes fails too.
 * Failures: KmsError('INTEGRITY') for a file that does not authenticate, KmsError('BAD_REQUEST') for
 * something that is not this format or a key text too short.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual, type Hmac } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { KmsError } from '../../shared/errors.js';
import { validateName } from '../../shared/names.js';

export interface BigdlHeader {
  /** '2.2': version byte, timestamp, IV (25 bytes); '2.3': lengths, data key name, IV, padding (400 bytes). */
  readonly layout: '2.2' | '2.3';
  readonly length: number;
  readonly iv: Buffer;
  /** What BigDL 2.3+ writes as "encryptedDataKey": with BigDL KMS, the data key's name. Not authenticated. */
  readonly dataKeyName?: string;
}

const HEADER_22 = 25;
const HEADER_23 = 400;
const VERSION_22 = 0x80;
const FILL_23 = 0x80;
const IV_BYTES = 16;
const BLOCK = 16;
const MAC_BYTES = 32;
/** BigDL reads `text.getBytes()` 0-15 and 16-31; shorter texts leave Java's zero padding in the key. */
const ENCRYPT_MIN_KEY_TEXT = 32;
const DECRYPT_MIN_KEY_TEXT = 24; // a BigDL-generated 128-bit key, base64: 24 characters

export function encryptBigdl(keyText: string, dataKeyName: string): Transform {
  const keys = keysOf(keyText, ENCRYPT_MIN_KEY_TEXT);
  const name = Buffer.from(validateName('dataKeyName', dataKeyName), 'utf8');
  const iv = randomBytes(IV_BYTES);
  const header = Buffer.alloc(HEADER_23, FILL_23);
  header.writeUInt32BE(name.length, 0);
  header.writeUInt32BE(IV_BYTES, 4);
  name.copy(header, 8);
  iv.copy(header, 8 + name.length);
  const cipher = createCipheriv('aes-128-cbc', keys.aes, iv);
  const mac = createHmac('sha256', keys.mac);
  let headerSent = false;
  const sendHeader = (t: Transform) => {
    if (!headerSent) t.push(header);
    headerSent = true;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      sendHeader(this);
      const out = cipher.update(chunk);
      mac.update(out);
      callback(null, out);
    },
    flush(callback: TransformCallback) {
      sendHeader(this);
      const out = cipher.final();
      mac.update(out);
      this.push(out);
      callback(null, mac.digest());
    },
  });
}

export async function decryptBigdl(input: string | Readable, getKeyText: (header: BigdlHeader) => Promise<string>): Promise<Readable> {
  const handle = typeof input === 'string' ? await openInput(input) : await spool(input);
  try {
    const size = (await handle.stat()).size;
    const first = Buffer.alloc(Math.min(size, HEADER_23));
    await handle.read(first, 0, first.length, 0);
    const header = readBigdlHeader(first);
    if (header === undefined) throw new KmsError('BAD_REQUEST', 'not a BigDL encrypted file');
    const bodyBytes = size - header.length - MAC_BYTES;
    if (bodyBytes < BLOCK || bodyBytes % BLOCK !== 0) throw new KmsError('INTEGRITY', 'the BigDL file is cut short or has bytes added');
    const keys = keysOf(await getKeyText(header), DECRYPT_MIN_KEY_TEXT);
    const tag = Buffer.alloc(MAC_BYTES);
    await handle.read(tag, 0, MAC_BYTES, size - MAC_BYTES);
    const body = () => createReadStream('', { fd: handle, start: header.length, end: size - MAC_BYTES - 1, autoClose: false, highWaterMark: 1024 * 1024 });

    // Pass 1: the HMAC over all of the ciphertext, before any of it is decrypted.
    const mac = createHmac('sha256', keys.mac);
    for await (const chunk of body()) mac.update(chunk as Buffer);
    if (!timingSafeEqual(mac.digest(), tag)) throw macError();

    // Pass 2: decrypt, with the HMAC again over the bytes actually decrypted.
    const plaintext = decryptingTransform(keys, header.iv, tag);
    const source = body();
    void pipeline(source, plaintext).catch(() => undefined); // errors surface on `plaintext`
    void finished(plaintext)
      .catch(() => undefined)
      .finally(() => {
        source.destroy();
        void handle.close().catch(() => undefined);
      });
    return plaintext;
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
}

export function readBigdlHeader(firstBytes: Uint8Array): BigdlHeader | undefined {
  const bytes = Buffer.from(firstBytes.buffer, firstBytes.byteOffset, firstBytes.byteLength);
  if (bytes.length >= HEADER_22 && bytes[0] === VERSION_22) {
    return { layout: '2.2', length: HEADER_22, iv: Buffer.from(bytes.subarray(9, 9 + IV_BYTES)) };
  }
  if (bytes.length < HEADER_23) return undefined;
  const nameLength = bytes.readUInt32BE(0);
  if (bytes.readUInt32BE(4) !== IV_BYTES || nameLength > HEADER_23 - 8 - IV_BYTES) return undefined;
  const end = 8 + nameLength + IV_BYTES;
  if (!bytes.subarray(end, HEADER_23).every((b) => b === FILL_23)) return undefined;
  return {
    layout: '2.3',
    length: HEADER_23,
    dataKeyName: bytes.toString('utf8', 8, 8 + nameLength),
    iv: Buffer.from(bytes.subarray(8 + nameLength, end)),
  };
}

function decryptingTransform(keys: { aes: Buffer; mac: Buffer }, iv: Buffer, tag: Buffer): Transform {
  const decipher = createDecipheriv('aes-128-cbc', keys.aes, iv);
  const mac: Hmac = createHmac('sha256', keys.mac);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      mac.update(chunk);
      callback(null, decipher.update(chunk));
    },
    flush(callback: TransformCallback) {
      if (!timingSafeEqual(mac.digest(), tag)) return callback(new KmsError('INTEGRITY', 'the BigDL file changed while it was decrypted'));
      try {
        callback(null, decipher.final());
      } catch {
        // The HMAC matched, so the writer itself produced bad padding: still not a file to trust.
        callback(macError());
      }
    },
  });
}

function keysOf(keyText: string, minBytes: number): { aes: Buffer; mac: Buffer } {
  const text = Buffer.from(keyText, 'utf8');
  if (text.length < minBytes) throw new KmsError('BAD_REQUEST', `the data key text must be at least ${minBytes} bytes for the BigDL format`);
  const aes = Buffer.alloc(16); // Java's Arrays.copyOfRange pads with zeros past the end
  text.copy(aes, 0, 16, 32);
  return { mac: Buffer.from(text.subarray(0, 16)), aes };
}

async function openInput(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch {
    throw new KmsError('BAD_REQUEST', `cannot read ${path}`);
  }
}

/** Copies a stream to a temporary file only this process can reach (0600, unlinked at once). */
async function spool(input: Readable): Promise<FileHandle> {
  const path = join(tmpdir(), `tee-kms-bigdl-${randomBytes(8).toString('hex')}`);
  const handle = await open(path, 'wx+', 0o600);
  await unlink(path);
  try {
    for await (const chunk of input) await handle.write(chunk as Buffer);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

function macError(): KmsError {
  return new KmsError('INTEGRITY', 'the BigDL file failed its HMAC: it was changed, or the key is not the one it was written with');
}
