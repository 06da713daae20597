import { createHash, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { SampleVerifier } from '../shared/attestation/sample.js';
import {
  collateralExpiry,
  collateralWindows,
  loadCollateralFile,
  PccsCollateralSource,
  StaticCollateralSource,
  type ChainTrust,
  type CollateralSource,
  type TdxCollateral,
} from './attestation/tdx/collateral.js';
import type { TdxQuote } from '../shared/attestation/tdx/quote.js';
import { createTdxPolicy, type TdxPolicy } from './attestation/tdx/policy.js';
import { TdxVerifier } from './attestation/tdx/verifier.js';
import { trustedRootFromPem } from './attestation/tdx/verify.js';
import type { TeeType, Verifier } from '../shared/attestation/types.js';
import { PEM_CERTIFICATES, pemBundle } from '../shared/crypto/pem-bundle.js';
import { KmsError } from '../shared/errors.js';
import type { SealerOptions } from './options.js';
import { sealerLog } from './log.js';

/** The evidence verifiers the sealer accepts, keyed by KBS `tee` type. */
export type VerifierRegistry = ReadonlyMap<TeeType, Verifier>;

export function verifierRegistry(verifiers: readonly Verifier[]): VerifierRegistry {
  const registry = new Map<TeeType, Verifier>();
  for (const verifier of verifiers) registry.set(verifier.tee, verifier);
  return registry;
}

/**
 * The default set: "sample" only in insecure development mode (it proves nothing), plus the
 * configured real TEE verifiers (`extra`, from configuredVerifiers()).
 */
export function defaultVerifiers(options: { insecureDevMode: boolean; extra?: readonly Verifier[] }): VerifierRegistry {
  const verifiers: Verifier[] = [...(options.extra ?? [])];
  if (options.insecureDevMode) verifiers.push(new SampleVerifier());
  return verifierRegistry(verifiers);
}

export type TdxVerifierOptions = Pick<SealerOptions, 'tdxPolicyFile' | 'tdxCollateralFile' | 'pccsUrl' | 'pccsAllowHttp' | 'pccsCa' | 'tdxRootCaFile'>;

export interface ConfiguredVerifiersIo {
  readonly env?: NodeJS.ProcessEnv;
  /** Informational messages; default the sealer's log. */
  readonly log?: (message: string) => void;
  /** Warnings; default the sealer's log (the non-Intel root CA banner goes to stderr as it is). */
  readonly warn?: (message: string) => void;
  /** Clock for the collateral currency warning; default the wall clock. */
  readonly now?: () => Date;
  /** The options' variable names start with this (the functions' check of the sealer uses KMS_TRUSTED_SEALER_); default KMS_SEALER_. */
  readonly prefix?: string;
  /**
   * Whether the policy may demand init-data: only a policy for workloads, whose KBS attestations
   * carry it (the sealing service's own evidence carries none); default true.
   */
  readonly initData?: boolean;
  /** The TDX policy measured in the TD's init-data (sealer/measured-policies.ts), in place of the file. */
  readonly policy?: { readonly json: unknown; readonly source: string };
}

/**
 * The real TEE verifiers the configuration asks for: the TDX verifier when
 * KMS_SEALER_TDX_POLICY_FILE is set, with collateral from KMS_SEALER_TDX_COLLATERAL_FILE or
 * KMS_SEALER_PCCS_URL (https, unless KMS_SEALER_PCCS_ALLOW_HTTP outside production), trusting the
 * pinned Intel SGX Root CA unless KMS_SEALER_TDX_ROOT_CA_FILE names another root (never with
 * NODE_ENV=production). Misconfiguration is KmsError('CONFIG')
 * naming the variable: the sealer refuses to start rather than run with a constraint dropped.
 */
export async function configuredVerifiers(options: TdxVerifierOptions, io: ConfiguredVerifiersIo = {}): Promise<Verifier[]> {
  const tdx = await tdxVerifierFromOptions(options, io);
  return tdx === undefined ? [] : [tdx];
}

export async function tdxVerifierFromOptions(options: TdxVerifierOptions, io: ConfiguredVerifiersIo = {}): Promise<TdxVerifier | undefined> {
  const env = io.env ?? process.env;
  const log = io.log ?? ((message: string) => sealerLog.info(message));
  const warn = io.warn ?? ((message: string) => sealerLog.warn(message));
  const now = io.now ?? (() => new Date());
  const p = io.prefix ?? 'KMS_SEALER_';
  const { tdxPolicyFile, tdxCollateralFile, pccsUrl, pccsAllowHttp, pccsCa, tdxRootCaFile } = options;

  const measured = io.policy;
  if (tdxPolicyFile === '' && measured === undefined) {
    const stray = [
      [`${p}TDX_COLLATERAL_FILE`, tdxCollateralFile],
      [`${p}PCCS_URL`, pccsUrl],
      [`${p}PCCS_ALLOW_HTTP`, pccsAllowHttp ? 'true' : ''],
      [`${p}PCCS_CA`, pccsCa],
      [`${p}TDX_ROOT_CA_FILE`, tdxRootCaFile],
    ].filter(([, value]) => value !== '');
    if (stray.length > 0) {
      throw new KmsError(
        'CONFIG',
        `${stray.map(([name]) => name).join(' and ')} ${stray.length > 1 ? 'have' : 'has'} no effect without ${p}TDX_POLICY_FILE (the TDX reference values)`,
      );
    }
    return undefined;
  }
  if (tdxCollateralFile !== '' && pccsUrl !== '') {
    throw new KmsError('CONFIG', `set either ${p}TDX_COLLATERAL_FILE or ${p}PCCS_URL, not both`);
  }
  if (tdxCollateralFile === '' && pccsUrl === '') {
    const what = measured === undefined ? `${p}TDX_POLICY_FILE` : `the TDX policy in ${measured.source}`;
    throw new KmsError('CONFIG', `${what} needs DCAP collateral: set ${p}TDX_COLLATERAL_FILE or ${p}PCCS_URL`);
  }
  checkPccsTransport(pccsUrl, pccsAllowHttp, env, p);
  checkPccsCa(pccsCa, pccsUrl, p);
  if (tdxRootCaFile !== '' && env.NODE_ENV === 'production') {
    throw new KmsError('CONFIG', `${p}TDX_ROOT_CA_FILE replaces the Intel SGX Root CA and is refused when NODE_ENV=production`);
  }

  const initData = { initData: io.initData ?? true };
  const policy =
    measured === undefined ? await loadPolicyFile(tdxPolicyFile, `${p}TDX_POLICY_FILE`, initData) : policyFrom(measured.json, measured.source, initData);
  const policySource = measured === undefined ? tdxPolicyFile : measured.source;
  if (policy.agentPolicies !== undefined && measured === undefined) {
    // Admission by agent policy checks that a function trusts this service, which needs its own measured identity.
    throw new KmsError('CONFIG', `${p}TDX_POLICY_FILE: agentPolicies applies only to a policy measured in KMS_SEALER_INIT_DATA_FILE`);
  }
  const open = (['rtmr0', 'rtmr1', 'rtmr2'] as const).filter((field) => policy[field] === undefined);
  if (policy.agentPolicies !== undefined && open.length > 0) {
    // An agent policy is enforced by the guest: admitting by it means nothing in a guest left open.
    throw new KmsError(
      'CONFIG',
      `${policySource}: agentPolicies needs rtmr0, rtmr1 and rtmr2 pinned (the guest that enforces them); ${open.join(', ')} left open`,
    );
  }
  const collateral = await collateralSource(options, { log, warn, now }, `${p}TDX_COLLATERAL_FILE`);
  if (pccsAllowHttp && isHttpUrl(pccsUrl)) {
    warn(`${p}PCCS_ALLOW_HTTP: DCAP collateral comes from ${pccsUrl} over http; whoever controls that connection can serve older, still valid collateral`);
  }
  let trustedRootCaPem: string | undefined;
  let anchor = 'the pinned Intel SGX Root CA';
  if (tdxRootCaFile !== '') {
    trustedRootCaPem = await readConfigFile(tdxRootCaFile, `${p}TDX_ROOT_CA_FILE`);
    let root: X509Certificate;
    try {
      root = trustedRootFromPem(trustedRootCaPem);
    } catch (error) {
      throw new KmsError('CONFIG', `${p}TDX_ROOT_CA_FILE ${tdxRootCaFile}: ${error instanceof KmsError ? error.message : 'not a CA certificate'}`, {
        cause: error,
      });
    }
    const fingerprint = createHash('sha256').update(root.raw).digest('hex');
    anchor = `${oneLine(root.subject)} (sha256 ${fingerprint}) from ${p}TDX_ROOT_CA_FILE`;
    process.stderr.write(`${rootCaBanner(`${p}TDX_ROOT_CA_FILE`, tdxRootCaFile, oneLine(root.subject), fingerprint)}\n`); // for humans, like the development mode banner
  }

  const verifier = new TdxVerifier({ policy, collateral, ...(trustedRootCaPem === undefined ? {} : { trustedRootCaPem }) });
  log(`TDX verifier: reference values from ${policySource} (${describePolicy(policy)})`);
  log(
    `TDX verifier: collateral ${tdxCollateralFile !== '' ? `from file ${tdxCollateralFile}` : `from ${pccsUrl} (cached per platform${isHttpUrl(pccsUrl) ? '' : `; its TLS certificate checked against ${pccsCa !== '' ? `${p}PCCS_CA` : "Node's bundled root certificates"}`})`}; trust anchor ${anchor}`,
  );
  return verifier;
}

const isHttpUrl = (url: string): boolean => URL.canParse(url) && new URL(url).protocol === 'http:';

/**
 * An http PCCS lets whoever sits on the path serve older collateral that is still within its
 * validity window (a TCB level from before an advisory, a CRL from before a revocation): https
 * only, unless explicitly allowed outside production.
 */
function checkPccsTransport(pccsUrl: string, allowHttp: boolean, env: NodeJS.ProcessEnv, p: string): void {
  if (!allowHttp) {
    if (isHttpUrl(pccsUrl)) {
      throw new KmsError(
        'CONFIG',
        `${p}PCCS_URL must be https (an http PCCS can be made to serve older collateral); ${p}PCCS_ALLOW_HTTP=true permits http in tests`,
      );
    }
    return;
  }
  if (env.NODE_ENV === 'production') throw new KmsError('CONFIG', `${p}PCCS_ALLOW_HTTP permits an http PCCS and is refused when NODE_ENV=production`);
  if (pccsUrl === '') throw new KmsError('CONFIG', `${p}PCCS_ALLOW_HTTP has no effect without ${p}PCCS_URL`);
}

/**
 * KMS_SEALER_PCCS_CA: PEM certificates only, one or more, for a PCCS URL. The PCCS connection
 * trusts nothing else (pccs.ts), so a typo would refuse every TD: refused at start instead.
 */
function checkPccsCa(pccsCa: string, pccsUrl: string, p: string): void {
  if (pccsCa === '') return;
  if (pccsUrl === '') throw new KmsError('CONFIG', `${p}PCCS_CA has no effect without ${p}PCCS_URL`);
  if (pemBundle(pccsCa) === undefined) throw new KmsError('CONFIG', `${p}PCCS_CA must be ${PEM_CERTIFICATES}`);
}

async function readConfigFile(path: string, variable: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new KmsError('CONFIG', `${variable} names a file that cannot be read: ${path}`, { cause: error });
  }
}

export async function loadPolicyFile(
  path: string,
  variable = 'KMS_SEALER_TDX_POLICY_FILE',
  options: { readonly initData: boolean } = { initData: true },
): Promise<TdxPolicy> {
  const text = await readConfigFile(path, variable);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new KmsError('CONFIG', `${variable} ${path} is not JSON`, { cause: error });
  }
  return policyFrom(json, `${variable} ${path}`, options);
}

function policyFrom(json: unknown, source: string, options: { readonly initData: boolean }): TdxPolicy {
  try {
    return createTdxPolicy(json, options);
  } catch (error) {
    if (error instanceof KmsError) throw new KmsError('CONFIG', `${source}: ${error.message}`, { cause: error });
    throw error;
  }
}

async function collateralSource(options: TdxVerifierOptions, io: CollateralIo, variable: string): Promise<CollateralSource> {
  if (options.pccsUrl !== '') {
    return new PccsCollateralSource({ baseUrl: options.pccsUrl, allowHttp: options.pccsAllowHttp, ...(options.pccsCa !== '' && { tlsCa: options.pccsCa }) });
  }
  const path = options.tdxCollateralFile;
  let collateral: TdxCollateral;
  try {
    collateral = await loadCollateralFile(path);
  } catch (error) {
    if (error instanceof KmsError) throw new KmsError('CONFIG', `${variable}: ${error.message}`, { cause: error });
    throw error;
  }
  // Static collateral goes stale: say so at start rather than let every TD be refused silently.
  let issued: Date;
  let expiry: Date;
  try {
    issued = collateralWindows(collateral).overall.issueDate;
    expiry = collateralExpiry(collateral);
  } catch (error) {
    throw new KmsError('CONFIG', `${variable} ${path}: ${error instanceof KmsError ? error.message : 'unreadable TCB info or QE identity'}`, { cause: error });
  }
  warnIfNotCurrent(path, issued, expiry, io);
  return new CollateralFile(path, collateral, await fileVersion(path), io);
}

interface CollateralIo {
  readonly log: (line: string) => void;
  readonly warn: (text: string) => void;
  readonly now: () => Date;
}

function warnIfNotCurrent(path: string, issued: Date, expiry: Date, io: CollateralIo): void {
  const now = io.now();
  if (now > expiry) {
    io.warn(`the TDX collateral in ${path} expired at ${expiry.toISOString()}: every TD is refused (claim collateral or crl) until the file is refreshed`);
  } else if (now < issued) {
    io.warn(`the TDX collateral in ${path} is not valid before ${issued.toISOString()}: TDs are refused until then`);
  }
}

async function fileVersion(path: string): Promise<string> {
  try {
    const s = await stat(path);
    return `${s.mtimeMs}/${s.size}/${s.ino}`;
  } catch {
    return 'missing';
  }
}

/**
 * Collateral from a file that operators refresh in place (e.g. a mounted ConfigMap), reloaded when
 * the file changes: a restart would drop the root key from memory (mode 2: recovery from shares).
 * A change that does not parse keeps the previous collateral and is reported on stderr.
 */
class CollateralFile implements CollateralSource {
  #current: StaticCollateralSource;
  #version: string;

  constructor(
    private readonly path: string,
    collateral: TdxCollateral,
    version: string,
    private readonly io: CollateralIo,
  ) {
    this.#current = new StaticCollateralSource(collateral);
    this.#version = version;
  }

  async collateralFor(quote: TdxQuote, trust: ChainTrust): Promise<TdxCollateral> {
    const version = await fileVersion(this.path);
    if (version !== this.#version) {
      this.#version = version;
      try {
        const collateral = await loadCollateralFile(this.path);
        const issued = collateralWindows(collateral).overall.issueDate;
        const expiry = collateralExpiry(collateral);
        this.#current = new StaticCollateralSource(collateral);
        this.io.log(`TDX collateral reloaded from ${this.path} (valid ${issued.toISOString()} to ${expiry.toISOString()})`);
        warnIfNotCurrent(this.path, issued, expiry, this.io);
      } catch (error) {
        const reason = error instanceof KmsError ? error.message : 'unreadable';
        this.io.warn(`the changed TDX collateral file ${this.path} was not loaded (${reason}); the previous collateral stays in use`);
      }
    }
    return this.#current.collateralFor(quote, trust);
  }
}

export function describePolicy(policy: TdxPolicy): string {
  const count = (name: string, list: readonly string[] | undefined) => `${name} ${list === undefined ? 'any' : `${list.length} allowed`}`;
  return [
    count('mrTd', policy.mrTd),
    count('rtmr0', policy.rtmr0),
    count('rtmr1', policy.rtmr1),
    count('rtmr2', policy.rtmr2),
    // Newer constraints are named only when set, so existing summaries read as before.
    ...(policy.rtmr3 === undefined ? [] : [count('rtmr3', policy.rtmr3)]),
    count('mrConfigId', policy.mrConfigId),
    ...(policy.agentPolicies === undefined ? [] : [`or agentPolicies ${policy.agentPolicies.length} allowed`]),
    ...(policy.eventDigests === undefined ? [] : [`eventDigests ${policy.eventDigests.length} required`]),
    `TCB status ${policy.allowedTcbStatuses.join('|')}`,
    'DEBUG refused',
    ...(policy.initData?.required ? [`init-data required, pinned entries: ${Object.keys(policy.initData.data).join(', ') || 'none'}`] : []),
  ].join(', ');
}

const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, ', ');

function rootCaBanner(variable: string, file: string, subject: string, fingerprint: string): string {
  return [
    '',
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
    `!!  ${variable.startsWith('KMS_SEALER_') ? 'sealer' : 'functions'}: TDX QUOTES ARE VERIFIED AGAINST A NON-INTEL ROOT CA`,
    `!!  (${variable}=${file})`,
    `!!  ${subject}`,
    `!!  sha256 ${fingerprint}`,
    '!!  Whoever holds this CA\'s key can forge "genuine TDX" quotes (and so obtain',
    '!!  the root key, or pass for the sealing service). For tests and private DCAP',
    '!!  PKIs only; refused when NODE_ENV=production.',
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
    '',
  ].join('\n');
}
