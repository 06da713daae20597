import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { TeeType } from '../shared/attestation/types.js';
import { KmsError } from '../shared/errors.js';
import { parseKbsTeePubKey, type KbsTeePubKey } from '../shared/kbs/protocol.js';
import type { AppraisedInitData } from './init-data.js';

export const TOKEN_ISSUER = 'tee-kms-sealer';
const TOKEN_MAX_LENGTH = 16 * 1024;

export interface VerifiedToken {
  readonly tee: TeeType;
  readonly teePubKey: KbsTeePubKey;
  /** The workload identity (init-data digest) the attestation established. */
  readonly identity: string;
  /** When its verified init-data is a function's that trusts this service (trustingFunction): its agent policy's SHA-384. */
  readonly agentPolicy?: string;
}

/**
 * Attestation results tokens: JWTs the sealer signs with its own ES256 key, made at start (tokens
 * die with the process; clients re-attest on 401). The claims follow Trustee's CoCo AS "simple"
 * token (attestation-service/src/token/simple.rs): iss, iat, nbf, exp, jti, tee, tcb-status,
 * evaluation-reports, customized_claims {init_data (the workload identity), init_data_claims (what verified
 * init-data held, when the attestation carried it: sealer/init-data.ts), runtime_data}; the header carries the signing
 * `jwk`. The tee-pubkey sits at /customized_claims/runtime_data/tee-pubkey, where Trustee's
 * TokenVerifier looks for it (kbs/src/token/mod.rs TOKEN_TEE_PUBKEY_PATH_COCO).
 */
export class TokenService {
  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    private readonly publicJwk: JWK,
    private readonly ttlSeconds: number,
  ) {}

  static async create(ttlSeconds: number): Promise<TokenService> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: false });
    const publicJwk = await exportJWK(publicKey);
    return new TokenService(privateKey, publicKey, { ...publicJwk, alg: 'ES256' }, ttlSeconds);
  }

  async issue(
    tee: TeeType,
    claims: Record<string, unknown>,
    runtimeData: Record<string, unknown>,
    identity: string,
    initData: AppraisedInitData = {},
  ): Promise<{ token: string; expiresAt: number }> {
    const iat = Math.floor(Date.now() / 1000);
    const exp = iat + this.ttlSeconds;
    const token = await new SignJWT({
      tee,
      'tcb-status': claims,
      'evaluation-reports': [],
      customized_claims: {
        init_data: identity,
        ...(initData.claims && { init_data_claims: initData.claims }),
        // Not Trustee's: the agent policy of a function that trusts this service, which admin grants may name.
        ...(initData.agentPolicy && { agent_policy: initData.agentPolicy }),
        runtime_data: runtimeData,
      },
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', jwk: this.publicJwk })
      .setIssuer(TOKEN_ISSUER)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(this.privateKey);
    return { token, expiresAt: exp * 1000 };
  }

  /** Throws KmsError('UNAUTHORIZED') naming what failed (never echoing the token). */
  async verify(token: string): Promise<VerifiedToken> {
    if (token.length === 0 || token.length > TOKEN_MAX_LENGTH) throw new KmsError('UNAUTHORIZED', 'malformed token');
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.publicKey, { algorithms: ['ES256'], issuer: TOKEN_ISSUER, requiredClaims: ['exp', 'iat'] }));
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === 'ERR_JWT_EXPIRED') throw new KmsError('UNAUTHORIZED', 'the token expired; attest again');
      throw new KmsError('UNAUTHORIZED', 'the token is not one this sealing service issued (or it restarted since); attest again');
    }
    const custom = payload.customized_claims as { runtime_data?: Record<string, unknown>; init_data?: unknown; agent_policy?: unknown } | undefined;
    const tee = payload.tee;
    if (tee !== 'sample' && tee !== 'tdx') throw new KmsError('UNAUTHORIZED', 'the token names no TEE');
    if (typeof custom?.init_data !== 'string') throw new KmsError('UNAUTHORIZED', 'the token names no workload identity');
    try {
      const agentPolicy = typeof custom.agent_policy === 'string' ? custom.agent_policy : undefined;
      return { tee, teePubKey: parseKbsTeePubKey(custom.runtime_data?.['tee-pubkey']), identity: custom.init_data, ...(agentPolicy && { agentPolicy }) };
    } catch {
      throw new KmsError('UNAUTHORIZED', 'the token carries no valid tee-pubkey');
    }
  }
}
