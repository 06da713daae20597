// The sealing service's proofs of possession for admin calls (sealer/proofs.ts): the memory of
// spent jtis, per holder (the grant entry; here each workload's identity), with an injected clock. Proofs are signed here as a workload would.
import { createHash, randomBytes } from 'node:crypto';
import { SignJWT } from 'jose/jwt/sign';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProofVerifier, type ProofExpectation } from '../../sealer/proofs.js';
import { generateTeeKeyPair, type TeeKeyPair } from '../../shared/kbs/tee-key.js';

const METHOD = 'DELETE';
const TARGET = '/tee-kms/v1/recovery';
const A = 'a'.repeat(96);
const B = 'b'.repeat(96);

interface Workload {
  readonly identity: string;
  readonly token: string;
  readonly key: TeeKeyPair;
}

let a: Workload;
let b: Workload;
let clock: number;
const now = () => clock;

beforeAll(async () => {
  a = { identity: A, token: `token-of-a.${randomBytes(8).toString('hex')}`, key: await generateTeeKeyPair() };
  b = { identity: B, token: `token-of-b.${randomBytes(8).toString('hex')}`, key: await generateTeeKeyPair() };
});

const b64u = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('base64url');

/** A proof by `workload` for DELETE /tee-kms/v1/recovery, issued at the injected clock's time. */
async function proof(workload: Workload, jti = randomBytes(16).toString('base64url')): Promise<string> {
  const { kty, crv, x, y } = workload.key.publicJwk;
  return new SignJWT({ htm: METHOD, htu: TARGET, ath: b64u(Buffer.from(workload.token, 'ascii')), bdy: b64u(new Uint8Array()) })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })
    .setIssuedAt(Math.floor(clock / 1000))
    .setJti(jti)
    .sign(workload.key.privateKey);
}

function expectation(workload: Workload): ProofExpectation {
  return { method: METHOD, target: TARGET, token: workload.token, body: Buffer.alloc(0), teePubKey: workload.key.publicJwk, holder: workload.identity };
}

/** verify, then spend, as an admin route does for a granted call. */
async function call(verifier: ProofVerifier, workload: Workload, signed?: string): Promise<void> {
  verifier.spend(await verifier.verify(signed ?? (await proof(workload)), expectation(workload)));
}

const busy = expect.objectContaining({ code: 'BUSY' });
const replay = expect.objectContaining({ code: 'PROOF_INVALID', detail: 'this proof was used before (replay)' });

describe('the memory of spent proofs', () => {
  it("is kept per identity: A's full memory makes A's calls BUSY, B still spends", async () => {
    clock = Date.now();
    const verifier = new ProofVerifier(60, 3, now);
    for (let i = 0; i < 3; i++) await call(verifier, a);
    await expect(call(verifier, a)).rejects.toThrow(busy);
    // Another identity (the operator's rotate, verify or seal) is not shut out by A's flood.
    for (let i = 0; i < 3; i++) await call(verifier, b);
    await expect(call(verifier, b)).rejects.toThrow(busy);
    // Two minutes on (twice the allowed skew), the spent jtis are forgotten: A spends again.
    clock += 121_000;
    await call(verifier, a);
    await call(verifier, b);
  });

  it('refuses a replay under the same identity, before and after the memory is full', async () => {
    clock = Date.now();
    const verifier = new ProofVerifier(60, 2, now);
    const first = await proof(a);
    await call(verifier, a, first);
    await expect(verifier.verify(first, expectation(a))).rejects.toThrow(replay);
    await call(verifier, a);
    // A is full now: its replay is still refused as a replay, not merely as BUSY.
    await expect(verifier.verify(first, expectation(a))).rejects.toThrow(replay);
    // Two requests with one proof that both verified: the second spend is refused.
    const twice = await proof(b);
    const [one, two] = [await verifier.verify(twice, expectation(b)), await verifier.verify(twice, expectation(b))];
    verifier.spend(one);
    expect(() => verifier.spend(two)).toThrow(replay);
  });

  it("keeps identities apart: B's proof with a jti that A spent is B's own, not a replay", async () => {
    clock = Date.now();
    const verifier = new ProofVerifier(60, 10, now);
    const jti = randomBytes(16).toString('base64url');
    await call(verifier, a, await proof(a, jti));
    await call(verifier, b, await proof(b, jti));
    await expect(call(verifier, b, await proof(b, jti))).rejects.toThrow(replay);
  });
});
