/**
 * A CA bundle as TLS will load it: PEM certificates only, each BEGIN and END marker on a line of
 * its own. OpenSSL skips a block whose marker is indented or shares a line with the previous END,
 * so a laxer check would accept a bundle that trusts nothing (or less than it shows). (The DCAP
 * verifier's parsePemBundle reads certificate chains itself, so it may be lax; this one may not.)
 */
import { X509Certificate } from 'node:crypto';

/** What pemBundle accepts, for messages. */
export const PEM_CERTIFICATES = 'PEM certificates (BEGIN CERTIFICATE), one or more, each marker on a line of its own, and nothing else';

const BUNDLE = /^(?:-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/=]+\n)+-----END CERTIFICATE-----(?:\n+|$))+$/;
const BLOCK = /-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----/g;

/**
 * `text` as a bundle of certificates, with LF line ends and no trailing white space, or undefined
 * if it is anything else (a certificate that does not parse included).
 */
export function pemBundle(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined;
  const bundle = text.replace(/\r\n/g, '\n').trimEnd();
  if (!BUNDLE.test(bundle)) return undefined;
  try {
    for (const [block] of bundle.matchAll(BLOCK)) new X509Certificate(block);
  } catch {
    return undefined;
  }
  return bundle;
}
