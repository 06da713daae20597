import { padReportData, runtimeDataDigest } from '../kbs/protocol.js';
import type { ServiceKeyJwk } from './service-key.js';

/**
 * The report data of `GET /attestation`'s evidence: SHA-384 of the RFC 8785 canonical JSON of
 * `{"nonce": <nonce as sent>, "service-key": <serviceKey as answered>}`, zero-padded to 64 bytes,
 * in the KBS binding style. A client recomputes it from the answer it received.
 */
export function serviceKeyReportData(nonce: string, serviceKey: ServiceKeyJwk | Readonly<Record<string, unknown>>): Buffer {
  return padReportData(runtimeDataDigest({ nonce, 'service-key': serviceKey }, 'sha384'));
}
