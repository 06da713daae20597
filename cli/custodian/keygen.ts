/** `custodian keygen <dir>`: a custodian's P-256 key pair, the private half in a file only its owner reads. */
import { generateKeyPair } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jwkThumbprint, SHARE_ALG } from '../../shared/custody/share-jwe.js';
import { KmsError } from '../../shared/errors.js';
import { Refused } from '../errors.js';

export const PRIVATE_KEY_FILE = 'custodian-key.json';
export const PUBLIC_KEY_FILE = 'custodian-key.pub.json';

/** What the operator collects: the public key, with the `kid` that shares sealed to it carry. */
export interface CustodianPublicJwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly alg: typeof SHARE_ALG;
  readonly kid: string;
  readonly x: string;
  readonly y: string;
}

const generateEcKeyPair = promisify(generateKeyPair);

export async function keygen(dir: string, warn: (message: string) => void): Promise<CustodianPublicJwk> {
  const privatePath = join(dir, PRIVATE_KEY_FILE);
  const publicPath = join(dir, PUBLIC_KEY_FILE);
  try {
    if ((await mkdir(dir, { recursive: true, mode: 0o700 })) === undefined && ((await stat(dir)).mode & 0o077) !== 0) {
      warn(`${dir} is open to other users: keep the private key in a directory only you can read`);
    }
  } catch {
    throw new KmsError('BAD_REQUEST', `cannot create the directory ${dir}`);
  }
  // Checked before anything is written, so that a refusal leaves both files as they were.
  for (const path of [privatePath, publicPath]) {
    if (await exists(path)) throw new Refused(`${path} exists: nothing was overwritten (a key already made there may hold shares)`);
  }

  const { publicKey, privateKey } = await generateEcKeyPair('ec', { namedCurve: 'P-256' });
  const { x, y } = publicKey.export({ format: 'jwk' });
  const { d } = privateKey.export({ format: 'jwk' });
  if (typeof x !== 'string' || typeof y !== 'string' || typeof d !== 'string') throw new KmsError('INTERNAL', 'cannot export the new key');
  const publicJwk: CustodianPublicJwk = { kty: 'EC', crv: 'P-256', alg: SHARE_ALG, kid: jwkThumbprint({ crv: 'P-256', x, y }), x, y };

  await writeNew(privatePath, { ...publicJwk, d }, 0o600);
  try {
    await writeNew(publicPath, publicJwk, 0o644);
  } catch (error) {
    await rm(privatePath, { force: true }); // a private key without its public half would be used by no one
    throw error;
  }
  return publicJwk;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Creates the file (never replaces one) with `mode` from the start: the key is never readable by others, even briefly. */
async function writeNew(path: string, json: object, mode: number): Promise<void> {
  try {
    await writeFile(path, `${JSON.stringify(json, null, 2)}\n`, { flag: 'wx', mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new Refused(`${path} exists: nothing was overwritten`);
    throw new KmsError('BAD_REQUEST', `cannot write ${path}`);
  }
}
