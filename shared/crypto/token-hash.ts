import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { LaneScheduler } from '../lanes.js';

/** A token verifier as stored: scrypt with a random salt. The token itself is never stored. */
export interface TokenVerifier {
  readonly alg: 'scrypt';
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: string; // base64url
  readonly hash: string; // base64url
}

// N=2^14, r=8: ~16 MiB and tens of ms per hash; per-request cost is avoided by a verified cache.
const PARAMS = { N: 16384, r: 8, p: 1 } as const;
const HASH_BYTES = 32;
type ScryptParams = Pick<TokenVerifier, 'N' | 'r' | 'p'>;

/**
 * The bytes OpenSSL allocates for one scrypt run, which it checks against `maxmem` (and refuses,
 * so that Node throws, past it): B, 128·r·p, then V, X and T together, 128·r·(N+2).
 */
export function scryptMemory({ N, r, p }: ScryptParams): number {
  return 128 * r * p + 128 * r * (N + 2);
}

/** The `maxmem` of every run: twice what ours need, and what any acceptable parameters need at most. */
export const SCRYPT_MAXMEM = 2 * scryptMemory(PARAMS);
/** N and r up to twice ours. N stays below 2^16, where OpenSSL refuses r = 1 (it wants N < 2^(16·r)). */
const MAX_N = 2 * PARAMS.N;
const MAX_R = 2 * PARAMS.r;

/**
 * A stored verifier comes from untrusted storage: its parameters must be ones scrypt runs within
 * SCRYPT_MAXMEM (N a power of two, each parameter bounded, OpenSSL's own memory need at most
 * SCRYPT_MAXMEM), or a forged record could make a function allocate gigabytes, or make scrypt
 * throw (an internal error), for one request. Refused parameters are a failed check, never run.
 */
export function acceptableParams({ N, r, p }: ScryptParams): boolean {
  const powerOfTwo = Number.isInteger(N) && N >= 2 && N <= MAX_N && (N & (N - 1)) === 0;
  return powerOfTwo && Number.isInteger(r) && r >= 1 && r <= MAX_R && p === 1 && scryptMemory({ N, r, p }) <= SCRYPT_MAXMEM;
}

/** Hashes a new token (enrollment). */
export async function hashToken(token: string): Promise<TokenVerifier> {
  const salt = randomBytes(16);
  const hash = await scryptAsync('enroll', undefined, token, salt, PARAMS.N, PARAMS.r, PARAMS.p);
  return { alg: 'scrypt', ...PARAMS, salt: salt.toString('base64url'), hash: hash.toString('base64url') };
}

/**
 * Whose token is checked: a user whose record was read (their checks queue under their name, see
 * scryptScheduler), or nobody, for the dummy check of a user that does not exist.
 */
export type TokenCheck = { readonly lane: 'known'; readonly user: string } | { readonly lane: 'unknown' };

/** Constant-time comparison of the token's hash with the stored one. */
export async function verifyToken(token: string, verifier: TokenVerifier, check: TokenCheck): Promise<boolean> {
  if (verifier.alg !== 'scrypt' || !acceptableParams(verifier)) return false;
  const expected = Buffer.from(verifier.hash, 'base64url');
  if (expected.length !== HASH_BYTES) return false;
  const key = check.lane === 'known' ? check.user : undefined;
  const actual = await scryptAsync(check.lane, key, token, Buffer.from(verifier.salt, 'base64url'), verifier.N, verifier.r, verifier.p);
  return timingSafeEqual(actual, expected);
}

function scryptAsync(lane: ScryptLane, key: string | undefined, token: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return scryptScheduler.run(
    lane,
    () =>
      new Promise((resolve, reject) => {
        scrypt(token, salt, HASH_BYTES, { N, r, p, maxmem: SCRYPT_MAXMEM }, (error, derived) => (error ? reject(error) : resolve(derived)));
      }),
    key,
  );
}

/** Who asks for a scrypt run: a user whose record exists, a user that does not, or an enrollment. */
export type ScryptLane = 'known' | 'unknown' | 'enroll';
/** Served in this order, round-robin. */
export const SCRYPT_LANES: readonly ScryptLane[] = ['known', 'unknown', 'enroll'];

/**
 * scrypt runs on libuv's thread pool (4 threads), which the embedded store's file I/O shares, and
 * anyone can ask for one (an unknown user costs a dummy check, enrolling is open): unbounded, a flood
 * of them queued ahead of every other request's storage work and stalled it for tens of seconds. So
 * at most SCRYPT_RUNNING_MAX run at once, and each lane queues at most SCRYPT_WAITING_MAX.
 *
 * One queue for all let a flood of requests for unknown users (each a dummy check) fill it and shed
 * every real user's first login with BUSY. With a lane each, served round-robin, a full `unknown`
 * lane delays a known user's check by at most one run per other lane, about one scrypt per slot.
 * Under such a flood the answer's latency and status reveal whether a user exists (the dummy check
 * is shed, the real one is not): acceptable, since existence is public already (enrolling an
 * existing name answers 409). Without load the two cost the same.
 *
 * Enrolling is open too, so one `known` lane shared by all let an attacker enroll a user of its own
 * and flood wrong tokens for it until every other user's check was shed. Now the `known` lane
 * queues each user's checks under their name and serves the names in turn: a user's check waits
 * for at most one of each other user waiting, and a name with SCRYPT_WAITING_PER_USER_MAX waiting
 * gets BUSY for its next check while other names still queue. What remains: an attacker who enrolls
 * many users fills the lane with one name per SCRYPT_WAITING_PER_USER_MAX slots (16 names), and
 * whoever knows a user's name can shed that user's checks by flooding wrong tokens for it (a
 * verified client stays cached until its entry expires, KMS_KEY_CACHE_TTL_SECONDS). Rate-limit at
 * the ingress.
 */
export const SCRYPT_RUNNING_MAX = 2;
export const SCRYPT_WAITING_MAX = 64;
/** Concurrent checks of the same credentials share one run, so a real user rarely has two waiting. */
export const SCRYPT_WAITING_PER_USER_MAX = 4;
export const scryptScheduler = new LaneScheduler<ScryptLane>(
  SCRYPT_LANES,
  SCRYPT_RUNNING_MAX,
  SCRYPT_WAITING_MAX,
  'too many token checks in progress; retry shortly',
  SCRYPT_WAITING_PER_USER_MAX,
);

export function isTokenVerifier(value: unknown): value is TokenVerifier {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    v.alg === 'scrypt' &&
    typeof v.N === 'number' &&
    typeof v.r === 'number' &&
    typeof v.p === 'number' &&
    typeof v.salt === 'string' &&
    typeof v.hash === 'string'
  );
}
