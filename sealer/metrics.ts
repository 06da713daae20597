import type { Collector } from '../shared/metrics/registry.js';
import { serveMetrics, type MetricsServer } from '../shared/metrics/server.js';
import type { SealStatus } from '../shared/sealer-client/protocol.js';
import type { SealerCounts } from './core.js';

/** What the metrics read at each scrape (SealerCore provides it). */
export interface SealStatusSource {
  status(): SealStatus;
  counts(): SealerCounts;
}

/**
 * The sealing service's state as gauges, read from its status at each scrape. The root key's age
 * is a lower bound: the state record keeps no creation time, so it counts from when this process
 * first served that key (its start, an unseal, a rotation's verification).
 */
export function sealerCollector(core: SealStatusSource, now: () => number = Date.now): Collector {
  return (prom, registry) => {
    let seen: { id: string; since: number } | undefined;
    const gauge = (name: string, help: string, value: (status: SealStatus) => number) =>
      new prom.Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(value(core.status()));
        },
      });
    gauge('kms_sealer_sealed', '1 while the root key is not in memory (sealed, or not initialized), else 0.', (s) => (s.sealed ? 1 : 0));
    gauge('kms_sealer_initialized', '1 once a root key exists (its state record is stored), else 0.', (s) => (s.initialized ? 1 : 0));
    gauge('kms_sealer_verification_pending', "1 while a rotation's new key waits for its shares to be verified, else 0.", (s) =>
      s.verificationPending ? 1 : 0,
    );
    gauge(
      'kms_sealer_integrity_alarm',
      '1 while an integrity alarm stands that only restoring storage clears (its state record missing while keys are stored, or rolled back), else 0.',
      (s) => (s.integrityAlarm === null ? 0 : 1),
    );
    gauge('kms_sealer_recovery_shares', 'Shares received so far by a recovery under way (0 without one).', (s) => s.progress);
    gauge('kms_sealer_recovery_threshold', 'Shares a recovery needs (t; 0 before initialization or with a root key from a secret).', (s) => s.t);
    // Counters from the core's counts since start: each scrape adds what happened since the last.
    const counter = (name: string, help: string, value: (counts: SealerCounts) => number) => {
      let reported = 0;
      new prom.Counter({
        name,
        help,
        registers: [registry],
        collect() {
          const now = value(core.counts());
          if (now > reported) this.inc(now - reported);
          reported = now;
        },
      });
    };
    counter('kms_sealer_recoveries_total', 'Recoveries from shares that unsealed this process: each should be one the custodians meant.', (c) => c.recoveries);
    counter(
      'kms_sealer_integrity_alarms_total',
      'Integrity alarms raised (each logged as INTEGRITY ALARM): storage or its state record failed a check.',
      (c) => c.integrityAlarms,
    );
    gauge(
      'kms_sealer_root_key_age_seconds',
      'Seconds since this process first served the current root key (a lower bound of its age); 0 while sealed.',
      (s) => {
        if (s.sealed || s.rootKeyId === null) return 0;
        if (seen?.id !== s.rootKeyId) seen = { id: s.rootKeyId, since: now() };
        return (now() - seen.since) / 1000;
      },
    );
  };
}

/** The sealer's metrics port (KMS_SEALER_METRICS_PORT), started once its HTTPS port listens. */
export function serveSealerMetrics(core: SealStatusSource, port: number, bind: string): Promise<MetricsServer> {
  return serveMetrics({ port, bind, portEnv: 'KMS_SEALER_METRICS_PORT', bindEnv: 'KMS_SEALER_METRICS_HOST', collectors: [sealerCollector(core)] });
}
