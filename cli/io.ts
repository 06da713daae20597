/** What commands print and write: results on stdout (JSON with --json), messages on stderr. */
import { mkdir, stat } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { createFile } from '../shared/fs/durable.js';
import { Refused, UsageError } from './errors.js';

/** A message for the person at the terminal; stdout stays the result alone. */
export const say = (message: string): void => void process.stderr.write(`tee-kms: ${message}\n`);

/** The result: `json` with --json, else `text` (one or more lines). */
export function print(json: boolean, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
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
 * A directory for secret files: made 0700 when missing; an existing one must be a directory, and
 * one that other users can enter is said (`warn`), as what is written there is then theirs to list.
 */
export async function secretDirectory(path: string, warn: (message: string) => void = say): Promise<void> {
  let mode: number;
  try {
    const made = await mkdir(path, { recursive: true, mode: 0o700 });
    const info = await stat(path);
    if (!info.isDirectory()) throw new Error();
    mode = made === undefined ? info.mode : 0o700;
  } catch {
    throw new Refused(`cannot use ${path} as a directory`);
  }
  if ((mode & 0o077) !== 0) warn(`${path} is open to other users: keep secret files in a directory only you can read`);
}

/**
 * Secrets (shares) printed where anyone passing by reads them, and where the terminal's scrollback
 * keeps them: refused unless asked for with --print-shares. Checked before anything is done.
 */
export function refuseTerminal(what: string, instead: string, printShares: boolean | undefined): void {
  if (process.stdout.isTTY === true && printShares !== true) {
    throw new UsageError(`${what} would be printed to the terminal: give ${instead}, redirect standard output, or ask --print-shares`);
  }
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
