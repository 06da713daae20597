/**
 * Where the server is and who the caller is: flags first, then TEE_KMS_* variables. Tokens come
 * only from the environment or a file, never from a flag's value, which any local user could read
 * in the process list.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from './errors.js';
import { KmsClient, type AttestOptions } from './kms.js';

export interface GlobalOptions {
  readonly url?: string;
  readonly ca?: string;
  readonly user?: string;
  readonly tokenFile?: string;
  readonly adminTokenFile?: string;
  readonly attest?: string;
  readonly json?: boolean;
}

/** The root command's options, wherever the subcommand sits. */
export function globals(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

const env = (name: string): string | undefined => {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : value;
};

function readFileNamed(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    throw new UsageError(`cannot read ${what} ${path}`);
  }
}

/** A token: the variable's value, else the named file's first line. Errors never quote it. */
function secret(variable: string, file: string | undefined, fileFlag: string): string | undefined {
  const path = file ?? env(`${variable}_FILE`);
  if (path !== undefined) {
    const token = readFileNamed(path, `${fileFlag} file`).replace(/\r?\n$/, '');
    if (token === '' || /[\r\n]/.test(token)) throw new UsageError(`the ${fileFlag} file ${path} must hold the token on one line`);
    return token;
  }
  return env(variable);
}

/** The user whose keys a file is under. */
export function userOf(command: Command): string {
  const user = globals(command).user ?? env('TEE_KMS_USER');
  if (user === undefined) throw new UsageError('no user: give --user or set TEE_KMS_USER');
  return user;
}

export function clientFor(command: Command): KmsClient {
  const options = globals(command);
  const url = options.url ?? env('TEE_KMS_URL');
  if (url === undefined) throw new UsageError('no server: give --url or set TEE_KMS_URL');
  const caFile = options.ca ?? env('TEE_KMS_CA');
  const user = options.user ?? env('TEE_KMS_USER');
  const token = secret('TEE_KMS_TOKEN', options.tokenFile, '--token-file');
  const adminToken = secret('TEE_KMS_ADMIN_TOKEN', options.adminTokenFile, '--admin-token-file');
  return new KmsClient({
    url,
    ...(caFile === undefined ? {} : { ca: readFileNamed(caFile, '--ca') }),
    ...(user === undefined ? {} : { user }),
    ...(token === undefined ? {} : { token }),
    ...(adminToken === undefined ? {} : { adminToken }),
    ...(options.attest === undefined ? {} : { attest: attestOptions(options.attest) }),
    // A person waits at the other end: a refusal (SEALED, BUSY) is said at once, not retried; a
    // verify rewraps every primary key before it answers, so the wait for an answer is long.
    retries: 0,
    timeoutMs: 300_000,
  });
}

/** The user's token, for the commands that need one before any request (enroll). */
export function tokenOf(command: Command): string {
  const token = secret('TEE_KMS_TOKEN', globals(command).tokenFile, '--token-file');
  if (token === undefined) throw new UsageError('no token: set TEE_KMS_TOKEN or give --token-file');
  return token;
}

const ATTEST_MEMBERS = new Set(['policy', 'sealerPolicy', 'collateral', 'pccsUrl', 'trustedRootCaPem', 'allowDevelopment', 'keyReuseSeconds']);

/**
 * `--attest <file>`: a JSON object of the client's attested-mode options (README, "Command line"):
 * `policy` (the TD's TDX reference values), `sealerPolicy`, `collateral` or `pccsUrl`,
 * `trustedRootCaPem`, `allowDevelopment`, `keyReuseSeconds`.
 */
function attestOptions(path: string): AttestOptions {
  let value: unknown;
  try {
    value = JSON.parse(readFileNamed(path, '--attest'));
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`--attest ${path} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`--attest ${path} must hold a JSON object`);
  const unknown = Object.keys(value).filter((name) => !ATTEST_MEMBERS.has(name));
  if (unknown.length > 0) throw new UsageError(`--attest ${path}: unknown member ${unknown.join(', ')}`);
  return value as AttestOptions;
}
