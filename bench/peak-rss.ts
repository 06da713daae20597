import { readFileSync } from 'node:fs';

/**
 * This process's own peak resident set, in KiB: VmHWM, not getrusage's maxRSS, which Linux keeps
 * across execve (a child would report at least its parent's peak at the time it was forked).
 */
export function peakRssKb(): number {
  return Number(/VmHWM:\s*(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
}
