import { kbsProblemType } from '../shared/kbs/protocol.js';
import { sealerProblems, type SealStatus } from '../shared/sealer/protocol.js';

/**
 * An error answered as RFC 7807 problem JSON. `detail` is shown to the client and logged nowhere;
 * it never contains a key, share or token.
 */
export class Problem extends Error {
  override readonly name = 'Problem';

  constructor(
    readonly status: number,
    readonly type: string,
    readonly detail: string,
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(detail);
  }

  body(): Record<string, unknown> {
    return { type: this.type, title: TITLES[this.status] ?? 'Error', status: this.status, detail: this.detail, ...this.extensions };
  }
}

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

// KBS errors keep Trustee's types and statuses (kbs/src/error.rs: 401 for attestation and token
// failures, 404 for unknown paths, 403 for policy denial).
export const kbsErrors = {
  attestation: (detail: string) => new Problem(401, kbsProblemType('AttestationError'), detail),
  tokenNotFound: () => new Problem(401, kbsProblemType('TokenNotFound'), 'Attestation Token not found'),
  tokenInvalid: (detail: string) => new Problem(401, kbsProblemType('TokenVerifierError'), `Token Verifier error: ${detail}`),
  invalidPath: (path: string) => new Problem(404, kbsProblemType('InvalidRequestPath'), `Request path ${path} is invalid`),
};

export function sealedProblem(status: SealStatus): Problem {
  if (!status.initialized) {
    return new Problem(503, sealerProblems.uninitialized, 'the sealing service is not initialized: the first rotate initializes it', { sealStatus: status });
  }
  return new Problem(503, sealerProblems.sealed, `the sealing service is sealed: recover the root key with ${status.t} shares (${status.progress} received)`, {
    sealStatus: status,
  });
}
