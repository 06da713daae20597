/**
 * What a --tee tdx install needs, computed here independently of knative/install.sh: each pod's
 * init-data as deployed (the shipped document with the digests in place of its placeholders), its
 * MRCONFIGID (SHA-384 of those bytes, node:crypto), and policy files that name them.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QUEUE_PROXY_IMAGE_PLACEHOLDER, TEE_KMS_IMAGE_PLACEHOLDER } from '../../scripts/init-data.js';
import { KNATIVE, ROOT_KEY_FILE } from './support.js';

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
