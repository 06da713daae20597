import { KmsError } from '../shared/errors.js';
import { parseAdditionalEvidence, parseKbsTeePubKey, type KbsTeePubKey } from '../shared/kbs/protocol.js';
import { importTeePubKey } from '../shared/kbs/tee-key.js';
import { refuse } from './attestation/tdx/policy.js';
import { SealerError } from './errors.js';
import { kbsError } from './problems.js';

/**
 * The parts of a Trustee `Attestation` message that are not the primary evidence, checked as
 * Trustee clients send them (guest-components kbs_protocol), and refused as Trustee's
 * AttestationError problems.
 */

/** The `tee-pubkey` as sent: EC (P-256, P-521) or RSA (RSA-OAEP-256), and importable. */
export async function attestationTeePubKey(raw: unknown): Promise<KbsTeePubKey> {
  try {
    const teePubKey = parseKbsTeePubKey(raw);
    await importTeePubKey(teePubKey);
    return teePubKey;
  } catch (error) {
    throw kbsError.attestation(error instanceof KmsError ? error.message : 'invalid tee-pubkey');
  }
}

const MAX_NAMED = 8;

/**
 * The composite evidence's `additional_evidence`, exactly as sent (it is hashed so into the report
 * data). No device verifier exists here, so device evidence is refused, naming each device TEE it
 * carries; "" and an empty object carry none and are accepted.
 */
export function attestationAdditionalEvidence(teeEvidence: Record<string, unknown>): string {
  let additional;
  try {
    additional = parseAdditionalEvidence(teeEvidence.additional_evidence);
  } catch (error) {
    throw kbsError.attestation(`deserialize Attestation: ${error instanceof KmsError ? error.message : 'additional_evidence'}`);
  }
  if (additional.deviceTees.length > 0) {
    const named = additional.deviceTees.slice(0, MAX_NAMED).map(printable);
    const list = `${named.map((tee) => `"${tee}"`).join(', ')}${additional.deviceTees.length > MAX_NAMED ? ', …' : ''}`;
    asKbsRefusal(
      () =>
        refuse(
          'additional_evidence',
          `this sealing service verifies no device evidence, and this attestation carries evidence from device TEE ${list}; attest without it`,
        ),
      { deviceTees: named },
    );
  }
  return additional.text;
}

/** A refusal (policy.ts refuse()) answered as Trustee's AttestationError, its claim and `extensions` in the problem. */
function asKbsRefusal(refusal: () => never, extensions: Record<string, unknown>): never {
  try {
    refusal();
  } catch (error) {
    if (error instanceof KmsError) throw new SealerError('KBS_ATTESTATION', error.message, { ...error.details, ...extensions });
    throw error;
  }
}

/** A name from the client, safe to echo: at most 32 printable ASCII characters. */
function printable(name: string): string {
  const clean = name.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, '?');
  return clean.length > 32 ? `${clean.slice(0, 32)}…` : clean;
}
