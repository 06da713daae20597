/**
 * The CLI's one door to the server: the methods of `tee-kms/client`'s KmsClient that the commands
 * use, over node:https with the CA the user trusts. Every command goes through here, so moving to
 * the real client is a change of this file only.
 */
import { request } from 'node:https';

/** A Shamir share: `content` is base64, or a compact JWE to a custodian or to the recovery key. */
export interface Share {
  readonly index: number;
  readonly content: string;
}

export interface RecoveryProgress {
  readonly sealed: boolean;
  readonly progress: number;
  readonly t: number;
  readonly rootKeyId?: string;
}

export interface Rotation {
  readonly shares: readonly Share[];
  /** `current` for the first rotate (initialization); else `pending-verification` until `verify`. */
  readonly state: string;
}

/** `status` is 0 when the server gave no answer (transport `code`: UNREACHABLE, TLS, TIMEOUT). */
export class KmsError extends Error {
  override readonly name = 'KmsError';
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
  ) {
    super(message);
  }
}

export interface KmsClientOptions {
  readonly url: string;
  readonly user?: string;
  readonly token?: string;
  readonly adminToken?: string;
  /** PEM of the CA to trust instead of the system's. */
  readonly ca?: string;
  readonly timeoutMs?: number;
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly json: unknown;
}

/** Node's TLS failures: the certificate is not trusted or does not name the host. */
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_|HOSTNAME_MISMATCH)/;
const MAX_ANSWER_BYTES = 1024 * 1024;

export class KmsClient {
  private readonly base: URL;

  constructor(private readonly options: KmsClientOptions) {
    try {
      this.base = new URL(options.url);
    } catch {
      throw new KmsError('CONFIG', 'the URL is not a URL');
    }
    if (this.base.protocol !== 'https:') throw new KmsError('CONFIG', 'the URL must be https://');
  }

  sealStatus(): Promise<Record<string, unknown>> {
    return this.call('GET', '/rootKey/status') as Promise<Record<string, unknown>>;
  }

  async enroll(): Promise<{ user: string }> {
    const user = this.requireUser();
    await this.call('POST', `/user/${encodeURIComponent(user)}`, { auth: 'user' });
    return { user };
  }

  createPrimaryKey(primaryKey: string): Promise<unknown> {
    return this.call('POST', `/primaryKey/${encodeURIComponent(primaryKey)}`, { auth: 'user' });
  }

  createDataKey(primaryKey: string, dataKey: string): Promise<unknown> {
    return this.call('POST', `/dataKey/${encodeURIComponent(dataKey)}?primaryKeyName=${encodeURIComponent(primaryKey)}`, { auth: 'user' });
  }

  async getDataKey(primaryKey: string, dataKey: string): Promise<{ user: string; primaryKey: string; dataKey: string; key: string }> {
    const path = `/dataKey/${encodeURIComponent(dataKey)}?primaryKeyName=${encodeURIComponent(primaryKey)}`;
    return (await this.call('GET', path, { auth: 'user' })) as { user: string; primaryKey: string; dataKey: string; key: string };
  }

  /**
   * With custodians' public JWKs the shares come back encrypted to them, one each; naming custodians
   * other than the stored ones takes the threshold of the current shares.
   */
  async rotate(options: { custodians?: readonly unknown[]; shares?: readonly Share[] } = {}): Promise<Rotation> {
    const body =
      options.custodians === undefined ? undefined : { custodians: options.custodians, ...(options.shares === undefined ? {} : { shares: options.shares }) };
    const answer = await this.send(
      body === undefined ? 'GET' : 'POST',
      '/rootKey/rotate',
      { auth: this.options.adminToken === undefined ? 'none' : 'admin' },
      body,
    );
    const state = answer.headers['x-kms-root-key-state'];
    return { shares: answer.json as Share[], state: typeof state === 'string' ? state : 'current' };
  }

  verify(shares: readonly Share[]): Promise<Record<string, unknown>> {
    return this.call('POST', '/rootKey/verify', { auth: 'admin' }, { shares }) as Promise<Record<string, unknown>>;
  }

  recover(share: Share): Promise<RecoveryProgress> {
    return this.call('PUT', '/rootKey/recover', { auth: 'none' }, share) as Promise<RecoveryProgress>;
  }

  /** GET /rootKey/recover: the sealing service's recovery key with evidence binding it to `nonce`. */
  recoveryKey(nonce: string): Promise<unknown> {
    return this.call('GET', `/rootKey/recover?nonce=${nonce}`);
  }

  /** GET /attestation: the service key with this TD's evidence bound to `nonce`. */
  attestation(nonce: string): Promise<unknown> {
    return this.call('GET', `/attestation?nonce=${nonce}`);
  }

  private requireUser(): string {
    if (this.options.user === undefined) throw new KmsError('CONFIG', 'no user: give --user or TEE_KMS_USER');
    return this.options.user;
  }

  private async call(method: string, path: string, how: { auth?: 'none' | 'user' | 'admin' } = {}, body?: unknown): Promise<unknown> {
    return (await this.send(method, path, how, body)).json;
  }

  private send(method: string, path: string, how: { auth?: 'none' | 'user' | 'admin' }, body?: unknown): Promise<Answer> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (how.auth === 'user') {
      if (this.options.token === undefined) throw new KmsError('CONFIG', 'no token: set TEE_KMS_TOKEN or give --token-file');
      // Headers, not the query: the token stays out of URLs and access logs.
      headers['x-kms-user'] = this.requireUser();
      headers.authorization = `Bearer ${this.options.token}`;
    } else if (how.auth === 'admin') {
      if (this.options.adminToken === undefined) throw new KmsError('CONFIG', 'no admin token: set TEE_KMS_ADMIN_TOKEN or give --admin-token-file');
      headers.authorization = `Bearer ${this.options.adminToken}`;
    }
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const url = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base.href : `${this.base.href}/`);
    return new Promise<Answer>((resolve, reject) => {
      const req = request(url, { method, headers, ca: this.options.ca, timeout: this.options.timeoutMs ?? 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) req.destroy(new KmsError('PROTOCOL', 'the answer is too large'));
          else chunks.push(chunk);
        });
        res.on('error', (error) => reject(transportError(error)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            return reject(new KmsError(status >= 400 ? 'INTERNAL' : 'PROTOCOL', `the server answered ${status} without JSON`, status));
          }
          if (status >= 200 && status < 300) return resolve({ status, headers: res.headers, json });
          const error = (json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
          const code = typeof error?.code === 'string' ? error.code : 'INTERNAL';
          reject(new KmsError(code, typeof error?.message === 'string' ? error.message : `the server answered ${status}`, status));
        });
      });
      req.on('timeout', () => req.destroy(new KmsError('TIMEOUT', `no answer from ${this.base.origin} in time`)));
      req.on('error', (error) => reject(transportError(error, this.base.origin)));
      req.end(payload);
    });
  }
}

function transportError(error: Error, origin = 'the server'): KmsError {
  if (error instanceof KmsError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (TLS_CODES.test(code)) return new KmsError('TLS', `the TLS certificate of ${origin} is not trusted (${code}): give its CA with --ca or TEE_KMS_CA`);
  return new KmsError('UNREACHABLE', `cannot reach ${origin}${code === '' ? '' : ` (${code})`}`);
}
