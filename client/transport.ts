// HTTP(S) for the client: one keep-alive agent per client, the server's certificate checked against
// the configured CA and/or an SPKI pin before any byte of a request is written, bounded answers.
import { createHash, X509Certificate } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { KmsError } from './errors.js';

/** An answer larger than this is refused: the largest legitimate one (a rotation's shares) is a few KiB. */
export const MAX_ANSWER_BYTES = 1024 * 1024;

export interface TransportOptions {
  readonly url: URL;
  /** PEM CA certificate(s) to trust instead of Node's default roots. */
  readonly ca?: string | readonly string[];
  /** SHA-256 of the server certificate's SubjectPublicKeyInfo, base64 (see `spkiPin`); any one matches. */
  readonly pin?: string | readonly string[];
  readonly timeoutMs: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'DELETE']);

export interface HttpRequest {
  readonly method: string;
  /** Path and query, as sent. */
  readonly target: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
}

/** The pin of a certificate (PEM or DER): base64 SHA-256 of its SubjectPublicKeyInfo, as HPKP's pin-sha256. */
export function spkiPin(certificate: string | Buffer): string {
  const spki = new X509Certificate(certificate).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

export class Transport {
  readonly #options: TransportOptions;
  readonly #agent: HttpAgent;
  readonly #pins: readonly string[] | undefined;

  constructor(options: TransportOptions) {
    this.#options = options;
    const { protocol } = options.url;
    if (protocol !== 'https:' && protocol !== 'http:') throw new KmsError('CONFIG', 'url must be http: or https:');
    if ((options.ca !== undefined || options.pin !== undefined) && protocol !== 'https:') throw new KmsError('CONFIG', 'ca and pin need an https: url');
    this.#pins = options.pin === undefined ? undefined : [options.pin].flat();
    if (this.#pins !== undefined && (this.#pins.length === 0 || this.#pins.some((pin) => Buffer.from(pin, 'base64').length !== 32))) {
      throw new KmsError('CONFIG', 'pin must be the base64 SHA-256 of a SubjectPublicKeyInfo (spkiPin), or a list of them');
    }
    this.#agent = protocol === 'https:' ? new PinningAgent(this.#tlsOptions(), this.#pins) : new HttpAgent({ keepAlive: true });
  }

  /** With a pin and no CA the pin alone is the trust anchor (a self-signed certificate); with both, both must hold. */
  #tlsOptions(): ConnectionOptions {
    const { ca, pin } = this.#options;
    return {
      ...(ca === undefined ? {} : { ca: [ca].flat() }),
      rejectUnauthorized: !(pin !== undefined && ca === undefined),
    };
  }

  /**
   * One request. A keep-alive connection the server closed while idle fails as the request is
   * written (reset): that request is sent once more, on a new connection, Node's documented remedy,
   * but only if idempotent: the server may have acted on a POST or PUT before the reset.
   */
  async send(request: HttpRequest): Promise<HttpResponse> {
    try {
      return await this.#send(request);
    } catch (error) {
      if (!(error instanceof StaleConnection)) throw error;
      if (!IDEMPOTENT.has(request.method)) throw error.error;
      return this.#send(request).catch((again: unknown) => {
        throw again instanceof StaleConnection ? again.error : again;
      });
    }
  }

  #send(request: HttpRequest): Promise<HttpResponse> {
    const { url, timeoutMs } = this.#options;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const base = url.pathname.replace(/\/$/, '');
    return new Promise((resolve, reject) => {
      let settled = false;
      let answered = false;
      const fail = (error: KmsError | StaleConnection) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(error);
      };
      const req = send(
        {
          protocol: url.protocol,
          hostname: url.hostname.replace(/^\[|\]$/g, ''),
          port: url.port,
          method: request.method,
          path: `${base}${request.target}`,
          agent: this.#agent,
          headers: { ...request.headers, ...(request.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(request.body)) }) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES)
              fail(new KmsError('PROTOCOL', `the answer is larger than ${MAX_ANSWER_BYTES} bytes: refused`, { status: res.statusCode ?? 0 }));
            else chunks.push(chunk);
          });
          res.on('end', () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
          });
          res.on('error', (error) => fail(transportError(error)));
        },
      );
      const timer = setTimeout(() => fail(new KmsError('TIMEOUT', `no complete answer from ${url.host} within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (error: Error & { code?: string }) => {
        const reset = error.code === 'ECONNRESET' || error.code === 'EPIPE';
        fail(reset && req.reusedSocket && !answered ? new StaleConnection(transportError(error)) : transportError(error));
      });
      req.once('response', () => (answered = true));
      req.end(request.body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** A reused connection reset before any answer: the server had closed it. */
class StaleConnection extends Error {
  constructor(readonly error: KmsError) {
    super(error.message);
  }
}

/**
 * A keep-alive agent whose sockets are handed to HTTP only once the server's key matches the pin:
 * a request is never written to a server that fails it. No TLS session is resumed, so every new
 * connection shows its certificate.
 */
class PinningAgent extends HttpsAgent {
  constructor(
    private readonly tls: ConnectionOptions,
    private readonly pins: readonly string[] | undefined,
  ) {
    super({ keepAlive: true });
  }

  override createConnection(options: ConnectionOptions, callback?: (error: Error | null, socket: Duplex) => void): Duplex {
    const socket: TLSSocket = tlsConnect({ ...options, ...this.tls, session: undefined });
    const onError = (error: Error) => callback?.(transportError(error), socket);
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      const certificate = socket.getPeerX509Certificate();
      if (this.pins !== undefined && (certificate === undefined || !this.pins.includes(spkiPin(certificate.raw)))) {
        const error = new KmsError('TLS', "the server's certificate does not match the pin");
        socket.destroy();
        callback?.(error, socket);
        return;
      }
      callback?.(null, socket);
    });
    return undefined as unknown as Duplex; // the agent waits for the callback
  }
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ETIMEDOUT']);

function transportError(error: Error & { code?: string }): KmsError {
  if (error instanceof KmsError) return error;
  const code = error.code ?? '';
  if (UNREACHABLE.has(code)) return new KmsError('UNREACHABLE', `the KMS cannot be reached (${code})`, { cause: error });
  if (/CERT|SSL|TLS|SELF_SIGNED|HOSTNAME|ERR_TLS/.test(code)) return new KmsError('TLS', `the server's certificate is not trusted (${code})`, { cause: error });
  return new KmsError('UNREACHABLE', `the connection failed (${code || error.message})`, { cause: error });
}
