import { sealWith, type RecipientAgreement } from './jwe.js';

/**
 * The answer to a sealed request: its JSON as a compact JWE to the client's response key
 * (A256GCM, by ECDH-ES+A256KW or ECDH-ES as the client sealed its credential), so that only the
 * client that sealed the request reads it. The key agreement was made when the credential was
 * opened (which also proved the key usable).
 * `authenticated` goes in the protected header, which AES-GCM authenticates as its AAD: values the
 * route also answers as headers, which travel outside the seal (`kms-…` parameters only).
 */
export function sealAnswer(json: unknown, responseKey: RecipientAgreement, authenticated: Readonly<Record<`kms-${string}`, string>> = {}): string {
  try {
    return sealWith(responseKey, Buffer.from(JSON.stringify(json)), { ...authenticated, cty: 'json' });
  } finally {
    // One answer per request: this copy of the agreed key is not needed again.
    responseKey.key.fill(0);
  }
}
