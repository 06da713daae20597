import { createHmac } from 'node:crypto';

/**
 * A root key's public identifier, derived from the key itself: HMAC-SHA256(key, label), first 16
 * bytes, hex. It doubles as a key check value: a key rebuilt from shares is the right one exactly
 * when its id matches (a wrong key matches with probability 2^-128). It reveals nothing of the key.
 */
export function rootKeyId(key: Uint8Array): string {
  return createHmac('sha256', key).update('tee-kms/root-key-id/v1').digest().subarray(0, 16).toString('hex');
}

/** What every root key id is (rootKeyId's output): a stored id of any other form was not written by the KMS. */
export const ROOT_KEY_ID_PATTERN = /^[0-9a-f]{32}$/;
