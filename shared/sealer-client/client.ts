import { readFileSync } from 'node:fs';
import type { Attester, Verifier } from '../attestation/types.js';
import { sealerAttestation } from './attest-sealer.js';
import { isCompactJwe } from '../custody/share-jwe.js';
import { rootKeyId } from '../crypto/root-key-id.js';
import { KmsError } from '../errors.js';
import { KbsClient, KbsResponseError, KbsTransportError, problemOf } from '../kbs/client.js';
import { isSealerOutage, isStartingSeal } from './outage.js';
import {
  ROOT_KEY_BYTES,
  parseShare,
  ROOT_KEY_RESOURCE,
  sealerPaths,
  sealerProblems,
  type InstallRootKeyRequest,
  type InstallRootKeyResult,
  type RecoveryKeyAnswer,
  type RecoveryProgress,
  type SealStatus,
  type Share,
  type VerifyResult,
} from './protocol.js';

export interface SealerClientOptions {
  /**
   * KMS_SEALER_URL, e.g. https://127.0.0.1:9877: one sealing service, or a list of its replicas
   * tried in order, the last one that answered first (docs/root-key.md, "Sealer outages").
   */
  readonly url: string | readonly string[];
  /** PEM of the CA (or the self-signed certificate) the sealer's TLS certificate must chain to. */
  readonly ca: string | Buffer;
  readonly attester: Attester;
  /** Checks the sealing service's own evidence (trusted-sealer.ts); every answer must then carry its attested signature. */
  readonly sealerVerifier: Verifier;
  readonly timeoutMs?: number;
  /** This TEE's init-data TOML (KMS_INIT_DATA_FILE), sent with every attestation. */
  readonly initData?: string;
}

/**
 * How the functions talk to the sealing service: the root key through the KBS protocol, and the
 * root key lifecycle (install/verify/recover) through the sealer's admin API, every call carrying
 * this TEE's attestation token. Errors are KmsErrors: SEALED (details: the seal status),
 * BAD_REQUEST (the sealer's detail, safe to show), CONFLICT, ROOT_KEY_UNAVAILABLE (unreachable,
 * untrusted TLS certificate, attestation refused). No message ever contains a secret.
 *
 * With several URLs each is attested on its own: an answer counts only when the endpoint that gave
 * it proved itself, so an endpoint that cannot is as good as down (isSealerOutage).
 */
export class SealerClient {
  readonly #endpoints: readonly KbsClient[];
  /** The endpoint that answered last: asked first next time. */
  #preferred = 0;

  constructor(options: SealerClientOptions) {
    const urls = typeof options.url === 'string' ? [options.url] : options.url;
    if (urls.length === 0) throw new KmsError('CONFIG', 'the sealing service needs at least one URL');
    this.#endpoints = urls.map((url) => new KbsClient({ ...options, url, server: sealerAttestation(sealerPaths.attestation, options.sealerVerifier, url) }));
  }

  /** Reads the CA file (KMS_SEALER_CA_FILE) once. */
  static fromCaFile(options: {
    url: string | readonly string[];
    caFile: string;
    attester: Attester;
    sealerVerifier: Verifier;
    timeoutMs?: number;
    initData?: string;
  }): SealerClient {
    let ca: Buffer;
    try {
      ca = readFileSync(options.caFile);
    } catch {
      throw new KmsError('CONFIG', `KMS_SEALER_CA_FILE names a file that cannot be read: ${options.caFile}`);
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new KmsError('CONFIG', `KMS_SEALER_CA_FILE must hold PEM certificates (-----BEGIN CERTIFICATE-----): ${options.caFile}`);
    }
    return new SealerClient({
      url: options.url,
      ca,
      attester: options.attester,
      sealerVerifier: options.sealerVerifier,
      timeoutMs: options.timeoutMs,
      ...(options.initData === undefined ? {} : { initData: options.initData }),
    });
  }

  /** The endpoint asked first (the one that answered last). */
  get url(): string {
    return this.#endpoints[this.#preferred]!.url;
  }

  get urls(): readonly string[] {
    return this.#endpoints.map((kbs) => kbs.url);
  }

  /** The current root key, released to this attested TEE (JWE to its ephemeral key). */
  async rootKey(): Promise<{ id: string; key: Buffer }> {
    return this.#failover(everyFailure, async (kbs) => {
      const key = await kbs.getResource(ROOT_KEY_RESOURCE);
      if (key.length !== ROOT_KEY_BYTES) {
        key.fill(0);
        throw new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service released a resource that is not a 256-bit key (${kbs.url})`);
      }
      return { id: rootKeyId(key), key };
    });
  }

  /** Needs no attestation token; the answer is still signed by the attested service. */
  async sealStatus(): Promise<SealStatus> {
    return this.#failover(isSealerOutage, (kbs) => this.#sealStatusOf(kbs));
  }

  /**
   * The id of the root key the sealing service holds now. A status saying it is sealed (or not
   * initialized) is a SEALED error, as a refused root key would be: both are the service's own
   * signed word. Like rootKey, another replica is asked when one says so.
   */
  async currentRootKeyId(): Promise<string> {
    return this.#failover(everyFailure, async (kbs) => {
      const status = await this.#sealStatusOf(kbs);
      if (status.sealed || status.rootKeyId === null) {
        throw new KmsError('SEALED', 'the sealing service is sealed', { details: status as unknown as Record<string, unknown> });
      }
      return status.rootKeyId;
    });
  }

  async #sealStatusOf(kbs: KbsClient): Promise<SealStatus> {
    const response = await kbs.request('GET', sealerPaths.sealStatus);
    if (response.status !== 200) throw new KbsResponseError(response.status, problemOf(response.body), 'seal status', kbs.signsAnswers);
    return response.body as SealStatus;
  }

  /**
   * Initialization (expectedCurrentId null: the key is current at once) or rotation (the key is
   * pending until its shares are verified). The sealing service makes the key and answers its
   * shares; expectedPendingId is the pending key id the caller saw.
   */
  async installRootKey(request: {
    t: number;
    n: number;
    expectedCurrentId: string | null;
    expectedPendingId?: string | null;
    custodians?: readonly unknown[] | undefined;
    currentShares?: readonly Share[] | undefined;
  }): Promise<InstallRootKeyResult> {
    const body: InstallRootKeyRequest = {
      t: request.t,
      n: request.n,
      expectedCurrentId: request.expectedCurrentId,
      expectedPendingId: request.expectedPendingId ?? null,
      ...(request.custodians === undefined ? {} : { custodians: request.custodians }),
      ...(request.currentShares === undefined ? {} : { currentShares: request.currentShares }),
    };
    const result = (await this.#admin('POST', sealerPaths.rootKey, body, 'install root key')) as Partial<Record<keyof InstallRootKeyResult, unknown>>;
    const { rootKeyId, pending, shares } = result;
    const valid =
      typeof rootKeyId === 'string' &&
      typeof pending === 'boolean' &&
      Array.isArray(shares) &&
      shares.length === request.n &&
      shares.every((share: unknown) => {
        const content = (share as { content?: unknown } | null)?.content;
        if (typeof content === 'string' && isCompactJwe(content)) return Number.isInteger((share as { index?: unknown }).index);
        try {
          parseShare(share).bytes.fill(0);
          return true;
        } catch {
          return false;
        }
      });
    if (!valid) throw new KmsError('INTERNAL', 'the sealing service answered a rotation with something other than a root key id and its shares');
    return { rootKeyId, pending, shares: (shares as Share[]).map(({ index, content }) => ({ index, content })) };
  }

  /** Proves shares; a rotation's new shares make its key current (the previous key is retired). */
  async verifyShares(shares: readonly Share[]): Promise<VerifyResult> {
    return (await this.#admin('POST', sealerPaths.verify, { shares }, 'verify shares')) as VerifyResult;
  }

  /** The recovery key shares travel encrypted to, with evidence binding it to `nonce` (base64url, 16-64 bytes). */
  async recoveryKey(nonce: string): Promise<RecoveryKeyAnswer> {
    return (await this.#admin('GET', `${sealerPaths.recoveryKey}?nonce=${encodeURIComponent(nonce)}`, undefined, 'recovery key')) as RecoveryKeyAnswer;
  }

  async submitShare(share: Share): Promise<RecoveryProgress> {
    return (await this.#admin('POST', sealerPaths.recoveryShares, { index: share.index, content: share.content }, 'submit share')) as RecoveryProgress;
  }

  async resetRecovery(): Promise<RecoveryProgress> {
    return (await this.#admin('DELETE', sealerPaths.recovery, undefined, 'reset recovery')) as RecoveryProgress;
  }

  /** Drops the root key from the sealer's memory (mode 2); shares recover it. */
  async seal(): Promise<SealStatus> {
    return (await this.#admin('POST', sealerPaths.seal, undefined, 'seal')) as SealStatus;
  }

  close(): void {
    for (const kbs of this.#endpoints) kbs.close();
  }

  /** Another replica is asked only where this one was never reached: an admin call is not repeated. */
  async #admin(method: string, path: string, body: unknown, operation: string): Promise<unknown> {
    const response = await this.#failover(nothingSent, (kbs) => kbs.authorized(method, path, body, operation));
    return response.body;
  }

  /**
   * `action` on each endpoint in turn, the last one that answered first, until one succeeds or a
   * failure is not `tryNext`'s. When none succeeds, an authoritative answer (isSealerOutage false)
   * outranks the silence of the others: the caller must hear "sealed" even when a replica is down;
   * a replica sealed only because it is starting outranks silence but not an authoritative answer.
   */
  async #failover<T>(tryNext: (error: KmsError) => boolean, action: (kbs: KbsClient) => Promise<T>): Promise<T> {
    const first = this.#preferred;
    const order = [first, ...this.#endpoints.keys()].filter((index, position) => position === 0 || index !== first);
    const failures: KmsError[] = [];
    for (const index of order) {
      const kbs = this.#endpoints[index]!;
      try {
        const result = await action(kbs);
        this.#preferred = index;
        return result;
      } catch (error) {
        const failure = mapError(error, kbs.url);
        failures.push(failure);
        if (!tryNext(failure)) throw failure;
      }
    }
    const authoritative = failures.find((failure) => !isSealerOutage(failure));
    if (authoritative !== undefined) throw authoritative;
    // "Sealed while starting" tells a function without a key more than silence does (recover it).
    const starting = failures.find(isStartingSeal);
    if (starting !== undefined) throw starting;
    // This function could not attest itself (its agent, the host's QGS): no replica was even asked.
    const unattested = failures.find((failure) => failure.code === 'ATTESTATION_UNAVAILABLE');
    if (unattested !== undefined) throw unattested;
    if (failures.length === 1) throw failures[0]!;
    throw new KmsError('ROOT_KEY_UNAVAILABLE', `no sealing service answered: ${failures.map((failure) => failure.message).join('; ')}`, {
      cause: new AggregateError(failures),
    });
  }
}

const everyFailure = (): boolean => true;

/** Connection refused, no route, no such name, or a certificate refused: nothing reached the server. */
function nothingSent(error: KmsError): boolean {
  const cause = error.cause;
  return cause instanceof KbsTransportError && (cause.kind === 'tls' || /^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)$/.test(cause.code));
}

function mapError(error: unknown, url: string): KmsError {
  if (error instanceof KmsError) return error;
  if (error instanceof KbsTransportError) {
    if (error.kind === 'tls') {
      return new KmsError(
        'ROOT_KEY_UNAVAILABLE',
        `the sealing service at ${url} could not be authenticated: its TLS certificate is not trusted by KMS_SEALER_CA_FILE (${error.code}); nothing was sent`,
        { cause: error },
      );
    }
    if (error.kind === 'timeout') return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} did not answer in time`, { cause: error });
    return new KmsError('ROOT_KEY_UNAVAILABLE', `cannot reach the sealing service at ${url} (${error.code})`, { cause: error });
  }
  if (error instanceof KbsResponseError && !error.authenticated) {
    // Not signed by the attested service: its status and problem say nothing (an impostor's "sealed").
    return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} answered HTTP ${error.status} without its attested signature; it was not used`, {
      cause: error,
    });
  }
  if (error instanceof KbsResponseError) {
    const type = error.problem?.type;
    const detail = (error.problem?.detail ?? '').slice(0, 500);
    switch (type) {
      case sealerProblems.sealed:
      case sealerProblems.uninitialized: {
        const status = error.problem?.sealStatus;
        return new KmsError('SEALED', detail || 'the sealing service is sealed', {
          cause: error,
          details: typeof status === 'object' && status !== null ? (status as Record<string, unknown>) : undefined,
        });
      }
      case sealerProblems.badShare:
      case sealerProblems.badRequest:
        return new KmsError('BAD_REQUEST', detail || 'the sealing service refused the request', { cause: error });
      case sealerProblems.conflict:
      case sealerProblems.keyFromSecret:
      case sealerProblems.notSealed:
      case sealerProblems.notInitialized:
        return new KmsError('CONFLICT', detail || 'conflict', { cause: error });
      case sealerProblems.payloadTooLarge:
        return new KmsError('PAYLOAD_TOO_LARGE', detail, { cause: error });
      case sealerProblems.integrity:
        return new KmsError('INTEGRITY', detail || 'the sealing service found storage tampered with', { cause: error });
      case sealerProblems.forbidden:
        return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} does not let this function do that: ${detail}`, { cause: error });
      case sealerProblems.proofInvalid:
        return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} refused this function's proof of possession: ${detail}`, { cause: error });
      case sealerProblems.storageUnavailable:
        return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} cannot reach its storage`, { cause: error });
      case sealerProblems.attestationUnavailable:
        return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} cannot get attestation evidence or collateral just now`, { cause: error });
      default:
        break;
    }
    if (error.status === 401 || error.status === 403) {
      return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} refused this TEE's attestation${detail ? `: ${detail}` : ''}`, {
        cause: error,
      });
    }
    if (error.status === 404) {
      return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} has no such resource or route${detail ? `: ${detail}` : ''}`, {
        cause: error,
      });
    }
    return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} failed (HTTP ${error.status})${detail ? `: ${detail}` : ''}`, { cause: error });
  }
  return new KmsError('ROOT_KEY_UNAVAILABLE', `the sealing service at ${url} could not be used`, { cause: error });
}
