/**
 * The client's one error type. `code` is the server's error code when the server answered, or a
 * transport code when it did not (`status` is then 0). Messages never hold a token or a key.
 */
export type ServerErrorCode =
  | 'BAD_REQUEST'
  | 'INVALID_NAME'
  | 'UNAUTHORIZED'
  | 'SERVICE_KEY_CHANGED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'METHOD_NOT_ALLOWED'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'SEALED'
  | 'ROOT_KEY_UNAVAILABLE'
  | 'STORAGE_UNAVAILABLE'
  | 'STORAGE_UNSAFE'
  | 'ATTESTATION_UNAVAILABLE'
  | 'BUSY'
  | 'INTEGRITY'
  | 'CONFIG'
  | 'INTERNAL';

export type ClientErrorCode =
  | 'UNREACHABLE' // no connection (refused, no route, name not found, reset before an answer)
  | 'TLS' // the certificate is not trusted or does not match the pin
  | 'TIMEOUT' // no complete answer within timeoutMs
  | 'ATTESTATION' // the service's evidence is refused by the policy, or does not bind its key
  | 'PROTOCOL' // an answer this client cannot trust or read (unsealed in attested mode, too large, not JSON)
  | 'CONFIG' // the client's own options are wrong
  | 'INVALID_ARGUMENT'; // a method was called with a missing or malformed argument

export type KmsErrorCode = ServerErrorCode | ClientErrorCode;

export class KmsError extends Error {
  override readonly name = 'KmsError';
  readonly code: KmsErrorCode;
  /** The HTTP status; 0 when the server gave no answer this client accepted as one. */
  readonly status: number;
  /** Seconds the server asked to wait (`Retry-After`), when it did. */
  readonly retryAfter: number | undefined;
  /** The error's other members as the server answered them (e.g. `rootKeyId`, `allow`). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: KmsErrorCode, message: string, options: { status?: number; retryAfter?: number; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? 0;
    this.retryAfter = options.retryAfter;
    this.details = options.details ?? {};
  }
}

export function isKmsError(error: unknown, code?: KmsErrorCode): error is KmsError {
  return error instanceof KmsError && (code === undefined || error.code === code);
}
