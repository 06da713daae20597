/** What commands print and write: results on stdout (JSON with --json), messages on stderr. */
import { fstatSync, statSync, writeSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { createFile } from '../shared/fs/durable.js';
import { Refused, UsageError } from './errors.js';

// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;

/**
 * Text for a terminal: every control character (C0 including newline, DEL, C1) written as `\xHH`,
 * so that nothing said or printed, a server's message included, can move the cursor, rewrite or
 * forge a line, or start an escape sequence.
 */
export function printable(text: string): string {
  return text.replace(CONTROLS, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A message for the person at the terminal, on one line; stdout stays the result alone. */
export const say = (message: string): void => void process.stderr.write(`tee-kms: ${printable(message)}\n`);

/**
 * The result: `json` with --json (DEL and C1 written as \u escapes: the same JSON value, plain
 * ASCII controls none), else `text`, one line or several, each printable().
 */
export function print(json: boolean, value: unknown, text: string | readonly string[]): void {
  if (json) {
    const escaped = JSON.stringify(value).replace(/[\u007f-\u009f]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
    writeStdout(`${escaped}\n`);
    return;
  }
  const lines = typeof text === 'string' ? [text] : text;
  writeStdout(lines.map((line) => `${printable(line)}\n`).join(''));
}

let stdoutKind: 'file' | 'other' | undefined;

/**
 * Writes all of `data` to standard output. Into a file, Node writes synchronously and drops what a
 * short write left (a file system filling up): a share or key cut short, exit status 0. So into a
 * file every byte is written here, in a loop, and a failure stops the command as any other.
 */
export function writeStdout(data: string | Uint8Array): void {
  if (!stdoutIsFile()) {
    process.stdout.write(data);
    return;
  }
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    for (let offset = 0; offset < bytes.length;) offset += writeSync(1, bytes, offset, bytes.length - offset);
  } catch (error) {
    stdoutFailed(error as NodeJS.ErrnoException);
  }
}

/**
 * A Writable onto standard output for streamed output: into a file every byte (writeStdout); into
 * a pipe or terminal through process.stdout, each chunk flushed before the next is taken.
 */
export function stdoutWritable(): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (!stdoutIsFile()) {
        process.stdout.write(chunk, (error) => done(error ?? undefined));
        return;
      }
      writeStdout(chunk);
      done();
    },
  });
}

function stdoutIsFile(): boolean {
  if (stdoutKind === undefined) {
    try {
      stdoutKind = fstatSync(1).isFile() ? 'file' : 'other';
    } catch {
      stdoutKind = 'other';
    }
  }
  return stdoutKind === 'file';
}

/** Whether standard output is /dev/null: what is printed is lost (also what a closed descriptor becomes: `>&-`). */
function stdoutDiscards(): boolean {
  try {
    const out = fstatSync(1);
    const devNull = statSync('/dev/null');
    return out.isCharacterDevice() && out.rdev === devNull.rdev;
  } catch {
    return false;
  }
}

/** The exit status of a command whose standard output was closed under it: 128 + SIGPIPE, as the shell says. */
export const EXIT_CLOSED_PIPE = 141;

let lostIfClosed: string | undefined;

/**
 * What `print` writes from now on is a secret's only copy (shares): if standard output turns out
 * to be closed, `message` says on stderr what was lost. The error comes after the write returned,
 * so this holds until the command ends.
 */
export function onlyCopyOnStdout(message: string | undefined): void {
  lostIfClosed = message;
}

/**
 * Standard output closed by its reader (`tee-kms … | head -c0`, `| true`): the command stops at
 * once with EXIT_CLOSED_PIPE and no stack trace, as a command killed by SIGPIPE does; what was
 * lost is said when it was a secret's only copy. Any other error writing it is said by its code.
 * Standard error failing is ignored: there is nowhere left to say anything.
 */
export function guardStandardStreams(): void {
  process.stdout.on('error', stdoutFailed);
  process.stderr.on('error', () => undefined);
}

function stdoutFailed(error: NodeJS.ErrnoException): never {
  if (error.code === 'EPIPE') {
    if (lostIfClosed !== undefined) say(lostIfClosed);
    process.exit(EXIT_CLOSED_PIPE);
  }
  say(`cannot write standard output (${error.code ?? 'error'})${lostIfClosed === undefined ? '' : `: ${lostIfClosed}`}`);
  process.exit(1);
}

/**
 * A new file holding `content`, all or nothing (shared/fs/durable.ts), created with `mode` (only its
 * owner reads it by default); an existing one is never overwritten.
 */
export async function writeSecretFile(path: string, content: string, mode = 0o600): Promise<void> {
  let created;
  try {
    created = await createFile(path, content, mode);
  } catch (error) {
    throw new Refused(`cannot create ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!created) throw new Refused(`${path} exists: it is never overwritten`);
}

/**
 * A directory for secret files: made 0700 when missing; an existing one must be a directory of this
 * user's, and one that other users can enter is said (`warn`), as what is written there is then
 * theirs to list.
 */
export async function secretDirectory(path: string, warn: (message: string) => void = say): Promise<void> {
  let open: boolean;
  let owner: number;
  try {
    const made = await mkdir(path, { recursive: true, mode: 0o700 });
    const info = await stat(path);
    if (!info.isDirectory()) throw new Error();
    open = made === undefined && (info.mode & 0o077) !== 0;
    owner = info.uid;
  } catch {
    throw new Refused(`cannot use ${path} as a directory`);
  }
  // Its owner may remove or replace what is written there, whatever the files' own modes (root too).
  const self = process.getuid?.();
  if (self !== undefined && owner !== self)
    throw new Refused(`${path} belongs to another user (uid ${owner}), who could replace or remove the files written there: give a directory of your own`);
  if (open) warn(`${path} is open to other users: keep secret files in a directory only you can read`);
}

/**
 * Secrets (shares) printed where anyone passing by reads them, and where the terminal's scrollback
 * keeps them: refused unless asked for with --print-shares; printed into /dev/null, where they are
 * lost: refused. Checked before anything is done.
 */
export function refuseSecretOutput(what: string, instead: string, printShares: boolean | undefined): void {
  if (process.stdout.isTTY === true && printShares !== true) {
    throw new UsageError(`${what} would be printed to the terminal: give ${instead}, redirect standard output, or ask --print-shares`);
  }
  // Secrets printed into /dev/null are lost, and so they would be with standard output closed.
  if (stdoutDiscards())
    throw new UsageError(`${what} would be lost in /dev/null (standard output is /dev/null or closed): give ${instead}, or redirect standard output to a file`);
}

/**
 * Lines typed at a prompt; on a terminal the typing is not echoed (a share is a secret). From a
 * pipe, lines are read as they come. Resolves undefined at the end of input.
 */
export function secretLines(): { next(prompt: string): Promise<string | undefined>; close(): void } {
  let muted = false;
  const output = new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (!muted) process.stderr.write(chunk);
      done();
    },
  });
  const terminal = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output, terminal });
  const lines: string[] = [];
  const waiting: Array<(line: string | undefined) => void> = [];
  let ended = false;
  rl.on('line', (line) => (waiting.length > 0 ? waiting.shift()!(line) : lines.push(line)));
  // Ctrl-C at the prompt ends the input (readline would otherwise only pause): nothing more is sent.
  rl.on('SIGINT', () => rl.close());
  rl.on('close', () => {
    ended = true;
    for (const resolve of waiting.splice(0)) resolve(undefined);
  });
  return {
    next(prompt) {
      muted = false;
      process.stderr.write(prompt);
      muted = terminal;
      if (lines.length > 0) return Promise.resolve(lines.shift());
      if (ended) return Promise.resolve(undefined);
      return new Promise((resolve) => waiting.push(resolve)).then((line) => {
        if (terminal) process.stderr.write('\n');
        return line as string | undefined;
      });
    },
    close: () => rl.close(),
  };
}
