import { SampleVerifier } from '../shared/attestation/sample.js';
import type { TeeType, Verifier } from '../shared/attestation/types.js';

/** The evidence verifiers the sealer accepts, keyed by KBS `tee` type. */
export type VerifierRegistry = ReadonlyMap<TeeType, Verifier>;

export function verifierRegistry(verifiers: readonly Verifier[]): VerifierRegistry {
  const registry = new Map<TeeType, Verifier>();
  for (const verifier of verifiers) registry.set(verifier.tee, verifier);
  return registry;
}

/**
 * The default set: "sample" only in insecure development mode (it proves nothing). Real TEE
 * verifiers (TDX: shared/attestation/tdx/) are added here when configured.
 */
export function defaultVerifiers(options: { insecureDevMode: boolean; extra?: readonly Verifier[] }): VerifierRegistry {
  const verifiers: Verifier[] = [...(options.extra ?? [])];
  if (options.insecureDevMode) verifiers.push(new SampleVerifier());
  return verifierRegistry(verifiers);
}
