/**
 * The one error type of tee-kms. Its `code` says what went wrong; `STATUS_BY_CODE` in
 * shared/http/status.ts maps each code to an HTTP status in one place. Messages are shown to
 * clients: they must never contain a secret (key material, token, share) or a raw exception text
 * from a dependency.
 */
export type KmsErrorCode =
  | 'BAD_REQUEST' // malformed or missing input
  | 'INVALID_NAME' // a user or key name outside the safe charset/length
  | 'UNAUTHORIZED' // unknown user or wrong token (one answer for both)
  | 'SERVICE_KEY_CHANGED' // a sealed credential to a service key of a retired root key: attest again
  | 'FORBIDDEN' // authenticated, but not allowed (e.g. attestation refused by policy)
  | 'NOT_FOUND' // no such key
  | 'CONFLICT' // a name that already exists; nothing was overwritten
  | 'METHOD_NOT_ALLOWED'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE' // a body encoding the function does not take (compressed, under functions-framework)
  | 'SEALED' // the root key is not available yet: recover it from shares
  | 'ROOT_KEY_UNAVAILABLE' // no root key source configured, or it cannot be reached
  | 'STORAGE_UNAVAILABLE' // the object store cannot be reached or refused us
  | 'STORAGE_UNSAFE' // the object store ignores conditional writes: the deployment is wrong, not the request
  | 'ATTESTATION_UNAVAILABLE' // the attestation agent, or the collateral service (PCCS), cannot be reached or failed: retry
  | 'BUSY' // too much expensive work (token checks) queued already: retry shortly
  | 'INTEGRITY' // stored data failed authentication: tampering or corruption
  | 'CONFIG' // the service is misconfigured (raised at start, never for a client's input)
  | 'INTERNAL';

export class KmsError extends Error {
  override readonly name = 'KmsError';
  readonly code: KmsErrorCode;
  /** Extra fields safe to show to clients (e.g. seal progress). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: KmsErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
  }
}

export function isKmsError(error: unknown, code?: KmsErrorCode): error is KmsError {
  return error instanceof KmsError && (code === undefined || error.code === code);
}
