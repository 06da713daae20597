// Custodians as the tests play them: P-256 key pairs made with node:crypto, thumbprints computed
// with jose (not the project's code), and shares opened with the private keys as a custodian would.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, compactDecrypt } from 'jose';
import { combine } from 'shamir-secret-sharing';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { TEST_ADMIN_IDENTITY } from './processes.js';
import { ProtocolClient } from './protocol-client.js';
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
