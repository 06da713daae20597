/** Assertions shared by the TDX tests. */
import { expect } from 'vitest';
import { KmsError, type KmsErrorCode } from '../../shared/errors.js';

/** The KmsError that `action` throws or rejects with (fails the test on anything else). */
export async function kmsError(action: () => unknown): Promise<KmsError> {
  try {
    await action();
  } catch (error) {
    if (error instanceof KmsError) return error;
    throw new Error(`expected a KmsError, got: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`, { cause: error });
  }
  throw new Error('expected a KmsError, but the action succeeded');
}

/** Asserts a refusal naming `claim`: FORBIDDEN, "attestation refused: <claim>: …", details.claim. */
export async function expectRefusal(action: () => unknown, claim: string, detail?: string | RegExp): Promise<KmsError> {
  const error = await kmsError(action);
  expect(error.code).toBe('FORBIDDEN');
  expect(error.message.startsWith(`attestation refused: ${claim}: `)).toBe(true);
  expect(error.details).toEqual({ claim });
  if (typeof detail === 'string') expect(error.message).toBe(`attestation refused: ${claim}: ${detail}`);
  else if (detail) expect(error.message).toMatch(detail);
  return error;
}

export async function expectKmsError(action: () => unknown, code: KmsErrorCode, message?: string | RegExp): Promise<KmsError> {
  const error = await kmsError(action);
  expect(error.code).toBe(code);
  if (typeof message === 'string') expect(error.message).toBe(message);
  else if (message) expect(error.message).toMatch(message);
  return error;
}

const u16 = (n: number) => Buffer.from([n & 0xff, n >> 8]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/** A minimal TCG2 event log: the SHA-1-format header event, two SHA-384 events, then padding. */
export function syntheticCcel(padding: number): { log: Buffer; trimmed: Buffer } {
  // TCG_EfiSpecIDEvent: signature, platformClass, spec version 2.0 errata 0, uintnSize 2,
  // one algorithm (SHA-384, 48 bytes), no vendor info.
  const specId = Buffer.concat([Buffer.from('Spec ID Event03\0', 'latin1'), u32(0), Buffer.from([0, 2, 0, 2]), u32(1), u16(0x0c), u16(48), Buffer.from([0])]);
  const header = Buffer.concat([u32(0), u32(3), Buffer.alloc(20), u32(specId.length), specId]);
  const event = (pcr: number, data: string) =>
    Buffer.concat([u32(pcr), u32(0x80000001), u32(1), u16(0x0c), Buffer.alloc(48, pcr), u32(data.length), Buffer.from(data)]);
  const events = Buffer.concat([header, event(1, 'firmware'), event(2, 'kernel command line')]);
  return {
    log: Buffer.concat([events, Buffer.alloc(4096, padding)]),
    trimmed: Buffer.concat([events, Buffer.alloc(8, 0xff)]),
  };
}
