import { fstatSync, writeSync } from 'node:fs';
import sonicBoom from 'sonic-boom';
import { KmsError } from './errors.js';

/**
 * Logging that cannot leak: callers pass names, statuses and error codes, never request URLs,
 * bodies or headers (they may carry tokens and shares). One JSON line per event on stdout/stderr.
 */
const accessLog = !/^(0|false|no|off)$/i.test(process.env.KMS_ACCESS_LOG ?? 'true');

/** `out`: stdout (info lines, the access log) or stderr (warnings, errors: written synchronously). */
function line(out: 'stdout' | 'stderr', fields: Record<string, unknown>): void {
  const text = `${JSON.stringify({ time: isoNow(), ...fields })}\n`;
  if (out === 'stdout') queue(text);
  else process.stderr.write(text);
}

/** The time as `Date.prototype.toISOString` gives it, formatted once per millisecond. */
let isoMs = 0;
let iso = new Date(0).toISOString();
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    iso = new Date(ms).toISOString();
  }
  return iso;
}

/**
 * stdout lines are written once per event-loop turn (or per 64 KB), by the event loop's own thread,
 * with one non-blocking write: no thread is woken for them, and a turn's lines are in the pipe (a
 * container's stdout) when the turn ends, so a SIGKILL loses none already logged by an earlier
 * turn. When the reader is slow and the pipe is full, what does not fit goes to sonic-boom (pino's
 * destination), which writes it from a libuv thread, retrying, while the event loop goes on; later
 * lines follow it there until it has written everything, so lines stay in order. What sonic-boom
 * holds is written synchronously when the process exits (process.exit, the end of its event loop,
 * an uncaught exception), except a write already under way, which drainLog() waits for. Past
 * STDOUT_LIMIT waiting (stdout not read) lines go to stderr instead, synchronously, so none is
 * dropped.
 */
const STDOUT_LIMIT = 16 * 1024 * 1024;
// Node's own stdout stream for a pipe or socket puts the descriptor in non-blocking mode (libuv),
// which the write below relies on: a full pipe then answers EAGAIN instead of stalling the server.
// Files do not block; a terminal stays blocking, as Node keeps it.
if (!stdoutIsFile()) void process.stdout;
const stdout = new sonicBoom.SonicBoom({ fd: 1, sync: false, contentMode: 'buffer' });
/** Bytes handed to sonic-boom and not yet written by it: while any, new lines go there too. */
let handedOff = 0;
stdout.on('write', (n: number) => (handedOff -= n));
// An error (EPIPE: nobody reads stdout any more) ends the process, as on a process.stdout without a
// listener; a process that can go on without stdout says so with onStdoutError.
let stdoutError = (error: Error): void => {
  throw error;
};
stdout.on('error', (error: Error) => stdoutError(error));

/** What to do when stdout cannot be written (the reader is gone) instead of throwing. */
export function onStdoutError(handler: (error: Error) => void): void {
  stdoutError = handler;
}

/** One turn's lines: one write per turn, not one per line (docs/performance.md, changes 14 and 18). */
const QUEUE_LIMIT = 64 * 1024;
let queued = '';

function queue(text: string): void {
  if (queued === '') setImmediate(flush);
  queued += text;
  if (queued.length >= QUEUE_LIMIT) flush();
}

function flush(): void {
  if (queued === '') return;
  let bytes = Buffer.from(queued);
  queued = '';
  if (handedOff === 0) {
    try {
      bytes = bytes.subarray(writeSync(1, bytes));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return stdoutError(error as Error);
    }
    if (bytes.length === 0) return;
  }
  if (handedOff + bytes.length > STDOUT_LIMIT) {
    process.stderr.write(bytes);
    return;
  }
  handedOff += bytes.length;
  stdout.write(bytes as unknown as string); // contentMode 'buffer': its types say string
}

function stdoutIsFile(): boolean {
  try {
    return fstatSync(1).isFile();
  } catch {
    return false; // closed: Node's stdout stands in
  }
}

/**
 * Resolves once every line logged so far has been written: a graceful stop awaits it before
 * process.exit, since a write still under way on a libuv thread is not waited for at exit.
 */
export function drainLog(): Promise<void> {
  flush();
  if (handedOff === 0) return Promise.resolve();
  return new Promise((resolve) => stdout.flush(() => resolve()));
}

process.on('exit', () => {
  try {
    flush(); // this turn's lines, after what sonic-boom holds if it holds any
    stdout.flushSync(); // what sonic-boom holds, waiting out a full pipe
  } catch {
    // stdout is gone: nothing more can be written there
  }
});

export const log = {
  info(message: string, fields: Record<string, unknown> = {}): void {
    line('stdout', { level: 'info', message, ...fields });
  },
  /** `path` is a route's template or a path whose name passed validation (route.ts); never a query string. */
  access(fn: string, method: string, path: string, status: number, ms: number): void {
    // The bytes line() would write, built without its two objects and JSON.stringify of them: one per request.
    if (!accessLog) return;
    const text = `{"time":"${isoNow()}","level":"info","fn":${JSON.stringify(fn)},"method":${JSON.stringify(method)},"path":${JSON.stringify(path)},"status":${status},"ms":${Math.round(ms * 100) / 100}}\n`;
    queue(text);
  },
  warn(where: string, error: KmsError | string): void {
    line('stderr', typeof error === 'string' ? { level: 'warn', where, message: error } : { level: 'warn', where, code: error.code, message: error.message });
  },
  /** Unexpected errors: the name and stack locate the bug; messages of foreign errors are not trusted to be secret-free. */
  error(where: string, error: unknown): void {
    const e = error instanceof Error ? error : new Error(String(typeof error));
    line('stderr', { level: 'error', where, name: e.name, stack: e.stack?.split('\n').slice(1, 6).join(' | ') });
  },
};

/**
 * The lines of a service beside the functions (the sealing service), in the same JSON, each with
 * `component`. Its request lines (method, path, status, ms) are written whatever KMS_ACCESS_LOG
 * says: they are the record of who asked for the root key. Messages are the caller's own words.
 */
export function componentLog(component: string) {
  const message =
    (out: 'stdout' | 'stderr', level: string) =>
    (text: string, fields: Record<string, unknown> = {}) =>
      line(out, { level, component, message: text, ...fields });
  return {
    info: message('stdout', 'info'),
    warn: message('stderr', 'warn'),
    error: message('stderr', 'error'),
    request(method: string, path: string, status: number, ms: number): void {
      line('stdout', { level: 'info', component, method, path, status, ms: Math.round(ms * 100) / 100 });
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
