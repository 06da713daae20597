/**
 * Events the metrics count, raised where they happen (routes, caches, storage, rotation, the
 * sealer's attestation). No dependency: until a host installs a sink (registry.ts, loaded only with
 * metrics on) every hook is a no-op, so functions-framework and processes without metrics pay nothing.
 */
export type StorageOperation = 'get' | 'create' | 'replace' | 'delete' | 'list';
/** `conflict`: a conditional write refused (the object changed or exists); `error`: the call threw. */
export type StorageOutcome = 'ok' | 'conflict' | 'error';

export interface MetricsSink {
  request(fn: string, status: number, seconds: number): void;
  cache(cache: string, hit: boolean): void;
  storage(operation: StorageOperation, outcome: StorageOutcome, seconds: number): void;
  attestationFailure(reason: string): void;
  rewrapped(): void;
}

let sink: MetricsSink | undefined;

export const metricsHooks = {
  /** Installs the one sink of this process (a second replaces the first). */
  install(next: MetricsSink | undefined): void {
    sink = next;
  },
  request(fn: string, status: number, seconds: number): void {
    sink?.request(fn, status, seconds);
  },
  cache(cache: string, hit: boolean): void {
    sink?.cache(cache, hit);
  },
  storage(operation: StorageOperation, outcome: StorageOutcome, seconds: number): void {
    sink?.storage(operation, outcome, seconds);
  },
  attestationFailure(reason: string): void {
    sink?.attestationFailure(reason);
  },
  /** One primary key rewrapped under the new root key by a rotation in this process. */
  rewrapped(): void {
    sink?.rewrapped();
  },
};
