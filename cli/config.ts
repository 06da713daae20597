/**
 * Where the server is and who the caller is: flags first, then TEE_KMS_* variables. Tokens come
 * only from the environment or a file, never from a flag's value, which any local user could read
 * in the process list.
 */
import type { Command } from 'commander';
import { PEM_CERTIFICATES, pemBundle } from '../shared/crypto/pem-bundle.js';
import { UsageError } from './errors.js';
import { readBoundedSync } from './bounded-read.js';
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

/** A token, an options file, a CA: all far below this. */
const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

function readFileNamed(path: string, what: string): string {
  let bytes: Buffer | undefined;
  try {
    bytes = readBoundedSync(path, MAX_CONFIG_FILE_BYTES);
  } catch {
    throw new UsageError(`cannot read ${what} ${path}`);
  }
  if (bytes === undefined) throw new UsageError(`${what} ${path} is larger than ${MAX_CONFIG_FILE_BYTES} bytes: not one`);
  return bytes.toString('utf8');
}

/**
 * What a token or a user name can be, wherever it comes from: one line of printable Latin-1
 * characters. They travel in HTTP headers, which carry nothing else (a character above U+00FF
 * cannot be sent at all), and the KMS refuses control characters in a token.
 */
// eslint-disable-next-line no-control-regex
const HEADER_SAFE = /^[^\u0000-\u001f\u007f\u0100-\u{10ffff}]+$/u;
const HEADER_RULE = 'on one line, printable characters of ISO-8859-1 (Latin-1) only';
/** With --attest a token travels sealed, in JSON, not in a header: only what the KMS refuses is refused. */
// eslint-disable-next-line no-control-regex
const SEALED_SAFE = /^[^\u0000-\u001f\u007f]+$/u;
const SEALED_RULE = 'on one line, without control characters';

/**
 * A token: the named file's first line, else the variable's value; checked the same way from
 * either (HEADER_SAFE). Errors name where it came from, never the token.
 */
function secret(variable: string, file: string | undefined, fileFlag: string, sealed: boolean): string | undefined {
  const [safe, rule] = sealed ? [SEALED_SAFE, SEALED_RULE] : [HEADER_SAFE, HEADER_RULE];
  const fromVariable = env(`${variable}_FILE`);
  // Both in the environment: which one is meant cannot be told (a flag, given explicitly, wins).
  if (file === undefined && fromVariable !== undefined && env(variable) !== undefined) {
    throw new UsageError(`${variable} and ${variable}_FILE are both set: set only one of them (the token, or the file holding it)`);
  }
  const path = file ?? fromVariable;
  if (path !== undefined) {
    const named = file === undefined ? `${variable}_FILE file` : `${fileFlag} file`;
    const token = readFileNamed(path, named).replace(/\r?\n$/, '');
    if (!safe.test(token)) throw new UsageError(`the ${named} ${path} must hold the token ${rule}`);
    return token;
  }
  const token = env(variable);
  if (token !== undefined && !safe.test(token)) throw new UsageError(`${variable} must hold the token ${rule}`);
  return token;
}

/** The user: --user, else TEE_KMS_USER; undefined when neither is given. Errors never quote it. */
function userNamed(options: GlobalOptions): string | undefined {
  const user = options.user ?? env('TEE_KMS_USER');
  if (user !== undefined && !HEADER_SAFE.test(user)) {
    throw new UsageError(`the user (${options.user === undefined ? 'TEE_KMS_USER' : '--user'}) must be a name ${HEADER_RULE}`);
  }
  return user;
}

const NO_USER = 'no user: give --user or set TEE_KMS_USER';
const NO_TOKEN = "no token: set TEE_KMS_TOKEN to the user's token, or name a file holding it with --token-file or TEE_KMS_TOKEN_FILE";
const NO_ADMIN_TOKEN = 'no admin token: set TEE_KMS_ADMIN_TOKEN, or name a file holding it with --admin-token-file or TEE_KMS_ADMIN_TOKEN_FILE';

/** The user whose keys a file is under. */
export function userOf(command: Command): string {
  const user = userNamed(globals(command));
  if (user === undefined) throw new UsageError(NO_USER);
  return user;
}

/**
 * The client for a command, which needs `credentials`: the user and its token ('user'), the admin
 * token ('admin'), or none given here (the server says whether it needs them).
 */
export function clientFor(command: Command, credentials: 'user' | 'admin' | 'any' = 'any'): KmsClient {
  const options = globals(command);
  const url = options.url ?? env('TEE_KMS_URL');
  if (url === undefined) throw new UsageError('no server: give --url or set TEE_KMS_URL');
  const caFile = options.ca ?? env('TEE_KMS_CA');
  const caNamed = options.ca === undefined ? 'TEE_KMS_CA' : '--ca';
  const user = userNamed(options);
  const sealed = options.attest !== undefined;
  const token = secret('TEE_KMS_TOKEN', options.tokenFile, '--token-file', sealed);
  const adminToken = secret('TEE_KMS_ADMIN_TOKEN', options.adminTokenFile, '--admin-token-file', sealed);
  // Said here, in the command line's terms, before the client says it in its own (options, arguments).
  if (credentials === 'user' && user === undefined) throw new UsageError(NO_USER);
  if (credentials === 'user' && token === undefined) throw new UsageError(NO_TOKEN);
  if (credentials === 'admin' && adminToken === undefined) throw new UsageError(NO_ADMIN_TOKEN);
  const ca = caFile === undefined ? undefined : caCertificates(readFileNamed(caFile, caNamed), `${caNamed} ${caFile}`);
  given = {
    ...(caFile === undefined ? {} : { ca: `${caNamed} ${caFile}` }),
    ...(options.attest === undefined ? {} : { attest: options.attest }),
    ...(adminToken === undefined ? {} : { adminToken: adminTokenSource(options) }),
  };
  return new KmsClient({
    url,
    ...(ca === undefined ? {} : { ca }),
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

/**
 * The CA file's text, once it is a bundle TLS loads whole (shared/crypto/pem-bundle.ts): anything
 * else (DER, a key, the wrong file) would only show later as a certificate not trusted. Never quoted.
 */
function caCertificates(text: string, named: string): string {
  const bundle = pemBundle(text);
  if (bundle === undefined) throw new UsageError(`${named} is not a CA certificate file: it must hold ${PEM_CERTIFICATES}`);
  return bundle;
}

/** Where the admin token was taken from, for messages: never the token. */
function adminTokenSource(options: GlobalOptions): string {
  if (options.adminTokenFile !== undefined) return `--admin-token-file ${options.adminTokenFile}`;
  const file = env('TEE_KMS_ADMIN_TOKEN_FILE');
  return file === undefined ? 'TEE_KMS_ADMIN_TOKEN' : `TEE_KMS_ADMIN_TOKEN_FILE ${file}`;
}

/** Node's codes for a certificate whose issuer is not among those trusted (the client says the code). */
const UNKNOWN_ISSUER = /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_UNTRUSTED/;

/** What the command's client was given, in the command line's terms: for its failures (inCommandLineTerms). */
let given: { readonly ca?: string; readonly attest?: string; readonly adminToken?: string } = {};

/**
 * A client error's message said for the person at the command line: the client names its
 * TypeScript options (`attest.allowDevelopment`) and the server its HTTP header, where here a
 * flag, a variable or the --attest file's member is what to change. Never a secret: sources are
 * named, tokens never.
 */
export function inCommandLineTerms(error: { readonly code: string; readonly status: number; readonly message: string }): string {
  const attest = given.attest;
  let message = error.message;
  if (attest !== undefined) {
    message = message
      .replace(/\battest\.allowDevelopment is set\b/g, `--attest ${attest} holds "allowDevelopment": true`)
      .replace(/\battest\.([A-Za-z]+)/g, (all, member: string) => (ATTEST_MEMBERS.has(member) ? `"${member}" of --attest ${attest}` : all));
  }
  if (error.code === 'TLS' && error.status === 0) {
    if (/ALTNAME|HOSTNAME/.test(message)) return `${message}: it is not issued to the URL's host; give a name it is issued to in --url or TEE_KMS_URL`;
    if (!UNKNOWN_ISSUER.test(message)) return message; // expired, revoked…: no CA given here changes that
    return given.ca === undefined
      ? `${message}: give the CA certificate that issued it (PEM) with --ca <file> or TEE_KMS_CA`
      : `${message}: ${given.ca} did not issue it; give the server's CA certificate (PEM) with --ca <file> or TEE_KMS_CA`;
  }
  if (error.code === 'UNAUTHORIZED' && /admin token|operator credentials/.test(message)) {
    return given.adminToken === undefined
      ? `${message}; from the command line, ${NO_ADMIN_TOKEN.replace(/^no admin token: /, '')}`
      : `${message} (the admin token of ${given.adminToken})`;
  }
  return message;
}

const ATTEST_MEMBERS = new Set(['policy', 'sealerPolicy', 'collateral', 'pccsUrl', 'pccsCa', 'trustedRootCaPem', 'allowDevelopment', 'keyReuseSeconds']);

/**
 * `--attest <file>`: a JSON object of the client's attested-mode options (README, "Command line"):
 * `policy` (the TD's TDX reference values), `sealerPolicy`, `collateral` or `pccsUrl` (with
 * `pccsCa`), `trustedRootCaPem`, `allowDevelopment`, `keyReuseSeconds`.
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
