/**
 * The heap a sealed function's replay memory takes per entry (shared/sealed/replay.ts):
 *
 *   npm run bench -- --replay-memory [entries=200000]
 *
 * Fills a fresh ReplayGuard with `entries` jtis as a steady flow of credentials would (expiries
 * spread over the 61 s of a credential sealed just before it is sent), once with the jti of
 * tee-kms/client (16 random bytes: 22 base64url characters) and once with the longest jti a
 * credential may carry (128 characters), each jti a string of its own parsed from JSON, as the
 * server gets it. Prints the heap used after a full GC, less that before, per entry and in all.
 */
import { randomBytes } from 'node:crypto';
import { ReplayGuard } from '../shared/sealed/replay.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench -- --replay-memory does)');
const entries = Number(process.argv[2] ?? 200_000);
if (!Number.isSafeInteger(entries) || entries < 1000) throw new Error('entries: a whole number, at least 1000');

for (const [what, jtiBytes] of [
  ['tee-kms/client jti (22 characters)', 16],
  ['longest jti (128 characters)', 96],
] as const) {
  const used = heapOf(jtiBytes);
  console.log(`${what}: ${(used / entries).toFixed(1)} bytes per entry, ${(used / 1e6).toFixed(1)} MB for ${entries}`);
}

/** The heap a full guard takes; in a function of its own, so that nothing keeps the guard after it. */
function heapOf(jtiBytes: number): number {
  const before = heapAfterGc();
  const guard = new ReplayGuard(entries);
  const start = 1_764_930_000_000;
  for (let i = 0; i < entries; i++) {
    const now = start + Math.floor((i * 61_000) / entries);
    const { jti } = JSON.parse(`{"jti":"${randomBytes(jtiBytes).toString('base64url')}"}`) as { jti: string };
    guard.admit(jti, (Math.floor(now / 1000) + 61) * 1000, now);
  }
  const used = heapAfterGc() - before;
  if (guard.size !== entries) throw new Error(`the guard holds ${guard.size} entries, not ${entries}`);
  return used;
}

function heapAfterGc(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}
