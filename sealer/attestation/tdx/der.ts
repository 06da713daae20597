/**
 * A minimal, bounds-checked DER reader: just enough to verify CRLs (node:crypto has no CRL API)
 * and to compare X.509 names byte for byte. Definite lengths only, as DER requires.
 */

export class DerError extends Error {
  override readonly name = 'DerError';
}

export interface DerNode {
  readonly tag: number;
  /** The whole TLV (what a signature covers when this node is a TBS structure). */
  readonly bytes: Uint8Array;
  /** The value part. */
  readonly content: Uint8Array;
}

export const DER_TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  CONTEXT_0: 0xa0,
} as const;

/** Reads the TLV starting at `offset`; returns it and the offset just past it. */
export function readDer(buf: Uint8Array, offset = 0): { node: DerNode; next: number } {
  if (offset + 2 > buf.length) throw new DerError('truncated DER header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte DER tags are not supported');
  let length = buf[offset + 1]!;
  let header = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    // 4 length bytes cover every structure we read; 0 would be BER's indefinite form.
    if (count === 0 || count > 4) throw new DerError('unsupported DER length form');
    if (offset + 2 + count > buf.length) throw new DerError('truncated DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[offset + 2 + i]!;
    header += count;
  }
  const end = offset + header + length;
  if (end > buf.length) throw new DerError('DER value runs past the end of its container');
  return {
    node: { tag, bytes: buf.subarray(offset, end), content: buf.subarray(offset + header, end) },
    next: end,
  };
}

/** Reads exactly one TLV that must fill `buf` (trailing garbage is an error). */
export function readDerExact(buf: Uint8Array, expectedTag?: number): DerNode {
  const { node, next } = readDer(buf, 0);
  if (next !== buf.length) throw new DerError('trailing bytes after DER value');
  if (expectedTag !== undefined && node.tag !== expectedTag) throw new DerError('unexpected DER tag');
  return node;
}

/** The TLVs inside a constructed node (SEQUENCE, SET, context tag). */
export function derChildren(node: DerNode): DerNode[] {
  const children: DerNode[] = [];
  let offset = 0;
  while (offset < node.content.length) {
    const { node: child, next } = readDer(node.content, offset);
    children.push(child);
    offset = next;
  }
  return children;
}

/** UTCTime or GeneralizedTime (both must be UTC, 'Z'-terminated, in DER). */
export function derTime(node: DerNode): Date {
  const text = Buffer.from(node.content).toString('latin1');
  let match: RegExpExecArray | null;
  let year: number;
  if (node.tag === DER_TAG.UTC_TIME) {
    match = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!match) throw new DerError('malformed UTCTime');
    const yy = Number(match[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy; // RFC 5280 §4.1.2.5.1
  } else if (node.tag === DER_TAG.GENERALIZED_TIME) {
    match = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!match) throw new DerError('malformed GeneralizedTime');
    year = Number(match[1]);
  } else {
    throw new DerError('not a time value');
  }
  const [, , mo, d, h, mi, s] = match.map(Number) as number[];
  return new Date(Date.UTC(year, mo! - 1, d!, h!, mi!, s!));
}

/** An INTEGER as uppercase hex without leading zero bytes (how node:crypto prints serials). */
export function derIntegerHex(node: DerNode): string {
  if (node.tag !== DER_TAG.INTEGER) throw new DerError('not an INTEGER');
  return normalizeSerialHex(Buffer.from(node.content).toString('hex'));
}

export function normalizeSerialHex(hex: string): string {
  const trimmed = hex.toUpperCase().replace(/^(00)+/, '');
  return trimmed === '' ? '00' : trimmed;
}

/** Dotted form of an OBJECT IDENTIFIER. */
export function derOid(node: DerNode): string {
  if (node.tag !== DER_TAG.OID || node.content.length === 0) throw new DerError('not an OID');
  const parts: number[] = [];
  let value = 0;
  for (const byte of node.content) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      if (parts.length === 0) parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}
