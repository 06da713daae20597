/**
 * What a --tee tdx install needs, computed here independently of knative/install.sh: each pod's
 * init-data as deployed (the shipped document with the digests in place of its placeholders), its
 * MRCONFIGID (SHA-384 of those bytes, node:crypto), and policy files that name them.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QUEUE_PROXY_IMAGE_PLACEHOLDER, TEE_KMS_IMAGE_PLACEHOLDER } from '../../scripts/init-data.js';
import { KNATIVE, REPO, ROOT_KEY_FILE, dockerEnv, parseDockerfile, type Json, type Resource } from './support.js';

export const DIGEST_IMAGE = `registry.example/tee-kms@sha256:${'cd'.repeat(32)}`;
/** Knative's queue-proxy as a release's config-deployment names it (the fake kubectl's default). */
export const QUEUE_PROXY_IMAGE = `gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:${'ab'.repeat(32)}`;
export const INIT_DATA_DIR = join(KNATIVE, 'components', 'tdx', 'init-data');
export const SEALER_POD = 'tee-kms-sealer';
export const INIT_DATA_ANNOTATION = 'io.katacontainers.config.hypervisor.cc_init_data';
export type Layout = 'per-function' | 'single-service';
/** The root key mode: 'shares' (mode 2, no root key given) or 'secret' (mode 1, components/root-key-secret). */
export type RootKeyMode = 'shares' | 'secret';
/**
 * The sealer's root_key_env in mode 1: the one variable components/root-key-secret sets, the file it
 * mounts (support.ts), written here independently of install.sh, which reads it from the component.
 */
export const ROOT_KEY_PINS = [`KMS_SEALER_ROOT_KEY_FILE=${ROOT_KEY_FILE}`] as const;

/** The function Services of a layout: knative/functions/<layout>/<service>.yaml. */
export function functionPods(layout: Layout = 'per-function'): string[] {
  return readdirSync(join(KNATIVE, 'functions', layout))
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .map((f) => f.slice(0, -'.yaml'.length))
    .sort();
}

/**
 * A pod's init-data as it must reach the TD: the shipped bytes, both placeholders replaced, and for
 * the sealer in mode 1 ROOT_KEY_PINS in place of the empty root_key_env (the functions' documents
 * do not depend on the mode).
 */
export function deployedInitData(pod: string, image = DIGEST_IMAGE, queueProxyImage = QUEUE_PROXY_IMAGE, rootKeyMode: RootKeyMode = 'shares'): string {
  const shipped = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
  const replaced = shipped.split(`"${TEE_KMS_IMAGE_PLACEHOLDER}"`).join(`"${image}"`).split(`"${QUEUE_PROXY_IMAGE_PLACEHOLDER}"`).join(`"${queueProxyImage}"`);
  if (replaced === shipped) throw new Error(`${pod}.toml: no placeholder replaced`);
  if (pod !== SEALER_POD || rootKeyMode === 'shares') return replaced;
  const parts = replaced.split('\nroot_key_env := []\n');
  if (parts.length !== 2) throw new Error(`${pod}.toml: not one empty root_key_env`);
  return parts.join(`\nroot_key_env := ${JSON.stringify(ROOT_KEY_PINS)}\n`);
}

/** MRCONFIGID of a TD given this init-data: SHA-384 of its exact bytes, 96 hex digits. */
export const mrConfigIdOf = (document: string | Buffer) => createHash('sha384').update(document).digest('hex');

export interface TdxPolicyFiles {
  /** --tdx-policy: the functions' TDs and the sealer's (its replicas attest each other). */
  readonly policy: string;
  /** --sealer-tdx-policy: the sealer's TD. */
  readonly sealerPolicy: string;
  /** --admin-policy: each admin operation to its function, sealer-peer to the sealer. */
  readonly admin: string;
}

/**
 * Policy files that match the init-data of a layout, tee-kms image (name@digest, as pods name it)
 * and root key mode (the sealer's MRCONFIGID differs in mode 1), written into dir.
 */
export function writeTdxPolicies(
  dir: string,
  layout: Layout = 'per-function',
  image = DIGEST_IMAGE,
  mrTd = 'ab'.repeat(48),
  rootKeyMode: RootKeyMode = 'shares',
): TdxPolicyFiles {
  const functions = functionPods(layout).map((pod) => mrConfigIdOf(deployedInitData(pod, image)));
  const sealer = mrConfigIdOf(deployedInitData(SEALER_POD, image, QUEUE_PROXY_IMAGE, rootKeyMode));
  const policy = join(dir, 'policy.json');
  writeFileSync(policy, `${JSON.stringify({ mrTd: [mrTd], mrConfigId: [...functions, sealer], allowedTcbStatuses: ['UpToDate'] }, null, 2)}\n`);
  const sealerPolicy = join(dir, 'sealer-policy.json');
  writeFileSync(sealerPolicy, `${JSON.stringify({ mrTd: [mrTd], mrConfigId: [sealer] }, null, 2)}\n`);
  const of = (pod: string) => mrConfigIdOf(deployedInitData(layout === 'single-service' ? 'tee-kms' : pod, image));
  const admin = join(dir, 'admin-policy.json');
  writeFileSync(
    admin,
    JSON.stringify({
      rotate: [of('rotate-root-key')],
      verify: [of('verify-root-key')],
      recover: [of('recover-root-key')],
      seal: [of('rotate-root-key')],
      'sealer-peer': [sealer],
    }),
  );
  return { policy, sealerPolicy, admin };
}

/** The Rego arrays a document assigns: `NAME := [...]` once each, JSON (scripts/init-data.ts writes them so). */
export function regoArray(document: string, name: string): string[] {
  const assigned = [...document.matchAll(new RegExp(`^${name} := (\\[[^\\]]*\\])$`, 'gm'))];
  if (assigned.length !== 1) throw new Error(`${name} is assigned ${assigned.length} times, not once`);
  return JSON.parse(assigned[0]![1]!) as string[];
}

/** The body of one container's CreateContainerRequest rule (after its `# <name>: ` comment), up to its closing brace. */
export function containerRuleOf(document: string, container: string): string {
  const start = document.indexOf(`\n# ${container}: `);
  if (start < 0) throw new Error(`no rule for the container ${container}`);
  const rule = document.slice(start);
  return rule.slice(0, rule.indexOf('\n}\n'));
}

/**
 * The entries of `env` (NAME=VALUE, as the OCI spec carries them) that one container's
 * env_denied_none calls refuse, with the meaning of the Rego helper init-data.test.ts pins word for
 * word: an entry is refused when its name (before the first "=") is one of NAMES or it starts with
 * one of PREFIXES. The lists are read from the document as it assigns them. Empty: the deny list
 * admits this environment. No Rego engine: the rest of the rule is not evaluated.
 */
export function deniedEntries(document: string, container: string, env: readonly string[]): string[] {
  const calls = [...containerRuleOf(document, container).matchAll(/\tenv_denied_none\((\w+|\[\]), (\w+|\[\])\)/g)];
  if (calls.length === 0) throw new Error(`the rule for ${container} calls no env_denied_none`);
  const list = (arg: string) => (arg === '[]' ? [] : regoArray(document, arg));
  return env.filter((entry) =>
    calls.some(([, names, prefixes]) => list(names!).includes(entry.split('=')[0]!) || list(prefixes!).some((prefix) => entry.startsWith(prefix))),
  );
}

/** What Knative Serving gives a Service's own container besides its spec (its runtime contract). */
const KNATIVE_USER_ENV = ['PORT=8080', 'K_SERVICE=welcome', 'K_CONFIGURATION=welcome', 'K_REVISION=welcome-00001'];
/**
 * What Kubernetes gives every container: the API server's Service (the TD pods turn service links
 * off, so no others), and the host name the runtime sets.
 */
const KUBERNETES_ENV = [
  'KUBERNETES_SERVICE_HOST=10.96.0.1',
  'KUBERNETES_SERVICE_PORT=443',
  'KUBERNETES_SERVICE_PORT_HTTPS=443',
  'KUBERNETES_PORT=tcp://10.96.0.1:443',
  'KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443',
  'KUBERNETES_PORT_443_TCP_PROTO=tcp',
  'KUBERNETES_PORT_443_TCP_PORT=443',
  'KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1',
  'HOSTNAME=tee-kms-pod',
];
/** The ENV of the node image the Dockerfile builds on (node:<version>-bookworm-slim), which cannot be read here. */
const NODE_IMAGE_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_VERSION=24.11.0', 'YARN_VERSION=1.22.22'];

/**
 * The environment a TD pod's tee-kms container (the sealer's, or a function Service's) starts
 * with, NAME=VALUE: its spec's env (valueFrom as an empty value), every key of the ConfigMaps its
 * envFrom names (found in `resources`), the image's ENV (the Dockerfile's runtime stage and its
 * node base image), and what Knative (for a Service) and Kubernetes add.
 */
export function tdContainerEnv(pod: Resource, resources: readonly Resource[]): { container: string; env: string[] } {
  const spec = pod.spec.template.spec;
  if (spec.enableServiceLinks !== false) throw new Error(`${pod.metadata.name}: service links are on, so every Service adds variables`);
  const container = spec.containers[0];
  const env: string[] = [...NODE_IMAGE_ENV, ...KUBERNETES_ENV, ...(pod.apiVersion === 'serving.knative.dev/v1' ? KNATIVE_USER_ENV : [])];
  const runtime = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).stages.at(-1)!;
  env.push(...Object.entries(dockerEnv(runtime)).map(([name, value]) => `${name}=${value}`));
  for (const from of (container.envFrom ?? []) as Json[]) {
    if (from.configMapRef === undefined) throw new Error(`${pod.metadata.name}: envFrom other than a ConfigMap: ${JSON.stringify(from)}`);
    const configMap = resources.find((r) => r.kind === 'ConfigMap' && r.metadata.name === from.configMapRef.name);
    if (configMap === undefined) throw new Error(`${pod.metadata.name}: envFrom names the ConfigMap ${from.configMapRef.name}, not rendered`);
    env.push(...Object.entries(configMap.data ?? {}).map(([key, value]) => `${from.prefix ?? ''}${key}=${String(value)}`));
  }
  env.push(...((container.env ?? []) as Json[]).map((e) => `${e.name}=${e.value ?? ''}`));
  return { container: container.name, env };
}
