/**
 * The custodians' command (docs/custodians.md): make a key pair, open a share encrypted to it, and
 * encrypt a share to the sealing service's recovery key once its evidence is verified.
 *
 *   npm run --silent custodian -- keygen <dir>
 *   npm run --silent custodian -- decrypt <private key file> <share> [-o <file>] [--print-shares]
 *   npm run --silent custodian -- seal-share <recovery key file> <index> <share file | -> --nonce=<nonce> [--key <private key file>]
 *        [--tdx-policy <file> --collateral <file> [--root-ca <PEM file>] [--at <ISO time>]] [--allow-sample]
 *
 * decrypt's share (encrypted) may be its text, a file, or `-` (stdin); its plaintext goes to a
 * pipe, a new 0600 file (-o), or a terminal only with --print-shares. seal-share's plaintext share
 * comes only from a file or `-`, never the command line, which other local users can read.
 * `--nonce=` with the `=`: a base64url nonce may start with a dash. Results go to stdout as one line
 * of JSON, ready for curl's -d @file. Relative paths are taken from where npm was run. Exit status: 0 done;
 * 1 refused (evidence not accepted, a key that does not open the share, a file that exists);
 * 2 usage or malformed input. Messages on stderr never hold a share or a private key.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KmsError } from '../shared/errors.js';
import { decryptTo } from '../cli/custodian/decrypt.js';
import { Refused, UsageError } from '../cli/errors.js';
import { guardStandardStreams, printable, writeStdout } from '../cli/io.js';
import { keygen } from '../cli/custodian/keygen.js';
import { parseNonce, sealShareToRecoveryKey } from '../cli/custodian/seal-share.js';

const USAGE = [
  'usage: custodian keygen <dir>',
  '       custodian decrypt <private key file> <share: JWE or {"index","content"}, a file holding it, or - (stdin)> [-o <file>] [--print-shares]',
  '       custodian seal-share <recovery key file> <index> <share: a file holding its base64 or {"index","content"}, or - (stdin)> --nonce=<nonce>',
  '                [--key <private key file>: required where custodians are pinned (the recovery key file holds challenges)]',
  '                [--tdx-policy <file> --collateral <file> [--root-ca <PEM file>] [--at <ISO time>]] [--allow-sample]',
].join('\n');

/** Messages for the person at the terminal (stdout stays the result alone). */
/** One line on stderr, its control characters written as `\xHH` (a file name may hold an escape sequence). */
const say = (message: string) => process.stderr.write(`custodian: ${printable(message)}\n`);

interface Parsed {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

function parse(argv: string[], count: number, options: NonNullable<ParseArgsConfig['options']> = {}): Parsed {
  let parsed: Parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { ...options, help: { type: 'boolean', short: 'h' } } }) as Parsed;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : 'bad arguments');
  }
  if (parsed.values['help'] === true) throw new UsageError('');
  if (parsed.positionals.length !== count) throw new UsageError(`expected ${count} argument${count === 1 ? '' : 's'}`);
  return parsed;
}

function parseIndex(value: string): number {
  const index = /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!(index >= 1 && index <= 255)) throw new UsageError('<index> must be a whole number from 1 to 255 (the share\'s "index")');
  return index;
}

function parseTime(value: string): Date {
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(at.getTime())) throw new UsageError(`--at ${value} is not an ISO 8601 time`);
  return at;
}

/** Runs one subcommand and returns what to print on stdout. */
async function run(argv: string[]): Promise<unknown> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'keygen': {
      const [dir] = parse(rest, 1).positionals as [string];
      return keygen(dir, say);
    }
    case 'decrypt': {
      const { values, positionals } = parse(rest, 2, { out: { type: 'string', short: 'o' }, 'print-shares': { type: 'boolean' } });
      const [keyFile, share] = positionals as [string, string];
      return decryptTo(keyFile, share, { out: values['out'] as string | undefined, printShares: values['print-shares'] === true });
    }
    case 'seal-share': {
      const { values, positionals } = parse(rest, 3, {
        nonce: { type: 'string' },
        key: { type: 'string' },
        'tdx-policy': { type: 'string' },
        collateral: { type: 'string' },
        'root-ca': { type: 'string' },
        at: { type: 'string' },
        'allow-sample': { type: 'boolean' },
      });
      const [recoveryFile, index, share] = positionals as [string, string, string];
      const text = (name: string) => values[name] as string | undefined;
      const nonce = text('nonce');
      if (nonce === undefined) throw new UsageError('--nonce is required: the nonce sent to GET /rootKey/recover');
      const [policyFile, collateralFile, rootCaFile, at] = [text('tdx-policy'), text('collateral'), text('root-ca'), text('at')];
      if ((policyFile === undefined) !== (collateralFile === undefined)) throw new UsageError('--tdx-policy and --collateral go together');
      if (collateralFile === undefined && (rootCaFile !== undefined || at !== undefined))
        throw new UsageError('--root-ca and --at need --tdx-policy and --collateral');
      const sealed = await sealShareToRecoveryKey({
        recoveryFile,
        index: parseIndex(index),
        share,
        nonce: parseNonce(nonce),
        keyFile: text('key'),
        ...(policyFile !== undefined && collateralFile !== undefined
          ? { tdx: { policyFile, collateralFile, ...(rootCaFile === undefined ? {} : { rootCaFile }), at: at === undefined ? new Date() : parseTime(at) } }
          : {}),
        allowSample: values['allow-sample'] === true,
        warn: say,
      });
      const measured = sealed.tee === 'tdx' ? ` (mrTd ${String(sealed.claims['mrTd'])}, TCB ${String(sealed.claims['tcbStatus'])})` : '';
      say(
        `${sealed.tee} evidence${measured} binds the recovery key (kid ${sealed.recoveryKeyId}) to the nonce; share ${sealed.body.index} is sealed to it${sealed.challenged ? ' with your recovery challenge' : ''}`,
      );
      return sealed.body;
    }
    case 'help':
    case '--help':
    case '-h':
      throw new UsageError('');
    default:
      throw new UsageError(command === undefined ? 'a subcommand is required' : `unknown subcommand ${command}`);
  }
}

async function main(): Promise<number> {
  // `npm run` starts scripts in the package's directory: paths are meant from where npm was run.
  if (process.env.npm_lifecycle_event === 'custodian' && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);
  // A closed pipe (`| head -c0`) ends the command with 141, as SIGPIPE would, without a stack trace.
  guardStandardStreams();
  try {
    const output = await run(process.argv.slice(2));
    writeStdout(`${JSON.stringify(output)}\n`);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(error.message ? `custodian: ${error.message}\n${USAGE}\n` : `${USAGE}\n`);
      return 2;
    }
    if (error instanceof Refused) {
      say(`refused: ${error.message}`);
      return 1;
    }
    if (error instanceof KmsError) {
      say(error.message);
      return 2;
    }
    // Not a dependency's message: it might quote an input.
    say(`unexpected error${error instanceof Error ? ` (${error.name})` : ''}`);
    return 2;
  }
}

process.exitCode = await main();
