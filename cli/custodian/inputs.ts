/**
 * The custodian command's inputs: arguments given as text or as a file, shares (plain or
 * sealed), and the custodian's private key. No message quotes an input: it may be a share or a key.
 */
import { createECDH, createPrivateKey, type KeyObject } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isCompactJwe, jwkThumbprint } from '../../shared/custody/share-jwe.js';
import { KmsError } from '../../shared/errors.js';
import { MAX_SHARES, parseShare, SHARE_BYTES, type Share } from '../../shared/sealer-client/protocol.js';
import { UsageError } from '../errors.js';
import { readBoundedFile } from '../bounded-read.js';

/** Far above any share, JWE, key or recovery answer: a larger file is not one. */
const MAX_FILE_BYTES = 1024 * 1024;
const B64URL_32_BYTES = /^[A-Za-z0-9_-]{43}$/;

const badInput = (message: string) => new KmsError('BAD_REQUEST', message);

/** A file's text; errors name the file, never its content. */
export async function readTextFile(path: string, what: string): Promise<string> {
  let bytes: Buffer | undefined;
  try {
    bytes = await readBoundedFile(path, MAX_FILE_BYTES);
  } catch {
    throw badInput(`cannot read ${what} ${path}`);
  }
  if (bytes === undefined) throw badInput(`${what} ${path} is too large to be one`);
  return bytes.toString('utf8');
}

/** A file's JSON; a parse error does not repeat the parser's message (it quotes the text). */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  const text = await readTextFile(path, what);
  try {
    return JSON.parse(text);
  } catch {
    throw badInput(`${what} ${path} is not JSON`);
  }
}

/**
 * An argument that is the text itself, `-` for standard input, or the path of a file holding it,
 * trimmed. A file of that name wins (a share's text or a JWE never names one); a named pipe counts.
 * Only for what is no secret (a share encrypted to a custodian): a secret's is readSecretInput.
 */
export async function textOrFile(arg: string, what: string): Promise<string> {
  if (arg === '-') return (await readStdin()).trim();
  return (await isReadable(arg)) ? (await readTextFile(arg, what)).trim() : arg.trim();
}

/**
 * A secret's text (a plaintext share), trimmed: from the file named, or from standard input for
 * `-` (a named pipe or `<(…)` counts as a file). Never the argument itself, which every user of
 * the machine can read (ps, /proc/<pid>/cmdline) and the shell keeps in its history: an argument
 * that looks like a share is refused, without repeating it.
 */
export async function readSecretInput(arg: string, what: string): Promise<string> {
  if (arg === '-') return (await readStdin()).trim();
  if (!(await isReadable(arg)) && looksLikeShare(arg)) {
    throw new UsageError(
      'the share argument names no file and looks like a share: a share is never taken from the command line, where every user of this machine can read it; give a file holding it, or - and the share on standard input',
    );
  }
  return (await readTextFile(arg, what)).trim();
}

/** Whether `arg` names something to read (not a directory); a share's text is too long or names nothing. */
async function isReadable(arg: string): Promise<boolean> {
  try {
    return !(await stat(arg)).isDirectory();
  } catch {
    return false;
  }
}

/** A share object, a JWE, or base64 text of a share's length or more (a path has a dot or is shorter). */
function looksLikeShare(arg: string): boolean {
  const text = arg.trim();
  return text.startsWith('{') || isCompactJwe(text) || /^[A-Za-z0-9+/_-]{24,}={0,2}$/.test(text);
}

/** Read from the stream, not /dev/stdin: a child process's stdin may be a socket, which cannot be opened by name. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    size += (chunk as Buffer).length;
    if (size > MAX_FILE_BYTES) throw badInput('standard input is too large to be a share');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonText(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw badInput(`${what} looks like JSON but does not parse`);
  }
}

/** `{"index"?: 1-255, "content": string}`: the shape of a share, its content not yet checked. */
function shareObject(value: unknown, what: string): { index: number | undefined; content: string } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badInput(`${what} must be a JSON object {"index": n, "content": "…"}`);
  const { index, content } = value as Record<string, unknown>;
  if (index !== undefined && (typeof index !== 'number' || !Number.isInteger(index) || index < 1 || index > MAX_SHARES)) {
    throw badInput(`${what}: index must be a whole number from 1 to ${MAX_SHARES}`);
  }
  if (typeof content !== 'string') throw badInput(`${what}: content must be a string`);
  return { index, content };
}

/** A share encrypted to a custodian: its index when the input gives it. */
export interface SealedShare {
  readonly index: number | undefined;
  readonly jwe: string;
}

/** A compact JWE, or a JSON share object whose content is one. */
export function sealedShareFrom(text: string): SealedShare {
  if (isCompactJwe(text)) return { index: undefined, jwe: text };
  if (text.startsWith('{')) {
    const { index, content } = shareObject(parseJsonText(text, 'the share'), 'the share');
    if (!isCompactJwe(content)) throw badInput('the share is not encrypted (its content is not a JWE): there is nothing to decrypt');
    return { index, jwe: content };
  }
  throw badInput('the share must be a compact JWE or a JSON share {"index", "content"}, as text or in a file');
}

/**
 * A plaintext share for `index`: its base64 text, or a JSON share object (whose index, if any,
 * must be `index`). The content must be a share of a 256-bit key with that x coordinate.
 */
export function plainShareFrom(text: string, index: number): Share {
  let content = text;
  if (text.startsWith('{')) {
    const share = shareObject(parseJsonText(text, 'the share'), 'the share');
    if (share.index !== undefined && share.index !== index) throw badInput(`the share object's index ${share.index} is not the <index> given, ${index}`);
    content = share.content;
  }
  if (isCompactJwe(content)) throw stillEncrypted('the share');
  return checkedShare(content, index, 'the share');
}

/**
 * A share still encrypted where its plaintext is needed (`custodian seal-share`), or where only a
 * JWE sealed to the sealing service's recovery key can be sent (recover, verify, rotate --shares):
 * refused, saying how to decrypt it. `to` says which key it is encrypted to, `example` the command
 * that decrypts it, `after` what else to say. One message for all, so that all say the same.
 */
export function stillEncrypted(what: string, options: { readonly to?: string; readonly example?: string; readonly after?: string } = {}): KmsError {
  const how = options.example === undefined ? ' with `custodian decrypt`' : `, e.g. ${options.example}`;
  return badInput(`${what} is still encrypted (a JWE${options.to ?? ''}): decrypt it first${how}${options.after ?? ''}`);
}

/**
 * A share to send to the KMS (recover, verify, rotate --shares): a share object {"index", "content"},
 * its content the plaintext base64 or a JWE sealed to the recovery key, or the plaintext base64
 * alone, whose index is its last byte. The server checks the content itself.
 */
export function shareToSend(text: string, what: string): Share {
  if (!text.startsWith('{')) {
    const index = indexOfShare(text);
    if (index === 0) throw badInput(`${what} is not a share: {"index", "content"}, or the base64 content alone`);
    return { index, content: text };
  }
  const { index, content } = shareObject(parseJsonText(text, what), what);
  if (index === undefined) throw badInput(`${what} has no index: give {"index": n, "content": "…"}`);
  return { index, content };
}

/** A share to send, from a file or standard input (`-`): see shareToSend. */
export async function readShareToSend(arg: string): Promise<Share> {
  const what = arg === '-' ? 'the share on standard input' : `the share file ${arg}`;
  return shareToSend(await readSecretInput(arg, 'share file'), what);
}

/** Shares to send, each from a file or standard input; standard input holds one share, so `-` once at most. */
export async function readSharesToSend(args: readonly string[]): Promise<Share[]> {
  if (args.filter((arg) => arg === '-').length > 1) throw new UsageError('standard input (-) holds one share: give the others as files');
  const shares: Share[] = [];
  for (const arg of args) shares.push(await readShareToSend(arg));
  return shares;
}

/** A share's x coordinate (its last byte), which is its index; 0 when it is not a share at all. */
export function indexOfShare(content: string): number {
  const bytes = Buffer.from(content, 'base64');
  const x = bytes.length === SHARE_BYTES ? bytes[SHARE_BYTES - 1]! : 0;
  bytes.fill(0);
  return x;
}

/** `{index, content}` once the content is checked to be share `index` of a 256-bit key. */
export function checkedShare(content: string, index: number, label: string): Share {
  if (index < 1 || index > MAX_SHARES) throw badInput(`${label} is not a share of a 256-bit key (base64 of ${SHARE_BYTES} bytes)`);
  parseShare({ index, content }, label).bytes.fill(0);
  return { index, content };
}

/** The private key `keygen` wrote, and the thumbprint of its public key (the `kid` of shares sealed to it). */
export interface CustodianPrivateKey {
  readonly privateKey: KeyObject;
  readonly thumbprint: string;
}

/**
 * A P-256 private JWK. Its public part is derived from `d` (Node does not check that `x`, `y`
 * match `d`), and a file whose `x`, `y` say otherwise is refused.
 */
export async function readPrivateKey(path: string): Promise<CustodianPrivateKey> {
  const json = await readJsonFile(path, 'private key file');
  const notAKey = () => badInput(`the private key file ${path} is not a P-256 private JWK (as \`custodian keygen\` writes)`);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw notAKey();
  const jwk = json as Record<string, unknown>;
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string' || !B64URL_32_BYTES.test(jwk.d)) throw notAKey();
  let x: string;
  let y: string;
  try {
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from(jwk.d, 'base64url'));
    const point = ecdh.getPublicKey(); // 0x04 ‖ x ‖ y
    x = point.subarray(1, 33).toString('base64url');
    y = point.subarray(33, 65).toString('base64url');
  } catch {
    throw notAKey();
  }
  if ((jwk.x !== undefined && jwk.x !== x) || (jwk.y !== undefined && jwk.y !== y)) {
    throw badInput(`the private key file ${path} is inconsistent: its x, y are not the public key of its d`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: { kty: 'EC', crv: 'P-256', x, y, d: jwk.d }, format: 'jwk' });
  } catch {
    throw notAKey();
  }
  return { privateKey, thumbprint: jwkThumbprint({ crv: 'P-256', x, y }) };
}
