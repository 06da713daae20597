import { defineRoute } from '../shared/http/route.js';
import { sealStatus as readSealStatus } from '../shared/root-key/status.js';
import { kmsRuntime } from '../shared/runtime.js';

/** GET /rootKey/status: like Vault's sys/seal-status, plus an unfinished rotation. Nothing secret. */
export const sealStatusRoute = defineRoute({
  name: 'sealStatus',
  methods: ['GET'],
  path: '/rootKey/status',
  async handle() {
    const status = await readSealStatus(await kmsRuntime());
    return { status: 200, text: `${JSON.stringify(status, null, 2)}\n`, json: status };
  },
});

export const sealStatus = sealStatusRoute.handler; // functions-framework: --target=sealStatus
