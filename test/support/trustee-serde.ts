/**
 * How a Trustee client (guest-components' kbs_protocol with kbs-types) reads a KBS resource, written
 * from kbs-types' struct definitions and serde_json's rules, independent of the project's code: it
 * does not use the `protected` string it received as the AES-GCM AAD, but re-serializes the parsed
 * header (`ProtectedHeader::generate_aad`).
 */
import type { KeyObject } from 'node:crypto';
import { flattenedDecrypt, type FlattenedJWE } from 'jose';

// #[derive(Serialize)] struct ProtectedHeader { alg: String, enc: String,
//   #[serde(skip_serializing_if = "Map::is_empty", flatten)] other_fields: Map<String, Value> }
// serialized by serde_json::to_string: struct fields in declaration order, then the flattened map's
// entries; a Map is a BTreeMap (sorted by key bytes) without the `preserve_order` feature and an
// IndexMap (order as parsed) with it. Strings escape '"', '\\' and control characters only.

function serdeString(value: string): string {
  let out = '"';
  for (const char of value) {
    const code = char.codePointAt(0)!;
    if (char === '"') out += '\\"';
    else if (char === '\\') out += '\\\\';
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\t') out += '\\t';
    else if (char === '\b') out += '\\b';
    else if (char === '\f') out += '\\f';
    else if (code < 0x20) out += `\\u00${code.toString(16).padStart(2, '0')}`;
    else out += char;
  }
  return `${out}"`;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function serdeValue(value: unknown, preserveOrder: boolean): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return serdeString(value);
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number' && Number.isInteger(value)) return String(value);
  if (Array.isArray(value)) return `[${value.map((item) => serdeValue(item, preserveOrder)).join(',')}]`;
  if (typeof value === 'object') return `{${serdeEntries(Object.entries(value), preserveOrder)}}`;
  throw new Error(`no serde form written for ${typeof value}`);
}

function serdeEntries(entries: [string, unknown][], preserveOrder: boolean): string {
  const ordered = preserveOrder ? entries : [...entries].sort(([a], [b]) => byteOrder(a, b));
  return ordered.map(([key, member]) => `${serdeString(key)}:${serdeValue(member, preserveOrder)}`).join(',');
}

/** serde_json::to_string(&ProtectedHeader) for a header parsed from `protectedB64u` (generate_aad without the base64). */
export function serdeProtectedHeader(protectedB64u: string, preserveOrder = false): string {
  const { alg, enc, ...otherFields } = JSON.parse(Buffer.from(protectedB64u, 'base64url').toString('utf8')) as Record<string, unknown>;
  if (typeof alg !== 'string' || typeof enc !== 'string') throw new Error('ProtectedHeader needs alg and enc');
  const flattened = serdeEntries(Object.entries(otherFields), preserveOrder);
  return `{${serdeString('alg')}:${serdeString(alg)},${serdeString('enc')}:${serdeString(enc)}${flattened === '' ? '' : `,${flattened}`}}`;
}

/** What kbs_protocol decrypts: AES-GCM with the AAD rebuilt from the header, here by swapping it in for the bytes received. */
export async function openAsTrusteeClient(jwe: FlattenedJWE, key: KeyObject, preserveOrder = false): Promise<Buffer> {
  const rebuilt = Buffer.from(serdeProtectedHeader(jwe.protected!, preserveOrder), 'utf8').toString('base64url');
  const { plaintext } = await flattenedDecrypt({ ...jwe, protected: rebuilt }, key, {
    keyManagementAlgorithms: ['ECDH-ES+A256KW', 'RSA-OAEP-256'],
    contentEncryptionAlgorithms: ['A256GCM'],
  });
  return Buffer.from(plaintext);
}
