import { defineRoute } from '../shared/http/route.js';
import { sealStatus as readSealStatus } from '../shared/root-key/status.js';

/** GET /rootKey/status: like Vault's sys/seal-status, plus an unfinished rotation. Nothing secret. */
export const sealStatusRoute = defineRoute({
  name: 'sealStatus',
  methods: ['GET'],
  path: '/rootKey/status',
  async handle(_request, ctx) {
    const status = await readSealStatus(await ctx.runtime());
    // JSON either way (the text form is indented), so it is labelled JSON either way.
    return { status: 200, text: `${JSON.stringify(status, null, 2)}\n`, json: status, headers: { 'content-type': 'application/json' } };
  },
});

export const sealStatus = sealStatusRoute.handler; // functions-framework: --target=sealStatus
