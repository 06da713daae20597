import { requireAdmin } from '../shared/http/admin-auth.js';
import { defineRoute } from '../shared/http/route.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';

/**
 * GET|POST /rootKey/rotate: a new root key, split into Shamir shares (BigDL KMS's JSON shape).
 * The first call initializes an uninitialized sealing service (like `vault operator init`): that
 * key is current at once. Every later one needs `Authorization: Bearer <KMS_ADMIN_TOKEN>`, and its
 * key stays pending until POST /rootKey/verify proves the new shares; until then the current key
 * and its shares stay in use (GET /rootKey/status shows the pending key's id).
 */
export const rotateRootKeyRoute = defineRoute({
  name: 'rotateRootKey',
  methods: ['GET', 'POST'],
  path: '/rootKey/rotate',
  async handle(request, ctx) {
    const runtime = await ctx.runtime();
    const { sealer, rotation } = lifecycleOf(runtime);
    const status = await sealer.sealStatus();
    if (status.initialized) requireAdmin(request, runtime.config.adminToken);
    const result = await rotation.rotate({ initialized: status.initialized });
    const body = JSON.stringify(result.shares, null, 2);
    return {
      status: 200,
      text: `${body}\n`,
      json: result.shares,
      headers: {
        'x-kms-root-key-id': result.rootKeyId,
        'x-kms-root-key-state': result.pending ? 'pending-verification' : 'current',
        'content-type': 'application/json',
      },
    };
  },
});

export const rotateRootKey = rotateRootKeyRoute.handler; // functions-framework: --target=rotateRootKey
