import { SampleVerifier } from '../attestation/sample.js';
import type { Attester, Verifier } from '../attestation/types.js';
import { TRUSTED_SEALER_ENTRY } from '../attestation/function-entries.js';
import type { InitData } from '../attestation/init-data.js';
import { ownInitData } from '../attestation/own-identity.js';
import type { KmsConfig } from '../config.js';
import { KmsError } from '../errors.js';
import { log } from '../log.js';

type TrustedSealerOptions = Pick<
  KmsConfig,
  | 'trustedSealerTdxPolicyFile'
  | 'trustedSealerTdxCollateralFile'
  | 'trustedSealerPccsUrl'
  | 'trustedSealerPccsAllowHttp'
  | 'trustedSealerPccsCa'
  | 'trustedSealerTdxRootCaFile'
  | 'initDataFile'
>;

/** This pod's init-data (KMS_INIT_DATA_FILE), if any, and how it proves itself. */
export interface MeasuringPod {
  readonly initData: InitData | undefined;
  readonly attester: () => Promise<Attester>;
}

/**
 * The policy for the sealing service that this pod's init-data carries (its `sealer-tdx-policy.json`
 * entry), once its own evidence shows the document is the one the TD was created with: read from
 * a file (KMS_TRUSTED_SEALER_TDX_POLICY_FILE, a ConfigMap), the policy would be whatever whoever
 * writes that file wants, a sealer TD of their own included.
 */
async function measuredPolicy(config: TrustedSealerOptions, pod: MeasuringPod | undefined): Promise<{ json: unknown; source: string } | undefined> {
  const initData = pod?.initData;
  if (initData === undefined || !Object.hasOwn(initData.data, TRUSTED_SEALER_ENTRY)) return undefined;
  const source = `KMS_INIT_DATA_FILE ${config.initDataFile} ("${TRUSTED_SEALER_ENTRY}")`;
  if (config.trustedSealerTdxPolicyFile !== '') {
    throw new KmsError('CONFIG', `KMS_TRUSTED_SEALER_TDX_POLICY_FILE would replace the policy for the sealing service measured in ${source}: unset it`);
  }
  await ownInitData(initData, await pod!.attester(), { variable: 'KMS_INIT_DATA_FILE', path: config.initDataFile, sampleVariable: 'KMS_SAMPLE_INIT_DATA' });
  try {
    return { json: JSON.parse(initData.data[TRUSTED_SEALER_ENTRY]!), source };
  } catch (error) {
    throw new KmsError('CONFIG', `${source} is not JSON`, { cause: error });
  }
}

/**
 * How functions check the sealing service's own evidence before they trust a root key from it: the
 * TDX reference values measured in this pod's init-data or, without them, those of
 * KMS_TRUSTED_SEALER_TDX_POLICY_FILE (with collateral, as the sealing service checks functions),
 * or, outside production, sample evidence, which proves nothing. The TLS
 * certificate alone is not enough: whoever can read Kubernetes Secrets may hold its key.
 */
export async function trustedSealerVerifier(config: TrustedSealerOptions, env: NodeJS.ProcessEnv = process.env, pod?: MeasuringPod): Promise<Verifier> {
  const measured = await measuredPolicy(config, pod);
  const options = {
    tdxPolicyFile: config.trustedSealerTdxPolicyFile,
    tdxCollateralFile: config.trustedSealerTdxCollateralFile,
    pccsUrl: config.trustedSealerPccsUrl,
    pccsAllowHttp: config.trustedSealerPccsAllowHttp,
    pccsCa: config.trustedSealerPccsCa,
    tdxRootCaFile: config.trustedSealerTdxRootCaFile,
  };
  if (measured !== undefined || Object.values(options).some((value) => value !== '' && value !== false)) {
    // The TDX verifier and its DCAP code (a megabyte) are loaded only when configured.
    const { tdxVerifierFromOptions } = await import('../../sealer/verifiers.js');
    const tdx = await tdxVerifierFromOptions(options, {
      env,
      prefix: 'KMS_TRUSTED_SEALER_',
      initData: false,
      log: (message) => log.info(`sealing service check: ${message}`),
      warn: (message) => log.warn('sealer-attestation', message),
      ...(measured && { policy: measured }),
    });
    if (tdx !== undefined) return tdx;
  }
  if (env.NODE_ENV === 'production') {
    throw new KmsError(
      'CONFIG',
      'functions must attest the sealing service: set KMS_TRUSTED_SEALER_TDX_POLICY_FILE (its reference values) and its collateral; sample evidence proves nothing and is accepted only when NODE_ENV is not production',
    );
  }
  return new SampleVerifier();
}
