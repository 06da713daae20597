#!/usr/bin/env node
/**
 * `tee-kms`: the command line of the KMS (README, "Command line"). Exit status: 0 done; 1 the
 * server (or a check here) refused, with its code and message; 2 usage or malformed input; 3 the
 * server cannot be reached or its TLS certificate is not trusted; 141 standard output was closed
 * under it (io.ts, guardStandardStreams).
 */
import { Command, CommanderError } from 'commander';
import { KmsError as LocalError } from '../shared/errors.js';
import { addAttestCommand } from './commands/attest.js';
import { addCustodianCommands } from './commands/custodian.js';
import { addFileCommands } from './commands/files.js';
import { addKeyCommands } from './commands/keys.js';
import { addRootKeyCommands } from './commands/root-key.js';
import { inCommandLineTerms } from './config.js';
import { EXIT, Incomplete, Refused, UsageError } from './errors.js';
import { guardStandardStreams, printable, say } from './io.js';
import { KmsError } from './kms.js';

/** Transport codes of the client: the server gave no answer. */
const UNREACHABLE = new Set(['UNREACHABLE', 'TLS', 'TIMEOUT']);

export function program(): Command {
  const root = new Command('tee-kms')
    .description('the tee-kms command line: keys, files, the root key, custodians')
    .option('--url <url>', 'the KMS (default TEE_KMS_URL)')
    .option('--ca <file>', 'PEM certificate(s) to trust for it (default TEE_KMS_CA)')
    .option('--user <name>', 'the user (default TEE_KMS_USER)')
    .option('--token-file <file>', "file holding the user's token (default TEE_KMS_TOKEN_FILE, or the token in TEE_KMS_TOKEN)")
    .option('--admin-token-file <file>', 'file holding the admin token (default TEE_KMS_ADMIN_TOKEN_FILE, or TEE_KMS_ADMIN_TOKEN)')
    .option('--attest <file>', "attested mode: verify the service's evidence with these options (JSON) and seal credentials and shares to it")
    .option('--json', 'print results as JSON')
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ outputError: (message, write) => write(errorText(message)) })
    .exitOverride();
  addRootKeyCommands(root);
  addKeyCommands(root);
  addFileCommands(root);
  addAttestCommand(root);
  addCustodianCommands(root);
  // Every subcommand: usage errors become exit 2 here rather than commander's process.exit.
  const override = (command: Command) => {
    command.exitOverride();
    command.commands.forEach(override);
  };
  override(root);
  return root;
}

const UNKNOWN_OPTION = /^error: unknown option '([\s\S]*)'((?:\n\(Did you mean [^'\n]*\?\))?)\n$/;

/**
 * Commander's error messages, as they go to stderr: control characters escaped, and an unknown
 * option named without its value. `--token=SECRET` (an option that does not exist: tokens never
 * come as arguments) would otherwise be repeated whole; `-tSECRET` likewise is named `-t`.
 */
function errorText(message: string): string {
  const unknown = UNKNOWN_OPTION.exec(message);
  if (unknown !== null) {
    const flag = unknown[1]!;
    const name = flag.startsWith('--') ? flag.split('=')[0]! : flag.slice(0, 2);
    return `error: unknown option '${printable(name)}'${unknown[2]!}\n`;
  }
  return `${message.replace(/\n$/, '').split('\n').map(printable).join('\n')}\n`;
}

/**
 * The exit status for a failure, with its message said on stderr (never a secret: see kms.ts); a
 * message may come from the server, or from whoever answers in its place: say() escapes its
 * control characters.
 */
function failure(error: unknown): number {
  if (error instanceof CommanderError) {
    return error.exitCode === 0 ? EXIT.ok : EXIT.usage; // commander printed the message or the help
  }
  if (error instanceof UsageError) {
    say(error.message);
    return EXIT.usage;
  }
  if (error instanceof Incomplete) {
    say(error.message); // what was done and what was not is said already
    return EXIT.refused;
  }
  if (error instanceof Refused) {
    say(`refused: ${error.message}`);
    return EXIT.refused;
  }
  if (error instanceof KmsError) {
    say(`${error.code}: ${inCommandLineTerms(error)}`);
    if (error.status === 0 && UNREACHABLE.has(error.code)) return EXIT.unreachable;
    return error.status === 0 && (error.code === 'CONFIG' || error.code === 'INVALID_ARGUMENT') ? EXIT.usage : EXIT.refused;
  }
  if (error instanceof LocalError) {
    // Raised here: malformed input (a share file, a key file), or a file that does not authenticate.
    const usage = error.code === 'BAD_REQUEST' || error.code === 'INVALID_NAME';
    say(usage ? error.message : `${error.code}: ${error.message}`);
    return usage ? EXIT.usage : EXIT.refused;
  }
  const { code, syscall, path } = error as NodeJS.ErrnoException;
  if (typeof code === 'string' && typeof syscall === 'string') {
    // A file system error on the user's own files: its code and path, never file contents.
    say(`cannot ${syscall}${path === undefined ? '' : ` ${path}`} (${code})`);
    return EXIT.refused;
  }
  // Not a dependency's message: it might quote an input.
  say(`unexpected error${error instanceof Error ? ` (${error.name})` : ''}`);
  return EXIT.refused;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    await program().parseAsync([...argv], { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    return failure(error);
  }
}

// `npm run kms` starts in the package's directory: paths are meant from where npm was run.
if (process.env.npm_lifecycle_event === 'kms' && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);
guardStandardStreams();
process.exitCode = await main(process.argv.slice(2));
