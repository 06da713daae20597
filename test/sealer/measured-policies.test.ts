/**
 * The sealing service's policies carried in its own init-data (KMS_SEALER_INIT_DATA_FILE), as the
 * cluster administrator would attack them: the file is theirs to write, the MRCONFIGID in the
 * TD's quote is not. Real sealer processes; a TDX one proves itself with quotes from a test quote
 * provider (the CoCo attestation agent's REST API) whose MRCONFIGID is the document's digest, and
 * function processes attest to it with quotes of their own.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SampleAttester } from '../../shared/attestation/sample.js';
import { loadMeasuredPolicies } from '../../sealer/measured-policies.js';
import { adminRoutes, FORBIDDEN, ProtocolClient } from '../support/protocol-client.js';
import { startLeanHost, type ServerProcess } from '../support/processes.js';
import { startSealerProcess, type SealerProcess } from '../support/sealer.js';
import { buildCollateral, createTestPki, DEFAULT_TD_POLICY, type TestPki } from '../support/tdx-quote-builder.js';
import { startTdxQuoteProvider, type TdxQuoteProvider } from '../support/tdx-quote-provider.js';

const DAY = 86_400_000;
const A = randomBytes(48).toString('hex');
const B = randomBytes(48).toString('hex');
const FUNCTION_ID = randomBytes(48).toString('hex');
const INTRUDER_ID = randomBytes(48).toString('hex');

/** An init-data document as knative/install.sh writes the sealer's: a [data] entry per file. */
function initData(entries: Record<string, unknown>): string {
  const data = Object.entries(entries).map(
    ([name, value]) => `${JSON.stringify(name)} = '''\n${typeof value === 'string' ? value : JSON.stringify(value)}\n'''`,
  );
  return ['version = "0.1.0"', 'algorithm = "sha384"', '', '[data]', ...data, ''].join('\n');
}

const sha384 = (text: string): string => createHash('sha384').update(text, 'utf8').digest('hex');
const ROTATE_REGO = `package agent_policy\n# the rotate function's, as generated\ndefault ExecProcessRequest := false\n`;
/** Its MRCONFIGID: SHA-384 of the exact bytes, which is exactly the field's 48 bytes. */
const digestOf = (toml: string): string => createHash('sha384').update(toml, 'utf8').digest('hex');

let dir: string;
const started: Array<{ cleanup?: () => Promise<void>; stop?: (signal?: NodeJS.Signals) => Promise<void> }> = [];

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

/** Starts a sealer process, or says why it did not start. */
async function tryStart(env: Record<string, string>): Promise<{ sealer?: SealerProcess; logs: string }> {
  try {
    const sealer = await startSealerProcess({ env: { KMS_SEALER_ADMIN_POLICY_FILE: '', ...env } });
    started.push(sealer);
    return { sealer, logs: sealer.logs() };
  } catch (error) {
    return { logs: error instanceof Error ? error.message : String(error) };
  }
}

/** A test PKI, DCAP collateral valid around the wall clock, and its root CA, as files. */
async function testDcap(label: string): Promise<{ pki: TestPki; collateral: string; rootCa: string }> {
  const now = Date.now();
  const pki = await createTestPki({ label, notBefore: new Date(now - DAY), notAfter: new Date(now + 3650 * DAY) });
  const collateral = await buildCollateral(pki, { issueDate: new Date(now - DAY), nextUpdate: new Date(now + 30 * DAY) });
  return { pki, collateral: await file(`${label}-collateral.json`, JSON.stringify(collateral)), rootCa: await file(`${label}-root-ca.pem`, pki.root.pem) };
}

/** Enrolls `user` (no root key needed), then asks for a primary key (needs it). */
async function createPrimaryKey(kms: ServerProcess, user: string) {
  expect((await kms.request(`/user/${user}?token=${user}-token`, { method: 'POST' })).status).toBe(201);
  return kms.request(`/primaryKey/pk?user=${user}&token=${user}-token`, { method: 'POST' });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tee-kms-measured-'));
});

afterAll(async () => {
  for (const process of started) await (process.cleanup?.() ?? process.stop?.('SIGKILL'));
  await rm(dir, { recursive: true, force: true });
});

describe('loadMeasuredPolicies', () => {
  it('takes both policies from a document that is this TD’s, adding its own identity as the one sealer-peer and to mrConfigId', async () => {
    const toml = initData({ 'tdx-policy.json': { ...DEFAULT_TD_POLICY, mrConfigId: [FUNCTION_ID] }, 'admin-policy.json': { recover: [A] } });
    const path = await file('own.toml', toml);
    const own = digestOf(toml);
    const measured = await loadMeasuredPolicies({ initDataFile: path, tdxPolicyFile: '', adminPolicyFile: '' }, new SampleAttester('1', own));
    expect(measured?.identity).toBe(own);
    expect(measured?.tdxPolicy).toEqual({
      json: { ...DEFAULT_TD_POLICY, mrConfigId: [FUNCTION_ID, own] },
      source: `KMS_SEALER_INIT_DATA_FILE ${path} ("tdx-policy.json")`,
    });
    const admin = measured!.adminPolicy!.policy;
    expect([admin.allows('recover', A), admin.allows('sealer-peer', own), admin.allows('sealer-peer', A), admin.allows('recover', own)]).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });

  it('leaves a policy without mrConfigId as it is, and takes nothing the document does not carry', async () => {
    const toml = initData({ 'tdx-policy.json': { mrTd: DEFAULT_TD_POLICY.mrTd } });
    const measured = await loadMeasuredPolicies(
      { initDataFile: await file('tdx-only.toml', toml), tdxPolicyFile: '', adminPolicyFile: '/elsewhere.json' },
      new SampleAttester('1', digestOf(toml)),
    );
    expect(measured?.tdxPolicy?.json).toEqual({ mrTd: DEFAULT_TD_POLICY.mrTd });
    expect(measured?.adminPolicy).toBeUndefined();
  });

  it('is undefined without KMS_SEALER_INIT_DATA_FILE', async () => {
    expect(await loadMeasuredPolicies({ initDataFile: '', tdxPolicyFile: 'x', adminPolicyFile: 'y' }, new SampleAttester('1', A))).toBeUndefined();
  });

  const refusals: Array<[string, Record<string, unknown>, { tdxPolicyFile?: string; adminPolicyFile?: string }, RegExp]> = [
    [
      'a TDX policy file beside the measured one',
      { 'tdx-policy.json': DEFAULT_TD_POLICY },
      { tdxPolicyFile: '/p.json' },
      /KMS_SEALER_TDX_POLICY_FILE would replace/,
    ],
    [
      'an admin policy file beside the measured one',
      { 'admin-policy.json': { seal: [A] } },
      { adminPolicyFile: '/a.json' },
      /KMS_SEALER_ADMIN_POLICY_FILE would replace/,
    ],
    [
      'a measured TDX policy that demands init-data, which its own replicas do not send',
      { 'tdx-policy.json': { ...DEFAULT_TD_POLICY, initData: { required: true } } },
      {},
      /\("tdx-policy\.json"\): a measured TDX policy may not demand initData/,
    ],
    ['a measured grant of sealer-peer', { 'admin-policy.json': { 'sealer-peer': [A] } }, {}, /grants "sealer-peer": a measured admin policy may not/],
    ['a measured admin policy that is not JSON', { 'admin-policy.json': '{"seal": [' }, {}, /\("admin-policy\.json"\) is not JSON/],
    ['a measured admin policy it cannot apply', { 'admin-policy.json': { seal: ['not hex'] } }, {}, /seal\[0\] must be 96 hex digits/],
  ];
  it.each(refusals)('refuses %s (CONFIG)', async (_name, entries, files, message) => {
    const toml = initData(entries);
    const attempt = loadMeasuredPolicies(
      { initDataFile: await file(`refused-${randomBytes(4).toString('hex')}.toml`, toml), tdxPolicyFile: '', adminPolicyFile: '', ...files },
      new SampleAttester('1', digestOf(toml)),
    );
    await expect(attempt).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringMatching(message) });
  });

  it('refuses to start with agent policies in policies that are not measured: it could not tell whom a function trusts', async () => {
    const digest = createHash('sha384').update('package agent_policy\n').digest('hex');
    const admin = await tryStart({ KMS_SEALER_ADMIN_POLICY_FILE: await file('admin-by-agent.json', JSON.stringify({ recover: [`policy.rego:${digest}`] })) });
    expect(admin.sealer).toBeUndefined();
    expect(admin.logs).toContain('the admin policy names agent policies (\\"policy.rego:…\\"), which apply only with KMS_SEALER_INIT_DATA_FILE');
  });

  it("refuses a document whose digest is not this TD's identity, naming both", async () => {
    const toml = initData({ 'admin-policy.json': { seal: [A] } });
    const attempt = loadMeasuredPolicies({ initDataFile: await file('other.toml', toml), tdxPolicyFile: '', adminPolicyFile: '' }, new SampleAttester('1', B));
    await expect(attempt).rejects.toMatchObject({ code: 'CONFIG', message: expect.stringContaining(`its digest ${digestOf(toml)} is not this TD's own`) });
  });
});

describe('a development sealer whose admin policy is in its init-data', () => {
  let sealer: SealerProcess;

  beforeAll(async () => {
    // Sample evidence claims the document's digest when KMS_SEALER_SAMPLE_INIT_DATA is unset.
    const result = await tryStart({ KMS_SEALER_INIT_DATA_FILE: await file('dev.toml', initData({ 'admin-policy.json': { recover: [A] } })) });
    expect(result.sealer, result.logs).toBeDefined();
    sealer = result.sealer!;
  });

  it('grants what the document grants and nothing else', async () => {
    const path = sealer.env.KMS_SEALER_INIT_DATA_FILE;
    expect(sealer.messages()).toContain(
      `admin policy from KMS_SEALER_INIT_DATA_FILE ${path} ("admin-policy.json"): identities granted rotate 0, verify 0, recover 1, seal 0, sealer-peer 1`,
    );
    const clientOf = async (identity: string) => {
      const client = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), initData: identity });
      await client.attest();
      return client;
    };
    const { recoveryReset } = adminRoutes;
    expect((await (await clientOf(A)).admin(recoveryReset.method, recoveryReset.path)).status).toBe(200);
    const refused = await (await clientOf(B)).admin(recoveryReset.method, recoveryReset.path);
    expect({ status: refused.status, type: refused.problemType }).toEqual({ status: 403, type: FORBIDDEN });
  });

  it('does not start when KMS_SEALER_SAMPLE_INIT_DATA claims another identity than the document', async () => {
    const result = await tryStart({ KMS_SEALER_INIT_DATA_FILE: sealer.env.KMS_SEALER_INIT_DATA_FILE!, KMS_SEALER_SAMPLE_INIT_DATA: B });
    expect(result.sealer).toBeUndefined();
    expect(result.logs).toContain(`is not this TD's own identity (KMS_SEALER_SAMPLE_INIT_DATA) ${B}, so nothing in it is trusted`);
  });
});

describe('a TDX sealer whose policies are in its init-data, against the host that writes the file', () => {
  let pki: TestPki;
  let files: { collateral: string; rootCa: string; trusted: string };
  const providers: TdxQuoteProvider[] = [];
  const measuredToml = initData({
    'tdx-policy.json': { ...DEFAULT_TD_POLICY, mrConfigId: [FUNCTION_ID] },
    'admin-policy.json': { verify: [FUNCTION_ID] },
  });
  const SEALER_ID = digestOf(measuredToml);

  const provider = async (mrConfigId: string): Promise<TdxQuoteProvider> => {
    const started = await startTdxQuoteProvider(pki, { report: { mrConfigId } });
    providers.push(started);
    return started;
  };

  /** A TDX sealer (mode 1) proving itself with quotes whose MRCONFIGID is `mrConfigId`. */
  const tdxSealer = async (toml: string, mrConfigId: string, env: Record<string, string> = {}) =>
    tryStart({
      KMS_SEALER_ATTESTER: 'tdx-aa',
      KMS_SEALER_AA_URL: (await provider(mrConfigId)).url,
      KMS_SEALER_INSECURE_DEV_MODE: 'false',
      KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64'),
      KMS_SEALER_INIT_DATA_FILE: await file(`sealer-${randomBytes(4).toString('hex')}.toml`, toml),
      KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      ...env,
    });

  /** A function TD with MRCONFIGID `mrConfigId`, trusting the sealer whose MRCONFIGID is SEALER_ID. */
  const tdFunction = async (sealer: SealerProcess, mrConfigId: string): Promise<ServerProcess> => {
    const kms = await startLeanHost({
      KMS_DATA_DIR: await mkdtemp(join(dir, 'kms-')),
      KMS_STORE: 'fs',
      KMS_SEALER_URL: sealer.url,
      KMS_SEALER_CA_FILE: await file(`ca-${randomBytes(4).toString('hex')}.pem`, await sealer.caPem()),
      KMS_TRUSTED_SEALER_TDX_POLICY_FILE: files.trusted,
      KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      KMS_ATTESTER: 'tdx-aa',
      KMS_AA_URL: (await provider(mrConfigId)).url,
    });
    started.push(kms);
    return kms;
  };

  beforeAll(async () => {
    let collateral: string;
    let rootCa: string;
    ({ pki, collateral, rootCa } = await testDcap('measured'));
    files = {
      collateral,
      rootCa,
      trusted: await file('trusted-sealer.json', JSON.stringify({ ...DEFAULT_TD_POLICY, mrConfigId: [SEALER_ID] })),
    };
  });

  afterAll(async () => {
    await Promise.all(providers.map((p) => p.close()));
  });

  it("applies the measured policies when the file is the TD's own: the functions' TD gets the root key, the host's own TD does not", async () => {
    const { sealer, logs } = await tdxSealer(measuredToml, SEALER_ID);
    expect(sealer, logs).toBeDefined();
    const path = sealer!.env.KMS_SEALER_INIT_DATA_FILE;
    const messages = sealer!.messages();
    expect(messages).toContain(`init-data: this TD's own (KMS_SEALER_INIT_DATA_FILE), identity ${SEALER_ID}`);
    const reference = messages.find((m) => m.startsWith('TDX verifier: reference values from '));
    expect(reference).toContain(`from KMS_SEALER_INIT_DATA_FILE ${path} ("tdx-policy.json")`);
    expect(reference).toContain('mrConfigId 2 allowed'); // the function's, and its own (its replicas)
    expect(messages).toContain(
      `admin policy from KMS_SEALER_INIT_DATA_FILE ${path} ("admin-policy.json"): identities granted rotate 0, verify 1, recover 0, seal 0, sealer-peer 1`,
    );

    expect((await createPrimaryKey(await tdFunction(sealer!, FUNCTION_ID), 'alice')).status).toBe(201);
    const intruder = await createPrimaryKey(await tdFunction(sealer!, INTRUDER_ID), 'mallory');
    expect(intruder.status).toBe(503);
    expect(intruder.body).toContain(`attestation refused: mr_config_id: ${INTRUDER_ID} is not an allowed value`);
  });

  it("does not start when the host rewrites the file to admit its own TD: the TD's MRCONFIGID still names the original", async () => {
    const rewritten = initData({
      'tdx-policy.json': { ...DEFAULT_TD_POLICY, mrConfigId: [FUNCTION_ID, INTRUDER_ID] },
      'admin-policy.json': { verify: [FUNCTION_ID] },
    });
    const { sealer, logs } = await tdxSealer(rewritten, SEALER_ID);
    expect(sealer).toBeUndefined();
    expect(logs).toContain(`its digest ${digestOf(rewritten)} is not this TD's own MRCONFIGID ${SEALER_ID}, so nothing in it is trusted`);
  });

  it('does not start with agentPolicies while an RTMR of the guest that enforces them is left open', async () => {
    const { rtmr1: _open, mrConfigId: _ids, ...loose } = DEFAULT_TD_POLICY;
    const toml = initData({ 'tdx-policy.json': { ...loose, agentPolicies: [sha384(ROTATE_REGO)] } });
    const { sealer, logs } = await tdxSealer(toml, digestOf(toml));
    expect(sealer).toBeUndefined();
    expect(logs).toContain('agentPolicies needs rtmr0, rtmr1 and rtmr2 pinned (the guest that enforces them); rtmr1 left open');
  });

  it('does not start when the host adds a policy file of its own beside the measured one', async () => {
    const permissive = await file('permissive.json', JSON.stringify({ mrTd: DEFAULT_TD_POLICY.mrTd }));
    const { sealer, logs } = await tdxSealer(measuredToml, SEALER_ID, { KMS_SEALER_TDX_POLICY_FILE: permissive });
    expect(sealer).toBeUndefined();
    expect(logs).toContain('KMS_SEALER_TDX_POLICY_FILE would replace the TDX policy measured in KMS_SEALER_INIT_DATA_FILE');
  });
});

/** A function's init-data as knative/install.sh writes it: its agent policy, then its policy for the sealer. */
function functionDocument(rego: string, trustedSealer: unknown, extra: Record<string, string> = {}): string {
  return [
    'version = "0.1.0"',
    'algorithm = "sha384"',
    '',
    '[data]',
    `"policy.rego" = '''\n${rego}'''`,
    `"sealer-tdx-policy.json" = '''\n${JSON.stringify(trustedSealer)}\n'''`,
  ]
    .concat(Object.entries(extra).map(([name, text]) => `${JSON.stringify(name)} = '''\n${text}'''`))
    .concat([''])
    .join('\n');
}
const PERMISSIVE_REGO = `package agent_policy\ndefault ExecProcessRequest := true\n`;

describe('admin grants by agent policy: a function named by what the host may do in its TD, trusting this sealer', () => {
  let sealer: SealerProcess;
  const sealerToml = initData({ 'admin-policy.json': { recover: [`policy.rego:${sha384(ROTATE_REGO)}`] } });
  /** What a function's init-data says of this sealer: its MRCONFIGID (here, its sample identity), alone. */
  const trustsThis = { mrTd: ['00'.repeat(48)], mrConfigId: [digestOf(sealerToml)] };

  beforeAll(async () => {
    const result = await tryStart({ KMS_SEALER_INIT_DATA_FILE: await file('grants.toml', sealerToml) });
    expect(result.sealer, result.logs).toBeDefined();
    sealer = result.sealer!;
  });

  /** Attests with sample evidence claiming the digest of `toml`, and sends `toml` as its init-data. */
  const reset = async (toml: string) => {
    const client = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), initData: digestOf(toml), kbsInitData: { format: 'toml', body: toml } });
    await client.attest();
    return client.admin(adminRoutes.recoveryReset.method, adminRoutes.recoveryReset.path);
  };

  it("grants a workload whose init-data is a function's with that agent policy and a policy pinning this sealer", async () => {
    expect((await reset(functionDocument(ROTATE_REGO, trustsThis))).status).toBe(200);
    expect((await reset(functionDocument(ROTATE_REGO, { ...trustsThis, rtmr0: ['11'.repeat(48)] }))).status).toBe(200);
  });

  it('refuses the same agent policy trusting another sealer or any, beside an entry more, another agent policy, or no init-data', async () => {
    for (const toml of [
      functionDocument(ROTATE_REGO, { ...trustsThis, mrConfigId: [INTRUDER_ID] }),
      functionDocument(ROTATE_REGO, { mrTd: trustsThis.mrTd }),
      functionDocument(ROTATE_REGO, { ...trustsThis, mrConfigId: [...trustsThis.mrConfigId, INTRUDER_ID] }),
      functionDocument(ROTATE_REGO, trustsThis, { 'cdh.toml': 'socket = "unix:///run/theirs"\n' }),
      // An entry named __proto__ is an entry like any other (a plain object would lose it).
      functionDocument(ROTATE_REGO, trustsThis, JSON.parse('{"__proto__": "x"}') as Record<string, string>),
      functionDocument(PERMISSIVE_REGO, trustsThis),
      initData({ 'policy.rego': ROTATE_REGO }),
    ]) {
      const refused = await reset(toml);
      expect({ status: refused.status, type: refused.problemType }, toml).toEqual({ status: 403, type: FORBIDDEN });
    }
    const client = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), initData: A });
    await client.attest();
    expect((await client.admin(adminRoutes.recoveryReset.method, adminRoutes.recoveryReset.path)).status).toBe(403);
  });
});

describe('a TDX sealer that admits functions by agent policy, and functions whose policy for it is in their own init-data', () => {
  let pki: TestPki;
  let files: { collateral: string; rootCa: string };
  let sealer: SealerProcess;
  let sealerId: string;
  const providers: TdxQuoteProvider[] = [];

  /** A function TD whose init-data is `toml` (its quotes carry MRCONFIGID `mrConfigId`, by default the document's digest). */
  const tdFunction = async (toml: string, mrConfigId = digestOf(toml), env: Record<string, string> = {}): Promise<ServerProcess> => {
    const provider = await startTdxQuoteProvider(pki, { report: { mrConfigId } });
    providers.push(provider);
    const kms = await startLeanHost({
      KMS_DATA_DIR: await mkdtemp(join(dir, 'kms-')),
      KMS_STORE: 'fs',
      KMS_SEALER_URL: sealer.url,
      KMS_SEALER_CA_FILE: await file(`ca-${randomBytes(4).toString('hex')}.pem`, await sealer.caPem()),
      KMS_INIT_DATA_FILE: await file(`fn-${randomBytes(4).toString('hex')}.toml`, toml),
      KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
      KMS_ATTESTER: 'tdx-aa',
      KMS_AA_URL: provider.url,
      ...env,
    });
    started.push(kms);
    return kms;
  };
  /** The policy a function's init-data carries for the sealer: the sealer's exact MRCONFIGID. */
  const trustsSealer = () => ({ ...DEFAULT_TD_POLICY, mrConfigId: [sealerId] });

  beforeAll(async () => {
    let collateral: string;
    let rootCa: string;
    ({ pki, collateral, rootCa } = await testDcap('agent'));
    files = { collateral, rootCa };
    // The sealer's document names the functions by agent policy only: it does not depend on theirs.
    const { mrConfigId: _pinned, ...referenceValues } = DEFAULT_TD_POLICY;
    const toml = initData({
      'tdx-policy.json': { ...referenceValues, agentPolicies: [sha384(ROTATE_REGO)] },
      'admin-policy.json': { verify: [`policy.rego:${sha384(ROTATE_REGO)}`] },
    });
    sealerId = digestOf(toml);
    const quotes = await startTdxQuoteProvider(pki, { report: { mrConfigId: sealerId } });
    providers.push(quotes);
    const result = await tryStart({
      KMS_SEALER_ATTESTER: 'tdx-aa',
      KMS_SEALER_AA_URL: quotes.url,
      KMS_SEALER_INSECURE_DEV_MODE: 'false',
      KMS_SEALER_ROOT_KEY: randomBytes(32).toString('base64'),
      KMS_SEALER_INIT_DATA_FILE: await file('agent-sealer.toml', toml),
      KMS_SEALER_TDX_COLLATERAL_FILE: files.collateral,
      KMS_SEALER_TDX_ROOT_CA_FILE: files.rootCa,
    });
    expect(result.sealer, result.logs).toBeDefined();
    sealer = result.sealer!;
  });

  afterAll(async () => {
    await Promise.all(providers.map((p) => p.close()));
  });

  it('says what it admits: its own MRCONFIGID, or the agent policies', () => {
    const reference = sealer.messages().find((m) => m.startsWith('TDX verifier: reference values from '));
    expect(reference).toContain('mrConfigId 1 allowed, or agentPolicies 1 allowed');
  });

  it('releases the root key to a function whose own init-data carries its policy for this sealer', async () => {
    const kms = await tdFunction(functionDocument(ROTATE_REGO, trustsSealer()));
    expect((await createPrimaryKey(kms, 'alice')).status).toBe(201);
    await kms.outputContaining(`sealing service check: TDX verifier: reference values from KMS_INIT_DATA_FILE`);
  });

  it('refuses a TD with the same agent policy but trusting another sealer or with an entry more, another agent policy, or no init-data', async () => {
    const cases: Array<[string, string | undefined, RegExp]> = [
      [
        functionDocument(ROTATE_REGO, trustsSealer(), { 'aa.toml': '[token_configs]\n' }),
        undefined,
        /init_data: entry "aa\.toml" is not one a function's init-data has/,
      ],
      // The genuine agent policy, trusting this sealer and one of the host's too (or any): it would
      // take the operator's shares there when this one does not answer.
      [
        functionDocument(ROTATE_REGO, { ...trustsSealer(), mrConfigId: [sealerId, INTRUDER_ID] }),
        undefined,
        /init_data: its policy for the sealing service \(sealer-tdx-policy\.json\) does not pin mrConfigId to this one's alone/,
      ],
      [
        functionDocument(ROTATE_REGO, (({ mrConfigId: _any, ...rest }) => rest)(trustsSealer())),
        undefined,
        /init_data: its policy for the sealing service \(sealer-tdx-policy\.json\) does not pin mrConfigId to this one's alone/,
      ],
      // Trusting this sealer's MRCONFIGID in any guest: a TD the host made with that MRCONFIGID and
      // a kernel of its own would pass it.
      [
        functionDocument(ROTATE_REGO, (({ rtmr1: _open, ...rest }) => rest)(trustsSealer())),
        undefined,
        /init_data: its policy for the sealing service \(sealer-tdx-policy\.json\) leaves rtmr1 open: it would trust a TD this service's own policy refuses/,
      ],
      [
        functionDocument(PERMISSIVE_REGO, trustsSealer()),
        undefined,
        /init_data: the agent policy \(policy\.rego\) has SHA-384 [0-9a-f]{96}, which is not an allowed value/,
      ],
    ];
    for (const [toml, , message] of cases) {
      const answer = await createPrimaryKey(await tdFunction(toml), `m${randomBytes(3).toString('hex')}`);
      expect(answer.status, toml).toBe(503);
      expect(answer.body).toMatch(message);
    }
    // A TD without init-data: its MRCONFIGID is not the sealer's, and nothing else can admit it.
    const bare = await tdFunction(functionDocument(ROTATE_REGO, trustsSealer()), INTRUDER_ID, {
      KMS_INIT_DATA_FILE: '',
      KMS_TRUSTED_SEALER_TDX_POLICY_FILE: await file('bare-trust.json', JSON.stringify(trustsSealer())),
    });
    const refused = await createPrimaryKey(bare, 'nobody');
    expect(refused.status).toBe(503);
    expect(refused.body).toContain(`mr_config_id: ${INTRUDER_ID} is not an allowed value`);
  });

  it('a function whose file the host rewrote (to trust another sealer) under the original MRCONFIGID trusts nothing from it', async () => {
    const genuine = functionDocument(ROTATE_REGO, trustsSealer());
    const rewritten = functionDocument(ROTATE_REGO, { ...DEFAULT_TD_POLICY, mrConfigId: [INTRUDER_ID] });
    const kms = await tdFunction(rewritten, digestOf(genuine));
    // A configuration the function refuses to run with: 500 CONFIG, as for any other.
    const answer = await createPrimaryKey(kms, 'bob');
    expect(answer.status).toBe(500);
    await kms.outputContaining(`is not this TD's init-data: its digest ${digestOf(rewritten)} is not this TD's own MRCONFIGID ${digestOf(genuine)}`);
  });
});
