// What the client's methods answer: the JSON the server answers with `Accept: application/json`
// (README "The API"), typed. Kept here, apart from the code, so that tools can build against them.

import type { SealStatus as SealerStatus } from '../shared/sealer-client/protocol.js';

/** A Shamir share of the root key: `content` is base64, or a compact JWE to a custodian. */
export interface Share {
  readonly index: number;
  readonly content: string;
}

/** `enroll`: the user and the token it was enrolled with (generated when none was given: keep it). */
export interface Enrollment {
  readonly user: string;
  readonly token: string;
}

export interface CreatedPrimaryKey {
  readonly user: string;
  readonly primaryKey: string;
  readonly created: true;
}

export interface CreatedDataKey {
  readonly user: string;
  readonly primaryKey: string;
  readonly dataKey: string;
  readonly created: true;
}

export interface DataKey {
  readonly user: string;
  readonly primaryKey: string;
  readonly dataKey: string;
  /** The data key's plaintext, base64. */
  readonly key: string;
}

/** `rotate`: the new shares (their only copy), and the headers that say what they are. */
export interface Rotation {
  readonly shares: readonly Share[];
  /** The new root key's id. */
  readonly rootKeyId: string;
  /** `current` for the first rotate (initialization); else `pending-verification` until `verify`. */
  readonly state: 'current' | 'pending-verification';
  /** Whether every share's content is a JWE to a custodian. */
  readonly sharesEncrypted: boolean;
}

/** `verify`: the shares rebuild the root key `rootKeyId`, now current; `rewrapped` primary keys moved under it. */
export interface Verification {
  readonly promoted: boolean;
  readonly rootKeyId: string;
  readonly rewrapped: number;
  readonly [member: string]: unknown;
}

/** `recover`: progress after one share; `rootKeyId` once the root key is recovered. */
export interface RecoveryProgress {
  readonly sealed: boolean;
  readonly progress: number;
  readonly t: number;
  readonly rootKeyId?: string;
}

/**
 * `sealStatus`: GET /rootKey/status (README "The API"): the sealing service's status, as functions
 * relay it, and whatever the route adds (`rotation`).
 */
export interface SealStatus extends SealerStatus {
  readonly [member: string]: unknown;
}

/** The service key requests are sealed to (docs/sealed-channel.md); `kid` is its root key id. */
export interface ServiceKeyJwk {
  readonly kty: 'OKP';
  readonly crv: 'X25519';
  readonly x: string;
  readonly kid: string;
}

/** `attestation`: a service key whose evidence this client verified against its policy. */
export interface Attestation {
  readonly serviceKey: ServiceKeyJwk;
  readonly rootKeyId: string;
  readonly tee: 'sample' | 'tdx';
  /** What the verifier established (TDX: measurements, TCB status…; sample: its claimed identity). */
  readonly claims: Readonly<Record<string, unknown>>;
}
