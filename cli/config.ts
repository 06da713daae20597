/**
 * Where the server is and who the caller is: flags first, then TEE_KMS_* variables. Tokens come
 * only from the environment or a file, never from a flag's value, which any local user could read
 * in the process list.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from './errors.js';
import { KmsClient } from './kms.js';

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
  return new KmsClient({
    url,
    ...(caFile === undefined ? {} : { ca: readFileNamed(caFile, '--ca') }),
    user: options.user ?? env('TEE_KMS_USER'),
    token: secret('TEE_KMS_TOKEN', options.tokenFile, '--token-file'),
    adminToken: secret('TEE_KMS_ADMIN_TOKEN', options.adminTokenFile, '--admin-token-file'),
  });
}
