/**
 * A Trustee KBS double, written from Trustee's KBS attestation protocol 0.4.0
 * (confidential-containers/trustee kbs/docs/kbs_attestation_protocol.md, kbs/src/api_server.rs,
 * kbs/src/attestation/backend.rs, kbs/src/error.rs, kbs/src/jwe; guest-components kbs_protocol as
 * its client) with node:https, node:crypto, `jose` and `canonicalize`, and none of the project's
 * KBS, sealer or attestation code:
 *
 * - POST /kbs/v0/auth {version "0.4.0", tee, extra-params} answers {nonce: base64 of 32 random
 *   bytes, extra-params: ""} and sets the `kbs-session-id` cookie;
 * - POST /kbs/v0/attest, with that cookie, {runtime-data: {nonce, tee-pubkey}, tee-evidence:
 *   {primary_evidence, additional_evidence}}: the nonce must be the session's, and the evidence's
 *   report data must begin with SHA-384(JCS({"tee-pubkey", "nonce", "additional-evidence"})) (the
 *   attestation service's structured runtime data); `sample` evidence only, as Trustee's sample
 *   verifier. Answers {token}: a JWT (ES256) of this double, carrying the claims and `tee-pubkey`;
 *   the session is then attested;
 * - GET /kbs/v0/resource/<repository>/<type>/<tag>: the token of the attested session (cookie),
 *   else `Authorization: Bearer`; the resource policy (`release`) on the token's claims, 403
 *   PolicyDeny when it says no; the resource as flattened JWE (ECDH-ES+A256KW, A256GCM) to the
 *   token's `tee-pubkey`;
 * - errors as {type: https://github.com/confidential-containers/kbs/errors/<Name>, detail}: 404 for
 *   a bad path, 403 for PolicyDeny, 401 for everything else.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import canonicalize from 'canonicalize';
import { FlattenedEncrypt, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import { readFileSync } from 'node:fs';
import { writeTlsFiles } from './tls-files.js';

const ERRORS = 'https://github.com/confidential-containers/kbs/errors/';

export interface SampleClaims {
  readonly svn: string;
  readonly init_data?: string;
}

export interface KbsDouble {
  readonly url: string;
  readonly caPem: string;
  /** Resources by `<repository>/<type>/<tag>`; changed by tests at will. */
  readonly resources: Map<string, Buffer>;
  /** `METHOD path status` of every request so far. */
  readonly requests: string[];
  /** The resource policy: which attested claims may have resources (default: all). */
  release: (claims: SampleClaims) => boolean;
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function startKbsDouble(port = 0): Promise<KbsDouble> {
  const dir = await mkdtemp(join(tmpdir(), 'tee-kms-kbs-double-'));
  const { certFile, keyFile, certPem } = writeTlsFiles(dir, 'kbs', 'localhost');
  const signing = await generateKeyPair('ES256');
  const sessions = new Map<string, { nonce: string; token?: string }>();
  const requests: string[] = [];
  const double: KbsDouble = {
    url: '',
    caPem: certPem,
    resources: new Map(),
    requests,
    release: () => true,
    stop: async () => {},
    start: async () => {},
    cleanup: async () => {},
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const path = (req.url ?? '').split('?')[0]!;
    if (req.method === 'POST' && path === '/kbs/v0/auth') {
      const request = JSON.parse(body.toString('utf8')) as { version?: string; tee?: string };
      if (request.version !== '0.4.0') return problem(res, 401, 'AttestationError', 'KBS Client Protocol Version Mismatch');
      const id = randomUUID();
      const nonce = randomBytes(32).toString('base64');
      sessions.set(id, { nonce });
      res.setHeader('Set-Cookie', `kbs-session-id=${id}; Max-Age=300`);
      return json(res, 200, { nonce, 'extra-params': '' });
    }
    if (req.method === 'POST' && path === '/kbs/v0/attest') {
      const session = sessions.get(cookie(req) ?? '');
      if (session === undefined) return problem(res, 401, 'AttestationError', 'No cookie found');
      if (session.token !== undefined) return json(res, 200, { token: session.token });
      const attestation = JSON.parse(body.toString('utf8')) as {
        'runtime-data': { nonce: string; 'tee-pubkey': JWK };
        'tee-evidence': { primary_evidence: { svn: string; report_data: string; init_data?: string }; additional_evidence: string };
      };
      const { nonce, 'tee-pubkey': teePubKey } = attestation['runtime-data'];
      const { primary_evidence: evidence, additional_evidence: additional } = attestation['tee-evidence'];
      if (nonce !== session.nonce) return problem(res, 401, 'AttestationError', 'the nonce in the handshake session is different');
      const expected = createHash('sha384')
        .update(canonicalize({ 'additional-evidence': additional, nonce, 'tee-pubkey': teePubKey })!, 'utf8')
        .digest();
      const reportData = Buffer.from(evidence.report_data, 'base64');
      if (!reportData.subarray(0, expected.length).equals(expected)) return problem(res, 401, 'AttestationError', 'verify TEE evidence failed');
      const claims: SampleClaims = { svn: evidence.svn, ...(evidence.init_data === undefined ? {} : { init_data: evidence.init_data }) };
      const token = await new SignJWT({ tee: 'sample', 'tee-pubkey': teePubKey, 'evaluation-reports': [], customized_claims: claims })
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(signing.privateKey);
      session.token = token;
      return json(res, 200, { token });
    }
    const resource = /^\/kbs\/v0\/resource\/([^/]+\/[^/]+\/[^/]+)$/.exec(path)?.[1];
    if (req.method === 'GET' && resource !== undefined) {
      const token = sessions.get(cookie(req) ?? '')?.token ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token === undefined) return problem(res, 401, 'TokenNotFound', 'Attestation Token not found');
      let payload: Record<string, unknown>;
      try {
        payload = (await jwtVerify(token, signing.publicKey)).payload;
      } catch {
        return problem(res, 401, 'TokenVerifierError', 'Token Verifier error');
      }
      if (!double.release(payload.customized_claims as SampleClaims)) return problem(res, 403, 'PolicyDeny', 'Access denied by policy');
      const value = double.resources.get(resource);
      if (value === undefined) return problem(res, 401, 'PluginInternalError', 'Plugin internal error');
      const key = await importJWK(payload['tee-pubkey'] as JWK, 'ECDH-ES+A256KW');
      const jwe = await new FlattenedEncrypt(value).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' }).encrypt(key);
      return json(res, 200, jwe);
    }
    return problem(res, 404, 'InvalidRequestPath', `Request path ${path} is invalid`);
  }

  let server: Server | undefined;
  let boundPort = port;
  double.start = () =>
    new Promise<void>((resolve, reject) => {
      const next = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
        res.on('finish', () => requests.push(`${req.method} ${(req.url ?? '').split('?')[0]} ${res.statusCode}`));
        handle(req, res).catch(() => problem(res, 401, 'SerdeError', 'Serialize/Deserialize failed'));
      });
      next.once('error', reject);
      next.listen(boundPort, '127.0.0.1', () => {
        boundPort = (next.address() as { port: number }).port;
        server = next;
        resolve();
      });
    });
  double.stop = () =>
    new Promise<void>((resolve) => {
      if (server === undefined) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
      server = undefined;
    });
  double.cleanup = async () => {
    await double.stop();
    await rm(dir, { recursive: true, force: true });
  };
  await double.start();
  (double as { url: string }).url = `https://127.0.0.1:${boundPort}`;
  return double;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function cookie(req: IncomingMessage): string | undefined {
  return /(?:^|;\s*)kbs-session-id=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(value));
}

function problem(res: ServerResponse, status: number, name: string, detail: string): void {
  if (res.headersSent) return void res.end();
  json(res, status, { type: `${ERRORS}${name}`, detail });
}
