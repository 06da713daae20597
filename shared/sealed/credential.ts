import { createHash, createPublicKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { KmsError } from '../errors.js';
import { validateName, validateToken } from '../names.js';
import { agreeWith, openCompact, protectedHeader, type JweAlgorithm, type Opened, type RecipientAgreement } from './jwe.js';
import type { SealedKeyCaches } from './key-cache.js';
import type { ReplayGuard } from './replay.js';

/** What a sealed credential carries, once opened and checked against its request. */
export interface SealedCredential {
  readonly user: string | undefined;
  readonly token: string;
  /** Its one-time id, which the sealed answer carries back (`kms-jti`), binding the answer to it. */
  readonly jti: string;
  /** The client's public key (a JWK it sent), agreed with already: the answer is sealed to it. */
  readonly responseKey: RecipientAgreement;
}

export type ResponseJwk =
  { readonly kty: 'OKP'; readonly crv: 'X25519'; readonly x: string } | { readonly kty: 'EC'; readonly crv: 'P-256'; readonly x: string; readonly y: string };

/** How far a credential's `iat` may be from this server's clock. */
export const SEALED_CREDENTIAL_SKEW_SECONDS = 60;
/** A compact JWE larger than this is refused unread: a credential is a few hundred bytes. */
const MAX_JWE_LENGTH = 8192;
const KEY_ALGORITHMS: readonly JweAlgorithm[] = ['ECDH-ES+A256KW', 'ECDH-ES'];
/** Stateless between calls (no `stream` option), so one serves every decode. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The root key id a sealed credential is sealed to (its `kid`), read before anything is decrypted. */
export function sealedKeyId(jwe: string): string {
  if (jwe === '' || jwe.length > MAX_JWE_LENGTH || jwe.split('.').length !== 5) throw unreadable();
  let header: Record<string, unknown>;
  try {
    header = protectedHeader(jwe);
  } catch {
    throw unreadable();
  }
  if (typeof header.kid !== 'string' || !KEY_ALGORITHMS.includes(header.alg as JweAlgorithm) || header.enc !== 'A256GCM' || header.zip !== undefined) {
    throw new KmsError('BAD_REQUEST', "a sealed credential must be a compact JWE with alg ECDH-ES+A256KW or ECDH-ES, enc A256GCM, and the service key's kid");
  }
  return header.kid;
}

/**
 * Opens a sealed credential with the service key and checks it belongs to this request: the method
 * and the path and query as sent, the body when the credential names one (`htb`), an `iat` within
 * the allowed skew, and a `jti` not seen before. Every refusal is a 4xx that reveals nothing of
 * the plaintext.
 */
export function openSealedCredential(
  jwe: string,
  serviceKey: KeyObject,
  /** `body`: its bytes as received, undefined when the request has none. */
  request: { readonly method: string; readonly target: string; readonly body?: Buffer | undefined },
  replay: ReplayGuard,
  now = Date.now(),
  /** Keys agreed with already, of `serviceKey` only (none: every agreement made anew). */
  caches?: SealedKeyCaches,
): SealedCredential {
  let opened: Opened;
  try {
    opened = openCompact(jwe, serviceKey, KEY_ALGORITHMS, caches?.requests);
  } catch {
    throw unreadable();
  }
  try {
    return checkCredential(opened, request, replay, now, caches);
  } finally {
    opened.agreed?.key.fill(0);
  }
}

function checkCredential(
  opened: Opened,
  request: { readonly method: string; readonly target: string; readonly body?: Buffer | undefined },
  replay: ReplayGuard,
  now: number,
  caches: SealedKeyCaches | undefined,
): SealedCredential {
  let claims: unknown;
  try {
    claims = JSON.parse(UTF8.decode(opened.plaintext));
  } catch {
    throw malformed('its plaintext must be a JSON object');
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw malformed('its plaintext must be a JSON object');
  const { user, token, htm, htu, htb, iat, jti, responseKey } = claims as Record<string, unknown>;
  if (user !== undefined && typeof user !== 'string') throw malformed('"user" must be a string');
  if (typeof token !== 'string') throw malformed('"token" must be a string');
  if (typeof htm !== 'string' || typeof htu !== 'string') throw malformed('"htm" and "htu" must be strings');
  if (htb !== undefined && (typeof htb !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(htb))) {
    throw malformed('"htb", when given, must be the base64url SHA-256 of the body (43 characters)');
  }
  // A body not bound could be replaced on the way (a rotate's custodians, say): one is taken only bound.
  if (htb === undefined && request.body !== undefined && request.body.length > 0) {
    throw malformed('this request has a body, so "htb" must bind it (the base64url SHA-256 of the body as sent)');
  }
  if (typeof iat !== 'number' || !Number.isSafeInteger(iat)) throw malformed('"iat" must be an integer (unix seconds)');
  if (typeof jti !== 'string' || !/^[A-Za-z0-9_-]{16,128}$/.test(jti)) throw malformed('"jti" must be 16 to 128 base64url characters');
  const jwk = responseJwk(responseKey);
  // The names and the token are checked here, before the one-time id is spent: a credential
  // refused as malformed changes nothing, and the same id may come again, well formed.
  if (user !== undefined) validateName('user', user);
  validateToken(token);
  if (htm !== request.method || htu !== request.target) {
    throw new KmsError('UNAUTHORIZED', 'this sealed credential was made for another request (its htm and htu must be this method, path and query)');
  }
  if (htb !== undefined && !sameDigest(htb, request.body)) {
    throw new KmsError('UNAUTHORIZED', 'this sealed credential was made for another body (its htb must be the SHA-256 of the body as sent)');
  }
  if (Math.abs(now / 1000 - iat) > SEALED_CREDENTIAL_SKEW_SECONDS) {
    throw new KmsError('UNAUTHORIZED', `this sealed credential is stale: its iat must be within ${SEALED_CREDENTIAL_SKEW_SECONDS} s of the server's clock`);
  }
  // The key agreement after the cheap checks, still before the one-time id is spent and before
  // the route runs: a response key no answer can be sealed to is refused first.
  const answer = agreeWithResponseKey(jwk, opened.alg, caches?.answers);
  try {
    replay.admit(jti, (iat + SEALED_CREDENTIAL_SKEW_SECONDS) * 1000 + 1000, now);
  } catch (error) {
    answer.agreement.key.fill(0);
    throw error;
  }
  // Keys are kept only for a credential accepted: one replayed, or stale, keeps no key in memory
  // and renews none, however often an ingress sends it.
  if (opened.agreed !== undefined) caches?.requests.set(opened.agreed.cacheKey, { key: opened.agreed.key });
  if (answer.cacheKey !== undefined) caches?.answers.set(answer.cacheKey, answer.agreement);
  return { user, token, jti, responseKey: answer.agreement };
}

function responseJwk(value: unknown): ResponseJwk {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { kty, crv, x, y, d } = value as Record<string, unknown>;
    const b64u = (v: unknown, bytes: number) => typeof v === 'string' && /^[A-Za-z0-9_-]+$/.test(v) && Buffer.from(v, 'base64url').length === bytes;
    if (d === undefined && kty === 'OKP' && crv === 'X25519' && b64u(x, 32)) return { kty, crv, x: x as string };
    if (d === undefined && kty === 'EC' && crv === 'P-256' && b64u(x, 32) && b64u(y, 32)) return { kty, crv, x: x as string, y: y as string };
  }
  throw malformed('"responseKey" must be a public JWK: OKP X25519 or EC P-256');
}

/**
 * Agreed with now (the answer's key agreement, made once), so that a key the answer could not be
 * sealed to is refused before the route runs (and changes anything): not a point on its curve, or
 * an X25519 point of small order, with which every key agreement fails (RFC 7748, section 6.1).
 * The answer is sealed with the credential's algorithm: a client that sealed with ECDH-ES opens
 * ECDH-ES, and one that wrapped its content key gets its answer's wrapped too.
 */
function agreeWithResponseKey(
  jwk: ResponseJwk,
  alg: JweAlgorithm,
  answers: SealedKeyCaches['answers'] | undefined,
): { readonly agreement: RecipientAgreement; /** Set when the agreement is new: where to keep it. */ readonly cacheKey?: string } {
  // A response key reused by its client gets answers under one ephemeral key of ours while cached.
  const cacheKey = `${alg}.${jwk.kty}.${jwk.x}.${'y' in jwk ? jwk.y : ''}`;
  const cached = answers?.get(cacheKey);
  if (cached !== undefined) return { agreement: cached };
  try {
    return { agreement: agreeWith(createPublicKey({ key: { ...jwk }, format: 'jwk' }), alg), ...(answers === undefined ? {} : { cacheKey }) };
  } catch {
    throw malformed('"responseKey" is not a valid public key');
  }
}

/** Whether `htb` is the SHA-256 of `body` (no body: of no bytes). */
function sameDigest(htb: string, body: Buffer | undefined): boolean {
  const digest = createHash('sha256')
    .update(body ?? Buffer.alloc(0))
    .digest();
  return timingSafeEqual(digest, Buffer.from(htb, 'base64url'));
}

function unreadable(): KmsError {
  return new KmsError('BAD_REQUEST', 'the sealed credential could not be opened: it must be a compact JWE to the service key that GET /attestation answers');
}

function malformed(why: string): KmsError {
  return new KmsError('BAD_REQUEST', `malformed sealed credential: ${why}`);
}
