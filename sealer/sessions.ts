import { randomBytes } from 'node:crypto';
import type { TeeType } from '../shared/attestation/types.js';
import { NONCE_BYTES, type RuntimeDataHash } from '../shared/kbs/protocol.js';
import { kbsErrors, Problem } from './problems.js';
import { sealerProblems } from '../shared/sealer/protocol.js';

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
 */
export class SessionStore {
  readonly #sessions = new Map<string, Session>();

  constructor(
    private readonly nonceTtlMs: number,
    private readonly maxSessions: number,
    private readonly now: () => number = Date.now,
  ) {}

  create(tee: TeeType, hash: RuntimeDataHash): { id: string; nonce: string; expiresAt: number } {
    if (this.#sessions.size >= this.maxSessions) this.sweep();
    if (this.#sessions.size >= this.maxSessions) {
      throw new Problem(503, sealerProblems.busy, 'too many pending attestation sessions; retry shortly');
    }
    // Trustee: a uuid v4 "simple" id; the nonce is base64 of 32 random bytes.
    const id = randomBytes(16).toString('hex');
    const nonce = randomBytes(NONCE_BYTES).toString('base64');
    const expiresAt = this.now() + this.nonceTtlMs;
    this.#sessions.set(id, { id, tee, nonce, hash, state: 'authed', expiresAt });
    return { id, nonce, expiresAt };
  }

  /** Takes the session's challenge for one /attest; any later use of it fails. */
  consumeChallenge(id: string | undefined): { tee: TeeType; nonce: string; hash: RuntimeDataHash } {
    if (id === undefined) throw kbsErrors.attestation('cookie not found');
    const session = this.#sessions.get(id);
    if (session === undefined) throw kbsErrors.attestation('session not found');
    if (session.expiresAt <= this.now()) {
      this.#sessions.delete(id);
      throw kbsErrors.attestation('session expired: the nonce was not answered in time; start again at /auth');
    }
    if (session.state !== 'authed') throw kbsErrors.attestation('the nonce of this session was already used; start again at /auth');
    session.state = 'attesting';
    return { tee: session.tee, nonce: session.nonce, hash: session.hash };
  }

  attested(id: string, token: string, expiresAt: number): void {
    const session = this.#sessions.get(id);
    if (session === undefined) return;
    session.state = 'attested';
    session.token = token;
    session.expiresAt = expiresAt;
  }

  failed(id: string): void {
    this.#sessions.delete(id);
  }

  /** The token of an attested, unexpired session (cookie authentication, as Trustee offers). */
  tokenOf(id: string | undefined): string | undefined {
    if (id === undefined) return undefined;
    const session = this.#sessions.get(id);
    if (session === undefined || session.state !== 'attested') return undefined;
    if (session.expiresAt <= this.now()) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session.token;
  }

  sweep(): void {
    const now = this.now();
    for (const [id, session] of this.#sessions) if (session.expiresAt <= now) this.#sessions.delete(id);
  }

  get size(): number {
    return this.#sessions.size;
  }
}
