import { metricsHooks } from '../shared/metrics/hooks.js';

/**
 * Why a KBS attestation was refused: a small fixed set (a label per reason, never a client's
 * words), counted as kms_attestation_failures_total{reason}.
 * - `protocol`: /auth with a protocol version or TEE type this service does not take;
 * - `sample_refused`: sample evidence outside insecure development mode;
 * - `no_verifier`: a TEE type no configured verifier appraises;
 * - `session`: /attest without a live challenge (no cookie, expired, or its nonce already used);
 * - `malformed`: an Attestation message that does not parse (runtime-data, tee-pubkey, tee-evidence);
 * - `nonce_mismatch`: runtime-data answering another challenge;
 * - `evidence`: evidence or init-data the verifier or the reference values refused;
 * - `collateral_unavailable`: not refused, but not appraised either: its collateral (the PCCS) could
 *   not be had just now (answered 503);
 * - `internal`: a failure after the evidence was accepted (the token could not be issued).
 */
export type AttestationFailureReason =
  'protocol' | 'sample_refused' | 'no_verifier' | 'session' | 'malformed' | 'nonce_mismatch' | 'evidence' | 'collateral_unavailable' | 'internal';

/** Where an attestation is: the reason counted if it fails now. */
export class AttestationStage {
  constructor(public reason: AttestationFailureReason) {}

  /** Runs `step`; if it throws, counts the failure under the reason of the stage it reached. */
  static async counted(initial: AttestationFailureReason, step: (stage: AttestationStage) => Promise<void>): Promise<void> {
    const stage = new AttestationStage(initial);
    try {
      await step(stage);
    } catch (error) {
      metricsHooks.attestationFailure(stage.reason);
      throw error;
    }
  }
}
