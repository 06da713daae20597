/**
 * `npm run generate:manifests`: the Knative Services of the functions, generated from the function
 * catalog (functions/catalog.ts) with the typed models of kubernetes-models and
 * @kubernetes-models/knative (each object is validated against its schema before it is written).
 * Adding a function to the catalog adds its Service here; kustomize stays the overlay mechanism.
 *
 *   knative/functions/per-function/    one Knative Service per function (the default layout)
 *   knative/functions/single-service/  one Knative Service, tee-kms, serving every route
 *                                      (FUNCTION_TARGET empty): for small clusters, one base URL
 *   knative/components/tdx/init-data/  each of those Services' and the sealer's CoCo init-data,
 *                                      with its Kata agent policy (scripts/init-data.ts)
 *
 * `--check` writes nothing and exits 1 when a committed file differs from what it would write.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Service } from '@kubernetes-models/knative/serving.knative.dev/v1/Service';
import { Document } from 'yaml';
import { routeModules } from '../functions/catalog.js';
import type { Route } from '../shared/http/route.js';
import {
  DENIED_ATTESTER_ENV,
  DENIED_COLLATERAL_ENV,
  DENIED_DEVELOPMENT_ENV,
  DENIED_POLICY_ENV,
  DENIED_TRUST_ENV,
  IMAGE_PATH,
  IMAGE_USER,
  INIT_DATA_MOUNT,
  initDataToml,
  type AllowedContainer,
} from './init-data.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The repository: scripts/.. from the source (tests), dist/scripts/../.. from the build (npm run). */
const ROOT = basename(dirname(HERE)) === 'dist' ? join(HERE, '..', '..') : join(HERE, '..');
export const OUTPUT_DIRS = ['knative/functions/per-function', 'knative/functions/single-service', 'knative/components/tdx/init-data'] as const;

/** How a function is deployed beyond its name: the defaults fit a key route; root-key operations differ. */
interface Traits {
  /** Operator-only, and the first rotate initializes an uninitialized sealer without a token: cluster-local. */
  readonly clusterLocal: boolean;
  /** Reads KMS_ADMIN_TOKEN_FILE (the tee-kms-admin-token Secret). */
  readonly adminToken: boolean;
  readonly maxScale: number;
  readonly containerConcurrency: number;
  readonly timeoutSeconds: number;
}

const KEY_ROUTE: Traits = { clusterLocal: false, adminToken: false, maxScale: 10, containerConcurrency: 50, timeoutSeconds: 30 };
/** Root-key operations: few, slow (a rotation rewraps every key), never many at once. */
const ROOT_KEY_OPERATION: Traits = { ...KEY_ROUTE, maxScale: 2, containerConcurrency: 4, timeoutSeconds: 300 };
const TRAITS: Readonly<Record<string, Traits>> = {
  rotateRootKey: { ...ROOT_KEY_OPERATION, clusterLocal: true, adminToken: true },
  verifyRootKey: { ...ROOT_KEY_OPERATION, clusterLocal: true, adminToken: true },
  recoverRootKey: ROOT_KEY_OPERATION,
  sealStatus: ROOT_KEY_OPERATION,
};
/** The one Service of --single-service: every route, so the root-key operations' timeout and the admin token. */
const SINGLE_SERVICE: Traits = { clusterLocal: false, adminToken: true, maxScale: 10, containerConcurrency: 50, timeoutSeconds: 300 };

/** getDataKey -> get-data-key: the Service name (and functions/<name>.ts, its module). */
export const serviceName = (functionName: string) => functionName.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

const PART_OF = { 'app.kubernetes.io/name': 'tee-kms', 'app.kubernetes.io/component': 'function', 'app.kubernetes.io/part-of': 'tee-kms' };
const ADMIN_TOKEN_DIR = '/var/run/secrets/tee-kms/admin';
/** KMS_METRICS_PORT's default: the port the functions' pods are scraped on. */
export const METRICS_PORT = 9464;
const PROMETHEUS_SCRAPE = { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(METRICS_PORT), 'prometheus.io/path': '/metrics' };

function knativeService(name: string, functionTarget: string, traits: Traits): Service {
  const functionLabel = { 'tee-kms/function': functionTarget === '' ? 'all' : functionTarget };
  const env = [
    // Keep NODE_ENV first: the dev component replaces env/0 (guarded by a JSON-patch test op).
    { name: 'NODE_ENV', value: 'production' },
    { name: 'FUNCTION_TARGET', value: functionTarget },
    { name: 'KMS_BIND', value: '0.0.0.0' },
    // Knative's queue-proxy (in the same pod, so inside the TD) terminates TLS.
    { name: 'KMS_TLS', value: 'off' },
    { name: 'KMS_S3_ACCESS_KEY_ID_FILE', value: '/var/run/secrets/tee-kms/s3/accessKeyId' },
    { name: 'KMS_S3_SECRET_ACCESS_KEY_FILE', value: '/var/run/secrets/tee-kms/s3/secretAccessKey' },
    { name: 'KMS_SEALER_CA_FILE', value: '/var/run/tee-kms/ca/ca.crt' },
    // MinIO's certificate is issued by the same internal CA.
    { name: 'NODE_EXTRA_CA_CERTS', value: '/var/run/tee-kms/ca/ca.crt' },
    ...(traits.adminToken ? [{ name: 'KMS_ADMIN_TOKEN_FILE', value: `${ADMIN_TOKEN_DIR}/token` }] : []),
    // GET /metrics on its own port, for Prometheus in the cluster (the pod annotations below); plain
    // HTTP, never routed by Knative: a Knative container declares one port only, the serving one.
    { name: 'KMS_METRICS_PORT', value: String(METRICS_PORT) },
    { name: 'KMS_METRICS_BIND', value: '0.0.0.0' },
  ];
  const service = new Service({
    metadata: {
      name,
      labels: { ...PART_OF, ...functionLabel, ...(traits.clusterLocal ? { 'networking.knative.dev/visibility': 'cluster-local' } : {}) },
    },
    spec: {
      template: {
        metadata: {
          // NetworkPolicies admit only pods carrying the client labels to MinIO and the sealer.
          labels: { ...PART_OF, ...functionLabel, 'tee-kms/s3-client': 'true', 'tee-kms/sealer-client': 'true' },
          annotations: {
            // A TD boots in seconds, not milliseconds: keep one warm instance.
            'autoscaling.knative.dev/min-scale': '1',
            'autoscaling.knative.dev/initial-scale': '1',
            'autoscaling.knative.dev/max-scale': String(traits.maxScale),
            'autoscaling.knative.dev/scale-down-delay': '5m',
            // Keep the activator (outside the TD) out of the request path whenever instances are up.
            'autoscaling.knative.dev/target-burst-capacity': '0',
            // Prometheus's kubernetes pod discovery scrapes annotated pods (docs/metrics.md).
            ...PROMETHEUS_SCRAPE,
          },
        },
        spec: {
          containerConcurrency: traits.containerConcurrency,
          timeoutSeconds: traits.timeoutSeconds,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          containers: [
            {
              name: 'function',
              image: 'tee-kms',
              ports: [{ name: 'http1', containerPort: FUNCTION_PORT }],
              env,
              envFrom: [{ configMapRef: { name: 'tee-kms-config' } }],
              // Ready once the root key can be obtained, or the sealer answers that it is sealed.
              readinessProbe: { httpGet: { path: '/readyz', port: FUNCTION_PORT }, periodSeconds: 5, timeoutSeconds: 2 },
              // Liveness stays cheap: the process serves HTTP.
              livenessProbe: { httpGet: { path: '/healthz', port: FUNCTION_PORT }, initialDelaySeconds: 10, periodSeconds: 15 },
              resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
              securityContext: {
                runAsNonRoot: true,
                runAsUser: IMAGE_USER.uid,
                runAsGroup: IMAGE_USER.gid,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
                seccompProfile: { type: 'RuntimeDefault' },
              },
              volumeMounts: [
                { name: 's3-credentials', mountPath: '/var/run/secrets/tee-kms/s3', readOnly: true },
                { name: 'internal-ca', mountPath: '/var/run/tee-kms/ca', readOnly: true },
                ...(traits.adminToken ? [{ name: 'admin-token', mountPath: ADMIN_TOKEN_DIR, readOnly: true }] : []),
              ],
            },
          ],
          volumes: [
            { name: 's3-credentials', secret: { secretName: 'tee-kms-s3-credentials' } },
            { name: 'internal-ca', configMap: { name: 'tee-kms-internal-ca' } },
            ...(traits.adminToken ? [{ name: 'admin-token', secret: { secretName: 'tee-kms-admin-token' } }] : []),
          ],
        },
      },
    },
  });
  service.validate();
  return service;
}

/** The process of a function container: the tdx component sets it as the command (the image's CMD). */
export const FUNCTION_COMMAND = ['node', 'dist/scripts/serve.js'] as const;
/** The sealer's Deployment (knative/base/sealer-deployment.yaml) and its command. */
const SEALER = 'tee-kms-sealer';
const SEALER_COMMAND = ['node', 'dist/sealer/main.js'] as const;

/** The attestation agent's REST API inside the TD (patches/config.yaml sets it in tee-kms-config). */
const AA_URL = 'http://127.0.0.1:8006';
/**
 * The function's port: Knative passes it to the function as PORT and to queue-proxy as USER_PORT,
 * both pinned. Another would let queue-proxy forward requests to another port on the TD's loopback,
 * the attestation agent's (whose evidence then binds a key of the caller's under the function's
 * MRCONFIGID).
 */
const FUNCTION_PORT = 8080;
/** Knative's queue-proxy program (ko's /ko-app/<name>, its image's entrypoint; Knative sets no command). */
const QUEUE_PROXY_COMMAND = ['/ko-app/queue'] as const;

/** A function Service's init-data: its container, FUNCTION_TARGET pinned, and Knative's queue-proxy. */
function functionInitData(name: string, functionTarget: string, summary: string): string {
  const containers: AllowedContainer[] = [
    {
      name: 'function',
      image: 'tee_kms_image',
      args: FUNCTION_COMMAND,
      // Its own init-data, which carries its policy for the sealer, checked against its own quote
      // from the attestation agent inside the TD. Credentials only sealed: TLS ends outside the TD,
      // and a ConfigMap the administrator edits must not turn clear ones back on.
      env: {
        NODE_ENV: 'production',
        FUNCTION_TARGET: functionTarget,
        KMS_INIT_DATA_FILE: `${INIT_DATA_MOUNT}/${name}.toml`,
        KMS_ATTESTER: 'tdx-aa',
        KMS_AA_URL: AA_URL,
        KMS_REQUIRE_SEALED: 'true',
        PORT: String(FUNCTION_PORT),
        PATH: IMAGE_PATH,
      },
      closedEnv: [
        {
          prefix: 'KMS_TRUSTED_SEALER_PCCS_',
          allowed: 'pccs_env',
          why: [
            "Where it fetches DCAP collateral for the sealer's quotes (KMS_TRUSTED_SEALER_PCCS_URL) and, for a PCCS with a private CA,",
            'the CA its TLS certificate must chain to (KMS_TRUSTED_SEALER_PCCS_CA): only as listed here, NAME=VALUE exactly, and',
            'required, so that nobody can point it at a PCCS of their own serving older, still valid collateral (knative/install.sh',
            'writes it from --pccs-url and --pccs-ca). None listed: a function with either set is not created.',
          ],
          required: true,
        },
      ],
      deniedEnv: [
        {
          list: 'denied_trust_env',
          names: DENIED_TRUST_ENV,
          why: 'Refused: a sealer policy or collateral file would replace the measured policy or PCCS, or its own quote, which vouches for it, come from elsewhere.',
        },
      ],
    },
    { name: 'queue-proxy', image: 'queue_proxy_image', args: QUEUE_PROXY_COMMAND, env: { USER_PORT: String(FUNCTION_PORT) } },
  ];
  return initDataToml({ name, summary, containers });
}

const GENERATED = 'Generated by scripts/generate-manifests.ts from functions/catalog.ts: do not edit, run npm run generate:manifests.';

function yamlFile(comment: string[], value: unknown): string {
  // YAML 1.1 quoting: Kubernetes reads `off`, `yes`, `on` unquoted as booleans.
  const doc = new Document(value, { version: '1.1' });
  doc.commentBefore = [...comment, GENERATED].map((line) => ` ${line}`).join('\n');
  return doc.toString({ lineWidth: 0 });
}

function kustomization(comment: string[], resources: string[]): string {
  return yamlFile(comment, { apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace: 'tee-kms', resources });
}

const describe = (route: Route) => `${route.methods.join('|')} ${route.path}${route.path.endsWith('/') && route.path !== '/' ? '{name}' : ''}`;

/** Every file the generator writes, by path relative to the repository. */
export async function generateManifests(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const routes = await Promise.all(Object.entries(routeModules).map(async ([name, load]) => ({ name, route: await load() })));
  const perFunction = OUTPUT_DIRS[0];
  for (const { name, route } of routes) {
    if (route.name !== name) throw new Error(`functions/catalog.ts: ${name} loads the route ${route.name}`);
    const file = `${serviceName(name)}.yaml`;
    const comment = [
      `${name}: ${describe(route)} (functions/${serviceName(name)}.ts), one Knative Service per function.`,
      'Same image as every function; FUNCTION_TARGET selects it. TLS ends before the pod (docs/deploy-knative.md).',
    ];
    files.set(`${perFunction}/${file}`, yamlFile(comment, knativeService(serviceName(name), name, TRAITS[name] ?? KEY_ROUTE).toJSON()));
  }
  files.set(
    `${perFunction}/kustomization.yaml`,
    kustomization(
      ['The default layout: one Knative Service per function (install.sh without --single-service).'],
      routes.map(({ name }) => `${serviceName(name)}.yaml`),
    ),
  );
  const single = OUTPUT_DIRS[1];
  files.set(
    `${single}/tee-kms.yaml`,
    yamlFile(
      [
        'Every route in one Knative Service (FUNCTION_TARGET empty): install.sh --single-service.',
        `Serves ${routes.map(({ route }) => describe(route)).join(', ')}.`,
        'One TD instead of one per function: for small clusters, and for a single base URL.',
      ],
      knativeService('tee-kms', '', SINGLE_SERVICE).toJSON(),
    ),
  );
  files.set(`${single}/kustomization.yaml`, kustomization(['One Knative Service serving every route (install.sh --single-service).'], ['tee-kms.yaml']));
  const initData = OUTPUT_DIRS[2];
  for (const { name, route } of routes) {
    files.set(`${initData}/${serviceName(name)}.toml`, functionInitData(serviceName(name), name, `${name}, ${describe(route)}.`));
  }
  files.set(`${initData}/tee-kms.toml`, functionInitData('tee-kms', '', 'every function in one Service (--single-service).'));
  files.set(
    `${initData}/${SEALER}.toml`,
    initDataToml({
      name: SEALER,
      summary: 'the sealing service, which holds the root key.',
      containers: [
        {
          name: 'sealer',
          image: 'tee_kms_image',
          args: SEALER_COMMAND,
          // Its own init-data, from which it reads the measured TDX and admin policies, checked
          // against its own quote from the attestation agent inside the TD.
          env: { NODE_ENV: 'production', KMS_SEALER_INIT_DATA_FILE: `${INIT_DATA_MOUNT}/${SEALER}.toml`, KMS_SEALER_ATTESTER: 'tdx-aa', PATH: IMAGE_PATH },
          closedEnv: [
            {
              prefix: 'KMS_SEALER_UNSEAL_',
              allowed: 'auto_unseal_env',
              why: [
                'Auto-unseal (KMS_SEALER_UNSEAL_*, docs/root-key.md) lets whoever controls its KBS unseal: it is on only as listed',
                'here, NAME=VALUE exactly, e.g. ["KMS_SEALER_UNSEAL_KBS_URL=https://kbs.example:8080", "KMS_SEALER_UNSEAL_CA=<PEM>"],',
                'which changes MRCONFIGID (knative/install.sh --auto-unseal-* writes it). None listed: a sealer with any set is not created.',
              ],
            },
            {
              // The prefix covers KMS_SEALER_ROOT_KEY_FILE too.
              prefix: 'KMS_SEALER_ROOT_KEY',
              allowed: 'root_key_env',
              why: [
                'Mode 1 (KMS_SEALER_ROOT_KEY or KMS_SEALER_ROOT_KEY_FILE, docs/root-key.md) takes the root key from a Secret that the',
                'cluster administrator can read and replace: it is on only as listed here, NAME=VALUE exactly, which changes MRCONFIGID',
                '(knative/install.sh writes the KMS_SEALER_ROOT_KEY_FILE of components/root-key-secret when given a root key).',
                'None listed: the Shamir mode (mode 2), and a sealer with either set is not created.',
              ],
            },
            {
              prefix: 'KMS_SEALER_CUSTODIANS',
              allowed: 'custodians_env',
              why: [
                "KMS_SEALER_CUSTODIANS (docs/custodians.md) pins the custodians' keys, which every rotation (the first included) must",
                'encrypt its shares to, and KMS_SEALER_CUSTODIANS_THRESHOLD how many of their shares recover the root key: they are on',
                'only as listed here, NAME=VALUE exactly, e.g. ["KMS_SEALER_CUSTODIANS=<t1>,<t2>,<t3>", "KMS_SEALER_CUSTODIANS_THRESHOLD=2"],',
                'which changes MRCONFIGID (knative/install.sh --custodian-keys and --threshold write them). None listed: not pinned, and',
                'a sealer with either set is not created. Listed, they must also be set: leaving one out would unpin the custodians.',
                'During a change of custodians KMS_SEALER_CUSTODIANS_PREVIOUS and KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD name the',
                'previous ones, whose shares still recover the sealer (install.sh --previous-custodian-keys and --previous-threshold).',
              ],
              required: true,
            },
            {
              prefix: 'KMS_SEALER_PCCS_',
              allowed: 'pccs_env',
              why: [
                "Where the sealer fetches DCAP collateral for the functions' quotes (KMS_SEALER_PCCS_URL) and, for a PCCS with a private CA,",
                'the CA its TLS certificate must chain to (KMS_SEALER_PCCS_CA): only as listed here, NAME=VALUE exactly, and required, so',
                'that nobody can point it at a PCCS of their own serving older, still valid collateral (a TCB level from before an',
                'advisory, a CRL from before a revocation). knative/install.sh writes it from --pccs-url and --pccs-ca. None listed: a',
                'sealer with either set is not created.',
              ],
              required: true,
            },
          ],
          deniedEnv: [
            {
              list: 'denied_policy_env',
              names: DENIED_POLICY_ENV,
              why: 'Refused: the policies as files would replace the measured ones install.sh appends to this document.',
            },
            {
              list: 'denied_collateral_env',
              names: DENIED_COLLATERAL_ENV,
              why: 'Refused: collateral from a file the host provides (a ConfigMap) could be older than the PCCS pccs_env names.',
            },
            {
              list: 'denied_attester_env',
              names: DENIED_ATTESTER_ENV,
              why: "Refused: its own quote comes from the attestation agent on the TD's loopback (the default), never from elsewhere.",
            },
            {
              list: 'denied_development_env',
              names: DENIED_DEVELOPMENT_ENV,
              why: 'Refused: plaintext shares, a development relaxation, would be readable at every hop between this TD and a custodian.',
            },
          ],
        },
      ],
    }),
  );
  return files;
}

/** Files that differ from what the generator writes (changed, missing or left over), relative to the repository. */
export async function staleManifests(root = ROOT): Promise<string[]> {
  const files = await generateManifests();
  const stale = [...files].filter(([path, text]) => !existsSync(join(root, path)) || readFileSync(join(root, path), 'utf8') !== text).map(([path]) => path);
  for (const dir of OUTPUT_DIRS) {
    if (!existsSync(join(root, dir))) continue;
    for (const f of readdirSync(join(root, dir))) if (!files.has(`${dir}/${f}`)) stale.push(`${dir}/${f}`);
  }
  return stale.sort();
}

async function main(check: boolean): Promise<void> {
  if (check) {
    const stale = await staleManifests();
    if (stale.length > 0) {
      process.stderr.write(`generate-manifests: out of date (run npm run generate:manifests): ${stale.join(', ')}\n`);
      process.exit(1);
    }
    return;
  }
  const files = await generateManifests();
  for (const dir of OUTPUT_DIRS) rmSync(join(ROOT, dir), { recursive: true, force: true });
  for (const [path, text] of files) {
    mkdirSync(dirname(join(ROOT, path)), { recursive: true });
    writeFileSync(join(ROOT, path), text);
  }
  process.stderr.write(`generate-manifests: wrote ${[...files.keys()].map((p) => relative(ROOT, join(ROOT, p))).join(', ')}\n`);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await main(process.argv.includes('--check'));
