// Custodians as the tests play them: P-256 key pairs made with node:crypto, thumbprints computed
// with jose (not the project's code), and shares opened with the private keys as a custodian would.
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, CompactEncrypt, compactDecrypt, importJWK } from 'jose';
import { combine } from 'shamir-secret-sharing';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { TEST_ADMIN_IDENTITY } from './processes.js';
import { adminRoutes, ProtocolClient } from './protocol-client.js';
import type { SealerProcess, SecretRegistry } from './sealer.js';

export interface Custodian {
  readonly privateKey: KeyObject;
  /** The public half, as rotate takes it. */
  readonly jwk: Record<string, string>;
  /** Its RFC 7638 SHA-256 thumbprint. */
  readonly thumbprint: string;
}

/** A custodian's key pair. */
export async function custodian(): Promise<Custodian> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const jwk = { kty: kty!, crv: crv!, x: x!, y: y! };
  return { privateKey, jwk, thumbprint: await calculateJwkThumbprint(jwk, 'sha256') };
}

/** `count` custodians. */
export function custodians(count: number): Promise<Custodian[]> {
  return Promise.all(Array.from({ length: count }, () => custodian()));
}

export const isJwe = (content: string): boolean => content.split('.').length === 5;

/** Share i opened by key i: its plaintext is the share's base64, registered as a secret to look for in logs. */
export async function openShares(shares: readonly Share[], keys: readonly KeyObject[], secrets: SecretRegistry): Promise<Share[]> {
  return Promise.all(
    shares.map(async (share, i) => {
      const { plaintext } = await compactDecrypt(share.content, keys[i]!);
      const opened = { index: share.index, content: Buffer.from(plaintext).toString('utf8') };
      secrets.add(Buffer.from(opened.content, 'base64'));
      return opened;
    }),
  );
}

/** The root key that plaintext shares rebuild. */
export function rebuild(shares: readonly Share[]): Promise<Uint8Array> {
  return combine(shares.map((share) => new Uint8Array(Buffer.from(share.content, 'base64'))));
}

/**
 * The operator's side of a test sealer: the test's own protocol client, attested as the identity
 * the test sealers grant every admin operation. Its token and private key go to `secrets`.
 */
export async function attestedAdmin(sealer: Pick<SealerProcess, 'url' | 'caPem'>, secrets: SecretRegistry): Promise<ProtocolClient> {
  const admin = new ProtocolClient({ url: sealer.url, ca: await sealer.caPem(), initData: TEST_ADMIN_IDENTITY });
  secrets.addText(await admin.attest());
  secrets.add(admin.privateScalar);
  return admin;
}

/** GET of the sealing service's recovery key (its `challenges` included), through `client`, attested for "recover". */
export async function recoveryKeyAnswer(client: ProtocolClient): Promise<{ recoveryKey: Record<string, string>; challenges?: Record<string, string> }> {
  const { method, path } = adminRoutes.recoveryKey;
  const answer = await client.admin(method, `${path}?nonce=${randomBytes(32).toString('base64url')}`);
  if (answer.status !== 200) throw new Error(`recovery key: ${answer.status} ${answer.text}`);
  return answer.json();
}

/**
 * A share as a custodian seals it for a recovery, with jose rather than the project's code: the
 * custodian's challenge (if `by` is given) opened with its private key, then `{"share",
 * "challenge"}` (or the share's base64 alone) encrypted to the recovery key. `challenge` overrides
 * what is sealed as the challenge, as an adversary would. The evidence is not checked here.
 */
export async function sealForRecovery(
  answer: { recoveryKey: Record<string, string>; challenges?: Record<string, string> },
  share: Share,
  by?: Custodian,
  options: { challenge?: string } = {},
): Promise<Share> {
  let challenge = options.challenge;
  if (challenge === undefined && by !== undefined) {
    const jwe = answer.challenges?.[by.thumbprint];
    if (jwe === undefined) throw new Error(`no challenge for ${by.thumbprint}`);
    const { plaintext, protectedHeader } = await compactDecrypt(jwe, by.privateKey);
    if (protectedHeader.cty !== 'tee-kms-recovery-challenge') throw new Error('not a recovery challenge');
    challenge = Buffer.from(plaintext).toString('utf8');
  }
  const text = challenge === undefined ? share.content : JSON.stringify({ share: share.content, challenge });
  const { kty, crv, x, y } = answer.recoveryKey;
  const key = await importJWK({ kty, crv, x, y }, 'ECDH-ES+A256KW');
  const content = await new CompactEncrypt(new TextEncoder().encode(text)).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' }).encrypt(key);
  return { index: share.index, content };
}
