// Sealing-service replicas on loopback for tests: each a real process, the others its peers
// (KMS_SEALER_PEERS), sharing one storage bucket, one TLS certificate and one admin policy.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SealStatus } from '../../shared/sealer-client/protocol.js';
import type { SealerClient } from '../../shared/sealer-client/client.js';
import { freePort, TEST_ADMIN_IDENTITY } from './processes.js';
import { startSealerProcess, type SealerProcess } from './sealer.js';
import { writeTlsFiles } from './tls-files.js';

export interface Replicas {
  readonly sealers: SealerProcess[];
  readonly clients: SealerClient[];
  /** The replicas' shared certificate, for KMS_SEALER_CA_FILE. */
  readonly caFile: string;
}

/**
 * Starts `count` replicas in `dir` over `storageEnv`; each presents `identity` (sample init data),
 * which the admin policy grants `sealer-peer`, and re-reads the shared record every second.
 */
export async function startReplicas(dir: string, storageEnv: Record<string, string>, identity: string, count = 3): Promise<Replicas> {
  const tls = writeTlsFiles(dir);
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  const policyFile = join(dir, 'admin-policy.json');
  const grant = [TEST_ADMIN_IDENTITY];
  await writeFile(policyFile, JSON.stringify({ rotate: grant, verify: grant, recover: grant, seal: grant, 'sealer-peer': [identity] }));
  const sealers: SealerProcess[] = [];
  const clients: SealerClient[] = [];
  for (const [i, port] of ports.entries()) {
    const sealer = await startSealerProcess({
      port,
      env: {
        ...storageEnv,
        KMS_SEALER_TLS_CERT_FILE: tls.certFile,
        KMS_SEALER_TLS_KEY_FILE: tls.keyFile,
        KMS_SEALER_ADMIN_POLICY_FILE: policyFile,
        KMS_SEALER_PEERS: ports
          .filter((_, j) => j !== i)
          .map((p) => `https://127.0.0.1:${p}`)
          .join(','),
        KMS_SEALER_SAMPLE_INIT_DATA: identity,
        KMS_SEALER_SYNC_SECONDS: '1',
      },
    });
    sealers.push(sealer);
    clients.push(await sealer.client());
  }
  const caFile = join(dir, 'sealer-ca.pem');
  await writeFile(caFile, tls.certPem);
  return { sealers, clients, caFile };
}

/** Polls `client` until `done` holds; the time it took, in ms (a measurement; only `boundMs` is a limit). */
export async function untilStatus(client: SealerClient, done: (s: SealStatus) => boolean, what: string, logs: () => string, boundMs = 30_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    const current = await client.sealStatus().catch(() => undefined);
    if (current !== undefined && done(current)) return performance.now() - started;
    if (performance.now() - started > boundMs)
      throw new Error(`${what} did not happen: ${JSON.stringify(current)}
${logs()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export const unsealedOn = (id: string) => (s: SealStatus) => !s.sealed && s.rootKeyId === id;
