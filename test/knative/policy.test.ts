/**
 * Policy checks on knative/, on the base and on what each overlay renders (alone: the Shamir mode;
 * with components/root-key-secret: mode 1): no literal secret, the root key never in an
 * environment variable, the TDX runtime class and digests in the production (tdx) overlay, a
 * hardened securityContext on every pod, and what Knative itself accepts (its field masks,
 * reserved names and ports).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { INTEL_PCS_URL } from '../../sealer/attestation/tdx/pccs.js';
import { skipWithout } from '../support/tools.js';
import {
  KNATIVE,
  KUBECTL,
  OVERLAYS,
  containersOf,
  id,
  loadResources,
  loadYaml,
  parseImage,
  podSpecsOf,
  readKustomization,
  rel,
  render,
  renderComposed,
  ROOT_KEY_COMPONENT,
  type Json,
  type Resource,
} from './support.js';

const BASE = join(KNATIVE, 'base');
/** Rendering is the real kustomize (kubectl): outside CI, these checks skip where it is missing. */
const RENDER = !skipWithout(KUBECTL);
const renders = describe.skipIf(!RENDER);
/** The base with both function layouts, before any component. */
const base = RENDER ? [BASE, join(KNATIVE, 'functions', 'per-function'), join(KNATIVE, 'functions', 'single-service')].flatMap(render) : [];
/** Mode 1: an overlay with components/root-key-secret, as install.sh composes it for a root key. */
const withRootKey = (o: (typeof OVERLAYS)[number]) =>
  RENDER ? renderComposed([BASE, join(KNATIVE, 'functions', 'per-function')], [join(KNATIVE, 'components', o), ROOT_KEY_COMPONENT]) : [];
const rendered = {
  base,
  ...Object.fromEntries(OVERLAYS.map((o) => [o, RENDER ? render(join(KNATIVE, 'overlays', o)) : []])),
  'dev+root-key': withRootKey('dev'),
  'tdx+root-key': withRootKey('tdx'),
} as Record<'base' | (typeof OVERLAYS)[number] | 'dev+root-key' | 'tdx+root-key', Resource[]>;
const PRODUCTION = ['base', 'tdx', 'tdx+root-key'] as const;
const ALL = ['base', ...OVERLAYS, 'dev+root-key', 'tdx+root-key'] as const;
const PLACEHOLDER_DIGEST = `sha256:${'0'.repeat(64)}`;
/** The dev component's fixed identity: what its functions' sample evidence claims (it proves nothing). */
const DEV_IDENTITY = createHash('sha384').update('tee-kms/development/functions').digest('hex');
const DEV_SEALER_IDENTITY = createHash('sha384').update('tee-kms/development/sealer').digest('hex');
const DEV_ADMIN_POLICY_DIR = '/var/run/tee-kms/admin-policy';

const ksvcs = (resources: readonly Resource[]) => resources.filter((r) => r.apiVersion === 'serving.knative.dev/v1' && r.kind === 'Service');
const env = (c: Json, name: string) => (c.env ?? []).find((e: Json) => e.name === name);
const sealerOf = (resources: readonly Resource[]) => resources.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
/** The sealer's TDX verifier settings (sealer/options.ts). */
const TDX_SEALER_ENV = ['KMS_SEALER_TDX_POLICY_FILE', 'KMS_SEALER_TDX_COLLATERAL_FILE', 'KMS_SEALER_PCCS_URL', 'KMS_SEALER_TDX_ROOT_CA_FILE'];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

/** Names that carry credentials: their values must come from a Secret (or a file mounted from one). */
const SECRET_NAME = /(_KEY|_KEY_ID|TOKEN|SECRET|PASSWORD|PASSWD|ROOT_USER|CREDENTIALS?)$|TOKEN|SECRET|PASSWORD/i;
const isSecretName = (name: string) => SECRET_NAME.test(name) && !name.endsWith('_FILE');

renders('no literal secrets', () => {
  it('no Secret object, private key or certificate is kept anywhere under knative/', () => {
    for (const file of files(KNATIVE)) {
      const text = readFileSync(file, 'utf8');
      expect(text, rel(file)).not.toMatch(/-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----/);
      if (/\.ya?ml$/.test(file)) {
        for (const doc of loadYaml(file)) expect(doc?.kind, `${rel(file)}: Secrets are created by install.sh, never kept here`).not.toBe('Secret');
      }
    }
  });

  for (const variant of ALL) {
    it(`${variant}: credential-named env vars come from secretKeyRef, *_FILE from mounted files; no credential in ConfigMaps`, () => {
      const problems: string[] = [];
      for (const r of rendered[variant]) {
        if (r.kind === 'ConfigMap') {
          for (const key of Object.keys(r.data ?? {})) if (isSecretName(key)) problems.push(`${id(r)}: data.${key}`);
        }
        for (const { container, path } of containersOf(r)) {
          for (const e of container.env ?? []) {
            const where = `${id(r)}${path}: ${e.name}`;
            if (e.name.endsWith('_FILE')) {
              if (typeof e.value !== 'string' || !e.value.startsWith('/')) problems.push(`${where} must be an absolute path`);
            } else if (isSecretName(e.name)) {
              if (e.value !== undefined) problems.push(`${where} has a literal value`);
              if (e.valueFrom?.secretKeyRef === undefined) problems.push(`${where} must come from a secretKeyRef`);
            }
          }
          for (const from of container.envFrom ?? [])
            if (from.configMapRef === undefined && from.secretRef === undefined) problems.push(`${id(r)}: envFrom ${JSON.stringify(from)}`);
        }
      }
      expect(problems).toEqual([]);
    });
  }

  it('the overlay patches put no credential in the clear', () => {
    for (const overlay of [...OVERLAYS, 'root-key-secret']) {
      for (const entry of readKustomization(join(KNATIVE, 'components', overlay)).patches) {
        const text = entry.path ? readFileSync(entry.path, 'utf8') : entry.patch!;
        for (const m of text.matchAll(/name:\s*(\S+)\s*\n\s*value:/g)) expect(isSecretName(m[1]!), `${overlay}: ${m[1]}`).toBe(false);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The root key reaches the sealer only as a mounted file (components/root-key-secret), never as an
// environment variable: not in the base, a component, a patch, a generated function, a ConfigMap
// that envFrom would turn into variables, nor the patches install.sh writes.

/** Names that tune how the root key is fetched, and carry no key. */
const NOT_THE_ROOT_KEY = new Set(['KMS_ROOT_KEY_REFRESH_SECONDS']);
/** ROOT_KEY, rootKey, root-key… in a variable's name, other than a *_FILE path. */
const carriesRootKey = (name: string) => {
  const squashed = name.toUpperCase().replace(/[^A-Z0-9]/g, '');
  return squashed.includes('ROOTKEY') && !squashed.endsWith('FILE') && !NOT_THE_ROOT_KEY.has(name);
};
const ROOT_KEY_SECRET = 'tee-kms-root-key';

/**
 * Every environment variable name a manifest (or a patch, or a kustomization) can set: env entries
 * ({name, value|valueFrom}, wherever they sit: containers, JSON-patch values, strategic merge
 * patches, inline patch strings), JSON-patch ops that set an env entry's name, ConfigMap data keys
 * and generator literals (envFrom makes them variables). Also every secretKeyRef / secretRef to the
 * root key Secret, which may only be a volume's secretName.
 */
function envSettings(node: Json, where: string, out: { names: { name: string; where: string }[]; secretRefs: string[] }) {
  if (node === null || typeof node !== 'object') return out;
  if (Array.isArray(node)) {
    node.forEach((n, i) => envSettings(n, `${where}/${i}`, out));
    return out;
  }
  if (typeof node.name === 'string' && ('value' in node || 'valueFrom' in node)) out.names.push({ name: node.name, where });
  if (typeof node.op === 'string' && typeof node.path === 'string' && /\/env\/[^/]+\/name$/.test(node.path) && typeof node.value === 'string')
    out.names.push({ name: node.value, where });
  if (node.kind === 'ConfigMap') for (const key of Object.keys(node.data ?? {})) out.names.push({ name: key, where: `${where}/data` });
  for (const generator of [...(node.configMapGenerator ?? []), ...(node.secretGenerator ?? [])])
    for (const literal of generator.literals ?? []) out.names.push({ name: String(literal).split('=')[0]!, where: `${where}/generator` });
  for (const [key, value] of Object.entries(node)) {
    if ((key === 'secretKeyRef' || key === 'secretRef') && (value as Json)?.name === ROOT_KEY_SECRET) out.secretRefs.push(`${where}/${key}`);
    // kustomize's inline patches are YAML in a string.
    if (key === 'patch' && typeof value === 'string') parseAllDocuments(value).forEach((doc, i) => envSettings(doc.toJS(), `${where}/patch[${i}]`, out));
    else envSettings(value, `${where}/${key}`, out);
  }
  return out;
}
const rootKeyProblems = (settings: ReturnType<typeof envSettings>) => [
  ...settings.names.filter(({ name }) => carriesRootKey(name)).map(({ name, where }) => `${where}: ${name}`),
  ...settings.secretRefs.map((where) => `${where}: ${ROOT_KEY_SECRET} outside a volume`),
];
const noSettings = () => ({ names: [] as { name: string; where: string }[], secretRefs: [] as string[] });

describe('the root key is never an environment variable', () => {
  it('the guard finds variables in every shape a manifest sets them, and flags a root key in each', () => {
    const settings = envSettings(
      [
        { spec: { containers: [{ env: [{ name: 'KMS_SEALER_ROOT_KEY', valueFrom: { secretKeyRef: { name: ROOT_KEY_SECRET, key: 'rootKey' } } }] }] } },
        { op: 'add', path: '/spec/template/spec/containers/0/env/-', value: { name: 'KMS_ROOT_KEY', value: 'x' } },
        { op: 'replace', path: '/spec/template/spec/containers/0/env/3/name', value: 'rootKey' },
        { kind: 'ConfigMap', data: { KMS_SEALER_ROOT_KEY: 'x', KMS_ROOT_KEY_REFRESH_SECONDS: '30' } },
        { patches: [{ patch: 'env:\n  - name: BIGDL_ROOT_KEY\n    value: x\n' }] },
        { envFrom: [{ secretRef: { name: ROOT_KEY_SECRET } }] },
        { env: [{ name: 'KMS_SEALER_ROOT_KEY_FILE', value: '/var/run/secrets/tee-kms/root-key/rootKey' }] },
        { volumes: [{ name: 'root-key', secret: { secretName: ROOT_KEY_SECRET } }] },
      ],
      'sample',
      noSettings(),
    );
    expect(rootKeyProblems(settings)).toEqual([
      'sample/0/spec/containers/0/env/0: KMS_SEALER_ROOT_KEY',
      'sample/1/value: KMS_ROOT_KEY',
      'sample/2: rootKey',
      'sample/3/data: KMS_SEALER_ROOT_KEY',
      'sample/4/patches/0/patch[0]/env/0: BIGDL_ROOT_KEY',
      'sample/0/spec/containers/0/env/0/valueFrom/secretKeyRef: tee-kms-root-key outside a volume',
      'sample/5/envFrom/0/secretRef: tee-kms-root-key outside a volume',
    ]);
  });

  it('no manifest, patch or kustomization anywhere under knative/ sets a variable named like the root key (other than *_FILE)', () => {
    const settings = noSettings();
    for (const file of files(KNATIVE).filter((f) => /\.ya?ml$/.test(f))) loadYaml(file).forEach((doc, i) => envSettings(doc, `${rel(file)}[${i}]`, settings));
    // Not vacuous: it sees the variables of the base, the components and the generated functions.
    const seen = new Set(settings.names.map(({ name }) => name));
    for (const name of ['NODE_ENV', 'FUNCTION_TARGET', 'KMS_SEALER_INSECURE_DEV_MODE', 'KMS_SEALER_PCCS_URL', 'KMS_ROOT_KEY_REFRESH_SECONDS'])
      expect(seen, name).toContain(name);
    expect(seen).toContain('KMS_SEALER_ROOT_KEY_FILE'); // mode 1: the file's path only
    expect(rootKeyProblems(settings)).toEqual([]);
  });

  it('nor do the patches install.sh writes into its kustomization', () => {
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    const names = [...install.matchAll(/- name: ([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!);
    expect(names).toContain('KMS_S3_NONCURRENT_VERSION_DAYS');
    expect(names.filter(carriesRootKey)).toEqual([]);
    expect(install).not.toMatch(/secretKeyRef|secretRef/);
  });

  for (const variant of ALL) {
    it.skipIf(!RENDER)(`${variant}: no rendered container gets a root key variable; the Secret is only ever a volume`, () => {
      const settings = noSettings();
      for (const r of rendered[variant]) envSettings(r, id(r), settings);
      expect(settings.names.length).toBeGreaterThan(50);
      expect(rootKeyProblems(settings)).toEqual([]);
    });
  }
});

renders('production (tdx) overlay', () => {
  const tdx = rendered.tdx;
  const features = loadResources(join(KNATIVE, 'components', 'tdx', 'knative-serving', 'config-features.yaml'))[0]!;

  it('every function and the sealer run in a TD: runtimeClassName kata-qemu-tdx (with the Knative feature flag)', () => {
    const tdPods = [...ksvcs(tdx), tdx.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!];
    expect(tdPods.length).toBeGreaterThan(5);
    for (const r of tdPods) expect(r.spec.template.spec.runtimeClassName, id(r)).toBe('kata-qemu-tdx');
    expect(features.data['kubernetes.podspec-runtimeclassname']).toBe('enabled');
  });

  it('every image is pinned by digest; only the tee-kms image keeps the placeholder install.sh replaces', () => {
    const images = tdx.flatMap((r) => containersOf(r).map(({ container }) => ({ r, image: container.image as string })));
    expect(images.length).toBeGreaterThan(10);
    for (const { r, image } of images) {
      expect(image, id(r)).toMatch(/@sha256:[0-9a-f]{64}$/);
      if (image.endsWith(PLACEHOLDER_DIGEST)) expect(parseImage(image).name, `${id(r)}: placeholder digest`).toBe('tee-kms');
    }
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    expect(install).toContain(PLACEHOLDER_DIGEST.slice('sha256:'.length)); // install.sh refuses the placeholder
  });

  it('functions and the sealer attest with the CoCo attestation agent, whose REST API their TDs expose (MinIO gets none)', () => {
    const config = tdx.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
    expect(config.data.KMS_ATTESTER).toBe('tdx-aa');
    const sealer = sealerOf(tdx);
    for (const s of [...ksvcs(tdx), sealer]) {
      expect(s.spec.template.metadata.annotations['io.katacontainers.config.hypervisor.kernel_params'], id(s)).toBe('agent.guest_components_rest_api=all');
    }
    expect(env(sealer.spec.template.spec.containers[0], 'KMS_SEALER_ATTESTER')).toEqual({ name: 'KMS_SEALER_ATTESTER', value: 'tdx-aa' });
    for (const r of tdx.filter((x) => (x.kind === 'StatefulSet' && x !== sealer) || x.kind === 'Job'))
      expect(r.spec.template.metadata?.annotations?.['io.katacontainers.config.hypervisor.kernel_params'], id(r)).toBeUndefined();
  });

  it("the sealer's admin and TDX policies are in its measured init-data, mounted from tee-kms-init-data: no policy file, no ConfigMap of their own", () => {
    const pod = sealerOf(tdx).spec.template.spec;
    const container = pod.containers[0];
    for (const name of ['KMS_SEALER_ADMIN_POLICY_FILE', 'KMS_SEALER_TDX_POLICY_FILE']) expect(env(container, name), name).toBeUndefined();
    expect(container.volumeMounts).toContainEqual({ name: 'init-data', mountPath: '/var/run/tee-kms/init-data', readOnly: true });
    const volume = (pod.volumes as Json[]).find((v) => v.name === 'init-data');
    expect(volume).toEqual({ name: 'init-data', configMap: { name: 'tee-kms-init-data' } }); // not optional
    expect(JSON.stringify(tdx)).not.toMatch(/tee-kms-(tdx|admin)-policy/);
    // install.sh appends both to the sealer's init-data and names its file; it makes neither ConfigMap.
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    expect(install).not.toMatch(/kubectl create configmap tee-kms-(tdx|admin)-policy/);
    expect(install).toContain('"$TDX_POLICY_FILE" "$ADMIN_POLICY_FILE"');
    expect(install).toContain('env_name=KMS_SEALER_INIT_DATA_FILE');
  });

  it("every function attests the sealer against the policy its own init-data carries (no ConfigMap), collateral from the sealer's PCCS", () => {
    const config = tdx.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
    const sealerPccs = env(sealerOf(tdx).spec.template.spec.containers[0], 'KMS_SEALER_PCCS_URL').value;
    expect(config.data.KMS_TRUSTED_SEALER_PCCS_URL).toBe(sealerPccs);
    expect(config.data.KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE).toBeUndefined(); // exactly one source
    // The values the functions' agent policy pins (their own quote from the agent in their TD).
    expect(config.data.KMS_ATTESTER).toBe('tdx-aa');
    expect(config.data.KMS_AA_URL).toBe('http://127.0.0.1:8006');
    expect(ksvcs(tdx).length).toBeGreaterThan(5);
    for (const s of ksvcs(tdx)) {
      const pod = s.spec.template.spec;
      expect(pod.containers[0].envFrom).toContainEqual({ configMapRef: { name: 'tee-kms-config' } });
      // No policy file: install.sh appends --sealer-tdx-policy to the init-data the pod mounts.
      expect(env(pod.containers[0], 'KMS_TRUSTED_SEALER_TDX_POLICY_FILE'), id(s)).toBeUndefined();
      expect(JSON.stringify(pod.volumes), id(s)).not.toContain('tee-kms-sealer-tdx-policy');
      expect(pod.volumes, id(s)).toContainEqual({ name: 'init-data', configMap: { name: 'tee-kms-init-data' } });
      expect(env(pod.containers[0], 'KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE'), id(s)).toBeUndefined(); // refused in production
      expect(env(pod.containers[0], 'KMS_SAMPLE_INIT_DATA'), id(s)).toBeUndefined();
    }
    expect(config.data.KMS_SAMPLE_INIT_DATA).toBeUndefined();
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    expect(install).not.toMatch(/kubectl create configmap tee-kms-sealer-tdx-policy/);
    expect(install).toContain('append_json_entries sealer-tdx-policy.json "$(<"$SEALER_TDX_POLICY_FILE")"');
    // The functions' PCCS variables in tee-kms-config are those their init-data lists (pccs_env).
    expect(install).toContain('render_placeholders "$1" | fill_lists "$1" pccs_env "$FUNCTION_PCCS_ENV_JSON"');
    expect(install).toMatch(/console\.log\(` {8}\$\{name\}: \$\{JSON\.stringify\(value\)\}`\);\n {4}' "\$FUNCTION_PCCS_ENV_JSON"/);
  });

  describe('the sealer verifies TDX evidence (without a policy it would refuse every TD)', () => {
    const sealer = sealerOf(tdx);
    const pod = sealer.spec.template.spec;
    const container = pod.containers[0];

    it("its TDX reference values come only from its init-data: no KMS_SEALER_TDX_POLICY_FILE, and no function mounts the sealer's policies", () => {
      expect(env(container, 'KMS_SEALER_TDX_POLICY_FILE')).toBeUndefined();
      for (const r of tdx.filter((x) => x !== sealer)) expect(JSON.stringify(r), id(r)).not.toMatch(/tee-kms-(tdx|admin)-policy/);
    });

    it('exactly one DCAP collateral source: KMS_SEALER_PCCS_URL (Intel PCS base URL by default), no collateral file, and the pinned Intel root', () => {
      const sources = ['KMS_SEALER_PCCS_URL', 'KMS_SEALER_TDX_COLLATERAL_FILE'].filter((name) => env(container, name) !== undefined);
      expect(sources).toEqual(['KMS_SEALER_PCCS_URL']);
      const pccs = env(container, 'KMS_SEALER_PCCS_URL');
      expect(pccs.valueFrom).toBeUndefined();
      expect(pccs.value).toBe(INTEL_PCS_URL);
      // The base URL: the sealer appends /sgx|tdx/certification/v4/... itself.
      expect(pccs.value).not.toMatch(/certification|\/$/);
      expect(env(container, 'KMS_SEALER_TDX_ROOT_CA_FILE')).toBeUndefined(); // refused under NODE_ENV=production
      for (const name of TDX_SEALER_ENV) expect((container.env as Json[]).filter((e) => e.name === name).length, name).toBeLessThanOrEqual(1);
    });

    it('install.sh sets the same default collateral source', () => {
      const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
      expect(install).toContain(`INTEL_PCS_URL=${INTEL_PCS_URL}\n`);
    });
  });

  it('NODE_ENV=production everywhere, and no insecure development switch', () => {
    for (const variant of PRODUCTION) {
      for (const r of rendered[variant]) {
        for (const { container } of containersOf(r)) {
          if (!container.image.startsWith('tee-kms')) continue;
          expect(env(container, 'NODE_ENV')?.value, `${variant} ${id(r)}`).toBe('production');
          expect(env(container, 'KMS_SEALER_INSECURE_DEV_MODE'), `${variant} ${id(r)}`).toBeUndefined();
        }
      }
      const config = rendered[variant].find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
      expect(config.data.KMS_ATTESTER ?? '', variant).not.toBe('sample');
    }
  });
});

renders('dev overlay', () => {
  it('no runtime class; development mode only together with the sample attester', () => {
    const dev = rendered.dev;
    for (const r of dev) for (const { spec } of podSpecsOf(r)) expect(spec.runtimeClassName, id(r)).toBeUndefined();
    const config = dev.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
    expect(config.data.KMS_ATTESTER).toBe('sample');
    for (const s of ksvcs(dev)) expect(env(s.spec.template.spec.containers[0], 'NODE_ENV').value).toBe('development');
    const sealer = dev.find((r) => r.kind === 'StatefulSet' && r.metadata.name === 'tee-kms-sealer')!;
    expect(env(sealer.spec.template.spec.containers[0], 'KMS_SEALER_INSECURE_DEV_MODE').value).toBe('true');
  });

  it('the dev sealer is the base sealer in insecure development mode, and nothing else: no TDX verifier, policy or collateral', () => {
    const dev = sealerOf(rendered.dev);
    const container = dev.spec.template.spec.containers[0];
    for (const name of TDX_SEALER_ENV) expect(env(container, name), name).toBeUndefined();
    expect(JSON.stringify(dev)).not.toContain('tdx-policy');
    const expected = structuredClone(sealerOf(base)) as Json;
    const baseContainer = expected.spec.template.spec.containers[0];
    env(baseContainer, 'NODE_ENV').value = 'development';
    // Named under kind.local/: Knative does not resolve its tag to a digest (no registry needed).
    baseContainer.image = 'kind.local/tee-kms:dev';
    baseContainer.env.push({ name: 'KMS_SEALER_INSECURE_DEV_MODE', value: 'true' });
    // ...and the development admin policy (components/dev/admin-policy.yaml).
    baseContainer.env.push({ name: 'KMS_SEALER_ADMIN_POLICY_FILE', value: `${DEV_ADMIN_POLICY_DIR}/admin-policy.json` });
    baseContainer.volumeMounts.push({ name: 'admin-policy', mountPath: DEV_ADMIN_POLICY_DIR, readOnly: true });
    expected.spec.template.spec.volumes.push({
      name: 'admin-policy',
      configMap: { name: 'tee-kms-admin-policy', items: [{ key: 'admin-policy.json', path: 'admin-policy.json' }] },
    });
    // ...the identity its replicas claim to each other, and a preference for distinct nodes (kind has one).
    baseContainer.env.push({ name: 'KMS_SEALER_SAMPLE_INIT_DATA', value: DEV_SEALER_IDENTITY });
    const required = expected.spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution;
    expected.spec.template.spec.affinity = {
      podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: required[0] }] },
    };
    expect(dev).toEqual(expected);
  });

  it('the sealer grants every admin operation to one development identity, which every function claims with sample evidence', () => {
    const dev = rendered.dev;
    const policy = dev.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-admin-policy')!;
    expect(policy.metadata.labels?.['app.kubernetes.io/part-of']).toBe('tee-kms');
    expect(JSON.parse(policy.data['admin-policy.json'])).toEqual({
      rotate: [DEV_IDENTITY],
      verify: [DEV_IDENTITY],
      recover: [DEV_IDENTITY],
      seal: [DEV_IDENTITY],
      // The replicas' own identity, and only for that role: the root key itself.
      'sealer-peer': [DEV_SEALER_IDENTITY],
    });
    const sealer = sealerOf(dev).spec.template.spec;
    expect(env(sealer.containers[0], 'KMS_SEALER_SAMPLE_INIT_DATA').value).toBe(DEV_SEALER_IDENTITY);
    expect(env(sealer.containers[0], 'KMS_SEALER_ADMIN_POLICY_FILE').value).toBe(`${DEV_ADMIN_POLICY_DIR}/admin-policy.json`);
    expect((sealer.volumes as Json[]).find((v) => v.name === 'admin-policy').configMap.name).toBe('tee-kms-admin-policy');
    const config = dev.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!;
    expect(config.data.KMS_SAMPLE_INIT_DATA).toBe(DEV_IDENTITY);
    // Every function reads tee-kms-config (envFrom) and sets no other identity of its own.
    expect(ksvcs(dev).length).toBeGreaterThan(5);
    for (const s of ksvcs(dev)) {
      const container = s.spec.template.spec.containers[0];
      expect(container.envFrom, id(s)).toContainEqual({ configMapRef: { name: 'tee-kms-config' } });
      expect(env(container, 'KMS_SAMPLE_INIT_DATA'), id(s)).toBeUndefined();
    }
    // The single-service layout too, as install.sh --single-service composes it.
    const single = renderComposed([BASE, join(KNATIVE, 'functions', 'single-service')], [join(KNATIVE, 'components', 'dev')]);
    expect(single.find((r) => r.kind === 'ConfigMap' && r.metadata.name === 'tee-kms-config')!.data.KMS_SAMPLE_INIT_DATA).toBe(DEV_IDENTITY);
    expect(ksvcs(single)[0]!.spec.template.spec.containers[0].envFrom).toContainEqual({ configMapRef: { name: 'tee-kms-config' } });
  });
});

renders('hardened pods everywhere', () => {
  for (const variant of ALL) {
    it(`${variant}: non-root, no privilege escalation, read-only root, no capabilities, RuntimeDefault seccomp, no service account token`, () => {
      const problems: string[] = [];
      let pods = 0;
      for (const r of rendered[variant]) {
        for (const { spec, path } of podSpecsOf(r)) {
          pods++;
          const where = `${id(r)}${path}`;
          const pod = spec.securityContext ?? {};
          if (spec.automountServiceAccountToken !== false) problems.push(`${where}: automountServiceAccountToken must be false`);
          for (const host of ['hostNetwork', 'hostPID', 'hostIPC']) if (spec[host]) problems.push(`${where}: ${host}`);
          for (const v of spec.volumes ?? []) if (v.hostPath !== undefined) problems.push(`${where}: hostPath volume ${v.name}`);
          for (const c of spec.containers) {
            const sc = c.securityContext ?? {};
            const eff = (key: string) => sc[key] ?? pod[key];
            const cw = `${where}/${c.name}`;
            if (eff('runAsNonRoot') !== true) problems.push(`${cw}: runAsNonRoot`);
            if (eff('runAsUser') === undefined || eff('runAsUser') === 0) problems.push(`${cw}: runAsUser must be a non-zero uid`);
            if (sc.allowPrivilegeEscalation !== false) problems.push(`${cw}: allowPrivilegeEscalation`);
            if (sc.readOnlyRootFilesystem !== true) problems.push(`${cw}: readOnlyRootFilesystem`);
            if (sc.privileged === true) problems.push(`${cw}: privileged`);
            if (!(sc.capabilities?.drop ?? []).includes('ALL')) problems.push(`${cw}: capabilities.drop ALL`);
            if ((sc.capabilities?.add ?? []).length > 0) problems.push(`${cw}: capabilities.add`);
            if ((sc.seccompProfile ?? pod.seccompProfile)?.type !== 'RuntimeDefault') problems.push(`${cw}: seccompProfile RuntimeDefault`);
            for (const kind of ['requests', 'limits'])
              for (const res of ['cpu', 'memory']) if (c.resources?.[kind]?.[res] === undefined) problems.push(`${cw}: resources.${kind}.${res}`);
            if (c.readinessProbe === undefined && r.kind !== 'Job') problems.push(`${cw}: readinessProbe`);
          }
        }
      }
      expect(pods).toBeGreaterThanOrEqual(12);
      expect(problems).toEqual([]);
    });
  }
});

renders('what Knative accepts (serving field masks, reserved names, autoscaling)', () => {
  // knative.dev/serving pkg/apis/serving/fieldmask.go and k8s_validation.go.
  const POD_FIELDS = ['serviceAccountName', 'containers', 'volumes', 'imagePullSecrets', 'enableServiceLinks', 'automountServiceAccountToken'];
  const REVISION_FIELDS = ['containerConcurrency', 'timeoutSeconds', 'responseStartTimeoutSeconds', 'idleTimeoutSeconds'];
  const CONTAINER_FIELDS = [
    'name',
    'args',
    'command',
    'env',
    'workingDir',
    'envFrom',
    'image',
    'imagePullPolicy',
    'livenessProbe',
    'ports',
    'readinessProbe',
    'resources',
    'securityContext',
    'startupProbe',
    'terminationMessagePath',
    'terminationMessagePolicy',
    'volumeMounts',
  ];
  const SECURITY_FIELDS = [
    'capabilities',
    'readOnlyRootFilesystem',
    'runAsUser',
    'runAsGroup',
    'runAsNonRoot',
    'allowPrivilegeEscalation',
    'seccompProfile',
    'privileged',
  ];
  const VOLUME_SOURCES = ['secret', 'configMap', 'projected', 'emptyDir']; // emptyDir: on by default
  const RESERVED_ENV = ['PORT', 'K_SERVICE', 'K_CONFIGURATION', 'K_REVISION'];
  const RESERVED_PORTS = [8012, 8013, 8022, 9090, 9091, 8008];

  for (const variant of ALL) {
    it(`${variant}: every Knative Service uses only fields Knative allows${variant.startsWith('tdx') ? ' (runtimeClassName behind its flag)' : ''}`, () => {
      const allowed = [...POD_FIELDS, ...REVISION_FIELDS, ...(variant.startsWith('tdx') ? ['runtimeClassName'] : [])];
      for (const s of ksvcs(rendered[variant])) {
        const spec = s.spec.template.spec;
        expect(
          Object.keys(spec).filter((k) => !allowed.includes(k)),
          id(s),
        ).toEqual([]);
        expect(spec.automountServiceAccountToken, id(s)).toBe(false); // Knative accepts only false
        for (const v of spec.volumes ?? [])
          expect(
            Object.keys(v).filter((k) => k !== 'name' && !VOLUME_SOURCES.includes(k)),
            `${id(s)} volume ${v.name}`,
          ).toEqual([]);
        expect(spec.containers, id(s)).toHaveLength(1);
        const c = spec.containers[0];
        expect(
          Object.keys(c).filter((k) => !CONTAINER_FIELDS.includes(k)),
          id(s),
        ).toEqual([]);
        expect(
          Object.keys(c.securityContext).filter((k) => !SECURITY_FIELDS.includes(k)),
          id(s),
        ).toEqual([]);
        expect(
          (c.env ?? []).map((e: Json) => e.name).filter((n: string) => RESERVED_ENV.includes(n)),
          id(s),
        ).toEqual([]);
        for (const p of c.ports ?? []) expect(RESERVED_PORTS, id(s)).not.toContain(p.containerPort);
        for (const probe of [c.readinessProbe, c.livenessProbe]) {
          const port = probe?.httpGet?.port ?? probe?.tcpSocket?.port;
          if (typeof port === 'string') expect(port, `${id(s)}: a named probe port must be the container port's name`).toBe(c.ports[0].name);
          else expect(port, id(s)).toBe(c.ports[0].containerPort);
        }
        for (const m of c.volumeMounts ?? []) expect(['/', '/dev', '/dev/log']).not.toContain(m.mountPath);
      }
    });
  }

  it('every Knative Service keeps a warm instance (min-scale >= 1), bounds its scale and its concurrency, probes readiness on /readyz and liveness on /healthz', () => {
    for (const s of ksvcs(base)) {
      const a = s.spec.template.metadata.annotations;
      const min = Number(a['autoscaling.knative.dev/min-scale']);
      const max = Number(a['autoscaling.knative.dev/max-scale']);
      expect(min, id(s)).toBeGreaterThanOrEqual(1);
      expect(max, id(s)).toBeGreaterThanOrEqual(min);
      expect(Number(a['autoscaling.knative.dev/initial-scale']), id(s)).toBeGreaterThanOrEqual(1);
      expect(a['autoscaling.knative.dev/target-burst-capacity'], id(s)).toBe('0');
      expect(s.spec.template.spec.containerConcurrency, id(s)).toBeGreaterThan(0);
      expect(s.spec.template.spec.timeoutSeconds, id(s)).toBeGreaterThan(0);
      expect(s.spec.template.spec.containers[0].readinessProbe.httpGet.path, id(s)).toBe('/readyz');
      expect(s.spec.template.spec.containers[0].livenessProbe.httpGet.path, id(s)).toBe('/healthz');
      // Knative's own annotations it validates, and Prometheus's pod discovery ones (passed to the pod).
      for (const key of Object.keys(a))
        expect(key, id(s)).toMatch(
          /^(autoscaling\.knative\.dev\/(min-scale|max-scale|initial-scale|scale-down-delay|target-burst-capacity)|prometheus\.io\/(scrape|port|path))$/,
        );
    }
  });
});
