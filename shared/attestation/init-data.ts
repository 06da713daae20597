/**
 * Confidential Containers init-data: the TOML document (the Kata agent policy, the attestation
 * agent's and CDH's configuration…) that the host hands a TD at creation, and whose digest it puts
 * in the TD's MRCONFIGID. Read from Trustee's kbs/docs/initdata.md and guest-components'
 * attestation-agent initdata (`Initdata::parse_and_get_digest`), the Trustee verifiers
 * (`regularize_data`) and the KBS Attestation message of kbs-types:
 *
 * - the document: `version = "0.1.0"`, `algorithm = "sha256" | "sha384" | "sha512"`, and a `[data]`
 *   table from names to strings (other top-level keys are ignored, as upstream does);
 * - its digest: `algorithm` over the exact bytes of the TOML text (not a canonical form), zero-padded
 *   or truncated to the 48 bytes of MRCONFIGID: 96 lowercase hex digits, the workload identity;
 * - on the wire: the KBS Attestation's `"init-data": {"format": "toml", "body": "<the TOML text>"}`.
 *
 * The host chooses init-data, so nothing here is trusted until its digest equals the identity a
 * verified TEE report carries (sealer/init-data.ts).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseToml, TomlError } from 'smol-toml';
import { KmsError } from '../errors.js';

export const INIT_DATA_VERSION = '0.1.0';
export const INIT_DATA_FORMAT = 'toml';
export const INIT_DATA_ALGORITHMS = ['sha256', 'sha384', 'sha512'] as const;
export type InitDataAlgorithm = (typeof INIT_DATA_ALGORITHMS)[number];

/** MRCONFIGID is 48 bytes. */
const IDENTITY_BYTES = 48;
/** Bounds on what a client may make the sealing service parse and keep (a token carries one digest per entry). */
export const INIT_DATA_MAX_CHARS = 256 * 1024;
export const INIT_DATA_MAX_ENTRIES = 16;
const NAME_MAX_LENGTH = 128;

/** Parsed and validated init-data, with its digest. */
export interface InitData {
  /** The TOML text exactly as received or read (its UTF-8 bytes are what is hashed). */
  readonly toml: string;
  readonly algorithm: InitDataAlgorithm;
  /** The `[data]` table: entry name → its text. */
  readonly data: Readonly<Record<string, string>>;
  /** The workload identity it stands for: 96 lowercase hex digits (see initDataDigest). */
  readonly digest: string;
}

/**
 * What a reference-value policy may demand of a workload's init-data (KMS_SEALER_TDX_POLICY_FILE
 * `initData`; checked in sealer/attestation/tdx/policy.ts).
 */
export interface InitDataRequirement {
  /** Evidence must come with init-data whose digest is its identity. */
  readonly required: boolean;
  /** Entries that must be present, each with a text whose SHA-384 (96 hex) is one of these. */
  readonly data: Readonly<Record<string, readonly string[]>>;
}

/** `algorithm` over the exact UTF-8 bytes of `toml`, zero-padded or truncated to 48 bytes, as hex. */
export function initDataDigest(toml: string, algorithm: InitDataAlgorithm): string {
  const hash = createHash(algorithm).update(toml, 'utf8').digest();
  const identity = Buffer.alloc(IDENTITY_BYTES);
  hash.copy(identity, 0, 0, Math.min(hash.length, IDENTITY_BYTES));
  return identity.toString('hex');
}

/** SHA-384 of one entry's text, as a policy pins it. */
export function entryDigest(text: string): string {
  return createHash('sha384').update(text, 'utf8').digest('hex');
}

const invalid = (detail: string, cause?: unknown): KmsError => new KmsError('BAD_REQUEST', `init-data: ${detail}`, cause === undefined ? undefined : { cause });

const quoted = (name: string): string => JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);

/**
 * Parses and validates an init-data TOML document. Throws KmsError('BAD_REQUEST', 'init-data: …')
 * naming what is wrong; the parser's own message stays in `cause`.
 */
export function parseInitData(toml: string): InitData {
  if (toml.length > INIT_DATA_MAX_CHARS) throw invalid(`the document is longer than ${INIT_DATA_MAX_CHARS} characters`);
  let document: Record<string, unknown>;
  try {
    document = parseToml(toml);
  } catch (error) {
    const where = error instanceof TomlError ? ` (line ${error.line}, column ${error.column})` : '';
    throw invalid(`the body is not valid TOML${where}`, error);
  }
  const { version, algorithm, data } = document;
  if (version !== INIT_DATA_VERSION) throw invalid(`unsupported version (supported: "${INIT_DATA_VERSION}")`);
  if (typeof algorithm !== 'string' || !(INIT_DATA_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw invalid(`unsupported algorithm (supported: ${INIT_DATA_ALGORITHMS.join(', ')})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data) || data instanceof Date) throw invalid('a [data] table is required');
  const entries = Object.entries(data as Record<string, unknown>);
  if (entries.length > INIT_DATA_MAX_ENTRIES) throw invalid(`more than ${INIT_DATA_MAX_ENTRIES} data entries`);
  const checked: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, value] of entries) {
    if (name.length === 0 || name.length > NAME_MAX_LENGTH) throw invalid(`a data entry name must have 1 to ${NAME_MAX_LENGTH} characters`);
    if (typeof value !== 'string') throw invalid(`data entry ${quoted(name)} must be a string`);
    checked[name] = value;
  }
  return { toml, algorithm: algorithm as InitDataAlgorithm, data: checked, digest: initDataDigest(toml, algorithm as InitDataAlgorithm) };
}

/**
 * The `init-data` member of a KBS Attestation message: absent or null → undefined; otherwise
 * `{"format": "toml", "body": <string>}`, parsed. Throws as parseInitData.
 */
export function initDataFromKbs(member: unknown): InitData | undefined {
  if (member === undefined || member === null) return undefined;
  if (typeof member !== 'object' || Array.isArray(member)) throw invalid('must be an object {"format": "toml", "body": "<TOML text>"}');
  const { format, body } = member as Record<string, unknown>;
  if (format !== INIT_DATA_FORMAT) throw invalid(`unsupported format (supported: "${INIT_DATA_FORMAT}")`);
  if (typeof body !== 'string') throw invalid('body must be a string (the TOML text)');
  return parseInitData(body);
}

/**
 * What an attestation token records of verified init-data (customized_claims.init_data_claims):
 * its version and algorithm, and each entry by the SHA-384 of its text (the texts themselves,
 * an agent policy is often tens of kilobytes, would not fit in a token that travels in a header).
 */
export function initDataClaims(initData: InitData): Record<string, unknown> {
  // No prototype: an entry named __proto__ is an entry here too, not a lost assignment.
  const data: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, text] of Object.entries(initData.data)) data[name] = entryDigest(text);
  return { version: INIT_DATA_VERSION, algorithm: initData.algorithm, data_sha384: data };
}

/**
 * Reads an init-data file (KMS_INIT_DATA_FILE) byte for byte: its digest must be the one the host
 * put in MRCONFIGID, so a file that is not exact UTF-8 is refused rather than silently altered.
 */
export async function loadInitDataFile(path: string, variable = 'KMS_INIT_DATA_FILE'): Promise<InitData> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new KmsError('CONFIG', `${variable} names a file that cannot be read: ${path}`, { cause: error });
  }
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw new KmsError('CONFIG', `${variable} ${path} is not UTF-8 text`);
  try {
    return parseInitData(text);
  } catch (error) {
    if (error instanceof KmsError) throw new KmsError('CONFIG', `${variable} ${path}: ${error.message}`, { cause: error });
    throw error;
  }
}
