/** `custodian keygen <dir>`: a custodian's P-256 key pair, the private half in a file only its owner reads. */
import { generateKeyPair } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jwkThumbprint, SHARE_ALG } from '../../shared/custody/share-jwe.js';
import { KmsError } from '../../shared/errors.js';
import { Refused } from '../errors.js';
import { secretDirectory, writeSecretFile } from '../io.js';

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

/** Makes the pair in `dir` and returns the public key; `say` tells the person what was written. */
export async function keygen(dir: string, say: (message: string) => void): Promise<CustodianPublicJwk> {
  const privatePath = join(dir, PRIVATE_KEY_FILE);
  const publicPath = join(dir, PUBLIC_KEY_FILE);
  await secretDirectory(dir, say);
  // Checked before anything is written, so that a refusal leaves both files as they were.
  for (const path of [privatePath, publicPath]) {
    if (await exists(path)) throw new Refused(`${path} exists: nothing was overwritten (a key already made there may hold shares)`);
  }

  const { publicKey, privateKey } = await generateEcKeyPair('ec', { namedCurve: 'P-256' });
  const { x, y } = publicKey.export({ format: 'jwk' });
  const { d } = privateKey.export({ format: 'jwk' });
  if (typeof x !== 'string' || typeof y !== 'string' || typeof d !== 'string') throw new KmsError('INTERNAL', 'cannot export the new key');
  const publicJwk: CustodianPublicJwk = { kty: 'EC', crv: 'P-256', alg: SHARE_ALG, kid: jwkThumbprint({ crv: 'P-256', x, y }), x, y };

  await writeSecretFile(privatePath, jsonText({ ...publicJwk, d }));
  try {
    await writeSecretFile(publicPath, jsonText(publicJwk), 0o644);
  } catch (error) {
    await rm(privatePath, { force: true }); // a private key without its public half would be used by no one
    throw error;
  }
  say(`wrote ${privatePath} (your private key: keep it, and keep it secret) and ${publicPath}; give the operator the public key`);
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

const jsonText = (value: object): string => `${JSON.stringify(value, null, 2)}\n`;
