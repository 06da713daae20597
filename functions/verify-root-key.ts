import { requireAdmin } from '../shared/http/admin-auth.js';
import { defineRoute } from '../shared/http/route.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';
import { parseShares } from '../shared/root-key/shares.js';

/**
 * POST /rootKey/verify with {"shares": [...]} (at least the threshold of the NEW shares), like
 * Vault's rekey verification: the shares are proven inside the sealing service, the rotation's
 * new root key becomes current, and every primary key is rewrapped under it before the answer.
 * Only then are the previous shares retired. With the current key's shares (no rotation pending)
 * it proves them and finishes any interrupted rewrap.
 */
export const verifyRootKeyRoute = defineRoute({
  name: 'verifyRootKey',
  methods: ['POST'],
  path: '/rootKey/verify',
  async handle(request, ctx) {
    const runtime = await ctx.runtime();
    requireAdmin(request, runtime.config.adminToken);
    const shares = parseShares(await request.jsonValue());
    const { rotation } = lifecycleOf(runtime);
    const result = await rotation.verify(shares);
    const text = result.promoted
      ? `root key shares verified: root key ${result.rootKeyId} is current and every primary key is under it (${result.rewrapped} rewrapped); the previous shares are retired\n`
      : `root key shares verified: they rebuild the current root key ${result.rootKeyId}; every primary key is under it (${result.rewrapped} rewrapped)\n`;
    return { status: 200, text, json: result };
  },
});

export const verifyRootKey = verifyRootKeyRoute.handler; // functions-framework: --target=verifyRootKey
