/**
 * `encrypt` and `decrypt`: files under a data key, in the tee-kms format (cli/formats/stream.ts) or
 * BigDL's (cli/formats/bigdl.ts). Output is all or nothing (cli/formats/output.ts): a file that
 * fails to authenticate leaves no output file.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import { clientFor, globals, userOf } from '../config.js';
import { Refused, UsageError } from '../errors.js';
import { decryptBigdl, encryptBigdl } from '../formats/bigdl.js';
import { peekFile, peekStream, type FileFormat } from '../formats/detect.js';
import { boundStreamGarbage } from '../formats/memory.js';
import { writeOutput } from '../formats/output.js';
import { DEFAULT_CHUNK_SIZE, decryptStream, encryptStream } from '../formats/stream.js';
import { print } from '../io.js';
import { progressFor } from '../progress.js';

interface FileOptions {
  readonly primaryKey?: string;
  readonly dataKey?: string;
  readonly out: string;
  readonly format: string;
}

function formatOf(value: string): FileFormat {
  if (value !== 'tee-kms' && value !== 'bigdl') throw new UsageError(`--format must be tee-kms or bigdl, not ${value}`);
  return value;
}

/**
 * The input's size: undefined for standard input (no progress bar). A path must name a regular file:
 * decrypt opens it twice (its first bytes tell the format), which a pipe cannot give.
 */
async function sizeOf(path: string): Promise<number | undefined> {
  if (path === '-') return undefined;
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new UsageError(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (info.isDirectory()) throw new UsageError(`${path} is a directory, not a file`);
  if (!info.isFile()) throw new UsageError(`${path} is not a regular file: give it on standard input instead (- as the input)`);
  return info.size;
}

// Reads of one tee-kms chunk (DEFAULT_CHUNK_SIZE): a quarter as many buffers, callbacks and stream
// turns as Node's default 64 KiB, with the same peak RSS (docs/performance.md).
const READ_BYTES = DEFAULT_CHUNK_SIZE;

/** The input as a stream, once its size was checked (sizeOf). */
function streamOf(path: string): Readable {
  return path === '-' ? process.stdin : createReadStream(path, { highWaterMark: READ_BYTES });
}

function printDone(command: Command, action: string, out: string, format: FileFormat): void {
  if (out === '-') return;
  print(globals(command).json === true, { [action]: true, format, file: out }, `${action} (${format}) to ${out}`);
}

export function addFileCommands(program: Command): void {
  program
    .command('encrypt <in>')
    .description('encrypt a file (- for standard input) under a data key')
    .requiredOption('--primary-key <pk>', 'the primary key of the data key')
    .requiredOption('--data-key <dk>', 'the data key to encrypt under')
    .requiredOption('-o, --out <out>', 'the encrypted file (new; - for standard output)')
    .option('--format <format>', 'tee-kms (authenticated stream, the default) or bigdl (BigDL PPML files)', 'tee-kms')
    .action(async (path: string, options: FileOptions & { primaryKey: string; dataKey: string }, command: Command) => {
      const format = formatOf(options.format);
      const client = clientFor(command, 'user');
      const user = userOf(command);
      const size = await sizeOf(path);
      boundStreamGarbage();
      const { key } = await client.getDataKey(options.primaryKey, options.dataKey);
      const cipher =
        format === 'bigdl'
          ? encryptBigdl(key, options.dataKey)
          : encryptStream(Buffer.from(key, 'base64'), { user, primaryKey: options.primaryKey, dataKey: options.dataKey });
      await writeOutput(options.out, streamOf(path), [...progressFor(size, 'encrypting'), cipher]);
      printDone(command, 'encrypted', options.out, format);
    });

  program
    .command('decrypt <in>')
    .description('decrypt a file (- for standard input) in the format it is in; a tee-kms file names its keys, a BigDL file needs --primary-key')
    .requiredOption('-o, --out <out>', 'the decrypted file (new; - for standard output)')
    .option('--format <format>', 'tee-kms or bigdl: refuse a file in the other format (default: the one the file is in, from its first bytes)')
    .option('--primary-key <pk>', 'bigdl: the primary key of the data key')
    .option('--data-key <dk>', 'bigdl: the data key (default: the name in the file, BigDL 2.3+)')
    .action(async (path: string, options: Omit<FileOptions, 'format'> & { format?: string }, command: Command) => {
      const asked = options.format === undefined ? undefined : formatOf(options.format);
      const client = clientFor(command, 'user');
      const size = await sizeOf(path);
      const { format: found, stream: stdin } = path === '-' ? await peekStream(process.stdin) : { format: await peekFile(path), stream: process.stdin };
      const format = checkedFormat(path, found, asked);
      const done = () => printDone(command, 'decrypted', options.out, format);
      boundStreamGarbage();
      if (format === 'tee-kms') {
        if (options.primaryKey !== undefined || options.dataKey !== undefined)
          throw new UsageError('a tee-kms file names its keys: --primary-key and --data-key are for BigDL files');
        const user = userOf(command);
        const plain = decryptStream(async (names) => {
          if (names.user !== user) throw new Refused(`the file is under a key of user ${names.user}, not ${user}`);
          return Buffer.from((await client.getDataKey(names.primaryKey, names.dataKey)).key, 'base64');
        });
        await writeOutput(options.out, path === '-' ? stdin : streamOf(path), [...progressFor(size, 'decrypting'), plain]);
        return done();
      }
      const primaryKey = options.primaryKey;
      if (primaryKey === undefined) throw new UsageError('a BigDL file needs --primary-key');
      // The file is authenticated whole before any plaintext comes out: the bar follows the output.
      // A path is opened by decryptBigdl itself: it reads the file twice, by position. To standard
      // output, where nothing can be taken back, the file is spooled to a private copy first, so a
      // change between the two passes cannot reach the output before the last check refuses it.
      const input = path === '-' ? stdin : options.out === '-' ? createReadStream(path) : path;
      const plain = await decryptBigdl(input, async (header) => {
        const dataKey = options.dataKey ?? header.dataKeyName;
        if (dataKey === undefined) throw new UsageError('this BigDL file does not name its data key: give --data-key');
        return (await client.getDataKey(primaryKey, dataKey)).key;
      });
      await writeOutput(options.out, plain, progressFor(size, 'decrypting'));
      done();
    });
}

/** The format found in the input, which must be the one asked for, if any. */
function checkedFormat(path: string, found: FileFormat | undefined, asked: FileFormat | undefined): FileFormat {
  const input = path === '-' ? 'standard input' : path;
  if (found === undefined) throw new UsageError(`${input} is neither a tee-kms nor a BigDL encrypted file`);
  if (asked !== undefined && asked !== found) throw new UsageError(`${input} is a ${found} file, not ${asked}: nothing was decrypted`);
  return found;
}
