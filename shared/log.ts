import { fstatSync, writeSync } from 'node:fs';
import { kmsOptions } from './config.js';
import { KmsError } from './errors.js';
import { loadOptions } from './options.js';

/**
 * Logging that cannot leak: callers pass names, statuses and error codes, never request URLs,
 * bodies or headers (they may carry tokens and shares). One JSON line per event on stdout/stderr.
 */
const accessLog = accessLogOption();

/**
 * KMS_ACCESS_LOG (shared/config.ts), read once, when this module is imported, which every program
 * does before it could report an error (the sealing service too, whose request lines do not depend
 * on it). A value the option refuses is therefore not thrown here: it leaves the log on, and is
 * refused where the options are loaded, by the hosts at start (shared/http/host.ts) and by
 * loadKmsConfig.
 */
function accessLogOption(): boolean {
  try {
    return loadOptions({ accessLog: kmsOptions.accessLog }).accessLog;
  } catch {
    return true;
  }
}

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
 * stdout lines are written once per event-loop turn (or per 64 KB), as the turn ends, by the event
 * loop itself with non-blocking writes: a turn's lines are in the pipe (a container's stdout) when
 * the turn ends, so a SIGKILL loses none logged by an earlier turn unless the pipe was full. When
 * the reader is slow and the pipe is full, what it did not take waits here, in order, and is
 * retried every RETRY_MS while the event loop serves on; newer lines wait behind it. Every write is
 * made and counted here, so what waits is known exactly: a graceful stop waits for it
 * (drainLog()), and an exit (process.exit, the end of the event loop, an uncaught exception) writes
 * it synchronously, waiting up to EXIT_WAIT_MS for the reader. Past STDOUT_LIMIT waiting (stdout
 * not read) lines go to stderr instead, synchronously, so none is dropped.
 */
const STDOUT_LIMIT = 16 * 1024 * 1024;
const RETRY_MS = 10;
const EXIT_WAIT_MS = 10_000;
// Node's own stdout stream for a pipe or socket puts the descriptor in non-blocking mode (libuv),
// which the writes below rely on: a full pipe answers EAGAIN instead of stalling the server. Files
// do not block; a terminal stays blocking, as Node keeps it.
if (!stdoutIsFile()) void process.stdout;

// An error (EPIPE: nobody reads stdout any more) ends the process, as on a process.stdout without a
// listener; a process that can go on without stdout says so with onStdoutError.
let stdoutError = (error: Error): void => {
  throw error;
};

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

/** Bytes the pipe has not taken yet, oldest first. */
const waiting: Buffer[] = [];
let waitingBytes = 0;
let retry: NodeJS.Timeout | undefined;
let drained: (() => void)[] = [];

function flush(): void {
  if (queued === '') return;
  const bytes = Buffer.from(queued);
  queued = '';
  if (waitingBytes + bytes.length > STDOUT_LIMIT) {
    process.stderr.write(bytes);
    return;
  }
  waiting.push(bytes);
  waitingBytes += bytes.length;
  if (retry === undefined) writeWaiting();
}

/** Writes what waits as far as the pipe takes it now; tries again in RETRY_MS while anything is left. */
function writeWaiting(): void {
  retry = undefined;
  try {
    writeAvailable();
  } catch (error) {
    waiting.length = 0;
    waitingBytes = 0;
    // Reported on its own tick, as a stream's 'error' event is: never thrown into whoever logged.
    process.nextTick(stdoutError, error as Error);
  }
  if (waiting.length > 0) {
    // Unreferenced: a process that is otherwise done exits, and its exit writes what waits.
    retry = setTimeout(writeWaiting, RETRY_MS).unref();
    return;
  }
  const resolved = drained;
  drained = [];
  for (const resolve of resolved) resolve();
}

/** Writes waiting bytes until all are written or the pipe is full (EAGAIN); throws other errors. */
function writeAvailable(): void {
  while (waiting.length > 0) {
    const head = waiting[0]!;
    let written: number;
    try {
      written = writeSync(1, head);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return;
      throw error;
    }
    waitingBytes -= written;
    if (written < head.length) {
      waiting[0] = head.subarray(written);
      return;
    }
    waiting.shift();
  }
}

/** Resolves once every line logged so far is written: a graceful stop awaits it before process.exit. */
export function drainLog(): Promise<void> {
  flush();
  if (waiting.length === 0) return Promise.resolve();
  return new Promise((resolve) => drained.push(resolve));
}

process.on('exit', () => {
  if (queued !== '') {
    waiting.push(Buffer.from(queued)); // this turn's lines, behind what waits
    queued = '';
  }
  const exitSleep = new Int32Array(new SharedArrayBuffer(4));
  try {
    // No event loop any more: wait out a full pipe here, for a while.
    for (let waited = 0; waiting.length > 0 && waited <= EXIT_WAIT_MS; waited += RETRY_MS) {
      writeAvailable();
      if (waiting.length > 0) Atomics.wait(exitSleep, 0, 0, RETRY_MS);
    }
  } catch {
    // stdout is gone: nothing more can be written there
  }
});

function stdoutIsFile(): boolean {
  try {
    return fstatSync(1).isFile();
  } catch {
    return false; // closed: Node's stdout stands in
  }
}

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
 * Passes on a line of another process's stdout (a child's), in order with this process's own lines:
 * one writer for the descriptor, so a full pipe cannot tear a line between two of them.
 */
export function passOn(line: string): void {
  queue(`${line}\n`);
}

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
