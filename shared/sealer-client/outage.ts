import { KmsError } from '../errors.js';
import { KbsResponseError } from '../kbs/errors.js';

/**
 * Whether `error` (from SealerClient) says only that no attested sealing service answered: it was
 * unreachable, too slow, refused by TLS, could not prove itself, sent an answer without its attested
 * signature, or said (signed) that it fails for now (5xx other than sealed). Whoever can reach the
 * network or holds the TLS key can cause any of these. Anything else is the attested service's own
 * word: sealed or uninitialized, this TEE refused (401, 403), no such resource, storage tampered with.
 */
export function isSealerOutage(error: unknown): boolean {
  if (!(error instanceof KmsError) || error.code !== 'ROOT_KEY_UNAVAILABLE') return false;
  const cause = error.cause;
  return !(cause instanceof KbsResponseError && cause.authenticated && cause.status < 500);
}
