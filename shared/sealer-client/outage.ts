import { KmsError } from '../errors.js';
import { KbsResponseError } from '../kbs/errors.js';

/**
 * Whether `error` (from SealerClient) says only that no attested sealing service answered: it was
 * unreachable, too slow, refused by TLS, could not prove itself, sent an answer without its attested
 * signature, said (signed) that it fails for now (5xx other than sealed), or said (signed) that it
 * is sealed because it is starting (isStartingSeal); or attestation could not be done just now (this
 * function's agent or a PCCS failed). Whoever can reach the network or the host or holds the TLS
 * key can cause those; whoever can restart the service, the starting seal. Anything else is the
 * attested service's own word: sealed by an operator, rotated or uninitialized, this TEE refused
 * (401, 403), no such resource, storage tampered with.
 */
export function isSealerOutage(error: unknown): boolean {
  if (isStartingSeal(error)) return true;
  // This function's own agent or a PCCS failed: nothing was asked of the service, let alone answered.
  if (error instanceof KmsError && error.code === 'ATTESTATION_UNAVAILABLE') return true;
  if (!(error instanceof KmsError) || error.code !== 'ROOT_KEY_UNAVAILABLE') return false;
  const cause = error.cause;
  return !(cause instanceof KbsResponseError && cause.authenticated && cause.status < 500);
}

/**
 * A SEALED error whose signed seal status says the service has held no key since it started
 * (`sealedReason: 'starting'`, a restarted replica waiting for a peer or auto-unseal): it knows no
 * more than a stopped one. A status without the field (an older service) is a seal, as before.
 */
export function isStartingSeal(error: unknown): boolean {
  return error instanceof KmsError && error.code === 'SEALED' && error.details?.sealedReason === 'starting';
}
