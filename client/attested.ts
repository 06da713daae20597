// Attested mode: the service key is taken only from evidence that this client verified with the
// project's own verifiers (the sealing service's, so the same reference values apply), and every
// credential is sealed to it (docs/sealed-channel.md). The TDX verifier is loaded only when used.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import { compactDecrypt } from 'jose/jwe/compact/decrypt';
import { CompactEncrypt } from 'jose/jwe/compact/encrypt';
import { generateKeyPair } from 'jose/key/generate/keypair';
import { importJWK } from 'jose/key/import';
import type { CryptoKey } from 'jose';
import type { Verifier } from '../shared/attestation/types.js';
import { KmsError as ServerSideError } from '../shared/errors.js';
import { kbsReportData, parseTeePubKey } from '../shared/kbs/protocol.js';
import { serviceKeyReportData } from '../shared/sealed/binding.js';
import { KmsError } from './errors.js';
import type { Attestation, Share } from './types.js';

export interface AttestOptions {
  /**
   * The TD's TDX reference values, in the format of the sealing service's KMS_SEALER_TDX_POLICY_FILE
   * (docs/attestation.md): the parsed JSON. Needed for TDX evidence.
   */
  readonly policy?: unknown;
  /** The sealing service's reference values, for `recover`; default `policy`. */
  readonly sealerPolicy?: unknown;
  /** DCAP collateral (the JSON of `npm run verify-quote`'s collateral file, parsed); or `pccsUrl`. */
  readonly collateral?: unknown;
  /** A PCCS or Intel PCS base URL (https) to fetch collateral from, when `collateral` is not given. */
  readonly pccsUrl?: string;
  /**
   * PEM of the CA certificate(s) that PCCS's TLS certificate must chain to (a PCCS with a private
   * CA); default Node's bundled root certificates only, never NODE_EXTRA_CA_CERTS.
   */
  readonly pccsCa?: string;
  /** Trust this root CA instead of Intel's SGX Root CA (private DCAP PKIs, tests). */
  readonly trustedRootCaPem?: string;
  /** Accept `sample` evidence, which proves nothing: development only. */
  readonly allowDevelopment?: boolean;
  /** Evaluation time for collateral and certificates; default the wall clock. */
  readonly now?: () => Date;
  /**
   * How long (seconds, at most 3600) one ephemeral key and one response key serve every sealed
   * request to the attested key, which spares the server a key agreement per request; default
   * 300. 0: fresh keys per request (forward secrecy per message, docs/sealed-channel.md).
   */
  readonly keyReuseSeconds?: number;
}

/** The default and the longest reuse of a client's keys (`keyReuseSeconds`). */
export const KEY_REUSE_SECONDS = 300;
export const MAX_KEY_REUSE_SECONDS = 3600;

const NONCE_BYTES = 32;
/** Answers come sealed as the credential was (ECDH-ES); servers before that always wrapped the content key. */
const ANSWER_KEY_ALGORITHMS = ['ECDH-ES', 'ECDH-ES+A256KW'];
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

/** A fresh nonce for GET /attestation or GET /rootKey/recover. */
export function freshNonce(): string {
  return randomBytes(NONCE_BYTES).toString('base64url');
}

/** Checks an answer of GET /attestation?nonce=`nonce` and returns its service key, or throws ATTESTATION. */
export async function verifyAttestation(answer: unknown, nonce: string, options: AttestOptions): Promise<Attestation> {
  const { serviceKey, rootKeyId, tee, evidence } = (isObject(answer) ? answer : {}) as Record<string, unknown>;
  if (!isObject(serviceKey) || typeof rootKeyId !== 'string' || (tee !== 'sample' && tee !== 'tdx')) {
    throw new KmsError('PROTOCOL', 'GET /attestation answered something else than {serviceKey, rootKeyId, tee, evidence}');
  }
  const { kty, crv, x, kid, ...others } = serviceKey;
  if (kty !== 'OKP' || crv !== 'X25519' || typeof x !== 'string' || !B64URL_32.test(x) || kid !== rootKeyId || Object.keys(others).length > 0) {
    throw new KmsError('ATTESTATION', 'the service key is not an X25519 public JWK whose kid is the rootKeyId answered');
  }
  const verifier = await verifierFor(tee, options, options.policy);
  // The report data is recomputed from the key exactly as answered (canonical JSON of it and the nonce).
  const claims = await verified(() => verifier.verify(evidence, serviceKeyReportData(nonce, serviceKey)), 'service key');
  return { serviceKey: { kty, crv, x, kid }, rootKeyId, tee, claims };
}

/**
 * Seals shares to the sealing service's recovery key, from an answer of GET /rootKey/recover?nonce=
 * whose evidence this client verified (as `custodian seal-share` does). A share already a compact
 * JWE (to a recovery key, by its custodian) is kept as it is. With `custodianKey` (a custodian's
 * private key), that custodian's recovery challenge, which a sealing service with pinned
 * custodians requires in a recovery, is opened and sealed with each share.
 */
export async function sealSharesToRecoveryKey(
  answer: unknown,
  nonce: string,
  shares: readonly Share[],
  options: AttestOptions,
  custodianKey?: KeyObject | JsonWebKey,
): Promise<Share[]> {
  const { recoveryKey, tee, evidence, challenges: answered } = (isObject(answer) ? answer : {}) as Record<string, unknown>;
  if (tee !== 'sample' && tee !== 'tdx') throw new KmsError('PROTOCOL', 'GET /rootKey/recover answered something else than {recoveryKey, tee, evidence}');
  const custody = await import('../shared/custody/share-jwe.js');
  let key;
  try {
    const teePubKey = parseTeePubKey(recoveryKey);
    if (teePubKey.crv !== 'P-256') throw new Error('not P-256');
    [key] = custody.parseCustodianKeys([teePubKey], 1);
    const verifier = await verifierFor(tee, options, options.sealerPolicy ?? options.policy);
    await verified(() => verifier.verify(evidence, kbsReportData(nonce, teePubKey)), 'recovery key');
  } catch (error) {
    if (error instanceof KmsError) throw error;
    throw new KmsError('ATTESTATION', 'the recovery key is not a P-256 ECDH-ES+A256KW public JWK');
  }
  const challenges = await import('../shared/custody/recovery-challenge.js');
  // A sealing service that pins no custodians gives no challenges, and needs none.
  const challenge = custodianKey === undefined || answered === undefined ? undefined : await openChallengeFor(answered, custodianKey, custody, challenges);
  for (const [i, { content }] of shares.entries()) {
    // A JWE to another key (a custodian's, as rotate answered it, or an earlier recovery key) would
    // be refused by the sealing service as undecryptable, the shares sent beside it spent with it.
    if (custody.isCompactJwe(content) && custody.jweKid(content) !== key!.thumbprint) {
      throw new KmsError(
        'INVALID_ARGUMENT',
        `shares[${i}] is a JWE to another key than the sealing service's attested recovery key (a share as rotate answered it is encrypted to its custodian): give its plaintext, decrypted with the custodian's key (tee-kms custodian decrypt), or seal it again`,
      );
    }
  }
  return Promise.all(
    shares.map(async ({ index, content }) => ({
      index,
      content: custody.isCompactJwe(content) ? content : await custody.sealShare(challenges.recoveryPlaintext(content, challenge), key!),
    })),
  );
}

/** The recovery challenge of the custodian whose private key is given, from the answer's `challenges`. */
async function openChallengeFor(
  challenges: unknown,
  custodianKey: KeyObject | JsonWebKey,
  custody: typeof import('../shared/custody/share-jwe.js'),
  { parseChallenge }: typeof import('../shared/custody/recovery-challenge.js'),
): Promise<string> {
  let privateKey: KeyObject;
  let thumbprint: string;
  try {
    privateKey =
      isObject(custodianKey) && !('asymmetricKeyType' in custodianKey) ? createPrivateKey({ key: custodianKey, format: 'jwk' }) : (custodianKey as KeyObject);
    const { kty, crv, x, y } = createPublicKey(privateKey).export({ format: 'jwk' });
    if (kty !== 'EC' || crv !== 'P-256' || x === undefined || y === undefined) throw new Error('not P-256');
    thumbprint = custody.jwkThumbprint({ crv, x, y });
  } catch {
    throw new KmsError('INVALID_ARGUMENT', "custodianKey must be a custodian's P-256 private key (a JWK with d, or a KeyObject)");
  }
  const jwe = isObject(challenges) ? challenges[thumbprint] : undefined;
  if (typeof jwe !== 'string') {
    throw new KmsError('PROTOCOL', `GET /rootKey/recover gave no recovery challenge for the custodian key ${thumbprint}: the sealing service does not pin it`);
  }
  try {
    return parseChallenge(await custody.openChallenge(jwe, privateKey));
  } catch {
    throw new KmsError('PROTOCOL', `the recovery challenge for the custodian key ${thumbprint} does not open with it (altered on the way, or not made for it)`);
  }
}

async function verifierFor(tee: 'sample' | 'tdx', options: AttestOptions, policy: unknown): Promise<Verifier> {
  if (tee === 'sample') {
    if (options.allowDevelopment !== true) {
      throw new KmsError(
        'ATTESTATION',
        'the KMS answered sample evidence, which proves nothing (no TEE made it): refused unless attest.allowDevelopment is set',
      );
    }
    const { SampleVerifier } = await import('../shared/attestation/sample.js');
    return new SampleVerifier();
  }
  if (policy === undefined) throw new KmsError('CONFIG', 'TDX evidence needs attest.policy (the TD reference values)');
  const [{ createTdxPolicy }, { TdxVerifier }, collateralModule] = await Promise.all([
    import('../sealer/attestation/tdx/policy.js'),
    import('../sealer/attestation/tdx/verifier.js'),
    import('../sealer/attestation/tdx/collateral.js'),
  ]);
  let collateral;
  if (options.collateral !== undefined) {
    collateral = new collateralModule.StaticCollateralSource(configured(() => collateralModule.parseCollateral(options.collateral, 'attest.collateral')));
  } else if (options.pccsUrl !== undefined) {
    const { pccsUrl, pccsCa } = options;
    collateral = configured(() => new collateralModule.PccsCollateralSource({ baseUrl: pccsUrl, ...(pccsCa !== undefined && { tlsCa: pccsCa }) }));
  } else {
    throw new KmsError('CONFIG', 'TDX evidence needs attest.collateral or attest.pccsUrl (DCAP collateral)');
  }
  return new TdxVerifier({
    policy: configured(() => createTdxPolicy(policy)),
    collateral,
    ...(options.trustedRootCaPem === undefined ? {} : { trustedRootCaPem: options.trustedRootCaPem }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
}

function configured<T>(make: () => T): T {
  try {
    return make();
  } catch (error) {
    throw new KmsError('CONFIG', `attest: ${error instanceof Error ? error.message : 'invalid'}`);
  }
}

async function verified(verify: () => Promise<{ claims: Record<string, unknown> }>, what: string): Promise<Record<string, unknown>> {
  try {
    return (await verify()).claims;
  } catch (error) {
    // The verifiers refuse with FORBIDDEN (a claim failed) or BAD_REQUEST (evidence that does not parse).
    if (error instanceof ServerSideError && error.code === 'ATTESTATION_UNAVAILABLE') {
      throw new KmsError('ATTESTATION', `the ${what}'s evidence could not be verified just now: ${error.message}`, { cause: error });
    }
    if (error instanceof ServerSideError && error.code !== 'INTERNAL') {
      throw new KmsError('ATTESTATION', `the ${what}'s evidence is refused: ${error.message}`, { cause: error });
    }
    throw new KmsError('ATTESTATION', `the ${what}'s evidence could not be verified`, { cause: error });
  }
}

/** One sealed request: the Authorization header, and the key its answer is opened with. */
export interface Sealed {
  readonly authorization: string;
  open(jwe: string): Promise<OpenedAnswer>;
}

/**
 * A sealed answer opened: its JSON, and the `kms-…` values of its protected header (authenticated
 * with it) that the route also answers as `X-KMS-…` headers; `kms-jti`, which binds the answer to
 * its request, has been checked and is not among them.
 */
export interface OpenedAnswer {
  readonly json: unknown;
  readonly authenticated: Readonly<Record<string, string>>;
}

export interface Claims {
  readonly user?: string;
  readonly token: string;
  readonly method: string;
  readonly target: string;
  /** The body exactly as it is sent, bound by its SHA-256 (`htb`); none: an empty one. */
  readonly body?: string;
}

/** The keys sealing to one attested service key, and until when (ms) they may be used. */
interface SealingKeys {
  readonly serviceKey: Awaited<ReturnType<typeof importJWK>>;
  readonly kid: string;
  readonly ephemeral: CryptoKey | undefined;
  readonly response: { readonly privateKey: KeyObject; readonly x: string };
  readonly until: number;
}

/** Per attestation, so keys never outlive the service key they were made for (a new attestation, new keys). */
const sealingKeys = new WeakMap<Attestation, SealingKeys>();

async function keysFor(attestation: Attestation, reuseSeconds: number, now: number): Promise<SealingKeys> {
  const known = sealingKeys.get(attestation);
  if (known !== undefined && now < known.until) return known;
  const { kid, ...jwk } = attestation.serviceKey;
  const response = generateKeyPairSync('x25519');
  const keys: SealingKeys = {
    // Imported once per attestation, not per request.
    serviceKey: known?.serviceKey ?? (await importJWK(jwk, 'ECDH-ES')),
    kid,
    // jose takes an epk only as an extractable CryptoKey (it exports the public half into the header).
    ephemeral: reuseSeconds > 0 ? (await generateKeyPair('ECDH-ES', { crv: 'X25519', extractable: true })).privateKey : undefined,
    response: { privateKey: response.privateKey, x: response.publicKey.export({ format: 'jwk' }).x! },
    until: now + reuseSeconds * 1000,
  };
  if (reuseSeconds > 0) sealingKeys.set(attestation, keys);
  return keys;
}

/** Checks `keyReuseSeconds` (CONFIG if out of range) and gives its value or the default. */
export function keyReuseSeconds(options: AttestOptions): number {
  const seconds = options.keyReuseSeconds ?? KEY_REUSE_SECONDS;
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds > MAX_KEY_REUSE_SECONDS) {
    throw new KmsError('CONFIG', `attest.keyReuseSeconds must be a whole number of seconds from 0 to ${MAX_KEY_REUSE_SECONDS}`);
  }
  return seconds;
}

/**
 * Seals a credential to the attested service key, bound to this method and target. The ephemeral
 * key and the response key are those of the last `reuseSeconds` (fresh ones when 0). ECDH-ES: the
 * content key is the one agreed with the ephemeral key, so the server opens a message with one
 * AES-GCM decryption and no key unwrap; each message has its own random IV and jti.
 */
export async function seal(attestation: Attestation, claims: Claims, reuseSeconds = KEY_REUSE_SECONDS, now = Date.now()): Promise<Sealed> {
  const keys = await keysFor(attestation, reuseSeconds, now);
  const { x } = keys.response;
  const payload = {
    ...(claims.user === undefined ? {} : { user: claims.user }),
    token: claims.token,
    htm: claims.method,
    htu: claims.target,
    // The body too, so that an ingress cannot give a sealed credential another body (say, other
    // custodians' keys for a rotate's shares).
    htb: createHash('sha256')
      .update(claims.body ?? '')
      .digest('base64url'),
    iat: Math.floor(Date.now() / 1000),
    jti: randomBytes(16).toString('base64url'),
    responseKey: { kty: 'OKP', crv: 'X25519', x },
  };
  const encrypt = new CompactEncrypt(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({
    alg: 'ECDH-ES',
    enc: 'A256GCM',
    kid: keys.kid,
  });
  if (keys.ephemeral !== undefined) encrypt.setKeyManagementParameters({ epk: keys.ephemeral });
  const jwe = await encrypt.encrypt(keys.serviceKey);
  return { authorization: `Sealed ${jwe}`, open: (body) => openAnswer(body, keys.response.privateKey, payload.jti) };
}

async function openAnswer(jwe: string, privateKey: KeyObject, jti: string): Promise<OpenedAnswer> {
  let opened;
  try {
    const { plaintext, protectedHeader } = await compactDecrypt(jwe.trim(), privateKey, {
      keyManagementAlgorithms: ANSWER_KEY_ALGORITHMS,
      contentEncryptionAlgorithms: ['A256GCM'],
    });
    opened = { json: JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plaintext)) as unknown, protectedHeader };
  } catch {
    throw new KmsError('PROTOCOL', "the sealed answer could not be opened with this request's response key");
  }
  // While keys are reused, every answer to this client opens with the same key: only kms-jti tells
  // this request's answer from the sealed answer of another one, which an ingress could hand back.
  if (opened.protectedHeader['kms-jti'] !== jti) throw new KmsError('PROTOCOL', 'the sealed answer was made for another request (its kms-jti): refused');
  const authenticated: Record<string, string> = {};
  for (const [name, value] of Object.entries(opened.protectedHeader)) {
    if (!name.startsWith('kms-') || name === 'kms-jti') continue;
    if (typeof value !== 'string') throw new KmsError('PROTOCOL', `the sealed answer's ${name} is not a string`);
    authenticated[name] = value;
  }
  return { json: opened.json, authenticated };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
