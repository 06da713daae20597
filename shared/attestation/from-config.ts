import { KmsError } from '../errors.js';
import { SampleAttester } from './sample.js';
import { AaEvidenceAttester } from './tdx/aa-attester.js';
import { ConfigfsTsmAttester } from './tdx/configfs-tsm.js';
import type { Attester } from './types.js';

export interface AttesterConfig {
  readonly attester: 'sample' | 'tdx-configfs' | 'tdx-aa';
  readonly tsmRoot: string;
  readonly aaUrl: string;
}

/** The attester this pod uses. A production build never offers sample evidence. */
export function attesterFromConfig(config: AttesterConfig, env: NodeJS.ProcessEnv = process.env): Attester {
  switch (config.attester) {
    case 'tdx-configfs':
      return new ConfigfsTsmAttester({ root: config.tsmRoot });
    case 'tdx-aa':
      return new AaEvidenceAttester({ baseUrl: config.aaUrl });
    case 'sample':
      if (env.NODE_ENV === 'production') {
        throw new KmsError('CONFIG', 'KMS_ATTESTER=sample proves nothing and is refused when NODE_ENV=production: use tdx-configfs or tdx-aa');
      }
      return new SampleAttester();
  }
}
