/**
 * knative/install.sh and uninstall.sh (syntax, shellcheck where installed, argument checks, and the
 * kustomization install.sh generates, rendered with --dry-run), the Dockerfile and .dockerignore,
 * and docs/deploy-knative.md. No cluster: nothing here talks to one.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../../functions/index.js';
import { createTdxPolicy } from '../../sealer/attestation/tdx/policy.js';
import { INTEL_PCS_URL } from '../../sealer/attestation/tdx/pccs.js';
import { findTool, requireTool, skipWithout } from '../support/tools.js';
import {
  KNATIVE,
  KUBECTL,
  REPO,
  ROOT_KEY_COMPONENT,
  ROOT_KEY_FILE,
  ROOT_KEY_MOUNT,
  containersOf,
  dockerCmd,
  dockerEnv,
  id,
  parseDockerfile,
  readKustomization,
  type Json,
  type Resource,
} from './support.js';
import { parseAllDocuments } from 'yaml';
import {
  DIGEST_IMAGE,
  QUEUE_PROXY_IMAGE,
  REFERENCE_RTMRS,
  ROOT_KEY_PINS,
  custodianKeysFile,
  regoArray,
  deniedEntries,
  agentPolicyOf,
  deployedInitData,
  functionPods,
  writeSealerTdxPolicy,
  writeTdxPolicies,
} from './tdx-fixtures.js';
import { writeTlsFiles } from '../support/tls-files.js';

const INSTALL = join(KNATIVE, 'install.sh');
const UNINSTALL = join(KNATIVE, 'uninstall.sh');
const SHELLCHECK = findTool('shellcheck', ['--version'], 'apt-get install shellcheck');

/** Runs a script with a clean environment (no KMS_* or BigDL KMS variables from the caller). */
function run(script: string, args: string[], env: Record<string, string> = {}) {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', TMPDIR: tmpdir() };
  return spawnSync('bash', [script, ...args], { env: { ...base, ...env }, encoding: 'utf8', timeout: 60_000 });
}

const temps: string[] = [];
afterAll(() => temps.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

const MEASUREMENT = 'ab'.repeat(48);
const fixtures = mkdtempSync(join(tmpdir(), 'tee-kms-tdx-policy-'));
temps.push(fixtures);
/** A file under the fixtures folder with the given text; its path. */
function fixture(name: string, text: string): string {
  const path = join(fixtures, name);
  writeFileSync(path, text);
  return path;
}
/** A policy of reference values only (install.sh adds the functions' agent policies, the sealer its own MRCONFIGID). */
const POLICY = fixture('policy.json', `${JSON.stringify({ mrTd: [MEASUREMENT], rtmr0: [MEASUREMENT], allowedTcbStatuses: ['UpToDate'] }, null, 2)}\n`);
/** Who may call the sealer's admin routes (docs/sealer-protocol.md). */
const { admin: ADMIN_POLICY } = writeTdxPolicies(fixtures);
/**
 * The functions' policy for the sealer's TD whose init-data carries this --tdx-policy and ADMIN_POLICY
 * (SEALER_POLICY: with POLICY); for a file that is no JSON policy, SEALER_POLICY.
 */
const sealerPolicyFor = (policy: string) => {
  const file = `${policy}.sealer.json`;
  try {
    writeSealerTdxPolicy(file, policy, ADMIN_POLICY, 'shares', DIGEST_IMAGE, MEASUREMENT);
  } catch {
    return SEALER_POLICY;
  }
  return file;
};
const SEALER_POLICY = fixture('sealer-policy.json', '');
writeSealerTdxPolicy(SEALER_POLICY, POLICY, ADMIN_POLICY, 'shares', DIGEST_IMAGE, MEASUREMENT);
/** What --tee tdx needs besides --tdx-policy: the functions' policy for the sealer's TD, the admin policy, queue-proxy. */
const CUSTODY = [
  '--sealer-tdx-policy',
  SEALER_POLICY,
  '--admin-policy',
  ADMIN_POLICY,
  '--queue-proxy-image',
  QUEUE_PROXY_IMAGE,
  '--custodian-keys',
  custodianKeysFile(),
];
/** The three policy files of --tee tdx in mode 1, whose sealer init-data (and so MRCONFIGID) lists the root key file. */
const MODE_1_POLICIES = (() => {
  const dir = join(fixtures, 'mode-1');
  mkdirSync(dir);
  const { policy, sealerPolicy, admin } = writeTdxPolicies(dir, 'per-function', DIGEST_IMAGE, MEASUREMENT, 'secret');
  return [
    '--tdx-policy',
    policy,
    '--sealer-tdx-policy',
    sealerPolicy,
    '--admin-policy',
    admin,
    '--queue-proxy-image',
    QUEUE_PROXY_IMAGE,
    '--custodian-keys',
    custodianKeysFile(),
  ];
})();
/** A tdx dry run with this --tdx-policy, up to the admin policy (ADMIN_POLICY, which the sealer policy assumes). */
const tdxDryRun = (policy: string) => [
  '--dry-run',
  '--tee',
  'tdx',
  '--image',
  DIGEST_IMAGE,
  '--tdx-policy',
  policy,
  '--sealer-tdx-policy',
  sealerPolicyFor(policy),
  '--queue-proxy-image',
  QUEUE_PROXY_IMAGE,
  '--custodian-keys',
  custodianKeysFile(),
];
/** The tdx dry run the admin-policy refusal cases below vary. */
const TDX_DRY_RUN = tdxDryRun(POLICY);
const sealerOf = (resources: Resource[]) => resources.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
const sealerEnv = (resources: Resource[], name: string) => (sealerOf(resources).spec.template.spec.containers[0].env as Json[]).filter((e) => e.name === name);
const manifests = (stdout: string) =>
  parseAllDocuments(stdout)
    .map((d) => d.toJS())
    .filter(Boolean) as Resource[];

describe('install.sh and uninstall.sh', () => {
  it('are executable and parse (bash -n)', () => {
    for (const script of [INSTALL, UNINSTALL]) {
      expect(statSync(script).mode & 0o111, script).not.toBe(0);
      expect(() => execFileSync('bash', ['-n', script])).not.toThrow();
    }
  });

  it.skipIf(skipWithout(SHELLCHECK))('are clean under shellcheck', () => {
    requireTool(SHELLCHECK);
    const result = spawnSync('shellcheck', ['-x', INSTALL, UNINSTALL], { encoding: 'utf8' });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it("--help names BigDL KMS's parameters as options", () => {
    const result = run(INSTALL, ['--help']);
    expect(result.status).toBe(0);
    for (const option of [
      '--tee',
      '--image',
      '--storage-size',
      '--domain',
      '--root-key-file',
      '--generate-root-key',
      '--namespace',
      '--dry-run',
      '--tdx-policy',
      '--sealer-tdx-policy',
      '--admin-policy',
      '--pccs-url',
    ])
      expect(result.stdout).toContain(option);
    const header = readFileSync(INSTALL, 'utf8');
    for (const parameter of ['imageName', 'dataStoragePath', 'serviceIP', 'rootKey', 'teeMode']) expect(header).toContain(parameter);
    expect(run(UNINSTALL, ['--help']).status).toBe(0);
  });

  it('refuses what it cannot do safely, before touching any cluster', () => {
    const refusals: [string[], Record<string, string>, RegExp][] = [
      [[], {}, /choose the TEE mode/],
      [['--tee', 'sgx'], {}, /TDX/],
      [['--tee', 'tdx'], {}, /needs --image .*@sha256/],
      [['--tee', 'tdx', '--image', 'registry.example/tee-kms:1.0'], {}, /pins images by digest/],
      [['--tee', 'tdx', '--image', `registry.example/tee-kms@sha256:${'0'.repeat(64)}`], {}, /placeholder digest/],
      [['--tee', 'dev', '--namespace', 'Not_A_Label'], {}, /DNS label/],
      [['--tee', 'dev', '--root-key-file', '/nonexistent'], {}, /cannot read/],
      [['--tee', 'dev', '--generate-root-key'], { KMS_ROOT_KEY: 'x' }, /one way/],
      [['--tee', 'dev', '--domain', 'kms.example.com'], {}, /--gateway-class/],
      [['--tee', 'dev', '--initdata', '/etc/hostname'], {}, /--initdata is gone: each TD pod's init-data is knative\/components\/tdx\/init-data/],
      [['--tee', 'dev', '--queue-proxy-image', QUEUE_PROXY_IMAGE], {}, /--queue-proxy-image is for --tee tdx/],
      [['--tee', 'dev', '--pccs-ca', '/etc/hostname'], {}, /--pccs-ca is for --tee tdx/],
      // The PCCS's CA is listed in every TD's init-data, and the pods trust nothing else for it.
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, ...CUSTODY, '--pccs-ca', '/nonexistent/ca.pem'],
        {},
        /--pccs-ca \/nonexistent\/ca\.pem: no such readable file/,
      ],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, ...CUSTODY, '--pccs-ca', fixture('not-pem.pem', 'a CA\n')],
        {},
        /--pccs-ca \S+not-pem\.pem: must be PEM certificates \(BEGIN CERTIFICATE\), one or more, each marker on a line of its own, and nothing else/,
      ],
      [
        [
          '--dry-run',
          '--tee',
          'tdx',
          '--image',
          DIGEST_IMAGE,
          '--tdx-policy',
          POLICY,
          ...CUSTODY,
          '--pccs-ca',
          fixture('damaged.pem', '-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n'),
        ],
        {},
        /--pccs-ca \S+damaged\.pem: must be PEM certificates/,
      ],
      [['--tee', 'tdx', '--image', DIGEST_IMAGE, '--queue-proxy-image', 'gcr.io/knative-releases/queue:v1.16'], {}, /pins images by digest: 'gcr\.io/],
      [['--tee', 'dev', '--bogus'], {}, /unknown option/],
      [['--tee', 'dev', '--noncurrent-version-days', '0'], {}, /--noncurrent-version-days must be a whole number of days from 1, got '0'/],
      [['--tee', 'dev', '--noncurrent-version-days', '7d'], {}, /--noncurrent-version-days must be/],
      // TDX: the sealer needs reference values, or it refuses every TD.
      [['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE], {}, /--tee tdx needs --tdx-policy FILE.*verify-quote/],
      [['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', '/nonexistent/policy.json'], {}, /--tdx-policy: cannot read/],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, ...CUSTODY, '--pccs-url', 'http://pccs.example:8081'],
        {},
        /--pccs-url must be an https:\/\//,
      ],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, ...CUSTODY, '--pccs-url', 'https://pccs.example/"; x: y'],
        {},
        /--pccs-url must be/,
      ],
      // The functions must be able to attest the sealer, and someone must be allowed to administer it.
      [['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY], {}, /--tee tdx needs --sealer-tdx-policy FILE.*verify-quote/],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, '--sealer-tdx-policy', '/nonexistent/policy.json'],
        {},
        /--sealer-tdx-policy: cannot read/,
      ],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, '--sealer-tdx-policy', fixture('no-mrtd.json', '{"rtmr0": []}')],
        {},
        /error: --sealer-tdx-policy .*no-mrtd\.json/,
      ],
      [
        ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', POLICY, '--sealer-tdx-policy', POLICY],
        {},
        /--tee tdx needs --admin-policy FILE/,
      ],
      [[...TDX_DRY_RUN, '--admin-policy', '/nonexistent/admin.json'], {}, /--admin-policy: cannot read/],
      [[...TDX_DRY_RUN, '--admin-policy', fixture('admin-not-json.json', '{"rotate": [')], {}, /--admin-policy .*admin-not-json\.json: not JSON/],
      [[...TDX_DRY_RUN, '--admin-policy', fixture('admin-op.json', '{"rotat": []}')], {}, /--admin-policy .*: unknown operation "rotat"/],
      [
        [...TDX_DRY_RUN, '--admin-policy', fixture('admin-id.json', '{"seal": ["abc"]}')],
        {},
        /--admin-policy .*: seal\[0\] "abc" is not a function Service of this install/,
      ],
      [['--dry-run', '--tee', 'dev', '--admin-policy', ADMIN_POLICY], {}, /--admin-policy is for --tee tdx/],
      [['--dry-run', '--tee', 'dev', '--sealer-tdx-policy', POLICY], {}, /--sealer-tdx-policy is for --tee tdx/],
      [['--dry-run', '--tee', 'dev', '--tdx-policy', POLICY], {}, /--tdx-policy is for --tee tdx/],
      [['--dry-run', '--tee', 'dev', '--pccs-url', INTEL_PCS_URL], {}, /--pccs-url is for --tee tdx/],
    ];
    for (const [args, env, message] of refusals) {
      const result = run(INSTALL, args, env);
      expect(result.status, args.join(' ')).not.toBe(0);
      expect(result.stderr, args.join(' ')).toMatch(message);
    }
    // BigDL KMS's variable names work as well.
    expect(run(INSTALL, [], { teeMode: 'sgx' }).stderr).toMatch(/TDX/);
    expect(run(INSTALL, ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE], { KMS_TDX_POLICY_FILE: '/nonexistent' }).stderr).toMatch(
      /--tdx-policy: cannot read/,
    );
  });

  describe("--tdx-policy is checked before anything is applied, by the sealer's own loader (scripts/check-policy.ts)", () => {
    const m = MEASUREMENT;
    const cases: [string, string][] = [
      ['docs/attestation.md example', readFileSync(POLICY, 'utf8')],
      ['mrTd and rtmr0-2 only, 0x prefix and upper case', JSON.stringify({ mrTd: [`0x${m.toUpperCase()}`], ...REFERENCE_RTMRS })],
      [
        'two allowed MRTDs and more TCB statuses',
        JSON.stringify({ mrTd: [m, 'cd'.repeat(48)], ...REFERENCE_RTMRS, allowedTcbStatuses: ['UpToDate', 'SWHardeningNeeded'] }),
      ],
      // The sealer accepts it; install.sh does not: MRCONFIGID means something only in a measured guest.
      ['mrTd only (no rtmr0-2)', JSON.stringify({ mrTd: [m] })],
      ['not JSON', '{"mrTd": ['],
      ['empty file', ''],
      ['a list, not an object', JSON.stringify([m])],
      ['no mrTd', JSON.stringify({ rtmr0: [m] })],
      ['empty mrTd', JSON.stringify({ mrTd: [] })],
      ['mrTd not a list', JSON.stringify({ mrTd: m })],
      ['short measurement', JSON.stringify({ mrTd: [m.slice(2)] })],
      ['not hex', JSON.stringify({ mrTd: [`${m.slice(1)}g`] })],
      ['misspelt field', JSON.stringify({ mrTd: [m], rtmr_1: [m] })],
      ['empty optional list', JSON.stringify({ mrTd: [m], mrConfigId: [] })],
      ['Revoked allowed', JSON.stringify({ mrTd: [m], allowedTcbStatuses: ['UpToDate', 'Revoked'] })],
      ['unknown TCB status', JSON.stringify({ mrTd: [m], allowedTcbStatuses: ['Fine'] })],
      ['empty TCB statuses', JSON.stringify({ mrTd: [m], allowedTcbStatuses: [] })],
    ];
    cases.forEach(([name, text], i) => {
      const sealerAccepts = (() => {
        try {
          createTdxPolicy(JSON.parse(text));
          return true;
        } catch {
          return false;
        }
      })();
      // Reference values only: install.sh refuses the fields it or the sealer adds, even where the loader would accept them.
      // And rtmr0-2 pinned: install.sh wants the guest that checks init-data measured.
      const accepted =
        sealerAccepts &&
        !['mrConfigId', 'initData', 'agentPolicies'].some((field) => Object.hasOwn(JSON.parse(text), field)) &&
        ['rtmr0', 'rtmr1', 'rtmr2'].every((field) => Object.hasOwn(JSON.parse(text), field));
      it.skipIf(accepted && skipWithout(KUBECTL))(`${name}: ${accepted ? 'accepted' : 'refused'}`, () => {
        if (accepted) requireTool(KUBECTL);
        const file = fixture(`case-${i}.json`, text);
        const result = run(INSTALL, [...tdxDryRun(file), '--admin-policy', ADMIN_POLICY, '--work-dir', join(fixtures, `work-${i}`)]);
        if (accepted) {
          expect(result.stderr).toMatch(/TDX policy .*: mrTd \d+ allowed/);
          expect(result.status, result.stderr).toBe(0);
        } else {
          expect(result.status).not.toBe(0);
          expect(result.stderr).toMatch(new RegExp(`error: --tdx-policy ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
          expect(result.stdout).toBe('');
        }
      });
    });

    it('a duplicated field is refused too (JSON.parse would keep only the last one)', () => {
      const file = fixture('duplicate.json', `{"mrTd": ["${m}"], "mrTd": ["${'cd'.repeat(48)}"]}`);
      const result = run(INSTALL, ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, '--tdx-policy', file, ...CUSTODY]);
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(/duplicate field mrTd/);
    });
  });

  it('keeps every secret out of the repository: the secrets directory must be outside it', () => {
    const text = readFileSync(INSTALL, 'utf8');
    expect(text).toMatch(/--secrets-dir must be outside the repository/);
    // Secret values reach kubectl as files (--from-file), never as command-line literals.
    expect(text).not.toMatch(/--from-literal/);
    expect(text).toMatch(/--from-file=/);
  });

  describe.skipIf(skipWithout(KUBECTL))('--dry-run: the generated kustomization, rendered by kubectl kustomize', () => {
    beforeAll(() => requireTool(KUBECTL));
    const digest = `sha256:${'ab'.repeat(32)}`;
    const work = mkdtempSync(join(tmpdir(), 'tee-kms-dry-run-'));
    temps.push(work);
    // A PCCS with a private CA: both are listed in every TD pod's init-data.
    const pccsCa = writeTlsFiles(work, 'pccs', 'pccs.example.org');
    const pccs = { url: 'https://pccs.example.org:8081', ca: pccsCa.certPem.trimEnd() };
    // The pods name the image name@digest (kustomize drops the tag): so do their init-data.
    const policies = writeTdxPolicies(work, 'per-function', `registry.example.com/tee-kms@${digest}`, undefined, 'shares', pccs);
    const result = run(INSTALL, [
      '--dry-run',
      '--tee',
      'tdx',
      '--image',
      `registry.example.com/tee-kms:1.2.3@${digest}`,
      '--namespace',
      'kms-prod',
      '--domain',
      'kms.example.org',
      '--gateway-class',
      'example-gateway-class',
      '--storage-size',
      '20Gi',
      '--storage-class',
      'fast-ssd',
      '--bucket',
      'kms-keys',
      '--noncurrent-version-days',
      '30',
      '--tdx-policy',
      policies.policy,
      '--sealer-tdx-policy',
      policies.sealerPolicy,
      '--admin-policy',
      policies.admin,
      '--queue-proxy-image',
      QUEUE_PROXY_IMAGE,
      '--custodian-keys',
      policies.custodians,
      '--pccs-url',
      'https://pccs.example.org:8081/',
      '--pccs-ca',
      pccsCa.certFile,
      '--work-dir',
      join(work, 'k'),
    ]);
    const resources = result.status === 0 ? manifests(result.stdout) : [];

    it('succeeds without a cluster and writes nothing secret', () => {
      expect(result.stderr).not.toMatch(/error/);
      expect(result.status).toBe(0);
      expect(resources.length).toBeGreaterThan(15);
      expect(resources.filter((r) => r.kind === 'Secret')).toEqual([]);
      expect(readKustomization(join(work, 'k')).resources).toEqual([join(KNATIVE, 'base'), join(KNATIVE, 'functions', 'per-function')]);
      expect(readKustomization(join(work, 'k')).components).toEqual([join(KNATIVE, 'components', 'tdx'), join(work, 'k', 'single-host')]);
    });

    it('the sealer gets its policy from its init-data (no ConfigMap, no policy file), and the given PCCS as its one collateral source', () => {
      // The sealer's own summary (sealer/verifiers.ts describePolicy, through scripts/check-policy.ts).
      expect(result.stderr).toMatch(
        new RegExp(
          `TDX policy .*policy\\.json: mrTd 1 allowed, rtmr0 1 allowed, rtmr1 1 allowed, rtmr2 1 allowed, mrConfigId the sealer's own, agentPolicies ${routes.length} \\(the functions', added by install\\.sh\\), TCB status UpToDate, DEBUG refused; DCAP collateral from https://pccs\\.example\\.org:8081\n`,
        ),
      );
      expect(sealerEnv(resources, 'KMS_SEALER_PCCS_URL')).toEqual([{ name: 'KMS_SEALER_PCCS_URL', value: 'https://pccs.example.org:8081' }]);
      expect(sealerEnv(resources, 'KMS_SEALER_PCCS_CA')).toEqual([{ name: 'KMS_SEALER_PCCS_CA', value: pccs.ca }]);
      // Exactly what its init-data lists, and requires.
      const sealerDocument = readFileSync(join(work, 'k', 'init-data', 'tee-kms-sealer.toml'), 'utf8');
      expect(regoArray(sealerDocument, 'pccs_env')).toEqual([`KMS_SEALER_PCCS_URL=${pccs.url}`, `KMS_SEALER_PCCS_CA=${pccs.ca}`]);
      expect(sealerEnv(resources, 'KMS_SEALER_TDX_COLLATERAL_FILE')).toEqual([]);
      expect(sealerEnv(resources, 'KMS_SEALER_TDX_POLICY_FILE')).toEqual([]);
      expect(sealerEnv(resources, 'KMS_SEALER_INIT_DATA_FILE')).toEqual([
        { name: 'KMS_SEALER_INIT_DATA_FILE', value: '/var/run/tee-kms/init-data/tee-kms-sealer.toml' },
      ]);
      expect(JSON.stringify(resources)).not.toContain('tee-kms-tdx-policy');
      const initData = readFileSync(join(work, 'k', 'init-data', 'tee-kms-sealer.toml'), 'utf8');
      const agentPolicies = functionPods().map((pod) => agentPolicyOf(pod, `registry.example.com/tee-kms@${digest}`, QUEUE_PROXY_IMAGE, pccs));
      expect(initData).toContain(
        `\n"tdx-policy.json" = '''\n${JSON.stringify({ ...JSON.parse(readFileSync(policies.policy, 'utf8')), agentPolicies })}\n'''\n`,
      );
      expect(result.stderr).not.toContain('ConfigMap tee-kms-tdx-policy');
    });

    it("the sealer's admin policy and the functions' policy for the sealer come from their init-data, no ConfigMap; the functions use the sealer's PCCS", () => {
      expect(result.stderr).toMatch(/admin policy .*admin-policy\.json: functions granted rotate 1, verify 1, recover 1, seal 1\n/);
      expect(result.stderr).toMatch(
        /no policy is a ConfigMap: .*policy\.json and .*admin-policy\.json are in the sealer's init-data, .*sealer-policy\.json in each function's \(tee-kms-init-data, and the cc_init_data annotations\)/,
      );
      expect(sealerEnv(resources, 'KMS_SEALER_ATTESTER')).toEqual([{ name: 'KMS_SEALER_ATTESTER', value: 'tdx-aa' }]);
      expect(sealerEnv(resources, 'KMS_SEALER_ADMIN_POLICY_FILE')).toEqual([]);
      expect(JSON.stringify(resources)).not.toContain('tee-kms-admin-policy');
      const initData = readFileSync(join(work, 'k', 'init-data', 'tee-kms-sealer.toml'), 'utf8');
      expect(initData).toMatch(/\n"admin-policy\.json" = '''\n\{"rotate":\["policy\.rego:[0-9a-f]{96}"\],.*\}\n'''\n$/);
      const config = resources.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
      expect(config.data.KMS_TRUSTED_SEALER_PCCS_URL).toBe('https://pccs.example.org:8081');
      expect(config.data.KMS_TRUSTED_SEALER_PCCS_CA).toBe(pccs.ca);
      for (const pod of functionPods())
        expect(regoArray(readFileSync(join(work, 'k', 'init-data', `${pod}.toml`), 'utf8'), 'pccs_env'), pod).toEqual([
          `KMS_TRUSTED_SEALER_PCCS_URL=${pccs.url}`,
          `KMS_TRUSTED_SEALER_PCCS_CA=${pccs.ca}`,
        ]);
      const functions = resources.filter((r) => r.apiVersion === 'serving.knative.dev/v1');
      expect(functions).toHaveLength(routes.length);
      for (const f of functions) {
        const pod = f.spec.template.spec;
        expect(
          pod.containers[0].env.filter((e: Json) => e.name === 'KMS_TRUSTED_SEALER_TDX_POLICY_FILE'),
          id(f),
        ).toEqual([]);
        expect(
          pod.volumes.find((v: Json) => v.configMap?.name === 'tee-kms-sealer-tdx-policy'),
          id(f),
        ).toBeUndefined();
        const initData = readFileSync(join(work, 'k', 'init-data', `${f.metadata.name}.toml`), 'utf8');
        expect(initData, id(f)).toMatch(
          new RegExp(
            `\n"sealer-tdx-policy\\.json" = '''\n${JSON.stringify(JSON.parse(readFileSync(policies.sealerPolicy, 'utf8'))).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n'''\n$`,
          ),
        );
      }
      expect(resources.filter((r) => r.metadata.name === 'tee-kms-sealer-tdx-policy')).toEqual([]);
    });

    it('puts everything in the chosen namespace, with the given image digest and parameters', () => {
      for (const r of resources) expect(r.metadata.namespace, id(r)).toBe('kms-prod');
      const images = resources.flatMap((r) => containersOf(r).map(({ container }) => container.image as string));
      expect(images.filter((i) => i.includes('tee-kms'))).toHaveLength(routes.length + 1);
      for (const image of images.filter((i) => i.includes('tee-kms'))) expect(image).toBe(`registry.example.com/tee-kms@${digest}`);
      const config = resources.find((r) => r.kind === 'ConfigMap')!;
      expect(config.data.KMS_S3_BUCKET).toBe('kms-keys');
      const bucketJob = resources.find((r) => r.kind === 'Job' && r.metadata.name === 'tee-kms-minio-bucket')!;
      const jobEnv = bucketJob.spec.template.spec.containers[0].env as Json[];
      expect(jobEnv.filter((e) => e.name === 'KMS_S3_NONCURRENT_VERSION_DAYS')).toEqual([{ name: 'KMS_S3_NONCURRENT_VERSION_DAYS', value: '30' }]);
      expect(jobEnv.find((e) => e.name === 'KMS_S3_BUCKET')).toBeDefined(); // the patch merges by name, it does not replace the list
      const minio = resources.find((r) => r.kind === 'StatefulSet')!;
      expect(minio.spec.volumeClaimTemplates[0].spec).toMatchObject({ storageClassName: 'fast-ssd', resources: { requests: { storage: '20Gi' } } });
      for (const s of resources.filter((r) => r.kind === 'Service' && r.apiVersion === 'serving.knative.dev/v1')) {
        expect(s.spec.template.metadata.annotations['tee-kms/config-revision']).toBeDefined();
        expect(s.spec.template.spec.runtimeClassName).toBe('kata-qemu-tdx');
      }
    });

    it('routes the single host to the functions of that namespace', () => {
      const route = resources.find((r) => r.kind === 'HTTPRoute')!;
      const gateway = resources.find((r) => r.kind === 'Gateway')!;
      expect(route.spec.hostnames).toEqual(['kms.example.org']);
      expect(gateway.spec.gatewayClassName).toBe('example-gateway-class');
      expect(gateway.spec.listeners[0].hostname).toBe('kms.example.org');
      for (const rule of route.spec.rules) {
        const host: string = rule.filters.find((f: Json) => f.type === 'URLRewrite').urlRewrite.hostname;
        expect(host).toMatch(/^[a-z-]+\.kms-prod\.svc\.cluster\.local$/);
      }
    });
  });

  describe.skipIf(skipWithout(KUBECTL))('--dry-run: the root key mode decides whether the root key Secret is mounted into the sealer', () => {
    beforeAll(() => requireTool(KUBECTL));
    const key = randomBytes(32).toString('base64');
    const keyFile = fixture('root.key', `${key}\n`);
    const cases: [string, string[], Record<string, string>, boolean][] = [
      ['no root key: the Shamir mode', [], {}, false],
      ['--generate-root-key', ['--generate-root-key'], {}, true],
      ['--root-key-file', ['--root-key-file', keyFile], {}, true],
      ['KMS_ROOT_KEY', [], { KMS_ROOT_KEY: key }, true],
      ["BigDL KMS's rootKey", [], { rootKey: key }, true],
      ['--tee tdx with --generate-root-key', ['--tee', 'tdx', '--image', DIGEST_IMAGE, ...MODE_1_POLICIES, '--generate-root-key'], {}, true],
    ];
    cases.forEach(([name, args, variables, mode1], i) => {
      it(`${name}: ${mode1 ? 'mode 1, components/root-key-secret' : 'no root key Secret anywhere'}`, () => {
        const work = join(fixtures, `root-key-${i}`);
        const tee = args.includes('--tee') ? [] : ['--tee', 'dev'];
        const result = run(INSTALL, ['--dry-run', ...tee, ...args, '--work-dir', work], variables);
        expect(result.status, result.stderr).toBe(0);
        const tdx = args.includes('tdx');
        expect(readKustomization(work).components).toEqual([join(KNATIVE, 'components', tdx ? 'tdx' : 'dev'), ...(mode1 ? [ROOT_KEY_COMPONENT] : [])]);
        const resources = manifests(result.stdout);
        const sealer = sealerOf(resources);
        const pod = sealer.spec.template.spec;
        const env = pod.containers[0].env as Json[];
        if (mode1) {
          expect(env.filter((e) => e.name.includes('ROOT_KEY'))).toEqual([{ name: 'KMS_SEALER_ROOT_KEY_FILE', value: ROOT_KEY_FILE }]);
          expect(pod.containers[0].volumeMounts).toContainEqual({ name: 'root-key', mountPath: ROOT_KEY_MOUNT, readOnly: true });
          expect((pod.volumes as Json[]).find((v) => v.name === 'root-key').secret).toMatchObject({ secretName: 'tee-kms-root-key', optional: false });
          expect(resources.filter((r) => JSON.stringify(r).includes('tee-kms-root-key')).map(id)).toEqual([id(sealer)]);
          if (tdx) {
            expect(env.map((e) => e.name)).toContain('KMS_SEALER_PCCS_URL'); // both components applied
            // Mode 1 is measured: the sealer's agent policy admits exactly that variable.
            const initData = readFileSync(join(work, 'init-data', 'tee-kms-sealer.toml'), 'utf8');
            expect(initData).toContain(`\nroot_key_env := ${JSON.stringify(ROOT_KEY_PINS)}\n`);
            expect(env.filter((e) => e.name.startsWith('KMS_SEALER_ROOT_KEY')).map((e) => `${e.name}=${e.value}`)).toEqual([...ROOT_KEY_PINS]);
          }
        } else {
          expect(env.filter((e) => e.name.includes('ROOT_KEY'))).toEqual([]);
          expect(result.stdout).not.toContain('tee-kms-root-key');
        }
        // A dry run makes no Secret and shows no key.
        expect(resources.filter((r) => r.kind === 'Secret')).toEqual([]);
        expect(result.stdout + result.stderr).not.toContain(key);
      });
    });
  });

  it.skipIf(skipWithout(KUBECTL))('--tee tdx without --pccs-url: the sealer fetches collateral from Intel PCS (dry run)', () => {
    requireTool(KUBECTL);
    const result = run(INSTALL, ['--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE], {
      KMS_TDX_POLICY_FILE: POLICY,
      KMS_TRUSTED_SEALER_TDX_POLICY_FILE: SEALER_POLICY,
      KMS_ADMIN_POLICY_FILE: ADMIN_POLICY,
      KMS_QUEUE_PROXY_IMAGE: QUEUE_PROXY_IMAGE,
      KMS_CUSTODIAN_KEYS_FILE: custodianKeysFile(),
    });
    expect(result.status, result.stderr).toBe(0);
    const resources = manifests(result.stdout);
    expect(sealerEnv(resources, 'KMS_SEALER_PCCS_URL')).toEqual([{ name: 'KMS_SEALER_PCCS_URL', value: INTEL_PCS_URL }]);
    // The functions check the sealer's quotes with collateral from the same place.
    const config = resources.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
    expect(config.data.KMS_TRUSTED_SEALER_PCCS_URL).toBe(INTEL_PCS_URL);
    // The five custodians pinned with the default threshold, and the rotating function asks for just that.
    expect(sealerEnv(resources, 'KMS_SEALER_CUSTODIANS_THRESHOLD')).toEqual([{ name: 'KMS_SEALER_CUSTODIANS_THRESHOLD', value: '3' }]);
    expect(sealerEnv(resources, 'KMS_SEALER_CUSTODIANS')[0]!.value.split(',')).toHaveLength(5);
    expect([config.data.KMS_SHARES, config.data.KMS_THRESHOLD]).toEqual(['5', '3']);
  });

  it.skipIf(skipWithout(KUBECTL))('--tee dev still installs the sample-evidence sealer: no TDX policy, no collateral source (dry run)', () => {
    requireTool(KUBECTL);
    const result = run(INSTALL, ['--dry-run', '--tee', 'dev']);
    expect(result.status, result.stderr).toBe(0);
    const resources = manifests(result.stdout);
    const env = sealerOf(resources).spec.template.spec.containers[0].env as Json[];
    expect(env.filter((e) => /^KMS_SEALER_(TDX_|PCCS_)/.test(e.name))).toEqual([]);
    expect(env).toContainEqual({ name: 'KMS_SEALER_INSECURE_DEV_MODE', value: 'true' });
    expect(JSON.stringify(resources)).not.toContain('tdx-policy');
    expect(result.stderr).not.toContain('TDX policy');
  });
});

describe('Dockerfile and .dockerignore', () => {
  const dockerfile = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
  const [build, runtime] = dockerfile.stages;
  const runs = (stage: typeof build) => stage!.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);

  it('is multi-stage: a build stage compiles (npm ci, npm run build), the runtime has production dependencies only', () => {
    expect(dockerfile.stages).toHaveLength(2);
    expect(build!.name).toBe('build');
    expect(runs(build).join('\n')).toMatch(/npm ci\b/);
    expect(runs(build).join('\n')).toMatch(/npm run build\b/);
    expect(runs(runtime).join('\n')).toMatch(/npm ci --omit=dev\b/);
    expect(runs(runtime).join('\n')).not.toMatch(/npm (install|i)\b/);
    const copies = runtime!.instructions.filter((i) => i.op === 'COPY').map((i) => i.args);
    expect(copies).toContain('--from=build /app/dist ./dist');
    expect(copies.filter((c) => !c.startsWith('--from'))).toEqual(['package.json package-lock.json ./']);
    expect(build!.from).toBe(runtime!.from);
  });

  it("the base image is a Node.js LTS line package.json's engines names, as is the Node running these tests", () => {
    const from = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).args.find((a) => a.args.startsWith('NODE_IMAGE='))!.args;
    const major = /^NODE_IMAGE=node:(\d+)-bookworm-slim(@sha256:[0-9a-f]{64})?$/.exec(from)?.[1];
    expect(major, from).toBeDefined();
    expect(Number(major) % 2, 'an even (LTS) line').toBe(0);
    expect(Number(major)).toBeGreaterThanOrEqual(22); // Node 20 left support in April 2026
    const engines = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).engines.node as string;
    const ranges = engines.split('||').map((r) => /^\^(\d+)\.(\d+)\.\d+$/.exec(r.trim()));
    expect(ranges.every(Boolean), engines).toBe(true);
    const majors = ranges.map((r) => Number(r![1]));
    expect(majors).toContain(Number(major));
    expect(majors).toContain(Number(process.versions.node.split('.')[0]));
  });

  it('runs as a non-root user with NODE_ENV=production, on 0.0.0.0 without TLS (Knative terminates it), CMD the lean host', () => {
    const user = runtime!.instructions.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).toMatch(/^(node|1000)(:(node|1000))?$/);
    expect(dockerEnv(runtime!)).toMatchObject({ NODE_ENV: 'production', KMS_BIND: '0.0.0.0', KMS_TLS: 'off' });
    expect(dockerCmd(runtime!)).toEqual(['node', 'dist/scripts/serve.js']);
    // The manifests' runAsUser is the image's user.
    expect(readFileSync(join(KNATIVE, 'functions', 'per-function', 'welcome.yaml'), 'utf8')).toContain('runAsUser: 1000');
  });

  it('copies only sources that exist, and .dockerignore lets exactly those in', () => {
    const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    for (const copy of build!.instructions.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/))) {
      for (const source of copy.slice(0, -1)) {
        expect(existsSync(join(REPO, source)), source).toBe(true);
        expect(allowed, `.dockerignore must let ${source} in`).toContain(source);
      }
    }
    for (const never of ['**/node_modules', '**/.kms']) expect(ignore).toContain(never);
    expect(allowed).not.toContain('dist');
    expect(allowed).not.toContain('test');
  });
});

describe('docs/deploy-knative.md', () => {
  const doc = readFileSync(join(REPO, 'docs', 'deploy-knative.md'), 'utf8');

  it('walks through prerequisites, secrets and TLS, install, check, uninstall', () => {
    for (const heading of ['Prerequisites', 'Secrets', 'TLS', 'Install', 'Check', 'Uninstall']) expect(doc).toMatch(new RegExp(`^#+ .*${heading}`, 'm'));
    expect(doc).toContain('knative/install.sh');
    expect(doc).toContain('knative/uninstall.sh');
  });

  it('documents the TDX policy and collateral parameters, where reference values come from, and what happens without them', () => {
    for (const text of [
      '--tdx-policy',
      '--pccs-url',
      INTEL_PCS_URL,
      'tee-kms-sealer-tdx-policy',
      'KMS_SEALER_INIT_DATA_FILE',
      'KMS_SEALER_PCCS_URL',
      'npm run --silent verify-quote --',
      'docs/attestation.md',
    ]) {
      expect(doc, text).toContain(text);
    }
    expect(doc).toMatch(/refuses every (TD|pod)/);
    // Every install example for production passes a policy.
    const examples = doc.match(/knative\/install\.sh --tee tdx(?:[^\n]*\\\n)*[^\n]*/g) ?? [];
    expect(examples.length).toBeGreaterThanOrEqual(2);
    for (const example of examples) for (const option of ['--tdx-policy', '--sealer-tdx-policy', '--admin-policy']) expect(example).toContain(option);
  });

  it('kn service create carries what a TDX pod needs, kn service apply -f takes a generated Service', () => {
    const tdxComponent = readFileSync(join(KNATIVE, 'components', 'tdx', 'patches', 'functions-tdx.yaml'), 'utf8');
    const annotation = /path: \/spec\/template\/metadata\/annotations\/(\S+)\n\s*value: (\S+)/.exec(tdxComponent)!;
    expect(doc).toContain(`--annotation-revision ${annotation[1]!.replaceAll('~1', '/')}=${annotation[2]}`);
    expect(doc).toContain('"runtimeClassName":"kata-qemu-tdx"');
    expect(doc).toContain('--probe-readiness http::8080:/readyz');
    expect(doc).toMatch(/kn service apply [a-z-]+ -n tee-kms -f [a-z-]+\.yaml/);
    for (const route of routes)
      expect(doc, route.name).toMatch(new RegExp(`kn service create [a-z-]+ [^\\n]*"\\$\\{TDX\\[@\\]\\}"[^\\n]*FUNCTION_TARGET=${route.name}\\b`));
  });

  it('sends no token or key to an http:// URL, except through a local kubectl port-forward', () => {
    for (const text of [doc, readFileSync(join(REPO, 'README.md'), 'utf8')]) {
      for (const line of text.split('\n').filter((l) => /\bcurl\b/.test(l) && /http:\/\//.test(l))) {
        // A metrics scrape sends no credential; anything else goes through the port-forward only.
        expect(line).toMatch(/http:\/\/127\.0\.0\.1:(8081\/|946[45]\/metrics )/);
      }
    }
  });

  it("kn service create sets no variable the functions' agent policy denies (env_denied_none)", () => {
    const env = [...doc.matchAll(/--env ([A-Z_][A-Z0-9_]*=\S*)/g)].map((m) => m[1]!);
    expect(env).toEqual(expect.arrayContaining(['NODE_ENV=production', 'NODE_EXTRA_CA_CERTS=/var/run/tee-kms/ca/ca.crt', 'FUNCTION_TARGET=welcome']));
    for (const pod of functionPods()) expect(deniedEntries(deployedInitData(pod), 'function', env), pod).toEqual([]);
  });

  it('gives the kn service create command of every function', () => {
    for (const route of routes)
      expect(doc, route.name).toMatch(new RegExp(`kn service create [a-z-]+[^\\n]*(\\\\\\n[^\\n]*)*FUNCTION_TARGET=${route.name}\\b`));
  });
});
