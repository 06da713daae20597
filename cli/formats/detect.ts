/**
 * Which format a file to decrypt is in, from its first bytes:
 *
 *   peekFormat(firstBytes) -> 'tee-kms' | 'bigdl' | undefined
 *   peekFile(path) -> Promise<'tee-kms' | 'bigdl' | undefined>              reads the first PEEK_BYTES
 *   peekStream(stream) -> Promise<{ format, stream }>                       the same bytes, put back
 *
 * Give peekFormat at least PEEK_BYTES bytes (fewer only when the file is shorter). 'tee-kms' is
 * decided by the magic; 'bigdl' by a header BigDL could have written (its 2.2 version byte, or the
 * 2.3+ header's lengths and padding). undefined means neither: plaintext, or a file of another tool.
 * The two cannot be taken for each other: a tee-kms file starts with 't' (0x74), a BigDL file with
 * 0x80 (2.2) or with the high byte of a name length under 400, 0x00 (2.3+). Each decryptor checks
 * its format again, so a file changed after the peek is refused, never read as the other format.
 */
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { readBigdlHeader } from './bigdl.js';
import { MAGIC } from './stream.js';

export type FileFormat = 'tee-kms' | 'bigdl';

/** Enough bytes to recognize either format (BigDL 2.3+'s header is 400 bytes). */
export const PEEK_BYTES = 400;

export function peekFormat(firstBytes: Uint8Array): FileFormat | undefined {
  const bytes = Buffer.from(firstBytes.buffer, firstBytes.byteOffset, firstBytes.byteLength);
  if (bytes.length >= MAGIC.length && bytes.subarray(0, MAGIC.length).equals(MAGIC)) return 'tee-kms';
  if (readBigdlHeader(bytes) !== undefined) return 'bigdl';
  return undefined;
}

export async function peekFile(path: string): Promise<FileFormat | undefined> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(PEEK_BYTES);
    let length = 0;
    for (let read = -1; read !== 0 && length < PEEK_BYTES; length += read) {
      ({ bytesRead: read } = await handle.read(head, length, PEEK_BYTES - length, length));
    }
    return peekFormat(head.subarray(0, length));
  } finally {
    await handle.close();
  }
}

/**
 * Reads the first PEEK_BYTES of a stream that cannot be read twice (standard input) and puts them
 * back (unshift), so that `stream` then yields every byte; a stream that ended is replaced by one of
 * what it held. The bytes go back at once, in the 'data' handler: a stream whose input ended
 * meanwhile would otherwise end, empty, before they were back.
 */
export function peekStream(stream: Readable): Promise<{ format: FileFormat | undefined; stream: Readable }> {
  const chunks: Buffer[] = [];
  let size = 0;
  return new Promise((resolve, reject) => {
    const stop = () => {
      stream.off('data', onData).off('end', onEnd).off('error', onError);
      stream.pause();
      return Buffer.concat(chunks);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size < PEEK_BYTES) return;
      const head = stop();
      stream.unshift(head);
      resolve({ format: peekFormat(head), stream });
    };
    const onEnd = () => {
      const head = stop();
      resolve({ format: peekFormat(head), stream: Readable.from(head.length > 0 ? [head] : []) });
    };
    const onError = (error: Error) => {
      stop();
      reject(error);
    };
    stream.on('data', onData).on('end', onEnd).on('error', onError);
  });
}
