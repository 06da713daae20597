import { CompactEncrypt } from 'jose/jwe/compact/encrypt';
import type { KeyObject } from 'node:crypto';
import type { CryptoKey } from 'jose';

/**
 * The answer to a sealed request: its JSON as a compact JWE to the client's response key
 * (ECDH-ES+A256KW, A256GCM), so that only the client that sealed the request reads it.
 */
export function sealAnswer(json: unknown, responseKey: CryptoKey | KeyObject): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(JSON.stringify(json)))
    .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', cty: 'json' })
    .encrypt(responseKey);
}
