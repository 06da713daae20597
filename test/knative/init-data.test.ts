/**
 * Every TD pod is bound to its init-data (knative/components/tdx/init-data, scripts/init-data.ts):
 * the documents parse as initdata 0.1.0 TOML, their Kata agent policy denies the host's ways in and
 * admits only the pod's containers by digest, and knative/install.sh --tee tdx (dry run, no
 * cluster) carries each document unchanged but for the digests in the pod's cc_init_data
 * annotation, prints SHA-384 of exactly those bytes as the pod's MRCONFIGID, and refuses policies
 * that do not name exactly those MRCONFIGIDs. Digests are computed here with node:crypto.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { BlockList, isIPv4 } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as loadYaml, parseAllDocuments } from 'yaml';
import { routeModules } from '../../functions/catalog.js';
import { serviceName } from '../../scripts/generate-manifests.js';
import { QUEUE_PROXY_IMAGE_PLACEHOLDER, TEE_KMS_IMAGE_PLACEHOLDER } from '../../scripts/init-data.js';
import { sealerOptions } from '../../sealer/options.js';
import { kmsOptions } from '../../shared/config.js';
import { findTool, requireTool, skipWithout } from '../support/tools.js';
import {
  KNATIVE,
  KUBECTL,
  REPO,
  ROOT_KEY_COMPONENT,
  dockerCmd,
  dockerEnv,
  parseDockerfile,
  render,
  renderComposed,
  type Json,
  type Resource,
} from './support.js';
import {
  agentPolicyOf,
  DIGEST_IMAGE,
  INIT_DATA_ANNOTATION,
  INIT_DATA_DIR,
  QUEUE_PROXY_IMAGE,
  SEALER_POD,
  containerRuleOf,
  deniedEntries,
  deployedInitData,
  functionPods,
  measuredAdminPolicy,
  custodianKeysFile,
  measuredTdxPolicy,
  mrConfigIdOf,
  HOST_RULES,
  hostRunsNothing,
  MOUNT_RULES,
  mountsAdmitted,
  NOTHING_THE_HOST_RUNS,
  SANDBOX_RULES,
  sandboxAdmitted,
  NETWORK_RULES,
  PROCESS_RULES,
  processAdmitted,
  interfaceAdmitted,
  routesAdmitted,
  neighborsAdmitted,
  type AgentInterface,
  type AgentNeighbor,
  type AgentRoute,
  storagesAdmitted,
  imagePullOption,
  type AgentStorage,
  type OciMount,
  pccsPins,
  pinnedAdmits,
  readSealerPolicies,
  REFERENCE_RTMRS,
  ROOT_KEY_PINS,
  regoArray,
  sealerPoliciesFor,
  tdContainerEnv,
  writeSealerTdxPolicy,
  writeTdxPolicies,
  type Layout,
  type RootKeyMode,
} from './tdx-fixtures.js';

const INSTALL = join(KNATIVE, 'install.sh');
/** Python's tomllib: a TOML 1.0 parser (no TOML parser among the project's packages). */
const TOMLLIB = findTool('python3', ['-c', 'import tomllib'], 'apt-get install python3 (3.11 or later, for tomllib)');

const temps: string[] = [];
afterAll(() => temps.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
};

/** Every request of the Kata agent API that its allow-all default policy names (src/kata-opa/allow-all.rego). */
const AGENT_REQUESTS = [
  'AddARPNeighborsRequest',
  'AddSwapRequest',
  'CloseStdinRequest',
  'CopyFileRequest',
  'CreateContainerRequest',
  'CreateSandboxRequest',
  'DestroySandboxRequest',
  'ExecProcessRequest',
  'GetMetricsRequest',
  'GetOOMEventRequest',
  'GuestDetailsRequest',
  'ListInterfacesRequest',
  'ListRoutesRequest',
  'MemHotplugByProbeRequest',
  'OnlineCPUMemRequest',
  'PauseContainerRequest',
  'PullImageRequest',
  'ReadContainerTerminationMessage',
  'ReadStreamRequest',
  'RemoveContainerRequest',
  'RemoveStaleVirtiofsShareMountsRequest',
  'ReseedRandomDevRequest',
  'ResumeContainerRequest',
  'SetGuestDateTimeRequest',
  'SetPolicyRequest',
  'SignalProcessRequest',
  'StartContainerRequest',
  'StartTracingRequest',
  'StatsContainerRequest',
  'StopTracingRequest',
  'TtyWinResizeRequest',
  'UpdateContainerRequest',
  'UpdateEphemeralMountsRequest',
  'UpdateInterfaceRequest',
  'UpdateRoutesRequest',
  'WaitProcessRequest',
  'WriteStreamRequest',
];

/** Parses TOML with Python's tomllib; the document as JSON. */
function parseToml(text: string): Json {
  requireTool(TOMLLIB);
  const result = spawnSync('python3', ['-c', 'import json, sys, tomllib; json.dump(tomllib.loads(sys.stdin.read()), sys.stdout)'], {
    input: text,
    encoding: 'utf8',
  });
  if (result.status !== 0) throw new Error(`not TOML: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

/** The value each `default NAME := VALUE` sets, and the names that have rule bodies (`NAME if {`). */
function regoRules(policy: string): { defaults: Map<string, string>; bodies: Set<string> } {
  const defaults = new Map<string, string>();
  const bodies = new Set<string>();
  for (const line of policy.split('\n')) {
    const d = /^default (\w+) := (\w+)$/.exec(line);
    if (d) {
      expect(defaults.has(d[1]!), `two defaults for ${d[1]}`).toBe(false);
      defaults.set(d[1]!, d[2]!);
    }
    const b = /^(\w+)(\([^)]*\))? if\b/.exec(line);
    if (b) bodies.add(b[1]!);
  }
  return { defaults, bodies };
}

const ALL_PODS = [...functionPods('per-function'), 'tee-kms', SEALER_POD].sort();

describe('the shipped init-data (knative/components/tdx/init-data)', () => {
  it('one document per function Service of each layout and one for the sealer, generated from the catalog', () => {
    const files = readdirSync(INIT_DATA_DIR).sort();
    expect(files).toEqual(ALL_PODS.map((pod) => `${pod}.toml`).sort());
    expect(functionPods('per-function')).toEqual(Object.keys(routeModules).map(serviceName).sort());
    expect(functionPods('single-service')).toEqual(['tee-kms']);
  });

  describe.skipIf(skipWithout(TOMLLIB))('each parses as initdata 0.1.0 (sha384) whose one entry is the agent policy', () => {
    for (const pod of ALL_PODS) {
      it(pod, () => {
        const doc = parseToml(readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8'));
        expect(Object.keys(doc).sort()).toEqual(['algorithm', 'data', 'version']);
        expect(doc.version).toBe('0.1.0');
        expect(doc.algorithm).toBe('sha384');
        expect(Object.keys(doc.data)).toEqual(['policy.rego']);
        expect(doc.data['policy.rego']).toMatch(/^(#.*\n)+package agent_policy\n/);
      });
    }
  });

  describe.skipIf(skipWithout(TOMLLIB))('the agent policy denies the host its ways into the TD', () => {
    for (const pod of ALL_PODS) {
      it(`${pod}: exec, logs, stdin and policy replacement denied outright; every request decided`, () => {
        const policy: string = parseToml(readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8')).data['policy.rego'];
        const { defaults, bodies } = regoRules(policy);
        // No rule body can turn these true: kubectl exec / cp, kubectl logs / attach, stdin, SetPolicy.
        for (const denied of ['ExecProcessRequest', 'ReadStreamRequest', 'WriteStreamRequest', 'CloseStdinRequest', 'SetPolicyRequest']) {
          expect(defaults.get(denied), denied).toBe('false');
          expect(bodies.has(denied), `${denied} has a rule that could allow it`).toBe(false);
        }
        // Allowed only by the rules below: the pod's containers, host files into the staging directory.
        for (const gated of ['CreateContainerRequest', 'CopyFileRequest']) {
          expect(defaults.get(gated), gated).toBe('false');
          expect(bodies.has(gated), gated).toBe(true);
        }
        expect(defaults.get('AllowRequestsFailingPolicy')).toBe('false');
        expect([...defaults.keys()].filter((k) => k !== 'AllowRequestsFailingPolicy').sort()).toEqual([...AGENT_REQUESTS].sort());
        // Rego blocks balance (a crude parse check: no Rego engine among the project's tools).
        expect(policy.split('{').length).toBe(policy.split('}').length);
      });
    }
  });

  it('CopyFile goes only to the volume staging directory: its path pattern admits volumes, not the guest', () => {
    const policy = readFileSync(join(INIT_DATA_DIR, 'welcome.toml'), 'utf8');
    const pattern = /regex\.match\("([^"]+)", input\.path\)/.exec(policy)![1]!.replace(/\\\\/g, '\\');
    const allowed = new RegExp(pattern);
    const id = 'a1'.repeat(32);
    expect(allowed.test(`/run/kata-containers/shared/containers/${id}-0123456789abcdef-config/token`)).toBe(true);
    expect(allowed.test(`/run/kata-containers/shared/containers/watchable/${id}-0123456789abcdef-config/..data`)).toBe(true);
    for (const path of [
      `/run/kata-containers/shared/containers/${id}/rootfs/app/dist/scripts/serve.js`,
      `/run/kata-containers/${id}/rootfs/usr/bin/node`,
      '/run/confidential-containers/initdata/policy.rego',
      '/etc/kata-opa/default-policy.rego',
    ])
      expect(allowed.test(path), path).toBe(false);
    expect(policy).toContain('no_parent(input.path)');
    // A symbolic link's target, by the name the agent's policy input gives it (PolicyCopyFileRequest.symlink_target):
    // relative and without "..", so it cannot lead out of the staging directory. Under another name the check would never run.
    expect(policy).toContain(
      'symlink_inside if not input.symlink_target\n\nsymlink_inside if {\n\tnot startswith(input.symlink_target, "/")\n\tno_parent(input.symlink_target)\n}',
    );
    expect(policy).not.toMatch(/input\.symlink_(?!target)/);
  });

  it('each function is pinned to its own FUNCTION_TARGET, command and images; the sealer to its command', () => {
    for (const [name] of Object.entries(routeModules)) {
      const policy = readFileSync(join(INIT_DATA_DIR, `${serviceName(name)}.toml`), 'utf8');
      expect(policy).toContain(`env_pinned("FUNCTION_TARGET", "${name}")`);
      expect(policy.match(/env_pinned\("FUNCTION_TARGET"/g)).toHaveLength(1);
    }
    expect(readFileSync(join(INIT_DATA_DIR, 'tee-kms.toml'), 'utf8')).toContain('env_pinned("FUNCTION_TARGET", "")');
    const runtime = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).stages.at(-1)!;
    for (const pod of ALL_PODS) {
      const policy = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
      expect(policy, pod).toContain('env_pinned("NODE_ENV", "production")');
      expect(policy, pod).toContain('pulled_in_guest(tee_kms_image)');
      const args = pod === SEALER_POD ? ['node', 'dist/sealer/main.js'] : dockerCmd(runtime);
      expect(policy, pod).toContain(`input.OCI.Process.Args == [${args.map((a) => JSON.stringify(a)).join(', ')}]`);
      expect(policy.includes('pulled_in_guest(queue_proxy_image)'), pod).toBe(pod !== SEALER_POD);
    }
  });

  it('lets no KMS_SEALER_UNSEAL_* variable reach the sealer unless its init-data lists it', () => {
    const sealer = readFileSync(join(INIT_DATA_DIR, `${SEALER_POD}.toml`), 'utf8');
    // None listed: auto-unseal cannot be switched on from the (unmeasured) environment.
    expect(sealer.split('\nauto_unseal_env := []\n')).toHaveLength(2);
    const rule = sealer.slice(sealer.indexOf('# sealer: the tee-kms image.'));
    expect(rule.slice(0, rule.indexOf('\n}\n'))).toContain('\tenv_closed("KMS_SEALER_UNSEAL_", auto_unseal_env)');
    expect(sealer).toContain('env_closed(prefix, allowed) if {\n\tevery entry in input.OCI.Process.Env {\n\t\tunprefixed_or_allowed(entry, prefix, allowed)');
    expect(sealer).toContain('unprefixed_or_allowed(entry, prefix, _) if not startswith(entry, prefix)');
    expect(sealer).toContain('unprefixed_or_allowed(entry, _, allowed) if entry in allowed');
    // The functions' documents close their PCCS variables only.
    for (const pod of ALL_PODS.filter((name) => name !== SEALER_POD)) {
      const text = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
      expect(
        [...text.matchAll(/\tenv_closed\(.*\)/g)].map((m) => m[0].trim()),
        pod,
      ).toEqual(['env_closed("KMS_TRUSTED_SEALER_PCCS_", pccs_env)']);
    }
  });

  it('lets the PCCS variables reach the sealer and the functions only as their init-data lists them, and requires them: the collateral source is measured', () => {
    // Each tee-kms container closes the options of one collateral source by their shared prefix, and a
    // file of collateral (which the host would provide) is refused outright.
    const cases = [
      { pod: SEALER_POD, container: 'sealer', prefix: 'KMS_SEALER_PCCS_', file: 'KMS_SEALER_TDX_COLLATERAL_FILE', options: Object.values(sealerOptions) },
      {
        pod: 'get-data-key',
        container: 'function',
        prefix: 'KMS_TRUSTED_SEALER_PCCS_',
        file: 'KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE',
        options: Object.values(kmsOptions),
      },
    ];
    for (const { pod, container, prefix, file, options } of cases) {
      const text = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
      // None listed as shipped: install.sh lists --pccs-url (and --pccs-ca).
      expect(regoArray(text, 'pccs_env'), pod).toEqual([]);
      const body = containerRuleOf(text, container);
      expect(body).toContain(`\tenv_closed("${prefix}", pccs_env)\n\tenv_present(pccs_env)`);
      // The prefix covers the URL, its CA and the http allowance, and no other option.
      expect(
        options
          .filter((o) => o.env.startsWith(prefix))
          .map((o) => o.env)
          .sort(),
        pod,
      ).toEqual([`${prefix}ALLOW_HTTP`, `${prefix}CA`, `${prefix}URL`]);
      expect(deniedEntries(text, container, [`${file}=/var/run/tee-kms/collateral.json`]), pod).toEqual([`${file}=/var/run/tee-kms/collateral.json`]);
    }
  });

  it('lets neither KMS_SEALER_ROOT_KEY nor KMS_SEALER_ROOT_KEY_FILE reach the sealer unless its init-data lists it: the mode is measured', () => {
    const sealer = readFileSync(join(INIT_DATA_DIR, `${SEALER_POD}.toml`), 'utf8');
    // None listed: the administrator, who can read and write the Secret, cannot switch the Shamir mode to mode 1.
    expect(sealer.split('\nroot_key_env := []\n')).toHaveLength(2);
    expect(sealer.match(/^root_key_env :=/gm)).toHaveLength(1);
    const rule = sealer.slice(sealer.indexOf('# sealer: the tee-kms image.'));
    const body = rule.slice(0, rule.indexOf('\n}\n'));
    expect(body).toContain('\tenv_closed("KMS_SEALER_ROOT_KEY", root_key_env)');
    expect(body).toContain('\tenv_closed("KMS_SEALER_UNSEAL_", auto_unseal_env)');
    // The prefix covers both ways the sealer reads the key (a secret option also reads <ENV>_FILE), and
    // closes no other sealer option.
    const prefix = /\tenv_closed\("(KMS_SEALER_ROOT_KEY)", root_key_env\)/.exec(body)![1]!;
    expect(sealerOptions.rootKey.env).toBe(prefix);
    expect(sealerOptions.rootKey.secret).toBe(true);
    expect(Object.values(sealerOptions).filter((o) => o.env.startsWith(prefix) || `${o.env}_FILE`.startsWith(prefix))).toEqual([sealerOptions.rootKey]);
    for (const variable of ['KMS_SEALER_ROOT_KEY', 'KMS_SEALER_ROOT_KEY_FILE']) expect(`${variable}=x`.startsWith(prefix), variable).toBe(true);
    // What install.sh lists in mode 1 is a variable that prefix closes.
    for (const pin of ROOT_KEY_PINS) expect(pin.startsWith(`${prefix}_FILE=/`), pin).toBe(true);
  });

  it('lets KMS_SEALER_CUSTODIANS and its threshold reach the sealer only as its init-data lists them: the pin is measured', () => {
    const sealer = readFileSync(join(INIT_DATA_DIR, `${SEALER_POD}.toml`), 'utf8');
    // None listed: not pinned, and the administrator cannot pin keys of their own from the environment.
    expect(sealer.split('\ncustodians_env := []\n')).toHaveLength(2);
    expect(sealer.match(/^custodians_env :=/gm)).toHaveLength(1);
    const rule = sealer.slice(sealer.indexOf('# sealer: the tee-kms image.'));
    const body = rule.slice(0, rule.indexOf('\n}\n'));
    expect(body).toContain('\tenv_closed("KMS_SEALER_CUSTODIANS", custodians_env)');
    // Once listed it must also be set: absent, the sealer would run unpinned under the same MRCONFIGID.
    expect(body).toContain('\tenv_present(custodians_env)');
    expect(sealer).toContain('env_present(listed) if {\n\tevery entry in listed {\n\t\tentry in input.OCI.Process.Env\n\t}\n}');
    // The prefix is the sealer's custodians option and covers its threshold and the previous
    // custodians of a change with theirs (none a secret one: no _FILE), and closes no other.
    const prefix = /\tenv_closed\("(KMS_SEALER_CUSTODIANS)", custodians_env\)/.exec(body)![1]!;
    expect(sealerOptions.custodians.env).toBe(prefix);
    expect(Object.values(sealerOptions).filter((o) => o.env.startsWith(prefix) || `${o.env}_FILE`.startsWith(prefix))).toEqual([
      sealerOptions.custodians,
      sealerOptions.custodiansThreshold,
      sealerOptions.custodiansPrevious,
      sealerOptions.custodiansPreviousThreshold,
    ]);
  });

  describe("the sealer's env_closed rules, applied to the environments an administrator could give it", () => {
    /**
     * Whether every env_closed(PREFIX, LIST) of the sealer's rule holds for this environment, with the
     * meaning of the helper the test above pins verbatim (a variable starting with PREFIX must be an
     * entry of LIST), and LIST as the document assigns it. No Rego engine here: the rest of the
     * rule (image, command, NODE_ENV) is not evaluated.
     */
    function closedEnvAdmits(document: string, env: readonly string[]): boolean {
      const rule = document.slice(document.indexOf('# sealer: the tee-kms image.'));
      const closed = [...rule.slice(0, rule.indexOf('\n}\n')).matchAll(/\tenv_closed\(("[^"]+"), (\w+)\)/g)];
      expect(closed.map((m) => m[2])).toEqual(['auto_unseal_env', 'root_key_env', 'custodians_env', 'pccs_env']);
      // env_present(LIST): every entry of LIST is in the environment (the helper is pinned below).
      const present = [...rule.slice(0, rule.indexOf('\n}\n')).matchAll(/\tenv_present\((\w+)\)/g)].map((m) => m[1]!);
      expect(present).toEqual(['custodians_env', 'pccs_env']);
      const listed = (list: string) => {
        const assigned = [...document.matchAll(new RegExp(`^${list} := (.*)$`, 'gm'))];
        expect(assigned, list).toHaveLength(1);
        return JSON.parse(assigned[0]![1]!) as string[];
      };
      return (
        closed.every(([, prefix, list]) => env.every((entry) => !entry.startsWith(JSON.parse(prefix!) as string) || listed(list!).includes(entry))) &&
        present.every((list) => listed(list).every((entry) => env.includes(entry)))
      );
    }
    // With the PCCS install.sh lists by default (Intel PCS), which must be set.
    const base = ['NODE_ENV=production', 'KMS_SEALER_ATTESTER=tdx-aa', 'KMS_ROOT_KEY_REFRESH_SECONDS=30', ...pccsPins(SEALER_POD)];
    const theirKey = `KMS_SEALER_ROOT_KEY=${'A'.repeat(43)}=`;
    // As shipped: no custodians pinned (install.sh lists them: the last test below).
    const shares = deployedInitData(SEALER_POD, undefined, undefined, 'shares', undefined, undefined, null);
    const secret = deployedInitData(SEALER_POD, undefined, undefined, 'secret', undefined, undefined, null);

    it('the Shamir mode: no root key variable, by either name, with any value', () => {
      expect(closedEnvAdmits(shares, base)).toBe(true);
      for (const entry of [...ROOT_KEY_PINS, theirKey, 'KMS_SEALER_ROOT_KEY_FILE=/var/run/tee-kms/config/key', 'KMS_SEALER_ROOT_KEY_FILE='])
        expect(closedEnvAdmits(shares, [...base, entry]), entry).toBe(false);
    });

    it('mode 1: the mounted file install.sh lists, and nothing else', () => {
      expect(closedEnvAdmits(secret, [...base, ...ROOT_KEY_PINS])).toBe(true);
      expect(closedEnvAdmits(secret, [...base, ...ROOT_KEY_PINS, theirKey])).toBe(false);
      expect(closedEnvAdmits(secret, [...base, theirKey])).toBe(false);
      expect(closedEnvAdmits(secret, [...base, 'KMS_SEALER_ROOT_KEY_FILE=/var/run/tee-kms/config/key'])).toBe(false);
      // Auto-unseal stays closed in mode 1.
      expect(closedEnvAdmits(secret, [...base, ...ROOT_KEY_PINS, 'KMS_SEALER_UNSEAL_KBS_URL=https://kbs.example'])).toBe(false);
    });

    it('the PCCS: exactly the listed URL and CA, both required; no http allowance, no other PCCS', () => {
      const pccs = { url: 'https://pccs.example:8081', ca: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----' };
      const withCa = deployedInitData(SEALER_POD, undefined, undefined, 'shares', { ...sealerPoliciesFor(), pccs }, undefined, null);
      const pins = pccsPins(SEALER_POD, pccs);
      expect(pins).toEqual([`KMS_SEALER_PCCS_URL=${pccs.url}`, `KMS_SEALER_PCCS_CA=${pccs.ca}`]);
      const others = base.filter((entry) => !entry.startsWith('KMS_SEALER_PCCS_'));
      expect(closedEnvAdmits(withCa, [...others, ...pins])).toBe(true);
      // Left out, the sealer would fall back to Node's bundled roots, or to no PCCS at all.
      expect(closedEnvAdmits(withCa, [...others, pins[0]!])).toBe(false);
      expect(closedEnvAdmits(withCa, [...others, pins[1]!])).toBe(false);
      for (const entry of [
        'KMS_SEALER_PCCS_URL=https://pccs.attacker.example',
        'KMS_SEALER_PCCS_ALLOW_HTTP=true',
        'KMS_SEALER_PCCS_CA=-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----',
      ])
        expect(closedEnvAdmits(withCa, [...others, ...pins, entry]), entry).toBe(false);
      // As shipped (nothing listed) no PCCS variable is admitted at all.
      const shipped = readFileSync(join(INIT_DATA_DIR, `${SEALER_POD}.toml`), 'utf8');
      expect(closedEnvAdmits(shipped, [...others, pins[0]!])).toBe(false);
    });

    it('pinned custodians: none as shipped; with a list, exactly the listed values', () => {
      const thumbprints = ['a', 'b', 'c'].map((c) => c.repeat(43));
      const theirs = `KMS_SEALER_CUSTODIANS=${['d', 'e', 'f'].map((c) => c.repeat(43)).join(',')}`;
      const threshold = 'KMS_SEALER_CUSTODIANS_THRESHOLD=3';
      for (const entry of [`KMS_SEALER_CUSTODIANS=${thumbprints.join(',')}`, theirs, 'KMS_SEALER_CUSTODIANS=', 'KMS_SEALER_CUSTODIANS_FILE=/tmp/x', threshold])
        expect(closedEnvAdmits(shares, [...base, entry]), entry).toBe(false);
      const pin = `KMS_SEALER_CUSTODIANS=${thumbprints.join(',')}`;
      const pinned = shares.replace('\ncustodians_env := []\n', `\ncustodians_env := ${JSON.stringify([pin, threshold])}\n`);
      expect(pinned).not.toBe(shares);
      expect(closedEnvAdmits(pinned, [...base, pin, threshold])).toBe(true);
      // Listed, each must be set: an administrator cannot unpin the custodians or their threshold by leaving one out.
      expect(closedEnvAdmits(pinned, base)).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, pin])).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, threshold])).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, theirs, threshold])).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, `KMS_SEALER_CUSTODIANS=${thumbprints.reverse().join(',')}`, threshold])).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, pin, threshold, theirs])).toBe(false);
      // Nor lower the threshold, so that fewer custodians recover the root key.
      expect(closedEnvAdmits(pinned, [...base, pin, 'KMS_SEALER_CUSTODIANS_THRESHOLD=2'])).toBe(false);
      expect(closedEnvAdmits(pinned, [...base, pin, threshold, 'KMS_SEALER_CUSTODIANS_THRESHOLD=2'])).toBe(false);
    });
  });

  describe('every workload container refuses variables that load code into the TD or lower its trust (env_denied_none)', () => {
    /**
     * The vetted sources, written here independently of scripts/init-data.ts. glibc's unsecure
     * variables, which it removes for set-user-ID programs (sysdeps/generic/unsecvars.h): those of
     * glibc 2.36 (Debian 12, the node image's base), with GLIBC_TUNABLES and LD_USE_LOAD_BIAS, which
     * other releases list.
     */
    const GLIBC_UNSECURE = [
      'GCONV_PATH',
      'GETCONF_DIR',
      'GLIBC_TUNABLES',
      'HOSTALIASES',
      'LD_AUDIT',
      'LD_DEBUG',
      'LD_DEBUG_OUTPUT',
      'LD_DYNAMIC_WEAK',
      'LD_HWCAP_MASK',
      'LD_LIBRARY_PATH',
      'LD_ORIGIN_PATH',
      'LD_PRELOAD',
      'LD_PROFILE',
      'LD_SHOW_AUXV',
      'LD_USE_LOAD_BIAS',
      'LOCALDOMAIN',
      'LOCPATH',
      'MALLOC_TRACE',
      'NIS_PATH',
      'NLSPATH',
      'RESOLV_HOST_CONF',
      'RES_OPTIONS',
      'TMPDIR',
      'TZDIR',
    ];
    /** OpenSSL's that load configuration, providers or engines (openssl-env(7)). */
    const OPENSSL_LOADERS = ['OPENSSL_CONF', 'OPENSSL_CONF_INCLUDE', 'OPENSSL_MODULES', 'OPENSSL_ENGINES'];
    /** Node.js's that load code or data, write where they are told, or turn certificate checks off (doc/api/cli.md). */
    const NODE_LOADERS = [
      'NODE_OPTIONS',
      'NODE_PATH',
      'NODE_REPL_EXTERNAL_MODULE',
      'NODE_TLS_REJECT_UNAUTHORIZED',
      'NODE_V8_COVERAGE',
      'NODE_ICU_DATA',
      'NODE_PRESERVE_SYMLINKS',
      'NODE_REDIRECT_WARNINGS',
      'NODE_DEBUG_NATIVE',
      'NODE_COMPILE_CACHE',
    ];
    const CA_LOCATIONS = ['SSL_CERT_FILE', 'SSL_CERT_DIR'];
    const documents = ALL_PODS.map((pod) => ({ pod, text: readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8') }));
    /** The container of a pod that runs the tee-kms image. */
    const teeKmsContainer = (pod: string) => (pod === SEALER_POD ? 'sealer' : 'function');

    it("is in each container's CreateContainerRequest rule: the lists for all, the CA locations for the tee-kms image only", () => {
      for (const { pod, text } of documents) {
        const rules = [...text.matchAll(/\n# ([\w-]+): [^\n]*\nCreateContainerRequest if \{\n\tworkload_container\n/g)].map((m) => m[1]!);
        expect(rules, pod).toEqual(pod === SEALER_POD ? ['sealer'] : ['function', 'queue-proxy']);
        for (const container of rules) {
          const body = containerRuleOf(text, container);
          const calls = [...body.matchAll(/\tenv_denied_none\(.*\)/g)].map((m) => m[0].trim());
          expect(calls, `${pod} ${container}`).toEqual(
            container === 'queue-proxy'
              ? ['env_denied_none(denied_env, denied_env_prefixes)']
              : [
                  'env_denied_none(denied_env, denied_env_prefixes)',
                  'env_denied_none(denied_ca_env, [])',
                  'env_denied_none(denied_kms_env, [])',
                  // The sealer's measured policies cannot be replaced by files.
                  // Nor can its own quote, which vouches for them, come from elsewhere than its own TD.
                  // Nor a function's measured policy for the sealer, nor its own quote.
                  // Nor the sealer's collateral come from a file.
                  // Nor a development relaxation of the sealer be switched on.
                  ...(pod === SEALER_POD
                    ? [
                        'env_denied_none(denied_policy_env, [])',
                        'env_denied_none(denied_collateral_env, [])',
                        'env_denied_none(denied_attester_env, [])',
                        'env_denied_none(denied_development_env, [])',
                      ]
                    : ['env_denied_none(denied_trust_env, [])']),
                ],
          );
        }
      }
    });

    it('the helper, word for word: an entry is refused by its name (before the first "=") or by a prefix', () => {
      const helper = [
        'env_denied_none(names, prefixes) if {',
        '\tevery entry in input.OCI.Process.Env {',
        '\t\tnot denied_entry(entry, names, prefixes)',
        '\t}',
        '}',
        '',
        'denied_entry(entry, names, _) if {',
        '\tparts := split(entry, "=")',
        '\tparts[0] in names',
        '}',
        '',
        'denied_entry(entry, _, prefixes) if {',
        '\tsome prefix in prefixes',
        '\tstartswith(entry, prefix)',
        '}',
      ].join('\n');
      for (const { pod, text } of documents) {
        expect(text.split(`\n${helper}\n`), pod).toHaveLength(2);
        // No other rule defines either name: the model in tdx-fixtures.ts (deniedEntries) is the whole meaning.
        expect(text.match(/^(env_denied_none|denied_entry)\(/gm), pod).toHaveLength(3);
      }
    });

    it('the lists are the same in every document, and cover glibc, OpenSSL and Node.js as their documentation lists them', () => {
      const [first] = documents;
      const lists = ['denied_env', 'denied_env_prefixes', 'denied_ca_env', 'denied_kms_env'];
      for (const { pod, text } of documents) for (const list of lists) expect(regoArray(text, list), `${pod} ${list}`).toEqual(regoArray(first!.text, list));
      const names = regoArray(first!.text, 'denied_env');
      expect(new Set(names).size).toBe(names.length);
      expect(regoArray(first!.text, 'denied_env_prefixes')).toEqual(['LD_']);
      expect(regoArray(first!.text, 'denied_ca_env').sort()).toEqual([...CA_LOCATIONS].sort());
      expect(regoArray(first!.text, 'denied_kms_env')).toEqual(['KMS_ROOT_KEY', 'KMS_ROOT_KEY_FILE']);
      // The sealer's document alone has denied_policy_env: the functions' (and their MRCONFIGIDs) are as before.
      for (const { pod, text } of documents)
        if (pod === SEALER_POD) {
          expect(regoArray(text, 'denied_policy_env')).toEqual(['KMS_SEALER_TDX_POLICY_FILE', 'KMS_SEALER_ADMIN_POLICY_FILE']);
          expect(regoArray(text, 'denied_development_env')).toEqual(['KMS_SEALER_PLAINTEXT_SHARES']);
          expect(text, pod).not.toContain('denied_trust_env');
        } else {
          expect(text, pod).not.toContain('denied_policy_env');
          expect(text, pod).not.toContain('denied_development_env');
          // The functions' alone: their policy for the sealer or its collateral as a file, their quote from another tree.
          expect(regoArray(text, 'denied_trust_env'), pod).toEqual([
            'KMS_TRUSTED_SEALER_TDX_POLICY_FILE',
            'KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE',
            'KMS_TSM_ROOT',
          ]);
          expect(text, pod).toContain(
            '\n# Refused: a sealer policy or collateral file would replace the measured policy or PCCS, or its own quote, which vouches for it, come from elsewhere.\ndenied_trust_env := [',
          );
        }
      const sealerDocument = documents.find(({ pod }) => pod === SEALER_POD)!.text;
      expect(sealerDocument).toContain(
        '\n# Refused: the policies as files would replace the measured ones install.sh appends to this document.\ndenied_policy_env := [',
      );
      for (const { pod, text } of documents)
        for (const name of [...GLIBC_UNSECURE, ...OPENSSL_LOADERS, ...NODE_LOADERS])
          for (const container of pod === SEALER_POD ? ['sealer'] : ['function', 'queue-proxy'])
            expect(deniedEntries(text, container, [`${name}=x`]), `${pod} ${container} ${name}`).toEqual([`${name}=x`]);
      // Every LD_ name of glibc's list falls under the prefix; the others are listed by name.
      expect(GLIBC_UNSECURE.filter((name) => !name.startsWith('LD_')).every((name) => names.includes(name))).toBe(true);
    });

    describe("applied to environments the cluster administrator could give (pod spec, tee-kms-config): the model of the helper, the document's lists", () => {
      const welcome = deployedInitData('welcome');
      const sealer = deployedInitData(SEALER_POD);
      const functionEnv = [
        'NODE_ENV=production',
        'FUNCTION_TARGET=welcome',
        'KMS_BIND=0.0.0.0',
        'NODE_EXTRA_CA_CERTS=/var/run/tee-kms/ca/ca.crt',
        'KMS_SEALER_CA_FILE=/var/run/tee-kms/ca/ca.crt',
        'KMS_ATTESTER=tdx-aa',
        'KMS_AA_URL=http://127.0.0.1:8006',
        'KMS_REQUIRE_SEALED=true',
        'KMS_INIT_DATA_FILE=/var/run/tee-kms/init-data/welcome.toml',
        'PATH=/usr/local/bin:/usr/bin:/bin',
        'NODE_VERSION=24.11.0',
      ];
      const sealerEnv = [
        'NODE_ENV=production',
        'KMS_SEALER_ATTESTER=tdx-aa',
        'NODE_EXTRA_CA_CERTS=/var/run/tee-kms/ca/ca.crt',
        'KMS_SEALER_PEERS=https://a:9877',
        'KMS_SEALER_INIT_DATA_FILE=/var/run/tee-kms/init-data/tee-kms-sealer.toml',
      ];
      /** Ways to run the administrator's code (a file in a ConfigMap they mount) or to weaken TLS, in the TD. */
      const attacks = [
        'NODE_OPTIONS=--require /var/run/tee-kms/ca/evil.js',
        'NODE_OPTIONS=--import=data:text/javascript,process.exit()',
        'NODE_OPTIONS=--openssl-config=/var/run/tee-kms/ca/openssl.cnf',
        'NODE_OPTIONS=',
        'NODE_OPTIONS',
        'NODE_PATH=/var/run/tee-kms/ca',
        'LD_PRELOAD=/var/run/tee-kms/ca/evil.so',
        'LD_LIBRARY_PATH=/var/run/tee-kms/ca',
        'LD_ANYTHING_ELSE=1',
        'OPENSSL_CONF=/var/run/tee-kms/ca/openssl.cnf',
        'OPENSSL_MODULES=/var/run/tee-kms/ca',
        'GCONV_PATH=/var/run/tee-kms/ca',
        'GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2',
        'NODE_TLS_REJECT_UNAUTHORIZED=0',
        'SSL_CERT_FILE=/var/run/tee-kms/ca/theirs.crt',
        'SSL_CERT_DIR=/var/run/tee-kms/ca',
        // A root key of theirs: the function would serve keys under it, behind genuine evidence.
        'KMS_ROOT_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
        'KMS_ROOT_KEY_FILE=/var/run/tee-kms/ca/theirs.key',
      ];

      it('the environments the manifests give are admitted', () => {
        expect(deniedEntries(welcome, 'function', functionEnv)).toEqual([]);
        expect(deniedEntries(sealer, 'sealer', sealerEnv)).toEqual([]);
      });

      it('any one of these refuses the function and the sealer, whatever its value and wherever it stands', () => {
        for (const attack of attacks) {
          expect(deniedEntries(welcome, 'function', [...functionEnv, attack]), attack).toEqual([attack]);
          expect(deniedEntries(welcome, 'function', [attack, ...functionEnv]), attack).toEqual([attack]);
          expect(deniedEntries(sealer, 'sealer', [...sealerEnv, attack]), attack).toEqual([attack]);
        }
      });

      it('the sealer: its policies as files, whatever the value, no other init-data file than its own, its own quote from its own TD only', () => {
        for (const attack of [
          'KMS_SEALER_TDX_POLICY_FILE=/var/run/tee-kms/theirs/policy.json',
          'KMS_SEALER_ADMIN_POLICY_FILE=/var/run/tee-kms/theirs/admin-policy.json',
          'KMS_SEALER_TDX_POLICY_FILE=',
          // Its own quote relayed from a TD the host made with init-data of its own.
          'KMS_SEALER_AA_URL=http://10.0.0.9:8006',
          'KMS_SEALER_TSM_ROOT=/var/run/tee-kms/theirs/tsm',
          // Plaintext shares, a development relaxation: refused by name, so no value of the host's reaches the code.
          'KMS_SEALER_PLAINTEXT_SHARES=allow',
          'KMS_SEALER_PLAINTEXT_SHARES=refuse',
          'KMS_SEALER_PLAINTEXT_SHARES=',
        ]) {
          expect(deniedEntries(sealer, 'sealer', [...sealerEnv, attack]), attack).toEqual([attack]);
          // The functions never read them: their documents do not list them.
          expect(deniedEntries(welcome, 'function', [...functionEnv, attack]), attack).toEqual([]);
        }
        // KMS_SEALER_INIT_DATA_FILE is pinned (env_pinned): that value, and no other beside or instead of it.
        const pin = '/var/run/tee-kms/init-data/tee-kms-sealer.toml';
        expect(containerRuleOf(sealer, 'sealer')).toContain(`\tenv_pinned("KMS_SEALER_INIT_DATA_FILE", "${pin}")`);
        expect(pinnedAdmits(sealer, 'KMS_SEALER_INIT_DATA_FILE', sealerEnv)).toBe(true);
        expect(
          pinnedAdmits(
            sealer,
            'KMS_SEALER_INIT_DATA_FILE',
            sealerEnv.filter((e) => !e.startsWith('KMS_SEALER_INIT_DATA_FILE=')),
          ),
        ).toBe(false);
        for (const other of ['/var/run/tee-kms/theirs/init-data.toml', ''])
          expect(pinnedAdmits(sealer, 'KMS_SEALER_INIT_DATA_FILE', [...sealerEnv, `KMS_SEALER_INIT_DATA_FILE=${other}`]), other).toBe(false);
        // KMS_SEALER_ATTESTER is pinned to the attestation agent: not configfs-tsm under another root, not sample.
        expect(containerRuleOf(sealer, 'sealer')).toContain('\tenv_pinned("KMS_SEALER_ATTESTER", "tdx-aa")');
        expect(pinnedAdmits(sealer, 'KMS_SEALER_ATTESTER', sealerEnv)).toBe(true);
        for (const other of ['tdx-configfs', 'sample', ''])
          expect(
            pinnedAdmits(sealer, 'KMS_SEALER_ATTESTER', [...sealerEnv.filter((e) => !e.startsWith('KMS_SEALER_ATTESTER=')), `KMS_SEALER_ATTESTER=${other}`]),
            other,
          ).toBe(false);
      });

      it("a function: its policy for the sealer as a file, whatever the value; its own document and quote only (the sealer's rule does not list them)", () => {
        for (const attack of [
          'KMS_TRUSTED_SEALER_TDX_POLICY_FILE=/var/run/tee-kms/theirs/sealer-policy.json',
          'KMS_TRUSTED_SEALER_TDX_POLICY_FILE=',
          // Its own quote from a configfs-tsm tree the host names.
          'KMS_TSM_ROOT=/var/run/tee-kms/theirs/tsm',
        ]) {
          expect(deniedEntries(welcome, 'function', [...functionEnv, attack]), attack).toEqual([attack]);
          expect(deniedEntries(welcome, 'function', [attack, ...functionEnv]), attack).toEqual([attack]);
          expect(deniedEntries(sealer, 'sealer', [...sealerEnv, attack]), attack).toEqual([]);
        }
        // Pinned (env_pinned): that value, and no other beside or instead of it.
        const pins: [string, string, string[]][] = [
          [
            'KMS_INIT_DATA_FILE',
            '/var/run/tee-kms/init-data/welcome.toml',
            ['/var/run/tee-kms/theirs/init-data.toml', '/var/run/tee-kms/init-data/rotate-root-key.toml', ''],
          ],
          ['KMS_ATTESTER', 'tdx-aa', ['tdx-configfs', 'sample', '']],
          ['KMS_AA_URL', 'http://127.0.0.1:8006', ['http://10.0.0.9:8006', 'http://127.0.0.1:8007', '']],
          // Credentials only sealed: tee-kms-config, which sets it, is the administrator's and not measured.
          // Absent, the code's default (false) would take tokens in the clear, readable at the ingress.
          ['KMS_REQUIRE_SEALED', 'true', ['false', '', '0', 'TRUE']],
        ];
        for (const [name, value, others] of pins) {
          expect(containerRuleOf(welcome, 'function')).toContain(`\tenv_pinned("${name}", "${value}")`);
          expect(pinnedAdmits(welcome, name, functionEnv, 'function'), name).toBe(true);
          const without = functionEnv.filter((e) => !e.startsWith(`${name}=`));
          expect(pinnedAdmits(welcome, name, without, 'function'), `${name} absent`).toBe(false);
          for (const other of others) {
            expect(pinnedAdmits(welcome, name, [...without, `${name}=${other}`], 'function'), `${name}=${other}`).toBe(false);
            expect(pinnedAdmits(welcome, name, [...functionEnv, `${name}=${other}`], 'function'), `${name}=${other} besides`).toBe(false);
          }
        }
        // Each function's document pins its own file, and sealed credentials.
        for (const pod of [...functionPods('per-function'), 'tee-kms']) {
          const rule = containerRuleOf(readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8'), 'function');
          expect(rule, pod).toContain(`\tenv_pinned("KMS_INIT_DATA_FILE", "/var/run/tee-kms/init-data/${pod}.toml")`);
          expect(rule, pod).toContain('\tenv_pinned("KMS_REQUIRE_SEALED", "true")');
        }
      });

      it('names are matched exactly (the runtime reads exact names), LD_ only at the start', () => {
        const lookalikes = ['NODE_OPTIONSX=1', 'XNODE_OPTIONS=1', 'MY_LD_PRELOAD=1', 'KMS_NODE_PATH=1', 'NODE_ENV_OPTIONS=1', 'TZ=UTC', 'UV_THREADPOOL_SIZE=8'];
        expect(deniedEntries(welcome, 'function', [...functionEnv, ...lookalikes])).toEqual([]);
        // A value that names a denied variable is only a value.
        expect(deniedEntries(welcome, 'function', ['KMS_S3_BUCKET=NODE_OPTIONS=--require /x', 'KMS_STORE=LD_PRELOAD'])).toEqual([]);
      });

      it("queue-proxy: Knative's variables and the CA locations its image may set are admitted, the rest of the list is not", () => {
        const knative = [
          'SERVING_NAMESPACE=tee-kms',
          'SERVING_REVISION=welcome-00001',
          'QUEUE_SERVING_PORT=8012',
          'USER_PORT=8080',
          'SYSTEM_NAMESPACE=knative-serving',
        ];
        const roots = ['SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt', 'SSL_CERT_DIR=/etc/ssl/certs'];
        expect(deniedEntries(welcome, 'queue-proxy', [...knative, ...roots])).toEqual([]);
        for (const attack of attacks.filter((a) => !a.startsWith('SSL_CERT_') && !a.startsWith('KMS_ROOT_KEY')))
          expect(deniedEntries(welcome, 'queue-proxy', [...knative, attack]), attack).toEqual([attack]);
      });
    });

    it("denies no variable tee-kms reads as an option (nor its _FILE form) but the functions' root key, the policy files and evidence sources, plaintext shares, nor NODE_ENV, FUNCTION_TARGET and NODE_EXTRA_CA_CERTS", () => {
      const sources = ['shared', 'sealer', 'functions', 'scripts'].flatMap((dir) =>
        (readdirSync(join(REPO, dir), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => join(REPO, dir, f)),
      );
      const options = [...new Set(sources.flatMap((file) => [...readFileSync(file, 'utf8').matchAll(/\benv: '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!)))];
      expect(options).toEqual(expect.arrayContaining(['KMS_SEALER_ROOT_KEY', 'KMS_S3_BUCKET', 'PORT', 'KMS_SEALER_UNSEAL_KBS_URL']));
      const env = [...options, ...options.map((name) => `${name}_FILE`), 'NODE_ENV', 'NODE_EXTRA_CA_CERTS', 'FUNCTION_TARGET'].map((name) => `${name}=x`);
      expect(options).toEqual(expect.arrayContaining(['KMS_SEALER_TDX_POLICY_FILE', 'KMS_SEALER_ADMIN_POLICY_FILE']));
      for (const { pod, text } of documents)
        expect(deniedEntries(text, teeKmsContainer(pod), env).sort(), pod).toEqual(
          [
            'KMS_ROOT_KEY=x',
            'KMS_ROOT_KEY_FILE=x',
            // The sealer takes its policies from its measured init-data only.
            // and its own quote from the attestation agent on the TD's loopback only.
            // A function takes its policy for the sealer from its measured init-data only, and its own quote from its TD.
            // Neither takes collateral from a file.
            ...(pod === SEALER_POD
              ? [
                  'KMS_SEALER_TDX_POLICY_FILE=x',
                  'KMS_SEALER_ADMIN_POLICY_FILE=x',
                  'KMS_SEALER_AA_URL=x',
                  'KMS_SEALER_TSM_ROOT=x',
                  'KMS_SEALER_TDX_COLLATERAL_FILE=x',
                  // Nor plaintext shares, which are for development.
                  'KMS_SEALER_PLAINTEXT_SHARES=x',
                ]
              : ['KMS_TRUSTED_SEALER_TDX_POLICY_FILE=x', 'KMS_TSM_ROOT=x', 'KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE=x']),
          ].sort(),
        );
    });
  });

  describe('no container of a TD may mount a volume over what it runs (mounts_within, mounts_outside)', () => {
    const documents = ALL_PODS.map((pod) => ({ pod, text: readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8') }));
    const container = (pod: string) => (pod === SEALER_POD ? 'sealer' : 'function');
    /**
     * What the container runtime mounts into every container besides the pod's volumes, as
     * containerd's defaults and CRI give them (Kata's genpolicy settings list the same): its file
     * systems with their types, /dev/shm, the /etc files, the termination log.
     */
    const RUNTIME: OciMount[] = [
      { destination: '/proc', type_: 'proc' },
      { destination: '/dev', type_: 'tmpfs' },
      { destination: '/dev/pts', type_: 'devpts' },
      { destination: '/dev/mqueue', type_: 'mqueue' },
      { destination: '/sys', type_: 'sysfs' },
      { destination: '/sys/fs/cgroup', type_: 'cgroup' },
      { destination: '/dev/shm', type_: 'bind' },
      { destination: '/etc/hosts', type_: 'bind' },
      { destination: '/etc/hostname', type_: 'bind' },
      { destination: '/etc/resolv.conf', type_: 'bind' },
      { destination: '/dev/termination-log', type_: 'bind' },
    ];
    const volume = (destination: string): OciMount => ({ destination, type_: 'bind' });
    const sealerMounts = [...RUNTIME, ...['/var/run/tee-kms/init-data', '/var/run/tee-kms/ca', '/var/run/secrets/tee-kms/sealer-tls', '/tmp'].map(volume)];
    const sealer = () => documents.find(({ pod }) => pod === SEALER_POD)!.text;
    const welcome = () => documents.find(({ pod }) => pod === 'welcome')!.text;

    it("the sandbox container has the runtime's mounts only: a volume at /pause would be what runs", () => {
      for (const { pod, text } of documents) {
        expect(mountsAdmitted(text, 'sandbox', RUNTIME), pod).toBe(true);
        for (const destination of ['/pause', '/var/run/tee-kms/ca', '/tmp'])
          expect(mountsAdmitted(text, 'sandbox', [...RUNTIME, volume(destination)]), `${pod} ${destination}`).toBe(false);
      }
    });

    it('the rules word for word in every document: every tee-kms container calls mounts_within, queue-proxy mounts_outside', () => {
      for (const { pod, text } of documents) {
        expect(text, pod).toContain(`\n${MOUNT_RULES}\n`);
        expect(containerRuleOf(text, container(pod)), pod).toContain('\n\tmounts_within(volume_roots)\n');
        if (pod !== SEALER_POD) expect(`${containerRuleOf(text, 'queue-proxy')}\n`, pod).toContain('\n\tmounts_outside(code_dirs)\n');
      }
    });

    it("the lists: the runtime's file systems and mounts, the tee-kms volume roots, queue-proxy's code directories", () => {
      for (const { pod, text } of documents) {
        expect(JSON.parse(/^runtime_file_systems := (\{[^}]*\})$/m.exec(text)![1]!), pod).toEqual({ '/dev': 'tmpfs', '/proc': 'proc', '/sys': 'sysfs' });
        expect(regoArray(text, 'runtime_mounts'), pod).toEqual([
          '/dev/mqueue',
          '/dev/pts',
          '/dev/shm',
          '/dev/termination-log',
          '/etc/hostname',
          '/etc/hosts',
          '/etc/resolv.conf',
          '/sys/fs/cgroup',
        ]);
        expect(regoArray(text, 'volume_roots'), pod).toEqual(['/tmp', '/var/lib/tee-kms-sealer', '/var/run/secrets', '/var/run/tee-kms']);
        expect(regoArray(text, 'code_dirs'), pod).toEqual(['/bin', '/etc', '/ko-app', '/lib', '/lib32', '/lib64', '/libx32', '/opt', '/sbin', '/usr']);
      }
    });

    it("pins what the command resolves against: the working directory, PATH (the Dockerfile's), and queue-proxy's program", () => {
      const runtime = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).stages.at(-1)!;
      const workdir = runtime.instructions.filter((i) => i.op === 'WORKDIR').at(-1)!.args;
      const path = dockerEnv(runtime).PATH!;
      expect(
        path.split(':').every((dir) => ['/usr', '/bin', '/sbin'].some((code) => dir === code || dir.startsWith(`${code}/`))),
        path,
      ).toBe(true);
      for (const { pod, text } of documents) {
        const rule = containerRuleOf(text, container(pod));
        expect(rule, pod).toContain(`\n\tinput.OCI.Process.Cwd == "${workdir}"\n`);
        expect(rule, pod).toContain(`\n\tenv_pinned("PATH", "${path}")\n`);
        expect(rule, pod).toMatch(/\n\tinput\.OCI\.Process\.Args == \["node", "dist\/[a-z/]+\.js"\]\n/);
        if (pod === SEALER_POD) continue;
        // Knative's port for the function, and the one queue-proxy forwards to: never the attestation agent's.
        expect(rule, pod).toContain('\n\tenv_pinned("PORT", "8080")\n');
        const queueProxy = `${containerRuleOf(text, 'queue-proxy')}\n`;
        expect(queueProxy, pod).toContain('\n\tinput.OCI.Process.Args == ["/ko-app/queue"]\n');
        expect(queueProxy, pod).toContain('\n\tenv_pinned("USER_PORT", "8080")\n');
      }
      // PORT as the Knative Service declares it.
      const service = loadYaml(readFileSync(join(KNATIVE, 'functions', 'per-function', 'welcome.yaml'), 'utf8')) as Json;
      expect(service.spec.template.spec.containers[0].ports).toEqual([{ name: 'http1', containerPort: 8080 }]);
    });

    it("runs the tee-kms containers as the image's user, with no capability and no way to gain one", () => {
      const runtime = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).stages.at(-1)!;
      expect(runtime.instructions.filter((i) => i.op === 'USER').at(-1)!.args).toBe('1000:1000');
      // Every manifest that runs the image asks for just that (Kubernetes turns it into the OCI process below).
      const manifests = [
        ...['per-function', 'single-service'].flatMap((layout) =>
          readdirSync(join(KNATIVE, 'functions', layout))
            .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
            .map((f) => join(KNATIVE, 'functions', layout, f)),
        ),
        join(KNATIVE, 'base', 'sealer-statefulset.yaml'),
      ];
      for (const file of manifests) {
        const spec = (loadYaml(readFileSync(file, 'utf8')) as Json).spec.template.spec;
        const teeKms = (spec.containers as Json[]).filter((c) => c.image === 'tee-kms');
        expect(teeKms, file).toHaveLength(1);
        expect(teeKms[0].securityContext, file).toMatchObject({
          runAsUser: 1000,
          runAsGroup: 1000,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        });
        expect(teeKms[0].securityContext.capabilities.add, file).toBeUndefined();
      }
      const genuine = { User: { UID: 1000, GID: 1000, AdditionalGids: [1000] }, NoNewPrivileges: true };
      const empty = { Ambient: [], Bounding: [], Effective: [], Inheritable: [], Permitted: [] };
      for (const { pod, text } of documents) {
        expect(text, pod).toContain(`\n${PROCESS_RULES}\n`);
        expect(`${containerRuleOf(text, container(pod))}\n`, pod).toContain('\n\truns_unprivileged\n');
        if (pod !== SEALER_POD) expect(containerRuleOf(text, 'queue-proxy'), pod).not.toContain('runs_unprivileged');
        for (const capabilities of [empty, {}, null, undefined, { Bounding: null }])
          expect(processAdmitted(text, { ...genuine, Capabilities: capabilities }), `${pod} ${JSON.stringify(capabilities)}`).toBe(true);
        for (const AdditionalGids of [[], undefined])
          expect(processAdmitted(text, { ...genuine, User: { UID: 1000, GID: 1000, AdditionalGids } }), `${pod} ${JSON.stringify(AdditionalGids)}`).toBe(true);
        // As the host would widen what a flaw in the code could do.
        for (const process of [
          { ...genuine, User: { UID: 0, GID: 1000 } },
          { ...genuine, User: { UID: 1000, GID: 0 } },
          { ...genuine, User: {} },
          { ...genuine, User: { UID: 1000, GID: 1000, AdditionalGids: [0] } },
          { ...genuine, User: { UID: 1000, GID: 1000, AdditionalGids: [1000, 6] } },
          { ...genuine, NoNewPrivileges: false },
          { User: genuine.User },
          { ...genuine, Capabilities: { ...empty, Bounding: ['CAP_SYS_ADMIN'] } },
          { ...genuine, Capabilities: { ...empty, Ambient: ['CAP_NET_ADMIN'] } },
          { ...genuine, Capabilities: { Effective: ['CAP_SYS_PTRACE'] } },
          { ...genuine, Capabilities: { Permitted: ['CAP_DAC_OVERRIDE'], Inheritable: [] } },
        ])
          expect(processAdmitted(text, process), `${pod} ${JSON.stringify(process)}`).toBe(false);
      }
    });

    it.skipIf(skipWithout(KUBECTL))("admits what the tdx install mounts into each TD's tee-kms container, with the runtime's own", () => {
      requireTool(KUBECTL);
      const byName = new Map(documents.map(({ pod, text }) => [pod, text]));
      const resources = [
        ...render(join(KNATIVE, 'overlays', 'tdx')),
        ...renderComposed([join(KNATIVE, 'base')], [join(KNATIVE, 'components', 'tdx'), ROOT_KEY_COMPONENT]),
      ];
      const pods = resources.filter(
        (r) => (r.kind === 'Service' && r.apiVersion === 'serving.knative.dev/v1') || (r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD),
      );
      expect(pods.length).toBeGreaterThan(10);
      for (const r of pods) {
        const name = r.metadata.name as string;
        const main = (r.spec.template.spec.containers as Json[])[0]!;
        const mounts = ((main.volumeMounts ?? []) as Json[]).map((m) => volume(m.mountPath as string));
        expect(
          mounts.map((m) => m.destination),
          name,
        ).toContain('/var/run/tee-kms/init-data');
        const withToken = [...RUNTIME, volume('/var/run/secrets/kubernetes.io/serviceaccount'), ...mounts];
        expect(mountsAdmitted(byName.get(name)!, container(name), withToken), `${name}: ${mounts.map((m) => m.destination).join(' ')}`).toBe(true);
      }
    });

    it('refuses a tee-kms volume anywhere but its roots, a path that is not plain, the same path twice, and one below another volume', () => {
      for (const { pod, text } of documents) expect(mountsAdmitted(text, container(pod), sealerMounts), pod).toBe(true);
      const attacks: OciMount[][] = [
        ...['/app', '/app/dist', '/app/dist/sealer/main.js', '/app/node_modules/jose', '/usr/local/bin/node', '/lib/x86_64-linux-gnu/libc.so.6'].map((d) => [
          volume(d),
        ]),
        ...['/etc/ld.so.preload', '/etc/ssl/openssl.cnf', '/etc', '/opt/yarn', '/home/node', '/root', '/var/lib/dpkg', '/var/run/evil', '/run/evil'].map(
          (d) => [volume(d)],
        ),
        ...['/', '', '/tmp/../app', '/var/run/tee-kms/ca/../../../../app/dist', '//app', '/tmp/', '/./tmp'].map((d) => [volume(d)]),
        // The same destination twice: the later shadows the first.
        [volume('/var/run/tee-kms/ca')],
        // A volume holding a symbolic link "y" to /app, then a mount through it, also by the image's /var/run -> /run link.
        [volume('/var/run/tee-kms/evil'), volume('/var/run/tee-kms/evil/y/dist')],
        [volume('/tmp/evil'), volume('/tmp/evil/y/dist')],
        [volume('/var/run/tee-kms/evil'), volume('/run/tee-kms/evil/y/dist')],
        [volume('/var/run/tee-kms/evil'), volume('/var/lock/evil/y/dist')],
      ];
      for (const extra of attacks) expect(mountsAdmitted(sealer(), 'sealer', [...sealerMounts, ...extra]), JSON.stringify(extra)).toBe(false);
      // A volume in place of the runtime's /dev: the termination log (a file the host writes) would follow its links.
      const devAsVolume = sealerMounts.map((m) => (m.destination === '/dev' ? volume('/dev') : m));
      expect(mountsAdmitted(sealer(), 'sealer', devAsVolume)).toBe(false);
      // Whole path components: these are within the roots.
      for (const extra of ['/var/lib/tee-kms-sealer/state', '/var/run/tee-kms/other', '/var/run/secrets/other/x'])
        expect(mountsAdmitted(sealer(), 'sealer', [...sealerMounts, volume(extra)]), extra).toBe(true);
      for (const extra of ['/tmpfoo', '/var/run/tee-kms-other'])
        expect(mountsAdmitted(sealer(), 'sealer', [...sealerMounts, volume(extra)]), extra).toBe(false);
    });

    it("refuses a queue-proxy volume over its program, the system's or /etc, and the same tricks", () => {
      const queueProxyMounts = [...RUNTIME, volume('/var/run/secrets/tokens'), volume('/var/lib/knative/certs'), volume('/var/log')];
      expect(mountsAdmitted(welcome(), 'queue-proxy', queueProxyMounts)).toBe(true);
      for (const destination of ['/ko-app', '/ko-app/queue', '/usr/lib', '/etc/ssl/certs', '/lib64', '/run/x', '/var/lock', '/tmp/../ko-app'])
        expect(mountsAdmitted(welcome(), 'queue-proxy', [...queueProxyMounts, volume(destination)]), destination).toBe(false);
      expect(mountsAdmitted(welcome(), 'queue-proxy', [...queueProxyMounts, volume('/var/x'), volume('/var/x/y/queue')])).toBe(false);
    });
  });

  describe("nothing of the host's runs around a container: hooks, sysctl, storages, the sandbox", () => {
    const documents = ALL_PODS.map((pod) => ({ pod, text: readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8') }));
    const welcome = () => documents.find(({ pod }) => pod === 'welcome')!.text;
    const image = TEE_KMS_IMAGE_PLACEHOLDER;
    const cid = 'ab'.repeat(32);
    // As Kata's runtime sends a workload's pull: the container's annotations as the pull's metadata.
    const annotations = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.image-name': image };
    const pulled: AgentStorage = {
      driver: 'image_guest_pull',
      driver_options: [imagePullOption(annotations)],
      source: image,
      mount_point: `/run/kata-containers/${cid}/rootfs`,
    };

    it('the rules word for word in every document, called by every container rule', () => {
      for (const { pod, text } of documents) {
        for (const rules of [HOST_RULES, NOTHING_THE_HOST_RUNS, SANDBOX_RULES]) expect(text, pod).toContain(`\n${rules}\n`);
        expect(text, pod).not.toContain('default CreateSandboxRequest := true');
        expect(text, pod).not.toContain('default UpdateEphemeralMountsRequest := true');
        expect(hostRunsNothing(text, {}), pod).toBe(true);
      }
    });

    it("storages: the pulled image, and volumes outside every container's root file system", () => {
      const admitted = (storages: AgentStorage[], rootPath = pulled.mount_point) =>
        storagesAdmitted(welcome(), image, storages, { containerId: cid, rootPath });
      expect(admitted([pulled])).toBe(true);
      // An emptyDir (local, in the TD) and a memory one (ephemeral), where Kata puts them.
      const emptyDir: AgentStorage = {
        driver: 'local',
        source: 'local',
        fstype: 'local',
        mount_point: `/run/kata-containers/shared/containers/${cid}/rootfs/local/tmp`,
      };
      const memory: AgentStorage = { driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: '/run/kata-containers/sandbox/ephemeral/cache' };
      expect(admitted([pulled, emptyDir, memory])).toBe(true);
      expect(admitted([emptyDir])).toBe(false);
      // The root is the pulled image's, where the agent pulls it: not a tree the host names, not a second pull that a storage there suppresses.
      expect(admitted([pulled], '/run/kata-containers/shared/containers/' + 'ab'.repeat(32) + '-0123456789abcdef-r')).toBe(false);
      expect(admitted([{ ...pulled, mount_point: '/run/kata-containers/sandbox/x' }], '/run/kata-containers/sandbox/x')).toBe(false);
      expect(
        admitted([
          { ...emptyDir, mount_point: '/run/kata-containers/sandbox/x' },
          { ...pulled, mount_point: '/run/kata-containers/sandbox/x' },
        ]),
      ).toBe(false);
      expect(admitted([pulled, pulled])).toBe(false);
      // A storage that names its own file system or source: a bind of the TD's directories, say.
      for (const other of [
        { ...memory, fstype: 'bind', source: '/run/kata-containers' },
        { ...memory, source: '/run/kata-containers' },
        { ...emptyDir, fstype: 'bind' },
        { ...emptyDir, source: '/run/kata-containers/shared/containers/evil' },
      ])
        expect(admitted([pulled, other]), JSON.stringify(other)).toBe(false);
      // The host's files (or an empty tmpfs) in or over the pulled image, or over the directory that holds it.
      const places = [
        `/run/kata-containers/${cid}/rootfs/app`,
        `/run/kata-containers/${cid}/rootfs`,
        `/run/kata-containers/${cid}`,
        '/run/kata-containers',
        '/run',
        '/var/run/kata-containers',
        `/run/kata-containers/sandbox/../${cid}/rootfs/app`,
        '',
      ];
      for (const mountPoint of places)
        for (const driver of ['virtio-fs', 'local', 'blk', 'ephemeral', 'bind'])
          expect(
            admitted([pulled, { driver, source: '/run/kata-containers/shared/containers/evil', mount_point: mountPoint }]),
            `${driver} ${mountPoint}`,
          ).toBe(false);
      // A storage the host fills, wherever it goes; and the image's name as any other driver's source.
      for (const driver of ['virtio-fs', 'blk', 'virtio-blk', '9p', 'bind', 'overlayfs'])
        expect(admitted([pulled, { driver, source: 'evil', mount_point: '/run/kata-containers/sandbox/evil' }]), driver).toBe(false);
      expect(admitted([pulled, { driver: 'virtio-fs', source: image, mount_point: `/run/kata-containers/${cid}` }])).toBe(false);
      expect(admitted([{ ...pulled, source: 'registry.example/other@sha256:' + 'ef'.repeat(32) }])).toBe(false);
    });

    it("the pull's metadata, which decides whether the agent pulls the source or unpacks the TD's own pause bundle, gives the container's type", () => {
      const admitted = (pull: AgentStorage, containerType: 'container' | 'sandbox' = 'container', source = image) =>
        storagesAdmitted(welcome(), source, [pull], { containerId: cid, rootPath: pulled.mount_point, containerType });
      expect(admitted(pulled)).toBe(true);
      // The pause container, as the runtime sends it: source "pause", and the metadata says "sandbox".
      const pause: AgentStorage = {
        ...pulled,
        source: 'pause',
        driver_options: [imagePullOption({ 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-name': 'welcome-00001' })],
      };
      expect(admitted(pause, 'sandbox', 'pause')).toBe(true);
      // Without "sandbox" in its metadata the agent would pull "pause" from a registry, and run what that serves.
      for (const options of [[], [imagePullOption({})], [imagePullOption({ 'io.kubernetes.cri.container-type': 'container' })], ['image_guest_pull={}']])
        expect(admitted({ ...pause, driver_options: options }, 'sandbox', 'pause'), JSON.stringify(options)).toBe(false);
      // A workload whose metadata says "sandbox" (either CRI's key) would get the pause bundle in place of its image.
      for (const metadata of [
        { ...annotations, 'io.kubernetes.cri.container-type': 'sandbox' },
        { ...annotations, 'io.kubernetes.cri-o.ContainerType': 'sandbox' },
      ])
        expect(admitted({ ...pulled, driver_options: [imagePullOption(metadata)] }), JSON.stringify(metadata)).toBe(false);
      // The agent reads the first image_guest_pull option: one, and JSON.
      for (const options of [
        [imagePullOption({ 'io.kubernetes.cri.container-type': 'sandbox' }), imagePullOption(annotations)],
        [imagePullOption(annotations), imagePullOption(annotations)],
        ['image_guest_pull={"metadata":'],
        ['image_guest_pull=[]'],
        ['image_guest_pull={"metadata":"container"}'],
      ])
        expect(admitted({ ...pulled, driver_options: options }), JSON.stringify(options)).toBe(false);
      // CRI-O's key present, even empty: the agent reads it too.
      expect(admitted({ ...pulled, driver_options: [imagePullOption({ ...annotations, 'io.kubernetes.cri-o.ContainerType': '' })] })).toBe(false);
      // Options of other names are not the agent's to read.
      expect(admitted({ ...pulled, driver_options: ['other=1', ...pulled.driver_options!] })).toBe(true);
    });

    it('OCI hooks and sysctl: none', () => {
      const text = welcome();
      for (const oci of [
        {},
        { Hooks: null },
        { Hooks: {} },
        { Hooks: { Prestart: [], Poststart: null } },
        { Linux: {} },
        { Linux: { Sysctl: {} } },
        { Linux: { Sysctl: null } },
      ])
        expect(hostRunsNothing(text, oci), JSON.stringify(oci)).toBe(true);
      const loader = `/run/kata-containers/${cid}/rootfs/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`;
      for (const oci of [
        { Hooks: { Prestart: [{ Path: loader, Args: [loader, '/usr/local/bin/node', '-e', 'evil()'] }] } },
        { Hooks: { CreateRuntime: [{ Path: '/bin/sh' }] } },
        { Hooks: { Poststart: [{ Path: '/bin/sh' }], Prestart: [] } },
        { Linux: { Sysctl: { 'kernel.core_pattern': '|/tmp/evil' } } },
      ])
        expect(hostRunsNothing(text, oci), JSON.stringify(oci)).toBe(false);
      // Shared mounts: another container's mount moved over this one's code before it starts.
      expect(hostRunsNothing(text, {}, { sharedMounts: [] })).toBe(true);
      expect(hostRunsNothing(text, {}, { sharedMounts: [{ src_ctr: 'queue-proxy', src_path: '/x', dst_path: '/app/dist' }] })).toBe(false);
    });

    it("namespaces and devices: the container's own namespaces (the network one aside), no user namespace, no device", () => {
      const text = welcome();
      const own = [{ Type: 'ipc' }, { Type: 'uts', Path: '' }, { Type: 'mount' }, { Type: 'network', Path: '/var/run/netns/cni-1' }];
      expect(hostRunsNothing(text, { Linux: { Namespaces: own, Devices: [], Resources: { Devices: [] } } }, { devices: [] })).toBe(true);
      // Another container's PID namespace (queue-proxy beside the function's memory), the guest's own mount namespace.
      for (const namespace of [
        { Type: 'pid', Path: '/proc/42/ns/pid' },
        { Type: 'mount', Path: '/proc/1/ns/mnt' },
        { Type: 'user', Path: '/proc/1/ns/user' },
        // A user namespace of its own: its mappings would make the image's user root over the container.
        { Type: 'user' },
      ])
        expect(hostRunsNothing(text, { Linux: { Namespaces: [...own, namespace] } }), JSON.stringify(namespace)).toBe(false);
      for (const mappings of [{ UIDMappings: [{ ContainerID: 1000, HostID: 0, Size: 1 }] }, { GIDMappings: [{ ContainerID: 0, HostID: 0, Size: 65536 }] }])
        expect(hostRunsNothing(text, { Linux: { Namespaces: own, ...mappings } }), JSON.stringify(mappings)).toBe(false);
      expect(hostRunsNothing(text, { Linux: { Namespaces: own, UIDMappings: [], GIDMappings: null } })).toBe(true);
      // The agent reads CRI-O's container type too ("sandbox" there runs the pause bundle's process): containerd sets none.
      expect(text.match(/\nworkload_container if \{\n[^}]*\n\tnot input\.OCI\.Annotations\["io\.kubernetes\.cri-o\.ContainerType"\]\n\}\n/g)).toHaveLength(1);
      // /dev/mem as a device node, a device cgroup rule allowing every device, a device of the request.
      expect(hostRunsNothing(text, { Linux: { Devices: [{ Path: '/dev/x', Type: 'c', Major: 1, Minor: 1 }] } })).toBe(false);
      expect(hostRunsNothing(text, { Linux: { Resources: { Devices: [{ Allow: true, Type: 'a' }] } } })).toBe(false);
      expect(hostRunsNothing(text, {}, { devices: [{ id: 'vda', container_path: '/dev/vda' }] })).toBe(false);
    });

    it('the sandbox: no guest hook path, kernel module, shared PID namespace, or storage over a root file system', () => {
      const text = welcome();
      const shm: AgentStorage = { driver: 'ephemeral', source: 'shm', fstype: 'tmpfs', mount_point: '/run/kata-containers/sandbox/shm' };
      expect(sandboxAdmitted(text, { guest_hook_path: '', kernel_modules: [], sandbox_pidns: false, storages: [shm] })).toBe(true);
      expect(sandboxAdmitted(text, {})).toBe(true);
      for (const input of [
        { guest_hook_path: '/run/kata-containers/shared/containers/hooks' },
        { kernel_modules: [{ name: 'evil' }] },
        { sandbox_pidns: true },
        { storages: [shm, { driver: 'virtio-fs', source: 'x', mount_point: `/run/kata-containers/${cid}/rootfs` }] },
        { storages: [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: `/run/kata-containers/${cid}` }] },
        { storages: [{ ...shm, fstype: 'bind', source: '/run/kata-containers' }] },
        { storages: [{ driver: 'virtio-fs', source: 'x', mount_point: '/run/kata-containers/sandbox/x' }] },
      ])
        expect(sandboxAdmitted(text, input), JSON.stringify(input)).toBe(false);
    });

    it('denies what would page memory out, change a running container or its mounts, move the clock or feed entropy', () => {
      for (const { pod, text } of documents)
        for (const request of [
          'AddSwapRequest',
          'ReseedRandomDevRequest',
          'SetGuestDateTimeRequest',
          'UpdateContainerRequest',
          'UpdateEphemeralMountsRequest',
        ]) {
          expect(text, `${pod} ${request}`).toContain(`\ndefault ${request} := false\n`);
          expect(text.match(new RegExp(`^${request}\\b`, 'gm')), `${pod} ${request}`).toBeNull();
          expect(text, `${pod} ${request}`).not.toContain(`default ${request} := true`);
        }
    });

    it('lets the host set up the network, never the loopback where the attestation agent listens', () => {
      // As Kata's runtime describes a pod on a CNI veth: eth0, its routes, the host's ARP entries.
      const eth0: AgentInterface = {
        name: 'eth0',
        raw_flags: 0,
        hwAddr: '0a:58:0a:f4:00:05',
        IPAddresses: [
          { address: '10.244.0.5', mask: '24' },
          { address: 'fd00:10:244::5', mask: '64' },
        ],
      };
      const routes: AgentRoute[] = [
        { dest: '', gateway: '10.244.0.1', device: 'eth0', source: '' },
        { dest: '10.244.0.0/24', gateway: '', device: 'eth0', source: '10.244.0.5' },
      ];
      const gateway: AgentNeighbor = { device: 'eth0', toIPAddress: { address: '10.244.0.1', mask: '' }, state: 0x80, flags: 0 };
      // Spellings of loopback addresses, each one as node:net reads it.
      const loopback = new BlockList();
      loopback.addSubnet('127.0.0.0', 8, 'ipv4');
      loopback.addAddress('::1', 'ipv6');
      const spellings = ['127.0.0.1', '127.0.0.2', '127.255.255.254', '::1', '0::1', '::0:1', '0:0:0:0:0:0:0:1', '0000:0000:0000:0000:0000:0000:0000:0001'];
      for (const address of spellings) expect(loopback.check(address, isIPv4(address) ? 'ipv4' : 'ipv6'), address).toBe(true);
      // Spellings the agent's Rust parsers also take for one of those (a prefix length, an IPv4
      // address inside an IPv6 one), and a MAC they read as lo's (all zeros).
      const parsedAlike = ['127.0.0.1/0', '127.0.0.1/32', '127.0.0.1/0.0.0.0', '::1/0', '::0.0.0.1', '0:0:0:0:0:0:0.0.0.1', '::ffff:127.0.0.1'];
      const loopbackMacs = ['0:0:0:0:0:0', '000:0:0:0:0:00', '+0:0:0:0:0:0', '00:00:00:00:00:00'];
      for (const { pod, text } of documents) {
        expect(text, pod).toContain(`\n${NETWORK_RULES}\n`);
        expect(interfaceAdmitted(text, eth0), pod).toBe(true);
        expect(interfaceAdmitted(text, { ...eth0, raw_flags: 0x80 }), pod).toBe(true); // IFF_NOARP
        expect(routesAdmitted(text, routes), pod).toBe(true);
        expect(routesAdmitted(text, [...routes, { dest: 'fd00:10:244::/64', gateway: '', device: 'eth0', source: 'fd00:10:244::5' }]), pod).toBe(true);
        expect(neighborsAdmitted(text, [gateway, { ...gateway, state: 0x02, flags: 0x80 }]), pod).toBe(true);
        // As a host that wants the agent on 127.0.0.1:8006 within its reach, or the loopback down.
        for (const attack of [
          { ...eth0, name: 'lo' },
          { ...eth0, raw_flags: 0x08 }, // IFF_LOOPBACK
          { ...eth0, raw_flags: 0x80 | 0x100 }, // IFF_PROMISC beside IFF_NOARP
          ...loopbackMacs.map((hwAddr) => ({ ...eth0, hwAddr })),
          { ...eth0, hwAddr: '0A:58:0A:F4:00:05' }, // not as the runtime writes it
          ...[...spellings, ...parsedAlike].map((address) => ({ ...eth0, IPAddresses: [...eth0.IPAddresses!, { address, mask: '8' }] })),
        ])
          expect(interfaceAdmitted(text, attack), `${pod} ${JSON.stringify(attack)}`).toBe(false);
        for (const attack of [
          [...routes, { dest: '10.0.0.0/8', gateway: '', device: 'lo', source: '' }],
          ...[...spellings, ...parsedAlike].map((source) => [...routes, { dest: '10.0.0.0/8', gateway: '', device: 'eth0', source }]),
        ])
          expect(routesAdmitted(text, attack), `${pod} ${JSON.stringify(attack)}`).toBe(false);
        for (const attack of [
          { ...gateway, device: 'lo' },
          { ...gateway, toIPAddress: { address: '10.244.0.0', mask: '24' } },
          ...[...spellings, ...parsedAlike].map((address) => ({ ...gateway, toIPAddress: { address, mask: '' } })),
          { ...gateway, state: 0x40 }, // NUD_NOARP
          { ...gateway, flags: 0x02 }, // NTF_SELF
        ])
          expect(neighborsAdmitted(text, [gateway, attack]), `${pod} ${JSON.stringify(attack)}`).toBe(false);
      }
    });
  });

  it('names the images by the placeholders install.sh replaces, each once', () => {
    for (const pod of ALL_PODS) {
      const text = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
      expect(text.split(`tee_kms_image := "${TEE_KMS_IMAGE_PLACEHOLDER}"`)).toHaveLength(2);
      expect(text.split(`queue_proxy_image := "${QUEUE_PROXY_IMAGE_PLACEHOLDER}"`)).toHaveLength(2);
      expect(text.split('@sha256:')).toHaveLength(3);
    }
  });
});

function dryRun(args: string[], work: string) {
  return spawnSync(
    'bash',
    [
      INSTALL,
      '--dry-run',
      '--tee',
      'tdx',
      '--image',
      DIGEST_IMAGE,
      '--queue-proxy-image',
      QUEUE_PROXY_IMAGE,
      '--custodian-keys',
      custodianKeysFile(),
      ...args,
      '--work-dir',
      work,
    ],
    {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', TMPDIR: tmpdir() },
      encoding: 'utf8',
      timeout: 180_000, // kubectl kustomize and node per policy: slow on a loaded machine
    },
  );
}
const policyArgs = (f: { policy: string; sealerPolicy: string; admin: string }) => [
  '--tdx-policy',
  f.policy,
  '--sealer-tdx-policy',
  f.sealerPolicy,
  '--admin-policy',
  f.admin,
];

for (const layout of ['per-function', 'single-service'] as Layout[]) {
  describe.skipIf(skipWithout(KUBECTL))(`install.sh --tee tdx --dry-run (${layout}): every TD pod carries its init-data`, () => {
    beforeAll(() => requireTool(KUBECTL));
    const dir = tempDir('tee-kms-init-data-');
    // --single-service needs mode 1, whose sealer init-data lists the root key file (root_key_env).
    const mode: RootKeyMode = layout === 'single-service' ? 'secret' : 'shares';
    const files = writeTdxPolicies(dir, layout, DIGEST_IMAGE, undefined, mode);
    // The sealer's document carries this layout's --tdx-policy and --admin-policy, each function's its --sealer-tdx-policy.
    const deployed = (pod: string) =>
      deployedInitData(
        pod,
        DIGEST_IMAGE,
        QUEUE_PROXY_IMAGE,
        mode,
        readSealerPolicies(files.policy, files.admin, layout),
        readFileSync(files.sealerPolicy, 'utf8'),
      );
    const result = dryRun([...policyArgs(files), ...(layout === 'single-service' ? ['--single-service', '--generate-root-key'] : [])], join(dir, 'work'));
    const resources = result.status === 0 ? (parseAllDocuments(result.stdout).map((d) => d.toJS()) as Resource[]) : [];
    const pods = resources.filter((r) => (r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD) || r.apiVersion === 'serving.knative.dev/v1');
    const expected = [...functionPods(layout), SEALER_POD].sort();

    it('succeeds, and renders the sealer and every function Service', () => {
      expect(result.status, result.stderr).toBe(0);
      expect(pods.map((r) => r.metadata.name).sort()).toEqual(expected);
    });

    it(`the cc_init_data annotation decodes (base64, gzip) to exactly the shipped document with the digests filled in${mode === 'secret' ? ', and the mode-1 root key file for the sealer' : ''}`, () => {
      for (const r of pods) {
        const value: string = r.spec.template.metadata.annotations[INIT_DATA_ANNOTATION];
        const document = gunzipSync(Buffer.from(value, 'base64'));
        expect(document.equals(Buffer.from(deployed(r.metadata.name))), r.metadata.name).toBe(true);
        expect(document.toString()).toContain(`tee_kms_image := "${DIGEST_IMAGE}"`);
        expect(document.toString()).not.toContain('sha256:0000000000000000');
        if (r.metadata.name === SEALER_POD)
          expect(document.toString()).toContain(`\nroot_key_env := ${mode === 'secret' ? JSON.stringify(ROOT_KEY_PINS) : '[]'}\n`);
      }
    });

    it('prints each MRCONFIGID as SHA-384 of those bytes (48 bytes, 96 hex digits), all distinct', () => {
      const printed = new Map([...result.stderr.matchAll(/MRCONFIGID ([a-z-]+): ([0-9a-f]+)\n/g)].map((m) => [m[1]!, m[2]!]));
      expect([...printed.keys()].sort()).toEqual(expected);
      for (const pod of expected) {
        const digest = createHash('sha384').update(deployed(pod)).digest();
        expect(digest).toHaveLength(48);
        expect(printed.get(pod), pod).toBe(digest.toString('hex'));
      }
      expect(new Set(printed.values()).size).toBe(expected.length);
    });

    it('each pod mounts the same bytes from ConfigMap tee-kms-init-data and names its file in KMS_INIT_DATA_FILE (the sealer: KMS_SEALER_INIT_DATA_FILE)', () => {
      const configMap = resources.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-init-data')!;
      expect(Object.keys(configMap.data).sort()).toEqual(expected.map((pod) => `${pod}.toml`).sort());
      for (const r of pods) {
        const name = r.metadata.name;
        expect(configMap.data[`${name}.toml`], name).toBe(deployed(name));
        const spec = r.spec.template.spec;
        const container = spec.containers[0];
        // The sealer reads its measured policies from its own file, after checking its digest.
        const variable = name === SEALER_POD ? 'KMS_SEALER_INIT_DATA_FILE' : 'KMS_INIT_DATA_FILE';
        expect(
          container.env.filter((e: Json) => /INIT_DATA/.test(e.name)),
          name,
        ).toEqual([{ name: variable, value: `/var/run/tee-kms/init-data/${name}.toml` }]);
        expect(container.volumeMounts).toContainEqual({ name: 'init-data', mountPath: '/var/run/tee-kms/init-data', readOnly: true });
        expect(spec.volumes).toContainEqual({ name: 'init-data', configMap: { name: 'tee-kms-init-data' } });
        if (name === SEALER_POD) {
          // No policy as a file, nor a volume for one: only the measured ones.
          expect(container.env.filter((e: Json) => /POLICY_FILE$/.test(e.name)).map((e: Json) => e.name)).toEqual([]);
          expect(spec.volumes.filter((v: Json) => /tdx-policy|admin-policy/.test(JSON.stringify(v)))).toEqual([]);
          continue;
        }
        // The process the policy admits: the function's command is the image's CMD, set explicitly.
        expect(container.command).toEqual(['node', 'dist/scripts/serve.js']);
      }
    });

    it.skipIf(skipWithout(TOMLLIB))(
      "the sealer's document ends with its two policies, byte for byte: compact JSON in [data], the functions by agent policy",
      () => {
        const document = deployed(SEALER_POD);
        const pods = functionPods(layout);
        const operator = JSON.parse(readFileSync(files.policy, 'utf8'));
        const tdxJson = JSON.stringify({ ...operator, agentPolicies: pods.map((pod) => agentPolicyOf(pod)) });
        const names = JSON.parse(readFileSync(files.admin, 'utf8')) as Record<string, string[]>;
        const adminJson = JSON.stringify(
          Object.fromEntries(Object.entries(names).map(([op, list]) => [op, list.map((pod) => `policy.rego:${agentPolicyOf(pod)}`)])),
        );
        // writeTdxPolicies indents --tdx-policy: the document has it on one line.
        expect(readFileSync(files.policy, 'utf8')).not.toBe(`${JSON.stringify(operator)}\n`);
        expect(document.endsWith(`'''\n"tdx-policy.json" = '''\n${tdxJson}\n'''\n"admin-policy.json" = '''\n${adminJson}\n'''\n`)).toBe(true);
        const parsed = parseToml(document);
        expect(Object.keys(parsed).sort()).toEqual(['algorithm', 'data', 'version']);
        expect(Object.keys(parsed.data)).toEqual(['policy.rego', 'tdx-policy.json', 'admin-policy.json']);
        expect(JSON.parse(parsed.data['tdx-policy.json'])).toEqual({ ...operator, agentPolicies: pods.map((pod) => agentPolicyOf(pod)) });
        // Each digest is of the text tomllib reads from that function's deployed document too.
        for (const pod of pods)
          expect(
            createHash('sha384')
              .update(parseToml(deployed(pod)).data['policy.rego'])
              .digest('hex'),
            pod,
          ).toBe(agentPolicyOf(pod));
        expect(JSON.parse(parsed.data['admin-policy.json'])).toEqual(JSON.parse(adminJson));
        expect(Object.keys(JSON.parse(parsed.data['admin-policy.json']))).toEqual(Object.keys(names));
        // The sealer adds its own MRCONFIGID: neither policy names it (a document cannot contain its own digest).
        expect(document).not.toContain(files.sealerId);
        expect(JSON.parse(parsed.data['admin-policy.json'])).not.toHaveProperty('sealer-peer');
      },
    );

    it.skipIf(skipWithout(TOMLLIB))("each function's document ends with the functions' policy for the sealer, byte for byte, and nothing else", () => {
      const sealerJson = JSON.stringify(JSON.parse(readFileSync(files.sealerPolicy, 'utf8')));
      for (const pod of functionPods(layout)) {
        const document = deployed(pod);
        expect(document.endsWith(`'''\n"sealer-tdx-policy.json" = '''\n${sealerJson}\n'''\n`), pod).toBe(true);
        const parsed = parseToml(document);
        expect(Object.keys(parsed.data), pod).toEqual(['policy.rego', 'sealer-tdx-policy.json']);
        expect(JSON.parse(parsed.data['sealer-tdx-policy.json']), pod).toEqual(JSON.parse(readFileSync(files.sealerPolicy, 'utf8')));
        expect(JSON.parse(parsed.data['sealer-tdx-policy.json']).mrConfigId, pod).toEqual([files.sealerId]);
      }
    });

    it("no TD container's environment (its spec, tee-kms-config, the image, Knative, Kubernetes) has a variable its agent policy denies", () => {
      expect(pods.map((r) => r.metadata.name).sort()).toEqual(expected);
      for (const r of pods) {
        const name = r.metadata.name;
        const { container, env } = tdContainerEnv(r, resources);
        expect(container, name).toBe(name === SEALER_POD ? 'sealer' : 'function');
        // What the manifests set that is closest to the list: Node's CA file, and the pinned NODE_ENV.
        expect(env, name).toContain('NODE_EXTRA_CA_CERTS=/var/run/tee-kms/ca/ca.crt');
        expect(env, name).toContain('NODE_ENV=production');
        expect(env.filter((e) => e.startsWith('KMS_ATTESTER=') || e.startsWith('KMS_SEALER_ATTESTER=')).length, name).toBeGreaterThan(0);
        expect(deniedEntries(deployed(name), container, env), name).toEqual([]);
        // And it has every variable its rule pins, with the pinned value only (those install.sh adds aside).
        const pins = [...containerRuleOf(deployed(name), container).matchAll(/\tenv_pinned\("([A-Z_]+)", /g)].map((m) => m[1]!);
        expect(pins, name).toEqual(
          expect.arrayContaining(['NODE_ENV', 'PATH', ...(name === SEALER_POD ? [] : ['PORT', 'FUNCTION_TARGET', 'KMS_REQUIRE_SEALED'])]),
        );
        for (const pin of pins.filter((n) => !['KMS_INIT_DATA_FILE', 'KMS_SEALER_INIT_DATA_FILE'].includes(n)))
          expect(pinnedAdmits(deployed(name), pin, env, container), `${name} ${pin}`).toBe(true);
      }
    });
  });
}

describe('install.sh --tee tdx refuses policies that do not name exactly what this install runs, before rendering anything', () => {
  const dir = tempDir('tee-kms-init-data-refusals-');
  const good = writeTdxPolicies(dir);
  const sealerId = good.sealerId;
  const rotateId = mrConfigIdOf(deployedInitData('rotate-root-key'));
  /** A TD running the same image under Kata's allow-all agent policy: an init-data the attacker chose. */
  const allowAll = mrConfigIdOf(
    `version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n"policy.rego" = '''\npackage agent_policy\n\ndefault ExecProcessRequest := true\n'''\n`,
  );
  const write = (name: string, value: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify(value));
    return path;
  };
  const mrTd = ['ab'.repeat(48)];
  const known = functionPods().join(', ');
  const cases: [string, string[], RegExp][] = [
    [
      "--tdx-policy with mrConfigId (the functions' MRCONFIGIDs cover --sealer-tdx-policy, which names the sealer's)",
      ['--tdx-policy', write('with-ids.json', { mrTd, mrConfigId: [rotateId] })],
      /--tdx-policy \S+with-ids\.json: remove mrConfigId: install\.sh admits the functions by their agent policies .*the sealer adds its own MRCONFIGID itself/,
    ],
    [
      '--tdx-policy with agentPolicies of its own (an allow-all policy among them)',
      ['--tdx-policy', write('with-agent-policies.json', { mrTd, agentPolicies: [allowAll] })],
      /--tdx-policy \S+with-agent-policies\.json: remove agentPolicies: install\.sh admits the functions by their agent policies/,
    ],
    [
      '--sealer-tdx-policy without mrConfigId',
      ['--sealer-tdx-policy', write('sealer-no-ids.json', { mrTd, ...REFERENCE_RTMRS })],
      /--sealer-tdx-policy \S+sealer-no-ids\.json has no mrConfigId/,
    ],
    [
      '--sealer-tdx-policy with the all-zero MRCONFIGID (a TD without init-data)',
      ['--sealer-tdx-policy', write('sealer-zero.json', { mrTd, ...REFERENCE_RTMRS, mrConfigId: [sealerId, '00'.repeat(48)] })],
      /--sealer-tdx-policy \S+sealer-zero\.json: mrConfigId lists the all-zero MRCONFIGID/,
    ],
    [
      '--sealer-tdx-policy that also admits an allow-all init-data',
      ['--sealer-tdx-policy', write('sealer-extra.json', { mrTd, ...REFERENCE_RTMRS, mrConfigId: [sealerId, allowAll] })],
      new RegExp(`mrConfigId ${allowAll} is not the init-data digest of any pod this install runs there \\(tee-kms-sealer\\)`),
    ],
    [
      "--sealer-tdx-policy naming a function's TD as the sealer",
      ['--sealer-tdx-policy', write('sealer-function.json', { mrTd, ...REFERENCE_RTMRS, mrConfigId: [rotateId] })],
      new RegExp(`--sealer-tdx-policy \\S+: mrConfigId ${rotateId} is not the init-data digest of any pod this install runs there \\(tee-kms-sealer\\)`),
    ],
    [
      '--admin-policy naming no function Service of this install',
      ['--admin-policy', write('admin-unknown.json', { rotate: ['rotate'] })],
      new RegExp(`--admin-policy \\S+admin-unknown\\.json: rotate\\[0\\] "rotate" is not a function Service of this install \\(known: ${known}\\)`),
    ],
    [
      '--admin-policy granting a TD identity (96 hex digits) rather than a Service',
      ['--admin-policy', write('admin-id.json', { rotate: [rotateId] })],
      new RegExp(
        `--admin-policy \\S+admin-id\\.json: rotate\\[0\\] is a TD identity \\(96 hex digits\\): name the function Service instead \\(known: ${known}\\)`,
      ),
    ],
    [
      "--admin-policy granting the sealer's MRCONFIGID an admin operation",
      ['--admin-policy', write('admin-sealer-id.json', { seal: [sealerId] })],
      /--admin-policy \S+admin-sealer-id\.json: seal\[0\] is a TD identity \(96 hex digits\): name the function Service instead/,
    ],
    [
      "--admin-policy granting the sealer's Service an admin operation",
      ['--admin-policy', write('admin-sealer.json', { seal: [SEALER_POD] })],
      /--admin-policy \S+admin-sealer\.json: seal\[0\] names the sealer: a sealer TD calls no admin operation/,
    ],
    [
      "--admin-policy granting sealer-peer, even to the sealer's MRCONFIGID: the sealer grants it to its own",
      ['--admin-policy', write('admin-peer-sealer.json', { rotate: ['rotate-root-key'], 'sealer-peer': [sealerId] })],
      /--admin-policy \S+admin-peer-sealer\.json: must not grant "sealer-peer": the sealer grants it to its own MRCONFIGID, .*because its init-data carries this policy and cannot name its own digest/,
    ],
    [
      '--admin-policy granting sealer-peer (the root key) to a function',
      ['--admin-policy', write('admin-peer-function.json', { rotate: ['rotate-root-key'], 'sealer-peer': ['rotate-root-key'] })],
      /--admin-policy \S+admin-peer-function\.json: must not grant "sealer-peer"/,
    ],
    [
      '--admin-policy with an empty sealer-peer',
      ['--admin-policy', write('admin-peer-empty.json', { rotate: ['rotate-root-key'], 'sealer-peer': [] })],
      /--admin-policy \S+admin-peer-empty\.json: must not grant "sealer-peer"/,
    ],
    [
      '--single-service with the per-function admin policy',
      ['--single-service', '--generate-root-key'],
      /--admin-policy \S+: rotate\[0\] "rotate-root-key" is not a function Service of this install \(known: tee-kms\)/,
    ],
    [
      '--single-service with its admin policy but the per-function sealer policy',
      ['--single-service', '--generate-root-key', '--admin-policy', write('admin-single.json', { rotate: ['tee-kms'] })],
      /--sealer-tdx-policy \S+: mrConfigId [0-9a-f]{96} is not the init-data digest of any pod this install runs there \(tee-kms-sealer\)/,
    ],
  ];
  for (const [name, override, message] of cases) {
    it(name, () => {
      const options = new Map<string, string>([
        ['--tdx-policy', good.policy],
        ['--sealer-tdx-policy', good.sealerPolicy],
        ['--admin-policy', good.admin],
      ]);
      const flags: string[] = [];
      for (let i = 0; i < override.length; i++) {
        if (options.has(override[i]!)) options.set(override[i]!, override[++i]!);
        else flags.push(override[i]!);
      }
      const result = dryRun([...[...options].flat(), ...flags], join(dir, `work-${name.replace(/\W+/g, '-')}`));
      expect(result.status, result.stderr).not.toBe(0);
      expect(result.stderr).toMatch(message);
      expect(result.stdout).toBe('');
    });
  }

  it("and without --queue-proxy-image, which the functions' policy pins", () => {
    const result = spawnSync(
      'bash',
      [INSTALL, '--dry-run', '--tee', 'tdx', '--image', DIGEST_IMAGE, ...policyArgs(good), '--custodian-keys', custodianKeysFile()],
      {
        encoding: 'utf8',
      },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/--tee tdx needs --queue-proxy-image REF@sha256:<digest>: .* so it is part of their trusted code/);
    // From Knative's signed release, not from what the cluster (its administrator) names.
    expect(result.stderr).toMatch(
      /Take the digest from the serving-core\.yaml of the Knative Serving release installed, after checking the release's signature, not from the cluster's config-deployment/,
    );
    expect(result.stderr).not.toContain('kubectl get configmap config-deployment');
  });
});

describe.skipIf(skipWithout(KUBECTL))(
  "install.sh --tee tdx: the sealer's MRCONFIGID covers --tdx-policy and --admin-policy, the functions' --sealer-tdx-policy",
  () => {
    beforeAll(() => requireTool(KUBECTL));
    const dir = tempDir('tee-kms-measured-policies-');
    const good = writeTdxPolicies(dir);
    const policy = JSON.parse(readFileSync(good.policy, 'utf8'));
    const admin = JSON.parse(readFileSync(good.admin, 'utf8'));
    const printedSealerId = (stderr: string) => new RegExp(`MRCONFIGID ${SEALER_POD}: ([0-9a-f]{96})\n`).exec(stderr)?.[1];
    /** The functions' MRCONFIGIDs a run printed, by pod. */
    const printedFunctionIds = (stderr: string) =>
      new Map([...stderr.matchAll(/MRCONFIGID ([a-z-]+): ([0-9a-f]{96})\n/g)].filter((m) => m[1] !== SEALER_POD).map((m) => [m[1]!, m[2]!]));
    const goodRun = dryRun(policyArgs(good), join(dir, 'work-good'));
    const goodFunctionIds = printedFunctionIds(goodRun.stderr);
    const changes: [string, string, unknown][] = [
      ['--tdx-policy', 'another measurement allowed', { ...policy, mrTd: [...policy.mrTd, 'ef'.repeat(48)] }],
      ['--tdx-policy', 'another TCB status allowed', { ...policy, allowedTcbStatuses: ['UpToDate', 'SWHardeningNeeded'] }],
      ['--admin-policy', 'one grant fewer', { ...admin, verify: [] }],
    ];
    it("as given (the functions by their agent policies): succeeds, and prints every function's MRCONFIGID", () => {
      expect(goodRun.status, goodRun.stderr).toBe(0);
      expect([...goodFunctionIds.keys()].sort()).toEqual(functionPods());
      for (const pod of functionPods()) expect(goodFunctionIds.get(pod), pod).toBe(mrConfigIdOf(deployedInitData(pod)));
    });

    for (const [option, name, changed] of changes) {
      it(`${option}, ${name}: a new MRCONFIGID, so the functions' --sealer-tdx-policy must name it (and their MRCONFIGIDs change with it)`, () => {
        const file = join(dir, `${name.replace(/\W+/g, '-')}.json`);
        writeFileSync(file, JSON.stringify(changed, null, 1));
        const tdxPolicy = option === '--tdx-policy' ? file : good.policy;
        const adminPolicy = option === '--admin-policy' ? file : good.admin;
        const expected = mrConfigIdOf(deployedInitData(SEALER_POD, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', readSealerPolicies(tdxPolicy, adminPolicy)));
        expect(expected).not.toBe(good.sealerId);
        // The functions' policy names the sealer of the old policies: refused, nothing rendered.
        const stale = dryRun(['--tdx-policy', tdxPolicy, '--sealer-tdx-policy', good.sealerPolicy, '--admin-policy', adminPolicy], join(dir, `stale-${name}`));
        expect(stale.status).not.toBe(0);
        expect(printedSealerId(stale.stderr)).toBe(expected);
        expect(stale.stderr).toMatch(
          new RegExp(
            `--sealer-tdx-policy \\S+: mrConfigId ${good.sealerId} is not the init-data digest of any pod this install runs there \\(tee-kms-sealer\\)`,
          ),
        );
        expect(stale.stdout).toBe('');
        // Named, it renders the sealer with that document.
        const sealerPolicy = join(dir, `sealer-${name.replace(/\W+/g, '-')}.json`);
        expect(writeSealerTdxPolicy(sealerPolicy, tdxPolicy, adminPolicy)).toBe(expected);
        const result = dryRun(['--tdx-policy', tdxPolicy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', adminPolicy], join(dir, `work-${name}`));
        expect(result.status, result.stderr).toBe(0);
        expect(printedSealerId(result.stderr)).toBe(expected);
        const sealer = (parseAllDocuments(result.stdout).map((d) => d.toJS()) as Resource[]).find(
          (r) => r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD,
        )!;
        const document = gunzipSync(Buffer.from(sealer.spec.template.metadata.annotations[INIT_DATA_ANNOTATION], 'base64')).toString();
        expect(mrConfigIdOf(document)).toBe(expected);
        const policies = readSealerPolicies(tdxPolicy, adminPolicy);
        expect(document).toContain(`\n${option === '--tdx-policy' ? measuredTdxPolicy(policies) : measuredAdminPolicy(policies)}\n`);
        // The functions' documents carry the new --sealer-tdx-policy: every MRCONFIGID changes.
        const functionIds = printedFunctionIds(result.stderr);
        for (const pod of functionPods()) {
          expect(functionIds.get(pod), pod).toBe(mrConfigIdOf(deployedInitData(pod, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', policies)));
          expect(functionIds.get(pod), pod).not.toBe(goodFunctionIds.get(pod));
        }
      });
    }

    it("--sealer-tdx-policy, one constraint more on the sealer's TD: the sealer's MRCONFIGID stays, every function's changes", () => {
      const sealerPolicy = join(dir, 'sealer-rtmr.json');
      // Narrower than --tdx-policy, as install.sh wants it: an advisory denied besides.
      const text = `${JSON.stringify({ ...JSON.parse(readFileSync(good.sealerPolicy, 'utf8')), deniedAdvisoryIds: ['INTEL-SA-00837'] })}\n`;
      writeFileSync(sealerPolicy, text);
      const result = dryRun(['--tdx-policy', good.policy, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', good.admin], join(dir, 'work-sealer-rtmr'));
      expect(result.status, result.stderr).toBe(0);
      expect(printedSealerId(result.stderr)).toBe(good.sealerId);
      const functionIds = printedFunctionIds(result.stderr);
      for (const pod of functionPods()) {
        expect(functionIds.get(pod), pod).toBe(mrConfigIdOf(deployedInitData(pod, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, 'shares', undefined, text)));
        expect(functionIds.get(pod), pod).not.toBe(goodFunctionIds.get(pod));
      }
      expect(result.stderr).toMatch(/the functions' MRCONFIGIDs cover --sealer-tdx-policy: they change with it/);
    });

    it('the same JSON written differently (spaces, line breaks) is the same document: no MRCONFIGID changes', () => {
      const file = join(dir, 'reformatted.json');
      writeFileSync(file, `${JSON.stringify(policy, null, 8)}\n\n`);
      const sealerPolicy = join(dir, 'sealer-reformatted.json');
      writeFileSync(sealerPolicy, `\n${JSON.stringify(JSON.parse(readFileSync(good.sealerPolicy, 'utf8')))}`);
      const result = dryRun(['--tdx-policy', file, '--sealer-tdx-policy', sealerPolicy, '--admin-policy', good.admin], join(dir, 'work-reformatted'));
      expect(result.status, result.stderr).toBe(0);
      expect(printedSealerId(result.stderr)).toBe(good.sealerId);
      expect(printedFunctionIds(result.stderr)).toEqual(goodFunctionIds);
    });
  },
);

describe('the docs show computed MRCONFIGIDs, never the all-zero one', () => {
  const docs = ['attestation.md', 'deploy-knative.md'].map((f) => readFileSync(join(REPO, 'docs', f), 'utf8'));

  it('no all-zero MRCONFIGID (a TD without init-data) appears as an example', () => {
    for (const text of docs) {
      expect(text).not.toMatch(/"mrConfigId": \[?"0{8}/);
      expect(text).not.toContain('0'.repeat(96));
    }
  });

  it("attestation.md's example is welcome's agent policy digest for the images it names, and no MRCONFIGID it cannot know", () => {
    const image = `registry.example.com/tee-kms@sha256:${'cd'.repeat(32)}`;
    const [attestation] = docs;
    expect(attestation).toContain('registry.example.com/tee-kms@sha256:cdcd…cd');
    expect(attestation).toContain(`${QUEUE_PROXY_IMAGE.split('@')[0]}@sha256:abab…ab`);
    const welcome = agentPolicyOf('welcome', image);
    expect(attestation).toContain(`it prints \`policy.rego ${welcome.slice(0, 8)}…${welcome.slice(-4)}\` for welcome`);
    // A function's MRCONFIGID depends on the policies install.sh appends: the docs show none in full.
    expect(attestation).not.toContain(mrConfigIdOf(deployedInitData('welcome', image)));
  });
});
