/**
 * knative/install.sh's collateral source for a --tee tdx install: the pccs_env lists of the
 * sealer's and of the functions' init-data, from --pccs-url and --pccs-ca, the CA checked as the
 * pods check it (shared/crypto/pem-bundle.ts) and listed as they will read it (LF line ends, no
 * trailing white space).
 *
 *   node dist/scripts/pccs-env.js <pccs-url> [<pccs-ca-file>]
 *
 * Exit status 0: two lines, the sealer's [[NAME, VALUE], ...] (KMS_SEALER_PCCS_URL, and
 * KMS_SEALER_PCCS_CA with a CA) and the functions' (KMS_TRUSTED_SEALER_PCCS_*), as JSON. 1: the
 * CA file is refused, the reason on stderr. 2: usage. The URL is install.sh's to check.
 */
import { readFileSync } from 'node:fs';
import { PEM_CERTIFICATES, pemBundle } from '../shared/crypto/pem-bundle.js';

const [url, caFile, ...rest] = process.argv.slice(2);
if (url === undefined || url === '' || rest.length > 0) {
  process.stderr.write('usage: pccs-env <pccs-url> [<pccs-ca-file>]\n');
  process.exit(2);
}

let ca: string | undefined;
if (caFile !== undefined && caFile !== '') {
  let text: string;
  try {
    text = readFileSync(caFile, 'utf8');
  } catch {
    process.stderr.write(`--pccs-ca ${caFile}: no such readable file\n`);
    process.exit(1);
  }
  ca = pemBundle(text);
  if (ca === undefined) {
    process.stderr.write(`--pccs-ca ${caFile}: must be ${PEM_CERTIFICATES}\n`);
    process.exit(1);
  }
}
for (const prefix of ['KMS_SEALER_PCCS_', 'KMS_TRUSTED_SEALER_PCCS_'])
  process.stdout.write(`${JSON.stringify([[`${prefix}URL`, url], ...(ca === undefined ? [] : [[`${prefix}CA`, ca]])])}\n`);
