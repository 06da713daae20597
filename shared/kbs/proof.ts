import { createHash, randomBytes } from 'node:crypto';
import { SignJWT } from 'jose/jwt/sign'; // a subpath: see tee-key.ts
import type { TeeKeyPair } from './tee-key.js';

/** The request a proof of possession is made for. */
export interface ProofTarget {
  readonly method: string;
  /** Path and query, exactly as sent. */
  readonly target: string;
  readonly token: string;
  readonly body: Uint8Array | undefined;
}

/**
 * A proof of possession of this TEE's key for one request (docs/sealer-protocol.md, modelled on
 * RFC 9449 DPoP, plus a body digest): the sealing service accepts an admin call only with one, so
 * the attestation token is useless to whoever copies it.
 */
export async function signProof(teeKey: TeeKeyPair, request: ProofTarget): Promise<string> {
  const { kty, crv, x, y } = teeKey.publicJwk;
  return new SignJWT({
    htm: request.method,
    htu: request.target,
    ath: sha256(Buffer.from(request.token, 'ascii')),
    bdy: sha256(request.body ?? new Uint8Array()),
  })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })
    .setIssuedAt()
    .setJti(randomBytes(16).toString('base64url'))
    .sign(teeKey.privateKey);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url');
}
