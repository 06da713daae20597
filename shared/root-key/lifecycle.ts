import { KmsError } from '../errors.js';
import type { KmsRuntime } from '../runtime.js';
import type { SealerClient } from '../sealer-client/client.js';
import type { RootKeyRotation } from './rotation.js';

/** The sealing service and rotation, or a clear refusal where the root key comes from a secret. */
export function lifecycleOf(runtime: KmsRuntime): { sealer: SealerClient; rotation: RootKeyRotation } {
  if (runtime.sealer === undefined || runtime.rotation === undefined) {
    throw new KmsError('CONFLICT', runtime.rootKeys.source.rotationRefusal ?? 'root key operations need the sealing service (KMS_SEALER_URL)');
  }
  return { sealer: runtime.sealer, rotation: runtime.rotation };
}
