/** What commands print and write: results on stdout (JSON with --json), messages on stderr. */
import { mkdir, open, stat } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { Refused } from './errors.js';

/** A message for the person at the terminal; stdout stays the result alone. */
export const say = (message: string): void => void process.stderr.write(`tee-kms: ${message}\n`);

/** The result: `json` with --json, else `text` (one or more lines). */
export function print(json: boolean, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
}

/** A new file only its owner reads; an existing one is never overwritten. */
export async function writeSecretFile(path: string, content: string): Promise<void> {
  let file;
  try {
    file = await open(path, 'wx', 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Refused(code === 'EEXIST' ? `${path} exists: it is never overwritten` : `cannot create ${path} (${code ?? 'error'})`);
  }
  try {
    await file.writeFile(content);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** A directory for secret files: made 0700 when missing; an existing one must be a directory. */
export async function secretDirectory(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode: 0o700 });
    if (!(await stat(path)).isDirectory()) throw new Error();
  } catch {
    throw new Refused(`cannot use ${path} as a directory`);
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
