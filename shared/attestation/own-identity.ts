/**
 * This TEE's own workload identity, read from its own evidence: TDX's MRCONFIGID (which the host
 * set from the pod's init-data at TD creation), or the identity sample evidence claims. The
 * evidence comes from inside the TEE (configfs-tsm, or the attestation agent on the TD's own
 * loopback), so it is read here, not verified: the point is to learn what the hardware says this
 * TD was created with.
 */
import { KmsError } from '../errors.js';
import { NO_INIT_DATA, type SampleEvidence } from './sample.js';
import type { Attester } from './types.js';

export async function ownIdentity(attester: Attester): Promise<string> {
  const evidence = await attester.getEvidence(new Uint8Array(64));
  try {
    if (attester.tee === 'sample') return (evidence as SampleEvidence).init_data ?? NO_INIT_DATA;
    const [{ decodeTdxEvidence }, { parseTdxQuote }] = await Promise.all([import('./tdx/evidence.js'), import('./tdx/quote.js')]);
    return parseTdxQuote(decodeTdxEvidence(evidence).quote).report.mrConfigId.toLowerCase();
  } catch (error) {
    throw new KmsError('CONFIG', `this TEE's own ${attester.tee} evidence cannot be read: ${error instanceof KmsError ? error.message : 'malformed'}`, {
      cause: error,
    });
  }
}
