/**
 * Admin calls as their adversary would make them (docs/sealer-protocol.md, "Admin calls: role and
 * proof of possession"): a real sealing-service process (insecure development mode, so that sample
 * evidence can claim any identity) whose admin policy grants identity A every operation, and this
 * test's own protocol client (test/support/protocol-client.ts), never the project's.
 *
 * - An attested workload whose identity is not granted (B) is refused 403 on every admin route,
 *   and nothing changes; its refused proofs spend no room in the replay memory (the same proof is
 *   refused 403 again, not as a replay, and its jti is still free for a granted call).
 * - A's token without a valid proof is refused 401: no proof, a replayed jti, a proof for another
 *   path, method, body or token, a stale or future iat, the wrong signing key, a token stolen by
 *   another client, a request replayed verbatim.
 * - A with a correct proof initializes the service and gets its shares, seals and recovers it.
 * - A policy that grants A only `recover` lets A reset recovery and nothing else; without a policy
 *   nobody may call an admin route.
 * - No refusal echoes a token, proof or share, and no log holds one.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { combine } from 'shamir-secret-sharing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRoutes, FORBIDDEN, PROOF_INVALID, ProtocolClient, rootKeyIdOf, sampleEvidenceBinds, type Answer } from '../support/protocol-client.js';
import { allLogs, SecretRegistry, startSealerProcess, type SealerProcess } from '../support/sealer.js';

const A = randomBytes(48).toString('hex');
const B = randomBytes(48).toString('hex');
const INSTALL = { t: 3, n: 5, expectedCurrentId: null, expectedPendingId: null };
const { rotate, verify, recoveryShares, recoveryReset, seal } = adminRoutes;

const secrets = new SecretRegistry();
const clients: ProtocolClient[] = [];
let dir: string;
const sealers: SealerProcess[] = [];

async function sealerWithPolicy(policy: Record<string, string[]> | undefined): Promise<SealerProcess> {
  const file = join(dir, `admin-policy-${sealers.length}.json`);
  if (policy !== undefined) await writeFile(file, JSON.stringify(policy));
  // '' is "no policy file": no identity may call an admin route.
  const sealer = await startSealerProcess({ env: { KMS_SEALER_ADMIN_POLICY_FILE: policy === undefined ? '' : file } });
  sealers.push(sealer);
  return sealer;
}

/** A client of `sealer` that attested as `identity` (sample evidence claiming it). */
async function attested(sealer: SealerProcess, identity: string | undefined): Promise<ProtocolClient> {
  const client = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), ...(identity === undefined ? {} : { initData: identity }) });
  clients.push(client);
  const token = await client.attest();
  secrets.addText(token);
  secrets.add(client.privateScalar);
  return client;
}

async function sealStatus(client: ProtocolClient): Promise<Record<string, unknown>> {
  const answer = await client.send('GET', '/tee-kms/v1/seal-status');
  expect(answer.status).toBe(200);
  return answer.json();
}

function expectRefused(answer: Answer, status: 401 | 403): void {
  expect({ status: answer.status, type: answer.problemType }, answer.text).toEqual({ status, type: status === 401 ? PROOF_INVALID : FORBIDDEN });
  expect(answer.headers['content-type']).toBe('application/problem+json');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-admin-auth-'));
});

afterAll(async () => {
  for (const sealer of sealers) await sealer.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('a sealing service whose admin policy grants identity A every operation', () => {
  let sealer: SealerProcess;
  let a: ProtocolClient;
  let b: ProtocolClient;
  let uninitialized: Record<string, unknown>;

  beforeAll(async () => {
    sealer = await sealerWithPolicy({ rotate: [A], verify: [A], recover: [A], seal: [A] });
    a = await attested(sealer, A);
    b = await attested(sealer, B);
    uninitialized = await sealStatus(a);
    expect(uninitialized).toMatchObject({ initialized: false, sealed: true, rootKeyId: null });
  });

  it('issues tokens that name the identity the evidence claimed (customized_claims.init_data)', () => {
    expect((a.tokenClaims().customized_claims as Record<string, unknown>).init_data).toBe(A);
    expect((b.tokenClaims().customized_claims as Record<string, unknown>).init_data).toBe(B);
  });

  it('refuses identity B (attested, not granted) with 403 on every admin route, and nothing changes', async () => {
    expectRefused(await b.admin(rotate.method, rotate.path, { body: INSTALL }), 403);
    expectRefused(await b.admin(seal.method, seal.path), 403);
    expectRefused(await b.admin(recoveryReset.method, recoveryReset.path), 403);
    expectRefused(await b.admin(verify.method, verify.path, { body: { shares: [{ index: 1, content: randomBytes(33).toString('base64') }] } }), 403);
    expectRefused(await b.admin(recoveryShares.method, recoveryShares.path, { body: { index: 1, content: randomBytes(33).toString('base64') } }), 403);
    expect(await sealStatus(b)).toEqual(uninitialized);
  });

  it('refuses B the recovery key (a "recover" route) with 403', async () => {
    expectRefused(await b.admin(adminRoutes.recoveryKey.method, `${adminRoutes.recoveryKey.path}?nonce=${randomBytes(32).toString('base64url')}`), 403);
  });

  it('answers A (granted "recover") the recovery key, bound by its evidence to the nonce', async () => {
    const nonce = randomBytes(32).toString('base64url');
    const answer = await a.admin(adminRoutes.recoveryKey.method, `${adminRoutes.recoveryKey.path}?nonce=${nonce}`);
    expect(answer.status, answer.text).toBe(200);
    const { recoveryKey, tee, evidence } = answer.json<{ recoveryKey: Record<string, string>; tee: string; evidence: unknown }>();
    expect(recoveryKey).toEqual({ kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: expect.any(String), y: expect.any(String) });
    expect(tee).toBe('sample');
    expect(sampleEvidenceBinds(evidence, nonce, recoveryKey)).toBe(true);
  });

  it("spends nothing on B's forbidden calls: the same proof is 403 again, not a replay, and its jti is still free", async () => {
    const refused = await b.admin(recoveryReset.method, recoveryReset.path);
    expectRefused(refused, 403);
    expectRefused(await b.replay(refused.sent), 403);
    // A jti B was refused with is still A's to use once. Each identity has a memory of its own (a
    // replay comes with the same token, so the same identity): A's spending it is A's alone, and
    // B's proof is still refused for what it is, a call B is not granted.
    const jti = ProtocolClient.jtiOf(refused.sent.headers.DPoP!);
    const granted = await a.admin(recoveryReset.method, recoveryReset.path, { proof: { jti } });
    expect(granted.status, granted.text).toBe(200);
    expectRefused(await a.admin(recoveryReset.method, recoveryReset.path, { proof: { jti } }), 401);
    expectRefused(await b.replay(refused.sent), 403);
    expect(await sealStatus(b)).toEqual(uninitialized);
  });

  it('checks the proof before the grant: B without a proof is 401, not 403', async () => {
    expectRefused(await b.admin(rotate.method, rotate.path, { body: INSTALL, proof: false }), 401);
  });

  it('refuses A without a proof (401 proof-invalid), and nothing changes', async () => {
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: false }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  it('refuses A with a session cookie instead of a Bearer token (anyone holding the cookie would send it)', async () => {
    const answer = await a.admin(recoveryReset.method, recoveryReset.path, { token: null, headers: { Cookie: a.cookie! } });
    expect(answer.status, answer.text).toBe(401);
  });

  it('accepts a fresh proof (iat 20 s ago) and refuses a jti used before, in any request', async () => {
    const first = await a.admin(recoveryReset.method, recoveryReset.path, { proof: { iatOffsetSeconds: -20 } });
    expect(first.status, first.text).toBe(200);
    const jti = ProtocolClient.jtiOf(first.sent.headers.DPoP!);
    expectRefused(await a.admin(recoveryReset.method, recoveryReset.path, { proof: { jti } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { jti } }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  it('refuses a proof made for another path, query, method, body or token', async () => {
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { htu: seal.path } }), 401);
    expectRefused(await a.admin(rotate.method, `${rotate.path}?t=3`, { body: INSTALL, proof: { htu: rotate.path } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { htu: `https://127.0.0.1:${sealer.port}${rotate.path}` } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { htm: 'DELETE' } }), 401);
    expectRefused(await a.admin(recoveryReset.method, recoveryReset.path, { proof: { htm: 'POST' } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { body: JSON.stringify({ ...INSTALL, t: 2 }) } }), 401);
    // A body the proof does not name, however small the difference (a trailing space).
    expectRefused(await a.admin(rotate.method, rotate.path, { body: `${JSON.stringify(INSTALL)} `, proof: { body: JSON.stringify(INSTALL) } }), 401);
    // Another token of the same TEE key: the proof names the first one.
    const twin = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), initData: A, privateKey: a.privateKey });
    clients.push(twin);
    const other = await twin.attest();
    secrets.addText(other);
    expect(other).not.toBe(a.token);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, token: other, proof: { token: a.token } }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  it('refuses a proof older or newer than 60 seconds', async () => {
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { iatOffsetSeconds: -300 } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { iatOffsetSeconds: 300 } }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  it('refuses a proof not signed by the key of the token, or not naming it, or not a dpop+jwt', async () => {
    const mallory = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem() });
    // The token's key in the header, another key's signature.
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { signingKey: mallory.privateKey } }), 401);
    // Another key in the header, signed by it.
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { signingKey: mallory.privateKey, headerJwk: mallory.proofJwk } }), 401);
    // The right signature, but another key named in the header.
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { headerJwk: mallory.proofJwk } }), 401);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL, proof: { typ: 'JWT' } }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  it("refuses A's token stolen by another client, which can only sign with its own key", async () => {
    const thief = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem() });
    clients.push(thief);
    expectRefused(await thief.admin(rotate.method, rotate.path, { body: INSTALL, token: a.token }), 401);
    // Naming A's key in the header does not help without A's private key.
    expectRefused(await thief.admin(rotate.method, rotate.path, { body: INSTALL, token: a.token, proof: { headerJwk: a.proofJwk } }), 401);
    expectRefused(await thief.admin(rotate.method, rotate.path, { body: INSTALL, token: a.token, proof: false }), 401);
    expect(await sealStatus(a)).toEqual(uninitialized);
  });

  let shares: Array<{ index: number; content: string }>;

  it('initializes for A with a correct proof: 200, five shares that rebuild the key seal-status names', async () => {
    const answer = await a.admin(rotate.method, rotate.path, { body: INSTALL });
    expect(answer.status, answer.text).toBe(200);
    shares = answer.json<{ shares: typeof shares }>().shares;
    expect(shares).toHaveLength(5);
    for (const share of shares) {
      secrets.add(Buffer.from(share.content, 'base64'));
      expect(Buffer.from(share.content, 'base64')).toHaveLength(33);
    }
    const key = Buffer.from(await combine(shares.slice(0, 3).map((share) => new Uint8Array(Buffer.from(share.content, 'base64')))));
    secrets.add(key);
    const status = await sealStatus(a);
    expect(status).toMatchObject({ initialized: true, sealed: false, t: 3, n: 5, rootKeyId: rootKeyIdOf(key), verificationPending: false });

    // The same request, token and proof again: refused as a replay, before anything else is looked at.
    expectRefused(await a.replay(answer.sent), 401);
    expect(await sealStatus(a)).toEqual(status);
  });

  it('refuses B everything on the initialized service, even with the real shares, and nothing changes', async () => {
    const before = await sealStatus(b);
    expectRefused(await b.admin(rotate.method, rotate.path, { body: { ...INSTALL, expectedCurrentId: before.rootKeyId } }), 403);
    expectRefused(await b.admin(verify.method, verify.path, { body: { shares: shares.slice(0, 3) } }), 403);
    expectRefused(await b.admin(seal.method, seal.path), 403);
    expectRefused(await b.admin(recoveryReset.method, recoveryReset.path), 403);
    expect(await sealStatus(b)).toEqual(before);
  });

  it('lets A seal, and recover with the shares, each call with its own proof', async () => {
    const sealed = await a.admin(seal.method, seal.path);
    expect(sealed.status, sealed.text).toBe(200);
    expect(await sealStatus(a)).toMatchObject({ sealed: true, initialized: true });
    // B cannot submit shares into A's recovery either.
    expectRefused(await b.admin(recoveryShares.method, recoveryShares.path, { body: shares[0] }), 403);
    expect((await sealStatus(a)).progress).toBe(0);
    let last: Answer | undefined;
    for (const share of shares.slice(1, 4)) {
      last = await a.admin(recoveryShares.method, recoveryShares.path, { body: share });
      expect(last.status, last.text).toBe(200);
    }
    expect(last!.json()).toMatchObject({ sealed: false });
    expect(await sealStatus(a)).toMatchObject({ sealed: false, progress: 0 });
  });
});

describe('a policy that grants A only "recover"', () => {
  it('lets A reset recovery, and refuses A rotate, verify and seal (403), changing nothing', async () => {
    const sealer = await sealerWithPolicy({ recover: [A] });
    const a = await attested(sealer, A);
    const before = await sealStatus(a);
    const reset = await a.admin(recoveryReset.method, recoveryReset.path);
    expect(reset.status, reset.text).toBe(200);
    expectRefused(await a.admin(rotate.method, rotate.path, { body: INSTALL }), 403);
    expectRefused(await a.admin(verify.method, verify.path, { body: { shares: [{ index: 1, content: randomBytes(33).toString('base64') }] } }), 403);
    expectRefused(await a.admin(seal.method, seal.path), 403);
    expect(await sealStatus(a)).toEqual(before);
  });
});

describe('no admin policy (KMS_SEALER_ADMIN_POLICY_FILE unset)', () => {
  it('refuses every identity every admin route (403), the all-zero identity included', async () => {
    const sealer = await sealerWithPolicy(undefined);
    for (const identity of [A, undefined, '0'.repeat(96)]) {
      const client = await attested(sealer, identity);
      expectRefused(await client.admin(rotate.method, rotate.path, { body: INSTALL }), 403);
      expectRefused(await client.admin(recoveryReset.method, recoveryReset.path), 403);
    }
    expect((await sealStatus(clients.at(-1)!)).initialized).toBe(false);
  });
});

describe('secrets', () => {
  it('no refusal echoes a token, a proof or a share, and no log holds any of them', async () => {
    for (const sealer of sealers) await sealer.settle();
    expect(secrets.size).toBeGreaterThan(10);
    const proofs = new SecretRegistry();
    for (const client of clients) for (const proof of client.proofs) proofs.addText(proof);
    for (const client of clients) {
      for (const answer of client.answers.filter((each) => each.status >= 400)) {
        expect(secrets.leaksIn(answer.text), answer.text).toEqual([]);
        expect(proofs.leaksIn(answer.text), answer.text).toEqual([]);
      }
    }
    for (const logs of allLogs) {
      expect(secrets.leaksIn(logs())).toEqual([]);
      expect(proofs.leaksIn(logs())).toEqual([]);
    }
  });
});
