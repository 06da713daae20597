import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A self-signed P-256 certificate for `host` (default localhost) and 127.0.0.1 and its key, as PEM
 * files in `dir` (made with openssl, not the project's TLS code): what an operator gives a sealing
 * service in KMS_SEALER_TLS_CERT_FILE and KMS_SEALER_TLS_KEY_FILE, and what whoever reads that Secret holds.
 */
export function writeTlsFiles(dir: string, name = 'sealer-tls', host = 'localhost'): { certFile: string; keyFile: string; certPem: string } {
  const certFile = join(dir, `${name}-cert.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '2',
      '-subj',
      '/CN=tee-kms sealing service',
      '-addext',
      `subjectAltName=DNS:${host},IP:127.0.0.1`,
    ],
    { stdio: 'pipe' },
  );
  return { certFile, keyFile, certPem: readFileSync(certFile, 'utf8') };
}
