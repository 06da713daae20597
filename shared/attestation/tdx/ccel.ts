/**
 * Trims the CCEL (the TD's TCG2 event log, exposed by Linux as the ACPI table data
 * /sys/firmware/acpi/tables/data/CCEL). The firmware reserves a large region padded with 0xFF or
 * 0x00 after the last event; like the CoCo attestation agent, we send only the events followed by
 * an 8-byte 0xFF end marker, so evidence stays small and Trustee's parser finds the end.
 */

const END_MARKER = new Uint8Array(8).fill(0xff);

/** Digest sizes by TCG algorithm ID (the set the attestation agent accepts). */
const DIGEST_SIZES: Readonly<Record<number, number>> = { 0x0b: 32, 0x0c: 48, 0x0d: 64, 0x12: 32 };

const EV_NO_ACTION = 0x3;

/** The events up to the first empty slot plus the end marker; undefined if the log is malformed. */
export function trimCcel(log: Uint8Array): Uint8Array | undefined {
  const view = new DataView(log.buffer, log.byteOffset, log.byteLength);
  const has = (offset: number, length: number) => offset + length <= log.length;
  // First entry: TCG_PCR_EVENT (SHA-1 format): pcrIndex u32, eventType u32, digest[20], eventSize u32, event.
  if (!has(0, 32)) return undefined;
  let offset = 4;
  const firstType = view.getUint32(offset, true);
  offset += 4 + 20;
  if (firstType === EV_NO_ACTION) {
    offset += 4 + view.getUint32(offset, true);
  }
  // Then TCG_PCR_EVENT2 entries: pcrIndex u32, eventType u32, count u32, {alg u16, digest}*, eventSize u32, event.
  for (;;) {
    if (!has(offset, 8)) return undefined;
    const lo = view.getUint32(offset, true);
    const hi = view.getUint32(offset + 4, true);
    if ((lo === 0xffffffff && hi === 0xffffffff) || (lo === 0 && hi === 0)) break;
    offset += 8;
    if (!has(offset, 4)) return undefined;
    const digestCount = view.getUint32(offset, true);
    offset += 4;
    for (let i = 0; i < digestCount; i++) {
      if (!has(offset, 2)) return undefined;
      const size = DIGEST_SIZES[view.getUint16(offset, true)];
      if (size === undefined) return undefined;
      offset += 2 + size;
    }
    if (!has(offset, 4)) return undefined;
    offset += 4 + view.getUint32(offset, true);
  }
  const trimmed = new Uint8Array(offset + END_MARKER.length);
  trimmed.set(log.subarray(0, offset));
  trimmed.set(END_MARKER, offset);
  return trimmed;
}
