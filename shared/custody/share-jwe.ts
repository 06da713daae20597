// jose's subpath modules, not its index, to keep cold start small (as shared/kbs/tee-key.ts).
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { CryptoKey } from 'jose';
import { decodeProtectedHeader } from 'jose/decode/protected_header';
import { compactDecrypt } from 'jose/jwe/compact/decrypt';
import { CompactEncrypt } from 'jose/jwe/compact/encrypt';
import { importJWK } from 'jose/key/import';
import { KmsError } from '../errors.js';

/**
 * Shares encrypted to custodians and to the sealing service's recovery key
 * (docs/sealer-protocol.md): a compact JWE, ECDH-ES+A256KW with A256GCM, whose plaintext is the
 * share's base64 text, and whose `kid` is the recipient key's RFC 7638 thumbprint.
 */
export const SHARE_ALG = 'ECDH-ES+A256KW';
export const SHARE_ENC = 'A256GCM';

/** A custodian's public key, normalized to the members that define it, with its RFC 7638 thumbprint. */
export interface CustodianKey {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly x: string;
  readonly y: string;
  readonly thumbprint: string;
}

/** Shamir shares are numbered 1 to 255, so there are never more custodians than that. */
const MAX_CUSTODIANS = 255;
/** Members that hold private or symmetric key material, in any JWK key type (RFC 7518 §6). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const COORDINATE = /^[A-Za-z0-9_-]{43}$/;
/** Far above a share's JWE (about 400 characters): bounds the work an odd input can cause. */
const MAX_JWE_LENGTH = 8192;
const COMPACT_JWE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){4}$/;

/**
 * Validates the custodians' public keys: a JSON array of EC P-256 JWKs, `alg` ECDH-ES+A256KW or
 * absent, no private members, coordinates of a point on the curve, no key twice, and exactly
 * `expectedCount` of them when given (one per share, in share order). Throws
 * KmsError('BAD_REQUEST') naming the index, never the key.
 */
export function parseCustodianKeys(value: unknown, expectedCount?: number): CustodianKey[] {
  if (!Array.isArray(value) || value.length === 0) throw new KmsError('BAD_REQUEST', 'custodians must be a non-empty JSON array of public JWKs');
  if (value.length > MAX_CUSTODIANS) throw new KmsError('BAD_REQUEST', `custodians: at most ${MAX_CUSTODIANS} keys`);
  if (expectedCount !== undefined && value.length !== expectedCount) {
    throw new KmsError('BAD_REQUEST', `custodians: ${value.length} keys for ${expectedCount} shares (one key per share, in share order)`);
  }
  const seen = new Map<string, number>();
  return value.map((item, i) => {
    const key = parseCustodianKey(item, `custodians[${i}]`);
    const first = seen.get(key.thumbprint);
    if (first !== undefined) throw new KmsError('BAD_REQUEST', `custodians[${i}] is the same key as custodians[${first}]`);
    seen.set(key.thumbprint, i);
    return key;
  });
}

function parseCustodianKey(value: unknown, label: string): CustodianKey {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KmsError('BAD_REQUEST', `${label} must be a JWK object`);
  const jwk = value as Record<string, unknown>;
  // Checked first: a private key sent by mistake must be named as such, whatever else is wrong.
  if (PRIVATE_MEMBERS.some((member) => member in jwk)) {
    throw new KmsError('BAD_REQUEST', `${label} holds private key material: send the public key only (never the "d" member)`);
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') throw new KmsError('BAD_REQUEST', `${label} must be an EC P-256 key (kty "EC", crv "P-256")`);
  if (jwk.alg !== undefined && jwk.alg !== SHARE_ALG) throw new KmsError('BAD_REQUEST', `${label}: alg must be "${SHARE_ALG}" or absent`);
  if (jwk.use !== undefined && jwk.use !== 'enc') throw new KmsError('BAD_REQUEST', `${label}: use must be "enc" or absent`);
  for (const c of ['x', 'y'] as const) {
    const coordinate = jwk[c];
    // 43 characters of base64url are 32 bytes; the round trip refuses non-canonical trailing bits.
    if (typeof coordinate !== 'string' || !COORDINATE.test(coordinate) || Buffer.from(coordinate, 'base64url').toString('base64url') !== coordinate) {
      throw new KmsError('BAD_REQUEST', `${label}: ${c} must be a base64url P-256 coordinate (32 bytes)`);
    }
  }
  const normalized = { kty: 'EC', crv: 'P-256', x: jwk.x as string, y: jwk.y as string } as const;
  try {
    createPublicKey({ key: normalized, format: 'jwk' }); // refuses a point not on the curve
  } catch {
    throw new KmsError('BAD_REQUEST', `${label} is not a point on the P-256 curve`);
  }
  return { ...normalized, thumbprint: jwkThumbprint(normalized) };
}

/**
 * RFC 7638 thumbprint (SHA-256) of an EC key: what jose's calculateJwkThumbprint computes, here
 * synchronously so that keys can be checked where a request is parsed.
 */
export function jwkThumbprint(jwk: { readonly crv: string; readonly x: string; readonly y: string }): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical, 'utf8').digest('base64url');
}

/** Where the custodian keys file comes from, named in every error about it. */
export const CUSTODIAN_KEYS_VARIABLE = 'KMS_CUSTODIAN_KEYS_FILE';
const CUSTODIAN_KEYS_FORM = "a JSON array of the custodians' public JWKs, one per share (KMS_SHARES), in share order";

/**
 * The custodian keys of KMS_CUSTODIAN_KEYS_FILE (a JSON array, in share order), exactly
 * `expectedCount` of them when given. Throws KmsError('CONFIG') naming the variable and the file,
 * and what the file must hold; never quoting it.
 */
export async function readCustodianKeysFile(path: string, expectedCount?: number): Promise<CustodianKey[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new KmsError(
      'CONFIG',
      `${CUSTODIAN_KEYS_VARIABLE} names a file that cannot be read: ${path} (${code}); point it at ${CUSTODIAN_KEYS_FORM}, or unset it`,
      {
        cause: error,
      },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the text.
    throw new KmsError('CONFIG', `${CUSTODIAN_KEYS_VARIABLE} names a file that is not JSON: ${path}; it must hold ${CUSTODIAN_KEYS_FORM}`);
  }
  try {
    return parseCustodianKeys(json, expectedCount);
  } catch (error) {
    if (error instanceof KmsError) {
      throw new KmsError('CONFIG', `${CUSTODIAN_KEYS_VARIABLE} names a file of keys that cannot be used: ${path}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * The protected header's `cty` of a recovery challenge (shared/custody/recovery-challenge.ts). A
 * share's JWE has none: each opener refuses the other's, so a custodian's tool never takes a share
 * for a challenge, or the reverse.
 */
export const CHALLENGE_CTY = 'tee-kms-recovery-challenge';

/** Encrypts a share's base64 text (or, with `cty`, a recovery challenge) to a custodian or the recovery key: a compact JWE. */
export async function sealShare(content: string, custodian: CustodianKey, cty?: typeof CHALLENGE_CTY): Promise<string> {
  const publicKey = await importJWK({ kty: custodian.kty, crv: custodian.crv, x: custodian.x, y: custodian.y }, SHARE_ALG);
  return new CompactEncrypt(new TextEncoder().encode(content))
    .setProtectedHeader({ alg: SHARE_ALG, enc: SHARE_ENC, kid: custodian.thumbprint, ...(cty === undefined ? {} : { cty }) })
    .encrypt(publicKey);
}

/**
 * Opens a share's JWE with the recipient's private key and returns its text. Only ECDH-ES+A256KW
 * with A256GCM is accepted, and no recovery challenge. Any failure is one KmsError('BAD_REQUEST'),
 * without jose's detail.
 */
export async function openShare(jwe: string, privateKey: CryptoKey | KeyObject): Promise<string> {
  return openJwe(jwe, privateKey, undefined, 'the share could not be decrypted with this key (not a share encrypted to it, or altered)');
}

/** Opens a recovery challenge's JWE (its `cty` CHALLENGE_CTY) with the custodian's private key, as openShare does a share. */
export async function openChallenge(jwe: string, privateKey: CryptoKey | KeyObject): Promise<string> {
  return openJwe(jwe, privateKey, CHALLENGE_CTY, 'the recovery challenge could not be decrypted with this key (not one encrypted to it, or altered)');
}

async function openJwe(jwe: string, privateKey: CryptoKey | KeyObject, cty: string | undefined, message: string): Promise<string> {
  const failed = () => new KmsError('BAD_REQUEST', message);
  if (typeof jwe !== 'string' || jwe.length > MAX_JWE_LENGTH || !isCompactJwe(jwe)) throw failed();
  try {
    const { plaintext, protectedHeader } = await compactDecrypt(jwe, privateKey, {
      keyManagementAlgorithms: [SHARE_ALG],
      contentEncryptionAlgorithms: [SHARE_ENC],
    });
    if (protectedHeader.cty !== cty) throw failed();
    return new TextDecoder('utf-8', { fatal: true }).decode(plaintext);
  } catch {
    throw failed();
  }
}

/** Five base64url segments separated by dots (the protected header never empty): a plaintext share, base64, is never one. */
export function isCompactJwe(text: string): boolean {
  return COMPACT_JWE.test(text);
}

/** A thumbprint as keys are named in JWE headers (SHA-256, base64url); anything else is not worth printing. */
const KID = /^[A-Za-z0-9_-]{43}$/;

/** The `kid` of a compact JWE's protected header: the thumbprint of the key it is encrypted to, if it names one. */
export function jweKid(jwe: string): string | undefined {
  if (!isCompactJwe(jwe)) return undefined;
  try {
    const { kid } = decodeProtectedHeader(jwe);
    return typeof kid === 'string' && KID.test(kid) ? kid : undefined;
  } catch {
    return undefined;
  }
}
