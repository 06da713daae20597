import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  /** Where the certificate is, for clients to trust (e.g. curl --cacert, KMS_SEALER_CA_FILE). */
  readonly certFile: string;
}

/**
 * A self-signed certificate for local use (localhost, 127.0.0.1, ::1), created once and kept in
 * `<dir>/tls/<name>.{crt,key}` so clients can pin it across restarts.
 */
export async function selfSignedTls(dir: string, name: string, hostnames: readonly string[] = []): Promise<TlsMaterial> {
  const tlsDir = join(dir, 'tls');
  const certFile = join(tlsDir, `${name}.crt`);
  const keyFile = join(tlsDir, `${name}.key`);
  try {
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'), certFile };
  } catch {
    // not created yet
  }
  // Loaded only to make a certificate: selfsigned (@peculiar/x509, asn1js…) is a large share of a
  // function's start-up, which the lean host pays even with KMS_TLS=off (docs/performance.md).
  const { generate } = await import('selfsigned');
  const notAfterDate = new Date();
  notAfterDate.setFullYear(notAfterDate.getFullYear() + 1);
  const pems = await generate([{ name: 'commonName', value: `tee-kms ${name}` }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          ...hostnames.map((value) => ({ type: 2 as const, value })),
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  // Key first, then certificate, each atomically: a crash leaves no certificate without its key.
  await writeAtomic(keyFile, pems.private, 0o600);
  await writeAtomic(certFile, pems.cert, 0o644);
  return { cert: pems.cert, key: pems.private, certFile };
}

async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const temp = `${path}.tmp-${process.pid}`;
  await writeFile(temp, data, { mode });
  await rename(temp, path);
}
