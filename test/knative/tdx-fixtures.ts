/**
 * What a --tee tdx install needs, computed here independently of knative/install.sh: each function's
 * agent policy digest (SHA-384 of its policy.rego entry's text, parsed with smol-toml), each pod's
 * init-data as deployed (the shipped document with the digests in place of its placeholders, then
 * its measured policies appended: the sealer's two, which name the functions by those digests, and
 * each function's policy for the sealer), its MRCONFIGID (SHA-384 of those bytes, node:crypto), and
 * policy files that name them.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
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

/**
 * The custodians' public keys a --tee tdx install in the Shamir mode pins (--custodian-keys, which
 * it requires): five P-256 JWKs as `tee-kms custodian keygen` prints them, made once per test run.
 */
export const CUSTODIAN_KEYS = Array.from({ length: 5 }, () => {
  const { x, y } = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: x!, y: y! };
});
/** A file of CUSTODIAN_KEYS for --custodian-keys, written once per test run. */
let custodianKeysPath: string | undefined;
export function custodianKeysFile(): string {
  if (custodianKeysPath === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'tee-kms-custodians-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    custodianKeysPath = join(dir, 'custodians.json');
    writeFileSync(custodianKeysPath, `${JSON.stringify(CUSTODIAN_KEYS, null, 2)}\n`);
  }
  return custodianKeysPath;
}
/** custodians_env as install.sh lists CUSTODIAN_KEYS: their RFC 7638 thumbprints, computed here, in order. */
export const CUSTODIANS_PIN = `KMS_SEALER_CUSTODIANS=${CUSTODIAN_KEYS.map(({ crv, kty, x, y }) =>
  createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url'),
).join(',')}`;
/** ...and their threshold, install.sh's default (--threshold 3). */
export const THRESHOLD_PIN = 'KMS_SEALER_CUSTODIANS_THRESHOLD=3';
/** custodians_env in full, as install.sh lists it for --custodian-keys CUSTODIAN_KEYS without --threshold. */
export const CUSTODIANS_PINS: readonly string[] = [CUSTODIANS_PIN, THRESHOLD_PIN];

/** The function Services of a layout: knative/functions/<layout>/<service>.yaml. */
export function functionPods(layout: Layout = 'per-function'): string[] {
  return readdirSync(join(KNATIVE, 'functions', layout))
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .map((f) => f.slice(0, -'.yaml'.length))
    .sort();
}

/** The layout a function pod belongs to. */
const layoutOf = (pod: string): Layout => (pod === 'tee-kms' ? 'single-service' : 'per-function');

/** The sealer's two measured policies: the text of the --tdx-policy and --admin-policy files, and the layout they are for. */
export interface SealerPolicies {
  readonly tdxPolicy: string;
  readonly adminPolicy: string;
  /** Whose agent policies the sealer's tdx-policy.json lists (default per-function). */
  readonly layout?: Layout;
  /** The install's PCCS, listed in every document (default INTEL_PCS). */
  readonly pccs?: Pccs;
}

/**
 * A policy file's JSON as an init-data document carries it: compact, on one line, every ' written
 * \u0027 and DEL \u007f (still the same JSON), so that no value can end the TOML ''' string early.
 */
export const measuredJson = (text: string) => JSON.stringify(JSON.parse(text)).split("'").join('\\u0027').split('\u007f').join('\\u007f');

/** An entry as install.sh appends it to a document's [data] table. */
const measuredEntry = (name: string, json: string) => `"${name}" = '''\n${measuredJson(json)}\n'''\n`;

/** Where an install fetches DCAP collateral: --pccs-url (Intel PCS unless given) and --pccs-ca's PEM, if any. */
export interface Pccs {
  readonly url: string;
  readonly ca?: string;
}
export const INTEL_PCS: Pccs = { url: 'https://api.trustedservices.intel.com' };

/** pccs_env as install.sh lists it in a pod's document: the sealer's KMS_SEALER_PCCS_*, a function's KMS_TRUSTED_SEALER_PCCS_*. */
export function pccsPins(pod: string, pccs: Pccs = INTEL_PCS): string[] {
  const prefix = pod === SEALER_POD ? 'KMS_SEALER_PCCS_' : 'KMS_TRUSTED_SEALER_PCCS_';
  return [`${prefix}URL=${pccs.url}`, ...(pccs.ca === undefined ? [] : [`${prefix}CA=${pccs.ca}`])];
}

/** A pod's shipped document with both placeholders replaced and its PCCS listed (pccs_env). */
function withInstall(pod: string, image: string, queueProxyImage: string, pccs: Pccs = INTEL_PCS): string {
  const shipped = readFileSync(join(INIT_DATA_DIR, `${pod}.toml`), 'utf8');
  const replaced = shipped.split(`"${TEE_KMS_IMAGE_PLACEHOLDER}"`).join(`"${image}"`).split(`"${QUEUE_PROXY_IMAGE_PLACEHOLDER}"`).join(`"${queueProxyImage}"`);
  if (replaced === shipped) throw new Error(`${pod}.toml: no placeholder replaced`);
  if (!replaced.endsWith("'''\n") || !replaced.startsWith('\n[data]\n', replaced.lastIndexOf('\n[')))
    throw new Error(`${pod}.toml: [data] is not its last table`);
  return withList(replaced, 'pccs_env', pccsPins(pod, pccs));
}

/**
 * A function's agent policy digest: SHA-384 of its policy.rego entry's text as a TOML parser
 * returns it (smol-toml here; a ''' string drops its first newline), with the images and the PCCS
 * filled in.
 */
export function agentPolicyOf(pod: string, image = DIGEST_IMAGE, queueProxyImage = QUEUE_PROXY_IMAGE, pccs: Pccs = INTEL_PCS): string {
  const document = parseToml(withInstall(pod, image, queueProxyImage, pccs)) as { data: Record<string, string> };
  return createHash('sha384').update(document.data['policy.rego']!, 'utf8').digest('hex');
}

/** The sealer's tdx-policy.json: the --tdx-policy object with agentPolicies, every function's digest in Service order. */
export function measuredTdxPolicy(
  { tdxPolicy, layout = 'per-function', pccs }: SealerPolicies,
  image = DIGEST_IMAGE,
  queueProxyImage = QUEUE_PROXY_IMAGE,
): string {
  return JSON.stringify({
    ...(JSON.parse(tdxPolicy) as object),
    agentPolicies: functionPods(layout).map((pod) => agentPolicyOf(pod, image, queueProxyImage, pccs)),
  });
}

/** The sealer's admin-policy.json: each Service name replaced by "policy.rego:<its agent policy digest>". */
export function measuredAdminPolicy({ adminPolicy, pccs }: SealerPolicies, image = DIGEST_IMAGE, queueProxyImage = QUEUE_PROXY_IMAGE): string {
  const grants = JSON.parse(adminPolicy) as Record<string, string[]>;
  return JSON.stringify(
    Object.fromEntries(
      Object.entries(grants).map(([op, names]) => [op, names.map((name) => `policy.rego:${agentPolicyOf(name, image, queueProxyImage, pccs)}`)]),
    ),
  );
}

/** The lines install.sh appends to the sealer's document, the end of its [data] table. */
export const measuredPolicyLines = (policies: SealerPolicies, image = DIGEST_IMAGE, queueProxyImage = QUEUE_PROXY_IMAGE) =>
  measuredEntry('tdx-policy.json', measuredTdxPolicy(policies, image, queueProxyImage)) +
  measuredEntry('admin-policy.json', measuredAdminPolicy(policies, image, queueProxyImage));

/** The line install.sh appends to each function's document: its policy for the sealer's TD. */
export const sealerPolicyLines = (sealerTdxPolicy: string) => measuredEntry('sealer-tdx-policy.json', sealerTdxPolicy);

/** The document with `<list> := []` (there once) listing these entries instead. */
export function withList(document: string, list: string, entries: readonly string[]): string {
  const parts = document.split(`\n${list} := []\n`);
  if (parts.length !== 2) throw new Error(`not one empty ${list}`);
  return parts.join(`\n${list} := ${JSON.stringify(entries)}\n`);
}

/**
 * A pod's init-data as it must reach the TD: the shipped bytes, both placeholders replaced, then
 * for the sealer (with `custodians`, by default CUSTODIANS_PINS, in place of the empty
 * custodians_env, and in mode 1 ROOT_KEY_PINS in place of the empty root_key_env) its two policies
 * appended (by default those writeTdxPolicies writes for the per-function layout), and for a
 * function its policy for the sealer (by default the one writeTdxPolicies writes for its layout,
 * this image and root key mode). `custodians` null: no custodians pinned (no --custodian-keys).
 */
export function deployedInitData(
  pod: string,
  image = DIGEST_IMAGE,
  queueProxyImage = QUEUE_PROXY_IMAGE,
  rootKeyMode: RootKeyMode = 'shares',
  policies?: SealerPolicies,
  sealerTdxPolicy?: string,
  custodians: readonly string[] | null = CUSTODIANS_PINS,
): string {
  const replaced = withInstall(pod, image, queueProxyImage, policies?.pccs);
  if (pod !== SEALER_POD) {
    const layout = layoutOf(pod);
    return replaced + sealerPolicyLines(sealerTdxPolicy ?? sealerTdxPolicyText(policies ?? sealerPoliciesFor(layout, image), rootKeyMode, image));
  }
  const measured = measuredPolicyLines(policies ?? sealerPoliciesFor('per-function', image), image, queueProxyImage);
  const pinned = custodians === null ? replaced : withList(replaced, 'custodians_env', custodians);
  return (rootKeyMode === 'shares' ? pinned : withList(pinned, 'root_key_env', ROOT_KEY_PINS)) + measured;
}

/** MRCONFIGID of a TD given this init-data: SHA-384 of its exact bytes, 96 hex digits. */
export const mrConfigIdOf = (document: string | Buffer) => createHash('sha384').update(document).digest('hex');

/** --tdx-policy as writeTdxPolicies writes it: reference values only (install.sh adds the functions, the sealer itself). */
/** The guest's firmware configuration, kernel and initrd, as --tdx-policy must pin them. */
export const REFERENCE_RTMRS = { rtmr0: ['10'.repeat(48)], rtmr1: ['11'.repeat(48)], rtmr2: ['12'.repeat(48)] };

export function tdxPolicyText(mrTd = 'ab'.repeat(48)): string {
  return `${JSON.stringify({ mrTd: [mrTd], ...REFERENCE_RTMRS, allowedTcbStatuses: ['UpToDate'] }, null, 2)}\n`;
}

/** --admin-policy as writeTdxPolicies writes it: each operation to its function's Service, no sealer-peer (the sealer grants it itself). */
export function adminPolicyText(layout: Layout = 'per-function'): string {
  const of = (pod: string) => (layout === 'single-service' ? 'tee-kms' : pod);
  return JSON.stringify({ rotate: [of('rotate-root-key')], verify: [of('verify-root-key')], recover: [of('recover-root-key')], seal: [of('rotate-root-key')] });
}

/** The policies writeTdxPolicies writes, as the sealer's init-data carries them. */
export const sealerPoliciesFor = (layout: Layout = 'per-function', _image = DIGEST_IMAGE, mrTd = 'ab'.repeat(48)): SealerPolicies => ({
  tdxPolicy: tdxPolicyText(mrTd),
  adminPolicy: adminPolicyText(layout),
  layout,
});

/** The policies of these --tdx-policy and --admin-policy files, for a layout and PCCS. */
export const readSealerPolicies = (
  tdxPolicyFile: string,
  adminPolicyFile: string,
  layout: Layout = 'per-function',
  pccs: Pccs = INTEL_PCS,
): SealerPolicies => ({
  tdxPolicy: readFileSync(tdxPolicyFile, 'utf8'),
  adminPolicy: readFileSync(adminPolicyFile, 'utf8'),
  layout,
  pccs,
});

/** The sealer's MRCONFIGID given its policies. */
export const sealerIdOf = (policies: SealerPolicies, rootKeyMode: RootKeyMode = 'shares', image = DIGEST_IMAGE) =>
  mrConfigIdOf(deployedInitData(SEALER_POD, image, QUEUE_PROXY_IMAGE, rootKeyMode, policies));

/**
 * --sealer-tdx-policy naming the sealer that carries these policies, as writeSealerTdxPolicy writes
 * it: the reference values of its --tdx-policy (install.sh wants it no wider), or, when that has
 * none to take, `mrTd` and REFERENCE_RTMRS.
 */
export function sealerTdxPolicyText(policies: SealerPolicies, rootKeyMode: RootKeyMode = 'shares', image = DIGEST_IMAGE, mrTd = 'ab'.repeat(48)): string {
  const fields = ['mrTd', 'rtmr0', 'rtmr1', 'rtmr2', 'rtmr3', 'eventDigests', 'allowedTcbStatuses', 'deniedAdvisoryIds', 'minTcbEvaluationDataNumber'];
  let reference: Record<string, unknown> = { mrTd: [mrTd], ...REFERENCE_RTMRS };
  try {
    const parsed = JSON.parse(policies.tdxPolicy) as Record<string, unknown>;
    if (Array.isArray(parsed.mrTd)) reference = Object.fromEntries(fields.filter((f) => Object.hasOwn(parsed, f)).map((f) => [f, parsed[f]]));
  } catch {
    // Not a policy (a refusal case): the default reference values.
  }
  return `${JSON.stringify({ ...reference, mrConfigId: [sealerIdOf(policies, rootKeyMode, image)] }, null, 2)}\n`;
}

/**
 * Writes to `file` a --sealer-tdx-policy naming the sealer that carries these --tdx-policy and
 * --admin-policy files (image DIGEST_IMAGE unless given); returns that sealer's MRCONFIGID.
 */
export function writeSealerTdxPolicy(
  file: string,
  tdxPolicyFile: string,
  adminPolicyFile: string,
  rootKeyMode: RootKeyMode = 'shares',
  image = DIGEST_IMAGE,
  mrTd = 'ab'.repeat(48),
  layout: Layout = 'per-function',
  pccs: Pccs = INTEL_PCS,
): string {
  const policies = readSealerPolicies(tdxPolicyFile, adminPolicyFile, layout, pccs);
  writeFileSync(file, sealerTdxPolicyText(policies, rootKeyMode, image, mrTd));
  return sealerIdOf(policies, rootKeyMode, image);
}

export interface TdxPolicyFiles {
  /** --tdx-policy: reference values (install.sh adds the functions' agent policies). */
  readonly policy: string;
  /** --sealer-tdx-policy: the sealer's TD, whose init-data carries the two others. */
  readonly sealerPolicy: string;
  /** --admin-policy: each admin operation to its function's Service (no sealer-peer: the sealer grants it). */
  readonly admin: string;
  /** The sealer's MRCONFIGID, which --sealer-tdx-policy names. */
  readonly sealerId: string;
  /** --custodian-keys: CUSTODIAN_KEYS, which the Shamir mode's sealer pins (required there). */
  readonly custodians: string;
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
  pccs: Pccs = INTEL_PCS,
): TdxPolicyFiles {
  const policy = join(dir, 'policy.json');
  writeFileSync(policy, tdxPolicyText(mrTd));
  const admin = join(dir, 'admin-policy.json');
  writeFileSync(admin, adminPolicyText(layout));
  const sealerPolicy = join(dir, 'sealer-policy.json');
  const sealerId = writeSealerTdxPolicy(sealerPolicy, policy, admin, rootKeyMode, image, mrTd, layout, pccs);
  return { policy, sealerPolicy, admin, sealerId, custodians: custodianKeysFile() };
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

/** The Rego helper env_pinned, word for word as every document has it (init-data.test.ts checks it). */
export const ENV_PINNED_RULES = [
  'env_pinned(name, value) if {',
  '\tconcat("=", [name, value]) in input.OCI.Process.Env',
  '\tevery entry in input.OCI.Process.Env {',
  '\t\tother_or_equal(entry, name, value)',
  '\t}',
  '}',
  '',
  'other_or_equal(entry, name, _) if not startswith(entry, concat("", [name, "="]))',
  '',
  'other_or_equal(entry, name, value) if entry == concat("=", [name, value])',
].join('\n');

/**
 * Whether env_pinned(NAME, VALUE) holds for `env` in one container's rule (the sealer's unless
 * given), with the meaning of ENV_PINNED_RULES (NAME=VALUE is there, and NAME has no other value)
 * and VALUE as that rule pins it. No Rego
 * engine: the rest of the rule is not evaluated.
 */
export function pinnedAdmits(document: string, name: string, env: readonly string[], container = 'sealer'): boolean {
  if (!document.includes(`\n${ENV_PINNED_RULES}\n`)) throw new Error('env_pinned is not the helper the model reads');
  const pins = [...containerRuleOf(document, container).matchAll(/\tenv_pinned\(("[^"]*"), ("[^"]*")\)/g)].filter((m) => JSON.parse(m[1]!) === name);
  if (pins.length !== 1) throw new Error(`${name} is pinned ${pins.length} times, not once`);
  const entry = `${name}=${JSON.parse(pins[0]![2]!) as string}`;
  return env.includes(entry) && env.every((e) => !e.startsWith(`${name}=`) || e === entry);
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

/** The mount rules, word for word as every document has them (init-data.test.ts checks it). */
export const MOUNT_RULES = [
  'mounts_within(roots) if {',
  '\tmounts := object.get(input.OCI, "Mounts", [])',
  '\tmounts_apart(mounts)',
  '\tevery mount in mounts {',
  '\t\twithin(mount, roots)',
  '\t}',
  '}',
  '',
  'within(mount, _) if runtime_mount(mount)',
  '',
  'within(mount, roots) if {',
  '\tsome root in roots',
  '\tat_or_below(mount.destination, root)',
  '}',
  '',
  'mounts_outside(dirs) if {',
  '\tmounts := object.get(input.OCI, "Mounts", [])',
  '\tmounts_apart(mounts)',
  '\tevery mount in mounts {',
  '\t\toutside(mount, dirs)',
  '\t}',
  '}',
  '',
  'outside(mount, _) if runtime_mount(mount)',
  '',
  'outside(mount, dirs) if {',
  '\tevery dir in dirs {',
  '\t\tnot at_or_below(mount.destination, dir)',
  '\t}',
  '}',
  '',
  'runtime_mount(mount) if runtime_file_systems[mount.destination] == mount.type_',
  '',
  'runtime_mount(mount) if mount.destination in runtime_mounts',
  '',
  'mounts_apart(mounts) if {',
  '\tcount({mount.destination | some mount in mounts}) == count(mounts)',
  '\tevery mount in mounts {',
  '\t\tplain_path(mount.destination)',
  '\t\tnot nested_mount(mount.destination, mounts)',
  '\t\tnot at_or_below(mount.destination, "/run")',
  '\t\tnot at_or_below(mount.destination, "/var/lock")',
  '\t}',
  '}',
  '',
  'plain_path(path) if {',
  '\tregex.match("^(/[^/]+)+$", path)',
  '\tnot regex.match("(^|/)[.][.]?(/|$)", path)',
  '}',
  '',
  'nested_mount(path, mounts) if {',
  '\tsome other in mounts',
  '\tother.destination != path',
  '\tstartswith(path, concat("", [other.destination, "/"]))',
  '\tnot runtime_file_systems[other.destination] == other.type_',
  '}',
  '',
  'at_or_below(path, dir) if path == dir',
  '',
  'at_or_below(path, dir) if startswith(path, concat("", [dir, "/"]))',
].join('\n');

/** The sandbox (pause) container's CreateContainerRequest rule, with its closing line break. */
function sandboxRuleOf(document: string): string {
  const start = document.indexOf('\n# The sandbox container: ');
  if (start < 0) throw new Error('no rule for the sandbox container');
  const rule = document.slice(start);
  return rule.slice(0, rule.indexOf('\n}\n') + 1);
}

/** One OCI mount as the agent's input carries it (the fields the rules read). */
export interface OciMount {
  readonly destination: string;
  readonly type_?: string;
}

/**
 * Whether a container's rule admits these mounts, with the meaning of MOUNT_RULES and the lists as
 * the document assigns them: a tee-kms container's (mounts_within(volume_roots)), or queue-proxy's
 * (mounts_outside(code_dirs)). No Rego engine: the rest of the rule is not evaluated.
 */
export function mountsAdmitted(document: string, container: string, mounts: readonly OciMount[]): boolean {
  if (!document.includes(`\n${MOUNT_RULES}\n`)) throw new Error('the mount rules are not those the model reads');
  const rule = container === 'sandbox' ? sandboxRuleOf(document) : `${containerRuleOf(document, container)}\n`;
  const calls = ['\n\tmounts_within(volume_roots)\n', '\n\tmounts_within([])\n', '\n\tmounts_outside(code_dirs)\n'].filter((call) => rule.includes(call));
  if (calls.length !== 1) throw new Error(`the rule for ${container} does not call exactly one mount rule`);
  const within = !calls[0]!.includes('outside');
  const fileSystems = JSON.parse(/^runtime_file_systems := (\{[^}]*\})$/m.exec(document)![1]!) as Record<string, string>;
  const [runtimeMounts, volumeRoots, codeDirs] = ['runtime_mounts', 'volume_roots', 'code_dirs'].map((list) => regoArray(document, list));
  const roots = calls[0]!.includes('[]') ? [] : volumeRoots;
  const atOrBelow = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);
  const plain = (path: string) => /^(\/[^/]+)+$/.test(path) && !/(^|\/)[.][.]?(\/|$)/.test(path);
  const runtimeFs = (m: OciMount) => Object.hasOwn(fileSystems, m.destination) && fileSystems[m.destination] === m.type_;
  const runtime = (m: OciMount) => runtimeFs(m) || runtimeMounts!.includes(m.destination);
  const nested = (m: OciMount) => mounts.some((o) => o.destination !== m.destination && m.destination.startsWith(`${o.destination}/`) && !runtimeFs(o));
  const apart =
    new Set(mounts.map((m) => m.destination)).size === mounts.length &&
    mounts.every((m) => plain(m.destination) && !nested(m) && !atOrBelow(m.destination, '/run') && !atOrBelow(m.destination, '/var/lock'));
  const admitted = (m: OciMount) =>
    runtime(m) || (within ? roots!.some((root) => atOrBelow(m.destination, root)) : codeDirs!.every((dir) => !atOrBelow(m.destination, dir)));
  return apart && mounts.every(admitted);
}

/** The storage, hook and sandbox rules, word for word as every document has them (init-data.test.ts checks it). */
export const HOST_RULES = [
  'pulled_in_guest_only(image) if {',
  '\tcount([pull | some pull in input.storages; pull.driver == "image_guest_pull"]) == 1',
  '\tsome pulled in input.storages',
  '\tpulled.driver == "image_guest_pull"',
  '\tpulled.source == image',
  '\tpulled.mount_point == own_root_file_system',
  '\tinput.OCI.Root.Path == own_root_file_system',
  '\tpull_as_container(pulled)',
  '\tevery storage in input.storages {',
  '\t\tnot_pulled_or(storage, image)',
  '\t}',
  '}',
  '',
  "# Where the agent pulls this container's image, and so its root: another Root.Path, or another",
  '# storage there, would run a tree the host wrote.',
  'own_root_file_system := concat("", ["/run/kata-containers/", input.container_id, "/rootfs"])',
  '',
  "# The agent unpacks the pause bundle of the TD's own image instead of pulling the source when the",
  "# pull's metadata (its one image_guest_pull driver option, where Kata's runtime copies the",
  '# container\'s annotations) gives the container type "sandbox" under either CRI\'s key. The pause',
  '# container\'s must say so, or the agent would pull "pause" from a registry; no other\'s may.',
  'pull_as_container(pull) if {',
  '\toptions := [option | some option in pull.driver_options; startswith(option, "image_guest_pull=")]',
  '\tcount(options) == 1',
  '\ttext := trim_prefix(options[0], "image_guest_pull=")',
  '\tjson.is_valid(text)',
  '\tmetadata := json.unmarshal(text).metadata',
  '\tcontainer_type := input.OCI.Annotations["io.kubernetes.cri.container-type"]',
  '\tmetadata["io.kubernetes.cri.container-type"] == container_type',
  '\tobject.get(metadata, "io.kubernetes.cri-o.ContainerType", container_type) == container_type',
  '}',
  '',
  "# Any other storage holds nothing of the host's: a tmpfs (ephemeral) or a directory of the TD's",
  '# own (local), as Kata makes for the sandbox and emptyDirs, under its sandbox or shared directory',
  '# and never in or over a root file system. A storage the host fills (virtio-fs, a block device, a',
  '# bind), or one over the directory of a root file system, would replace what runs.',
  'not_pulled_or(storage, _) if own_storage(storage)',
  '',
  'not_pulled_or(storage, image) if {',
  '\tstorage.driver == "image_guest_pull"',
  '\tstorage.source == image',
  '}',
  '',
  "# A tmpfs of the guest's, or a directory it makes: nothing of the host's in either.",
  'own_storage(storage) if {',
  '\tstorage.driver == "ephemeral"',
  '\tstorage.fstype == "tmpfs"',
  '\tstorage.source in ["shm", "tmpfs"]',
  '\tguest_storage(storage)',
  '}',
  '',
  'own_storage(storage) if {',
  '\tstorage.driver == "local"',
  '\tstorage.fstype == "local"',
  '\tstorage.source == "local"',
  '\tguest_storage(storage)',
  '}',
  '',
  'guest_storage(storage) if {',
  '\tplain_path(storage.mount_point)',
  '\tsome dir in ["/run/kata-containers/sandbox/", "/run/kata-containers/shared/containers/"]',
  '\tstartswith(storage.mount_point, dir)',
  '\tnot regex.match("^/run/kata-containers/[^/]+/rootfs(/.*)?$", storage.mount_point)',
  '}',
].join('\n');

export const NOTHING_THE_HOST_RUNS = [
  'nothing_the_host_runs if {',
  '\tno_hooks',
  '\tlinux := object.get(input.OCI, "Linux", {})',
  '\tabsent_or_empty(object.get(linux, "Sysctl", null))',
  '\tabsent_or_empty(object.get(input, "shared_mounts", []))',
  '\tabsent_or_empty(object.get(linux, "Devices", []))',
  '\tabsent_or_empty(object.get(object.get(linux, "Resources", {}), "Devices", []))',
  '\tabsent_or_empty(object.get(input, "devices", []))',
  '\tabsent_or_empty(object.get(linux, "UIDMappings", []))',
  '\tabsent_or_empty(object.get(linux, "GIDMappings", []))',
  '\tevery namespace in object.get(linux, "Namespaces", []) {',
  '\t\town_namespace(namespace)',
  '\t}',
  '}',
  '',
  'own_namespace(namespace) if namespace.Type == "network"',
  '',
  'own_namespace(namespace) if {',
  '\tnamespace.Type != "user"',
  '\tabsent_or_empty(object.get(namespace, "Path", ""))',
  '}',
  '',
  'no_hooks if absent_or_empty(object.get(input.OCI, "Hooks", null))',
  '',
  'no_hooks if {',
  '\tis_object(input.OCI.Hooks)',
  '\tevery hooks in [list | some list in input.OCI.Hooks] {',
  '\t\tabsent_or_empty(hooks)',
  '\t}',
  '}',
  '',
  'absent_or_empty(value) if is_null(value)',
  '',
  'absent_or_empty(value) if count(value) == 0',
].join('\n');

export const SANDBOX_RULES = [
  'default CreateSandboxRequest := false',
  '',
  'CreateSandboxRequest if {',
  '\tabsent_or_empty(object.get(input, "guest_hook_path", ""))',
  '\tabsent_or_empty(object.get(input, "kernel_modules", []))',
  '\tnot object.get(input, "sandbox_pidns", false)',
  '\tevery storage in object.get(input, "storages", []) {',
  '\t\town_storage(storage)',
  '\t}',
  '}',
  '',
  "# Denied, as in Kata's genpolicy: the agent would mount what it names (a bind of the TD's own",
  "# directories, say, through which CopyFile then writes into a container's root); Kata sends it only",
  "# to resize an emptyDir's tmpfs.",
  'default UpdateEphemeralMountsRequest := false',
  '',
  "# Denied, as in Kata's genpolicy: AddSwap would page the containers' memory (keys, tokens) onto a",
  "# disk the host provides; UpdateContainer would apply the host's resources to a running container;",
  '# SetGuestDateTime would move the clock that token and collateral validity are read against;',
  "# ReseedRandomDev would credit the host's bytes as entropy. Kata sends none of them to start or",
  '# stop these pods.',
  'default AddSwapRequest := false',
  'default ReseedRandomDevRequest := false',
  'default SetGuestDateTimeRequest := false',
  'default UpdateContainerRequest := false',
].join('\n');

/** What every tee-kms container's process must be, word for word (runs_unprivileged). */
export const PROCESS_RULES = [
  "# The tee-kms containers run as the image's user and group alone, with no capability and no way to",
  "# gain one (the manifests' runAsUser, runAsGroup, allowPrivilegeEscalation false and capabilities",
  '# drop ALL). As root, in another group, or with a capability, a flaw in what runs would reach the',
  "# rest of the TD: the attestation agent, the other container, the guest's own files.",
  'runs_unprivileged if {',
  '\tinput.OCI.Process.User.UID == 1000',
  '\tinput.OCI.Process.User.GID == 1000',
  '\tonly_image_group',
  '\tinput.OCI.Process.NoNewPrivileges == true',
  '\tno_capabilities',
  '}',
  '',
  'only_image_group if absent_or_empty(object.get(input.OCI.Process.User, "AdditionalGids", null))',
  '',
  'only_image_group if {',
  '\tis_array(input.OCI.Process.User.AdditionalGids)',
  '\tevery gid in input.OCI.Process.User.AdditionalGids {',
  '\t\tgid == 1000',
  '\t}',
  '}',
  '',
  'no_capabilities if absent_or_empty(object.get(input.OCI.Process, "Capabilities", null))',
  '',
  'no_capabilities if {',
  '\tis_object(input.OCI.Process.Capabilities)',
  '\tevery set in ["Ambient", "Bounding", "Effective", "Inheritable", "Permitted"] {',
  '\t\tabsent_or_empty(object.get(input.OCI.Process.Capabilities, set, null))',
  '\t}',
  '}',
].join('\n');

/** The fields of an OCI process that runs_unprivileged reads. */
export interface OciProcess {
  readonly User?: { readonly UID?: number; readonly GID?: number; readonly AdditionalGids?: readonly number[] };
  readonly NoNewPrivileges?: boolean;
  readonly Capabilities?: Record<string, unknown> | null;
}

/** runs_unprivileged for a process, with the meaning of PROCESS_RULES. No Rego engine. */
export function processAdmitted(document: string, process: OciProcess): boolean {
  if (!document.includes(`\n${PROCESS_RULES}\n`)) throw new Error('the document does not have the process rules the model reads');
  const capabilities = process.Capabilities;
  const none =
    absentOrEmpty(capabilities) ||
    (typeof capabilities === 'object' &&
      capabilities !== null &&
      !Array.isArray(capabilities) &&
      ['Ambient', 'Bounding', 'Effective', 'Inheritable', 'Permitted'].every((set) => absentOrEmpty(capabilities[set])));
  const groups = process.User?.AdditionalGids;
  const onlyImageGroup = absentOrEmpty(groups) || (Array.isArray(groups) && groups.every((gid) => gid === 1000));
  return process.User?.UID === 1000 && process.User?.GID === 1000 && onlyImageGroup && process.NoNewPrivileges === true && none;
}

/** The network requests' rules, word for word: the host never configures the TD's loopback. */
export const NETWORK_RULES = [
  'default UpdateInterfaceRequest := false',
  '',
  'UpdateInterfaceRequest if {',
  '\tinput.interface.name != "lo"',
  '\tbits.and(input.interface.raw_flags, bits.negate(128)) == 0',
  '\tregex.match("^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", input.interface.hwAddr)',
  '\tinput.interface.hwAddr != "00:00:00:00:00:00"',
  '\tevery address in object.get(input.interface, "IPAddresses", []) {',
  '\t\toutside_loopback(address.address)',
  '\t}',
  '}',
  '',
  'default UpdateRoutesRequest := false',
  '',
  'UpdateRoutesRequest if {',
  '\tevery route in input.routes.Routes {',
  '\t\troute.device != "lo"',
  '\t\tno_loopback_source(route.source)',
  '\t}',
  '}',
  '',
  'no_loopback_source(source) if source == ""',
  '',
  'no_loopback_source(source) if outside_loopback(source)',
  '',
  'default AddARPNeighborsRequest := false',
  '',
  'AddARPNeighborsRequest if {',
  '\tevery neighbor in input.neighbors.ARPNeighbors {',
  '\t\tneighbor.device != "lo"',
  '\t\tneighbor.toIPAddress.mask == ""',
  '\t\toutside_loopback(neighbor.toIPAddress.address)',
  '\t\tneighbor.state in [2, 128]',
  '\t\tbits.or(neighbor.flags, 136) == 136',
  '\t}',
  '}',
  '',
  "# An address as Kata's runtime writes it (Go's net.IP.String(): dotted decimal, or lowercase hex",
  '# digits and colons), outside 127.0.0.0/8 and other than ::1 however its zeros are written. Any',
  "# other spelling is refused: the agent's parsers also take a prefix length or an IPv4 address",
  '# inside an IPv6 one, which no pattern here could follow.',
  'outside_loopback(address) if {',
  '\tregex.match("^[0-9]{1,3}([.][0-9]{1,3}){3}$", address)',
  '\tnot startswith(address, "127.")',
  '}',
  '',
  'outside_loopback(address) if {',
  '\tregex.match("^[0-9a-f:]+$", address)',
  '\tnot regex.match("^(0{0,4}:){0,7}0{0,3}1$", address)',
  '}',
].join('\n');

/** The fields of the agent's network messages (types.proto: Interface, Route, ARPNeighbor) that the rules read. */
export interface AgentInterface {
  readonly name: string;
  readonly raw_flags: number;
  readonly hwAddr: string;
  readonly IPAddresses?: readonly { readonly address: string; readonly mask: string }[];
}
export interface AgentRoute {
  readonly device: string;
  readonly source: string;
  readonly dest?: string;
  readonly gateway?: string;
}
export interface AgentNeighbor {
  readonly device: string;
  readonly toIPAddress: { readonly address: string; readonly mask: string };
  readonly state: number;
  readonly flags: number;
}

const IFF_NOARP = 0x80;
const NUD_REACHABLE = 0x02;
const NUD_PERMANENT = 0x80;
const NTF_PROXY = 0x08;
const NTF_ROUTER = 0x80;
/** outside_loopback: the regular expressions of NETWORK_RULES, which RE2 and JavaScript read alike. */
const outsideLoopback = (address: string) =>
  (/^[0-9]{1,3}([.][0-9]{1,3}){3}$/.test(address) && !address.startsWith('127.')) || (/^[0-9a-f:]+$/.test(address) && !/^(0{0,4}:){0,7}0{0,3}1$/.test(address));

function requireNetworkRules(document: string): void {
  if (!document.includes(`\n${NETWORK_RULES}\n`)) throw new Error('the document does not have the network rules the model reads');
}

/** UpdateInterfaceRequest, with the meaning of NETWORK_RULES. No Rego engine. */
export function interfaceAdmitted(document: string, iface: AgentInterface): boolean {
  requireNetworkRules(document);
  return (
    iface.name !== 'lo' &&
    (iface.raw_flags & ~IFF_NOARP) === 0 &&
    /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(iface.hwAddr) &&
    iface.hwAddr !== '00:00:00:00:00:00' &&
    (iface.IPAddresses ?? []).every((address) => outsideLoopback(address.address))
  );
}

/** UpdateRoutesRequest, with the meaning of NETWORK_RULES. */
export function routesAdmitted(document: string, routes: readonly AgentRoute[]): boolean {
  requireNetworkRules(document);
  return routes.every((route) => route.device !== 'lo' && (route.source === '' || outsideLoopback(route.source)));
}

/** AddARPNeighborsRequest, with the meaning of NETWORK_RULES. */
export function neighborsAdmitted(document: string, neighbors: readonly AgentNeighbor[]): boolean {
  requireNetworkRules(document);
  return neighbors.every(
    (n) =>
      n.device !== 'lo' &&
      n.toIPAddress.mask === '' &&
      outsideLoopback(n.toIPAddress.address) &&
      [NUD_REACHABLE, NUD_PERMANENT].includes(n.state) &&
      (n.flags | (NTF_PROXY | NTF_ROUTER)) === (NTF_PROXY | NTF_ROUTER),
  );
}

/** A storage of a request, the fields the rules read. */
export interface AgentStorage {
  readonly driver: string;
  readonly driver_options?: readonly string[];
  readonly source?: string;
  readonly fstype?: string;
  readonly mount_point: string;
}

/** The driver option of an image pull as Kata's runtime writes it: the container's annotations as the pull's metadata. */
export function imagePullOption(annotations: Record<string, string>): string {
  return `image_guest_pull=${JSON.stringify({ metadata: annotations })}`;
}

/** pull_as_container: the one image_guest_pull option's metadata gives the container's own type under both CRI keys. */
function pullAsContainer(pull: AgentStorage, containerType: string): boolean {
  const options = (pull.driver_options ?? []).filter((option) => option.startsWith('image_guest_pull='));
  if (options.length !== 1) return false;
  let metadata: unknown;
  try {
    metadata = (JSON.parse(options[0]!.slice('image_guest_pull='.length)) as { metadata?: unknown }).metadata;
  } catch {
    return false;
  }
  if (typeof metadata !== 'object' || metadata === null) return false;
  const types = metadata as Record<string, unknown>;
  const crio = 'io.kubernetes.cri-o.ContainerType' in types ? types['io.kubernetes.cri-o.ContainerType'] : containerType;
  return types['io.kubernetes.cri.container-type'] === containerType && crio === containerType;
}

const plainPath = (path: string) => /^(\/[^/]+)+$/.test(path) && !/(^|\/)[.][.]?(\/|$)/.test(path);
const guestStorage = (s: AgentStorage) =>
  plainPath(s.mount_point) &&
  ['/run/kata-containers/sandbox/', '/run/kata-containers/shared/containers/'].some((dir) => s.mount_point.startsWith(dir)) &&
  !/^\/run\/kata-containers\/[^/]+\/rootfs(\/.*)?$/.test(s.mount_point);
const ownStorage = (s: AgentStorage) =>
  ((s.driver === 'ephemeral' && s.fstype === 'tmpfs' && ['shm', 'tmpfs'].includes(s.source ?? '')) ||
    (s.driver === 'local' && s.fstype === 'local' && s.source === 'local')) &&
  guestStorage(s);
const absentOrEmpty = (value: unknown) =>
  value === null ||
  value === undefined ||
  (typeof value === 'string' ? value.length === 0 : Array.isArray(value) ? value.length === 0 : typeof value === 'object' && Object.keys(value).length === 0);

function requireRules(document: string): void {
  for (const text of [HOST_RULES, NOTHING_THE_HOST_RUNS, SANDBOX_RULES])
    if (!document.includes(`\n${text}\n`)) throw new Error('the document does not have the rules the model reads');
}

/** pulled_in_guest_only(image) for a request (its container_id, OCI.Root.Path, container type, storages), with the meaning of HOST_RULES. No Rego engine. */
export function storagesAdmitted(
  document: string,
  image: string,
  storages: readonly AgentStorage[],
  request: { readonly containerId: string; readonly rootPath: string; readonly containerType?: 'container' | 'sandbox' },
): boolean {
  requireRules(document);
  const own = `/run/kata-containers/${request.containerId}/rootfs`;
  const pulls = storages.filter((s) => s.driver === 'image_guest_pull');
  return (
    pulls.length === 1 &&
    pulls[0]!.source === image &&
    pulls[0]!.mount_point === own &&
    request.rootPath === own &&
    pullAsContainer(pulls[0]!, request.containerType ?? 'container') &&
    storages.every((s) => ownStorage(s) || (s.driver === 'image_guest_pull' && s.source === image))
  );
}

/** nothing_the_host_runs for an OCI spec, with the meaning of NOTHING_THE_HOST_RUNS; every workload and sandbox rule must call it. */
export function hostRunsNothing(
  document: string,
  oci: {
    Hooks?: unknown;
    Linux?: {
      Sysctl?: unknown;
      Devices?: unknown;
      Resources?: { Devices?: unknown };
      UIDMappings?: unknown;
      GIDMappings?: unknown;
      Namespaces?: { Type: string; Path?: string }[];
    };
  },
  request: { sharedMounts?: unknown; devices?: unknown } = {},
): boolean {
  requireRules(document);
  const calls = document.match(/\n\tnothing_the_host_runs\n/g)?.length ?? 0;
  if (calls !== document.match(/\nCreateContainerRequest if \{\n/g)?.length)
    throw new Error('a CreateContainerRequest rule does not call nothing_the_host_runs');
  const hooks = oci.Hooks;
  const noHooks =
    absentOrEmpty(hooks) || (typeof hooks === 'object' && hooks !== null && !Array.isArray(hooks) && Object.values(hooks).every((list) => absentOrEmpty(list)));
  const linux = oci.Linux ?? {};
  return (
    noHooks &&
    absentOrEmpty(linux.Sysctl) &&
    absentOrEmpty(request.sharedMounts) &&
    absentOrEmpty(linux.Devices) &&
    absentOrEmpty(linux.Resources?.Devices) &&
    absentOrEmpty(request.devices) &&
    absentOrEmpty(linux.UIDMappings) &&
    absentOrEmpty(linux.GIDMappings) &&
    (linux.Namespaces ?? []).every((namespace) => namespace.Type === 'network' || (namespace.Type !== 'user' && absentOrEmpty(namespace.Path)))
  );
}

/** CreateSandboxRequest, with the meaning of SANDBOX_RULES. */
export function sandboxAdmitted(
  document: string,
  input: { guest_hook_path?: string; kernel_modules?: unknown[]; sandbox_pidns?: boolean; storages?: AgentStorage[] },
): boolean {
  requireRules(document);
  return (
    absentOrEmpty(input.guest_hook_path) && absentOrEmpty(input.kernel_modules) && input.sandbox_pidns !== true && (input.storages ?? []).every(ownStorage)
  );
}
