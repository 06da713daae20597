/**
 * Fault injection for crash tests: when KMS_FAULT_INJECTION names a point, the process kills
 * itself with SIGKILL there (no cleanup, as a power cut would). Never honoured in production.
 */
export function faultPoint(name: string): void {
  const wanted = process.env.KMS_FAULT_INJECTION;
  if (wanted === undefined || wanted === '' || process.env.NODE_ENV === 'production') return;
  if (wanted === name) process.kill(process.pid, 'SIGKILL');
}
