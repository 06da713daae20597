/**
 * The TDX evidence JSON, in the shape Trustee's verifier deserializes
 * (trustee deps/verifier/src/tdx/mod.rs: `TdxEvidence { cc_eventlog: Option<String>, quote: String }`,
 * both standard base64) and the CoCo attestation agent produces. Older agents also sent
 * `aa_eventlog`; Trustee dropped it and so do we (unknown fields are ignored, as serde does).
 */
import { KmsError } from '../../errors.js';

export interface TdxEvidence {
  /** Standard base64 of the TD quote. */
  quote: string;
  /** Standard base64 of the CCEL ACPI table data (the TD's event log), when available. */
  cc_eventlog?: string;
}

export interface DecodedTdxEvidence {
  readonly quote: Uint8Array;
  readonly ccEventlog: Uint8Array | undefined;
}

export function encodeTdxEvidence(quote: Uint8Array, ccEventlog?: Uint8Array): TdxEvidence {
  const evidence: TdxEvidence = { quote: Buffer.from(quote).toString('base64') };
  if (ccEventlog !== undefined && ccEventlog.length > 0) evidence.cc_eventlog = Buffer.from(ccEventlog).toString('base64');
  return evidence;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeBase64Field(value: unknown, field: string): Uint8Array {
  if (typeof value !== 'string' || value.length === 0 || value.length % 4 !== 0 || !BASE64.test(value)) {
    throw new KmsError('BAD_REQUEST', `TDX evidence: ${field} must be non-empty standard base64`);
  }
  return new Uint8Array(Buffer.from(value, 'base64'));
}

/** Validates and decodes evidence received from a client (BAD_REQUEST on any malformation). */
export function decodeTdxEvidence(evidence: unknown): DecodedTdxEvidence {
  if (typeof evidence !== 'object' || evidence === null || Array.isArray(evidence)) {
    throw new KmsError('BAD_REQUEST', 'TDX evidence must be a JSON object {"quote": base64, "cc_eventlog"?: base64}');
  }
  const record = evidence as Record<string, unknown>;
  const quote = decodeBase64Field(record['quote'], 'quote');
  const raw = record['cc_eventlog'];
  // Trustee treats an empty or null event log as absent.
  const ccEventlog = raw === undefined || raw === null || raw === '' ? undefined : decodeBase64Field(raw, 'cc_eventlog');
  return { quote, ccEventlog };
}
