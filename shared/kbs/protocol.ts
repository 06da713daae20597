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
 * - kbs-types `TeePubKey::EC {crv, alg, x, y}` tagged by `kty`; guest-components' default TEE key is
 *   P-256 with alg "ECDH-ES+A256KW"; kbs/src/jwe/mod.rs encrypts to P-256 or P-521 with
 *   ECDH-ES+A256KW (Concat KDF as RFC 7518) and A256GCM, `epk` in the protected header, no `aad`.
 */
export const KBS_PROTOCOL_VERSION = '0.4.0';
export const KBS_PREFIX = '/kbs/v0';
export const KBS_SESSION_COOKIE = 'kbs-session-id';
export const KBS_ERROR_TYPE_PREFIX = 'https://github.com/confidential-containers/kbs/errors/';
export const TEE_KEY_ALG = 'ECDH-ES+A256KW';
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
  readonly 'tee-pubkey': TeePubKey;
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
export function primaryRuntimeData(nonce: string, teePubKey: TeePubKey, additionalEvidence = ''): Record<string, unknown> {
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
export function kbsReportData(nonce: string, teePubKey: TeePubKey, hash: RuntimeDataHash = DEFAULT_RUNTIME_DATA_HASH, additionalEvidence = ''): Buffer {
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

export const TEE_TYPES: readonly TeeType[] = ['sample', 'tdx'];

export function isTeeType(value: unknown): value is TeeType {
  return typeof value === 'string' && (TEE_TYPES as readonly string[]).includes(value);
}

/** A Trustee problem type (kbs/src/error.rs), e.g. kbsProblemType('AttestationError'). */
export function kbsProblemType(name: string): string {
  return `${KBS_ERROR_TYPE_PREFIX}${name}`;
}
