import type { IncomingMessage, ServerResponse } from 'node:http';
import { workloadIdentity } from '../shared/attestation/types.js';
import { quoteFor } from '../shared/attestation/public-evidence.js';
import { KmsError } from '../shared/errors.js';
import type { ComponentLog } from '../shared/log.js';
import {
  isTeeType,
  KBS_PREFIX,
  KBS_PROTOCOL_VERSION,
  KBS_SESSION_COOKIE,
  kbsReportData,
  parseEvidenceNonce,
  primaryRuntimeData,
  DEFAULT_RUNTIME_DATA_HASH,
} from '../shared/kbs/protocol.js';
import { encryptToTee } from '../shared/kbs/resource-jwe.js';
import { authorizationHeader, bearerToken } from '../shared/http/bearer.js';
import { readBounded, type BodyError } from '../shared/http/body.js';
import { ANSWER_SIGNATURE_HEADER, REQUEST_NONCE_HEADER, ROOT_KEY_RESOURCE, sealerPaths, sealerProblems } from '../shared/sealer-client/protocol.js';
import type { SealerIdentity } from './identity.js';
import { appraiseInitData, attestedInitData } from './init-data.js';
import { digest } from './proofs.js';
import type { SealerCore } from './core.js';
import { asSealerError, SealerError } from './errors.js';
import { kbsError, problemOf } from './problems.js';
import { attestationAdditionalEvidence, attestationTeePubKey } from './kbs-attestation.js';
import { AttestationStage } from './attestation-metrics.js';
import type { AdminOperation, AdminPolicy } from './admin-policy.js';
import type { ProofVerifier } from './proofs.js';
import type { SessionStore } from './sessions.js';
import type { TokenService, VerifiedToken } from './tokens.js';
import type { VerifierRegistry } from './verifiers.js';

const MAX_BODY_BYTES = 1024 * 1024;

export interface SealerHandlerDeps {
  readonly core: SealerCore;
  readonly sessions: SessionStore;
  readonly tokens: TokenService;
  readonly verifiers: VerifierRegistry;
  /** Which workload identities may call which admin operation. */
  readonly adminPolicy: AdminPolicy;
  readonly proofs: ProofVerifier;
  /** This service's own attested keys: the signing key of its answers, the recovery key. */
  readonly identity: SealerIdentity;
  readonly insecureDevMode: boolean;
  /** This service's own identity, when its policies are measured (KMS_SEALER_INIT_DATA_FILE). */
  readonly selfIdentity?: string;
  /** Replicas: whether the last round found that no peer holds the key (see readiness). */
  readonly noPeerHoldsKey?: () => boolean;
  /** One line per request (method, path, status, ms; never headers, bodies or query), and messages. */
  readonly log: ComponentLog;
}

type Handler = (req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps) => Promise<void>;

const routes: Record<string, Partial<Record<string, Handler>>> = {
  [`${KBS_PREFIX}/auth`]: { POST: kbsAuth },
  [`${KBS_PREFIX}/attest`]: { POST: kbsAttest },
  [`${KBS_PREFIX}/resource/${ROOT_KEY_RESOURCE}`]: { GET: kbsRootKey },
  [sealerPaths.sealStatus]: { GET: sealStatus },
  [sealerPaths.rootKey]: { POST: admin('rotate', async (body, deps) => deps.core.install(body)) },
  [sealerPaths.verify]: { POST: admin('verify', async (body, deps) => deps.core.verify(body)) },
  [sealerPaths.recoveryShares]: { POST: admin('recover', async (body, deps) => deps.core.submitShare(body)) },
  [sealerPaths.recovery]: { DELETE: admin('recover', async (_body, deps) => deps.core.resetRecovery(), { body: false }) },
  [sealerPaths.seal]: { POST: admin('seal', async (_body, deps) => deps.core.seal(), { body: false }) },
  [sealerPaths.attestation]: { GET: sealerAttestation },
  // Another replica of this service, attested as one (role sealer-peer): the key, only as a JWE to its TEE key.
  [sealerPaths.peerRootKey]: { GET: admin('sealer-peer', async (_body, deps, _req, verified) => peerRootKey(deps, verified), { body: false }) },
  [sealerPaths.recoveryKey]: {
    GET: admin(
      'recover',
      async (_body, deps, req) => {
        // Read once: the key is made anew after a recovery or a seal, and the evidence must bind the key answered.
        const recoveryKey = deps.identity.recoveryJwk;
        const [{ tee, evidence }, challenges] = await Promise.all([deps.identity.evidenceFor(recoveryKey, nonceOf(req)), deps.core.recoveryChallenges()]);
        return { recoveryKey, tee, evidence, ...(challenges === undefined ? {} : { challenges }) };
      },
      { body: false },
    ),
  },
  '/healthz': { GET: async (_req, res) => sendJson(res, 200, { ok: true }) },
  '/readyz': { GET: readiness },
};

export function sealerHandler(deps: SealerHandlerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const started = process.hrtime.bigint();
    const path = pathOf(req.url);
    res.on('finish', () => {
      deps.log.request(req.method ?? '?', loggablePath(path), res.statusCode, Number(process.hrtime.bigint() - started) / 1e6);
    });
    void dispatch(req, res, path, deps).catch((error: unknown) => sendError(res, error, deps));
  };
}

async function dispatch(req: IncomingMessage, res: ServerResponse, path: string, deps: SealerHandlerDeps): Promise<void> {
  if (req.method === 'CONNECT') {
    // Its target is a host (answerConnect, app.ts), no resource here: no method is allowed on it.
    res.setHeader('Allow', '');
    throw new SealerError('METHOD_NOT_ALLOWED', 'CONNECT is not served: this is not a proxy');
  }
  const nonce = req.headers[REQUEST_NONCE_HEADER];
  if (nonce !== undefined) {
    // A malformed nonce is answered unsigned, with 400.
    if (Array.isArray(nonce)) throw new SealerError('BAD_REQUEST', `one ${REQUEST_NONCE_HEADER} header at most`);
    asSealerError('BAD_REQUEST', () => parseEvidenceNonce(nonce));
    answerSigning.set(res, { identity: deps.identity, method: req.method ?? '', target: req.url ?? '', nonce });
  }
  const route = routes[path];
  if (route === undefined) {
    if (path.startsWith(`${KBS_PREFIX}/resource/`)) {
      // Trustee checks the token before it looks the resource up: so do we.
      await authenticate(req, deps, { cookie: true });
      throw kbsError.invalidPath(path);
    }
    if (path.startsWith(`${KBS_PREFIX}/`)) throw kbsError.invalidPath(path);
    throw new SealerError('NOT_FOUND', 'no such route');
  }
  const handler = route[req.method ?? ''];
  if (handler === undefined) {
    res.setHeader('Allow', Object.keys(route).join(', '));
    throw new SealerError('METHOD_NOT_ALLOWED', `use ${Object.keys(route).join(' or ')}`);
  }
  await handler(req, res, deps);
}

// ---- KBS (Trustee protocol 0.4.0) ----

function kbsAuth(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  return AttestationStage.counted('malformed', (stage) => auth(req, res, deps, stage));
}

async function auth(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps, stage: AttestationStage): Promise<void> {
  const request = await readJson(req, (detail) => kbsError.attestation(`deserialize Request: ${detail}`));
  const { version, tee } = (request ?? {}) as Record<string, unknown>;
  stage.reason = 'protocol';
  if (typeof version !== 'string' || !isProtocolVersion(version)) {
    throw kbsError.attestation(
      `KBS Client Protocol Version Mismatch: expect =${KBS_PROTOCOL_VERSION} while the request is ${typeof version === 'string' ? version.slice(0, 32) : 'missing'}`,
    );
  }
  if (!isTeeType(tee)) throw kbsError.attestation('unsupported tee type');
  if (tee === 'sample' && !deps.insecureDevMode) {
    stage.reason = 'sample_refused';
    throw kbsError.attestation('sample evidence proves nothing: it is accepted only when the sealing service runs in insecure development mode');
  }
  stage.reason = 'no_verifier';
  if (!deps.verifiers.has(tee)) throw kbsError.attestation(`no verifier for tee "${tee}" is configured on this sealing service`);
  stage.reason = 'internal';
  const session = deps.sessions.create(tee, DEFAULT_RUNTIME_DATA_HASH);
  setSessionCookie(res, session.id, session.expiresAt);
  // Trustee's challenge: extra-params is the empty string for every TEE but IBM SE.
  sendJson(res, 200, { nonce: session.nonce, 'extra-params': '' });
}

function kbsAttest(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  return AttestationStage.counted('session', (stage) => attest(req, res, deps, stage));
}

async function attest(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps, stage: AttestationStage): Promise<void> {
  const sessionId = cookieOf(req, KBS_SESSION_COOKIE);
  if (sessionId === undefined) throw kbsError.attestation('cookie not found');
  // The body is read (bounded) before the challenge is taken: a client that stalls its body then
  // holds no challenge, and a challenge is 'attesting' only while its evidence is checked. Taking
  // it right after the read, with no wait in between, still lets one /attest of a session through.
  stage.reason = 'malformed';
  const raw = await readBody(req);
  let challenge;
  try {
    stage.reason = 'session';
    challenge = deps.sessions.consumeChallenge(sessionId);
  } catch (error) {
    raw.fill(0);
    throw error;
  }
  stage.reason = 'malformed';
  try {
    let attestation;
    try {
      attestation = parseJson(raw, (detail) => kbsError.attestation(`deserialize Attestation: ${detail}`));
    } finally {
      raw.fill(0);
    }
    const { 'runtime-data': runtimeData, 'tee-evidence': teeEvidence } = (attestation ?? {}) as Record<string, unknown>;
    const initData = attestedInitData(attestation);
    if (typeof runtimeData !== 'object' || runtimeData === null) throw kbsError.attestation('deserialize Attestation: runtime-data missing');
    const { nonce, 'tee-pubkey': rawPubKey } = runtimeData as Record<string, unknown>;
    if (nonce !== challenge.nonce) {
      stage.reason = 'nonce_mismatch';
      throw kbsError.attestation("the nonce in the handshake session is different from the client side in KBS protocol's Attestation message");
    }
    const teePubKey = await attestationTeePubKey(rawPubKey);
    if (typeof teeEvidence !== 'object' || teeEvidence === null) throw kbsError.attestation('deserialize Attestation: tee-evidence missing');
    const primaryEvidence = (teeEvidence as Record<string, unknown>).primary_evidence;
    const additionalEvidence = attestationAdditionalEvidence(teeEvidence as Record<string, unknown>);

    const expected = kbsReportData(challenge.nonce, teePubKey, challenge.hash, additionalEvidence);
    const verifier = deps.verifiers.get(challenge.tee);
    stage.reason = 'no_verifier';
    if (verifier === undefined) throw kbsError.attestation(`no verifier for tee "${challenge.tee}"`);
    stage.reason = 'evidence';
    let claims;
    let appraised;
    try {
      claims = await verifier.verify(primaryEvidence, expected);
      appraised = appraiseInitData(initData, claims, verifier, deps.selfIdentity);
    } catch (error) {
      if (error instanceof KmsError && error.code === 'ATTESTATION_UNAVAILABLE') {
        // Collateral that cannot be fetched just now refuses nothing: a signed 503, which a
        // function rides out as an outage, not a refusal that would make it drop its root key.
        stage.reason = 'collateral_unavailable';
        throw error;
      }
      const reason = error instanceof KmsError ? error.message : 'evidence rejected';
      // Operators see why a pod was refused (claim names and measurements, never secrets).
      deps.log.warn(`attestation refused (tee ${challenge.tee}): ${reason}`);
      throw kbsError.attestation(`verify TEE evidence failed: ${reason}`);
    }
    stage.reason = 'internal';
    const { token, expiresAt } = await deps.tokens.issue(
      challenge.tee,
      claims.claims,
      primaryRuntimeData(challenge.nonce, teePubKey, additionalEvidence),
      workloadIdentity(claims),
      appraised,
    );
    deps.sessions.attested(sessionId, token, expiresAt);
    setSessionCookie(res, sessionId, expiresAt);
    sendJson(res, 200, { token });
  } catch (error) {
    deps.sessions.failed(sessionId);
    throw error;
  }
}

async function kbsRootKey(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  const { verified } = await authenticate(req, deps, { cookie: true });
  const key = deps.core.currentKey();
  try {
    const jwe = await encryptToTee(key, verified.teePubKey);
    sendJson(res, 200, jwe);
  } finally {
    key.fill(0);
  }
}

// ---- the sealer's own API ----

async function peerRootKey(deps: SealerHandlerDeps, verified: VerifiedToken): Promise<unknown> {
  const key = deps.core.currentKey();
  try {
    return await encryptToTee(key, verified.teePubKey);
  } finally {
    key.fill(0);
  }
}

/** Unauthenticated: the key this service signs its answers with, and evidence binding it to the caller's nonce. */
async function sealerAttestation(req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  const nonce = nonceOf(req);
  await drainBody(req);
  // Anyone who reaches this port may ask, without credentials: its quotes are bounded as the functions' are.
  const { tee, evidence } = await quoteFor('attestation', req, () => deps.identity.evidenceFor(deps.identity.signingJwk, nonce));
  sendJson(res, 200, { key: deps.identity.signingJwk, tee, evidence });
}

function nonceOf(req: IncomingMessage): string {
  const nonce = new URL(req.url ?? '/', 'https://sealer.invalid').searchParams.get('nonce');
  return asSealerError('BAD_REQUEST', () => parseEvidenceNonce(nonce ?? undefined));
}

/**
 * 200 when this replica can serve: unsealed, uninitialized, a single instance, sealed by an
 * operator, or sealed while no peer holds the key (its shares are needed, so it must be reachable). 503 while a peer may still
 * hand it the key: a rolling restart then waits before it restarts the next replica.
 */
async function readiness(_req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  const status = deps.core.status();
  const ready = !status.sealed || !status.initialized || deps.core.sealedByOperator || (deps.noPeerHoldsKey?.() ?? true);
  sendJson(res, ready ? 200 : 503, { ready, sealed: status.sealed });
}

async function sealStatus(_req: IncomingMessage, res: ServerResponse, deps: SealerHandlerDeps): Promise<void> {
  await deps.core.recheckAlarm().catch(() => undefined); // storage unreachable: the status as it stands
  sendJson(res, 200, deps.core.status());
}

type AdminAction = (body: unknown, deps: SealerHandlerDeps, req: IncomingMessage, verified: VerifiedToken) => Promise<unknown>;

/**
 * An admin route: the caller's attestation token (Bearer only: a cookie would be sent by anyone
 * who holds it), a proof of possession of its TEE key for this very request, then the admin
 * policy's grant of `operation` to the identity the token names. Only a granted call spends its
 * proof's jti, in the memory of the grant entry that allows it (the identity, or the agent policy
 * that admits it): each memory is bounded, so their number and size are bounded by the policy; a
 * forbidden caller fills none, and a granted one only its grant's.
 */
function admin(operation: AdminOperation, action: AdminAction, options: { body: boolean } = { body: true }): Handler {
  return async (req, res, deps) => {
    const { token, verified } = await authenticate(req, deps, { cookie: false });
    const raw = await readBody(req);
    try {
      const grant = deps.adminPolicy.grantFor(operation, verified.identity, verified.agentPolicy);
      const proof = await deps.proofs.verify(singleHeader(req.headers.dpop), {
        method: req.method ?? '',
        target: req.url ?? '',
        token,
        body: raw,
        teePubKey: verified.teePubKey,
        holder: grant ?? verified.identity,
      });
      if (grant === undefined) {
        const agentPolicy = verified.agentPolicy === undefined ? '' : `, agent policy ${verified.agentPolicy}`;
        deps.log.warn(`admin call refused: "${operation}" is not granted to identity ${verified.identity}${agentPolicy} (tee ${verified.tee})`);
        throw new SealerError('FORBIDDEN', `the admin policy does not grant "${operation}" to this workload (identity ${verified.identity}${agentPolicy})`);
      }
      deps.proofs.spend(proof);
      const body = options.body ? parseJson(raw, (detail) => new SealerError('BAD_REQUEST', `body must be JSON: ${detail}`)) : undefined;
      sendJson(res, 200, await action(body, deps, req, verified));
    } finally {
      raw.fill(0);
    }
  };
}

/** The caller's attestation token: Bearer (and, for KBS resources, the session cookie as Trustee). */
async function authenticate(req: IncomingMessage, deps: SealerHandlerDeps, options: { cookie: boolean }): Promise<{ token: string; verified: VerifiedToken }> {
  const fromCookie = options.cookie ? deps.sessions.tokenOf(cookieOf(req, KBS_SESSION_COOKIE)) : undefined;
  const token = fromCookie ?? bearerToken(authorizationHeader(req)) ?? undefined;
  if (token === undefined) throw kbsError.tokenNotFound();
  try {
    return { token, verified: await deps.tokens.verify(token) };
  } catch (error) {
    throw kbsError.tokenInvalid(error instanceof KmsError ? error.message : 'invalid token');
  }
}

function singleHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? undefined : value;
}

// ---- HTTP plumbing ----

function isProtocolVersion(version: string): boolean {
  // Trustee: semver VersionReq "=0.4.0" (build metadata is ignored by semver precedence).
  return /^0\.4\.0(\+[0-9A-Za-z.-]+)?$/.test(version);
}

function pathOf(url: string | undefined): string {
  const raw = (url ?? '/').split('?')[0] ?? '/';
  return raw.length > 1 ? raw.replace(/\/+$/, '') : raw;
}

/** Paths carry no secrets, but an unknown one is shortened and stripped of control characters. */
function loggablePath(path: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = path.replace(/[\u0000-\u001f\u007f]/g, '?');
  return clean.length > 120 ? `${clean.slice(0, 120)}…` : clean;
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return /^[0-9a-f]{32}$/.test(value) ? value : undefined;
    }
  }
  return undefined;
}

function setSessionCookie(res: ServerResponse, id: string, expiresAt: number): void {
  res.setHeader(
    'Set-Cookie',
    `${KBS_SESSION_COOKIE}=${id}; Expires=${new Date(expiresAt).toUTCString()}; Path=${KBS_PREFIX}; Secure; HttpOnly; SameSite=Strict`,
  );
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const tooLarge = () => new SealerError('PAYLOAD_TOO_LARGE', `request body larger than ${MAX_BODY_BYTES} bytes`);
  if (Number(req.headers['content-length']) > MAX_BODY_BYTES) {
    req.resume(); // dropped as it arrives, so that the 413 reaches the client
    throw tooLarge();
  }
  try {
    return await readBounded(req, MAX_BODY_BYTES);
  } catch (error) {
    if ((error as BodyError).kind === 'too-large') throw tooLarge();
    // The client closed the connection mid-body, or Node's parser refused its framing (and answered 400).
    throw new SealerError('BAD_REQUEST', 'the request body was cut short or malformed');
  }
}

async function readJson(req: IncomingMessage, invalid: (detail: string) => SealerError): Promise<unknown> {
  const body = await readBody(req);
  try {
    return parseJson(body, invalid);
  } finally {
    body.fill(0);
  }
}

function parseJson(body: Buffer, invalid: (detail: string) => SealerError): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid('not valid JSON');
  }
}

async function drainBody(req: IncomingMessage): Promise<void> {
  (await readBody(req)).fill(0);
}

/** Answers to requests that carried a nonce are signed (docs/sealer-protocol.md, "Functions attest the sealing service"). */
const answerSigning = new WeakMap<ServerResponse, { identity: SealerIdentity; method: string; target: string; nonce: string }>();

function sendJson(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' };
  const signing = answerSigning.get(res);
  if (signing !== undefined) {
    const { identity, method, target, nonce } = signing;
    headers[ANSWER_SIGNATURE_HEADER] = identity.signAnswer({ htm: method, htu: target, status, nonce, bdy: digest(Buffer.from(text)) });
  }
  res.writeHead(status, headers);
  res.end(text);
}

function sendError(res: ServerResponse, error: unknown, deps: SealerHandlerDeps): void {
  const problem = problemOf(error, (label) => deps.log.error(`internal error (${label})`));
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (problem.status === 413) res.setHeader('Connection', 'close');
  if (problem.status === 503) res.setHeader('Retry-After', '5');
  // Not a bug, but not the caller's doing either: the operator needs to see which dependency failed.
  if (problem.body.type === sealerProblems.attestationUnavailable) deps.log.warn(String(problem.body.detail));
  sendJson(res, problem.status, problem.body, 'application/problem+json');
}
