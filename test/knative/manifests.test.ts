/**
 * knative/: every manifest parses and validates against the Kubernetes / Knative (and, when the
 * package is installed, Gateway API) schemas; every overlay patch validates and targets a base
 * resource; every function in the code has exactly one Knative Service and the single-host route.
 * No cluster needed. See support.ts for what the offline renderer models.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { routeModules } from '../../functions/catalog.js';
import { routes } from '../../functions/index.js';
import { generateManifests, serviceName, staleManifests } from '../../scripts/generate-manifests.js';
import { sealerOptions } from '../../sealer/options.js';
import { skipWithout } from '../support/tools.js';
import {
  KNATIVE,
  OPTIONAL_MODEL_PACKAGE,
  OVERLAYS,
  containersOf,
  hasModelPackage,
  id,
  knownFields,
  KUBECTL,
  loadResources,
  loadYaml,
  podSpecsOf,
  readKustomization,
  registeredFunctions,
  rel,
  render,
  renderComposed,
  ROOT_KEY_COMPONENT,
  ROOT_KEY_FILE,
  ROOT_KEY_MOUNT,
  validateResource,
  type Json,
  type Resource,
} from './support.js';
import {
  DIGEST_IMAGE,
  QUEUE_PROXY_IMAGE,
  SEALER_POD,
  deniedEntries,
  deployedInitData,
  functionPods,
  tdContainerEnv,
  type RootKeyMode,
} from './tdx-fixtures.js';

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry) ? [path] : [];
  });
}

const ALL_YAML = yamlFiles(KNATIVE).sort();
const isKustomization = (file: string) => basename(file) === 'kustomization.yaml';
const isPatchFile = (file: string) => basename(dirname(file)) === 'patches';
/** Merge patches for Knative's own ConfigMaps, applied by install.sh with kubectl patch. */
const isKnativeConfigPatch = (file: string) => basename(dirname(file)) === 'knative-serving';
/** knative/kind/: a kind cluster configuration for the quickstart, not a Kubernetes object. */
const isKindConfig = (file: string) => basename(dirname(file)) === 'kind';
const RESOURCE_FILES = ALL_YAML.filter((f) => !isKustomization(f) && !isPatchFile(f) && !isKindConfig(f));

const BASE = join(KNATIVE, 'base');
const PER_FUNCTION = join(KNATIVE, 'functions', 'per-function');
const SINGLE_SERVICE = join(KNATIVE, 'functions', 'single-service');
const SINGLE_HOST = join(BASE, 'routing', 'single-host');
/** Rendering is the real kustomize: outside CI, the tests that need it skip where kubectl is missing. */
const RENDER = !skipWithout(KUBECTL);
const renders = describe.skipIf(!RENDER);
/** The base with the default function layout, before any component: what the overlays start from. */
const base = RENDER ? [...render(BASE), ...render(PER_FUNCTION)] : [];
const rendered = Object.fromEntries(OVERLAYS.map((o) => [o, RENDER ? render(join(KNATIVE, 'overlays', o)) : []])) as Record<
  (typeof OVERLAYS)[number],
  Resource[]
>;
/** Mode 1: each overlay with components/root-key-secret added, as install.sh composes it for a root key. */
const mode1 = Object.fromEntries(
  OVERLAYS.map((o) => [o, RENDER ? renderComposed([BASE, PER_FUNCTION], [join(KNATIVE, 'components', o), ROOT_KEY_COMPONENT]) : []]),
) as Record<(typeof OVERLAYS)[number], Resource[]>;
const singleHost = readKustomization(SINGLE_HOST).resources.flatMap(loadResources);
const referenceGrant = loadResources(join(BASE, 'routing', 'kourier-system', 'reference-grant.yaml'))[0]!;

const ksvcs = (resources: readonly Resource[]) => resources.filter((r) => r.apiVersion === 'serving.knative.dev/v1' && r.kind === 'Service');
const find = (resources: readonly Resource[], kind: string, name: string) => resources.find((r) => r.kind === kind && r.metadata.name === name);
const envValue = (container: Json, name: string) => container.env?.find((e: Json) => e.name === name)?.value as string | undefined;
const targetOf = (ksvc: Resource) => envValue(ksvc.spec.template.spec.containers[0], 'FUNCTION_TARGET');
const gatewayModels = hasModelPackage(OPTIONAL_MODEL_PACKAGE);

describe('knative/ manifests parse and validate', () => {
  it('every YAML file parses (no duplicate keys, no aliases)', () => {
    expect(ALL_YAML.length).toBeGreaterThan(20);
    for (const file of ALL_YAML) expect(() => loadYaml(file), rel(file)).not.toThrow();
  });

  it('every Kubernetes and Knative object validates against its schema', async () => {
    let validated = 0;
    for (const file of RESOURCE_FILES) {
      for (const r of loadResources(file)) {
        if (r.apiVersion.startsWith('gateway.networking.k8s.io/')) continue; // next test
        await expect(validateResource(r), `${rel(file)}: ${id(r)}`).resolves.toBe(true);
        validated++;
      }
    }
    expect(validated).toBeGreaterThanOrEqual(19);
  });

  it.skipIf(!gatewayModels)(`Gateway API objects validate (needs the devDependency ${OPTIONAL_MODEL_PACKAGE})`, async () => {
    const gatewayObjects = RESOURCE_FILES.flatMap(loadResources).filter((r) => r.apiVersion.startsWith('gateway.networking.k8s.io/'));
    expect(gatewayObjects.map((r) => r.kind).sort()).toEqual(['Gateway', 'HTTPRoute', 'ReferenceGrant']);
    for (const r of gatewayObjects) await expect(validateResource(r), id(r)).resolves.toBe(true);
  });

  it('pod specs and containers use only fields Kubernetes knows (the schemas allow unknown ones)', () => {
    const known = {
      PodSpec: knownFields('PodSpec'),
      Container: knownFields('Container'),
      SecurityContext: knownFields('SecurityContext'),
      PodSecurityContext: knownFields('PodSecurityContext'),
      Probe: knownFields('Probe'),
      Volume: knownFields('Volume'),
      VolumeMount: knownFields('VolumeMount'),
      EnvVar: knownFields('EnvVar'),
      ResourceRequirements: knownFields('ResourceRequirements'),
    };
    // Knative's RevisionSpec inlines the PodSpec and adds these.
    const revisionFields = ['containerConcurrency', 'timeoutSeconds', 'responseStartTimeoutSeconds', 'idleTimeoutSeconds'];
    const unknown = (object: Json, fields: Set<string>, where: string, extra: string[] = []) =>
      Object.keys(object ?? {})
        .filter((key) => !fields.has(key) && !extra.includes(key))
        .map((key) => `${where}.${key}`);
    const problems: string[] = [];
    for (const r of [...base, ...rendered.dev, ...rendered.tdx, ...mode1.dev, ...mode1.tdx]) {
      for (const { path, spec } of podSpecsOf(r)) {
        const where = `${id(r)}${path}`;
        problems.push(...unknown(spec, known.PodSpec, where, r.apiVersion === 'serving.knative.dev/v1' ? revisionFields : []));
        problems.push(...unknown(spec.securityContext, known.PodSecurityContext, `${where}.securityContext`));
        for (const v of spec.volumes ?? []) problems.push(...unknown(v, known.Volume, `${where}.volumes.${v.name}`));
        for (const c of spec.containers) {
          const cw = `${where}.containers.${c.name}`;
          problems.push(...unknown(c, known.Container, cw));
          problems.push(...unknown(c.securityContext, known.SecurityContext, `${cw}.securityContext`));
          problems.push(...unknown(c.resources, known.ResourceRequirements, `${cw}.resources`));
          for (const p of ['readinessProbe', 'livenessProbe', 'startupProbe']) problems.push(...unknown(c[p], known.Probe, `${cw}.${p}`));
          for (const m of c.volumeMounts ?? []) problems.push(...unknown(m, known.VolumeMount, `${cw}.volumeMounts`));
          for (const e of c.env ?? []) problems.push(...unknown(e, known.EnvVar, `${cw}.env.${e.name}`));
        }
      }
    }
    expect(problems).toEqual([]);
  });
});

renders('kustomizations', () => {
  it('the base lists every manifest in knative/base except the optional routing ones', () => {
    const k = readKustomization(BASE);
    const listed = k.resources.map((r) => relative(BASE, r)).sort();
    const present = RESOURCE_FILES.filter((f) => f.startsWith(`${BASE}/`) && !f.startsWith(`${BASE}/routing/`))
      .map((f) => relative(BASE, f))
      .sort();
    expect(listed).toEqual(present);
  });

  it('the base renders to the functions, the sealer, MinIO, its bucket Job, config and policies', () => {
    const kinds = base.map((r) => `${r.apiVersion} ${r.kind}`);
    expect(new Set(kinds)).toEqual(
      new Set([
        'v1 ConfigMap',
        'serving.knative.dev/v1 Service',
        'v1 Service',
        'apps/v1 StatefulSet',
        'batch/v1 Job',
        'networking.k8s.io/v1 NetworkPolicy',
        'policy/v1 PodDisruptionBudget',
      ]),
    );
    for (const r of base) expect(r.metadata.namespace, id(r)).toBe('tee-kms');
  });

  it('every resource carries app.kubernetes.io/part-of=tee-kms (uninstall.sh selects on it)', () => {
    for (const r of [...base, ...singleHost, referenceGrant]) expect(r.metadata.labels?.['app.kubernetes.io/part-of'], id(r)).toBe('tee-kms');
    const statefulSet = find(base, 'StatefulSet', 'tee-kms-minio')!;
    for (const claim of statefulSet.spec.volumeClaimTemplates) expect(claim.metadata.labels['app.kubernetes.io/part-of']).toBe('tee-kms');
  });

  for (const overlay of OVERLAYS) {
    describe(`overlay ${overlay}`, () => {
      const dir = join(KNATIVE, 'overlays', overlay);
      const k = readKustomization(dir);
      const component = readKustomization(join(KNATIVE, 'components', overlay));

      it('is the base, the per-function layout and its component, and nothing else', () => {
        expect(k.resources).toEqual([BASE, PER_FUNCTION]);
        expect(k.components).toEqual([component.dir]);
        expect(k.patches).toEqual([]);
        expect(component.kind).toBe('Component');
        // Only dev brings an object of its own: its development admin policy (tdx's comes from install.sh).
        expect(component.resources).toEqual(overlay === 'dev' ? [join(component.dir, 'admin-policy.yaml')] : []);
      });

      it('every patch of its component targets resources of the base or a function layout', () => {
        expect(component.patches.length).toBeGreaterThan(0);
        for (const entry of component.patches) {
          const target = entry.target ?? loadYaml(entry.path!)[0];
          const selector = (target.labelSelector as string | undefined)?.split('=');
          const name = target.name ?? target.metadata?.name;
          const matches = base.filter(
            (r) =>
              r.kind === target.kind &&
              (name === undefined || r.metadata.name === name) &&
              (selector === undefined || r.metadata.labels?.[selector[0]!] === selector[1]),
          );
          expect(matches.length, `${rel(component.file)}: ${entry.path ? rel(entry.path) : '(inline)'} matches nothing`).toBeGreaterThan(0);
        }
      });

      it('every image entry names an image the base uses', () => {
        const images = new Set(base.flatMap((r) => containersOf(r).map(({ container }) => container.image.replace(/[:@].*$/, ''))));
        for (const image of component.images) expect(images, image.name).toContain(image.name);
      });

      renders('rendered by kubectl kustomize', () => {
        it('renders the same objects as the base, each validating', async () => {
          const resources = rendered[overlay];
          const own = overlay === 'dev' ? ['ConfigMap/tee-kms/tee-kms-admin-policy'] : [];
          expect(resources.map(id).sort()).toEqual([...base.map(id), ...own].sort());
          for (const r of resources) await expect(validateResource(r), id(r)).resolves.toBe(true);
        });

        it('with --single-service instead: one Knative Service, every route, the same component applied', async () => {
          const dirWith = mkdtempSync(join(tmpdir(), 'tee-kms-single-'));
          try {
            writeFileSync(
              join(dirWith, 'kustomization.yaml'),
              `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ${relative(dirWith, BASE)}\n  - ${relative(dirWith, SINGLE_SERVICE)}\ncomponents:\n  - ${relative(dirWith, component.dir)}\n`,
            );
            const resources = render(dirWith);
            const services = ksvcs(resources);
            expect(services.map((r) => r.metadata.name)).toEqual(['tee-kms']);
            const fromOverlay = ksvcs(rendered[overlay]).find((r) => r.metadata.name === 'welcome')!;
            // The component patched it like every function: same runtime class, annotations, attester mode.
            expect(services[0]!.spec.template.spec.runtimeClassName).toEqual(fromOverlay.spec.template.spec.runtimeClassName);
            expect(services[0]!.spec.template.spec.containers[0].env[0]).toEqual(fromOverlay.spec.template.spec.containers[0].env[0]);
            expect(services[0]!.spec.template.metadata.annotations).toEqual(fromOverlay.spec.template.metadata.annotations);
            for (const r of resources) await expect(validateResource(r), id(r)).resolves.toBe(true);
          } finally {
            rmSync(dirWith, { recursive: true, force: true });
          }
        });
      });
    });
  }

  it('the Knative config patches (applied by install.sh) are ConfigMaps in knative-serving with the flags tee-kms needs', async () => {
    const files = ALL_YAML.filter(isKnativeConfigPatch);
    const patches = Object.fromEntries(files.flatMap(loadResources).map((r) => [r.metadata.name, r]));
    for (const r of Object.values(patches)) {
      expect(r.kind).toBe('ConfigMap');
      expect(r.metadata.namespace).toBe('knative-serving');
      await expect(validateResource(r)).resolves.toBe(true);
    }
    expect(patches['config-features']?.data).toEqual({ 'kubernetes.podspec-runtimeclassname': 'enabled' });
    expect(patches['config-network']?.data).toEqual({ 'system-internal-tls': 'Enabled' });
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    for (const file of files) expect(install, rel(file)).toContain(`components/tdx/knative-serving/${basename(file)}`);
  });
});

renders('functions and Knative Services', () => {
  const registered = registeredFunctions();

  it('functions/index.ts routes and the functions-framework entry points in functions/*.ts agree', () => {
    expect(routes.length).toBeGreaterThan(0);
    expect([...registered.keys()].sort()).toEqual(routes.map((r) => r.name).sort());
  });

  it('functions/catalog.ts loads each function under its own name (FUNCTION_TARGET)', async () => {
    expect(Object.keys(routeModules)).toEqual(routes.map((r) => r.name));
    for (const [name, load] of Object.entries(routeModules)) expect((await load()).name).toBe(name);
  });

  it('every function has exactly one Knative Service, and every Service names an existing function', () => {
    const byTarget = new Map<string, string[]>();
    for (const s of ksvcs(base)) {
      const target = targetOf(s);
      expect(target, `${s.metadata.name}: FUNCTION_TARGET`).toBeTypeOf('string');
      expect(registered.has(target!), `${s.metadata.name}: FUNCTION_TARGET=${target} is not a function in functions/`).toBe(true);
      byTarget.set(target!, [...(byTarget.get(target!) ?? []), s.metadata.name]);
    }
    for (const route of routes) expect(byTarget.get(route.name), `Knative Services for ${route.name}`).toHaveLength(1);
    expect(ksvcs(base)).toHaveLength(routes.length);
  });

  it('each Knative Service is named after its module and labelled with its function', () => {
    for (const s of ksvcs(base)) {
      const target = targetOf(s)!;
      expect(`functions/${s.metadata.name}.ts`).toBe(registered.get(target));
      expect(s.metadata.labels?.['tee-kms/function']).toBe(target);
      expect(s.spec.template.metadata.labels['tee-kms/function']).toBe(target);
      expect(s.metadata.labels?.['app.kubernetes.io/component']).toBe('function');
    }
  });

  it('every function runs from the one image, with the image CMD (no command override)', () => {
    for (const s of ksvcs(base)) {
      const [container, ...others] = s.spec.template.spec.containers;
      expect(others).toEqual([]);
      expect(container.image).toBe('tee-kms');
      expect(container.command).toBeUndefined();
      expect(container.args).toBeUndefined();
      expect(container.ports).toEqual([{ name: 'http1', containerPort: 8080 }]);
      expect(envValue(container, 'KMS_TLS')).toBe('off');
      expect(envValue(container, 'KMS_BIND')).toBe('0.0.0.0');
    }
  });
});

renders('sealer, MinIO and their references', () => {
  it('the sealer: node dist/sealer/main.js, HTTPS with the internal CA, its Services (replicas: replicas.test.ts)', () => {
    const sealer = find(base, 'StatefulSet', 'tee-kms-sealer')!;
    const c = sealer.spec.template.spec.containers[0];
    expect(c.command).toEqual(['node', 'dist/sealer/main.js']);
    expect(c.image).toBe('tee-kms');
    expect(envValue(c, 'KMS_SEALER_HOST')).toBe('0.0.0.0');
    // No root key in the base: the Shamir mode, unless components/root-key-secret is added (mode 1).
    expect((c.env as Json[]).filter((e) => e.name.includes('ROOT_KEY'))).toEqual([]);
    const service = find(base, 'Service', 'tee-kms-sealer')!;
    expect(service.spec.type).toBe('ClusterIP');
    expect(service.spec.selector).toEqual(sealer.spec.selector.matchLabels);
    const peers = find(base, 'Service', sealer.spec.serviceName)!;
    expect(peers.spec.selector).toEqual(sealer.spec.selector.matchLabels);
    for (const s of [service, peers]) expect(envValue(c, 'KMS_SEALER_PORT')).toBe(String(s.spec.ports[0].port));
  });

  it('MinIO: a StatefulSet with a volume claim kept on delete, its Service, a bucket Job that turns versioning on', () => {
    const minio = find(base, 'StatefulSet', 'tee-kms-minio')!;
    expect(minio.spec.replicas).toBe(1);
    expect(minio.spec.volumeClaimTemplates).toHaveLength(1);
    expect(minio.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
    const service = find(base, 'Service', minio.spec.serviceName)!;
    expect(service.spec.selector).toEqual(minio.spec.selector.matchLabels);
    const config = find(base, 'ConfigMap', 'tee-kms-config')!;
    expect(config.data.KMS_STORE).toBe('s3');
    expect(config.data.KMS_S3_ENDPOINT).toBe(`https://${service.metadata.name}:${service.spec.ports[0].port}`);
    const job = find(base, 'Job', 'tee-kms-minio-bucket')!;
    const script = job.spec.template.spec.containers[0].args.join('\n');
    expect(script).toContain('mc version enable "kms/${KMS_S3_BUCKET}"');
    expect(script).toContain('mc mb --ignore-existing');
    expect(script).toContain('mc admin policy attach kms tee-kms-bucket');
  });

  describe("the bucket Job's script, run by /bin/sh with a recording `mc` on PATH (no MinIO here)", () => {
    const job = find(base, 'Job', 'tee-kms-minio-bucket')!;
    const container = job.spec.template.spec.containers[0];
    const script: string = container.args.join('\n');

    /** Runs the script; returns its exit status and each mc call (its arguments and what it read on stdin). */
    function runScript(days: string) {
      const dir = mkdtempSync(join(tmpdir(), 'tee-kms-bucket-job-'));
      try {
        const calls = join(dir, 'calls.jsonl');
        // Records the call; `mc ready` and every other command succeed, as on a healthy MinIO.
        writeFileSync(
          join(dir, 'mc'),
          `#!/usr/bin/env node\nconst fs = require('node:fs');\nconst stdin = process.stdin.isTTY ? '' : fs.readFileSync(0, 'utf8');\nfs.appendFileSync(${JSON.stringify(calls)}, JSON.stringify({ args: process.argv.slice(2), stdin }) + '\\n');\n`,
          { mode: 0o755 },
        );
        const result = spawnSync('/bin/sh', ['-ec', script], {
          env: {
            PATH: `${dir}:${process.env.PATH}`,
            KMS_S3_BUCKET: 'kms-keys',
            KMS_S3_NONCURRENT_VERSION_DAYS: days,
            MINIO_ROOT_USER: 'root',
            MINIO_ROOT_PASSWORD: 'pw',
            KMS_S3_ACCESS_KEY_ID: 'id',
            KMS_S3_SECRET_ACCESS_KEY: 'secret',
          },
          input: '',
          encoding: 'utf8',
          timeout: 30_000,
        });
        const recorded = existsSync(calls)
          ? readFileSync(calls, 'utf8')
              .trim()
              .split('\n')
              .map((l) => JSON.parse(l) as { args: string[]; stdin: string })
          : [];
        // The wrapper's --config-dir DIR --quiet come first.
        return { status: result.status, stderr: result.stderr, calls: recorded.map((c) => ({ args: c.args.slice(3), stdin: c.stdin })) };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }

    it('the default keeps noncurrent versions 7 days: imports one lifecycle rule that expires them, after versioning is on', () => {
      expect(envValue(container, 'KMS_S3_NONCURRENT_VERSION_DAYS')).toBe('7');
      const { status, stderr, calls } = runScript('7');
      expect(stderr).toBe('');
      expect(status).toBe(0);
      const commands = calls.map((c) => c.args.join(' '));
      const ilm = commands.indexOf('ilm rule import kms/kms-keys');
      expect(ilm).toBeGreaterThan(commands.indexOf('version enable kms/kms-keys'));
      expect(commands.indexOf('version enable kms/kms-keys')).toBeGreaterThan(-1);
      expect(JSON.parse(calls[ilm]!.stdin)).toEqual({
        Rules: [{ ID: 'tee-kms-expire-noncurrent-versions', Status: 'Enabled', Filter: { Prefix: '' }, NoncurrentVersionExpiration: { NoncurrentDays: 7 } }],
      });
      // Nothing else touches the lifecycle configuration, and no current version ever expires.
      expect(commands.filter((c) => c.startsWith('ilm ') && c !== 'ilm rule import kms/kms-keys' && c !== 'ilm rule ls kms/kms-keys')).toEqual([]);
    });

    it.each(['0', '', '-1', '7d', '1.5', '07'])('refuses KMS_S3_NONCURRENT_VERSION_DAYS=%j before changing the lifecycle', (days) => {
      const { status, stderr, calls } = runScript(days);
      expect(status).not.toBe(0);
      expect(stderr).toContain('KMS_S3_NONCURRENT_VERSION_DAYS must be a whole number of days >= 1');
      expect(calls.some((c) => c.args[0] === 'ilm')).toBe(false);
    });
  });

  it('NetworkPolicies admit to MinIO and the sealer exactly the pods that use them', () => {
    const policies = base.filter((r) => r.kind === 'NetworkPolicy');
    const podsOf = (selector: Record<string, string>) =>
      base
        .flatMap((r) => podSpecsOf(r).map((p) => ({ r, labels: (p.metadata?.labels ?? {}) as Record<string, string> })))
        .filter(({ labels }) => Object.entries(selector).every(([k, v]) => labels[k] === v));
    const guarded = { 'tee-kms-minio': 'StatefulSet', 'tee-kms-sealer': 'StatefulSet' } as const;
    for (const [name, kind] of Object.entries(guarded)) {
      const policy = policies.find((p) => p.metadata.name === name)!;
      expect(policy, name).toBeDefined();
      expect(podsOf(policy.spec.podSelector.matchLabels).map(({ r }) => id(r))).toEqual([id(find(base, kind, name)!)]);
      const admitted = podsOf(policy.spec.ingress[0].from[0].podSelector.matchLabels).map(({ r }) => r.metadata.name);
      expect(admitted.length, name).toBeGreaterThan(0);
      const port = policy.spec.ingress[0].ports[0].port;
      const workload = find(base, kind, name)!;
      expect(workload.spec.template.spec.containers[0].ports[0].containerPort).toBe(port);
      // Every pod configured to talk to it is admitted.
      const users = base.filter(
        (r) =>
          JSON.stringify(r).includes(`https://${name}:`) ||
          containersOf(r).some(({ container }) => (container.envFrom ?? []).some((e: Json) => e.configMapRef?.name === 'tee-kms-config')),
      );
      for (const u of users.filter((r) => r.kind !== 'ConfigMap' && id(r) !== id(workload)))
        expect(admitted, `${name} must admit ${u.metadata.name}`).toContain(u.metadata.name);
    }
  });

  it('every referenced ConfigMap and Secret (base and overlays) is in the base or a component, or documented as made by install.sh; mounts and *_FILE paths resolve', () => {
    const header = readFileSync(join(BASE, 'kustomization.yaml'), 'utf8');
    const documented = new Set([...header.matchAll(/^#\s+(tee-kms-[a-z0-9-]+)\s/gm)].map((m) => m[1]!));
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    for (const name of documented)
      expect(install, `install.sh creates ${name}`).toMatch(new RegExp(`(secret|configmap) (generic |tls )?${name}\\b|apply_(generic|tls)_secret ${name}\\b`));
    const inBase = new Set(base.map((r) => r.metadata.name));
    const refs: string[] = [];
    const collect = (node: Json) => {
      if (node === null || typeof node !== 'object') return;
      for (const [key, value] of Object.entries(node)) {
        if (['configMapRef', 'secretRef', 'configMapKeyRef', 'secretKeyRef', 'configMap'].includes(key) && typeof (value as Json)?.name === 'string')
          refs.push((value as Json).name);
        else if (key === 'secret' && typeof (value as Json)?.secretName === 'string') refs.push((value as Json).secretName);
        else if (key === 'secret' && typeof (value as Json)?.name === 'string') refs.push((value as Json).name);
        collect(value);
      }
    };
    const everything = [...base, ...rendered.dev, ...rendered.tdx, ...mode1.dev, ...mode1.tdx];
    everything.forEach(collect);
    expect(refs.length).toBeGreaterThan(10);
    expect(refs).toContain('tee-kms-init-data'); // each TD pod's init-data: the tdx sealer's carries its policies
    expect(refs).not.toContain('tee-kms-tdx-policy'); // measured now, in that init-data
    expect(refs).toContain('tee-kms-root-key'); // mode 1 only
    // What a component brings itself (the dev admin policy).
    const inComponents = new Set([...rendered.dev, ...rendered.tdx].map((r) => r.metadata.name).filter((name) => !inBase.has(name)));
    expect([...inComponents].filter((name) => refs.includes(name))).toEqual(['tee-kms-admin-policy']);
    for (const name of refs)
      expect(
        inBase.has(name) || inComponents.has(name) || documented.has(name),
        `${name} is neither in the base or a component nor created by install.sh`,
      ).toBe(true);

    for (const r of everything) {
      for (const { spec, path } of podSpecsOf(r)) {
        const claims = r.kind === 'StatefulSet' ? (r.spec.volumeClaimTemplates ?? []).map((t: Json) => t.metadata.name) : [];
        const volumes = new Set([...(spec.volumes ?? []).map((v: Json) => v.name), ...claims]);
        for (const c of spec.containers) {
          const mounts = (c.volumeMounts ?? []) as Json[];
          for (const m of mounts) expect(volumes.has(m.name), `${id(r)}${path}: mount ${m.name} has no volume`).toBe(true);
          for (const e of c.env ?? []) {
            if (!e.name.endsWith('_FILE') && e.name !== 'NODE_EXTRA_CA_CERTS') continue;
            expect(
              mounts.some((m) => e.value.startsWith(`${m.mountPath}/`)),
              `${id(r)}: ${e.name}=${e.value} is not under a mounted volume`,
            ).toBe(true);
          }
        }
      }
    }
  });
});

renders('the root key: in mode 1 only a mounted file (components/root-key-secret), in mode 2 absent', () => {
  const component = readKustomization(ROOT_KEY_COMPONENT);
  const SECRET = 'tee-kms-root-key';
  const sealerOf = (resources: readonly Resource[]) => find(resources, 'StatefulSet', 'tee-kms-sealer')!;
  const mentionsSecret = (r: Resource) => JSON.stringify(r).includes(SECRET);
  const layouts = { 'per-function': PER_FUNCTION, 'single-service': SINGLE_SERVICE } as const;
  /** An overlay with a function layout, as install.sh composes it; with the component: mode 1. */
  const compose = (overlay: (typeof OVERLAYS)[number], layout: keyof typeof layouts, withRootKey: boolean) =>
    renderComposed([BASE, layouts[layout]], [join(KNATIVE, 'components', overlay), ...(withRootKey ? [ROOT_KEY_COMPONENT] : [])]);

  it('the sealer reads its root key from KMS_SEALER_ROOT_KEY_FILE (a secret option: <ENV>_FILE)', () => {
    expect(sealerOptions.rootKey.env).toBe('KMS_SEALER_ROOT_KEY');
    expect(sealerOptions.rootKey.secret).toBe(true);
    expect(ROOT_KEY_FILE).toBe(`${ROOT_KEY_MOUNT}/rootKey`);
  });

  it('is a Component with one patch, for the base sealer only; install.sh adds it in mode 1', () => {
    expect(component.kind).toBe('Component');
    expect(component.resources).toEqual([]);
    expect(component.components).toEqual([]);
    expect(component.images).toEqual([]);
    expect(component.patches).toHaveLength(1);
    const target = component.patches[0]!.target;
    expect(target).toEqual({ group: 'apps', version: 'v1', kind: 'StatefulSet', name: 'tee-kms-sealer' });
    expect(base.filter((r) => r.kind === target.kind && r.metadata.name === target.name)).toHaveLength(1);
    const install = readFileSync(join(KNATIVE, 'install.sh'), 'utf8');
    expect(install).toContain('components/root-key-secret');
    expect(install).toContain(`if [[ $ROOT_KEY_MODE == secret ]]; then printf '  - %s\\n' "$ROOT_KEY_COMPONENT_REL"; fi`);
  });

  for (const overlay of OVERLAYS) {
    for (const layout of Object.keys(layouts) as (keyof typeof layouts)[]) {
      describe(`${overlay}, ${layout}`, () => {
        const mode2 = compose(overlay, layout, false);
        const withKey = compose(overlay, layout, true);

        it('mode 2 (no component): nothing refers to the root key Secret, no root key variable, mount or volume', () => {
          expect(mode2.filter(mentionsSecret).map(id)).toEqual([]);
          const pod = sealerOf(mode2).spec.template.spec;
          expect((pod.containers[0].env as Json[]).filter((e) => e.name.includes('ROOT_KEY'))).toEqual([]);
          expect((pod.volumes as Json[]).filter((v) => v.name === 'root-key')).toEqual([]);
          expect((pod.containers[0].volumeMounts as Json[]).filter((m) => m.mountPath === ROOT_KEY_MOUNT)).toEqual([]);
          expect(pod.securityContext.fsGroup).toBeUndefined();
        });

        it('mode 1: the file variable, a read-only mount of the Secret, a volume that is not optional, no root key variable', async () => {
          const sealer = sealerOf(withKey);
          const pod = sealer.spec.template.spec;
          const [container, ...others] = pod.containers;
          expect(others).toEqual([]);
          expect(container.name).toBe('sealer');
          const env = container.env as Json[];
          // The one root key variable is the file's path; no KMS_SEALER_ROOT_KEY, no secretKeyRef to the key.
          expect(env.filter((e) => e.name.includes('ROOT_KEY'))).toEqual([{ name: 'KMS_SEALER_ROOT_KEY_FILE', value: ROOT_KEY_FILE }]);
          expect(env.find((e) => e.name === 'KMS_SEALER_ROOT_KEY')).toBeUndefined();
          expect(JSON.stringify(env)).not.toContain(SECRET);
          expect(JSON.stringify(container.envFrom ?? [])).not.toContain(SECRET);
          expect(env[0].name).toBe('NODE_ENV'); // appended: the dev component's test op still holds
          expect((container.volumeMounts as Json[]).filter((m) => ROOT_KEY_FILE.startsWith(`${m.mountPath}/`))).toEqual([
            { name: 'root-key', mountPath: ROOT_KEY_MOUNT, readOnly: true },
          ]);
          expect((pod.volumes as Json[]).filter((v) => v.name === 'root-key' || v.secret?.secretName === SECRET)).toEqual([
            {
              name: 'root-key',
              // Not optional: a missing Secret (or key) stops the pod, never starts the Shamir mode.
              secret: { secretName: SECRET, optional: false, defaultMode: 0o400, items: [{ key: 'rootKey', path: 'rootKey' }] },
            },
          ]);
          // Secret files are root's: fsGroup gives them the sealer's group (0400 + group read), or it could not read its key.
          expect(pod.securityContext.fsGroup).toBe(1000);
          expect(container.securityContext.runAsGroup ?? pod.securityContext.runAsGroup).toBe(pod.securityContext.fsGroup);
          // Only the sealer refers to the Secret.
          expect(withKey.filter(mentionsSecret).map(id)).toEqual([id(sealer)]);
          for (const r of withKey) await expect(validateResource(r), id(r)).resolves.toBe(true);
        });

        it('mode 1 differs from mode 2 in exactly those fields of the sealer', () => {
          const stripped = structuredClone(withKey);
          const pod = sealerOf(stripped).spec.template.spec;
          const container = pod.containers[0];
          container.env = (container.env as Json[]).filter((e) => e.name !== 'KMS_SEALER_ROOT_KEY_FILE');
          container.volumeMounts = (container.volumeMounts as Json[]).filter((m) => m.name !== 'root-key');
          pod.volumes = (pod.volumes as Json[]).filter((v) => v.name !== 'root-key');
          delete pod.securityContext.fsGroup;
          expect(stripped).toEqual(mode2);
        });
      });
    }
  }

  it('the order of the components does not matter (but for the order of lists)', () => {
    const byName = (list: Json[]) => list.toSorted((a, b) => a.name.localeCompare(b.name));
    const sorted = (resources: Resource[]) => {
      const pod = sealerOf(resources).spec.template.spec;
      pod.volumes = byName(pod.volumes);
      pod.containers[0].env = byName(pod.containers[0].env);
      pod.containers[0].volumeMounts = byName(pod.containers[0].volumeMounts);
      return resources;
    };
    for (const overlay of OVERLAYS) {
      const first = renderComposed([BASE, PER_FUNCTION], [ROOT_KEY_COMPONENT, join(KNATIVE, 'components', overlay)]);
      expect(sorted(first), overlay).toEqual(sorted(mode1[overlay]));
    }
  });
});

renders('the tdx component: no TD container is given a variable its agent policy denies (env_denied_none)', () => {
  const layouts = { 'per-function': PER_FUNCTION, 'single-service': SINGLE_SERVICE } as const;
  for (const layout of Object.keys(layouts) as (keyof typeof layouts)[]) {
    for (const mode of ['shares', 'secret'] as RootKeyMode[]) {
      it(`${layout}, ${mode === 'secret' ? 'mode 1 (components/root-key-secret)' : 'the Shamir mode'}: the sealer and every function`, () => {
        const resources = renderComposed([BASE, layouts[layout]], [join(KNATIVE, 'components', 'tdx'), ...(mode === 'secret' ? [ROOT_KEY_COMPONENT] : [])]);
        const pods = resources.filter((r) => (r.kind === 'StatefulSet' && r.metadata.name === SEALER_POD) || r.apiVersion === 'serving.knative.dev/v1');
        expect(pods.map((r) => r.metadata.name).sort()).toEqual([...functionPods(layout), SEALER_POD].sort());
        for (const pod of pods) {
          const { container, env } = tdContainerEnv(pod, resources);
          const document = deployedInitData(pod.metadata.name, DIGEST_IMAGE, QUEUE_PROXY_IMAGE, mode);
          expect(deniedEntries(document, container, env), pod.metadata.name).toEqual([]);
        }
      });
    }
  }
});

renders('routing', () => {
  const route = singleHost.find((r) => r.kind === 'HTTPRoute')!;
  const gateway = singleHost.find((r) => r.kind === 'Gateway')!;
  const byName = new Map(ksvcs(base).map((s) => [s.metadata.name, s]));
  const clusterLocal = (s: Resource) => s.metadata.labels?.['networking.knative.dev/visibility'] === 'cluster-local';

  /** Gateway API path semantics: Exact, or PathPrefix by whole path elements. */
  const pathMatches = (match: Json, path: string) => {
    const value: string = match.path?.value ?? '/';
    if ((match.path?.type ?? 'PathPrefix') === 'Exact') return path === value;
    const prefix = value.replace(/\/+$/, '');
    return prefix === '' || path === prefix || path.startsWith(`${prefix}/`);
  };
  const samplePath = (p: string) => (p === '/' ? '/' : p.endsWith('/') ? `${p}name` : p);

  it('the single-host component is a Gateway and an HTTPRoute attached to it', () => {
    expect(readKustomization(SINGLE_HOST).kind).toBe('Component');
    expect(route.spec.parentRefs).toEqual([{ name: gateway.metadata.name, sectionName: 'https' }]);
    const listener = gateway.spec.listeners.find((l: Json) => l.name === 'https');
    expect(listener).toMatchObject({ protocol: 'HTTPS', port: 443, tls: { mode: 'Terminate' } });
    expect(route.spec.hostnames).toEqual([listener.hostname]);
    expect(gateway.spec.listeners).toHaveLength(1); // no plain-HTTP listener
  });

  it('every public function is reached on the single host by exactly one rule per method; cluster-local ones are not', () => {
    for (const r of routes) {
      const ksvc = ksvcs(base).find((s) => targetOf(s) === r.name)!;
      for (const method of r.methods) {
        const hits = route.spec.rules.filter((rule: Json) => rule.matches.some((m: Json) => m.method === method && pathMatches(m, samplePath(r.path))));
        if (clusterLocal(ksvc)) {
          expect(hits, `${method} ${r.path} must not be public (${ksvc.metadata.name} is cluster-local)`).toHaveLength(0);
          continue;
        }
        expect(hits, `${method} ${r.path}`).toHaveLength(1);
        const rewrite = hits[0].filters.find((f: Json) => f.type === 'URLRewrite').urlRewrite.hostname;
        expect(rewrite, `${method} ${r.path}`).toBe(`${ksvc.metadata.name}.tee-kms.svc.cluster.local`);
      }
    }
  });

  it('every rule sends to an existing public function through Kourier, which the ReferenceGrant allows', () => {
    for (const rule of route.spec.rules) {
      const host: string = rule.filters.find((f: Json) => f.type === 'URLRewrite').urlRewrite.hostname;
      const name = host.replace(/\.tee-kms\.svc\.cluster\.local$/, '');
      expect(byName.has(name), host).toBe(true);
      expect(clusterLocal(byName.get(name)!), host).toBe(false);
      expect(rule.backendRefs).toEqual([{ name: 'kourier-internal', namespace: 'kourier-system', port: 80 }]);
    }
    expect(referenceGrant.metadata.namespace).toBe('kourier-system');
    expect(referenceGrant.spec.from).toEqual([{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'tee-kms' }]);
    expect(referenceGrant.spec.to).toEqual([{ group: '', kind: 'Service', name: 'kourier-internal' }]);
  });

  it('the DomainMapping example maps to an existing public function', () => {
    const [mapping] = loadResources(join(BASE, 'routing', 'domain-mapping.example.yaml'));
    expect(mapping!.kind).toBe('DomainMapping');
    const target = byName.get(mapping!.spec.ref.name);
    expect(target).toBeDefined();
    expect(clusterLocal(target!)).toBe(false);
  });
});

describe('the kind quickstart cluster (knative/kind/cluster.yaml)', () => {
  it("is named knative, like kn quickstart kind, and publishes Kourier's NodePorts as 80 and 443 on loopback", () => {
    const [cluster] = loadYaml(join(KNATIVE, 'kind', 'cluster.yaml'));
    expect(cluster).toMatchObject({ kind: 'Cluster', apiVersion: 'kind.x-k8s.io/v1alpha4', name: 'knative' });
    expect(cluster.nodes[0].extraPortMappings).toEqual([
      { containerPort: 31080, hostPort: 80, listenAddress: '127.0.0.1' },
      { containerPort: 31443, hostPort: 443, listenAddress: '127.0.0.1' },
    ]);
    const doc = readFileSync(join(KNATIVE, '..', 'docs', 'deploy-knative.md'), 'utf8');
    expect(doc).toContain('"nodePort":31080},{"port":443,"nodePort":31443}');
    expect(doc).toContain('kind load docker-image --name knative kind.local/tee-kms:dev');
  });
});

describe('function manifests are generated from functions/catalog.ts (npm run generate:manifests)', () => {
  it('the committed YAML is what the generator writes now', async () => {
    expect(await staleManifests(), 'run npm run generate:manifests and commit the result').toEqual([]);
  });

  it('one Service per catalog function, named after its module, and one single-service Service serving all', async () => {
    const files = await generateManifests();
    const perFunction = [...files.keys()].filter((f) => f.startsWith('knative/functions/per-function/') && !f.endsWith('/kustomization.yaml'));
    expect(perFunction.sort()).toEqual(
      Object.keys(routeModules)
        .map((name) => `knative/functions/per-function/${serviceName(name)}.yaml`)
        .sort(),
    );
    const [single] = loadResources(join(SINGLE_SERVICE, 'tee-kms.yaml'));
    expect(targetOf(single!)).toBe('');
    expect(envValue(single!.spec.template.spec.containers[0], 'KMS_ADMIN_TOKEN_FILE')).toBe('/var/run/secrets/tee-kms/admin/token');
  });
});
