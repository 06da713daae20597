/**
 * Quotes made because a caller asked, without credentials: GET /attestation makes one in this TD,
 * GET /rootKey/recover has the sealing service make one in its own. Each is real work on a shared
 * resource (the attestation agent, the host's quote generation service, which every TD on the host
 * uses, or with configfs-tsm a thread of the pool that token checks and file I/O share), and
 * anyone who can reach the URL can ask. Unbounded, a flood of them could take that resource from
 * everything else; now at most EVIDENCE_RUNNING_MAX run at once per instance and each route queues
 * at most EVIDENCE_WAITING_MAX, past which the answer is 503 BUSY at once. A function's own
 * attestations to the sealing service do not queue here, but the kernel makes one quote at a time
 * (configfs-tsm): one of them can still wait for the two quotes a flood has running. The bound is
 * per process. A caller that leaves while queued keeps its place until its turn, which then passes
 * at once: no quote is made for a connection that is gone.
 */
import type { IncomingMessage } from 'node:http';
import { KmsError } from '../errors.js';
import { LaneScheduler } from '../lanes.js';

export type EvidenceLane = 'attestation' | 'recovery';
export const EVIDENCE_RUNNING_MAX = 2;
export const EVIDENCE_WAITING_MAX = 16;
export const publicEvidence = new LaneScheduler<EvidenceLane>(
  ['attestation', 'recovery'],
  EVIDENCE_RUNNING_MAX,
  EVIDENCE_WAITING_MAX,
  'too many attestation requests in progress; retry shortly',
);

/** `make` (a quote) in its turn in `lane`, unless the caller's connection closed while it waited. */
export function quoteFor<T>(lane: EvidenceLane, raw: IncomingMessage, make: () => Promise<T>): Promise<T> {
  return publicEvidence.run(lane, async () => {
    if (raw.socket?.destroyed === true) throw new KmsError('BAD_REQUEST', 'the connection was closed before the quote was made');
    return make();
  });
}
