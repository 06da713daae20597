// Proxies that play the ingress between a client and the KMS: what a TLS-terminating ingress,
// an activator or a proxy on the way sees.
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createServer, connect, type Server } from 'node:net';

export interface RecordingProxy {
  readonly port: number;
  readonly url: string;
  /** Every byte both ways so far. */
  capture(): Buffer;
  close(): Promise<void>;
}

/** A TCP proxy to 127.0.0.1:`targetPort` that records every byte both ways. */
export async function recordingProxy(targetPort: number): Promise<RecordingProxy> {
  const chunks: Buffer[] = [];
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    upstream.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.pipe(upstream).on('error', () => client.destroy());
    upstream.pipe(client).on('error', () => upstream.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return listening(server, () => Buffer.concat(chunks));
}

/**
 * An HTTP proxy that routes each request by its path to a port on 127.0.0.1 (as Knative's ingress
 * routes each route to its function) and records requests and answers, headers and bodies.
 * `rewriteAnswerHeaders` changes the headers of the answers it passes on, as an ingress can.
 */
export async function routingProxy(
  portFor: (path: string) => number,
  options: { readonly rewriteAnswerHeaders?: (path: string, headers: IncomingHttpHeaders) => IncomingHttpHeaders } = {},
): Promise<RecordingProxy> {
  const chunks: Buffer[] = [];
  const server = createHttpServer((req, res) => {
    const head = `${req.method} ${req.url} HTTP/1.1\r\n${Object.entries(req.headers)
      .map(([k, v]) => `${k}: ${String(v)}\r\n`)
      .join('')}\r\n`;
    chunks.push(Buffer.from(head, 'latin1'));
    const upstream = httpRequest(
      { host: '127.0.0.1', port: portFor(new URL(req.url ?? '/', 'http://x').pathname), method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        chunks.push(Buffer.from(`HTTP/1.1 ${answer.statusCode}\r\n${JSON.stringify(answer.headers)}\r\n\r\n`, 'latin1'));
        const rewrite = options.rewriteAnswerHeaders;
        res.writeHead(answer.statusCode ?? 502, rewrite === undefined ? answer.headers : rewrite(req.url ?? '/', { ...answer.headers }));
        answer.on('data', (chunk: Buffer) => chunks.push(chunk));
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.pipe(upstream);
  });
  return listening(server, () => Buffer.concat(chunks));
}

/** A request or an answer as an ingress holds it, whole. */
export interface Exchange {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * An HTTP proxy to 127.0.0.1:`targetPort` that holds each request and each answer whole and lets
 * the test change them before passing them on, as an ingress that terminates TLS can: each hook
 * gets what arrived and returns what to pass on. It records every byte it passes on.
 */
export async function tamperingProxy(
  targetPort: number,
  hooks: {
    readonly request?: (request: Exchange) => Exchange;
    readonly answer?: (request: Exchange, answer: Exchange) => Exchange;
  },
): Promise<RecordingProxy> {
  const chunks: Buffer[] = [];
  const server = createHttpServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      const received: Exchange = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, headers: req.headers, body: Buffer.concat(parts) };
      const sent = hooks.request?.(received) ?? received;
      chunks.push(Buffer.from(`${sent.method} ${sent.path} HTTP/1.1\r\n${JSON.stringify(sent.headers)}\r\n\r\n`, 'latin1'), sent.body);
      const headers = { ...sent.headers };
      delete headers['transfer-encoding'];
      if (sent.body.length > 0 || headers['content-length'] !== undefined) headers['content-length'] = String(sent.body.length);
      const upstream = httpRequest({ host: '127.0.0.1', port: targetPort, method: sent.method, path: sent.path, headers }, (answer) => {
        const body: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => body.push(chunk));
        answer.on('end', () => {
          const honest: Exchange = { ...sent, status: answer.statusCode ?? 502, headers: answer.headers, body: Buffer.concat(body) };
          const passed = hooks.answer?.(sent, honest) ?? honest;
          chunks.push(Buffer.from(`HTTP/1.1 ${passed.status}\r\n${JSON.stringify(passed.headers)}\r\n\r\n`, 'latin1'), passed.body);
          const out = { ...passed.headers, 'content-length': String(passed.body.length) };
          delete out['transfer-encoding'];
          res.writeHead(passed.status, out).end(passed.body);
        });
      });
      upstream.on('error', () => res.writeHead(502).end());
      upstream.end(sent.body);
    });
  });
  return listening(server, () => Buffer.concat(chunks));
}

async function listening(server: Server | ReturnType<typeof createHttpServer>, capture: () => Buffer): Promise<RecordingProxy> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    capture,
    close: () =>
      new Promise((resolve) => {
        if ('closeAllConnections' in server) server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Every way a key or token could show up in captured bytes. */
export function encodings(secret: string | Buffer): string[] {
  const bytes = typeof secret === 'string' ? Buffer.from(secret) : secret;
  return [
    bytes.toString('base64'),
    bytes.toString('base64url'),
    bytes.toString('hex'),
    ...(typeof secret === 'string' ? [secret, encodeURIComponent(secret), new URLSearchParams({ t: secret }).toString().slice(2)] : []),
  ];
}

/** The secrets among `secrets` found in `capture`, in any of their encodings (none, hopefully). */
export function leaked(capture: Buffer, secrets: readonly (string | Buffer)[]): number[] {
  const text = capture.toString('latin1');
  return secrets.flatMap((secret, i) => (encodings(secret).some((encoded) => text.includes(encoded)) ? [i] : []));
}
