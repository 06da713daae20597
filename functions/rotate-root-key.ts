import { KmsError } from '../shared/errors.js';
import { requireAdmin } from '../shared/http/admin-auth.js';
import { defineRoute } from '../shared/http/route.js';
import { log } from '../shared/log.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';
import { kmsRuntime } from '../shared/runtime.js';

/**
 * GET|POST /rootKey/rotate: a new root key, split into Shamir shares (BigDL KMS's JSON shape).
 * The first call initializes an uninitialized sealing service (like `vault operator init`);
 * every later one needs `Authorization: Bearer <KMS_ADMIN_TOKEN>`. The answer comes as soon as
 * the new key is installed; primary keys are rewrapped after it (GET /rootKey/status shows it).
 * Until the new shares are verified (POST /rootKey/verify), the previous shares still recover.
 */
export const rotateRootKeyRoute = defineRoute({
  name: 'rotateRootKey',
  methods: ['GET', 'POST'],
  path: '/rootKey/rotate',
  async handle(request) {
    const runtime = await kmsRuntime();
    const { sealer, rotation } = lifecycleOf(runtime);
    const status = await sealer.sealStatus();
    if (status.initialized) requireAdmin(request, runtime.config.adminToken);
    const result = await rotation.rotate({ initialized: status.initialized });
    result.rewrap.catch((error: unknown) => {
      const why = error instanceof KmsError ? error.message : 'unexpected error';
      log.warn('rotateRootKey', `rewrap interrupted (${why}); POST /rootKey/verify or the next rotate resumes it`);
    });
    const body = JSON.stringify(result.shares, null, 2);
    return {
      status: 200,
      text: `${body}\n`,
      json: result.shares,
      headers: { 'x-kms-root-key-id': result.rootKeyId, 'content-type': 'application/json' },
    };
  },
});

export const rotateRootKey = rotateRootKeyRoute.handler; // functions-framework: --target=rotateRootKey
