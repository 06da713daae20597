import { requireAdmin } from '../shared/http/admin-auth.js';
import { defineRoute } from '../shared/http/route.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';
import { parseShares } from '../shared/root-key/shares.js';
import { kmsRuntime } from '../shared/runtime.js';

/**
 * POST /rootKey/verify with {"shares": [...]} (at least the threshold of the NEW shares), like
 * Vault's rekey verification: finishes rewrapping every primary key under the new root key, then
 * proves the shares rebuild it. Only then do the previous shares stop recovering.
 */
export const verifyRootKeyRoute = defineRoute({
  name: 'verifyRootKey',
  methods: ['POST'],
  path: '/rootKey/verify',
  async handle(request) {
    const runtime = await kmsRuntime();
    requireAdmin(request, runtime.config.adminToken);
    const shares = parseShares(await request.jsonValue());
    const { sealer, rotation } = lifecycleOf(runtime);
    const rewrapped = await rotation.finishRewrap();
    const { rootKeyId } = await sealer.verifyShares(shares);
    return {
      status: 200,
      text: `root key shares verified: every primary key is under root key ${rootKeyId}; the previous shares no longer recover\n`,
      json: { verified: true, rootKeyId, rewrapped },
    };
  },
});

export const verifyRootKey = verifyRootKeyRoute.handler; // functions-framework: --target=verifyRootKey
