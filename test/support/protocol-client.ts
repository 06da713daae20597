/**
 * An independent client of the sealing service, written from docs/sealer-protocol.md and Trustee's
 * KBS protocol 0.4.0 alone: node:https, node:crypto, `jose` and `canonicalize`, and none of the
 * project's own KBS, sealer-client or attestation modules. It is the adversary's client as much as
 * an honest one: every part of a request (token, proof, nonce, body) can be chosen by the test, and
 * every answer is kept byte for byte so that its signature can be checked.
 *
 * It holds one P-256 key (a node:crypto KeyObject), used as Trustee's `tee-pubkey` (ECDH-ES+A256KW:
 * resources come back encrypted to it) and to sign proofs of possession (ES256), as the protocol
 * says a TEE does. Its evidence is `sample` evidence ({svn, report_data, init_data?}), which the
 * sealing service accepts only in insecure development mode; `evidence` swaps in another source.
 */
import { createHash, createHmac, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import canonicalize from 'canonicalize';
import { CompactSign, compactVerify, flattenedDecrypt, type FlattenedJWE } from 'jose';

export const KBS_PROBLEM = 'https://github.com/confidential-containers/kbs/errors/';
export const PROOF_INVALID = 'urn:tee-kms:sealer:proof-invalid';
export const FORBIDDEN = 'urn:tee-kms:sealer:forbidden';
export const RESPONSE_SIGNATURE_TYPE = 'kms-sealer-response+jwt';

/** The admin routes, per operation (docs/sealer-protocol.md, "Admin calls"). */
export const adminRoutes = {
  rotate: { method: 'POST', path: '/tee-kms/v1/root-key' },
  verify: { method: 'POST', path: '/tee-kms/v1/root-key/verify' },
  recoveryKey: { method: 'GET', path: '/tee-kms/v1/recovery/key' },
  recoveryShares: { method: 'POST', path: '/tee-kms/v1/recovery/shares' },
  recoveryReset: { method: 'DELETE', path: '/tee-kms/v1/recovery' },
  seal: { method: 'POST', path: '/tee-kms/v1/seal' },
} as const;

export const b64u = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');
export const sha256b64u = (bytes: Uint8Array | string): string => b64u(createHash('sha256').update(bytes).digest());

/** A fresh nonce as the protocol asks for them: base64url of `bytes` random bytes (16 to 64). */
export const freshNonce = (bytes = 32): string => b64u(randomBytes(bytes));

/** A root key's id: HMAC-SHA256(key, "tee-kms/root-key-id/v1"), first 16 bytes, hex (docs/root-key.md). */
export function rootKeyIdOf(key: Uint8Array): string {
  return createHmac('sha256', key).update('tee-kms/root-key-id/v1').digest().subarray(0, 16).toString('hex');
}

/**
 * The binding of a key to evidence, in either direction:
 * SHA-384(JCS({"additional-evidence": "", "nonce": nonce, "tee-pubkey": jwk})) ‖ 16 zero bytes.
 */
export function bindingReportData(nonce: string, jwk: object): Buffer {
  const json = canonicalize({ 'additional-evidence': '', nonce, 'tee-pubkey': jwk });
  if (json === undefined) throw new Error('cannot canonicalize');
  return Buffer.concat([createHash('sha384').update(json, 'utf8').digest(), Buffer.alloc(16)]);
}

export interface EcPublicJwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly x: string;
  readonly y: string;
}

/** What a request was, exactly as it went on the wire. */
export interface SentRequest {
  readonly method: string;
  /** Path with query. */
  readonly target: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** KMS-Request-Nonce, when one was sent. */
  readonly nonce?: string;
}

export interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body's bytes, as received. */
  readonly raw: Buffer;
  readonly text: string;
  readonly sent: SentRequest;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json<T = Record<string, unknown>>(): T;
  /** A problem's `type` (RFC 7807), if the answer is one. */
  readonly problemType: string | undefined;
}

/** How a proof of possession is made; each knob makes it wrong in one way. */
export interface ProofKnobs {
  /** `htm` claimed (default: the request's method). */
  readonly htm?: string;
  /** `htu` claimed (default: the request's path and query). */
  readonly htu?: string;
  /** The body whose digest `bdy` carries (default: the request's body). */
  readonly body?: string | Buffer;
  /** The token whose digest `ath` carries (default: the one sent). */
  readonly token?: string;
  readonly jti?: string;
  /** Added to the signing time, in seconds (negative: older). */
  readonly iatOffsetSeconds?: number;
  /** The key that signs (default: this client's). */
  readonly signingKey?: KeyObject;
  /** The `jwk` of the protected header (default: this client's public key). */
  readonly headerJwk?: object;
  readonly typ?: string;
}

export interface CallOptions {
  /** A JSON value (serialized once, and signed as sent) or the exact body text. */
  readonly body?: unknown;
  /** The Bearer token (default: this client's, once attested; `null`: none). */
  readonly token?: string | null;
  /** `false`: no DPoP header; a string: that header verbatim; else knobs for a proof made now. */
  readonly proof?: false | string | ProofKnobs;
  /** KMS-Request-Nonce: a fresh one unless `false` (or the given value). */
  readonly nonce?: string | false;
  readonly headers?: Record<string, string>;
}

export interface SealerAttestation {
  readonly key: EcPublicJwk & { readonly alg: string };
  readonly publicKey: KeyObject;
  readonly tee: string;
  readonly evidence: Record<string, unknown>;
  /** The nonce this attestation was asked for. */
  readonly nonce: string;
  /** The whole answer. */
  readonly answer: Answer;
}

export interface ProtocolClientOptions {
  readonly url: string;
  /** The sealing service's certificate: the only one trusted. */
  readonly ca: string;
  /** The identity `sample` evidence claims (96 hex); absent: none (the service reads 96 zeros). */
  readonly initData?: string;
  /** Evidence for 64 bytes of report data (default: sample evidence). */
  readonly evidence?: (reportData: Buffer) => Promise<unknown> | unknown;
  /** The KBS `tee` (default 'sample'). */
  readonly tee?: string;
  /** The Attestation's `init-data` member exactly as sent, e.g. {"format": "toml", "body": "<TOML>"}; absent: none. */
  readonly kbsInitData?: unknown;
  /** The key to hold (default: a new P-256 key). */
  readonly privateKey?: KeyObject;
}

export class ProtocolClient {
  readonly url: string;
  readonly privateKey: KeyObject;
  /** Trustee's tee-pubkey: kty, crv, alg, x, y. */
  readonly teePubKey: EcPublicJwk & { readonly alg: 'ECDH-ES+A256KW' };
  /** The attestation token from the last attest(). */
  token: string | undefined;
  /** The session cookie (`kbs-session-id=…`) of the last attest(). */
  cookie: string | undefined;
  /** Every answer received, in order. */
  readonly answers: Answer[] = [];
  /** Every DPoP proof sent. */
  readonly proofs: string[] = [];
  readonly #ca: string;
  readonly #options: ProtocolClientOptions;

  constructor(options: ProtocolClientOptions) {
    this.url = options.url;
    this.#ca = options.ca;
    this.#options = options;
    this.privateKey = options.privateKey ?? generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const jwk = this.privateKey.export({ format: 'jwk' });
    if (jwk.crv !== 'P-256' || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new Error('the key must be P-256');
    this.teePubKey = { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: jwk.x, y: jwk.y };
  }

  /** The proof header's `jwk`: the tee-pubkey with its `alg` left out. */
  get proofJwk(): EcPublicJwk {
    const { kty, crv, x, y } = this.teePubKey;
    return { kty, crv, x, y };
  }

  /** The private scalar, for the log scan only. */
  get privateScalar(): Buffer {
    return Buffer.from(this.privateKey.export({ format: 'jwk' }).d!, 'base64url');
  }

  /** KBS auth → attest with this client's key; keeps and returns the token. */
  async attest(): Promise<string> {
    const auth = await this.send('POST', '/kbs/v0/auth', { body: { version: '0.4.0', tee: this.#options.tee ?? 'sample', 'extra-params': '' }, token: null });
    if (auth.status !== 200) throw new Error(`auth: ${auth.status} ${auth.text}`);
    const nonce = auth.json<{ nonce: string }>().nonce;
    const setCookie = auth.headers['set-cookie'];
    const cookie = (Array.isArray(setCookie) ? setCookie : [setCookie ?? ''])
      .map((line) => line.split(';')[0]!.trim())
      .find((pair) => pair.startsWith('kbs-session-id='));
    if (typeof nonce !== 'string' || cookie === undefined) throw new Error('auth: no nonce or no kbs-session-id cookie');
    const reportData = bindingReportData(nonce, this.teePubKey);
    const evidence = this.#options.evidence
      ? await this.#options.evidence(reportData)
      : {
          svn: '1',
          report_data: reportData.toString('base64'),
          ...(this.#options.initData === undefined ? {} : { init_data: this.#options.initData }),
        };
    const attested = await this.send('POST', '/kbs/v0/attest', {
      body: {
        ...(this.#options.kbsInitData === undefined ? {} : { 'init-data': this.#options.kbsInitData }),
        'runtime-data': { nonce, 'tee-pubkey': this.teePubKey },
        'tee-evidence': { primary_evidence: evidence, additional_evidence: '' },
      },
      token: null,
      headers: { Cookie: cookie },
    });
    if (attested.status !== 200) throw new Error(`attest: ${attested.status} ${attested.text}`);
    const token = attested.json<{ token: string }>().token;
    if (typeof token !== 'string') throw new Error('attest: no token');
    this.token = token;
    this.cookie = cookie;
    return token;
  }

  /** The claims of this client's token (not verified: the sealing service signed it). */
  tokenClaims(token = this.token): Record<string, unknown> {
    if (token === undefined) throw new Error('not attested');
    return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  }

  /** A proof of possession for one request (docs/sealer-protocol.md), made wrong by `knobs`. */
  async proof(request: { method: string; target: string; body: Buffer; token: string }, knobs: ProofKnobs = {}): Promise<string> {
    const payload = {
      htm: knobs.htm ?? request.method,
      htu: knobs.htu ?? request.target,
      iat: Math.floor(Date.now() / 1000) + (knobs.iatOffsetSeconds ?? 0),
      jti: knobs.jti ?? b64u(randomBytes(16)),
      ath: sha256b64u(Buffer.from(knobs.token ?? request.token, 'ascii')),
      bdy: sha256b64u(knobs.body === undefined ? request.body : Buffer.from(knobs.body)),
    };
    const proof = await new CompactSign(Buffer.from(JSON.stringify(payload), 'utf8'))
      .setProtectedHeader({ typ: knobs.typ ?? 'dpop+jwt', alg: 'ES256', jwk: (knobs.headerJwk ?? this.proofJwk) as Record<string, string> })
      .sign(knobs.signingKey ?? this.privateKey);
    this.proofs.push(proof);
    return proof;
  }

  /** The `jti` of a proof. */
  static jtiOf(proof: string): string {
    return (JSON.parse(Buffer.from(proof.split('.')[1]!, 'base64url').toString('utf8')) as { jti: string }).jti;
  }

  /** An admin call: Bearer token and a proof (unless the options say otherwise). */
  async admin(method: string, target: string, options: CallOptions = {}): Promise<Answer> {
    const token = options.token === undefined ? this.token : options.token;
    if (token === undefined) throw new Error('not attested');
    const body = bodyBytes(options.body);
    let dpop: string | undefined;
    if (typeof options.proof === 'string') dpop = options.proof;
    else if (options.proof !== false && token !== null) dpop = await this.proof({ method, target, body, token }, options.proof ?? {});
    return this.send(method, target, {
      ...options,
      body,
      token,
      headers: { ...(dpop === undefined ? {} : { DPoP: dpop }), ...options.headers },
    });
  }

  /** One request: the body as given, Bearer `token` if any, a fresh KMS-Request-Nonce unless told otherwise. */
  async send(method: string, target: string, options: CallOptions = {}): Promise<Answer> {
    const body = bodyBytes(options.body);
    const token = options.token === undefined ? undefined : options.token;
    const nonce = options.nonce === false ? undefined : (options.nonce ?? freshNonce());
    const headers: Record<string, string> = {
      ...(body.length > 0 ? { 'Content-Type': 'application/json' } : {}),
      ...(token == null ? {} : { Authorization: `Bearer ${token}` }),
      ...(nonce === undefined ? {} : { 'KMS-Request-Nonce': nonce }),
      ...options.headers,
    };
    return this.replay({ method, target, headers, body, ...(nonce === undefined ? {} : { nonce }) });
  }

  /** Sends a request again exactly as it was sent (its token, its proof, its nonce, its body). */
  replay(sent: SentRequest): Promise<Answer> {
    const origin = new URL(this.url);
    return new Promise<Answer>((resolve, reject) => {
      const req = httpsRequest(
        {
          hostname: origin.hostname,
          port: origin.port,
          path: sent.target,
          method: sent.method,
          headers: { ...sent.headers, 'Content-Length': String(sent.body.length) },
          ca: this.#ca,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const raw = Buffer.concat(chunks);
            const text = raw.toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            const type = (parsed as { type?: unknown } | undefined)?.type;
            const answer: Answer = {
              status: res.statusCode ?? 0,
              headers: res.headers,
              raw,
              text,
              sent,
              json: <T>() => parsed as T,
              problemType: typeof type === 'string' ? type : undefined,
            };
            this.answers.push(answer);
            resolve(answer);
          });
        },
      );
      req.on('error', reject);
      req.end(sent.body);
    });
  }

  /** GET /tee-kms/v1/attestation?nonce=…: the service's signing key and its evidence, shape checked. */
  async attestSealer(nonce = freshNonce()): Promise<SealerAttestation> {
    const answer = await this.send('GET', `/tee-kms/v1/attestation?nonce=${nonce}`);
    if (answer.status !== 200) throw new Error(`attestation: ${answer.status} ${answer.text}`);
    const { key, tee, evidence } = answer.json<{ key: SealerAttestation['key']; tee: string; evidence: Record<string, unknown> }>();
    if (key?.kty !== 'EC' || key.crv !== 'P-256' || key.alg !== 'ES256' || typeof key.x !== 'string' || typeof key.y !== 'string') {
      throw new Error(`attestation: key is not an ES256 P-256 JWK: ${JSON.stringify(key)}`);
    }
    const publicKey = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: key.x, y: key.y }, format: 'jwk' });
    return { key, publicKey, tee, evidence, nonce, answer };
  }

  /**
   * Why `answer` is not a valid answer to the request it answers, signed by `key`
   * (KMS-Sealer-Signature), or undefined when it is.
   */
  static async signatureProblem(answer: Answer, key: KeyObject): Promise<string | undefined> {
    const header = answer.headers['kms-sealer-signature'];
    if (typeof header !== 'string') return 'no KMS-Sealer-Signature header';
    let verified;
    try {
      verified = await compactVerify(header, key, { algorithms: ['ES256'] });
    } catch (error) {
      return `the signature does not verify: ${(error as Error).message}`;
    }
    const { typ, alg } = verified.protectedHeader;
    if (typ !== RESPONSE_SIGNATURE_TYPE || alg !== 'ES256') return `protected header ${JSON.stringify(verified.protectedHeader)}`;
    const claims = JSON.parse(Buffer.from(verified.payload).toString('utf8')) as Record<string, unknown>;
    const expected = { htm: answer.sent.method, htu: answer.sent.target, status: answer.status, nonce: answer.sent.nonce, bdy: sha256b64u(answer.raw) };
    for (const [name, value] of Object.entries(expected)) {
      if (claims[name] !== value) return `${name} is ${JSON.stringify(claims[name])}, expected ${JSON.stringify(value)}`;
    }
    return undefined;
  }

  /** Opens a KBS resource (flattened JWE, ECDH-ES+A256KW / A256GCM) with this client's key. */
  async open(jwe: unknown): Promise<Buffer> {
    const { plaintext } = await flattenedDecrypt(jwe as FlattenedJWE, this.privateKey, {
      keyManagementAlgorithms: ['ECDH-ES+A256KW'],
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    return Buffer.from(plaintext);
  }
}

function bodyBytes(body: unknown): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/** Sample evidence as the sealing service's attestation carries it. */
export interface SampleEvidence {
  readonly svn: string;
  readonly report_data: string;
  readonly init_data?: string;
}

/** Whether sample evidence binds `nonce` and `jwk` (its report_data is exactly the binding). */
export function sampleEvidenceBinds(evidence: unknown, nonce: string, jwk: object): boolean {
  const reportData = (evidence as Partial<SampleEvidence> | undefined)?.report_data;
  return typeof reportData === 'string' && Buffer.from(reportData, 'base64').equals(bindingReportData(nonce, jwk));
}

/** The TD report fields a TDX quote (v4 or v5) carries, read straight from its bytes (no DCAP). */
export function tdxQuoteFields(quoteBase64: string): { mrTd: string; mrConfigId: string; reportData: Buffer } {
  const quote = Buffer.from(quoteBase64, 'base64');
  const version = quote.readUInt16LE(0);
  const body = 48 + (version === 5 ? 6 : 0);
  return {
    mrTd: quote.subarray(body + 136, body + 184).toString('hex'),
    mrConfigId: quote.subarray(body + 184, body + 232).toString('hex'),
    reportData: Buffer.from(quote.subarray(body + 520, body + 584)),
  };
}
