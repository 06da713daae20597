import { isKmsError, KmsError } from '../errors.js';
import type { RouteContext } from '../runtime.js';

/**
 * What a readiness probe learns about the root key: `available` (the function can wrap and unwrap
 * keys), `sealed` (the sealing service answered, and is sealed or not yet initialized: the KMS
 * answers, with 503 SEALED on key routes, until shares are sent), or `unavailable` (no answer yet,
 * or a refusal: sealing service unreachable, attestation refused, no root key configured).
 */
export interface RootKeyReadiness {
  readonly ready: boolean;
  readonly rootKey: 'available' | 'sealed' | 'unavailable';
  readonly detail?: string;
}

/**
 * Asks for the root key, and answers within `timeoutMs` whatever happens: a probe must not hang on
 * a KBS exchange. The exchange goes on after a timeout; the source keeps its result, so the next
 * probe answers from it at once.
 */
export async function rootKeyReadiness(ctx: RouteContext, timeoutMs = 900): Promise<RootKeyReadiness> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<RootKeyReadiness>((resolve) => {
    timer = setTimeout(() => resolve({ ready: false, rootKey: 'unavailable', detail: 'still obtaining the root key' }), timeoutMs);
  });
  const probe = ctx
    .keys()
    .then((runtime) => runtime.rootKeys.current())
    .then(
      (): RootKeyReadiness => ({ ready: true, rootKey: 'available' }),
      (error: unknown): RootKeyReadiness =>
        isKmsError(error, 'SEALED')
          ? { ready: true, rootKey: 'sealed', detail: error.message }
          : // Only a KmsError's message is written to be shown (never a secret); anything else is a bug.
            { ready: false, rootKey: 'unavailable', detail: error instanceof KmsError ? error.message : 'internal error' },
    );
  try {
    return await Promise.race([probe, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
