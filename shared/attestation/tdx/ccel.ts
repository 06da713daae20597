/**
 * Trims the CCEL (the TD's TCG2 event log, exposed by Linux as the ACPI table data
 * /sys/firmware/acpi/tables/data/CCEL). The firmware reserves a large region padded with 0xFF or
 * 0x00 after the last event; like the CoCo attestation agent, we send only the events followed by
 * an 8-byte 0xFF end marker, so evidence stays small and Trustee's parser finds the end. The
 * records are walked by the same parser the sealer replays them with (event-log.ts).
 */
import { parseCcelEventLog } from './event-log.js';

const END_MARKER = new Uint8Array(8).fill(0xff);

/**
 * The events plus the end marker; undefined if the log is malformed, or if it stops without a
 * marker or padding (the ACPI table always has them, so the data was cut short).
 */
export function trimCcel(log: Uint8Array): Uint8Array | undefined {
  const parsed = parseCcelEventLog(log);
  if (!parsed.ok || parsed.log.end === log.length) return undefined;
  const trimmed = new Uint8Array(parsed.log.end + END_MARKER.length);
  trimmed.set(log.subarray(0, parsed.log.end));
  trimmed.set(END_MARKER, parsed.log.end);
  return trimmed;
}
