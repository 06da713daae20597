import { KmsError } from '../shared/errors.js';

/**
 * What the sealing service's core and server throw: a domain code, and a detail that is shown to
 * the client and logged nowhere (it never contains a key, share or token). sealer/problems.ts maps
 * each code to its HTTP status and problem type, in one table.
 */
export type SealerErrorCode =
  | 'SEALED' // no root key in memory: recover it with shares
  | 'UNINITIALIZED' // no root key yet: the first rotate makes one
  | 'BAD_SHARE' // a share or set of shares that is malformed or does not rebuild the key
  | 'BAD_REQUEST' // any other malformed request
  | 'CONFLICT' // the state changed meanwhile, or the request contradicts it
  | 'KEY_FROM_SECRET' // mode 1: there are no shares to rotate, verify or recover
  | 'NOT_SEALED' // recovery while a key is live
  | 'NOT_INITIALIZED' // recovery or seal with nothing to recover
  | 'PROOF_INVALID' // an admin call without a valid, fresh, unused proof of possession of the token's TEE key
  | 'FORBIDDEN' // the admin policy does not grant the caller's identity this operation
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'PAYLOAD_TOO_LARGE'
  | 'BUSY' // too much attestation work in progress
  | 'STORAGE_UNAVAILABLE'
  | 'ATTESTATION_UNAVAILABLE' // evidence or collateral cannot be had just now (the attestation agent, a PCCS)
  | 'INTEGRITY' // storage was tampered with: an operator must restore it
  | 'INTERNAL'
  // The KBS protocol's own errors, answered with Trustee's problem types and statuses.
  | 'KBS_ATTESTATION'
  | 'KBS_TOKEN_NOT_FOUND'
  | 'KBS_TOKEN_INVALID'
  | 'KBS_INVALID_PATH';

export class SealerError extends Error {
  override readonly name = 'SealerError';

  constructor(
    readonly code: SealerErrorCode,
    readonly detail: string,
    /** Extra members of the problem JSON (e.g. `sealStatus`). */
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(detail);
  }
}

/** Runs a validator from shared/ and reports its KmsError (a message safe to show) as `code`. */
export function asSealerError<T>(code: SealerErrorCode, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof KmsError) throw new SealerError(code, error.message);
    throw error;
  }
}
