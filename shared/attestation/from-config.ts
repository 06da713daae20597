import { KmsError } from '../errors.js';
import { SampleAttester } from './sample.js';
import type { Attester } from './types.js';

export interface AttesterConfig {
  readonly attester: 'sample' | 'tdx-configfs' | 'tdx-aa';
  readonly tsmRoot: string;
  readonly aaUrl: string;
  /** The identity sample evidence claims (KMS_SAMPLE_INIT_DATA); '' for none. */
  readonly sampleInitData?: string;
  /** This pod's init-data (KMS_INIT_DATA_FILE): sample evidence then claims its digest. */
  readonly initData?: { readonly digest: string };
}

/**
 * The attester this pod uses. A production build never offers sample evidence. The TDX attesters
 * (and their quote parsing) are imported only when configured, so they cost no start-up time elsewhere.
 */
export async function attesterFromConfig(config: AttesterConfig, env: NodeJS.ProcessEnv = process.env, variable = 'KMS_ATTESTER'): Promise<Attester> {
  switch (config.attester) {
    case 'tdx-configfs': {
      const { ConfigfsTsmAttester } = await import('./tdx/configfs-tsm.js');
      return new ConfigfsTsmAttester({ root: config.tsmRoot });
    }
    case 'tdx-aa': {
      const { AaEvidenceAttester } = await import('./tdx/aa-attester.js');
      return new AaEvidenceAttester({ baseUrl: config.aaUrl });
    }
    case 'sample':
      if (env.NODE_ENV === 'production') {
        throw new KmsError('CONFIG', `${variable}=sample proves nothing and is refused when NODE_ENV=production: use tdx-configfs or tdx-aa`);
      }
      return new SampleAttester('1', sampleIdentity(config));
  }
}

/** With init-data, sample evidence claims its digest: a KMS_SAMPLE_INIT_DATA that says otherwise is a mistake. */
function sampleIdentity(config: AttesterConfig): string | undefined {
  const claimed = config.sampleInitData || undefined;
  const digest = config.initData?.digest;
  if (digest === undefined) return claimed;
  if (claimed !== undefined && claimed !== digest) {
    throw new KmsError('CONFIG', `KMS_SAMPLE_INIT_DATA ${claimed} is not the digest of KMS_INIT_DATA_FILE (${digest}): set one or make them agree`);
  }
  return digest;
}
