import { Agent, createServer, request } from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { closeServer, listen } from '../../../shared/http/listen.js';

describe('listen and closeServer', () => {
  it('listen resolves the address bound (port 0: a free one) and rejects a port in use', async () => {
    const server = createServer((_req, res) => res.end('ok'));
    const address = await listen(server, 0, '127.0.0.1');
    expect(address).toMatchObject({ address: '127.0.0.1', family: 'IPv4' });
    expect(address.port).toBeGreaterThan(0);
    const other = createServer();
    await expect(listen(other, address.port, '127.0.0.1')).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await closeServer(server);
  });

  it('with the variables, a failure is a CONFIG error naming the one to change and what to do', async () => {
    const variables = { hostEnv: 'KMS_BIND', portEnv: 'PORT' };
    const server = createServer();
    const { port } = await listen(server, 0, '127.0.0.1', variables);
    await expect(listen(createServer(), port, '127.0.0.1', variables)).rejects.toMatchObject({
      code: 'CONFIG',
      message: `PORT: cannot listen on 127.0.0.1:${port} (EADDRINUSE): another process uses it; choose another port, or stop that process`,
    });
    // 192.0.2.1 (TEST-NET-1) is no address of this machine.
    await expect(listen(createServer(), 0, '192.0.2.1', variables)).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringMatching(/^KMS_BIND: cannot listen on 192\.0\.2\.1 \(EADDRNOTAVAIL\); set it to an address or name of this machine/),
    });
    await closeServer(server);
  });

  it('closeServer ends idle keep-alive connections at once instead of waiting for them', async () => {
    const server = createServer({ keepAliveTimeout: 65_000 }, (_req, res) => res.end('ok'));
    const { port } = await listen(server, 0, '127.0.0.1');
    const agent = new Agent({ keepAlive: true, timeout: 60_000 });
    const socket = await new Promise<Socket>((resolve, reject) => {
      const req = request({ port, host: '127.0.0.1', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(req.socket as Socket));
      });
      req.on('error', reject);
      req.end();
    });
    const socketClosed = new Promise((closed) => socket.once('close', closed));
    const started = Date.now();
    await closeServer(server);
    await socketClosed;
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(server.listening).toBe(false);
    agent.destroy();
  });
});
