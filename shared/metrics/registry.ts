import * as client from 'prom-client';
import { metricsHooks } from './hooks.js';

export type PromClient = typeof client;
/** Adds a component's own metrics (gauges read at scrape time) to `registry`. */
export type Collector = (prom: PromClient, registry: client.Registry) => void;

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * This process's registry: Node's process metrics, what the hooks count, and `collectors`' own.
 * Installs the hooks' sink: from now on routes, caches and storage are counted.
 */
export function createRegistry(collectors: readonly Collector[] = []): client.Registry {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const registers = [registry];
  // Counted in plain numbers per event and added to the counters when scraped: prom-client's inc()
  // builds and checks its label set on every call, a measurable share of a warm read (docs/performance.md).
  const answered = new Map<string, Map<number, number>>();
  const lookups = new Map<string, { hit: number; miss: number }>();
  new client.Counter({
    name: 'kms_requests_total',
    help: 'Requests answered, by function (route name) and HTTP status.',
    labelNames: ['function', 'status'] as const,
    registers,
    collect() {
      for (const [fn, byStatus] of answered) {
        for (const [status, n] of byStatus) if (n > 0) this.inc({ function: fn, status: String(status) }, n);
        byStatus.clear();
      }
    },
  });
  const latency = new client.Histogram({
    name: 'kms_request_duration_seconds',
    help: 'Time from a request to its answer, by function.',
    labelNames: ['function'] as const,
    buckets: LATENCY_BUCKETS,
    registers,
  });
  new client.Counter({
    name: 'kms_cache_lookups_total',
    help: 'Lookups in the in-memory caches (credentials, primary_keys, data_keys), by result: hit or miss.',
    labelNames: ['cache', 'result'] as const,
    registers,
    collect() {
      for (const [name, counts] of lookups) {
        if (counts.hit > 0) this.inc({ cache: name, result: 'hit' }, counts.hit);
        if (counts.miss > 0) this.inc({ cache: name, result: 'miss' }, counts.miss);
        counts.hit = counts.miss = 0;
      }
    },
  });
  const storage = new client.Counter({
    name: 'kms_storage_operations_total',
    help: 'Object store calls by operation and outcome: ok, conflict (a conditional write refused) or error (the call failed).',
    labelNames: ['operation', 'outcome'] as const,
    registers,
  });
  const storageLatency = new client.Histogram({
    name: 'kms_storage_operation_duration_seconds',
    help: 'Time of object store calls, by operation.',
    labelNames: ['operation'] as const,
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const attestationFailures = new client.Counter({
    name: 'kms_attestation_failures_total',
    help: 'Attestations refused (KBS clients, and sealer peers on the sealing service), by reason.',
    labelNames: ['reason'] as const,
    registers,
  });
  const rewrapped = new client.Counter({
    name: 'kms_rotation_rewrapped_keys_total',
    help: 'Primary keys rewrapped under a new root key by rotations in this process.',
    registers,
  });
  for (const collect of collectors) collect(client, registry);
  metricsHooks.install({
    request: (fn, status, seconds) => {
      let byStatus = answered.get(fn);
      if (byStatus === undefined) answered.set(fn, (byStatus = new Map()));
      byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
      latency.observe({ function: fn }, seconds);
    },
    cache: (name, hit) => {
      let counts = lookups.get(name);
      if (counts === undefined) lookups.set(name, (counts = { hit: 0, miss: 0 }));
      if (hit) counts.hit++;
      else counts.miss++;
    },
    storage: (operation, outcome, seconds) => {
      storage.inc({ operation, outcome });
      storageLatency.observe({ operation }, seconds);
    },
    attestationFailure: (reason) => attestationFailures.inc({ reason }),
    rewrapped: () => rewrapped.inc(),
  });
  return registry;
}
