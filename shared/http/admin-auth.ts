import { createHash, timingSafeEqual } from 'node:crypto';
import { KmsError } from '../errors.js';
import type { KmsRequest } from './request.js';

/**
 * Operator authentication for root key operations: `Authorization: Bearer <KMS_ADMIN_TOKEN>` or the
 * token of a sealed credential,
 * compared in constant time (digests first, so lengths do not leak either).
 */
export function requireAdmin(request: KmsRequest, adminToken: string): void {
  if (adminToken === '') {
    throw new KmsError('FORBIDDEN', 'root key operations are disabled: configure KMS_ADMIN_TOKEN (or KMS_ADMIN_TOKEN_FILE)');
  }
  const token = request.adminToken();
  if (token === null) throw new KmsError('UNAUTHORIZED', 'operator credentials required: Authorization: Bearer <admin token>');
  const digest = (value: string) => createHash('sha256').update(value).digest();
  if (!timingSafeEqual(digest(token), digest(adminToken))) throw new KmsError('UNAUTHORIZED', 'wrong admin token');
}
