// The sealer's KBS endpoints (Trustee protocol 0.4.0) against a real sealer process over HTTPS:
// the happy path on the wire, and its refusals.
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { KbsClient, type KbsHttpResponse } from '../../shared/kbs/client.js';
import { kbsReportData, type TeePubKey } from '../../shared/kbs/protocol.js';
import { decryptFromKbs, generateTeeKeyPair, type TeeKeyPair } from '../../shared/kbs/tee-key.js';
import canonicalize from 'canonicalize';
import type { FlattenedJWE } from 'jose';
import { ProtocolClient, type Answer } from '../support/protocol-client.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { openAsTrusteeClient, serdeProtectedHeader } from '../support/trustee-serde.js';

const ROOT_KEY = randomBytes(32);
const RESOURCE = '/kbs/v0/resource/tee-kms/root-key/current';
const KBS = 'https://github.com/confidential-containers/kbs/errors/';
const secrets = new SecretRegistry();
secrets.add(ROOT_KEY);

let sealer: SealerProcess;
let kbs: KbsClient;
let teeKey: TeeKeyPair;

beforeAll(async () => {
  sealer = await startSealerProcess({
    env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_NONCE_TTL_SECONDS: '1', KMS_SEALER_TOKEN_TTL_SECONDS: '2' },
  });
  teeKey = await generateTeeKeyPair();
  // A raw client: its request() speaks HTTPS to the sealer (CA pinned) without the protocol logic.
  kbs = new KbsClient({ url: sealer.url, ca: await sealer.caPem(), attester: new SampleAttester(), teeKey });
});

afterAll(async () => {
  kbs?.close();
  await sealer?.cleanup();
  for (const logs of allLogs) expect(secrets.leaksIn(logs())).toEqual([]);
});

function cookieOf(response: KbsHttpResponse): string {
  const header = response.headers['set-cookie'];
  const line = (Array.isArray(header) ? header : [header ?? ''])[0] ?? '';
  return line.split(';')[0]!;
}

async function auth(
  body: unknown = { version: '0.4.0', tee: 'sample', 'extra-params': '' },
): Promise<{ response: KbsHttpResponse; nonce: string; cookie: string }> {
  const response = await kbs.request('POST', '/kbs/v0/auth', body);
  const nonce = (response.body as { nonce?: string } | undefined)?.nonce ?? '';
  const cookie = cookieOf(response);
  // The session id authenticates resource requests (cookie mode): it must not be logged either.
  if (cookie.length > 20) secrets.addText(cookie.slice(cookie.indexOf('=') + 1));
  return { response, nonce, cookie };
}

async function attestation(nonce: string, jwk: TeePubKey | Record<string, unknown>, evidenceNonce = nonce, evidenceJwk = jwk) {
  const reportData = kbsReportData(evidenceNonce, evidenceJwk as TeePubKey);
  return {
    'runtime-data': { nonce, 'tee-pubkey': jwk },
    'tee-evidence': { primary_evidence: await new SampleAttester().getEvidence(reportData), additional_evidence: '' },
  };
}

async function attest(cookie: string, body: unknown): Promise<KbsHttpResponse> {
  return kbs.request('POST', '/kbs/v0/attest', body, { Cookie: cookie });
}

function problem(response: KbsHttpResponse): { type: string; detail: string } {
  return response.body as { type: string; detail: string };
}

describe('the log scan', () => {
  it('would find a leaked key in any of its encodings', () => {
    for (const encoding of ['base64', 'base64url', 'hex'] as const) {
      expect(secrets.leaksIn(`{"message":"x ${ROOT_KEY.toString(encoding)} y"}`)).toHaveLength(1);
    }
    expect(secrets.leaksIn('{"level":"info","component":"sealer","method":"POST","path":"/kbs/v0/auth","status":200,"ms":1.23}')).toEqual([]);
  });
});

describe('KBS round trip on the wire', () => {
  it('auth answers a Trustee challenge and a kbs-session-id cookie; attest a JWT; the resource a JWE of the root key', async () => {
    const { response, nonce, cookie } = await auth();
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ nonce, 'extra-params': '' });
    expect(Buffer.from(nonce, 'base64').length).toBe(32);
    expect(cookie).toMatch(/^kbs-session-id=[0-9a-f]{32}$/);

    const attested = await attest(cookie, await attestation(nonce, teeKey.publicJwk));
    expect(attested.status).toBe(200);
    const token = (attested.body as { token: string }).token;
    secrets.addText(token);
    const [header, payload] = token
      .split('.')
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
    expect(header).toMatchObject({ alg: 'ES256', typ: 'JWT', jwk: { kty: 'EC', crv: 'P-256' } });
    expect(payload).toMatchObject({ iss: 'tee-kms-sealer', tee: 'sample', customized_claims: { runtime_data: { nonce, 'tee-pubkey': teeKey.publicJwk } } });
    expect(payload.exp - payload.iat).toBe(2);

    // Bearer token alone (Trustee's token mode, any case, 1*SP as RFC 6750) and session cookie alone (Trustee's cookie mode).
    for (const headers of [{ Authorization: `Bearer ${token}` }, { Authorization: `bearer   ${token}` }, { Cookie: cookie }] as Record<string, string>[]) {
      const resource = await kbs.request('GET', RESOURCE, undefined, headers);
      expect(resource.status).toBe(200);
      expect(Object.keys(resource.body as object).sort()).toEqual(['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
      expect((await decryptFromKbs(resource.body, teeKey.privateKey)).equals(ROOT_KEY)).toBe(true);
    }
    // The token given twice: Node keeps the first in `headers`, a proxy on the way may read the last; refused.
    const twice = await kbs.request('GET', RESOURCE, undefined, { Authorization: [`Bearer ${token}`, `Bearer ${token}`] } as unknown as Record<string, string>);
    expect(problem(twice)).toMatchObject({ type: 'https://github.com/confidential-containers/kbs/errors/TokenNotFound', status: 401 });
  });

  it('answers errors as RFC 7807 problems with Trustee types', async () => {
    const response = await kbs.request('GET', RESOURCE);
    expect(response.status).toBe(401);
    expect(response.headers['content-type']).toBe('application/problem+json');
    expect(problem(response)).toMatchObject({ type: 'https://github.com/confidential-containers/kbs/errors/TokenNotFound', status: 401 });
    const garbage = await kbs.request('GET', RESOURCE, undefined, { Authorization: 'Bearer not.a.token' });
    expect(garbage.status).toBe(401);
    expect(problem(garbage).type).toBe('https://github.com/confidential-containers/kbs/errors/TokenVerifierError');
    // Not a Bearer credential (a tab after the scheme, another scheme): no token was sent.
    for (const authorization of ['Bearer\tnot.a.token', 'Basic bm90OmE=']) {
      const malformed = await kbs.request('GET', RESOURCE, undefined, { Authorization: authorization });
      expect(problem(malformed)).toMatchObject({ type: 'https://github.com/confidential-containers/kbs/errors/TokenNotFound', status: 401 });
    }
  });
});

describe('KBS refusals', () => {
  it('refuses another protocol version and an unknown tee at auth', async () => {
    const old = await auth({ version: '0.1.1', tee: 'sample', 'extra-params': '' });
    expect(old.response.status).toBe(401);
    expect(problem(old.response)).toMatchObject({ type: 'https://github.com/confidential-containers/kbs/errors/AttestationError' });
    expect(problem(old.response).detail).toContain('Version Mismatch');
    expect((await auth({ version: '0.4.0', tee: 'snp', 'extra-params': '' })).response.status).toBe(401);
  });

  it('refuses a wrong nonce', async () => {
    const { nonce, cookie } = await auth();
    const wrong = randomBytes(32).toString('base64');
    expect(wrong).not.toBe(nonce);
    const response = await attest(cookie, await attestation(wrong, teeKey.publicJwk));
    expect(response.status).toBe(401);
    expect(problem(response).detail).toContain('nonce in the handshake session is different');
  });

  it('never accepts a nonce twice', async () => {
    const { nonce, cookie } = await auth();
    const body = await attestation(nonce, teeKey.publicJwk);
    const first = await attest(cookie, body);
    expect(first.status).toBe(200);
    secrets.addText((first.body as { token: string }).token);
    const replay = await attest(cookie, body);
    expect(replay.status).toBe(401);
    expect(problem(replay).detail).toContain('already used');
  });

  it('consumes the nonce on a failed attempt too', async () => {
    const { nonce, cookie } = await auth();
    expect((await attest(cookie, await attestation(nonce, teeKey.publicJwk, 'other'))).status).toBe(401);
    const retry = await attest(cookie, await attestation(nonce, teeKey.publicJwk));
    expect(retry.status).toBe(401);
    expect(problem(retry).detail).toMatch(/session not found|already used/);
  });

  it('refuses evidence whose report_data binds another tee-pubkey (report_data mismatch)', async () => {
    const { nonce, cookie } = await auth();
    const other = await generateTeeKeyPair();
    const response = await attest(cookie, await attestation(nonce, teeKey.publicJwk, nonce, other.publicJwk));
    expect(response.status).toBe(401);
    expect(problem(response).detail).toContain('report_data does not bind');
  });

  it('refuses a tee-pubkey JWK with an extra member, even when the evidence hashes it', async () => {
    const { nonce, cookie } = await auth();
    const withKid = { ...teeKey.publicJwk, kid: 'extra' };
    const response = await attest(cookie, await attestation(nonce, withKid));
    expect(response.status).toBe(401);
    expect(problem(response).detail).toContain('exactly the members kty, crv, alg, x, y');
  });

  it('refuses a tee-pubkey that is not a point on its curve', async () => {
    const { nonce, cookie } = await auth();
    const offCurve = { ...teeKey.publicJwk, y: Buffer.alloc(32, 7).toString('base64url') };
    const response = await attest(cookie, await attestation(nonce, offCurve));
    expect(response.status).toBe(401);
    expect(problem(response).detail).toContain('not a valid public key');
  });

  it('refuses attest without the session cookie, and device evidence it cannot verify', async () => {
    const { nonce, cookie } = await auth();
    const body = await attestation(nonce, teeKey.publicJwk);
    expect(problem(await kbs.request('POST', '/kbs/v0/attest', body)).detail).toBe('cookie not found');
    const withDevices = { ...body, 'tee-evidence': { ...body['tee-evidence'], additional_evidence: '{"nvidia":{}}' } };
    expect(problem(await attest(cookie, withDevices)).detail).toContain('additional_evidence');
  });

  it('expires the session when the nonce is not answered in time', async () => {
    const { nonce, cookie } = await auth();
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    const response = await attest(cookie, await attestation(nonce, teeKey.publicJwk));
    expect(response.status).toBe(401);
    expect(problem(response).detail).toContain('session expired');
  });

  it('expires tokens and attested sessions', async () => {
    const { nonce, cookie } = await auth();
    const token = ((await attest(cookie, await attestation(nonce, teeKey.publicJwk))).body as { token: string }).token;
    secrets.addText(token);
    expect((await kbs.request('GET', RESOURCE, undefined, { Authorization: `Bearer ${token}` })).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 2_600));
    const expired = await kbs.request('GET', RESOURCE, undefined, { Authorization: `Bearer ${token}`, Cookie: cookie });
    expect(expired.status).toBe(401);
    expect(problem(expired)).toMatchObject({ type: 'https://github.com/confidential-containers/kbs/errors/TokenVerifierError' });
    expect(problem(expired).detail).toContain('expired');
  });

  it('answers 404 for other resources, after checking the token', async () => {
    expect((await kbs.request('GET', '/kbs/v0/resource/default/key/other')).status).toBe(401);
    const token = await kbs.token();
    secrets.addText(token);
    const response = await kbs.request('GET', '/kbs/v0/resource/default/key/other', undefined, { Authorization: `Bearer ${token}` });
    expect(response.status).toBe(404);
    expect(problem(response).type).toBe('https://github.com/confidential-containers/kbs/errors/InvalidRequestPath');
  });

  it('logs one line per request: method, path, status; announces development mode on stderr', async () => {
    await sealer.settle();
    const lines = sealer.requestLines();
    expect(lines).toContain('POST /kbs/v0/auth 200');
    expect(lines).toContain('GET /kbs/v0/resource/tee-kms/root-key/current 401');
    // The functions' JSON lines, with the component, and only these fields (never headers, bodies or query).
    const request = sealer.lines().find((line) => line.method === 'POST' && line.path === '/kbs/v0/auth');
    expect(Object.keys(request ?? {}).sort()).toEqual(['component', 'level', 'method', 'ms', 'path', 'status', 'time']);
    expect(request).toMatchObject({ level: 'info', component: 'sealer', status: 200, ms: expect.any(Number) });
    expect(sealer.stderr()).toContain('INSECURE DEVELOPMENT MODE');
  });
});

// A Trustee client (guest-components' kbs_protocol) as its messages look on the wire, built from
// Trustee's published shapes (kbs/docs/kbs_attestation_protocol.md, kbs-types) with the test's own
// client and hashing, never the project's KBS modules.
describe('Trustee clients (kbs_protocol) on the wire', () => {
  let client: ProtocolClient;

  beforeAll(async () => {
    client = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem() });
  });

  /** RCAR Request as rcar_client.rs sends it (extra-params lists the hash algorithms it supports). */
  async function trusteeAuth(): Promise<{ nonce: string; cookie: string }> {
    const answer = await client.send('POST', '/kbs/v0/auth', {
      body: { version: '0.4.0', tee: 'sample', 'extra-params': { 'supported-hash-algorithms': ['sha256', 'sha384', 'sha512'] } },
      token: null,
      nonce: false,
    });
    expect(answer.status).toBe(200);
    const setCookie = answer.headers['set-cookie'];
    const cookie = (Array.isArray(setCookie) ? setCookie : [setCookie ?? ''])[0]!.split(';')[0]!;
    secrets.addText(cookie.slice(cookie.indexOf('=') + 1));
    return { nonce: answer.json<{ nonce: string }>().nonce, cookie };
  }

  /** SHA-384(JCS({tee-pubkey, nonce, additional-evidence})) ‖ zeros: what kbs_protocol puts in the report data. */
  function reportDataOf(nonce: string, teePubKey: object, additionalEvidence: string): Buffer {
    const json = canonicalize({ 'tee-pubkey': teePubKey, nonce, 'additional-evidence': additionalEvidence })!;
    return Buffer.concat([createHash('sha384').update(json, 'utf8').digest(), Buffer.alloc(16)]);
  }

  /** auth → attest with `teePubKey`; the sample evidence binds `boundEvidence`, the message carries `sentEvidence`. */
  async function trusteeAttest(teePubKey: object, sentEvidence: string, boundEvidence = sentEvidence): Promise<Answer> {
    const { nonce, cookie } = await trusteeAuth();
    const report = reportDataOf(nonce, teePubKey, boundEvidence);
    const answer = await client.send('POST', '/kbs/v0/attest', {
      // kbs-types' Attestation: `init-data` is an Option, serialized as null when the pod has none.
      body: {
        'init-data': null,
        'runtime-data': { nonce, 'tee-pubkey': teePubKey },
        'tee-evidence': { primary_evidence: { svn: '1', report_data: report.toString('base64') }, additional_evidence: sentEvidence },
      },
      token: null,
      nonce: false,
      headers: { Cookie: cookie },
    });
    if (answer.status === 200) secrets.addText(answer.json<{ token: string }>().token);
    return answer;
  }

  async function resource(token: string): Promise<FlattenedJWE> {
    const answer = await client.send('GET', RESOURCE, { token, nonce: false });
    expect(answer.status).toBe(200);
    return answer.json<FlattenedJWE>();
  }

  function ecKey(namedCurve: 'prime256v1' | 'secp521r1', crv: string): { privateKey: KeyObject; jwk: Record<string, string> } {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
    const { x, y } = publicKey.export({ format: 'jwk' });
    return { privateKey, jwk: { kty: 'EC', crv, alg: 'ECDH-ES+A256KW', x: x!, y: y! } };
  }

  it.each([
    ['P-256', 'prime256v1'],
    ['P-521', 'secp521r1'],
  ] as const)('EC %s key, additional_evidence "{}" (the published example): the root key opens with the AAD serde_json rebuilds', async (crv, curve) => {
    const { privateKey, jwk } = ecKey(curve, crv);
    const attested = await trusteeAttest(jwk, '{}');
    expect(attested.status).toBe(200);
    const token = attested.json<{ token: string }>().token;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { customized_claims: { runtime_data: unknown } };
    expect(claims.customized_claims.runtime_data).toEqual({ 'additional-evidence': '{}', nonce: expect.any(String), 'tee-pubkey': jwk });
    const jwe = await resource(token);
    expect(Buffer.from(jwe.protected!, 'base64url').toString()).toBe(serdeProtectedHeader(jwe.protected!));
    expect((await openAsTrusteeClient(jwe, privateKey)).equals(ROOT_KEY)).toBe(true);
    if (crv === 'P-521') {
      const admin = await client.send('POST', '/tee-kms/v1/seal', { token, nonce: false });
      expect(admin.status).toBe(401);
      expect(admin.json<{ detail: string }>().detail).toContain('this token binds a P-521 key');
    }
  });

  it('RSA key (RSA-OAEP-256, as kbs_protocol exports it): bound as sent, the root key encrypted to it; admin calls refused clearly', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const { n, e } = publicKey.export({ format: 'jwk' });
    const jwk = { kty: 'RSA', alg: 'RSA-OAEP-256', n: n!, e: e! };
    // Bound to another RSA key's JWK: refused.
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const { nonce, cookie } = await trusteeAuth();
    const mismatch = await client.send('POST', '/kbs/v0/attest', {
      body: {
        'runtime-data': { nonce, 'tee-pubkey': jwk },
        'tee-evidence': {
          primary_evidence: { svn: '1', report_data: reportDataOf(nonce, { ...jwk, n: other.n }, '').toString('base64') },
          additional_evidence: '',
        },
      },
      token: null,
      nonce: false,
      headers: { Cookie: cookie },
    });
    expect(mismatch.status).toBe(401);
    expect(mismatch.json<{ detail: string }>().detail).toContain('report_data does not bind');

    const attested = await trusteeAttest(jwk, '');
    expect(attested.status).toBe(200);
    const token = attested.json<{ token: string }>().token;
    const jwe = await resource(token);
    expect(Buffer.from(jwe.protected!, 'base64url').toString()).toBe('{"alg":"RSA-OAEP-256","enc":"A256GCM"}');
    expect((await openAsTrusteeClient(jwe, privateKey)).equals(ROOT_KEY)).toBe(true);

    // Proofs of possession are ES256: whatever proof comes with it, an RSA token is told why, with a 401 problem.
    for (const dpop of [undefined, await client.proof({ method: 'POST', target: '/tee-kms/v1/seal', body: Buffer.alloc(0), token })]) {
      const answer = await client.send('POST', '/tee-kms/v1/seal', { token, nonce: false, ...(dpop === undefined ? {} : { headers: { DPoP: dpop } }) });
      expect(answer.status).toBe(401);
      expect(answer.problemType).toBe('urn:tee-kms:sealer:proof-invalid');
      expect(answer.json<{ detail: string }>().detail).toContain('EC P-256 tee-pubkey');
    }
  });

  it('refuses RSA1_5 and short RSA keys at attest, naming the rule', async () => {
    const { n, e } = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const rsa15 = await trusteeAttest({ kty: 'RSA', alg: 'RSA1_5', n, e }, '');
    expect(rsa15.status).toBe(401);
    expect(rsa15.problemType).toBe(`${KBS}AttestationError`);
    expect(rsa15.json<{ detail: string }>().detail).toContain('RSA1_5 is not accepted');
    const short = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    const weak = await trusteeAttest({ kty: 'RSA', alg: 'RSA-OAEP-256', n: short.n, e: short.e }, '');
    expect(weak.status).toBe(401);
    expect(weak.json<{ detail: string }>().detail).toContain('2048 to 8192 bits');
  });

  it('binds additional_evidence as sent: evidence made for one string does not verify with another', async () => {
    const { jwk } = ecKey('prime256v1', 'P-256');
    for (const [sent, bound] of [
      ['', '{}'],
      ['{}', ''],
      [' {}', '{}'],
    ] as const) {
      const answer = await trusteeAttest(jwk, sent, bound);
      expect(answer.status).toBe(401);
      expect(answer.json<{ detail: string }>().detail).toContain('report_data does not bind');
    }
    expect((await trusteeAttest(jwk, ' {}')).status).toBe(200);
  });

  it('refuses device evidence it cannot verify with a problem naming the device TEE', async () => {
    const { jwk } = ecKey('prime256v1', 'P-256');
    // guest-components evidence_provider: serde_json::to_string(HashMap<Tee, evidence>), bound into the report data.
    const devices = JSON.stringify({ nvidia: { evidence_list: [{ certificate: 'MIIB', evidence: 'AAAA' }], arch: 'HOPPER' } });
    const answer = await trusteeAttest(jwk, devices);
    expect(answer.status).toBe(401);
    expect(answer.problemType).toBe(`${KBS}AttestationError`);
    const body = answer.json<{ detail: string; claim: string; deviceTees: string[] }>();
    expect(body.detail).toContain('attestation refused: additional_evidence');
    expect(body.detail).toContain('"nvidia"');
    expect(body).toMatchObject({ claim: 'additional_evidence', deviceTees: ['nvidia'] });
    const two = await trusteeAttest(jwk, JSON.stringify({ sampledevice: { svn: '1', report_data: 'AA==' }, hygondcu: {} }));
    expect(two.json<{ deviceTees: string[] }>().deviceTees).toEqual(['sampledevice', 'hygondcu']);
    const malformed = await trusteeAttest(jwk, '[]');
    expect(malformed.status).toBe(401);
    expect(malformed.json<{ detail: string }>().detail).toContain('additional_evidence must be "" or a JSON object');
  });
});

describe('production mode (no insecure development mode)', () => {
  let production: SealerProcess;

  beforeAll(async () => {
    // KMS_ACCESS_LOG is the functions' switch: the sealer logs its requests regardless.
    production = await startSealerProcess({
      env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_INSECURE_DEV_MODE: 'false', KMS_ACCESS_LOG: 'false' },
    });
  });

  afterAll(async () => {
    await production?.cleanup();
  });

  it('refuses sample evidence at auth: no nonce is issued', async () => {
    const raw = new KbsClient({ url: production.url, ca: await production.caPem(), attester: new SampleAttester(), teeKey });
    try {
      const response = await raw.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' });
      expect(response.status).toBe(401);
      expect(problem(response).detail).toContain('insecure development mode');
      expect(response.headers['set-cookie']).toBeUndefined();
      expect(production.stderr()).not.toContain('INSECURE');
      expect(production.messages()).toContain('verifiers: none (no TEE can attest)');
      await production.settle();
      expect(production.requestLines()).toContain('POST /kbs/v0/auth 401');
    } finally {
      raw.close();
    }
  });
});

describe('load and broken requests', () => {
  const MAX_SESSIONS = 20;
  let small: SealerProcess;
  let client: KbsClient;

  beforeAll(async () => {
    small = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'), KMS_SEALER_MAX_SESSIONS: String(MAX_SESSIONS) } });
    client = new KbsClient({ url: small.url, ca: await small.caPem(), attester: new SampleAttester(), teeKey });
  });
  afterAll(async () => {
    client?.close();
    await small?.cleanup();
  });

  it('a flood of /auth (no credentials needed) cannot lock clients out: the oldest unanswered challenges give way', async () => {
    const flood = [];
    for (let i = 0; i < 3 * MAX_SESSIONS; i++)
      flood.push(await client.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' }));
    expect(flood.map((r) => r.status)).toEqual(flood.map(() => 200));
    // A client that answers its challenge gets its token and the root key.
    const token = await client.token();
    secrets.addText(token);
    const resource = await client.request('GET', RESOURCE, undefined, { Authorization: `Bearer ${token}` });
    expect(resource.status).toBe(200);
    expect((await decryptFromKbs(resource.body, teeKey.privateKey)).equals(ROOT_KEY)).toBe(true);
    // The first challenge of the flood was given up; answering it now says so.
    const first = flood[0]!;
    const late = await client.request('POST', '/kbs/v0/attest', await attestation((first.body as { nonce: string }).nonce, teeKey.publicJwk), {
      Cookie: cookieOf(first),
    });
    expect(late.status).toBe(401);
    expect(problem(late).detail).toBe('session not found (expired, or given up under load); start again at /auth');
  });

  it('an attacker who stalls /attest bodies holds no challenge: honest clients still get /auth and attest', async () => {
    // The attacker needs no KBS client: raw HTTPS for /auth, then raw TLS for an /attest whose
    // body never comes (Content-Length 1000, one byte sent), on as many sockets as there are slots.
    const ca = await small.caPem();
    const { hostname, port } = new URL(small.url);
    const rawAuth = () =>
      new Promise<string>((resolve, reject) => {
        const body = JSON.stringify({ version: '0.4.0', tee: 'sample', 'extra-params': '' });
        const req = httpsRequest(
          {
            host: hostname,
            port: Number(port),
            ca,
            servername: 'localhost',
            method: 'POST',
            path: '/kbs/v0/auth',
            agent: false,
            headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
          },
          (res) => {
            res.resume();
            res.on('end', () =>
              res.statusCode === 200 ? resolve(String(res.headers['set-cookie']?.[0] ?? '').split(';')[0]!) : reject(new Error(`auth ${res.statusCode}`)),
            );
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const stalled: TLSSocket[] = [];
    const stall = (cookie: string) =>
      new Promise<void>((resolve, reject) => {
        const socket = tlsConnect({ host: hostname, port: Number(port), ca, servername: 'localhost' }, () =>
          socket.write(
            `POST /kbs/v0/attest HTTP/1.1\r\nHost: localhost\r\nCookie: ${cookie}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`,
            (error) => (error ? reject(error) : resolve()),
          ),
        );
        socket.on('error', () => {});
        stalled.push(socket);
      });
    try {
      // As many as there are slots: were a stalled /attest to hold its challenge, none would be left.
      for (let i = 0; i < MAX_SESSIONS; i++) {
        const cookie = await rawAuth();
        secrets.addText(cookie.slice(cookie.indexOf('=') + 1));
        await stall(cookie);
      }
      // Let the sealer take every stalled request in (it answers none of them).
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(stalled.every((socket) => !socket.destroyed)).toBe(true);

      const honest = await client.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' });
      expect(honest.status).toBe(200);
      const token = await client.token();
      secrets.addText(token);
      const resource = await client.request('GET', RESOURCE, undefined, { Authorization: `Bearer ${token}` });
      expect(resource.status).toBe(200);
      expect((await decryptFromKbs(resource.body, teeKey.privateKey)).equals(ROOT_KEY)).toBe(true);
    } finally {
      for (const socket of stalled) socket.destroy();
    }
  });

  it('two /attest of one session sent at once: one is answered a token, the other refused, its nonce used', async () => {
    const { nonce, cookie } = await (async () => {
      const response = await client.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' });
      return { nonce: (response.body as { nonce: string }).nonce, cookie: cookieOf(response) };
    })();
    secrets.addText(cookie.slice(cookie.indexOf('=') + 1));
    const body = Buffer.from(JSON.stringify(await attestation(nonce, teeKey.publicJwk)));
    const ca = await small.caPem();
    const { hostname, port } = new URL(small.url);
    // Both requests wait with all but their last byte sent, then both bodies complete together.
    const sockets: TLSSocket[] = [];
    const answers = await new Promise<string[]>((resolve) => {
      const texts = ['', ''];
      let connected = 0;
      let closed = 0;
      for (let i = 0; i < 2; i++) {
        const socket = tlsConnect({ host: hostname, port: Number(port), ca, servername: 'localhost' }, () => {
          socket.write(
            `POST /kbs/v0/attest HTTP/1.1\r\nHost: localhost\r\nCookie: ${cookie}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
          );
          socket.write(body.subarray(0, body.length - 1));
          if (++connected === 2) setTimeout(() => sockets.forEach((s) => s.write(body.subarray(body.length - 1))), 300);
        });
        socket.on('data', (chunk: Buffer) => (texts[i] += chunk.toString('latin1')));
        socket.on('error', () => {});
        socket.once('close', () => ++closed === 2 && resolve(texts));
        sockets.push(socket);
      }
    });
    for (const text of answers) {
      const token = /"token":"([^"]+)"/.exec(text)?.[1];
      if (token !== undefined) secrets.addText(token);
    }
    const statuses = answers.map((text) => Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1])).sort();
    expect(statuses).toEqual([200, 401]);
    expect(answers.find((text) => text.startsWith('HTTP/1.1 401 '))).toContain('already used');
  });

  it('refuses sample evidence whose svn would swell the token (it is kept for the token lifetime)', async () => {
    const big = new KbsClient({ url: small.url, ca: await small.caPem(), attester: new SampleAttester('x'.repeat(65)), teeKey });
    try {
      await expect(big.token()).rejects.toThrow();
      const { nonce, cookie } = await (async () => {
        const response = await big.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' });
        return { nonce: (response.body as { nonce: string }).nonce, cookie: cookieOf(response) };
      })();
      const reportData = kbsReportData(nonce, teeKey.publicJwk);
      const body = {
        'runtime-data': { nonce, 'tee-pubkey': teeKey.publicJwk },
        'tee-evidence': { primary_evidence: await new SampleAttester('x'.repeat(65)).getEvidence(reportData), additional_evidence: '' },
      };
      const refused = await big.request('POST', '/kbs/v0/attest', body, { Cookie: cookie });
      expect(refused.status).toBe(401);
      expect(problem(refused).detail).toContain('svn must be a string of at most 64 characters');
    } finally {
      big.close();
    }
  });

  it("a body cut short or badly framed is the client's 400, never logged as an internal error", async () => {
    const ca = await small.caPem();
    const { hostname, port } = new URL(small.url);
    const send = (bytes: string, closeAfterMs: number) =>
      new Promise<string>((resolve) => {
        const socket = tlsConnect({ host: hostname, port: Number(port), ca, servername: 'localhost' }, () => socket.write(bytes));
        let answer = '';
        const timer = setTimeout(() => socket.destroy(), closeAfterMs);
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
        socket.on('error', () => {});
        socket.once('close', () => (clearTimeout(timer), resolve(answer)));
      });
    const head = (path: string, framing: string) => `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
    expect(await send(`${head('/kbs/v0/auth', 'Content-Length: 100')}{"version"`, 300)).toBe('');
    expect(await send(`${head('/kbs/v0/auth', 'Transfer-Encoding: chunked')}zz\r\n\r\n`, 5_000)).toMatch(/^HTTP\/1\.1 400 /);
    await small.settle();
    expect(small.logs()).not.toContain('internal error');
    expect((await client.request('POST', '/kbs/v0/auth', { version: '0.4.0', tee: 'sample', 'extra-params': '' })).status).toBe(200);
  });
});
