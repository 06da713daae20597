import { loadOptions, option, parse, type OptionValues } from './options.js';
import { KmsError } from './errors.js';
import { assertPrefix } from './store/keys.js';

/** Every option of the KMS functions, declared once. README.md "Configuration" lists them. */
export const kmsOptions = {
  dataDir: option({
    env: 'KMS_DATA_DIR',
    default: '.kms',
    parse: parse.string,
    description: 'Folder for the embedded store (and, under npm start, the local TLS certificate and sealer state).',
  }),
  store: option({
    env: 'KMS_STORE',
    default: 'fs' as 'fs' | 's3',
    parse: parse.oneOf('fs', 's3'),
    description: '`fs`: embedded store in KMS_DATA_DIR; `s3`: S3-compatible storage (MinIO).',
  }),
  s3Endpoint: option({ env: 'KMS_S3_ENDPOINT', default: '', parse: parse.url, description: 'S3 endpoint URL, e.g. https://minio.tee-kms.svc:9000.' }),
  s3Region: option({ env: 'KMS_S3_REGION', default: 'us-east-1', parse: parse.string, description: 'S3 region.' }),
  s3Bucket: option({
    env: 'KMS_S3_BUCKET',
    default: 'tee-kms',
    parse: parse.string,
    description: 'Bucket holding the wrapped keys (must exist; enable versioning).',
  }),
  s3Prefix: option({
    env: 'KMS_S3_PREFIX',
    default: '',
    parse: (raw, env) => {
      // The store checks it again (assertPrefix); here a wrong one stops the start, naming the variable.
      try {
        assertPrefix(raw);
      } catch {
        throw new KmsError('CONFIG', `${env} must be path segments of letters, digits, . _ - (each starting with a letter or digit), ending with /`);
      }
      return raw;
    },
    description: 'Key prefix inside the bucket, ending with `/`.',
  }),
  s3AccessKeyId: option({ env: 'KMS_S3_ACCESS_KEY_ID', default: '', parse: parse.string, secret: true, description: 'S3 access key id.' }),
  s3SecretAccessKey: option({ env: 'KMS_S3_SECRET_ACCESS_KEY', default: '', parse: parse.string, secret: true, description: 'S3 secret key.' }),
  s3ForcePathStyle: option({ env: 'KMS_S3_FORCE_PATH_STYLE', default: true, parse: parse.boolean, description: 'Path-style bucket addressing (MinIO, RGW).' }),
  rootKey: option({
    env: 'KMS_ROOT_KEY',
    default: undefined as Buffer | undefined,
    parse: parse.key256,
    secret: true,
    description: 'Mode 1: the root key, base64 of 32 bytes (or KMS_ROOT_KEY_FILE).',
  }),
  sealerUrls: option({
    env: 'KMS_SEALER_URL',
    default: [] as readonly string[],
    parse: parse.urlList(16),
    description:
      'The attested sealing service (KBS protocol) the root key comes from, e.g. https://tee-kms-sealer:9877; or a comma-separated list of its replicas, tried in order, the last one that answered first.',
  }),
  sealerCaFile: option({
    env: 'KMS_SEALER_CA_FILE',
    default: '',
    parse: parse.string,
    description: "PEM of the CA (or self-signed certificate) the sealing service's TLS certificate must chain to; nothing else is trusted.",
  }),
  trustedSealerTdxPolicyFile: option({
    env: 'KMS_TRUSTED_SEALER_TDX_POLICY_FILE',
    default: '',
    parse: parse.string,
    description:
      "Reference values the sealing service's own TDX evidence must meet (the format of KMS_SEALER_TDX_POLICY_FILE): functions attest it before they trust a root key from it. Without it only sample evidence is accepted from it, and only when NODE_ENV is not production.",
  }),
  trustedSealerTdxCollateralFile: option({
    env: 'KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE',
    default: '',
    parse: parse.string,
    description: "DCAP collateral (a file) for checking the sealing service's quotes. Excludes KMS_TRUSTED_SEALER_PCCS_URL.",
  }),
  trustedSealerPccsUrl: option({
    env: 'KMS_TRUSTED_SEALER_PCCS_URL',
    default: '',
    parse: parse.url,
    description:
      "DCAP collateral from a PCCS or Intel PCS (https only) for checking the sealing service's quotes. Excludes KMS_TRUSTED_SEALER_TDX_COLLATERAL_FILE.",
  }),
  trustedSealerPccsAllowHttp: option({
    env: 'KMS_TRUSTED_SEALER_PCCS_ALLOW_HTTP',
    default: false,
    parse: parse.boolean,
    description:
      'Accept an http:// KMS_TRUSTED_SEALER_PCCS_URL: tests only. Whoever controls an http PCCS connection can serve older collateral that is still valid. Refused when NODE_ENV=production.',
  }),
  trustedSealerPccsCa: option({
    env: 'KMS_TRUSTED_SEALER_PCCS_CA',
    default: '',
    parse: parse.string,
    description:
      "PEM of the CA certificate(s) the TLS certificate of KMS_TRUSTED_SEALER_PCCS_URL must chain to (a PCCS with a private CA). Without it that connection trusts Node's bundled root certificates only, never NODE_EXTRA_CA_CERTS.",
  }),
  trustedSealerTdxRootCaFile: option({
    env: 'KMS_TRUSTED_SEALER_TDX_ROOT_CA_FILE',
    default: '',
    parse: parse.string,
    description: "A PEM root CA trusted instead of Intel's for those quotes: tests and private DCAP PKIs only; refused when NODE_ENV=production.",
  }),
  attester: option({
    env: 'KMS_ATTESTER',
    default: 'sample' as 'sample' | 'tdx-configfs' | 'tdx-aa',
    parse: parse.oneOf('sample', 'tdx-configfs', 'tdx-aa'),
    description:
      'How this pod proves itself to the sealing service: `tdx-configfs` (Linux configfs-tsm), `tdx-aa` (CoCo attestation agent), `sample` (no TEE; development only, refused when NODE_ENV=production).',
  }),
  sampleInitData: option({
    env: 'KMS_SAMPLE_INIT_DATA',
    default: '',
    parse: parse.identity,
    description:
      "The workload identity (init-data digest, 96 hex digits) that `sample` evidence claims, which the sealing service's admin policy grants operations to. Development only.",
  }),
  initDataFile: option({
    env: 'KMS_INIT_DATA_FILE',
    default: '',
    parse: parse.string,
    description:
      "This pod's CoCo init-data: the TOML file, byte for byte, whose digest the host put in its MRCONFIGID. Sent as `init-data` with every attestation to the sealing service, which refuses it unless its digest is the evidence's identity, and whose TDX policy may require entries of it. With KMS_ATTESTER=sample its digest is the identity claimed.",
  }),
  tsmRoot: option({ env: 'KMS_TSM_ROOT', default: '/sys/kernel/config/tsm', parse: parse.string, description: 'configfs-tsm mount point (tdx-configfs).' }),
  aaUrl: option({
    env: 'KMS_AA_URL',
    default: 'http://127.0.0.1:8006',
    parse: parse.url,
    description: "The CoCo attestation agent's local endpoint (tdx-aa).",
  }),
  rootKeyRefreshSeconds: option({
    env: 'KMS_ROOT_KEY_REFRESH_SECONDS',
    default: 30,
    parse: parse.integer(1, 86_400),
    description: 'How often a function asks the sealing service again for the current root key (to follow rotations).',
  }),
  rootKeyGraceSeconds: option({
    env: 'KMS_ROOT_KEY_GRACE_SECONDS',
    default: 600,
    parse: parse.integer(0, 86_400),
    description:
      'While no sealing service answers at all, a function keeps using the root key it holds for this long after one last released it; a signed answer that the service is sealed drops it at once. 0: no grace.',
  }),
  requireSealed: option({
    env: 'KMS_REQUIRE_SEALED',
    default: false,
    parse: parse.boolean,
    description:
      "Take credentials only sealed to the attested service key (`Authorization: Sealed`, docs/sealed-channel.md): a token in the query or a Bearer header is refused with 401. The tdx overlay sets it, and the functions' agent policy requires exactly `true`.",
  }),
  sealedKeyReuseSeconds: option({
    env: 'KMS_SEALED_KEY_REUSE_SECONDS',
    default: 300,
    parse: parse.integer(0, 3600),
    description:
      "How long a function keeps the keys it agreed with a sealing client (its ephemeral `epk`, its response key), so a client reusing them costs no new key agreement; an answer's own ephemeral key is reused for at most as long. 0: a key agreement per message.",
  }),
  sealedReplayEntries: option({
    env: 'KMS_SEALED_REPLAY_ENTRIES',
    default: 200_000,
    parse: parse.integer(100, 5_000_000),
    description:
      'How many sealed credentials (their `jti`) a function remembers, each until it expires (about 61 s for one sealed just before it was sent), so that none is accepted twice; when all are live, new sealed requests are shed with 503 rather than one forgotten early. About 80 bytes each: the default (about 15 MB) sustains about 3,300 sealed requests per second per instance.',
  }),
  adminToken: option({
    env: 'KMS_ADMIN_TOKEN',
    default: '',
    parse: parse.string,
    secret: true,
    description: 'Operator token for rotate and verify (`Authorization: Bearer …`); rotation is refused without it once initialized.',
  }),
  custodianKeysFile: option({
    env: 'KMS_CUSTODIAN_KEYS_FILE',
    default: '',
    parse: parse.string,
    description:
      'A JSON array of the custodians\' public JWKs (EC P-256, ECDH-ES+A256KW), one per share in share order: rotate encrypts share i to key i. A rotate body {"custodians": […]} overrides it; without either, the keys stored with the current root key are used. Read at every rotate; npm start also checks it at start.',
  }),
  shares: option({ env: 'KMS_SHARES', default: 5, parse: parse.integer(2, 255), description: 'Shamir shares made by rotate.' }),
  threshold: option({
    env: 'KMS_THRESHOLD',
    default: 3,
    parse: parse.integer(2, 255),
    description: 'Shares needed to recover the root key; at most KMS_SHARES (checked when the configuration is loaded).',
  }),
  rotationLeaseSeconds: option({
    env: 'KMS_ROTATION_LEASE_SECONDS',
    default: 60,
    parse: parse.integer(1, 3_600),
    description: "A range of a rotation's rewrap whose holder crashed is taken over after its lease lapses.",
  }),
  rotationConcurrency: option({
    env: 'KMS_ROTATION_CONCURRENCY',
    default: 32,
    parse: parse.integer(1, 1_024),
    description: 'Primary keys rewrapped in parallel during rotation, per instance taking part.',
  }),
  keyCacheTtlSeconds: option({
    env: 'KMS_KEY_CACHE_TTL_SECONDS',
    default: 300,
    parse: parse.integer(0, 86_400),
    description: 'How long unwrapped primary and data keys and verified credentials stay cached in memory, from when they were read (reads do not extend it).',
  }),
  keyCacheEntries: option({
    env: 'KMS_KEY_CACHE_ENTRIES',
    default: 10_000,
    parse: parse.integer(0, 10_000_000),
    description: 'Bound on each in-memory cache.',
  }),
  accessLog: option({
    env: 'KMS_ACCESS_LOG',
    default: true,
    parse: parse.boolean,
    description:
      'One JSON line per request on stdout (function, method, path, status, ms; never the query). Read by shared/log.ts when it is imported; the hosts refuse a bad value at start. The sealing service logs its own requests regardless.',
  }),
};

export type KmsConfig = OptionValues<typeof kmsOptions>;

/**
 * The functions' configuration, each option checked, then the options checked against each other:
 * every host loads it through here (npm start and the sealing service at start), so that a
 * combination no rotation could use stops them at start rather than failing the first rotate.
 */
export function loadKmsConfig(env: NodeJS.ProcessEnv = process.env): KmsConfig {
  const config = loadOptions(kmsOptions, env);
  assertThresholdWithinShares(config);
  return config;
}

/** KMS_THRESHOLD at most KMS_SHARES: no split into n shares can need more than n of them. */
export function assertThresholdWithinShares({ shares, threshold }: { readonly shares: number; readonly threshold: number }): void {
  if (threshold > shares) {
    throw new KmsError(
      'CONFIG',
      `KMS_THRESHOLD (${threshold}) exceeds KMS_SHARES (${shares}): a root key split into ${shares} shares cannot need ${threshold} to recover; set KMS_THRESHOLD to at most KMS_SHARES, or raise KMS_SHARES`,
    );
  }
}
