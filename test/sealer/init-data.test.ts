/**
 * Workload binding by init-data, over real HTTPS against real sealing-service processes, with the
 * test's own protocol client (test/support/protocol-client.ts) as the adversary's client: the
 * host chooses the init-data a request carries, so it must be refused unless its digest is the
 * identity the evidence names (sample `init_data`; TDX MRCONFIGID in a quote signed by the test
 * PKI), and a TDX policy's initData must hold. A function host with KMS_INIT_DATA_FILE sends it.
 * Digests are computed here with node:crypto.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { ProtocolClient, type Answer } from '../support/protocol-client.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { buildCollateral, buildTdxQuote, createTestPki, DEFAULT_TD_POLICY, evidenceFor, type TestPki } from '../support/tdx-quote-builder.js';
import { startTdxQuoteProvider, type TdxQuoteProvider } from '../support/tdx-quote-provider.js';

const DAY = 86_400_000;
const ATTESTATION_ERROR = 'https://github.com/confidential-containers/kbs/errors/AttestationError';
const RESOURCE = '/kbs/v0/resource/tee-kms/root-key/current';
const ROOT_KEY = randomBytes(32);

const POLICY_REGO = 'package agent_policy\n\ndefault ExecProcessRequest := false\ndefault ReadStreamRequest := false\n';
const OPEN_POLICY_REGO = 'package agent_policy\n\ndefault ExecProcessRequest := true\ndefault ReadStreamRequest := true\n';

function initDataToml(algorithm: string, rego = POLICY_REGO): string {
  return [
    `algorithm = "${algorithm}"`,
    'version = "0.1.0"',
    '',
    '[data]',
    `"aa.toml" = '''`,
    `[token_configs.kbs]\nurl = "https://tee-kms-sealer:9877"\n'''`,
    '',
    `"policy.rego" = '''`,
    `${rego}'''`,
    '',
  ].join('\n');
}

const sha = (algorithm: string, text: string): Buffer => createHash(algorithm).update(Buffer.from(text, 'utf8')).digest();
/** MRCONFIGID for a document: the declared hash of its bytes, fitted to 48 bytes. */
const identityOf = (toml: string, algorithm: string): string =>
  Buffer.concat([sha(algorithm, toml), Buffer.alloc(48)])
    .subarray(0, 48)
    .toString('hex');
const sha384hex = (text: string): string => sha('sha384', text).toString('hex');
const kbsMember = (toml: string) => ({ format: 'toml', body: toml });

/** attest() that must be refused: the attest answer, and the session cookie it ran under. */
async function refusedAttest(client: ProtocolClient): Promise<{ answer: Answer; cookie: string }> {
  await expect(client.attest()).rejects.toThrow(/^attest: 401/);
  const answer = client.answers.at(-1)!;
  expect(answer.sent.target).toBe('/kbs/v0/attest');
  expect(answer.json()).not.toHaveProperty('token');
  return { answer, cookie: answer.sent.headers.Cookie! };
}

/** No token was issued: the session cookie of the refused attestation does not open the resource. */
async function expectNoResource(client: ProtocolClient, cookie: string): Promise<void> {
  const resource = await client.send('GET', RESOURCE, { token: null, headers: { Cookie: cookie } });
  expect(resource.status).toBe(401);
}

function problemOf(answer: Answer): { type: string; detail: string } {
  return answer.json<{ type: string; detail: string }>();
}

function customClaims(client: ProtocolClient): Record<string, unknown> {
  return client.tokenClaims().customized_claims as Record<string, unknown>;
}

describe('sample evidence (development sealer)', () => {
  let sealer: SealerProcess;
  let ca: string;

  beforeAll(async () => {
    sealer = await startSealerProcess({ env: { KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64') } });
    ca = await sealer.caPem();
  });
  afterAll(async () => {
    await sealer?.cleanup();
  });

  const client = (options: { initData?: string; kbsInitData?: unknown }) => new ProtocolClient({ url: sealer.url, ca, ...options });

  it('accepts init-data whose digest is the claimed identity (each algorithm), and puts its entries in the token', async () => {
    for (const algorithm of ['sha384', 'sha256', 'sha512']) {
      const toml = initDataToml(algorithm);
      const honest = client({ initData: identityOf(toml, algorithm), kbsInitData: kbsMember(toml) });
      await honest.attest();
      const claims = customClaims(honest);
      expect(claims.init_data).toBe(identityOf(toml, algorithm));
      expect(claims.init_data_claims).toEqual({
        version: '0.1.0',
        algorithm,
        data_sha384: { 'aa.toml': sha384hex('[token_configs.kbs]\nurl = "https://tee-kms-sealer:9877"\n'), 'policy.rego': sha384hex(POLICY_REGO) },
      });
      // The token opens the resource as before.
      expect((await honest.send('GET', RESOURCE, { token: null, headers: { Cookie: honest.cookie! } })).status).toBe(200);
    }
  });

  it('without init-data nothing changes: no init_data_claims in the token', async () => {
    const plain = client({ initData: 'ab'.repeat(48) });
    await plain.attest();
    expect(customClaims(plain).init_data).toBe('ab'.repeat(48));
    expect(customClaims(plain)).not.toHaveProperty('init_data_claims');
  });

  it('refuses init-data whose digest is not the evidence identity, and logs why', async () => {
    const toml = initDataToml('sha384');
    const other = initDataToml('sha384', OPEN_POLICY_REGO);
    // A host that presents a permissive policy while the TD runs (and its evidence names) another.
    for (const liar of [
      client({ initData: identityOf(toml, 'sha384'), kbsInitData: kbsMember(other) }),
      client({ kbsInitData: kbsMember(other) }), // evidence without an identity (all zeros)
      client({ initData: identityOf(toml, 'sha384'), kbsInitData: kbsMember(toml.replace('sha384', 'sha256')) }),
    ]) {
      const { answer, cookie } = await refusedAttest(liar);
      const problem = problemOf(answer);
      expect(problem.type).toBe(ATTESTATION_ERROR);
      expect(problem.detail).toMatch(
        /^verify TEE evidence failed: attestation refused: init_data: the init-data digest [0-9a-f]{96} \(sha(256|384)\) is not the evidence's init_data [0-9a-f]{96}$/,
      );
      await expectNoResource(liar, cookie);
    }
    await sealer.settle();
    expect(sealer.messages().some((m) => m.startsWith('attestation refused (tee sample): attestation refused: init_data: the init-data digest '))).toBe(true);
  });

  it('refuses malformed or unsupported init-data with a problem naming init-data, and issues no token', async () => {
    const toml = initDataToml('sha384');
    const cases: Array<[unknown, RegExp]> = [
      [kbsMember('version = "0.1.0"\nalgorithm = [\n'), /^init-data: the body is not valid TOML \(line \d+, column \d+\)$/],
      [kbsMember(toml.replace('0.1.0', '0.2.0')), /^init-data: unsupported version/],
      [kbsMember(initDataToml('md5')), /^init-data: unsupported algorithm/],
      [kbsMember(`${toml}replicas = 3\n`), /^init-data: data entry "replicas" must be a string$/],
      [{ format: 'json', body: '{"version": "0.1.0"}' }, /^init-data: unsupported format/],
      [{ format: 'toml', body: 42 }, /^init-data: body must be a string/],
      ['version = "0.1.0"', /^init-data: must be an object/],
    ];
    for (const [member, detail] of cases) {
      // The claimed identity is the honest document's: only the init-data member is wrong.
      const sender = client({ initData: identityOf(toml, 'sha384'), kbsInitData: member });
      const { answer, cookie } = await refusedAttest(sender);
      expect(problemOf(answer).type).toBe(ATTESTATION_ERROR);
      expect(problemOf(answer).detail).toMatch(detail);
      await expectNoResource(sender, cookie);
    }
  });
});

describe("TDX: MRCONFIGID and the policy's initData", () => {
  const dirs: string[] = [];
  const started: ServerProcess[] = [];
  const providers: TdxQuoteProvider[] = [];
  let pki: TestPki;
  let sealer: SealerProcess;
  let ca: string;

  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-initdata-tdx-'));
    dirs.push(dir);
    const now = Date.now();
    pki = await createTestPki({ label: 'InitData', notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) });
    const files = { policy: join(dir, 'policy.json'), collateral: join(dir, 'collateral.json'), rootCa: join(dir, 'root.pem') };
    // Any MRCONFIGID, but init-data must come with the evidence and carry this agent policy.
    const { mrConfigId: _anyConfig, ...reference } = DEFAULT_TD_POLICY;
    await writeFile(files.policy, JSON.stringify({ ...reference, initData: { required: true, data: { 'policy.rego': sha384hex(POLICY_REGO) } } }));
    await writeFile(files.collateral, JSON.stringify(await buildCollateral(pki, { issueDate: new Date(now - DAY), nextUpdate: new Date(now + 30 * DAY) })));
    await writeFile(files.rootCa, pki.root.pem);
    sealer = await startSealerProcess({
      env: {
        KMS_SEALER_INSECURE_DEV_MODE: 'false',
        KMS_SEALER_ROOT_KEY: ROOT_KEY.toString('base64'),
        KMS_SEALER_TDX_POLICY_FILE: files.policy,
        KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
        KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      },
    });
    ca = await sealer.caPem();
  });
  afterAll(async () => {
    await Promise.all(started.map((kms) => kms.stop('SIGKILL')));
    await Promise.all(providers.map((provider) => provider.close()));
    await sealer?.cleanup();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** A TD whose quotes (signed by the test PKI) carry `mrConfigId`, sending `kbsInitData`. */
  const td = (mrConfigId: string, kbsInitData?: unknown) =>
    new ProtocolClient({
      url: sealer.url,
      ca,
      tee: 'tdx',
      ...(kbsInitData === undefined ? {} : { kbsInitData }),
      evidence: (reportData) => evidenceFor(buildTdxQuote(pki, { report: { reportData, mrConfigId } }).quote),
    });

  it('announces the init-data requirement at start', () => {
    expect(sealer.messages().some((m) => m.includes('init-data required, pinned entries: policy.rego'))).toBe(true);
  });

  it('accepts a TD whose MRCONFIGID is the digest of the init-data it sends, with the pinned policy', async () => {
    for (const algorithm of ['sha384', 'sha256']) {
      const toml = initDataToml(algorithm);
      const honest = td(identityOf(toml, algorithm), kbsMember(toml));
      await honest.attest();
      expect(customClaims(honest).init_data).toBe(identityOf(toml, algorithm));
      expect((customClaims(honest).init_data_claims as { data_sha384: Record<string, string> }).data_sha384['policy.rego']).toBe(sha384hex(POLICY_REGO));
      expect((await honest.send('GET', RESOURCE, { token: null, headers: { Cookie: honest.cookie! } })).status).toBe(200);
    }
  });

  it('refuses init-data that is not the one MRCONFIGID names', async () => {
    const toml = initDataToml('sha384');
    const forged = initDataToml('sha384').replace('tee-kms-sealer:9877', 'attacker.example:443');
    const { answer, cookie } = await refusedAttest(td(identityOf(toml, 'sha384'), kbsMember(forged)));
    expect(problemOf(answer).detail).toBe(
      `verify TEE evidence failed: attestation refused: init_data: the init-data digest ${identityOf(forged, 'sha384')} (sha384) is not the evidence's MRCONFIGID ${identityOf(toml, 'sha384')}`,
    );
    await expectNoResource(td(identityOf(toml, 'sha384')), cookie);
  });

  it('refuses a TD that sends no init-data, though the policy requires it', async () => {
    const toml = initDataToml('sha384');
    const { answer } = await refusedAttest(td(identityOf(toml, 'sha384')));
    expect(problemOf(answer).detail).toMatch(/attestation refused: init_data: the policy requires init-data, and the attestation carried none/);
  });

  it('refuses a consistent TD (MRCONFIGID = digest) whose agent policy is not the pinned one', async () => {
    const open = initDataToml('sha384', OPEN_POLICY_REGO);
    const { answer } = await refusedAttest(td(identityOf(open, 'sha384'), kbsMember(open)));
    expect(problemOf(answer).detail).toBe(
      `verify TEE evidence failed: attestation refused: init_data: entry "policy.rego" has SHA-384 ${sha384hex(OPEN_POLICY_REGO)}, which is not an allowed value`,
    );
    await sealer.settle();
    expect(sealer.messages().some((m) => m.startsWith('attestation refused (tee tdx): attestation refused: init_data: entry "policy.rego"'))).toBe(true);
  });

  it('a function with KMS_INIT_DATA_FILE sends it with its attestation and gets the root key; without it, it is refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tee-kms-initdata-fn-'));
    dirs.push(dir);
    const toml = initDataToml('sha384');
    const initDataFile = join(dir, 'initdata.toml');
    await writeFile(initDataFile, toml);
    const caFile = join(dir, 'sealer-ca.pem');
    await writeFile(caFile, ca);
    const provider = await startTdxQuoteProvider(pki, { report: { mrConfigId: identityOf(toml, 'sha384') } });
    providers.push(provider);

    const fn = async (name: string, extra: Record<string, string>) => {
      const dataDir = join(dir, name);
      const kms = await startLeanHost({
        KMS_DATA_DIR: dataDir,
        KMS_STORE: 'fs',
        KMS_SEALER_URL: sealer.url,
        KMS_SEALER_CA_FILE: caFile,
        KMS_ATTESTER: 'tdx-aa',
        KMS_AA_URL: provider.url,
        ...extra,
      });
      started.push(kms);
      expect((await kms.request(`/user/${name}?token=${name}-token`, { method: 'POST' })).status).toBe(201);
      return kms.request(`/primaryKey/pk?user=${name}&token=${name}-token`, { method: 'POST', headers: { accept: 'application/json' } });
    };

    const withFile = await fn('alice', { KMS_INIT_DATA_FILE: initDataFile });
    expect(withFile.status, withFile.body).toBe(201);

    const without = await fn('bob', {});
    expect(without.status, without.body).toBe(503);
    expect(without.body).toContain('attestation refused: init_data: the policy requires init-data');
  });
});
