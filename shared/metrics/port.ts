import { KmsError } from '../errors.js';

/** A metrics port option: 1-65535, or `0`/`off` (undefined: no metrics server, prom-client never loaded). */
export function parseMetricsPort(raw: string, env: string): number | undefined {
  if (raw === '0' || raw.toLowerCase() === 'off') return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 65_535) {
    throw new KmsError('CONFIG', `${env} must be a port (1-65535), or 0 or off to disable metrics, got "${raw}"`);
  }
  return Number(raw);
}
