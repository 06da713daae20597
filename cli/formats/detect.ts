/**
 * Which format a file is in, from its first bytes:
 *
 *   peekFormat(firstBytes) -> 'tee-kms' | 'bigdl' | undefined
 *
 * Give it at least PEEK_BYTES bytes (fewer only when the file is shorter). 'tee-kms' is decided by
 * the magic; 'bigdl' by a header BigDL could have written (its 2.2 version byte, or the 2.3+ header's
 * lengths and padding). undefined means neither: plaintext, or a file of another tool.
 */
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
