import type { RotationJournal } from '../root-key/rotation.js';
import type { Collector } from './registry.js';

/**
 * Rotation progress as storage records it, read at each scrape: every pod sees the rotation that
 * any pod runs, and one whose holder died (its lease lapsed, nobody resumed) shows as stuck.
 * Without a readable journal (storage down, configuration broken) every gauge is NaN.
 */
export function rotationCollector(journal: () => Promise<RotationJournal | undefined>): Collector {
  return (prom, registry) => {
    let last: Promise<RotationJournal | undefined | null> | undefined;
    // One storage read per scrape, shared by the gauges below.
    const read = () =>
      (last ??= journal()
        .catch(() => null)
        .finally(() => setImmediate(() => (last = undefined))));
    const gauge = (name: string, help: string, value: (j: RotationJournal | undefined) => number) =>
      new prom.Gauge({
        name,
        help,
        registers: [registry],
        async collect() {
          const found = await read();
          this.set(found === null ? NaN : value(found));
        },
      });
    gauge('kms_rotation_in_progress', '1 while a well-formed root key rotation journal is stored (a verification rewraps, or one died midway), else 0.', (j) =>
      j === undefined ? 0 : 1,
    );
    gauge('kms_rotation_journal_rewrapped_keys', "Primary keys the running rotation's journal says are rewrapped (0 without one).", (j) => j?.rewrapped ?? 0);
    gauge(
      'kms_rotation_lease_expiry_timestamp_seconds',
      "When the running rotation's journal lapses unless an instance in its rewrap reports progress (0 without one): in the past, all stopped.",
      (j) => (j === undefined ? 0 : j.leaseUntil / 1000),
    );
    gauge('kms_rotation_started_timestamp_seconds', 'When the running rotation started (0 without one).', (j) =>
      j === undefined ? 0 : Date.parse(j.startedAt) / 1000 || 0,
    );
  };
}
