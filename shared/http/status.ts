import type { KmsErrorCode } from '../errors.js';

/** The one place where error codes become HTTP statuses. */
export const STATUS_BY_CODE: Readonly<Record<KmsErrorCode, number>> = {
  BAD_REQUEST: 400,
  INVALID_NAME: 400,
  UNAUTHORIZED: 401,
  SERVICE_KEY_CHANGED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  // Stored data failed authentication: the server's state is bad, not the request.
  INTEGRITY: 500,
  CONFIG: 500,
  // Storage that ignores conditional writes is a deployment error; retrying cannot help.
  STORAGE_UNSAFE: 500,
  INTERNAL: 500,
  SEALED: 503,
  ROOT_KEY_UNAVAILABLE: 503,
  STORAGE_UNAVAILABLE: 503,
  // Attestation evidence or collateral could not be had just now (the agent, QGS or PCCS): transient.
  ATTESTATION_UNAVAILABLE: 503,
  BUSY: 503,
};
