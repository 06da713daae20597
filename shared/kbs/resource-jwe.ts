// jose's subpath modules, not its index: see tee-key.ts.
import { createCipheriv, randomBytes } from 'node:crypto';
import { FlattenedEncrypt } from 'jose/jwe/flattened/encrypt';
import { KmsError } from '../errors.js';
import { JWE_ENC, TEE_KEY_ALG, type FlattenedJwe, type KbsTeePubKey } from './protocol.js';
import { importTeePubKey } from './tee-key.js';

/**
 * A KBS resource as flattened JWE that a Trustee client opens.
 *
 * guest-components' kbs_protocol does not use the `protected` string it received as the AES-GCM
 * AAD: it parses it into kbs-types' `ProtectedHeader {alg, enc, #[serde(flatten)] other_fields:
 * Map}` and re-serializes that with serde_json (`generate_aad`). Built without serde_json's
 * `preserve_order`, a Map is a BTreeMap: `alg`, `enc`, then every other member sorted, nested
 * objects (`epk`) sorted too, no whitespace. jose writes `epk` as {x, crv, kty, y}, so its AAD
 * differs from the client's and the tag does not verify. Here the header is written in that
 * order, which also is what a client with `preserve_order` rebuilds (it keeps the order sent), and
 * what Trustee's own kbs/src/jwe sends.
 */
export function kbsProtectedHeader(header: { readonly alg: string; readonly enc: string; readonly [member: string]: unknown }): string {
  const { alg, enc, ...others } = header;
  const sorted = sortedMembers(others) as Record<string, unknown>;
  return JSON.stringify({ alg, enc, ...sorted });
}

/** Object members sorted by key (code-unit order: the byte order of the ASCII names used here), recursively. */
function sortedMembers(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedMembers);
  if (typeof value !== 'object' || value === null) return value;
  const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(entries.map(([key, member]) => [key, sortedMembers(member)]));
}

const CEK_BYTES = 32;
const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;

/**
 * Encrypts a resource to a validated `tee-pubkey`: ECDH-ES+A256KW (EC) or RSA-OAEP-256 (RSA), and
 * A256GCM, as Trustee's kbs/src/jwe does, with the protected header in kbsProtectedHeader's order.
 */
export async function encryptToTee(payload: Uint8Array, teePubKey: KbsTeePubKey): Promise<FlattenedJwe> {
  const key = await importTeePubKey(teePubKey);
  if (teePubKey.kty === 'RSA') {
    // jose's header for RSA-OAEP-256 is {"alg","enc"}: already the order a Trustee client rebuilds.
    const jwe = await new FlattenedEncrypt(payload).setProtectedHeader({ alg: teePubKey.alg, enc: JWE_ENC }).encrypt(key);
    return checked(complete(jwe.protected, jwe.encrypted_key, jwe.iv, jwe.ciphertext, jwe.tag));
  }
  // The key agreement, Concat KDF and key wrap are jose's. It cannot be told the order of `epk`, so
  // it wraps a CEK chosen here (its only way to hand the CEK back), and the content is then
  // encrypted under the header written in the client's order, with node:crypto's AES-256-GCM
  // (jose's own encryption of the empty content, under another random IV, is discarded).
  const cek = randomBytes(CEK_BYTES);
  try {
    const wrapped = await new FlattenedEncrypt(new Uint8Array(0))
      .setProtectedHeader({ alg: TEE_KEY_ALG, enc: JWE_ENC })
      // Marked "for testing" in jose; here it is the only way to learn the CEK jose wraps. A fresh random one per resource.
      .setContentEncryptionKey(cek)
      .encrypt(key);
    const epk = (JSON.parse(Buffer.from(wrapped.protected ?? '', 'base64url').toString('utf8')) as { epk?: Record<string, unknown> }).epk;
    if (epk === undefined || typeof epk.x !== 'string' || typeof epk.y !== 'string') throw new KmsError('INTERNAL', 'JWE key management gave no epk');
    const header = kbsProtectedHeader({ alg: TEE_KEY_ALG, enc: JWE_ENC, epk: { crv: epk.crv, kty: epk.kty, x: epk.x, y: epk.y } });
    const protectedText = Buffer.from(header, 'utf8').toString('base64url');
    const iv = randomBytes(GCM_IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', cek, iv, { authTagLength: GCM_TAG_BYTES });
    // RFC 7516 §5.1 step 14: the AAD is ASCII(BASE64URL(UTF8(JWE Protected Header))).
    cipher.setAAD(Buffer.from(protectedText, 'ascii'));
    const ciphertext = Buffer.concat([cipher.update(payload), cipher.final()]);
    const tag = cipher.getAuthTag();
    return checked(complete(protectedText, wrapped.encrypted_key, iv.toString('base64url'), ciphertext.toString('base64url'), tag.toString('base64url')));
  } finally {
    cek.fill(0);
  }
}

function complete(protectedText?: string, encryptedKey?: string, iv?: string, ciphertext?: string, tag?: string): FlattenedJwe {
  if (protectedText === undefined || encryptedKey === undefined || iv === undefined || ciphertext === undefined || tag === undefined) {
    throw new KmsError('INTERNAL', 'JWE serialization is incomplete');
  }
  return { protected: protectedText, encrypted_key: encryptedKey, iv, ciphertext, tag };
}

/** The header as sent must be exactly the one a Trustee client rebuilds from it. */
function checked(jwe: FlattenedJwe): FlattenedJwe {
  const text = Buffer.from(jwe.protected, 'base64url').toString('utf8');
  if (kbsProtectedHeader(JSON.parse(text) as { alg: string; enc: string }) !== text) {
    throw new KmsError('INTERNAL', 'the JWE protected header is not in the order Trustee clients rebuild');
  }
  return jwe;
}
