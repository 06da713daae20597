/**
 * knative/install.sh end to end against a recording kubectl (test/knative/fake/kubectl): it answers
 * what the script asks (versions, CRDs, RuntimeClasses, Knative's ConfigMaps, `auth can-i`) and
 * records every call. A refusal must stop the script before its first write; a cluster that has
 * everything gets the writes in order: all checks first, then namespace, Secrets, Knative's
 * configuration, the issuer, `apply -k` (rendered by the real kubectl where it is installed; what it
 * would apply is kept, so the tests read the manifests of each root key mode).
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { requireTool, skipWithout } from '../support/tools.js';
import { KUBECTL, ROOT_KEY_FILE, ROOT_KEY_MOUNT, type Json, type Resource } from './support.js';
import { writeTlsFiles } from '../support/tls-files.js';
import { FAKE_BIN, INSTALL, runInstall } from './install-run.js';
import {
  agentPolicyOf,
  containerRuleOf,
  CUSTODIAN_KEYS,
  CUSTODIANS_PIN,
  CUSTODIANS_PINS,
  THRESHOLD_PIN,
  custodianKeysFile,
  deniedEntries,
  deployedInitData,
  functionPods,
  DIGEST_IMAGE,
  mrConfigIdOf,
  pinnedAdmits,
  QUEUE_PROXY_IMAGE,
  regoArray,
  ROOT_KEY_PINS,
  SEALER_POD,
  tdContainerEnv,
  writeTdxPolicies,
} from './tdx-fixtures.js';

const temps: string[] = [];
afterAll(() => temps.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** A mode-1 root key file, as --root-key-file takes it (base64 of 32 bytes, with a newline). */
const keyDir = mkdtempSync(join(tmpdir(), 'tee-kms-root-key-'));
temps.push(keyDir);
const GIVEN_ROOT_KEY = join(keyDir, 'root.key');
writeFileSync(GIVEN_ROOT_KEY, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });

/** Writes: what changes a cluster. Everything else the script runs only reads. */
function isWrite(call: string): boolean {
  const [verb] = call.split(' ');
  if (verb === 'create' || verb === 'label') return !call.includes('--dry-run=client') && !call.includes('--local');
  if (verb === 'rollout') return call.startsWith('rollout restart');
  return ['apply', 'patch', 'delete', 'annotate', 'replace', 'scale', 'edit'].includes(verb!);
}

interface Run {
  readonly log: string;
  readonly status: number | null;
  readonly stderr: string;
  readonly calls: string[];
  readonly secrets: string;
}

interface Kustomization {
  readonly components: string[];
  readonly patches: { target?: { name: string }; patch: string }[];
}

/** The kustomization install.sh wrote into `dir` (its --work-dir, or the one it ran `apply -k` on). */
function kustomizationIn(dir: string): Kustomization {
  return parseAllDocuments(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Kustomization;
}

/** The kustomization of a run's `kubectl apply -k`. */
const appliedKustomization = (run: Run): Kustomization => kustomizationIn(run.calls.find((c) => c.startsWith('apply -k '))!.split(' ')[2]!);

/** The variables the kustomization's own patches add to the sealer's container. */
function sealerPatchEnv(kustomization: Kustomization): { name: string; value: string }[] {
  return kustomization.patches
    .filter((p) => p.target?.name === SEALER_POD)
    .flatMap((p) => parseAllDocuments(p.patch)[0]!.toJS() as { op: string; path: string; value: { name: string; value: string } }[])
    .filter((op) => op.path === '/spec/template/spec/containers/0/env/-')
    .map((op) => op.value);
}

function install(args: string[], fake: Record<string, string> = {}): Run {
  const dir = mkdtempSync(join(tmpdir(), 'tee-kms-install-'));
  temps.push(dir);
  const secrets = join(dir, 'secrets');
  return { ...runInstall(dir, secrets, args, fake), secrets };
}

describe('install.sh against a recording kubectl', () => {
  it('the stand-in is executable', () => {
    chmodSync(join(FAKE_BIN, 'kubectl'), 0o755);
    expect(
      spawnSync(join(FAKE_BIN, 'kubectl'), ['version', '--client', '-o', 'json'], { env: { FAKE_KUBECTL_LOG: '/dev/null' }, encoding: 'utf8' }).stdout,
    ).toContain('"minor": "35"');
  });

  const refusals: [string, string[], Record<string, string>, RegExp][] = [
    ['kubectl too old to render the overlays', ['--tee', 'dev'], { FAKE_CLIENT_MINOR: '20' }, /kubectl 1\.20 is too old .*install kubectl 1\.27 or later/],
    [
      'kubectl cannot render the manifests',
      ['--tee', 'dev'],
      { FAKE_RENDER_FAILS: '1' },
      /kubectl 1\.35 cannot render the manifests: error: invalid Kustomization/,
    ],
    ['cluster unreachable', ['--tee', 'dev'], { FAKE_UNREACHABLE: '1' }, /cannot reach the cluster/],
    ['no Knative Serving', ['--tee', 'dev'], { FAKE_MISSING: 'services.serving.knative.dev' }, /Knative Serving is not installed/],
    ['no cert-manager', ['--tee', 'dev'], { FAKE_MISSING: 'certificates.cert-manager.io' }, /cert-manager is not installed .*HTTPS/],
    ['Knative too old for its cert-manager integration', ['--tee', 'dev'], { FAKE_KNATIVE_VERSION: '1.12.3' }, /Knative Serving 1\.12\.3 .*upgrade to 1\.15/],
    ['no real Knative domain', ['--tee', 'dev'], { FAKE_DOMAIN: 'example.com' }, /Knative has no real domain .*config-domain/],
    [
      'another issuer already configured',
      ['--tee', 'dev'],
      { FAKE_EXTERNAL_TLS: 'Enabled', FAKE_ISSUER_REF: 'kind: ClusterIssuer\nname: corp-ca\n', KMS_TLS_ISSUER: 'self-signed' },
      /already names the issuer corp-ca .*--tls cluster/,
    ],
    ['--tls cluster without TLS configured', ['--tee', 'dev', '--tls', 'cluster'], {}, /--tls cluster: .*external-domain-tls/],
    [
      "RBAC: cannot patch Knative's config-network",
      ['--tee', 'dev'],
      { FAKE_DENY: 'patch:configmaps/config-network' },
      /RBAC: you cannot patch configmaps\/config-network in namespace knative-serving/,
    ],
    [
      'RBAC: cannot create Knative Services',
      ['--tee', 'dev'],
      { FAKE_DENY: 'create:services.serving.knative.dev' },
      /RBAC: you cannot create services\.serving\.knative\.dev in namespace tee-kms/,
    ],
    [
      'RBAC: cannot create ClusterIssuers',
      ['--tee', 'dev'],
      { FAKE_DENY: 'create:clusterissuers.cert-manager.io' },
      /RBAC: you cannot create clusterissuers\.cert-manager\.io \(cluster-wide\)/,
    ],
    ['RBAC: cannot create the namespace', ['--tee', 'dev'], { FAKE_DENY: 'create:namespaces' }, /RBAC: you cannot create namespaces/],
    [
      '--skip-knative-config on a Knative without HTTPS',
      ['--tee', 'dev', '--skip-knative-config'],
      {},
      /--skip-knative-config: Knative's external-domain-tls is not set up/,
    ],
  ];
  for (const [name, args, fake, message] of refusals) {
    it(`${name}: stops with what to do, before any write`, () => {
      const run = install(args, fake);
      expect(run.status, run.stderr).not.toBe(0);
      expect(run.stderr).toMatch(message);
      expect(run.calls.filter(isWrite)).toEqual([]);
      expect(existsSync(join(run.secrets, 'admin-token')), 'no secret generated').toBe(false);
    });
  }

  /**
   * --tee tdx's policy files, naming the init-data digests of the pods (tdx-fixtures.ts): the
   * sealer's TDX policy, the functions' one for the sealer, the admin policy.
   */
  const tdxFiles = () => {
    const dir = mkdtempSync(join(tmpdir(), 'tee-kms-policy-'));
    temps.push(dir);
    const { policy, sealerPolicy, admin, sealerId } = writeTdxPolicies(dir);
    const notJson = join(dir, 'not-json.json');
    writeFileSync(notJson, '{"rotate": [');
    // The sealer's policy with a field install.sh or the sealer adds itself.
    const withField = (field: string, value: unknown) => {
      const file = join(dir, `with-${field}.json`);
      writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(policy, 'utf8')) as object), [field]: value }));
      return file;
    };
    const withInitData = withField('initData', { required: true });
    const withMrConfigId = withField('mrConfigId', ['ab'.repeat(48)]);
    const withAgentPolicies = withField('agentPolicies', ['ab'.repeat(48)]);
    // The functions' policy for the sealer admitting a firmware the sealer's own policy does not.
    const widerSealer = join(dir, 'wider-sealer.json');
    const sealerJson = JSON.parse(readFileSync(sealerPolicy, 'utf8')) as { mrTd: string[] };
    writeFileSync(widerSealer, JSON.stringify({ ...sealerJson, mrTd: [...sealerJson.mrTd, 'fe'.repeat(48)] }));
    return { policy, sealerPolicy, admin, sealerId, notJson, withInitData, withMrConfigId, withAgentPolicies, widerSealer };
  };
  // The Shamir mode needs the custodians pinned; mode 1 takes them too.
  const TDX = ['--tee', 'tdx', '--image', DIGEST_IMAGE, '--queue-proxy-image', QUEUE_PROXY_IMAGE, '--custodian-keys', custodianKeysFile()];

  it('--tee tdx without the kata-qemu-tdx RuntimeClass stops (not a warning), before any write', () => {
    const { policy, sealerPolicy, admin } = tdxFiles();
    const run = install([...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin], {
      FAKE_MISSING: 'kata-qemu-tdx',
    });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/RuntimeClass kata-qemu-tdx is missing: install Confidential Containers/);
    expect(run.stderr).toMatch(/nothing was changed/);
    expect(run.calls.filter(isWrite)).toEqual([]);
  });

  describe('--tee tdx refuses to install a sealer nobody may administer, or functions that cannot attest it', () => {
    const cases: [string, (f: ReturnType<typeof tdxFiles>) => string[], RegExp][] = [
      ['no --sealer-tdx-policy', (f) => ['--admin-policy', f.admin], /--tee tdx needs --sealer-tdx-policy FILE/],
      ['no --admin-policy', (f) => ['--sealer-tdx-policy', f.sealerPolicy], /--tee tdx needs --admin-policy FILE/],
      ['an unreadable --admin-policy', (f) => ['--sealer-tdx-policy', f.sealerPolicy, '--admin-policy', `${f.admin}.missing`], /--admin-policy: cannot read/],
      [
        'a --sealer-tdx-policy that names no init-data digest',
        (f) => ['--sealer-tdx-policy', f.withMrConfigId, '--admin-policy', f.admin],
        /--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there \(tee-kms-sealer\)/,
      ],
      [
        'an --admin-policy that is not JSON',
        (f) => ['--sealer-tdx-policy', f.sealerPolicy, '--admin-policy', f.notJson],
        /--admin-policy \S+not-json\.json: not JSON/,
      ],
    ];
    const admitsItself =
      "install.sh admits the functions by their agent policies \\(it adds agentPolicies, each function's policy\\.rego digest\\) and the sealer adds its own MRCONFIGID itself";
    cases.push(
      [
        'a --sealer-tdx-policy wider than --tdx-policy (the sealer would refuse every function trusting it so)',
        (f) => ['--sealer-tdx-policy', f.widerSealer, '--admin-policy', f.admin],
        new RegExp(`--sealer-tdx-policy \\S+wider-sealer\\.json: admits mrTd ${'fe'.repeat(48)}, which \\S+ refuses`),
      ],
      [
        'a --tdx-policy that demands initData',
        (f) => ['--tdx-policy', f.withInitData, '--sealer-tdx-policy', f.sealerPolicy, '--admin-policy', f.admin],
        new RegExp(`--tdx-policy \\S+with-initData\\.json: remove initData: ${admitsItself}; its replicas, which attest without init-data, would be refused`),
      ],
      [
        'a --tdx-policy that names MRCONFIGIDs',
        (f) => ['--tdx-policy', f.withMrConfigId, '--sealer-tdx-policy', f.sealerPolicy, '--admin-policy', f.admin],
        new RegExp(`--tdx-policy \\S+with-mrConfigId\\.json: remove mrConfigId: ${admitsItself}`),
      ],
      [
        'a --tdx-policy that lists agent policies of its own',
        (f) => ['--tdx-policy', f.withAgentPolicies, '--sealer-tdx-policy', f.sealerPolicy, '--admin-policy', f.admin],
        new RegExp(`--tdx-policy \\S+with-agentPolicies\\.json: remove agentPolicies: ${admitsItself}`),
      ],
    );
    it('the Shamir mode without --custodian-keys: stops before asking the cluster anything (the first rotate would choose the custodians)', () => {
      const { policy, sealerPolicy, admin } = tdxFiles();
      const withoutCustodians = TDX.slice(0, TDX.indexOf('--custodian-keys'));
      const run = install([...withoutCustodians, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin]);
      expect(run.status, run.stderr).not.toBe(0);
      expect(run.stderr).toMatch(
        /--tee tdx in the Shamir mode needs --custodian-keys FILE: .*without them whoever reaches the first rotate first, which takes no token .*chooses the custodians and reads every share/,
      );
      expect(run.calls).toEqual([]);
      expect(existsSync(join(run.secrets, 'admin-token')), 'no secret generated').toBe(false);
    });

    for (const [name, extra, message] of cases) {
      it(`${name}: stops before asking the cluster anything`, () => {
        const files = tdxFiles();
        const run = install([...TDX, '--tdx-policy', files.policy, ...extra(files)]);
        expect(run.status, run.stderr).not.toBe(0);
        expect(run.stderr).toMatch(message);
        expect(run.calls).toEqual([]);
        expect(existsSync(join(run.secrets, 'admin-token')), 'no secret generated').toBe(false);
      });
    }

    it("given all three, the sealer's two policies go into its init-data, the functions' policy for the sealer into theirs, none into a ConfigMap", () => {
      const { policy, sealerPolicy, admin, sealerId } = tdxFiles();
      const work = join(mkdtempSync(join(tmpdir(), 'tee-kms-work-')), 'k');
      const run = install([...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin, '--no-wait', '--work-dir', work]);
      expect(run.status, run.stderr).toBe(0);
      // No ConfigMap the cluster administrator could edit holds a policy, and no kubectl call names their files.
      for (const name of ['tee-kms-tdx-policy', 'tee-kms-admin-policy', 'tee-kms-sealer-tdx-policy'])
        expect(
          run.calls.filter((c) => c.includes(name)),
          name,
        ).toEqual([]);
      expect(run.calls.filter((c) => c.includes(policy) || c.includes(admin) || c.includes(sealerPolicy))).toEqual([]);
      expect(run.stderr).toMatch(/functions granted rotate 1, verify 1, recover 1, seal 1\n/);
      expect(run.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${sealerId}\n`);
      // The order: the functions' agent policies, the sealer's MRCONFIGID, then the functions' (which cover --sealer-tdx-policy).
      const at = (text: string) => run.stderr.indexOf(text);
      for (const pod of functionPods()) {
        expect(run.stderr).toContain(`agent policy ${pod}: ${agentPolicyOf(pod)}\n`);
        expect(at(`agent policy ${pod}: `)).toBeLessThan(at(`MRCONFIGID ${SEALER_POD}: `));
        expect(at(`MRCONFIGID ${pod}: `)).toBeGreaterThan(at(`MRCONFIGID ${SEALER_POD}: `));
        // Each function's document ends with the functions' policy for the sealer, byte for byte.
        const document = readFileSync(join(work, 'init-data', `${pod}.toml`), 'utf8');
        expect(document, pod).toBe(deployedInitData(pod, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', undefined, readFileSync(sealerPolicy, 'utf8')));
        expect(document.endsWith(`'''\n"sealer-tdx-policy.json" = '''\n${JSON.stringify(JSON.parse(readFileSync(sealerPolicy, 'utf8')))}\n'''\n`), pod).toBe(
          true,
        );
        expect(run.stderr).toContain(`MRCONFIGID ${pod}: ${mrConfigIdOf(document)}\n`);
      }
      expect(run.stderr).toMatch(/the functions' MRCONFIGIDs cover --sealer-tdx-policy: they change with it/);
      // The Shamir mode: the sealer's init-data lists no root key variable, so none is admitted.
      const sealerInitData = readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8');
      expect(sealerInitData).toBe(deployedInitData(SEALER_POD));
      expect(mrConfigIdOf(sealerInitData)).toBe(sealerId);
      // Both policies, byte for byte: compact JSON, the document's last entries; the functions by
      // their agent policy digests, as computed here (smol-toml, node:crypto).
      const agentPolicies = functionPods().map((pod) => agentPolicyOf(pod));
      const measuredTdx = JSON.stringify({ ...(JSON.parse(readFileSync(policy, 'utf8')) as object), agentPolicies });
      const of = (pod: string) => `policy.rego:${agentPolicyOf(pod)}`;
      const measuredAdmin = JSON.stringify({
        rotate: [of('rotate-root-key')],
        verify: [of('verify-root-key')],
        recover: [of('recover-root-key')],
        seal: [of('rotate-root-key')],
      });
      expect(sealerInitData.endsWith(`'''\n"tdx-policy.json" = '''\n${measuredTdx}\n'''\n"admin-policy.json" = '''\n${measuredAdmin}\n'''\n`)).toBe(true);
      expect(sealerInitData.split('\nroot_key_env := []\n')).toHaveLength(2);
      // The custodians pinned: KMS_SEALER_CUSTODIANS admitted with their thumbprints only, and required;
      // their threshold beside them (the default, 3).
      expect(regoArray(sealerInitData, 'custodians_env')).toEqual([CUSTODIANS_PIN, THRESHOLD_PIN]);
      // The sealer reads them from its mounted init-data file, which install.sh names.
      const env = sealerPatchEnv(kustomizationIn(work));
      expect(env).toEqual([
        { name: 'KMS_SEALER_INIT_DATA_FILE', value: `/var/run/tee-kms/init-data/${SEALER_POD}.toml` },
        { name: 'KMS_SEALER_CUSTODIANS', value: CUSTODIANS_PIN.slice('KMS_SEALER_CUSTODIANS='.length) },
        { name: 'KMS_SEALER_CUSTODIANS_THRESHOLD', value: '3' },
      ]);
    });

    it('an installed sealer of other init-data: says its replicas restart as TDs of a new identity (the Shamir mode: shares again)', () => {
      const { policy, sealerPolicy, admin, sealerId } = tdxFiles();
      const args = [...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin, '--no-wait'];
      const changed = install(args, { FAKE_SEALER_INIT_DATA: deployedInitData(SEALER_POD).replace('"tdx-policy.json"', '"tdx-policy.json.old"') });
      expect(changed.status, changed.stderr).toBe(0);
      expect(changed.stderr).toContain(`the sealer's init-data changed (MRCONFIGID ${sealerId}): its replicas restart one at a time`);
      expect(changed.stderr).toContain(
        'send 3 shares, each sealed by its custodian with their recovery challenge (custodian seal-share --key, docs/custodians.md) to recover-root-key',
      );
      const same = install(args, { FAKE_SEALER_INIT_DATA: deployedInitData(SEALER_POD) });
      expect(same.status, same.stderr).toBe(0);
      expect(same.stderr).not.toContain("the sealer's init-data changed");
    });

    it('--auto-unseal-*: the sealer gets exactly the variables its init-data lists, and its MRCONFIGID changes', () => {
      const { policy, sealerPolicy, admin } = tdxFiles();
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-kbs-ca-'));
      temps.push(dir);
      const { certFile, certPem } = writeTlsFiles(dir, 'kbs');
      const url = 'https://kbs.example:8080';
      const pins = [`KMS_SEALER_UNSEAL_KBS_URL=${url}`, `KMS_SEALER_UNSEAL_CA=${certPem.trimEnd()}`];
      const shipped = deployedInitData(SEALER_POD);
      const expected = shipped.replace('\nauto_unseal_env := []\n', `\nauto_unseal_env := ${JSON.stringify(pins)}\n`);
      expect(expected).not.toBe(shipped);
      const flags = ['--auto-unseal-kbs-url', url, '--auto-unseal-ca', certFile];
      const args = [...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin, '--no-wait'];

      // The policies still name the old MRCONFIGID: refused, nothing written.
      const stale = install([...args, ...flags]);
      expect(stale.status).not.toBe(0);
      expect(stale.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
      expect(stale.stderr).toMatch(
        /--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there \(tee-kms-sealer\)/,
      );
      expect(stale.calls.filter(isWrite)).toEqual([]);

      // The sealer's new identity: only the functions' policy for it names it (its own policies name the functions).
      const old = mrConfigIdOf(shipped);
      const renamed = (file: string) => writeFileSync(file, readFileSync(file, 'utf8').split(old).join(mrConfigIdOf(expected)));
      renamed(sealerPolicy);
      const work = join(mkdtempSync(join(tmpdir(), 'tee-kms-work-')), 'k');
      const run = install([...args, ...flags, '--work-dir', work]);
      expect(run.status, run.stderr).toBe(0);
      expect(readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8')).toBe(expected);
      const env = sealerPatchEnv(appliedKustomization(run));
      expect(env.filter((e) => e.name.startsWith('KMS_SEALER_UNSEAL_')).map((e) => `${e.name}=${e.value}`)).toEqual(pins);
    });

    it('--auto-unseal-* refuses a bad URL, a missing CA, a bad resource, and --tee dev', () => {
      const { policy, sealerPolicy, admin } = tdxFiles();
      const args = [...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin];
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-kbs-ca-'));
      temps.push(dir);
      const { certFile } = writeTlsFiles(dir, 'kbs');
      for (const [extra, message] of [
        [['--auto-unseal-kbs-url', 'http://kbs.example'], /--auto-unseal-kbs-url must be an https:\/\/ KBS address/],
        [['--auto-unseal-kbs-url', 'https://kbs.example'], /needs --auto-unseal-ca FILE/],
        [['--auto-unseal-kbs-url', 'https://kbs.example', '--auto-unseal-ca', policy], /needs --auto-unseal-ca FILE/],
        [
          ['--auto-unseal-kbs-url', 'https://kbs.example', '--auto-unseal-ca', certFile, '--auto-unseal-resource', 'a/../b'],
          /must be <repository>\/<type>\/<tag>/,
        ],
      ] as const) {
        const run = install([...args, ...extra]);
        expect(run.status, extra.join(' ')).not.toBe(0);
        expect(run.stderr).toMatch(message);
        expect(run.calls.filter(isWrite)).toEqual([]);
      }
      const dev = install(['--tee', 'dev', '--auto-unseal-kbs-url', 'https://kbs.example']);
      expect(dev.status).not.toBe(0);
      expect(dev.stderr).toMatch(/--auto-unseal-\* is for --tee tdx/);
    });

    describe("--custodian-keys: the pinned custodians are part of the sealer's init-data, so of its MRCONFIGID", async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-custodians-'));
      temps.push(dir);
      // What tee-kms custodian keygen writes and tee-kms rotate --custodians reads: public JWKs, in share order.
      const jwks = await Promise.all(
        [0, 1, 2].map(async () => ({
          ...(await exportJWK((await generateKeyPair('ECDH-ES', { crv: 'P-256', extractable: true })).publicKey)),
          alg: 'ECDH-ES',
          use: 'enc',
        })),
      );
      const keysFile = join(dir, 'custodians.json');
      writeFileSync(keysFile, `${JSON.stringify(jwks, null, 2)}\n`);
      const thumbprints = await Promise.all(jwks.map((jwk) => calculateJwkThumbprint(jwk, 'sha256')));
      const pin = `KMS_SEALER_CUSTODIANS=${thumbprints.join(',')}`;
      const threshold = 'KMS_SEALER_CUSTODIANS_THRESHOLD=2';
      const shipped = deployedInitData(SEALER_POD);
      const expected = deployedInitData(SEALER_POD, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', undefined, undefined, [pin, threshold]);
      const { policy, sealerPolicy, admin } = tdxFiles();
      const args = [
        ...TDX,
        ...['--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin, '--no-wait', '--custodian-keys', keysFile],
        ...['--threshold', '2'],
      ];
      // The policies still name the unpinned sealer.
      const stale = install(args);
      writeFileSync(sealerPolicy, readFileSync(sealerPolicy, 'utf8').split(mrConfigIdOf(shipped)).join(mrConfigIdOf(expected)));
      const work = join(dir, 'k');
      const run = install([...args, '--work-dir', work]);

      it("lists exactly KMS_SEALER_CUSTODIANS=<the keys' RFC 7638 thumbprints, in order> and the threshold in custodians_env, nothing else changed", () => {
        expect(run.status, run.stderr).toBe(0);
        expect(thumbprints.every((t) => /^[A-Za-z0-9_-]{43}$/.test(t))).toBe(true);
        expect(expected).not.toBe(shipped);
        expect(readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8')).toBe(expected);
        expect(run.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
        expect(mrConfigIdOf(expected)).not.toBe(mrConfigIdOf(shipped));
      });

      it('refuses policies that name the unpinned sealer, before any write', () => {
        expect(stale.status).not.toBe(0);
        expect(stale.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
        expect(stale.stderr).toMatch(
          /--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there \(tee-kms-sealer\)/,
        );
        expect(stale.calls.filter(isWrite)).toEqual([]);
      });

      it("sets KMS_SEALER_CUSTODIANS and its threshold on the sealer to exactly the listed values, once; the rotation's t and n to match", () => {
        const kustomization = appliedKustomization(run);
        const env = sealerPatchEnv(kustomization);
        expect(env.filter((e) => e.name.startsWith('KMS_SEALER_CUSTODIANS')).map((e) => `${e.name}=${e.value}`)).toEqual([pin, threshold]);
        // Only there: the functions get no such variable.
        expect(kustomization.patches.filter((p) => p.target?.name !== SEALER_POD && p.patch.includes('KMS_SEALER_CUSTODIANS'))).toEqual([]);
        // The rotating function asks for what the sealer accepts: one share per key, the threshold given.
        const config = kustomization.patches.find((p) => p.patch.includes('name: tee-kms-config'))!;
        const data = (parseAllDocuments(config.patch)[0]!.toJS() as { data: Record<string, string> }).data;
        expect([data.KMS_SHARES, data.KMS_THRESHOLD]).toEqual(['3', '2']);
      });

      it('refuses a file that is not 2 or more distinct public P-256 JWKs, a threshold they cannot meet or without them, and --tee dev', async () => {
        const { d } = await exportJWK((await generateKeyPair('ECDH-ES', { crv: 'P-256', extractable: true })).privateKey);
        const withPolicies = [...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin];
        const bad = (name: string, value: unknown) => {
          const file = join(dir, `${name}.json`);
          writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
          return file;
        };
        for (const [file, message] of [
          [join(dir, 'missing.json'), /no such readable file/],
          [bad('not-json', '{'), /: not JSON/],
          [bad('one', [jwks[0]]), /2 to 255 public JWKs/],
          [bad('object', { keys: jwks }), /2 to 255 public JWKs/],
          [bad('twice', [jwks[0], jwks[1], jwks[0]]), /\[2\] is the same key as \[0\]/],
          [bad('private', [jwks[0], { ...jwks[1], d }]), /\[1\] holds private key material/],
          [bad('rsa', [jwks[0], { kty: 'RSA', n: 'AQAB', e: 'AQAB' }]), /\[1\] is not an EC P-256 key/],
          [bad('off-curve', [jwks[0], { ...jwks[1], y: jwks[0]!.x }]), /\[1\] is not a point on the P-256 curve/],
        ] as const) {
          const refused = install([...withPolicies, '--custodian-keys', file]);
          expect(refused.status, file).not.toBe(0);
          expect(refused.stderr, file).toMatch(message);
          expect(refused.calls.filter(isWrite)).toEqual([]);
        }
        // A threshold the keys cannot meet, or none at all; the default (3) with two keys.
        const two = bad('two', [jwks[0], jwks[1]]);
        for (const [file, threshold, message] of [
          [keysFile, ['--threshold', '1'], /--threshold must be a whole number from 2 to the 3 keys, got "1"/],
          [keysFile, ['--threshold', '4'], /got "4"/],
          [keysFile, ['--threshold', '2.5'], /got "2\.5"/],
          [keysFile, ['--threshold', '02'], /got "02"/],
          [two, [], /from 2 to the 2 keys, got 3 \(the default\)/],
        ] as const) {
          const refused = install([...withPolicies, '--custodian-keys', file, ...threshold]);
          expect(refused.status, threshold.join(' ')).not.toBe(0);
          expect(refused.stderr, threshold.join(' ')).toMatch(message);
          expect(refused.calls.filter(isWrite)).toEqual([]);
        }
        const alone = install([...TDX.slice(0, TDX.indexOf('--custodian-keys')), '--threshold', '2']);
        expect(alone.status).not.toBe(0);
        expect(alone.stderr).toMatch(/--threshold pins the threshold of the custodians that --custodian-keys pins/);
        const dev = install(['--tee', 'dev', '--custodian-keys', keysFile]);
        expect(dev.status).not.toBe(0);
        expect(dev.stderr).toMatch(/--custodian-keys is for --tee tdx/);
      });
    });

    describe("--previous-custodian-keys: a change of custodians pins the previous ones beside the new, in the sealer's init-data", async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-previous-custodians-'));
      temps.push(dir);
      // The custodians being replaced: their own keys, in their share order (the new ones are CUSTODIAN_KEYS, in TDX).
      const previous = await Promise.all(
        [0, 1, 2, 3].map(async () => ({
          ...(await exportJWK((await generateKeyPair('ECDH-ES', { crv: 'P-256', extractable: true })).publicKey)),
          alg: 'ECDH-ES',
          use: 'enc',
        })),
      );
      const file = (name: string, value: unknown) => {
        const path = join(dir, `${name}.json`);
        writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
        return path;
      };
      const previousFile = file('previous', previous);
      const thumbprints = await Promise.all(previous.map((jwk) => calculateJwkThumbprint(jwk, 'sha256')));
      const pins = [...CUSTODIANS_PINS, `KMS_SEALER_CUSTODIANS_PREVIOUS=${thumbprints.join(',')}`, 'KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD=2'];
      const pinnedOnly = deployedInitData(SEALER_POD);
      const expected = deployedInitData(SEALER_POD, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', undefined, undefined, pins);
      const { policy, sealerPolicy, admin } = tdxFiles();
      const policies = ['--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin];
      const withPolicies = [...TDX, ...policies];
      const flags = ['--previous-custodian-keys', previousFile, '--previous-threshold', '2'];
      // The policies name the sealer of the new custodians alone: refused, as for any other change of its init-data.
      const stale = install([...withPolicies, ...flags]);
      writeFileSync(sealerPolicy, readFileSync(sealerPolicy, 'utf8').split(mrConfigIdOf(pinnedOnly)).join(mrConfigIdOf(expected)));
      const work = join(dir, 'k');
      const run = install([...withPolicies, ...flags, '--no-wait', '--work-dir', work]);

      it("lists the new pin, then the previous custodians' thumbprints and threshold, in custodians_env: a new MRCONFIGID", () => {
        expect(run.status, run.stderr).toBe(0);
        expect(thumbprints.every((t) => /^[A-Za-z0-9_-]{43}$/.test(t))).toBe(true);
        const document = readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8');
        expect(regoArray(document, 'custodians_env')).toEqual(pins);
        expect(document).toBe(expected);
        expect(run.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
        expect(mrConfigIdOf(expected)).not.toBe(mrConfigIdOf(pinnedOnly));
        expect(stale.status).not.toBe(0);
        expect(stale.stderr).toMatch(/--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there/);
        expect(stale.calls.filter(isWrite)).toEqual([]);
      });

      it("sets the four on the sealer exactly as listed; the rotation's t and n stay the new custodians'", () => {
        const kustomization = appliedKustomization(run);
        const env = sealerPatchEnv(kustomization);
        expect(env.filter((e) => e.name.startsWith('KMS_SEALER_CUSTODIANS')).map((e) => `${e.name}=${e.value}`)).toEqual(pins);
        const config = kustomization.patches.find((p) => p.patch.includes('name: tee-kms-config'))!;
        const data = (parseAllDocuments(config.patch)[0]!.toJS() as { data: Record<string, string> }).data;
        expect([data.KMS_SHARES, data.KMS_THRESHOLD]).toEqual([String(CUSTODIAN_KEYS.length), '3']);
      });

      it("the sealer's agent policy admits these values only, and each is required: none can be left out or changed", () => {
        const document = readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8');
        // The rule's env_closed and env_present, as init-data.test.ts pins their helpers: under its prefix, only listed entries; every listed one set.
        const rule = containerRuleOf(document, 'sealer');
        const prefix = /\tenv_closed\("([A-Z_]+)", custodians_env\)/.exec(rule)![1]!;
        expect(rule).toContain('\tenv_present(custodians_env)');
        const listed = regoArray(document, 'custodians_env');
        expect(listed.every((entry) => entry.startsWith(prefix))).toBe(true);
        const admits = (env: string[]) => env.every((e) => !e.startsWith(prefix) || listed.includes(e)) && listed.every((e) => env.includes(e));
        expect(admits(pins)).toBe(true);
        for (const left of pins) expect(admits(pins.filter((e) => e !== left)), left).toBe(false);
        expect(admits([...pins, 'KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD=3'])).toBe(false);
      });

      const two = file('two', previous.slice(0, 2));
      const refusals: [string, string[], RegExp][] = [
        [
          'without --custodian-keys',
          [...TDX.slice(0, TDX.indexOf('--custodian-keys')), ...policies, ...flags],
          /--previous-custodian-keys names the custodians that the ones of --custodian-keys replace, and goes with it/,
        ],
        ['under --tee dev', ['--tee', 'dev', '--previous-custodian-keys', previousFile], /--previous-custodian-keys is for --tee tdx/],
        [
          '--previous-threshold without --previous-custodian-keys',
          [...withPolicies, '--previous-threshold', '2'],
          /--previous-threshold pins the threshold of the custodians that --previous-custodian-keys pins, and goes with it/,
        ],
        [
          'a missing file',
          [...withPolicies, '--previous-custodian-keys', join(dir, 'missing.json')],
          /--previous-custodian-keys \S+missing\.json: no such readable file/,
        ],
        [
          'a file that is not JSON',
          [...withPolicies, '--previous-custodian-keys', file('not-json', '[')],
          /--previous-custodian-keys \S+not-json\.json: not JSON/,
        ],
        [
          'a file naming a key twice',
          [...withPolicies, '--previous-custodian-keys', file('twice', [previous[0], previous[1], previous[0]])],
          /--previous-custodian-keys \S+twice\.json: \[2\] is the same key as \[0\]/,
        ],
        [
          'a file that is not P-256 public keys',
          [...withPolicies, '--previous-custodian-keys', file('rsa', [previous[0], { kty: 'RSA', n: 'AQAB', e: 'AQAB' }])],
          /--previous-custodian-keys \S+rsa\.json: \[1\] is not an EC P-256 key/,
        ],
        [
          'the new custodians again (no change of custodians)',
          [...withPolicies, '--previous-custodian-keys', file('same', CUSTODIAN_KEYS)],
          /--previous-custodian-keys \S+same\.json: the same custodians, in the same order and with the same threshold, as --custodian-keys: that is no change of custodians/,
        ],
        [
          'a threshold below 2',
          [...withPolicies, '--previous-custodian-keys', previousFile, '--previous-threshold', '1'],
          /--previous-custodian-keys \S+: --previous-threshold must be a whole number from 2 to the 4 keys, got "1"/,
        ],
        [
          'a threshold above their number',
          [...withPolicies, '--previous-custodian-keys', previousFile, '--previous-threshold', '5'],
          /--previous-threshold must be a whole number from 2 to the 4 keys, got "5"/,
        ],
        [
          'the default threshold (3) with two of them',
          [...withPolicies, '--previous-custodian-keys', two],
          /--previous-threshold must be a whole number from 2 to the 2 keys, got 3 \(the default\)/,
        ],
      ];
      for (const [name, args, message] of refusals) {
        it(`refuses ${name}: stops before asking the cluster anything`, () => {
          const refused = install(args);
          expect(refused.status, refused.stderr).not.toBe(0);
          expect(refused.stderr).toMatch(message);
          expect(refused.calls).toEqual([]);
          expect(existsSync(join(refused.secrets, 'admin-token')), 'no secret generated').toBe(false);
        });
      }
    });

    describe("mode 1 (a root key Secret): the mode is part of the sealer's init-data, so of its MRCONFIGID", () => {
      const shipped = deployedInitData(SEALER_POD);
      const expected = deployedInitData(SEALER_POD, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'secret');
      const policies = tdxFiles();
      const args = [...TDX, '--tdx-policy', policies.policy, '--sealer-tdx-policy', policies.sealerPolicy, '--admin-policy', policies.admin, '--no-wait'];
      // The policies name the Shamir mode's sealer (what an administrator switching modes would face).
      const stale = install([...args, '--generate-root-key']);
      const renamed = (file: string) => writeFileSync(file, readFileSync(file, 'utf8').split(mrConfigIdOf(shipped)).join(mrConfigIdOf(expected)));
      renamed(policies.sealerPolicy);
      const workParent = mkdtempSync(join(tmpdir(), 'tee-kms-work-'));
      temps.push(workParent);
      const work = join(workParent, 'k');
      const run = install([...args, '--generate-root-key', '--work-dir', work]);

      it("lists exactly the root-key-secret component's KMS_SEALER_ROOT_KEY_FILE in root_key_env, nothing else changed", () => {
        expect(run.status, run.stderr).toBe(0);
        expect(ROOT_KEY_PINS).toEqual([`KMS_SEALER_ROOT_KEY_FILE=${ROOT_KEY_FILE}`]);
        expect(expected).toBe(shipped.replace('\nroot_key_env := []\n', `\nroot_key_env := ${JSON.stringify(ROOT_KEY_PINS)}\n`));
        expect(readFileSync(join(work, 'init-data', `${SEALER_POD}.toml`), 'utf8')).toBe(expected);
        expect(run.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
        expect(mrConfigIdOf(expected)).not.toBe(mrConfigIdOf(shipped));
        expect(run.stderr).toContain('root key: mode 1, Secret tee-kms-root-key');
      });

      it('needs no --custodian-keys (no shares leave mode 1): without, its init-data lists none', () => {
        const unpinned = deployedInitData(SEALER_POD, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'secret', undefined, undefined, null);
        const sealerPolicy = join(workParent, 'sealer-policy-unpinned.json');
        writeFileSync(sealerPolicy, readFileSync(policies.sealerPolicy, 'utf8').split(mrConfigIdOf(expected)).join(mrConfigIdOf(unpinned)));
        const withoutCustodians = TDX.slice(0, TDX.indexOf('--custodian-keys'));
        const unpinnedWork = join(workParent, 'unpinned');
        const result = install([
          ...withoutCustodians,
          ...['--tdx-policy', policies.policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', policies.admin],
          ...['--no-wait', '--generate-root-key', '--work-dir', unpinnedWork],
        ]);
        expect(result.status, result.stderr).toBe(0);
        expect(readFileSync(join(unpinnedWork, 'init-data', `${SEALER_POD}.toml`), 'utf8')).toBe(unpinned);
        expect(regoArray(unpinned, 'custodians_env')).toEqual([]);
      });

      it("refuses policies that name the Shamir mode's sealer, before any write or key", () => {
        expect(stale.status).not.toBe(0);
        expect(stale.stderr).toContain(`MRCONFIGID ${SEALER_POD}: ${mrConfigIdOf(expected)}`);
        expect(stale.stderr).toMatch(
          /--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there \(tee-kms-sealer\)/,
        );
        expect(stale.calls.filter(isWrite)).toEqual([]);
        expect(existsSync(join(stale.secrets, 'root-key')), 'no root key generated').toBe(false);
      });

      it('sets the variable once, through the component: its own patches of the sealer add no root key variable', () => {
        const kustomization = appliedKustomization(run);
        expect(kustomization.components.filter((c) => c.endsWith('/knative/components/root-key-secret'))).toHaveLength(1);
        // (The init-data annotations are base64, which has no "_".)
        const patches = kustomization.patches.map((p) => p.patch).join('\n');
        expect(patches).not.toContain('ROOT_KEY');
      });

      it.skipIf(skipWithout(KUBECTL))('what apply -k applies: the sealer has exactly the root key variables its init-data lists', () => {
        requireTool(KUBECTL);
        const applied = parseAllDocuments(readFileSync(`${run.log}.apply-k.yaml`, 'utf8'))
          .map((d) => d.toJS())
          .filter(Boolean) as Resource[];
        const sealer = applied.find((r) => r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD)!;
        const env = sealer.spec.template.spec.containers[0].env as { name: string; value?: string }[];
        // The agent policy's prefix: every variable it closes, as the pod would carry it.
        expect(env.filter((e) => e.name.startsWith('KMS_SEALER_ROOT_KEY')).map((e) => `${e.name}=${e.value}`)).toEqual([...ROOT_KEY_PINS]);
        const annotation = sealer.spec.template.metadata.annotations['io.katacontainers.config.hypervisor.cc_init_data'] as string;
        expect(gunzipSync(Buffer.from(annotation, 'base64')).toString()).toBe(expected);
      });

      // Rendering only: the sealer itself refuses auto-unseal in mode 1 at start (sealer/auto-unseal.ts).
      describe('with --auto-unseal-* as well', () => {
        const both = tdxFiles();
        const dir = mkdtempSync(join(tmpdir(), 'tee-kms-kbs-ca-'));
        temps.push(dir);
        const { certFile, certPem } = writeTlsFiles(dir, 'kbs');
        const unseal = ['KMS_SEALER_UNSEAL_KBS_URL=https://kbs.example:8080', `KMS_SEALER_UNSEAL_CA=${certPem.trimEnd()}`];
        const document = expected.replace('\nauto_unseal_env := []\n', `\nauto_unseal_env := ${JSON.stringify(unseal)}\n`);
        writeFileSync(both.sealerPolicy, readFileSync(both.sealerPolicy, 'utf8').split(mrConfigIdOf(shipped)).join(mrConfigIdOf(document)));
        const bothWork = join(dir, 'k');
        const policyFlags = ['--tdx-policy', both.policy, '--sealer-tdx-policy', both.sealerPolicy, '--admin-policy', both.admin];
        const unsealFlags = ['--auto-unseal-kbs-url', 'https://kbs.example:8080', '--auto-unseal-ca', certFile];
        const result = install([...TDX, ...policyFlags, ...unsealFlags, '--generate-root-key', '--no-wait', '--work-dir', bothWork]);

        it('both lists are filled in the one document', () => {
          expect(document).not.toBe(expected);
          expect(result.status, result.stderr).toBe(0);
          expect(readFileSync(join(bothWork, 'init-data', `${SEALER_POD}.toml`), 'utf8')).toBe(document);
        });

        it.skipIf(skipWithout(KUBECTL))("what apply -k applies gives no TD container a variable its init-data's agent policy denies", () => {
          requireTool(KUBECTL);
          expect(result.status, result.stderr).toBe(0);
          const applied = parseAllDocuments(readFileSync(`${result.log}.apply-k.yaml`, 'utf8'))
            .map((d) => d.toJS())
            .filter(Boolean) as Resource[];
          const pods = applied.filter((r) => (r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD) || r.apiVersion === 'serving.knative.dev/v1');
          expect(pods.length).toBeGreaterThan(1);
          for (const pod of pods) {
            const { container, env } = tdContainerEnv(pod, applied);
            const initData = readFileSync(join(bothWork, 'init-data', `${pod.metadata.name}.toml`), 'utf8');
            // install.sh's own variables are there: the auto-unseal ones, the root key file, the init-data file.
            if (pod.metadata.name === SEALER_POD) {
              expect(env).toEqual(
                expect.arrayContaining([...unseal, ...ROOT_KEY_PINS, `KMS_SEALER_INIT_DATA_FILE=/var/run/tee-kms/init-data/${SEALER_POD}.toml`]),
              );
              // Its agent policy's pin holds, and no policy file replaces the measured policies (denied_policy_env).
              expect(pinnedAdmits(initData, 'KMS_SEALER_INIT_DATA_FILE', env)).toBe(true);
              expect(env.filter((e) => /^KMS_SEALER_(TDX|ADMIN)_POLICY_FILE=/.test(e))).toEqual([]);
              expect(deniedEntries(initData, container, [...env, 'KMS_SEALER_ADMIN_POLICY_FILE=/x'])).toEqual(['KMS_SEALER_ADMIN_POLICY_FILE=/x']);
            } else {
              expect(env).toContain(`KMS_INIT_DATA_FILE=/var/run/tee-kms/init-data/${pod.metadata.name}.toml`);
              // Its pins hold (its own document, its own quote from the agent in its TD), and the
              // sealer policy comes from that document only (denied_trust_env).
              for (const name of ['KMS_INIT_DATA_FILE', 'KMS_ATTESTER', 'KMS_AA_URL']) expect(pinnedAdmits(initData, name, env, container), name).toBe(true);
              expect(env.filter((e) => /^KMS_(TRUSTED_SEALER_TDX_POLICY_FILE|TSM_ROOT)=/.test(e))).toEqual([]);
              expect(deniedEntries(initData, container, [...env, 'KMS_TRUSTED_SEALER_TDX_POLICY_FILE=/x'])).toEqual(['KMS_TRUSTED_SEALER_TDX_POLICY_FILE=/x']);
              expect(initData).toContain(`\n"sealer-tdx-policy.json" = '''\n`);
            }
            expect(deniedEntries(initData, container, env), pod.metadata.name).toEqual([]);
          }
        });
      });
    });

    it("a queue-proxy other than the one Knative runs stops it before any write: the functions' agent policy would refuse Knative's", () => {
      const { policy, sealerPolicy, admin } = tdxFiles();
      const running = `gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:${'12'.repeat(32)}`;
      const run = install([...TDX, '--tdx-policy', policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', admin], {
        FAKE_QUEUE_SIDECAR_IMAGE: running,
      });
      expect(run.status).not.toBe(0);
      expect(run.stderr).toContain(`config-deployment runs queue-proxy ${running}, not --queue-proxy-image ${QUEUE_PROXY_IMAGE}`);
      // The cluster's answer is the administrator's: the hint sends the operator to Knative's signed
      // release of the version the cluster reports, never to adopt what config-deployment names.
      expect(run.stderr).toContain(
        "Check both against the serving-core.yaml of the Knative Serving release installed (1.16.0, as the cluster reports it), after checking the release's signature, before changing either",
      );
      expect(run.stderr).toContain("an image that is not the release's could fetch the root key");
      expect(run.stderr).not.toMatch(/Pass the digest-pinned image config-deployment names/);
      expect(run.stderr).toMatch(/nothing was changed/);
      expect(run.calls.filter(isWrite)).toEqual([]);
    });
  });

  it('every refusal is reported at once, not one per run', () => {
    const run = install(['--tee', 'dev'], { FAKE_MISSING: 'certificates.cert-manager.io', FAKE_DENY: 'patch:configmaps/config-network create:secrets' });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/cert-manager is not installed/);
    expect(run.stderr).toMatch(/cannot patch configmaps\/config-network/);
    expect(run.stderr).toMatch(/cannot create secrets in namespace tee-kms/);
  });

  describe.each([
    ['per function (default), the Shamir mode', [] as string[], 'knative/functions/per-function', 'shares'],
    ['--single-service, mode 1 with --generate-root-key', ['--single-service', '--generate-root-key'], 'knative/functions/single-service', 'secret'],
    ['per function, mode 1 with --root-key-file', ['--root-key-file', GIVEN_ROOT_KEY], 'knative/functions/per-function', 'secret'],
  ] as const)('a cluster with everything, %s', (_name, extra, layout, rootKeyMode) => {
    const run = install(['--tee', 'dev', '--no-wait', '--work-dir', join(mkdtempSync(join(tmpdir(), 'tee-kms-work-')), 'k'), ...extra]);

    it('succeeds', () => {
      expect(run.status, run.stderr).toBe(0);
    });

    it('asks every question before its first write', () => {
      const firstWrite = run.calls.findIndex(isWrite);
      expect(firstWrite).toBeGreaterThan(0);
      const lastCheck = run.calls.findLastIndex((c) => c.startsWith('auth can-i') || c.startsWith('get crd') || c.startsWith('version'));
      expect(lastCheck).toBeLessThan(firstWrite);
    });

    it('turns on HTTPS with its own CA issuer, with no hidden refusal, then applies the chosen layout', () => {
      const writes = run.calls.filter(isWrite);
      const index = (prefix: string) => writes.findIndex((c) => c.startsWith(prefix));
      expect(index('create namespace tee-kms')).toBe(0);
      expect(index('apply -f -')).toBeGreaterThan(0); // Secrets, then the ClusterIssuers
      expect(writes).toContain(
        `patch configmap config-certmanager -n knative-serving --type merge -p {"data":{"issuerRef":"kind: ClusterIssuer\\nname: tee-kms-ca\\n"}}`,
      );
      expect(writes).toContain('patch configmap config-network -n knative-serving --type merge -p {"data":{"external-domain-tls":"Enabled"}}');
      expect(index('apply -k')).toBe(writes.length - 1);
      const generated = readFileSync(join(writes.at(-1)!.split(' ')[2]!, 'kustomization.yaml'), 'utf8');
      expect(generated).toContain(layout.split('/').at(-1));
      expect(generated).toContain('components/dev');
    });

    const applyK = () => run.calls.findIndex((c) => c.startsWith('apply -k '));
    const generated = () => readFileSync(join(run.calls[applyK()]!.split(' ')[2]!, 'kustomization.yaml'), 'utf8');
    const createRootKeySecret = () => run.calls.findIndex((c) => c.startsWith('create secret generic tee-kms-root-key '));

    if (rootKeyMode === 'secret') {
      it('mode 1: creates the Secret tee-kms-root-key from a file, then applies the kustomization with components/root-key-secret', () => {
        expect(createRootKeySecret()).toBeGreaterThan(-1);
        expect(run.calls[createRootKeySecret()]).toContain(`--from-file=rootKey=${run.secrets}/root-key`);
        expect(createRootKeySecret()).toBeLessThan(applyK());
        expect(generated()).toMatch(/^ {2}- \S*\/knative\/components\/root-key-secret$/m);
        expect(run.stderr).toContain('root key: mode 1, Secret tee-kms-root-key');
        if ((extra as readonly string[]).includes('--root-key-file'))
          expect(readFileSync(join(run.secrets, 'root-key'), 'utf8')).toBe(readFileSync(GIVEN_ROOT_KEY, 'utf8').trim());
      });
    } else {
      it('the Shamir mode: no root key Secret, and the kustomization has no root-key-secret component', () => {
        expect(createRootKeySecret()).toBe(-1);
        expect(generated()).not.toContain('root-key');
        expect(existsSync(join(run.secrets, 'root-key'))).toBe(false);
        expect(run.stderr).toContain('root key: Shamir shares');
      });
    }

    it.skipIf(skipWithout(KUBECTL))(
      `what apply -k applies: the sealer ${rootKeyMode === 'secret' ? 'reads the root key from the mounted Secret, never from a variable' : 'has no trace of a root key Secret'}`,
      () => {
        requireTool(KUBECTL);
        const applied = parseAllDocuments(readFileSync(`${run.log}.apply-k.yaml`, 'utf8'))
          .map((d) => d.toJS())
          .filter(Boolean) as Resource[];
        const sealer = applied.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
        const pod = sealer.spec.template.spec;
        const container = pod.containers[0];
        const rootKeyEnv = (container.env as Json[]).filter((e) => e.name.includes('ROOT_KEY'));
        if (rootKeyMode === 'secret') {
          expect(rootKeyEnv).toEqual([{ name: 'KMS_SEALER_ROOT_KEY_FILE', value: ROOT_KEY_FILE }]);
          expect(container.volumeMounts).toContainEqual({ name: 'root-key', mountPath: ROOT_KEY_MOUNT, readOnly: true });
          const volume = (pod.volumes as Json[]).find((v) => v.name === 'root-key');
          expect(volume.secret).toMatchObject({ secretName: 'tee-kms-root-key', optional: false, defaultMode: 0o400 });
          // The key itself is in no manifest and in no kubectl argument.
          const key = readFileSync(join(run.secrets, 'root-key'), 'utf8');
          expect(key).toMatch(/^[A-Za-z0-9+/]{43}=$/);
          expect(readFileSync(`${run.log}.apply-k.yaml`, 'utf8')).not.toContain(key);
          expect(run.calls.join('\n')).not.toContain(key);
          expect(run.stderr).not.toContain(key);
        } else {
          expect(rootKeyEnv).toEqual([]);
          expect(JSON.stringify(applied)).not.toContain('tee-kms-root-key');
        }
      },
    );

    it("the issuers it applies: a self-signed issuer, the CA certificate in cert-manager's namespace, the CA issuer", () => {
      const dir = dirname(run.log);
      const applied = readdirSync(dir)
        .filter((f) => f.startsWith('kubectl.log.apply.'))
        .flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS()))
        .filter((d) => d?.apiVersion === 'cert-manager.io/v1');
      expect(applied.map((d) => `${d.kind}/${d.metadata.namespace ?? ''}/${d.metadata.name}`)).toEqual([
        'ClusterIssuer//tee-kms-selfsigned',
        'Certificate/cert-manager/tee-kms-ca',
        'ClusterIssuer//tee-kms-ca',
      ]);
      expect(applied[1].spec).toMatchObject({ isCA: true, secretName: 'tee-kms-ca', issuerRef: { kind: 'ClusterIssuer', name: 'tee-kms-selfsigned' } });
      expect(applied[2].spec).toEqual({ ca: { secretName: 'tee-kms-ca' } });
    });

    it('prints the reachable HTTPS URL with the CA to trust, never a cluster-local one as reachable', () => {
      expect(run.stderr).toMatch(/welcome +https:\/\/welcome\.tee-kms\.127\.0\.0\.1\.sslip\.io/);
      expect(run.stderr).toMatch(/rotate-root-key +inside the cluster only/);
      expect(run.stderr).toContain(`curl --cacert ${run.secrets}/public-ca.crt https://welcome.tee-kms.127.0.0.1.sslip.io/`);
      expect(readFileSync(join(run.secrets, 'public-ca.crt'), 'utf8')).toContain('BEGIN CERTIFICATE');
      expect(run.stderr).not.toMatch(/curl [^\n]*http:\/\/(?!127\.0\.0\.1)/);
    });
  });

  it('a patch refused after the checks passed (an admission webhook) stops the script before apply -k', () => {
    const run = install(['--tee', 'dev', '--no-wait'], { FAKE_PATCH_REFUSED: 'config-network' });
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/configmaps "config-network" is forbidden/);
    expect(run.calls.filter((c) => c.startsWith('apply -k'))).toEqual([]);
    expect(run.stderr).not.toMatch(/external-domain-tls enabled/);
    const text = readFileSync(INSTALL, 'utf8');
    expect(text).not.toMatch(/if knative_patch|\[\[ \$\(knative_patch/);
    expect(text).toMatch(/shopt -s inherit_errexit/);
  });

  it('--single-service needs a root key Secret: its public rotate would initialize the Shamir mode for anyone', () => {
    const run = install(['--tee', 'dev', '--single-service']);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/--single-service serves rotate-root-key publicly/);
    expect(run.calls).toEqual([]);
  });
});
