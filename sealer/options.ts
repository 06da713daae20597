import { KmsError } from '../shared/errors.js';
import { MAX_SHARES } from '../shared/sealer-client/protocol.js';
import { parseMetricsPort } from '../shared/metrics/port.js';
import { loadOptions, option, parse, type OptionValues } from '../shared/options.js';

/** Every option of the sealing service, declared once. */
export const sealerOptions = {
  host: option({ env: 'KMS_SEALER_HOST', default: '127.0.0.1', parse: parse.string, description: 'Address to listen on (0.0.0.0 in a pod).' }),
  port: option({ env: 'KMS_SEALER_PORT', default: 9877, parse: parse.integer(0, 65_535), description: 'HTTPS port; 0 picks a free one (printed at start).' }),
  metricsPort: option({
    env: 'KMS_SEALER_METRICS_PORT',
    default: 9465 as number | undefined,
    parse: parseMetricsPort,
    description: 'Port of GET /metrics (Prometheus, plain HTTP), apart from the HTTPS API; 0 or off disables it.',
  }),
  metricsHost: option({
    env: 'KMS_SEALER_METRICS_HOST',
    default: '127.0.0.1',
    parse: parse.string,
    description: 'Address the metrics port listens on; the Knative manifests set 0.0.0.0 for in-cluster scraping.',
  }),
  dataDir: option({
    env: 'KMS_SEALER_DATA_DIR',
    default: '.kms/sealer',
    parse: parse.string,
    description:
      'Folder for the generated TLS certificate. The state record lives in the key store (KMS_STORE); one that earlier versions kept here (KMS_STORE=fs) is copied there at start if the key store has none.',
  }),
  rootKey: option({
    env: 'KMS_SEALER_ROOT_KEY',
    default: undefined as Buffer | undefined,
    parse: parse.key256,
    secret: true,
    description: 'Mode 1: the root key, base64 of 32 bytes (or KMS_SEALER_ROOT_KEY_FILE); unsealed at once, rotation refused.',
  }),
  insecureDevMode: option({
    env: 'KMS_SEALER_INSECURE_DEV_MODE',
    default: false,
    parse: parse.boolean,
    description: 'Accept "sample" evidence, which proves nothing. Development only; announced on stderr, refused when NODE_ENV=production.',
  }),
  convertV1State: option({
    env: 'KMS_SEALER_CONVERT_V1_STATE',
    default: false,
    parse: parse.boolean,
    description:
      'Convert a state record of the previous format (v1, unauthenticated) at the next recovery. Off, such a record stops the start: a sealer that wrote v2 never goes back, so it is an old deployment to convert once, or a rollback by whoever can write the bucket. Refused when NODE_ENV=production.',
  }),
  initDataFile: option({
    env: 'KMS_SEALER_INIT_DATA_FILE',
    default: '',
    parse: parse.string,
    description:
      "This TD's own init-data (TOML). Its digest must be this TD's identity (TDX: its MRCONFIGID), checked against the service's own evidence at start. Its data entries `tdx-policy.json` and `admin-policy.json`, when present, are the TDX reference values and the admin policy, measured with the TD (docs/attestation.md).",
  }),
  adminPolicyFile: option({
    env: 'KMS_SEALER_ADMIN_POLICY_FILE',
    default: '',
    parse: parse.string,
    description:
      'JSON {"rotate": [id…], "verify": […], "recover": […], "seal": […]}: the workload identities (init-data digests, a TD\'s MRCONFIGID; 96 hex digits) granted each admin operation. Without it no workload may call an admin route.',
  }),
  attester: option({
    env: 'KMS_SEALER_ATTESTER',
    default: 'sample' as 'sample' | 'tdx-configfs' | 'tdx-aa',
    parse: parse.oneOf('sample', 'tdx-configfs', 'tdx-aa'),
    description:
      'How the sealing service proves itself to functions and custodians: `tdx-configfs`, `tdx-aa`, or `sample` (no TEE; development only, refused when NODE_ENV=production).',
  }),
  tsmRoot: option({
    env: 'KMS_SEALER_TSM_ROOT',
    default: '/sys/kernel/config/tsm',
    parse: parse.string,
    description: 'configfs-tsm mount point (tdx-configfs).',
  }),
  aaUrl: option({
    env: 'KMS_SEALER_AA_URL',
    default: 'http://127.0.0.1:8006',
    parse: parse.url,
    description: "The CoCo attestation agent's local endpoint (tdx-aa).",
  }),
  plaintextShares: option({
    env: 'KMS_SEALER_PLAINTEXT_SHARES',
    default: undefined as 'allow' | 'refuse' | undefined,
    parse: parse.oneOf('allow', 'refuse'),
    description:
      '`allow` or `refuse` shares in plaintext, out of a rotation and into recovery and verification (else they travel encrypted to custodians and to the recovery key). Default: `refuse` when NODE_ENV=production, else `allow`; `allow` is for development and refused when NODE_ENV=production.',
  }),
  custodians: option({
    env: 'KMS_SEALER_CUSTODIANS',
    default: undefined as readonly string[] | undefined,
    parse: parseThumbprints,
    description:
      "Pins the custodians: a comma list of their public keys' RFC 7638 SHA-256 thumbprints (base64url, 43 characters each), in share order, 2 to 255. Every rotation, the first included, must then encrypt its n shares (n = their number) to exactly those keys, and no share leaves in plaintext. Under TDX, measured in the sealer's init-data (docs/custodians.md).",
  }),
  custodiansThreshold: option({
    env: 'KMS_SEALER_CUSTODIANS_THRESHOLD',
    default: undefined as number | undefined,
    parse: parse.integer(2, MAX_SHARES),
    description:
      'The threshold every rotation must use with pinned custodians: how many of their shares recover the root key, 2 to their number. Required with KMS_SEALER_CUSTODIANS, refused without it; under TDX, measured beside it (docs/custodians.md).',
  }),
  custodiansPrevious: option({
    env: 'KMS_SEALER_CUSTODIANS_PREVIOUS',
    default: undefined as readonly string[] | undefined,
    parse: parseThumbprints,
    description:
      'During a change of custodians: the thumbprints of the custodians being replaced (as KMS_SEALER_CUSTODIANS), whose shares may still recover this sealing service, each answering its recovery challenge, until a rotation to the pinned custodians is verified. Only with KMS_SEALER_CUSTODIANS; under TDX, measured beside it (docs/custodians.md).',
  }),
  custodiansPreviousThreshold: option({
    env: 'KMS_SEALER_CUSTODIANS_PREVIOUS_THRESHOLD',
    default: undefined as number | undefined,
    parse: parse.integer(2, MAX_SHARES),
    description:
      "How many of the previous custodians' shares recover this sealing service: 2 to their number. Required with KMS_SEALER_CUSTODIANS_PREVIOUS, refused without it.",
  }),
  tdxPolicyFile: option({
    env: 'KMS_SEALER_TDX_POLICY_FILE',
    default: '',
    parse: parse.string,
    description:
      'JSON reference values for TDX evidence: mrTd (required), rtmr0, rtmr1, rtmr2, rtmr3, eventDigests, mrConfigId, allowedTcbStatuses, deniedAdvisoryIds, minTcbEvaluationDataNumber (see docs/attestation.md). Setting it enables the TDX verifier; it then needs KMS_SEALER_TDX_COLLATERAL_FILE or KMS_SEALER_PCCS_URL.',
  }),
  tdxCollateralFile: option({
    env: 'KMS_SEALER_TDX_COLLATERAL_FILE',
    default: '',
    parse: parse.string,
    description:
      'DCAP collateral from a file (JSON: TCB info, QE identity, CRLs and their issuer chains, as `verify-quote --collateral` reads); refresh it before its nextUpdate. Excludes KMS_SEALER_PCCS_URL.',
  }),
  pccsUrl: option({
    env: 'KMS_SEALER_PCCS_URL',
    default: '',
    parse: parse.url,
    description:
      'DCAP collateral from a PCCS or Intel PCS (https://api.trustedservices.intel.com), https only, fetched per platform (FMSPC, read from a PCK certificate whose chain verifies) and cached until its nextUpdate, at most 1 h; a failed fetch is remembered for 30 s. Excludes KMS_SEALER_TDX_COLLATERAL_FILE.',
  }),
  pccsAllowHttp: option({
    env: 'KMS_SEALER_PCCS_ALLOW_HTTP',
    default: false,
    parse: parse.boolean,
    description:
      'Accept an http:// KMS_SEALER_PCCS_URL: tests only. Whoever controls an http PCCS connection can serve older collateral that is still valid (a TCB level from before an advisory, a CRL from before a revocation). Refused when NODE_ENV=production.',
  }),
  pccsCa: option({
    env: 'KMS_SEALER_PCCS_CA',
    default: '',
    parse: parse.string,
    description:
      "PEM of the CA certificate(s) a PCCS's TLS certificate must chain to, for a PCCS with a private CA; given inline so that the agent policy can pin it. Without it the PCCS connection trusts Node's bundled root certificates only, never NODE_EXTRA_CA_CERTS (which names the internal CA, a Secret the cluster administrator can replace).",
  }),
  tdxRootCaFile: option({
    env: 'KMS_SEALER_TDX_ROOT_CA_FILE',
    default: '',
    parse: parse.string,
    description:
      'PEM root CA trusted instead of the pinned Intel SGX Root CA: tests and private DCAP PKIs only. Announced on stderr; refused when NODE_ENV=production.',
  }),
  unsealKbsUrl: option({
    env: 'KMS_SEALER_UNSEAL_KBS_URL',
    default: '',
    parse: parse.url,
    description:
      "Auto-unseal: the https URL of a Trustee KBS (or another sealing service) that releases the key-encryption key to this sealer after attesting it; the root key is then stored wrapped under that key and a restart needs no shares (docs/root-key.md). Mode 2 only. Under TDX, the sealer's init-data must allow it (docs/attestation.md).",
  }),
  unsealResource: option({
    env: 'KMS_SEALER_UNSEAL_RESOURCE',
    default: 'tee-kms/unseal/kek',
    parse: (raw: string, env: string) => {
      if (!/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(raw) || raw.split('/').some((part) => part === '.' || part === '..')) {
        throw new KmsError('CONFIG', `${env} must be <repository>/<type>/<tag>`);
      }
      return raw;
    },
    description: 'Auto-unseal: the KBS resource holding the key-encryption key (32 raw bytes), `<repository>/<type>/<tag>`.',
  }),
  unsealCa: option({
    env: 'KMS_SEALER_UNSEAL_CA',
    default: '',
    parse: parse.string,
    description:
      "Auto-unseal: PEM of the CA the KBS's TLS certificate must chain to (nothing else is trusted). Given inline so that the agent policy can pin it; excludes KMS_SEALER_UNSEAL_CA_FILE.",
  }),
  unsealCaFile: option({
    env: 'KMS_SEALER_UNSEAL_CA_FILE',
    default: '',
    parse: parse.string,
    description: 'Auto-unseal: that CA from a file. A file is not measured: refused when NODE_ENV=production (use KMS_SEALER_UNSEAL_CA there).',
  }),
  unsealRetrySeconds: option({
    env: 'KMS_SEALER_UNSEAL_RETRY_SECONDS',
    default: 30,
    parse: parse.integer(1, 3_600),
    description: 'Auto-unseal: the wait before asking an unreachable or refusing KBS again; it is asked until it answers.',
  }),
  tlsCertFile: option({
    env: 'KMS_SEALER_TLS_CERT_FILE',
    default: '',
    parse: parse.string,
    description: 'PEM certificate (chain) to serve; with KMS_SEALER_TLS_KEY_FILE.',
  }),
  tlsKeyFile: option({ env: 'KMS_SEALER_TLS_KEY_FILE', default: '', parse: parse.string, description: 'PEM private key of that certificate.' }),
  tlsHostnames: option({
    env: 'KMS_SEALER_TLS_HOSTNAMES',
    default: ['localhost', '127.0.0.1', '::1'] as readonly string[],
    parse: (raw: string) =>
      raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    description: 'Names and addresses in the self-signed certificate made when no certificate is configured.',
  }),
  tokenTtlSeconds: option({
    env: 'KMS_SEALER_TOKEN_TTL_SECONDS',
    default: 300,
    parse: parse.integer(1, 86_400),
    description: 'Lifetime of attestation tokens (and of the attested session cookie).',
  }),
  nonceTtlSeconds: option({
    env: 'KMS_SEALER_NONCE_TTL_SECONDS',
    default: 60,
    parse: parse.integer(1, 3_600),
    description: 'Time from /auth to /attest: the challenge nonce and its session expire after it.',
  }),
  recoveryTtlSeconds: option({
    env: 'KMS_SEALER_RECOVERY_TTL_SECONDS',
    default: 600,
    parse: parse.integer(1, 86_400),
    description: 'Recovery progress (shares received so far) is discarded this long after the first share.',
  }),
  stopWithParent: option({
    env: 'KMS_SEALER_STOP_WITH_PARENT',
    default: false,
    parse: parse.boolean,
    description: 'Stop when standard input closes: npm start sets it, so the sealer never outlives the process that started it.',
  }),
  peers: option({
    env: 'KMS_SEALER_PEERS',
    default: [] as readonly string[],
    parse: (raw: string, env: string) => {
      const urls = raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      for (const url of urls)
        if (!/^https:\/\/[^/?#\s]+$/.test(url)) {
          throw new KmsError('CONFIG', `${env}: each peer must be https://host:port, with nothing after it`);
        }
      return urls;
    },
    description:
      'Comma list of the other replicas (https://host:port). A replica that is sealed asks them for the root key over KBS, attesting as a sealer (identity granted "sealer-peer" in the admin policy), and follows the state record they share (docs/replicas.md).',
  }),
  peerCaFile: option({
    env: 'KMS_SEALER_PEER_CA_FILE',
    default: '',
    parse: parse.string,
    description: "PEM certificate(s) trusted for the peers' TLS; default: this replica's own certificate (replicas share one).",
  }),
  syncSeconds: option({
    env: 'KMS_SEALER_SYNC_SECONDS',
    default: 5,
    parse: parse.integer(1, 3_600),
    description: 'With peers: how often a replica re-reads the shared state record and, while sealed, asks its peers for the root key.',
  }),
  sampleInitData: option({
    env: 'KMS_SEALER_SAMPLE_INIT_DATA',
    default: '',
    parse: parse.identity,
    description: "The identity (96 hex) that this service's `sample` evidence claims, as a peer of other replicas (development only).",
  }),
  maxSessions: option({
    env: 'KMS_SEALER_MAX_SESSIONS',
    default: 10_000,
    parse: parse.integer(1, 1_000_000),
    description: 'Bound on unanswered KBS challenges kept in memory (when full, the oldest gives way) and, apart, on attested sessions.',
  }),
};

/** A thumbprint as jwkThumbprint writes it: 32 bytes of SHA-256, base64url without padding. */
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;

/** KMS_SEALER_CUSTODIANS: 2 to MAX_SHARES canonical thumbprints, none twice; the message names the item by index. */
function parseThumbprints(raw: string, env: string): readonly string[] {
  const items = raw.split(',').map((item) => item.trim());
  if (items.length < 2 || items.length > MAX_SHARES) {
    throw new KmsError('CONFIG', `${env} must list 2 to ${MAX_SHARES} custodian key thumbprints (one per share), got ${items.length}`);
  }
  items.forEach((item, i) => {
    // 43 characters are 32 bytes; the round trip refuses non-canonical trailing bits.
    if (!THUMBPRINT.test(item) || Buffer.from(item, 'base64url').toString('base64url') !== item) {
      throw new KmsError('CONFIG', `${env}: item ${i} is not an RFC 7638 SHA-256 thumbprint (43 characters of base64url)`);
    }
    const first = items.indexOf(item);
    if (first !== i) throw new KmsError('CONFIG', `${env}: item ${i} is the same thumbprint as item ${first}`);
  });
  return items;
}

export type SealerOptions = OptionValues<typeof sealerOptions>;

/** Custodians by their keys' thumbprints, in share order, and how many of their shares recover the root key. */
export interface CustodianSet {
  readonly thumbprints: readonly string[];
  readonly threshold: number;
}

/**
 * What a rotation must be with pinned custodians: shares to exactly these keys, in order, t of them
 * recovering; and who may recover the service: t of them, or, during a change of custodians, t of
 * the previous ones, each answering its recovery challenge.
 */
export interface CustodianPin extends CustodianSet {
  readonly previous?: CustodianSet | undefined;
}

/**
 * KMS_SEALER_CUSTODIANS with its KMS_SEALER_CUSTODIANS_THRESHOLD, or undefined when neither is set.
 * The threshold is pinned with the keys: whoever could lower it would need fewer custodians.
 */
export function custodianPin(
  options: Pick<SealerOptions, 'custodians' | 'custodiansThreshold' | 'custodiansPrevious' | 'custodiansPreviousThreshold'>,
): CustodianPin | undefined {
  const pinned = custodianSet(
    options.custodians,
    options.custodiansThreshold,
    'KMS_SEALER_CUSTODIANS',
    "unpinned, whoever sets the rotating function's KMS_THRESHOLD could lower it",
  );
  const previous = custodianSet(
    options.custodiansPrevious,
    options.custodiansPreviousThreshold,
    'KMS_SEALER_CUSTODIANS_PREVIOUS',
    'unpinned, a state record in storage would say how many recover',
  );
  if (previous === undefined) return pinned;
  if (pinned === undefined) {
    throw new KmsError(
      'CONFIG',
      'KMS_SEALER_CUSTODIANS_PREVIOUS names the custodians a change replaces, so it needs the new ones pinned (KMS_SEALER_CUSTODIANS)',
    );
  }
  if (previous.thumbprints.join() === pinned.thumbprints.join() && previous.threshold === pinned.threshold) {
    throw new KmsError('CONFIG', 'KMS_SEALER_CUSTODIANS_PREVIOUS and its threshold are the pinned custodians and threshold: that is no change; unset them');
  }
  return { ...pinned, previous };
}

/**
 * `VAR` with its `VAR_THRESHOLD`, or undefined when neither is set. The threshold is pinned with the
 * keys: whoever could lower it would need fewer custodians.
 */
function custodianSet(thumbprints: readonly string[] | undefined, threshold: number | undefined, env: string, whyThreshold: string): CustodianSet | undefined {
  if (thumbprints === undefined && threshold === undefined) return undefined;
  if (thumbprints === undefined) throw new KmsError('CONFIG', `${env}_THRESHOLD is set without ${env}: it pins the threshold of those custodians`);
  if (threshold === undefined) {
    throw new KmsError('CONFIG', `${env} needs ${env}_THRESHOLD, the number of their shares that recover the root key: ${whyThreshold}`);
  }
  if (threshold > thumbprints.length) {
    throw new KmsError('CONFIG', `${env}_THRESHOLD (${threshold}) exceeds the ${thumbprints.length} custodians ${env} names`);
  }
  return { thumbprints, threshold };
}

export function loadSealerOptions(env: NodeJS.ProcessEnv = process.env): SealerOptions {
  return loadOptions(sealerOptions, env);
}
