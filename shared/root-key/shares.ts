import { isCompactJwe } from '../custody/share-jwe.js';
import { KmsError } from '../errors.js';
import type { Share } from '../sealer-client/protocol.js';

/**
 * A share as BigDL KMS sends it, `{"index": n, "content": "<base64>"}`, or with its content a
 * compact JWE to the sealing service's recovery key. The sealer checks (and opens) it fully.
 */
export function parseShare(value: unknown): Share {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KmsError('BAD_REQUEST', 'a share is a JSON object {"index": <1-255>, "content": "<base64>"}');
  }
  const { index, content } = value as Record<string, unknown>;
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 1 || index > 255) {
    throw new KmsError('BAD_REQUEST', 'share index must be a whole number from 1 to 255');
  }
  if (typeof content === 'string' && content.length <= 8192 && isCompactJwe(content)) return { index, content };
  if (typeof content !== 'string' || content.length > 128 || !/^[A-Za-z0-9+/]+={0,2}$/.test(content)) {
    throw new KmsError('BAD_REQUEST', 'share content must be base64, or a compact JWE to the recovery key (GET /rootKey/recover?nonce=…)');
  }
  return { index, content };
}

/** `{"shares": [...]}` or a bare array (the shape rotate answers with). */
export function parseShares(body: unknown): Share[] {
  const list = Array.isArray(body) ? body : (body as { shares?: unknown } | null)?.shares;
  if (!Array.isArray(list) || list.length === 0 || list.length > 255) {
    throw new KmsError('BAD_REQUEST', 'send the shares as {"shares": [{"index": n, "content": "<base64>"}, …]}');
  }
  return list.map(parseShare);
}
