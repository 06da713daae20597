import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { KmsError } from './errors.js';
import { ensureDataDir } from './fs/data-dir.js';

export interface TlsMaterial {
  readonly key: string;
  readonly cert: string;
  /** Where the certificate is, for KMS_SEALER_CA_FILE when it is self-signed. */
  readonly certFile: string;
  readonly selfSigned: boolean;
}

const RENEW_BEFORE_MS = 7 * 24 * 3600 * 1000;
const VALIDITY_DAYS = 825;

/**
 * The configured certificate and key, or (local use) a self-signed P-256 certificate kept in
 * `<dataDir>/tls/`: made once, reused across restarts so functions keep trusting it, remade when
 * it is about to expire. The certificate file doubles as the CA file functions trust.
 */
export interface TlsOptions {
  readonly dataDir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly hostnames: readonly string[];
  /** Names the options in error messages, e.g. KMS_SEALER_TLS → KMS_SEALER_TLS_CERT_FILE. */
  readonly envPrefix: string;
  /** Subject of the self-signed certificate. */
  readonly commonName: string;
  /** The variable that names `dataDir`: named when a self-signed certificate cannot be written there. */
  readonly dataDirEnv?: string;
}

export async function loadTls(options: TlsOptions): Promise<TlsMaterial> {
  const certEnv = `${options.envPrefix}_CERT_FILE`;
  const keyEnv = `${options.envPrefix}_KEY_FILE`;
  if ((options.certFile === '') !== (options.keyFile === '')) {
    throw new KmsError('CONFIG', `set both ${certEnv} and ${keyEnv}, or neither (a self-signed certificate is made)`);
  }
  if (options.certFile !== '') {
    const [cert, key] = await Promise.all([readPem(options.certFile, certEnv), readPem(options.keyFile, keyEnv)]);
    assertPair(cert, key, `${certEnv} and ${keyEnv} do not match`);
    return { cert, key, certFile: options.certFile, selfSigned: false };
  }

  const dir = join(options.dataDir, 'tls');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const existing = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]).catch(() => undefined);
  if (existing !== undefined) {
    const [cert, key] = existing;
    try {
      assertPair(cert, key, 'mismatch');
      if (Date.parse(new X509Certificate(cert).validTo) - Date.now() > RENEW_BEFORE_MS) return { cert, key, certFile, selfSigned: true };
    } catch {
      // Unreadable or mismatched: make a new one below.
    }
  }

  // A certificate is to be written: a dataDir that cannot be a folder is refused under its name
  // (one that only holds a valid certificate may be read-only).
  if (options.dataDirEnv !== undefined) await ensureDataDir(options.dataDir, options.dataDirEnv);
  const notBeforeDate = new Date(Date.now() - 60_000);
  const notAfterDate = new Date(notBeforeDate.getTime() + VALIDITY_DAYS * 24 * 3600 * 1000);
  const altNames = options.hostnames.map((name) => (isIP(name) ? { type: 7 as const, ip: name } : { type: 2 as const, value: name }));
  // Loaded only to make a certificate: selfsigned and its ASN.1 stack weigh on every cold start.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: options.commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeAtomic(keyFile, pems.private, 0o600);
  await writeAtomic(certFile, pems.cert, 0o644);
  return { cert: pems.cert, key: pems.private, certFile, selfSigned: true };
}

async function readPem(file: string, env: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    throw new KmsError('CONFIG', `${env} names a file that cannot be read: ${file}`);
  }
}

function assertPair(cert: string, key: string, message: string): void {
  let ok: boolean;
  try {
    ok = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch {
    ok = false;
  }
  if (!ok) throw new KmsError('CONFIG', message);
}

async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const temp = `${file}.tmp-${process.pid}`;
  await writeFile(temp, text, { mode });
  await rename(temp, file);
}

/** A self-signed certificate for local tools (benchmarks), kept in `<dir>/<name>/tls/`. */
export async function selfSignedTls(dir: string, name: string): Promise<TlsMaterial> {
  return loadTls({
    dataDir: join(dir, name),
    certFile: '',
    keyFile: '',
    hostnames: LOCAL_HOSTNAMES,
    envPrefix: 'KMS_TLS',
    commonName: `tee-kms ${name} (self-signed)`,
  });
}

export const LOCAL_HOSTNAMES: readonly string[] = ['localhost', '127.0.0.1', '::1'];
