import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of a real server that can lose answers: the request reaches the server
 * (and is applied there), but the client's connection is cut when the answer comes back. This is
 * the ambiguous failure a storage client must survive without lying about what happened.
 */
export interface LossyProxy {
  /** http://127.0.0.1:<port>, to use as the S3 endpoint. */
  readonly endpoint: string;
  /** Cut the connection instead of delivering the next `count` answers. */
  loseAnswers(count: number): void;
  /** Answers lost so far. */
  readonly lost: number;
  /** Requests with this method the client has sent so far (counted by their request line). */
  requests(method: string): number;
  close(): Promise<void>;
}

export async function startLossyProxy(upstream: string): Promise<LossyProxy> {
  const target = new URL(upstream);
  let toLose = 0;
  let lost = 0;
  const requestLines: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstreamSocket = connect(Number(target.port), target.hostname);
    for (const s of [client, upstreamSocket]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstreamSocket.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      // A request line starts a chunk; a body (JSON or padding) never looks like one.
      const line = /^([A-Z]+) \/\S* HTTP\/1\.1\r\n/.exec(chunk.subarray(0, 2048).toString('latin1'));
      if (line !== null) requestLines.push(line[1]!);
    });
    client.pipe(upstreamSocket);
    upstreamSocket.on('data', (chunk: Buffer) => {
      if (toLose > 0) {
        toLose--;
        lost++;
        client.resetAndDestroy();
        upstreamSocket.destroy();
        return;
      }
      client.write(chunk);
    });
    upstreamSocket.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    loseAnswers(count) {
      toLose = count;
    },
    get lost() {
      return lost;
    },
    requests(method) {
      return requestLines.filter((m) => m === method).length;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
