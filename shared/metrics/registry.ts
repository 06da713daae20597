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
  const requests = new client.Counter({
    name: 'kms_requests_total',
    help: 'Requests answered, by function (route name) and HTTP status.',
    labelNames: ['function', 'status'] as const,
    registers,
  });
  const latency = new client.Histogram({
    name: 'kms_request_duration_seconds',
    help: 'Time from a request to its answer, by function.',
    labelNames: ['function'] as const,
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const cache = new client.Counter({
    name: 'kms_cache_lookups_total',
    help: 'Lookups in the in-memory caches (credentials, primary_keys, data_keys), by result: hit or miss.',
    labelNames: ['cache', 'result'] as const,
    registers,
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
    help: 'KBS attestations refused, by reason.',
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
      requests.inc({ function: fn, status: String(status) });
      latency.observe({ function: fn }, seconds);
    },
    cache: (name, hit) => cache.inc({ cache: name, result: hit ? 'hit' : 'miss' }),
    storage: (operation, outcome, seconds) => {
      storage.inc({ operation, outcome });
      storageLatency.observe({ operation }, seconds);
    },
    attestationFailure: (reason) => attestationFailures.inc({ reason }),
    rewrapped: () => rewrapped.inc(),
  });
  return registry;
}
