// The test's own client of the sealed channel, written from the protocol (docs/sealed-channel.md)
// with jose and node:crypto, not with the server's modules: what an independent client would do.
import { createHash, randomBytes } from 'node:crypto';
import canonicalize from 'canonicalize';
import { CompactEncrypt, compactDecrypt, exportJWK, generateKeyPair, importJWK, type CryptoKey, type GenerateKeyPairResult } from 'jose';
import type { HttpAnswer } from './processes.js';

export interface Attested {
  readonly serviceKey: { kty: string; crv: string; x: string; kid: string };
  readonly rootKeyId: string;
  readonly nonce: string;
}

/** GET /attestation with a fresh nonce; checks the sample evidence binds the nonce and the service key. */
export async function attest(get: (path: string) => Promise<HttpAnswer>): Promise<Attested> {
  const nonce = randomBytes(32).toString('base64url');
  const answer = await get(`/attestation?nonce=${nonce}`);
  if (answer.status !== 200) throw new Error(`attestation answered ${answer.status}: ${answer.body}`);
  const { serviceKey, rootKeyId, tee, evidence } = JSON.parse(answer.body) as {
    serviceKey: Attested['serviceKey'];
    rootKeyId: string;
    tee: string;
    evidence: { report_data: string };
  };
  if (tee !== 'sample') throw new Error(`expected sample evidence, got ${tee}`);
  const expected = Buffer.alloc(64);
  createHash('sha384')
    .update(canonicalize({ nonce, 'service-key': serviceKey })!)
    .digest()
    .copy(expected);
  if (!Buffer.from(evidence.report_data, 'base64').equals(expected)) throw new Error('the evidence does not bind the nonce and the service key');
  if (serviceKey.kid !== rootKeyId) throw new Error('the service key is not the root key id it names');
  return { serviceKey, rootKeyId, nonce };
}

export interface SealedRequest {
  /** The Authorization header value. */
  readonly authorization: string;
  /** Its one-time id, which the answer carries back as `kms-jti`. */
  readonly jti: string;
  /** Opens the answer (a compact JWE to this request's response key). */
  open(body: string): Promise<unknown>;
  /** Opens the answer, and gives its protected header too (authenticated with it). */
  openWithHeader(body: string): Promise<{ json: unknown; protectedHeader: Record<string, unknown> }>;
}

export interface SealOptions {
  readonly method: string;
  readonly target: string;
  readonly token: string;
  readonly user?: string;
  readonly iat?: number;
  readonly jti?: string;
  /** The body to bind (`htb`: base64url of its SHA-256); none: no `htb` claim. */
  readonly body?: string;
  readonly kid?: string;
  readonly alg?: 'ECDH-ES+A256KW' | 'ECDH-ES';
  readonly responseCurve?: 'X25519' | 'P-256';
  /** Replaces the plaintext claims entirely. */
  readonly claims?: Record<string, unknown>;
  /** An ephemeral private key to reuse (a fresh one per message otherwise, as jose does). */
  readonly epk?: CryptoKey;
  /** A response key pair to reuse (a fresh one per message otherwise). */
  readonly response?: GenerateKeyPairResult;
}

export async function seal(attested: Attested, options: SealOptions): Promise<SealedRequest> {
  const alg = options.alg ?? 'ECDH-ES+A256KW';
  const response =
    options.response ??
    (options.responseCurve === 'P-256'
      ? await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256' })
      : await generateKeyPair('ECDH-ES+A256KW', { crv: 'X25519' }));
  const responseKey = await exportJWK(response.publicKey);
  const claims = options.claims ?? {
    ...(options.user === undefined ? {} : { user: options.user }),
    token: options.token,
    htm: options.method,
    htu: options.target,
    ...(options.body === undefined ? {} : { htb: createHash('sha256').update(options.body).digest('base64url') }),
    iat: options.iat ?? Math.floor(Date.now() / 1000),
    jti: options.jti ?? randomBytes(16).toString('base64url'),
    responseKey,
  };
  const { kid: _kid, ...publicJwk } = attested.serviceKey;
  const serviceKey = (await importJWK(publicJwk, alg)) as CryptoKey;
  const encrypt = new CompactEncrypt(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({
    alg,
    enc: 'A256GCM',
    kid: options.kid ?? attested.serviceKey.kid,
  });
  if (options.epk !== undefined) encrypt.setKeyManagementParameters({ epk: options.epk });
  const jwe = await encrypt.encrypt(serviceKey);
  return {
    authorization: `Sealed ${jwe}`,
    jti: String(claims.jti),
    async open(body) {
      return (await openWithHeader(body)).json;
    },
    openWithHeader,
  };

  async function openWithHeader(body: string): Promise<{ json: unknown; protectedHeader: Record<string, unknown> }> {
    // The answer is sealed with the credential's algorithm: anything else does not open.
    const { plaintext, protectedHeader } = await compactDecrypt(body, response.privateKey, { keyManagementAlgorithms: [alg] });
    return { json: JSON.parse(new TextDecoder().decode(plaintext)) as unknown, protectedHeader: { ...protectedHeader } };
  }
}
