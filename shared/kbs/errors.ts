import type { KbsProblem } from './protocol.js';

// The KBS client's errors, apart from it: what classifies them (sealer-client/outage.ts) is loaded
// with every function, the client only where a sealing service is configured.

/**
 * The KBS answered with an error status (RFC 7807 problem in `problem` when it sent one).
 * `authenticated`: the answer carried the attested sealing service's signature over it and this
 * request's nonce; otherwise whoever holds the TLS key (or sits on a relay) may have written it.
 */
export class KbsResponseError extends Error {
  override readonly name = 'KbsResponseError';

  constructor(
    readonly status: number,
    readonly problem: KbsProblem | undefined,
    readonly operation: string,
    readonly authenticated = false,
  ) {
    super(`${operation}: the KBS answered ${status}${problem?.detail ? `: ${String(problem.detail).slice(0, 300)}` : ''}`);
  }
}

/** The KBS could not be reached, or could not be authenticated (TLS), or did not answer in time. */
export class KbsTransportError extends Error {
  override readonly name = 'KbsTransportError';

  constructor(
    readonly kind: 'tls' | 'unreachable' | 'timeout',
    readonly code: string,
    readonly url: string,
  ) {
    super(
      kind === 'tls'
        ? `the KBS at ${url} could not be authenticated: its TLS certificate is not trusted by the configured CA (${code}); nothing was sent`
        : kind === 'timeout'
          ? `the KBS at ${url} did not answer in time`
          : `cannot reach the KBS at ${url} (${code})`,
    );
  }
}
