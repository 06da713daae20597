import { KmsError } from '../shared/errors.js';
import { kbsProblemType } from '../shared/kbs/protocol.js';
import { sealerProblems, type SealStatus } from '../shared/sealer-client/protocol.js';
import { SealerError, type SealerErrorCode } from './errors.js';

/** An RFC 7807 problem: what a SealerError becomes on the wire. */
export interface Problem {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/**
 * The one place where the sealing service's errors get their HTTP status and problem type. KBS
 * errors keep Trustee's types and statuses (kbs/src/error.rs: 401 for attestation and token
 * failures, 404 for unknown paths).
 */
const PROBLEMS: Record<SealerErrorCode, { readonly status: number; readonly type: string }> = {
  SEALED: { status: 503, type: sealerProblems.sealed },
  UNINITIALIZED: { status: 503, type: sealerProblems.uninitialized },
  BAD_SHARE: { status: 400, type: sealerProblems.badShare },
  BAD_REQUEST: { status: 400, type: sealerProblems.badRequest },
  CONFLICT: { status: 409, type: sealerProblems.conflict },
  KEY_FROM_SECRET: { status: 409, type: sealerProblems.keyFromSecret },
  NOT_SEALED: { status: 409, type: sealerProblems.notSealed },
  NOT_INITIALIZED: { status: 409, type: sealerProblems.notInitialized },
  PROOF_INVALID: { status: 401, type: sealerProblems.proofInvalid },
  FORBIDDEN: { status: 403, type: sealerProblems.forbidden },
  NOT_FOUND: { status: 404, type: sealerProblems.notFound },
  METHOD_NOT_ALLOWED: { status: 405, type: sealerProblems.methodNotAllowed },
  PAYLOAD_TOO_LARGE: { status: 413, type: sealerProblems.payloadTooLarge },
  BUSY: { status: 503, type: sealerProblems.busy },
  STORAGE_UNAVAILABLE: { status: 503, type: sealerProblems.storageUnavailable },
  ATTESTATION_UNAVAILABLE: { status: 503, type: sealerProblems.attestationUnavailable },
  INTEGRITY: { status: 500, type: sealerProblems.integrity },
  INTERNAL: { status: 500, type: sealerProblems.internal },
  KBS_ATTESTATION: { status: 401, type: kbsProblemType('AttestationError') },
  KBS_TOKEN_NOT_FOUND: { status: 401, type: kbsProblemType('TokenNotFound') },
  KBS_TOKEN_INVALID: { status: 401, type: kbsProblemType('TokenVerifierError') },
  KBS_INVALID_PATH: { status: 404, type: kbsProblemType('InvalidRequestPath') },
};

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/**
 * The problem to answer for any error. Storage, attestation-agent and PCCS failures below the core
 * are 503s; anything that is not a SealerError is a bug, answered as a bare 500 (`unexpected`
 * reports it, without detail).
 */
export function problemOf(error: unknown, unexpected: (label: string) => void): Problem {
  let sealerError: SealerError;
  if (error instanceof SealerError) sealerError = error;
  else if (error instanceof KmsError && error.code === 'STORAGE_UNAVAILABLE') {
    sealerError = new SealerError('STORAGE_UNAVAILABLE', 'the sealing service cannot reach its storage; nothing was changed');
  } else if (error instanceof KmsError && error.code === 'ATTESTATION_UNAVAILABLE') {
    // Its message names the agent or the PCCS and what failed; their own text stays in `cause`.
    sealerError = new SealerError('ATTESTATION_UNAVAILABLE', `attestation is unavailable just now: ${error.message}`);
  } else if (error instanceof KmsError && (error.code === 'BUSY' || error.code === 'BAD_REQUEST')) {
    // Shed load (a bounded queue of quotes) and a caller gone while it waited.
    sealerError = new SealerError(error.code, error.message); // KmsError messages never hold a secret
  } else if (error instanceof KmsError && error.code === 'INTEGRITY') {
    unexpected(`${error.code}: ${error.message}`);
    sealerError = new SealerError('INTEGRITY', error.message); // KmsError messages never hold a secret
  } else {
    unexpected(error instanceof KmsError ? `${error.code}: ${error.message}` : error instanceof Error ? error.name : 'unknown');
    sealerError = new SealerError('INTERNAL', 'internal error');
  }
  const { status, type } = PROBLEMS[sealerError.code];
  return { status, body: { type, title: TITLES[status] ?? 'Error', status, detail: sealerError.detail, ...sealerError.extensions } };
}

export const kbsError = {
  attestation: (detail: string) => new SealerError('KBS_ATTESTATION', detail),
  tokenNotFound: () => new SealerError('KBS_TOKEN_NOT_FOUND', 'Attestation Token not found'),
  tokenInvalid: (detail: string) => new SealerError('KBS_TOKEN_INVALID', `Token Verifier error: ${detail}`),
  invalidPath: (path: string) => new SealerError('KBS_INVALID_PATH', `Request path ${path} is invalid`),
};

export function sealedError(status: SealStatus): SealerError {
  if (!status.initialized) {
    return new SealerError('UNINITIALIZED', 'the sealing service is not initialized: the first rotate initializes it', { sealStatus: status });
  }
  const why =
    status.sealedReason === 'starting'
      ? 'it started without the root key: a peer replica or auto-unseal may hand it over, else recover it'
      : 'recover the root key';
  return new SealerError('SEALED', `the sealing service is sealed: ${why} with ${status.t} shares (${status.progress} received)`, {
    sealStatus: status,
  });
}
