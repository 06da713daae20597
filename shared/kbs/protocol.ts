import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { KmsError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';

/**
 * The Confidential Containers Trustee KBS protocol, version 0.4.0, as both sides need it.
 *
 * Shapes, read from confidential-containers/trustee and its kbs-types / guest-components:
 * - kbs/docs/kbs_attestation_protocol.md: `Request` {version, tee, extra-params}; `Challenge`
 *   {nonce, extra-params}; `Attestation` {init-data?, runtime-data: {nonce, tee-pubkey},
 *   tee-evidence}; resource responses as flattened JWE; errors as RFC 7807 `{type, detail}` with
 *   type `https://github.com/confidential-containers/kbs/errors/<Name>`; the session cookie
 *   `kbs-session-id`.
 * - kbs/src/attestation/backend.rs: the server accepts exactly version "=0.4.0" (semver
 *   VersionReq); nonce = base64 (standard, padded) of 32 random bytes; `tee-evidence` is a composite
 *   `{primary_evidence, additional_evidence}` where `additional_evidence` is a JSON *string* ("" when
 *   there are no additional devices); the primary evidence's runtime data is the JSON object
 *   `{"tee-pubkey": …, "nonce": …, "additional-evidence": <that string>}`.
 * - attestation-service/src/lib.rs (`parse_runtime_data`, `RuntimeData::Structured`): the expected
 *   report data is `hash(canonical JSON of that object)`; kbs/src/attestation/coco/builtin.rs uses
 *   SHA-384 for every TEE but IBM SE (SHA-512). guest-components' kbs_protocol rcar_client.rs
 *   hashes the same object with `serde_json_canonicalizer` (RFC 8785), and honours a
 *   `selected-hash-algorithm` in the challenge's extra-params (Trustee sets it for SE only; for
 *   every other TEE extra-params is the empty string).
 * - The TEE puts that digest in its 64-byte REPORT_DATA zero-padded (TDX attester pads; the TDX
 *   verifier `regularize_data`s the expected value the same way).
 * - kbs-types `TeePubKey::EC {crv, alg, x, y}` or `TeePubKey::RSA {alg, n, e}`, tagged by `kty`;
 *   guest-components' default TEE key is P-256 with alg "ECDH-ES+A256KW" (keypair.rs also makes
 *   P-521 and RSA-2048 keys, the latter with alg "RSA-OAEP-256"); kbs/src/jwe/mod.rs encrypts to
 *   P-256 or P-521 with ECDH-ES+A256KW (Concat KDF as RFC 7518), or to RSA with RSA-OAEP-256 (or
 *   the deprecated RSA1_5), and A256GCM, `epk` in the protected header, no `aad`.
 * - `additional_evidence` is "" or serde_json's string of a map {<kbs-types Tee name>: evidence}
 *   (guest-components evidence_provider/native.rs; kbs/src/attestation/backend.rs parses it as
 *   HashMap<Tee, TeeEvidence>, so "{}" is the empty map); the string itself is hashed as sent.
 */
export const KBS_PROTOCOL_VERSION = '0.4.0';
export const KBS_PREFIX = '/kbs/v0';
export const KBS_SESSION_COOKIE = 'kbs-session-id';
export const KBS_ERROR_TYPE_PREFIX = 'https://github.com/confidential-containers/kbs/errors/';
export const TEE_KEY_ALG = 'ECDH-ES+A256KW';
/** The one RSA `tee-pubkey` alg accepted (guest-components' RSA key; RSA1_5 is refused). */
export const RSA_TEE_KEY_ALG = 'RSA-OAEP-256';
export const JWE_ENC = 'A256GCM';
export const REPORT_DATA_BYTES = 64;
/** Raw bytes in a Trustee nonce (backend.rs NONCE_SIZE_BYTES). */
export const NONCE_BYTES = 32;

export type TeeCurve = 'P-256' | 'P-521';

/** The `tee-pubkey` JWK: exactly these members (extra ones would change Trustee's hash input). */
export interface TeePubKey {
  readonly kty: 'EC';
  readonly crv: TeeCurve;
  readonly alg: typeof TEE_KEY_ALG;
  readonly x: string;
  readonly y: string;
}

/** An RSA `tee-pubkey` (kbs-types `TeePubKey::RSA`): exactly kty, alg, n, e, as sent. */
export interface RsaTeePubKey {
  readonly kty: 'RSA';
  readonly alg: typeof RSA_TEE_KEY_ALG;
  readonly n: string;
  readonly e: string;
}

/** Any `tee-pubkey` a KBS client may present: resources can be encrypted to it. */
export type KbsTeePubKey = TeePubKey | RsaTeePubKey;

export interface KbsRequest {
  readonly version: string;
  readonly tee: string;
  readonly 'extra-params': unknown;
}

export interface KbsChallenge {
  readonly nonce: string;
  readonly 'extra-params': unknown;
}

export interface KbsRuntimeData {
  readonly nonce: string;
  readonly 'tee-pubkey': KbsTeePubKey;
}

export interface KbsCompositeEvidence {
  readonly primary_evidence: unknown;
  readonly additional_evidence: string;
}

export interface KbsAttestation {
  readonly 'init-data'?: { readonly format: string; readonly body: string } | null;
  readonly 'runtime-data': KbsRuntimeData;
  readonly 'tee-evidence': KbsCompositeEvidence;
}

/** RFC 7807 problem details as Trustee sends them (`type`, `detail`); we add `title`/`status`. */
export interface KbsProblem {
  readonly type: string;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

/** The flattened JWE JSON serialization (RFC 7516 §7.2.2) of a resource. */
export interface FlattenedJwe {
  readonly protected: string;
  readonly encrypted_key: string;
  readonly iv: string;
  readonly ciphertext: string;
  readonly tag: string;
  readonly aad?: string;
}

export type RuntimeDataHash = 'sha256' | 'sha384' | 'sha512';
const HASHES: readonly RuntimeDataHash[] = ['sha256', 'sha384', 'sha512'];
export const DEFAULT_RUNTIME_DATA_HASH: RuntimeDataHash = 'sha384';

/** The hash the challenge selects (`extra-params["selected-hash-algorithm"]`), SHA-384 by default. */
export function selectedHash(extraParams: unknown): RuntimeDataHash {
  if (typeof extraParams !== 'object' || extraParams === null) return DEFAULT_RUNTIME_DATA_HASH;
  const selected = (extraParams as Record<string, unknown>)['selected-hash-algorithm'];
  if (selected === undefined) return DEFAULT_RUNTIME_DATA_HASH;
  const name = typeof selected === 'string' ? selected.toLowerCase() : '';
  if (!(HASHES as readonly string[]).includes(name)) {
    throw new KmsError('ROOT_KEY_UNAVAILABLE', 'the KBS selected a runtime-data hash algorithm this client does not support');
  }
  return name as RuntimeDataHash;
}

/** The object whose canonical JSON is hashed into the primary evidence's report data. */
export function primaryRuntimeData(nonce: string, teePubKey: KbsTeePubKey, additionalEvidence = ''): Record<string, unknown> {
  return { 'additional-evidence': additionalEvidence, nonce, 'tee-pubkey': teePubKey };
}

/** hash(RFC 8785 JCS of the runtime data): 32, 48 or 64 bytes. */
export function runtimeDataDigest(runtimeData: Record<string, unknown>, hash: RuntimeDataHash = DEFAULT_RUNTIME_DATA_HASH): Buffer {
  const json = canonicalize(runtimeData);
  if (json === undefined) throw new KmsError('INTERNAL', 'runtime data cannot be canonicalized');
  return createHash(hash).update(json, 'utf8').digest();
}

/** A digest zero-padded to the 64 bytes of a TEE's REPORT_DATA. */
export function padReportData(digest: Uint8Array): Buffer {
  if (digest.length > REPORT_DATA_BYTES) throw new KmsError('INTERNAL', 'report data longer than 64 bytes');
  const out = Buffer.alloc(REPORT_DATA_BYTES);
  out.set(digest);
  return out;
}

/** The 64-byte report data binding a KBS challenge nonce and the TEE public key. */
export function kbsReportData(nonce: string, teePubKey: KbsTeePubKey, hash: RuntimeDataHash = DEFAULT_RUNTIME_DATA_HASH, additionalEvidence = ''): Buffer {
  return padReportData(runtimeDataDigest(primaryRuntimeData(nonce, teePubKey, additionalEvidence), hash));
}

/**
 * The same binding for any public JWK (the sealing service's signing and recovery keys,
 * docs/sealer-protocol.md): SHA-384 of the canonical {"additional-evidence": "", nonce, "tee-pubkey": jwk}.
 */
export function keyBindingReportData(nonce: string, jwk: Readonly<Record<string, string>>): Buffer {
  return padReportData(runtimeDataDigest({ 'additional-evidence': '', nonce, 'tee-pubkey': jwk }));
}

/** A verifier's nonce for evidence about a key: base64url (no padding) of 16 to 64 bytes. Throws KmsError('BAD_REQUEST'). */
export function parseEvidenceNonce(value: unknown): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]+$/.test(value)) throw new KmsError('BAD_REQUEST', 'nonce must be base64url (no padding) of 16 to 64 bytes');
  const bytes = Buffer.from(value, 'base64url');
  if (bytes.length < 16 || bytes.length > 64 || bytes.toString('base64url') !== value) {
    throw new KmsError('BAD_REQUEST', 'nonce must be base64url (no padding) of 16 to 64 bytes');
  }
  return value;
}

const TEE_PUBKEY_MEMBERS = ['alg', 'crv', 'kty', 'x', 'y'];
const COORDINATE_BYTES: Record<TeeCurve, number> = { 'P-256': 32, 'P-521': 66 };
const B64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Validates a `tee-pubkey` from the wire: an EC JWK with exactly kty, crv, alg, x, y (no `d`, no
 * `kid`, no `use`: extra members would make the client's hash differ from Trustee's), P-256 or
 * P-521, alg ECDH-ES+A256KW, coordinates of the curve's length. Whether the point is on the curve
 * is checked when the key is imported. Throws KmsError('BAD_REQUEST').
 */
export function parseTeePubKey(value: unknown): TeePubKey {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KmsError('BAD_REQUEST', 'tee-pubkey must be a JWK object');
  }
  const jwk = value as Record<string, unknown>;
  const members = Object.keys(jwk).sort();
  if (members.length !== TEE_PUBKEY_MEMBERS.length || members.some((m, i) => m !== TEE_PUBKEY_MEMBERS[i])) {
    throw new KmsError('BAD_REQUEST', 'tee-pubkey must have exactly the members kty, crv, alg, x, y');
  }
  if (jwk.kty !== 'EC') throw new KmsError('BAD_REQUEST', 'tee-pubkey kty must be "EC"');
  if (jwk.alg !== TEE_KEY_ALG) throw new KmsError('BAD_REQUEST', `tee-pubkey alg must be "${TEE_KEY_ALG}"`);
  if (jwk.crv !== 'P-256' && jwk.crv !== 'P-521') throw new KmsError('BAD_REQUEST', 'tee-pubkey crv must be "P-256" or "P-521"');
  const size = COORDINATE_BYTES[jwk.crv];
  for (const c of ['x', 'y'] as const) {
    const coordinate = jwk[c];
    if (typeof coordinate !== 'string' || !B64URL.test(coordinate) || Buffer.from(coordinate, 'base64url').length !== size) {
      throw new KmsError('BAD_REQUEST', `tee-pubkey ${c} must be a base64url ${jwk.crv} coordinate`);
    }
  }
  return { kty: 'EC', crv: jwk.crv, alg: TEE_KEY_ALG, x: jwk.x as string, y: jwk.y as string };
}

/** Validates a `tee-pubkey` from the wire: an EC key as parseTeePubKey, or an RSA key as parseRsaTeePubKey. */
export function parseKbsTeePubKey(value: unknown): KbsTeePubKey {
  return typeof value === 'object' && value !== null && (value as { kty?: unknown }).kty === 'RSA' ? parseRsaTeePubKey(value) : parseTeePubKey(value);
}

const RSA_TEE_PUBKEY_MEMBERS = ['alg', 'e', 'kty', 'n'];
const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 8192;

/**
 * Validates an RSA `tee-pubkey`: exactly kty, alg, n, e (their JCS is hashed into the evidence, so
 * the values are kept as sent), alg RSA-OAEP-256 (RSA1_5, which Trustee still takes, is open to
 * padding-oracle attacks), n of 2048 to 8192 bits and e odd, both minimal big-endian base64url
 * (RFC 7518 §6.3.1). Throws KmsError('BAD_REQUEST').
 */
export function parseRsaTeePubKey(value: unknown): RsaTeePubKey {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KmsError('BAD_REQUEST', 'tee-pubkey must be a JWK object');
  const jwk = value as Record<string, unknown>;
  const members = Object.keys(jwk).sort();
  if (members.length !== RSA_TEE_PUBKEY_MEMBERS.length || members.some((m, i) => m !== RSA_TEE_PUBKEY_MEMBERS[i])) {
    throw new KmsError('BAD_REQUEST', 'an RSA tee-pubkey must have exactly the members kty, alg, n, e');
  }
  if (jwk.kty !== 'RSA') throw new KmsError('BAD_REQUEST', 'tee-pubkey kty must be "RSA" or "EC"');
  if (jwk.alg !== RSA_TEE_KEY_ALG) throw new KmsError('BAD_REQUEST', `an RSA tee-pubkey alg must be "${RSA_TEE_KEY_ALG}" (RSA1_5 is not accepted)`);
  const n = unsignedOf(jwk.n);
  const bits = n === undefined ? 0 : (n.length - 1) * 8 + n[0]!.toString(2).length;
  if (n === undefined || bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
    throw new KmsError('BAD_REQUEST', `an RSA tee-pubkey n must be a minimal base64url modulus of ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits`);
  }
  const e = unsignedOf(jwk.e);
  if (e === undefined || e.length > 8 || (e[e.length - 1]! & 1) === 0 || (e.length === 1 && e[0]! < 3)) {
    throw new KmsError('BAD_REQUEST', 'an RSA tee-pubkey e must be a minimal base64url odd exponent of at most 64 bits');
  }
  return { kty: 'RSA', alg: RSA_TEE_KEY_ALG, n: jwk.n as string, e: jwk.e as string };
}

/** The bytes of a minimal (no leading zero octet) unsigned big-endian base64url integer, or undefined. */
function unsignedOf(value: unknown): Buffer | undefined {
  if (typeof value !== 'string' || !B64URL.test(value)) return undefined;
  const bytes = Buffer.from(value, 'base64url');
  return bytes.length > 0 && bytes[0] !== 0 && bytes.toString('base64url') === value ? bytes : undefined;
}

/** A composite evidence's `additional_evidence`: the string as sent (it is hashed so), and the device TEEs it names. */
export interface AdditionalEvidence {
  readonly text: string;
  readonly deviceTees: readonly string[];
}

/**
 * Parses `additional_evidence` as Trustee does (backend.rs: "" means none, else a JSON object
 * mapping device TEE names to their evidence). "{}", in any JSON spelling, names no device.
 * Throws KmsError('BAD_REQUEST') for anything else than a string holding such an object.
 */
export function parseAdditionalEvidence(value: unknown): AdditionalEvidence {
  if (typeof value !== 'string') throw new KmsError('BAD_REQUEST', 'tee-evidence.additional_evidence must be a string');
  if (value === '') return { text: value, deviceTees: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new KmsError('BAD_REQUEST', 'tee-evidence.additional_evidence must be "" or a JSON object (device TEE → evidence)');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KmsError('BAD_REQUEST', 'tee-evidence.additional_evidence must be "" or a JSON object (device TEE → evidence)');
  }
  return { text: value, deviceTees: Object.keys(parsed) };
}

export const TEE_TYPES: readonly TeeType[] = ['sample', 'tdx'];

export function isTeeType(value: unknown): value is TeeType {
  return typeof value === 'string' && (TEE_TYPES as readonly string[]).includes(value);
}

/** A Trustee problem type (kbs/src/error.rs), e.g. kbsProblemType('AttestationError'). */
export function kbsProblemType(name: string): string {
  return `${KBS_ERROR_TYPE_PREFIX}${name}`;
}
