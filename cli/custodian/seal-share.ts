/**
 * `custodian seal-share`: a custodian encrypts their share to the sealing service's recovery key,
 * after checking that the evidence binds that key to the nonce the custodian chose. Without that
 * check, whoever answers GET /rootKey/recover (an impostor, or a proxy on the way) could hand out
 * its own key and collect the shares.
 */
import { readFile } from 'node:fs/promises';
import { SampleVerifier } from '../../shared/attestation/sample.js';
import type { TeeType, VerifiedClaims, Verifier } from '../../shared/attestation/types.js';
import { parseChallenge, recoveryPlaintext } from '../../shared/custody/recovery-challenge.js';
import { openChallenge, parseCustodianKeys, sealShare, type CustodianKey } from '../../shared/custody/share-jwe.js';
import { isKmsError, KmsError } from '../../shared/errors.js';
import { isTeeType, kbsReportData, parseTeePubKey, type TeePubKey } from '../../shared/kbs/protocol.js';
import type { Share } from '../../shared/sealer-client/protocol.js';
import { loadCollateralFile, StaticCollateralSource } from '../../sealer/attestation/tdx/collateral.js';
import { createTdxPolicy, type TdxPolicy } from '../../sealer/attestation/tdx/policy.js';
import { TdxVerifier } from '../../sealer/attestation/tdx/verifier.js';
import { Refused, UsageError } from '../errors.js';
import { plainShareFrom, readJsonFile, readPrivateKey, readSecretInput, readTextFile } from './inputs.js';

export interface SealShareOptions {
  /** The answer of GET /rootKey/recover?nonce=…, saved to a file. */
  readonly recoveryFile: string;
  readonly index: number;
  /** Where the plaintext share is: a file holding its base64 or the JSON share object, or `-` for standard input. */
  readonly share: string;
  readonly nonce: string;
  /**
   * The custodian's private key file (as `custodian keygen` writes it): opens this custodian's
   * recovery challenge, which a sealing service with pinned custodians gives and requires.
   */
  readonly keyFile?: string | undefined;
  /** The sealing service's TDX reference values and DCAP collateral (both, or neither). */
  readonly tdx?: { readonly policyFile: string; readonly collateralFile: string; readonly rootCaFile?: string; readonly at: Date };
  readonly allowSample: boolean;
  readonly warn: (message: string) => void;
}

export interface SealedToRecoveryKey {
  /** The body of PUT /rootKey/recover: the share, its content a JWE to the recovery key. */
  readonly body: Share;
  readonly tee: TeeType;
  readonly claims: VerifiedClaims['claims'];
  readonly recoveryKeyId: string;
  /** Whether this custodian's recovery challenge is sealed with the share. */
  readonly challenged: boolean;
}

/** The sealing service accepts nonces of 16 to 64 bytes, base64url without padding (docs/sealer-protocol.md). */
export function parseNonce(value: string): string {
  const bytes = Buffer.from(value, 'base64url');
  if (!/^[A-Za-z0-9_-]+$/.test(value) || bytes.length < 16 || bytes.length > 64 || bytes.toString('base64url') !== value) {
    throw new UsageError('--nonce must be base64url (no padding) of 16 to 64 random bytes, the one sent to GET /rootKey/recover');
  }
  return value;
}

export async function sealShareToRecoveryKey(options: SealShareOptions): Promise<SealedToRecoveryKey> {
  const answer = parseRecoveryAnswer(await readJsonFile(options.recoveryFile, 'recovery key file'), options.recoveryFile);
  // Said before anything is read or verified: without the key the share would recover nothing.
  if (answer.challenges !== undefined && Object.keys(answer.challenges).length > 0 && options.keyFile === undefined) {
    throw new UsageError(
      `the sealing service pins its custodians (${options.recoveryFile} holds recovery challenges): give your custodian private key with --key <file>, whose challenge goes with the share`,
    );
  }
  const share = plainShareFrom(await readSecretInput(options.share, 'share file'), options.index);
  const verifier = await verifierFor(answer.tee, options);

  let verified: VerifiedClaims;
  try {
    verified = await verifier.verify(answer.evidence, kbsReportData(options.nonce, answer.teePubKey));
  } catch (error) {
    // FORBIDDEN names the claim that failed; BAD_REQUEST is evidence that does not even parse.
    if (isKmsError(error, 'FORBIDDEN') || isKmsError(error, 'BAD_REQUEST')) throw new Refused(`the recovery key's evidence is refused: ${error.message}`);
    throw error;
  }
  let challenge: string | undefined;
  if (answer.challenges !== undefined && options.keyFile !== undefined) {
    challenge = await challengeFor(answer.challenges, options.keyFile, options.recoveryFile, options.warn);
  } else if (options.keyFile !== undefined) {
    options.warn(`${options.recoveryFile} holds no recovery challenges (no custodians are pinned there): --key is not used`);
  } else if (answer.challenges !== undefined) {
    options.warn(`${options.recoveryFile} holds no recovery challenge for anyone: this share can verify a rotation or authorize new custodians, not recover`);
  }
  const jwe = await sealShare(recoveryPlaintext(share.content, challenge), answer.key);
  return {
    body: { index: share.index, content: jwe },
    tee: answer.tee,
    claims: verified.claims,
    recoveryKeyId: answer.key.thumbprint,
    challenged: challenge !== undefined,
  };
}

interface RecoveryAnswer {
  /** Exactly as served: these members are hashed into the evidence's report data. */
  readonly teePubKey: TeePubKey;
  readonly key: CustodianKey;
  readonly tee: TeeType;
  readonly evidence: unknown;
  /** With pinned custodians: each one's recovery challenge, a JWE to its key, by thumbprint. */
  readonly challenges?: Readonly<Record<string, string>>;
}

/**
 * This custodian's recovery challenge, opened with its private key; none, said, where the answer
 * holds none for this key: the share can then verify or authorize new custodians, not recover.
 */
async function challengeFor(
  challenges: Readonly<Record<string, string>>,
  keyFile: string,
  recoveryFile: string,
  warn: (message: string) => void,
): Promise<string | undefined> {
  const key = await readPrivateKey(keyFile);
  const jwe = challenges[key.thumbprint];
  if (jwe === undefined) {
    warn(
      `${recoveryFile} holds no recovery challenge for the key in ${keyFile} (kid ${key.thumbprint}): the sealing service does not count it as a pinned custodian's, ` +
        'so this share can verify a rotation or authorize new custodians, not recover',
    );
    return undefined;
  }
  try {
    return parseChallenge(await openChallenge(jwe, key.privateKey));
  } catch (error) {
    if (isKmsError(error)) throw new Refused(`the recovery challenge for kid ${key.thumbprint}: ${error.message}`);
    throw error;
  }
}

function parseRecoveryAnswer(json: unknown, file: string): RecoveryAnswer {
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !('recoveryKey' in json) || !('evidence' in json)) {
    throw new KmsError('BAD_REQUEST', `${file} is not an answer of GET /rootKey/recover ({"recoveryKey", "tee", "evidence"})`);
  }
  const { recoveryKey, tee, evidence, challenges } = json as Record<string, unknown>;
  const notAKey = (cause?: unknown) =>
    new KmsError('BAD_REQUEST', `${file}: recoveryKey is not a P-256 public JWK with exactly kty, crv, alg "ECDH-ES+A256KW", x, y`, { cause });
  let teePubKey: TeePubKey;
  let key: CustodianKey;
  try {
    teePubKey = parseTeePubKey(recoveryKey);
    if (teePubKey.crv !== 'P-256') throw notAKey();
    [key] = parseCustodianKeys([teePubKey], 1) as [CustodianKey];
  } catch (error) {
    throw notAKey(error);
  }
  if (!isTeeType(tee)) throw new KmsError('BAD_REQUEST', `${file}: tee must be "tdx" or "sample"`);
  if (challenges === undefined) return { teePubKey, key, tee, evidence };
  if (
    typeof challenges !== 'object' ||
    challenges === null ||
    Array.isArray(challenges) ||
    !Object.values(challenges).every((jwe) => typeof jwe === 'string')
  ) {
    throw new KmsError('BAD_REQUEST', `${file}: challenges must be an object of JWEs by key thumbprint`);
  }
  return { teePubKey, key, tee, evidence, challenges: challenges as Record<string, string> };
}

async function verifierFor(tee: TeeType, options: SealShareOptions): Promise<Verifier> {
  if (options.tdx !== undefined) {
    if (tee !== 'tdx') throw new Refused(`the recovery key comes with ${tee} evidence, not the TDX evidence that --tdx-policy asks for`);
    return tdxVerifier(options.tdx, options.warn);
  }
  if (tee === 'tdx') throw new UsageError("TDX evidence needs --tdx-policy and --collateral (the sealing service's reference values and DCAP collateral)");
  if (!options.allowSample) {
    throw new Refused('the recovery key comes with sample evidence, which proves nothing (no TEE made it): refused without --allow-sample (development only)');
  }
  options.warn('WARNING: sample evidence proves nothing: no TEE vouches for this recovery key, anyone could have made it. Development only.');
  return new SampleVerifier();
}

async function tdxVerifier(tdx: NonNullable<SealShareOptions['tdx']>, warn: (message: string) => void): Promise<Verifier> {
  const policy = await readPolicy(tdx.policyFile);
  const collateral = new StaticCollateralSource(await loadCollateralFile(tdx.collateralFile));
  let trustedRootCaPem: string | undefined;
  if (tdx.rootCaFile !== undefined) {
    trustedRootCaPem = await readTextFile(tdx.rootCaFile, 'root CA file');
    warn(`WARNING: TDX quotes are verified against the root CA in ${tdx.rootCaFile}, not Intel's: for tests and private DCAP PKIs only`);
  }
  return new TdxVerifier({ policy, collateral, ...(trustedRootCaPem === undefined ? {} : { trustedRootCaPem }), now: () => tdx.at });
}

/** The policy file's format is KMS_SEALER_TDX_POLICY_FILE's; errors name --tdx-policy and the file. */
async function readPolicy(path: string): Promise<TdxPolicy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new KmsError('BAD_REQUEST', `--tdx-policy ${path} cannot be read`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KmsError('BAD_REQUEST', `--tdx-policy ${path} is not JSON`);
  }
  try {
    return createTdxPolicy(json);
  } catch (error) {
    if (error instanceof KmsError) throw new KmsError('BAD_REQUEST', `--tdx-policy ${path}: ${error.message}`, { cause: error });
    throw error;
  }
}
