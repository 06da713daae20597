import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { KmsError } from '../errors.js';

type Server = HttpServer | HttpsServer;

/** The variables that set a listener's address and port, named when it cannot listen. */
export interface ListenVariables {
  readonly hostEnv: string;
  readonly portEnv: string;
}

/**
 * Listens on host:port (port 0: a free one) and resolves the address bound. A failure rejects:
 * with `variables`, as a CONFIG error naming the variable to change (listenError); without, as
 * the system's error (EADDRINUSE).
 */
export async function listen(server: Server, port: number, host: string, variables?: ListenVariables): Promise<AddressInfo> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    throw variables === undefined ? error : listenError(error, host, port, variables);
  }
  return server.address() as AddressInfo;
}

/** Codes of an address that cannot be resolved or is not this machine's: the host variable is wrong. */
const ADDRESS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EADDRNOTAVAIL', 'EAFNOSUPPORT']);

/** Whether a listen failure's code says the address, not the port, is wrong. */
export function isAddressError(code: string | undefined): boolean {
  return code !== undefined && ADDRESS_CODES.has(code);
}

/** What to do about such an address. */
export const ADDRESS_ADVICE = 'set it to an address or name of this machine (127.0.0.1 for this machine only, 0.0.0.0 for every interface)';

/**
 * Why a server could not listen, as a CONFIG error that names the variable to change and says
 * what to do: the address (`KMS_BIND: cannot listen on nonsense-host (ENOTFOUND); …`) or the port
 * (taken, or privileged). Anything else names both.
 */
export function listenError(error: unknown, host: string, port: number, { hostEnv, portEnv }: ListenVariables): KmsError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? 'error';
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (isAddressError(code)) return new KmsError('CONFIG', `${hostEnv}: cannot listen on ${host} (${code}); ${ADDRESS_ADVICE}`, { cause: error });
  if (code === 'EADDRINUSE') {
    return new KmsError('CONFIG', `${portEnv}: cannot listen on ${where} (EADDRINUSE): another process uses it; choose another port, or stop that process`, {
      cause: error,
    });
  }
  if (code === 'EACCES') {
    return new KmsError('CONFIG', `${portEnv}: cannot listen on ${where} (EACCES): ports below 1024 need privileges; choose a port from 1024 up`, {
      cause: error,
    });
  }
  return new KmsError('CONFIG', `${hostEnv}, ${portEnv}: cannot listen on ${where} (${code})`, { cause: error });
}

/**
 * Stops listening and ends every connection, idle keep-alive ones too: server.close alone waits
 * for clients' idle sockets (65 s of keepAliveTimeout here) before it calls back.
 */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
