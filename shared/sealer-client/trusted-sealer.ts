import { SampleVerifier } from '../attestation/sample.js';
import type { Verifier } from '../attestation/types.js';
import type { KmsConfig } from '../config.js';
import { KmsError } from '../errors.js';
import { log } from '../log.js';

type TrustedSealerOptions = Pick<
  KmsConfig,
  'trustedSealerTdxPolicyFile' | 'trustedSealerTdxCollateralFile' | 'trustedSealerPccsUrl' | 'trustedSealerPccsAllowHttp' | 'trustedSealerTdxRootCaFile'
>;

/**
 * How functions check the sealing service's own evidence before they trust a root key from it: the
 * TDX reference values of KMS_TRUSTED_SEALER_TDX_POLICY_FILE (with collateral, as the sealing
 * service checks functions), or, outside production, sample evidence, which proves nothing. The TLS
 * certificate alone is not enough: whoever can read Kubernetes Secrets may hold its key.
 */
export async function trustedSealerVerifier(config: TrustedSealerOptions, env: NodeJS.ProcessEnv = process.env): Promise<Verifier> {
  const options = {
    tdxPolicyFile: config.trustedSealerTdxPolicyFile,
    tdxCollateralFile: config.trustedSealerTdxCollateralFile,
    pccsUrl: config.trustedSealerPccsUrl,
    pccsAllowHttp: config.trustedSealerPccsAllowHttp,
    tdxRootCaFile: config.trustedSealerTdxRootCaFile,
  };
  if (Object.values(options).some((value) => value !== '' && value !== false)) {
    // The TDX verifier and its DCAP code (a megabyte) are loaded only when configured.
    const { tdxVerifierFromOptions } = await import('../../sealer/verifiers.js');
    const tdx = await tdxVerifierFromOptions(options, {
      env,
      prefix: 'KMS_TRUSTED_SEALER_',
      initData: false,
      log: (message) => log.info(`sealing service check: ${message}`),
      warn: (message) => log.warn('sealer-attestation', message),
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
