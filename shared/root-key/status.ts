import { KmsError } from '../errors.js';
import type { KmsRuntime } from '../runtime.js';
import type { SealStatus } from '../sealer-client/protocol.js';
import type { RotationJournal } from './rotation.js';

export interface KmsSealStatus extends SealStatus {
  /** An unfinished rotation: its phase and progress (null when none). */
  readonly rotation: Pick<RotationJournal, 'phase' | 'to' | 'rewrapped' | 'startedAt'> | null;
}

export async function sealStatus(runtime: KmsRuntime): Promise<KmsSealStatus> {
  if (runtime.sealer === undefined || runtime.rotation === undefined) {
    // No sealing service: the root key comes from a secret, or from nowhere (not configured).
    const key = await runtime.rootKeys.current().catch((error: unknown) => {
      if (error instanceof KmsError && error.code === 'ROOT_KEY_UNAVAILABLE') return undefined;
      throw error;
    });
    return {
      sealed: key === undefined,
      initialized: key !== undefined,
      t: 0,
      n: 0,
      progress: 0,
      rootKeyId: key?.id ?? null,
      verificationPending: false,
      pendingRootKeyId: null,
      integrityAlarm: null,
      source: 'secret',
      sealedReason: key === undefined ? 'uninitialized' : null,
      rotation: null,
    };
  }
  const [status, journal] = await Promise.all([runtime.sealer.sealStatus(), runtime.rotation.journal()]);
  return {
    ...status,
    rotation: journal === undefined ? null : { phase: journal.phase, to: journal.to, rewrapped: journal.rewrapped, startedAt: journal.startedAt },
  };
}
