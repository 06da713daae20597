import { KmsError } from '../errors.js';

/**
 * The sealing service's own API (beside the KBS endpoints), shared by the sealer and SealerClient.
 *
 * Every admin route needs the caller's KBS attestation token as `Authorization: Bearer <token>`,
 * except seal status, which shows nothing secret.
 */
export const SEALER_API_PREFIX = '/tee-kms/v1';
export const sealerPaths = {
  sealStatus: `${SEALER_API_PREFIX}/seal-status`, // GET
  rootKey: `${SEALER_API_PREFIX}/root-key`, // POST {t, n, expectedCurrentId, expectedPendingId}: a new key, its shares
  verify: `${SEALER_API_PREFIX}/root-key/verify`, // POST {shares}
  recoveryShares: `${SEALER_API_PREFIX}/recovery/shares`, // POST {index, content}
  recovery: `${SEALER_API_PREFIX}/recovery`, // DELETE: reset progress
  seal: `${SEALER_API_PREFIX}/seal`, // POST: drop the key from memory (mode 2 only)
  attestation: `${SEALER_API_PREFIX}/attestation`, // GET ?nonce=: the service's signing key and evidence binding it
  recoveryKey: `${SEALER_API_PREFIX}/recovery/key`, // GET ?nonce=: the recovery key and evidence binding it
  peerRootKey: `${SEALER_API_PREFIX}/peer/root-key`, // GET: the root key as a JWE to the caller's TEE key (role sealer-peer)
} as const;

/** Headers of signed answers (docs/sealer-protocol.md). */
export const REQUEST_NONCE_HEADER = 'kms-request-nonce';
export const ANSWER_SIGNATURE_HEADER = 'kms-sealer-signature';

/** GET /tee-kms/v1/attestation: the sealing service's signing key, and evidence binding it to the caller's nonce. */
export interface SealerAttestation {
  readonly key: { readonly kty: 'EC'; readonly crv: 'P-256'; readonly alg: 'ES256'; readonly x: string; readonly y: string };
  readonly tee: string;
  readonly evidence: unknown;
}

/** GET /tee-kms/v1/recovery/key (and GET /rootKey/recover): the key shares travel encrypted to. */
export interface RecoveryKeyAnswer {
  readonly recoveryKey: { readonly kty: 'EC'; readonly crv: 'P-256'; readonly alg: 'ECDH-ES+A256KW'; readonly x: string; readonly y: string };
  readonly tee: string;
  readonly evidence: unknown;
  /**
   * With pinned custodians: each pinned custodian's recovery challenge, a compact JWE to its key, by
   * its key's RFC 7638 thumbprint; a share recovers the service only sealed with it (docs/custodians.md).
   */
  readonly challenges?: Readonly<Record<string, string>>;
}

/** The KBS resource holding the raw 32-byte root key (`<repository>/<type>/<tag>`). */
export const ROOT_KEY_RESOURCE = 'tee-kms/root-key/current';

/** Like Vault's sys/seal-status; never secret (rootKeyId is an HMAC-derived id). */
export interface SealStatus {
  readonly sealed: boolean;
  readonly initialized: boolean;
  /** Threshold and share count of the current root key's shares (0 when it came from a secret). */
  readonly t: number;
  readonly n: number;
  /** Recovery shares received so far (0 when not recovering). */
  readonly progress: number;
  /** The current root key's id, null while uninitialized. */
  readonly rootKeyId: string | null;
  /** A rotation issued new shares that are not yet verified: the current key and its shares stay in use. */
  readonly verificationPending: boolean;
  /** The id of that rotation's new root key (current once its shares are verified), or null. */
  readonly pendingRootKeyId: string | null;
  /** Why the service refuses to initialize or recover until storage is restored, or null. */
  readonly integrityAlarm: string | null;
  /** 'secret': mode 1, the key comes from a configured secret; 'shares': mode 2. */
  readonly source: 'secret' | 'shares';
  /** Why it is sealed, null while it is not; absent from sealing services that predate it (read as a seal). */
  readonly sealedReason?: SealedReason | null;
}

/**
 * - `starting`: it has held no key since it started, and a peer replica or auto-unseal may still
 *   hand it one. It knows no more than a stopped service: functions ride it out in grace.
 * - `restarted`: it has held no key since it started, and only shares can unseal it (no peers, or
 *   none holds the key, and no auto-unseal under way).
 * - `operator`: sealed by `seal`; only shares unseal it.
 * - `rotated`: a peer made another key current; it dropped the one it held, and waits for a peer.
 * - `uninitialized`: there is no root key yet.
 */
export type SealedReason = 'starting' | 'restarted' | 'operator' | 'rotated' | 'uninitialized';

export interface RecoveryProgress {
  readonly sealed: boolean;
  readonly progress: number;
  readonly t: number;
  /** Set once the key is recovered. */
  readonly rootKeyId?: string;
}

export interface Share {
  readonly index: number;
  readonly content: string;
}

/**
 * A rotation (or the initialization). It carries no key material: the sealing service makes the
 * new root key itself and answers its shares, so no caller can choose a root key.
 */
export interface InstallRootKeyRequest {
  readonly t: number;
  readonly n: number;
  /** The root key id the caller rotated from; null to initialize an uninitialized sealer. */
  readonly expectedCurrentId: string | null;
  /** The pending root key id the caller saw (null: none), so a rotation never silently replaces another's. */
  readonly expectedPendingId: string | null;
  /** Public JWKs, one per share in share order, that the shares are encrypted to; absent: those stored with the current key. */
  readonly custodians?: readonly unknown[];
  /** Naming custodians other than the stored ones: the threshold of the current key's shares. */
  readonly currentShares?: readonly Share[];
}

export interface InstallRootKeyResult {
  /** The new key's id: current at once on initialization, else pending until its shares are verified. */
  readonly rootKeyId: string;
  readonly pending: boolean;
  /** Its n Shamir shares, `index` = the share's x coordinate. */
  readonly shares: Share[];
}

export interface VerifyResult {
  /** The current root key id after verification. */
  readonly rootKeyId: string;
  readonly verified: true;
  /** Whether these were a rotation's new shares, whose key is now current. */
  readonly promoted: boolean;
  /** When promoted: the root key it replaced (retired; still reachable through its stored link). */
  readonly previousRootKeyId?: string;
}

/** Problem `type`s of the sealer's own errors (RFC 7807; KBS errors use Trustee's types). */
export const sealerProblems = {
  sealed: 'urn:tee-kms:sealer:sealed', // 503
  uninitialized: 'urn:tee-kms:sealer:uninitialized', // 503
  badShare: 'urn:tee-kms:sealer:bad-share', // 400
  badRequest: 'urn:tee-kms:sealer:bad-request', // 400
  conflict: 'urn:tee-kms:sealer:conflict', // 409: stale expectedCurrentId, concurrent change
  keyFromSecret: 'urn:tee-kms:sealer:key-from-secret', // 409: mode 1
  notSealed: 'urn:tee-kms:sealer:not-sealed', // 409: recovery while unsealed
  notInitialized: 'urn:tee-kms:sealer:not-initialized', // 409: recovery while uninitialized
  proofInvalid: 'urn:tee-kms:sealer:proof-invalid', // 401: no valid, fresh, unused proof of possession
  forbidden: 'urn:tee-kms:sealer:forbidden', // 403: the admin policy does not grant this identity the operation
  notFound: 'urn:tee-kms:sealer:not-found', // 404
  methodNotAllowed: 'urn:tee-kms:sealer:method-not-allowed', // 405
  payloadTooLarge: 'urn:tee-kms:sealer:payload-too-large', // 413
  busy: 'urn:tee-kms:sealer:busy', // 503
  storageUnavailable: 'urn:tee-kms:sealer:storage-unavailable', // 503
  attestationUnavailable: 'urn:tee-kms:sealer:attestation-unavailable', // 503: its attestation agent failed; retry
  integrity: 'urn:tee-kms:sealer:integrity', // 500: storage was tampered with; an operator must restore it
  internal: 'urn:tee-kms:sealer:internal', // 500
} as const;

export const ROOT_KEY_BYTES = 32;
/** A shamir-secret-sharing share of a 32-byte key: 32 bytes of y values, then the x coordinate. */
export const SHARE_BYTES = ROOT_KEY_BYTES + 1;
export const MAX_SHARES = 255;

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Validates one share from the wire and returns its bytes. `index` must be the share's x
 * coordinate (its last byte), 1..255; `content` standard base64 of 33 bytes. The messages name
 * what is wrong and never echo the content.
 */
export function parseShare(value: unknown, label = 'share'): { index: number; bytes: Buffer } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KmsError('BAD_REQUEST', `${label} must be an object {"index": n, "content": "<base64>"}`);
  }
  const { index, content } = value as Record<string, unknown>;
  if (typeof index !== 'number' || !Number.isInteger(index)) throw new KmsError('BAD_REQUEST', `${label}: index must be a whole number`);
  if (index < 1 || index > MAX_SHARES) throw new KmsError('BAD_REQUEST', `${label}: index ${index} is out of range (1..${MAX_SHARES}; 0 is never a share)`);
  if (typeof content !== 'string' || content.length === 0) throw new KmsError('BAD_REQUEST', `${label}: content must be a base64 string`);
  if (!BASE64.test(content) || content.length % 4 !== 0) throw new KmsError('BAD_REQUEST', `${label}: content is not valid base64`);
  const bytes = Buffer.from(content, 'base64');
  if (bytes.length !== SHARE_BYTES) {
    bytes.fill(0);
    throw new KmsError('BAD_REQUEST', `${label}: content must decode to ${SHARE_BYTES} bytes (a share of a 256-bit key)`);
  }
  const x = bytes[SHARE_BYTES - 1];
  if (x !== index) {
    bytes.fill(0);
    throw new KmsError('BAD_REQUEST', `${label}: index ${index} does not match the share (corrupted, or index changed)`);
  }
  return { index, bytes };
}

/** Validates t-of-n as shamir-secret-sharing accepts it. */
export function validateThreshold(t: unknown, n: unknown): { t: number; n: number } {
  if (typeof t !== 'number' || typeof n !== 'number' || !Number.isInteger(t) || !Number.isInteger(n)) {
    throw new KmsError('BAD_REQUEST', 't and n must be whole numbers');
  }
  if (t < 2 || n > MAX_SHARES || t > n) throw new KmsError('BAD_REQUEST', `need 2 <= t <= n <= ${MAX_SHARES}`);
  return { t, n };
}
