import { isIP } from 'node:net';
import type { Attester } from '../shared/attestation/types.js';
import { workloadIdentity } from '../shared/attestation/types.js';
import { KbsClient, KbsResponseError } from '../shared/kbs/client.js';
import { isTeeType } from '../shared/kbs/protocol.js';
import { decryptFromKbs, generateTeeKeyPair, type TeeKeyPair } from '../shared/kbs/tee-key.js';
import type { ComponentLog } from '../shared/log.js';
import { attestedSealer, type ServerAttestation } from '../shared/sealer-client/attest-sealer.js';
import { sealerPaths, sealerProblems } from '../shared/sealer-client/protocol.js';
import type { AdminPolicy } from './admin-policy.js';
import type { SealerCore } from './core.js';
import type { VerifierRegistry } from './verifiers.js';

export interface PeerOptions {
  readonly core: SealerCore;
  /** The other replicas, https://host:port. */
  readonly peers: readonly string[];
  /** PEM trusted for the peers' TLS. */
  readonly ca: string;
  /** This replica's attester: it attests to its peers as a sealer. */
  readonly attester: Attester;
  /** How a peer's own evidence is checked (this service's verifiers). */
  readonly verifiers: VerifierRegistry;
  /** A peer must be granted `sealer-peer`, as this replica must be by it. */
  readonly policy: AdminPolicy;
  readonly syncMs: number;
  readonly log: Pick<ComponentLog, 'info' | 'warn'>;
}

/**
 * The peers without this replica: a Kubernetes StatefulSet gives every pod the same list, and a
 * pod's host name is the first label of its stable name (tee-kms-sealer-0 in
 * https://tee-kms-sealer-0.tee-kms-sealer-peers:9877), so that entry is this replica itself.
 */
export function otherReplicas(peers: readonly string[], hostname: string): readonly string[] {
  const self = hostname.toLowerCase().split('.')[0];
  return peers.filter((peer) => {
    const host = new URL(peer).hostname.toLowerCase();
    return isIP(host.replace(/^\[|\]$/g, '')) !== 0 || host.split('.')[0] !== self;
  });
}

/**
 * The replicas' side of each other: every `syncMs` (and at once at start) the shared state record
 * is re-read and, while sealed, each peer is asked for the root key over the KBS protocol, this
 * replica attesting with its own evidence and TEE key. The key arrives only as a JWE to that key,
 * from a peer that first proved itself a granted sealer, and is installed only if it authenticates
 * the shared record (SealerCore.adoptPeerKey).
 */
export class PeerUnsealer {
  readonly #options: PeerOptions;
  readonly #teeKey: Promise<TeeKeyPair>;
  readonly #clients = new Map<string, KbsClient>();
  /** Peers whose last answer was the same failure: logged once until it changes. */
  readonly #lastFailure = new Map<string, string>();
  /** The last round found that no peer holds the key (each sealed, or its key not the current one). */
  #noPeerHoldsKey = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #running: Promise<void> | undefined;

  constructor(options: PeerOptions) {
    this.#options = options;
    this.#teeKey = generateTeeKeyPair();
  }

  start(): void {
    const tick = () => {
      this.#running = this.sync().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, this.#options.syncMs).unref();
      });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running?.catch(() => undefined);
    for (const client of this.#clients.values()) client.close();
  }

  /**
   * Whether a sealed replica should be counted ready: only once it is known that no peer can hand
   * it the key, so that its shares are needed (a rolling restart waits for a peer to unseal it).
   */
  get noPeerHoldsKey(): boolean {
    return this.#noPeerHoldsKey;
  }

  /** One round: follow the record; while sealed (and initialized), ask the peers in turn. */
  async sync(): Promise<void> {
    const { core, log } = this.#options;
    try {
      await core.follow();
    } catch (error) {
      log.warn(`cannot re-read the shared state record: ${describe(error)}`);
      return;
    }
    const status = core.status();
    if (!status.sealed) this.#noPeerHoldsKey = false; // a later drop of the key starts from "unknown"
    if (!status.sealed || !status.initialized || core.sealedByOperator) return;
    let noneHolds = true;
    for (const peer of this.#options.peers) {
      if (this.#stopped) return;
      try {
        const key = await this.#keyFrom(peer);
        try {
          if (await core.adoptPeerKey(key)) {
            this.#lastFailure.clear();
            this.#noPeerHoldsKey = false;
            return;
          }
        } finally {
          key.fill(0);
        }
      } catch (error) {
        // Unreachable, or refused: it may hold the key. Only a peer that says it is sealed does not.
        const type = error instanceof KbsResponseError ? error.problem?.type : undefined;
        if (type !== sealerProblems.sealed && type !== sealerProblems.uninitialized) noneHolds = false;
        const why = describe(error);
        if (this.#lastFailure.get(peer) !== why) log.info(`peer ${peer} did not hand over the root key: ${why}`);
        this.#lastFailure.set(peer, why);
      }
    }
    this.#noPeerHoldsKey = noneHolds;
  }

  async #keyFrom(peer: string): Promise<Buffer> {
    let client = this.#clients.get(peer);
    if (client === undefined) {
      client = new KbsClient({
        url: peer,
        ca: this.#options.ca,
        attester: this.#options.attester,
        teeKey: this.#teeKey,
        timeoutMs: 5_000,
        server: this.#peerAttestation(peer),
      });
      this.#clients.set(peer, client);
    }
    const answer = await client.authorized('GET', sealerPaths.peerRootKey, undefined, 'peer root key');
    return decryptFromKbs(answer.body, (await this.#teeKey).privateKey);
  }

  /** A peer proves it runs attested, with an identity granted `sealer-peer`, before anything is sent to it. */
  #peerAttestation(peer: string): ServerAttestation {
    const { verifiers, policy } = this.#options;
    return attestedSealer(sealerPaths.attestation, peer, {
      verifierFor: (tee) => (isTeeType(tee) ? verifiers.get(tee) : undefined),
      accepts: 'no verifier of this sealing service takes it',
      refusal(claims) {
        const identity = workloadIdentity(claims);
        return policy.allows('sealer-peer', identity) ? undefined : `attested as identity ${identity}, which is not granted "sealer-peer": not a replica`;
      },
    });
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.message}`.slice(0, 300);
  return 'unknown error';
}
