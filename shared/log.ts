import { KmsError } from './errors.js';

/**
 * Logging that cannot leak: callers pass names, statuses and error codes, never request URLs,
 * bodies or headers (they may carry tokens and shares). One JSON line per event on stdout/stderr.
 */
const accessLog = !/^(0|false|no|off)$/i.test(process.env.KMS_ACCESS_LOG ?? 'true');

function line(stream: NodeJS.WriteStream, fields: Record<string, unknown>): void {
  const text = `${JSON.stringify({ time: new Date().toISOString(), ...fields })}\n`;
  if (stream === process.stdout) queue(text);
  else stream.write(text);
}

/**
 * stdout lines are written once per event-loop turn, in order: on a pipe (a container's stdout) every
 * write is a blocking syscall, and one per request was the largest cost of a warm read (see
 * docs/performance.md). What is queued is written on exit too.
 */
const QUEUE_LIMIT = 64 * 1024;
let queued = '';

function queue(text: string): void {
  if (queued === '') setImmediate(flush);
  queued += text;
  if (queued.length >= QUEUE_LIMIT) flush();
}

function flush(): void {
  if (queued === '') return;
  const text = queued;
  queued = '';
  process.stdout.write(text);
}

process.on('exit', flush);

export const log = {
  info(message: string, fields: Record<string, unknown> = {}): void {
    line(process.stdout, { level: 'info', message, ...fields });
  },
  /** `path` is a route's template or a path whose name passed validation (route.ts); never a query string. */
  access(fn: string, method: string, path: string, status: number, ms: number): void {
    if (accessLog) line(process.stdout, { level: 'info', fn, method, path, status, ms: Math.round(ms * 100) / 100 });
  },
  warn(where: string, error: KmsError | string): void {
    line(
      process.stderr,
      typeof error === 'string' ? { level: 'warn', where, message: error } : { level: 'warn', where, code: error.code, message: error.message },
    );
  },
  /** Unexpected errors: the name and stack locate the bug; messages of foreign errors are not trusted to be secret-free. */
  error(where: string, error: unknown): void {
    const e = error instanceof Error ? error : new Error(String(typeof error));
    line(process.stderr, { level: 'error', where, name: e.name, stack: e.stack?.split('\n').slice(1, 6).join(' | ') });
  },
};

/**
 * The lines of a service beside the functions (the sealing service), in the same JSON, each with
 * `component`. Its request lines (method, path, status, ms) are written whatever KMS_ACCESS_LOG
 * says: they are the record of who asked for the root key. Messages are the caller's own words.
 */
export function componentLog(component: string) {
  const message =
    (stream: NodeJS.WriteStream, level: string) =>
    (text: string, fields: Record<string, unknown> = {}) =>
      line(stream, { level, component, message: text, ...fields });
  return {
    info: message(process.stdout, 'info'),
    warn: message(process.stderr, 'warn'),
    error: message(process.stderr, 'error'),
    request(method: string, path: string, status: number, ms: number): void {
      line(process.stdout, { level: 'info', component, method, path, status, ms: Math.round(ms * 100) / 100 });
    },
  };
}

export type ComponentLog = ReturnType<typeof componentLog>;

/** A JSON log line's fields, or undefined for other text: for programs that read another's log. */
export function logFields(text: string): Record<string, unknown> | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const fields = JSON.parse(text) as unknown;
    return typeof fields === 'object' && fields !== null && !Array.isArray(fields) ? (fields as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
