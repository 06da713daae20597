/**
 * The sealing service proves itself to its clients (docs/sealer-protocol.md, "Functions attest the
 * sealing service"), checked with this test's own protocol client: GET /tee-kms/v1/attestation
 * answers a signing key made at start with evidence binding it to the caller's nonce, and every
 * answer to a request that carries KMS-Request-Nonce is signed by that key over the request's
 * method, path and nonce and the answer's status and body. A restart makes a new key, and another
 * process holding the same TLS certificate and key (an impostor) signs with a key of its own.
 *
 * Development mode: the service's evidence is `sample` evidence (it proves nothing; what is tested
 * is the binding and the signatures; the TDX case is test/functions/sealer-impostor.test.ts).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bindingReportData, freshNonce, ProtocolClient, sampleEvidenceBinds, type Answer, type SealerAttestation } from '../support/protocol-client.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { writeTlsFiles } from '../support/tls-files.js';

const ROOT_KEY = randomBytes(32);
const IMPOSTOR_ROOT_KEY = randomBytes(32);
const RESOURCE = '/kbs/v0/resource/tee-kms/root-key/current';

let dir: string;
let tls: ReturnType<typeof writeTlsFiles>;
let sealer: SealerProcess;
let client: ProtocolClient;
let attested: SealerAttestation;

function sealerEnv(rootKey: Buffer): Record<string, string> {
  return { KMS_SEALER_ROOT_KEY: rootKey.toString('base64'), KMS_SEALER_TLS_CERT_FILE: tls.certFile, KMS_SEALER_TLS_KEY_FILE: tls.keyFile };
}

async function expectSigned(answer: Answer, by: SealerAttestation = attested): Promise<void> {
  expect(await ProtocolClient.signatureProblem(answer, by.publicKey), `${answer.sent.method} ${answer.sent.target} → ${answer.status}`).toBeUndefined();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-response-signatures-'));
  tls = writeTlsFiles(dir);
  sealer = await startSealerProcess({ env: sealerEnv(ROOT_KEY) });
  client = new ProtocolClient({ url: sealer.url, ca: tls.certPem });
  attested = await client.attestSealer();
});

afterAll(async () => {
  await sealer?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('GET /tee-kms/v1/attestation', () => {
  it('answers an ES256 P-256 key, without credentials, with evidence binding it to the nonce', async () => {
    expect(Object.keys(attested.key).sort()).toEqual(['alg', 'crv', 'kty', 'x', 'y']);
    expect(attested.tee).toBe('sample');
    expect(attested.answer.sent.headers.Authorization).toBeUndefined();
    expect(sampleEvidenceBinds(attested.evidence, attested.nonce, attested.key)).toBe(true);
    // The binding is the KBS one, over the answered JWK as it is (alg included), zero-padded.
    expect(Buffer.from(String(attested.evidence.report_data), 'base64')).toEqual(bindingReportData(attested.nonce, attested.key));
    expect(Buffer.from(String(attested.evidence.report_data), 'base64').subarray(48)).toEqual(Buffer.alloc(16));
  });

  it('keeps one key for the life of the process; each answer binds its own nonce', async () => {
    const again = await client.attestSealer(freshNonce(16));
    expect(again.key).toEqual(attested.key);
    expect(sampleEvidenceBinds(again.evidence, again.nonce, again.key)).toBe(true);
    expect(sampleEvidenceBinds(again.evidence, attested.nonce, again.key)).toBe(false);
    const longest = await client.attestSealer(freshNonce(64));
    expect(sampleEvidenceBinds(longest.evidence, longest.nonce, longest.key)).toBe(true);
  });

  it('refuses a nonce that is not the base64url of 16 to 64 bytes (4xx, no key)', async () => {
    for (const query of ['', '?nonce=', `?nonce=${freshNonce(15)}`, `?nonce=${freshNonce(65)}`, `?nonce=${randomBytes(32).toString('base64')}%2B%2F`]) {
      const answer = await client.send('GET', `/tee-kms/v1/attestation${query}`);
      expect(answer.status, `${query}: ${answer.text}`).toBeGreaterThanOrEqual(400);
      expect(answer.status, `${query}: ${answer.text}`).toBeLessThan(500);
      expect(answer.text).not.toContain(attested.key.x);
    }
  });
});

describe('KMS-Sealer-Signature', () => {
  it('signs every answer to a request with KMS-Request-Nonce: KBS, root key, status, refusals, unknown routes', async () => {
    const answers: Answer[] = [];
    const kbs = new ProtocolClient({ url: sealer.url, ca: tls.certPem });
    await kbs.attest(); // auth, attest: both answers recorded
    answers.push(...kbs.answers);
    const resource = await kbs.send('GET', RESOURCE, { token: kbs.token! });
    expect(resource.status).toBe(200);
    expect((await kbs.open(resource.json())).equals(ROOT_KEY)).toBe(true);
    answers.push(resource);
    answers.push(await client.send('GET', '/tee-kms/v1/seal-status'));
    answers.push(await client.send('GET', '/tee-kms/v1/seal-status?verbose=1'));
    answers.push(await client.send('GET', '/healthz'));
    answers.push(await client.send('GET', RESOURCE)); // 401: no token
    answers.push(await client.send('POST', '/tee-kms/v1/root-key', { body: { t: 2, n: 3, expectedCurrentId: null, expectedPendingId: null } })); // 401
    answers.push(await client.send('GET', '/tee-kms/v1/no-such-route')); // 404
    answers.push(await client.send('PUT', '/tee-kms/v1/seal-status')); // 405
    answers.push(attested.answer);
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200, 200, 401, 401, 404, 405, 200]);
    for (const answer of answers) await expectSigned(answer);
  });

  it('binds the nonce, method, path, status and body: the same signature fails for any other', async () => {
    const answer = await client.send('GET', '/tee-kms/v1/seal-status');
    await expectSigned(answer);
    const problems = await Promise.all(
      [
        { ...answer, sent: { ...answer.sent, nonce: freshNonce() } }, // a replayed answer to a later request
        { ...answer, sent: { ...answer.sent, method: 'POST' } },
        { ...answer, sent: { ...answer.sent, target: '/healthz' } },
        { ...answer, status: 503 },
        { ...answer, raw: Buffer.concat([answer.raw, Buffer.from(' ')]) },
      ].map((forged) => ProtocolClient.signatureProblem(forged, attested.publicKey)),
    );
    expect(problems.every((problem) => problem !== undefined)).toBe(true);
    // An answer replayed verbatim to a new request (its own nonce) is refused: its nonce is not the new one.
    const replayed = { ...answer, sent: (await client.send('GET', '/tee-kms/v1/seal-status')).sent };
    expect(await ProtocolClient.signatureProblem(replayed, attested.publicKey)).toMatch(/^nonce /);
  });
});

describe('another process with the same TLS certificate and key (an impostor)', () => {
  let impostor: SealerProcess;

  beforeAll(async () => {
    impostor = await startSealerProcess({ env: sealerEnv(IMPOSTOR_ROOT_KEY) });
  });
  afterAll(async () => {
    await impostor?.cleanup();
  });

  it('passes TLS pinned to that certificate, but its answers do not verify under the key the client attested', async () => {
    const fooled = new ProtocolClient({ url: impostor.url, ca: tls.certPem });
    const status = await fooled.send('GET', '/tee-kms/v1/seal-status');
    expect(status.status).toBe(200); // TLS alone accepts it
    expect(await ProtocolClient.signatureProblem(status, attested.publicKey)).toBeDefined();
    await fooled.attest();
    const resource = await fooled.send('GET', RESOURCE, { token: fooled.token! });
    expect(resource.status).toBe(200);
    expect(await ProtocolClient.signatureProblem(resource, attested.publicKey)).toBeDefined();
    // Its own attestation names its own key, not the real one.
    const own = await fooled.attestSealer();
    expect(own.key.x).not.toBe(attested.key.x);
    await expectSigned(resource, own);
  });
});

describe('a restart', () => {
  it('makes a new signing key: earlier answers verify only under the old one, new ones only under the new', async () => {
    const before = await client.send('GET', '/tee-kms/v1/seal-status');
    await expectSigned(before);
    await sealer.restart();
    const after = await client.send('GET', '/tee-kms/v1/seal-status');
    expect(after.status).toBe(200);
    expect(await ProtocolClient.signatureProblem(after, attested.publicKey)).toMatch(/does not verify/);
    const renewed = await client.attestSealer();
    expect(renewed.key.x === attested.key.x && renewed.key.y === attested.key.y).toBe(false);
    expect(sampleEvidenceBinds(renewed.evidence, renewed.nonce, renewed.key)).toBe(true);
    await expectSigned(after, renewed);
    expect(await ProtocolClient.signatureProblem(before, renewed.publicKey)).toMatch(/does not verify/);
  });
});
