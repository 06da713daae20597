import { randomBytes } from 'node:crypto';
import type { TeeType } from '../shared/attestation/types.js';
import { NONCE_BYTES, type RuntimeDataHash } from '../shared/kbs/protocol.js';
import { SealerError } from './errors.js';
import { kbsError } from './problems.js';

interface Session {
  readonly id: string;
  readonly tee: TeeType;
  readonly nonce: string;
  readonly hash: RuntimeDataHash;
  state: 'authed' | 'attesting' | 'attested';
  expiresAt: number;
  token?: string;
}

/**
 * KBS sessions (`kbs-session-id`), in memory. A session starts at /auth with a fresh nonce that
 * lives nonceTtl; /attest consumes it once (success or failure: a nonce is never accepted twice);
 * an attested session then lives as long as its token.
 *
 * Challenges and attested sessions are bounded apart (maxSessions each). /auth needs no
 * credentials, so a full set of challenges gives up its oldest unanswered one rather than refusing
 * new ones: a flood of /auth then cannot lock clients out of attestation, since a client answers its
 * challenge within moments and the flood would have to outrun that. Only a challenge being verified
 * ('attesting') is kept, and /attest takes it once it has read the request body in full
 * (sealer/server.ts): a client that sends its body slowly, or never, holds no slot. /auth answers
 * BUSY only while every slot's evidence is being verified at once.
 */
export class SessionStore {
  /** Challenges: 'authed' (issued) and 'attesting' (being verified), oldest first. */
  readonly #pending = new Map<string, Session>();
  readonly #attested = new Map<string, Session>();

  constructor(
    private readonly nonceTtlMs: number,
    private readonly maxSessions: number,
    private readonly now: () => number = Date.now,
  ) {}

  create(tee: TeeType, hash: RuntimeDataHash): { id: string; nonce: string; expiresAt: number } {
    if (this.#pending.size >= this.maxSessions) this.#sweep(this.#pending);
    if (this.#pending.size >= this.maxSessions) {
      for (const [id, session] of this.#pending) {
        if (session.state === 'authed') {
          this.#pending.delete(id);
          break;
        }
      }
    }
    if (this.#pending.size >= this.maxSessions) {
      // Every slot holds evidence being verified: refusing is all that is left.
      throw new SealerError('BUSY', 'too many attestations in progress; retry shortly');
    }
    // Trustee: a uuid v4 "simple" id; the nonce is base64 of 32 random bytes.
    const id = randomBytes(16).toString('hex');
    const nonce = randomBytes(NONCE_BYTES).toString('base64');
    const expiresAt = this.now() + this.nonceTtlMs;
    this.#pending.set(id, { id, tee, nonce, hash, state: 'authed', expiresAt });
    return { id, nonce, expiresAt };
  }

  /** Takes the session's challenge for one /attest; any later use of it fails. */
  consumeChallenge(id: string | undefined): { tee: TeeType; nonce: string; hash: RuntimeDataHash } {
    if (id === undefined) throw kbsError.attestation('cookie not found');
    if (this.#attested.has(id)) throw kbsError.attestation('the nonce of this session was already used; start again at /auth');
    const session = this.#pending.get(id);
    if (session === undefined) throw kbsError.attestation('session not found (expired, or given up under load); start again at /auth');
    if (session.expiresAt <= this.now()) {
      this.#pending.delete(id);
      throw kbsError.attestation('session expired: the nonce was not answered in time; start again at /auth');
    }
    if (session.state !== 'authed') throw kbsError.attestation('the nonce of this session was already used; start again at /auth');
    session.state = 'attesting';
    return { tee: session.tee, nonce: session.nonce, hash: session.hash };
  }

  /** The verified session keeps its token (cookie mode); past maxSessions the oldest loses it (its token still works). */
  attested(id: string, token: string, expiresAt: number): void {
    const session = this.#pending.get(id);
    if (session === undefined) return;
    this.#pending.delete(id);
    session.state = 'attested';
    session.token = token;
    session.expiresAt = expiresAt;
    if (this.#attested.size >= this.maxSessions) this.#sweep(this.#attested);
    if (this.#attested.size >= this.maxSessions) this.#attested.delete(this.#attested.keys().next().value!);
    this.#attested.set(id, session);
  }

  failed(id: string): void {
    this.#pending.delete(id);
  }

  /** The token of an attested, unexpired session (cookie authentication, as Trustee offers). */
  tokenOf(id: string | undefined): string | undefined {
    if (id === undefined) return undefined;
    const session = this.#attested.get(id);
    if (session === undefined) return undefined;
    if (session.expiresAt <= this.now()) {
      this.#attested.delete(id);
      return undefined;
    }
    return session.token;
  }

  sweep(): void {
    this.#sweep(this.#pending);
    this.#sweep(this.#attested);
  }

  /** Each map is in expiry order (one lifetime per map, entries added as they start it): stop at the first live one. */
  #sweep(sessions: Map<string, Session>): void {
    const now = this.now();
    for (const [id, session] of sessions) {
      if (session.expiresAt > now) break;
      sessions.delete(id);
    }
  }

  get size(): number {
    return this.#pending.size + this.#attested.size;
  }
}
