import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { KmsError } from '../errors.js';

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
const MAX_N = 1 << 20; // bounds the work a tampered record could make us do

export async function hashToken(token: string): Promise<TokenVerifier> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(token, salt, PARAMS.N, PARAMS.r, PARAMS.p);
  return { alg: 'scrypt', ...PARAMS, salt: salt.toString('base64url'), hash: hash.toString('base64url') };
}

/** Constant-time comparison of the token's hash with the stored one. */
export async function verifyToken(token: string, verifier: TokenVerifier): Promise<boolean> {
  if (verifier.alg !== 'scrypt' || !(verifier.N > 1 && verifier.N <= MAX_N) || verifier.r < 1 || verifier.r > 32 || verifier.p !== 1) {
    return false;
  }
  const expected = Buffer.from(verifier.hash, 'base64url');
  if (expected.length !== HASH_BYTES) return false;
  const actual = await scryptAsync(token, Buffer.from(verifier.salt, 'base64url'), verifier.N, verifier.r, verifier.p);
  return timingSafeEqual(actual, expected);
}

function scryptAsync(token: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return limited(
    () =>
      new Promise((resolve, reject) => {
        scrypt(token, salt, HASH_BYTES, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) => (error ? reject(error) : resolve(key)));
      }),
  );
}

/**
 * At most RUNNING_MAX scrypt runs at once, and a bounded queue. They run on libuv's thread pool (4
 * threads), which the embedded store's file I/O shares, and anyone can ask for one (an unknown user
 * costs a dummy check, enrolling is open): unbounded, a flood of them queued ahead of every other
 * request's storage work and stalled it for tens of seconds. Past the queue: 503 BUSY at once.
 */
export const SCRYPT_RUNNING_MAX = 2;
export const SCRYPT_WAITING_MAX = 64;
let running = 0;
const waiting: (() => void)[] = [];

async function limited<T>(work: () => Promise<T>): Promise<T> {
  if (running < SCRYPT_RUNNING_MAX) running++;
  else if (waiting.length < SCRYPT_WAITING_MAX) await new Promise<void>((resolve) => waiting.push(resolve)); // a finishing run hands over its slot
  else throw new KmsError('BUSY', 'too many token checks in progress; retry shortly');
  try {
    return await work();
  } finally {
    const next = waiting.shift();
    if (next !== undefined) next();
    else running--;
  }
}

export function isTokenVerifier(value: unknown): value is TokenVerifier {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return v.alg === 'scrypt' && typeof v.N === 'number' && typeof v.r === 'number' && typeof v.p === 'number' && typeof v.salt === 'string' && typeof v.hash === 'string';
}
