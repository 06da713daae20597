/**
 * The tee-kms file format: streaming AEAD, AES-256-GCM over fixed-size chunks (docs/file-format.md).
 *
 *   encryptStream(dataKey, { user, primaryKey, dataKey }, { chunkSize? }) -> Transform
 *   decryptStream(getKey: (names) => Promise<Buffer>) -> Transform
 *   readKeyNames(firstBytes) -> { user, primaryKey, dataKey } | undefined (need more bytes); throws
 *     KmsError: BAD_REQUEST for bytes that are not a tee-kms file, INTEGRITY for a header no writer makes
 *
 * `dataKey` is the 32 raw bytes of a tee-kms data key (the base64 that GET /dataKey answers, decoded).
 * The header names the user, primary key and data key, so decryption needs only credentials: the
 * decrypting Transform parses the header, asks `getKey` for the key those names point to, and then
 * releases each chunk's plaintext only after that chunk authenticated. A file cut short, chunks
 * reordered, dropped, duplicated or taken from another file, and any header edit all fail with
 * KmsError('INTEGRITY'); bytes that are not this format fail with KmsError('BAD_REQUEST').
 *
 * Decryption releases authenticated chunks as it goes: a truncation is known only at the end. So a
 * caller writing to a file must publish it only when the stream finished (cli/formats/output.ts).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { KmsError } from '../../shared/errors.js';
import { validateName } from '../../shared/names.js';
import { ChunkQueue } from './chunks.js';

export interface KeyNames {
  readonly user: string;
  readonly primaryKey: string;
  readonly dataKey: string;
}

export interface EncryptOptions {
  /** Plaintext bytes per chunk (default 256 KiB, 1 KiB to 4 MiB). */
  readonly chunkSize?: number;
}

export const MAGIC = Buffer.from('tee-kms\0', 'latin1');
export const VERSION = 1;
// 256 KiB: a GCM set-up per 64 KiB chunk cost a third of the throughput (docs/performance.md).
export const DEFAULT_CHUNK_SIZE = 256 * 1024;
const MIN_CHUNK_SIZE = 1024;
// Bounds what a header can make a decryptor buffer: memory stays constant whatever the file says.
const MAX_CHUNK_SIZE = 4 * 1024 * 1024;
const SALT_BYTES = 32;
const PREFIX_BYTES = 7;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
// magic, version, chunk size (u32 BE), salt, nonce prefix; then three u16-BE-length-prefixed names.
const FIXED_BYTES = MAGIC.length + 1 + 4 + SALT_BYTES + PREFIX_BYTES;
const MAX_NAME_BYTES = 64; // shared/names.ts: at most 64 ASCII characters
const MAX_HEADER_BYTES = FIXED_BYTES + 3 * (2 + MAX_NAME_BYTES);
const MAX_CHUNKS = 2 ** 32; // the counter is 32 bits: 1 PiB at 256 KiB chunks
// Names the format in the key derivation, so a key derived here serves no other purpose.
const HKDF_INFO = Buffer.from('tee-kms file v1 AES-256-GCM chunk key', 'latin1');

interface Header {
  readonly bytes: Buffer;
  readonly chunkSize: number;
  readonly salt: Buffer;
  readonly prefix: Buffer;
  readonly names: KeyNames;
}

export function encryptStream(dataKey: Uint8Array, names: KeyNames, options: EncryptOptions = {}): Transform {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new KmsError('BAD_REQUEST', `chunk size must be an integer from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}`);
  }
  assertDataKey(dataKey);
  const header = buildHeader(chunkSize, randomBytes(SALT_BYTES), randomBytes(PREFIX_BYTES), checkedNames(names, 'BAD_REQUEST'));
  const sealer = new ChunkSealer(deriveKey(dataKey, header.salt), header);
  const queue = new ChunkQueue();
  let headerSent = false;
  const sendHeader = (t: Transform) => {
    if (!headerSent) t.push(header.bytes);
    headerSent = true;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        sendHeader(this);
        queue.push(chunk);
        // Strictly more than a chunk: the last chunk is sealed in flush, flagged as the last.
        while (queue.length > chunkSize) for (const part of sealer.seal(queue.take(chunkSize), false)) this.push(part);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        sendHeader(this);
        for (const part of sealer.seal(queue.take(queue.length), true)) this.push(part);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}

export function decryptStream(getKey: (names: KeyNames) => Promise<Uint8Array>): Transform {
  const queue = new ChunkQueue();
  let opener: ChunkOpener | undefined;
  let header: Header | undefined;

  // Parses the header once it is all here, fetches the key it names; false while bytes are missing.
  const start = async (): Promise<boolean> => {
    if (opener !== undefined) return true;
    const parsed = parseHeader(queue.peek(Math.min(queue.length, MAX_HEADER_BYTES))!);
    if (parsed === undefined) return false;
    queue.take(parsed.bytes.length);
    header = parsed;
    const key = await getKey(parsed.names);
    assertDataKey(key);
    opener = new ChunkOpener(deriveKey(key, parsed.salt), parsed);
    return true;
  };

  // Opens every chunk known not to be the last: strictly more than a sealed chunk must follow it.
  const openReady = (t: Transform) => {
    const sealed = header!.chunkSize + TAG_BYTES;
    while (queue.length > sealed) for (const part of opener!.open(queue.take(sealed - TAG_BYTES), queue.takeBuffer(TAG_BYTES), false)) t.push(part);
  };

  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      queue.push(chunk);
      if (opener !== undefined) {
        // After the header, no promise per input buffer.
        try {
          openReady(this);
          callback();
        } catch (error) {
          callback(error as Error);
        }
        return;
      }
      start().then(
        (ready) => {
          try {
            if (ready) openReady(this);
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
        (error: unknown) => callback(error as Error),
      );
    },
    flush(callback: TransformCallback) {
      start().then(
        (ready) => {
          try {
            if (!ready) throw integrityError('the file ends inside its header');
            if (queue.length < TAG_BYTES) throw integrityError('the file was cut short');
            for (const part of opener!.open(queue.take(queue.length - TAG_BYTES), queue.takeBuffer(TAG_BYTES), true)) this.push(part);
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
        (error: unknown) => callback(error as Error),
      );
    },
  });
}

/** The names in a tee-kms header, from a file's first bytes; undefined while the header is incomplete. */
export function readKeyNames(firstBytes: Uint8Array): KeyNames | undefined {
  const buffer = Buffer.from(firstBytes.buffer, firstBytes.byteOffset, firstBytes.byteLength);
  return parseHeader(buffer.subarray(0, MAX_HEADER_BYTES))?.names;
}

class ChunkSealer {
  #counter = 0;
  constructor(
    private readonly key: Buffer,
    private readonly header: Header,
  ) {}

  seal(plaintext: Buffer[], last: boolean): Buffer[] {
    if (this.#counter >= MAX_CHUNKS) throw new KmsError('BAD_REQUEST', 'the input is too large for one tee-kms file');
    const cipher = createCipheriv('aes-256-gcm', this.key, nonceOf(this.header.prefix, this.#counter++, last), { authTagLength: TAG_BYTES });
    cipher.setAAD(this.header.bytes);
    const out = plaintext.map((part) => cipher.update(part));
    out.push(cipher.final(), cipher.getAuthTag());
    return out;
  }
}

class ChunkOpener {
  #counter = 0;
  constructor(
    private readonly key: Buffer,
    private readonly header: Header,
  ) {}

  /** The plaintext of one sealed chunk (its ciphertext parts, then its tag), only once its tag verified. */
  open(ciphertext: Buffer[], tag: Buffer, last: boolean): Buffer[] {
    if (this.#counter >= MAX_CHUNKS) throw integrityError('the file has more chunks than the format allows');
    const decipher = createDecipheriv('aes-256-gcm', this.key, nonceOf(this.header.prefix, this.#counter++, last), { authTagLength: TAG_BYTES });
    decipher.setAAD(this.header.bytes);
    decipher.setAuthTag(tag);
    // Held back until final() verified the tag: unauthenticated plaintext never leaves.
    const out = ciphertext.map((part) => decipher.update(part));
    try {
      out.push(decipher.final());
    } catch {
      throw integrityError('a chunk failed authentication: the file was changed, cut short or reordered, or the key is not the one it was written with');
    }
    return out;
  }
}

/** STREAM nonce (Hoang, Reyhanitabar, Rogaway, Vizár 2015; Tink's layout): prefix || counter || last. */
function nonceOf(prefix: Buffer, counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(PREFIX_BYTES + 5);
  prefix.copy(nonce, 0);
  nonce.writeUInt32BE(counter, PREFIX_BYTES);
  nonce[PREFIX_BYTES + 4] = last ? 1 : 0;
  return nonce;
}

function deriveKey(dataKey: Uint8Array, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', dataKey, salt, HKDF_INFO, KEY_BYTES));
}

function buildHeader(chunkSize: number, salt: Buffer, prefix: Buffer, names: KeyNames): Header {
  const fixed = Buffer.alloc(FIXED_BYTES);
  MAGIC.copy(fixed, 0);
  fixed[MAGIC.length] = VERSION;
  fixed.writeUInt32BE(chunkSize, MAGIC.length + 1);
  salt.copy(fixed, MAGIC.length + 5);
  prefix.copy(fixed, MAGIC.length + 5 + SALT_BYTES);
  const fields = [names.user, names.primaryKey, names.dataKey].map((name) => {
    const bytes = Buffer.from(name, 'utf8');
    const length = Buffer.alloc(2);
    length.writeUInt16BE(bytes.length);
    return Buffer.concat([length, bytes]);
  });
  return { bytes: Buffer.concat([fixed, ...fields]), chunkSize, salt, prefix, names };
}

/** The header at the start of `bytes`; undefined while incomplete; throws when it cannot be one. */
function parseHeader(bytes: Buffer): Header | undefined {
  const magicSeen = bytes.subarray(0, MAGIC.length);
  if (!MAGIC.subarray(0, magicSeen.length).equals(magicSeen)) throw new KmsError('BAD_REQUEST', 'not a tee-kms encrypted file');
  if (bytes.length < FIXED_BYTES) return undefined;
  const version = bytes[MAGIC.length];
  if (version !== VERSION) throw new KmsError('BAD_REQUEST', `unsupported tee-kms file version ${version}`);
  const chunkSize = bytes.readUInt32BE(MAGIC.length + 1);
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw integrityError('the header names an impossible chunk size');
  const names: string[] = [];
  let at = FIXED_BYTES;
  for (let i = 0; i < 3; i++) {
    if (bytes.length < at + 2) return undefined;
    const length = bytes.readUInt16BE(at);
    if (length > MAX_NAME_BYTES) throw integrityError('the header names a key name longer than any tee-kms name');
    if (bytes.length < at + 2 + length) return undefined;
    names.push(bytes.toString('utf8', at + 2, at + 2 + length));
    at += 2 + length;
  }
  const [user, primaryKey, dataKey] = names as [string, string, string];
  return {
    bytes: Buffer.from(bytes.subarray(0, at)),
    chunkSize,
    salt: Buffer.from(bytes.subarray(MAGIC.length + 5, MAGIC.length + 5 + SALT_BYTES)),
    prefix: Buffer.from(bytes.subarray(MAGIC.length + 5 + SALT_BYTES, FIXED_BYTES)),
    names: checkedNames({ user, primaryKey, dataKey }, 'INTEGRITY'),
  };
}

function checkedNames(names: KeyNames, code: 'BAD_REQUEST' | 'INTEGRITY'): KeyNames {
  try {
    return {
      user: validateName('user', names.user),
      primaryKey: validateName('primaryKeyName', names.primaryKey),
      dataKey: validateName('dataKeyName', names.dataKey),
    };
  } catch (error) {
    if (code === 'BAD_REQUEST') throw error;
    throw integrityError('the header holds a name no tee-kms key can have');
  }
}

function assertDataKey(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new KmsError('BAD_REQUEST', `a tee-kms data key is ${KEY_BYTES} bytes`);
}

function integrityError(message: string): KmsError {
  return new KmsError('INTEGRITY', message);
}
