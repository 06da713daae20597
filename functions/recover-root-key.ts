import { quoteFor } from '../shared/attestation/public-evidence.js';
import { defineRoute } from '../shared/http/route.js';
import { parseEvidenceNonce } from '../shared/kbs/protocol.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';
import { parseShare } from '../shared/root-key/shares.js';

/**
 * PUT /rootKey/recover with {"index": n, "content": "<base64>" | "<compact JWE to the recovery key>"}:
 * one share per call (BigDL KMS's). Only while sealed; a live root key is never replaced. DELETE
 * /rootKey/recover resets progress. GET /rootKey/recover?nonce=<base64url> answers the recovery key
 * that shares travel encrypted to, with the sealing service's evidence binding it to the nonce.
 */
export const recoverRootKeyRoute = defineRoute({
  name: 'recoverRootKey',
  methods: ['GET', 'PUT', 'DELETE'],
  path: '/rootKey/recover',
  async handle(request, ctx) {
    const { sealer } = lifecycleOf(await ctx.runtime());
    if (request.method === 'GET') {
      const nonce = parseEvidenceNonce(request.param('nonce'));
      const answer = await quoteFor('recovery', request.raw, () => sealer.recoveryKey(nonce));
      return { status: 200, text: `${JSON.stringify(answer, null, 2)}\n`, json: answer, headers: { 'content-type': 'application/json' } };
    }
    if (request.method === 'DELETE') {
      const progress = await sealer.resetRecovery();
      const text = progress.sealed ? 'recovery progress reset: send the shares again\n' : 'nothing to reset: tee-kms is not sealed\n';
      return { status: 200, text, json: progress };
    }
    const progress = await sealer.submitShare(parseShare(await request.json()));
    const text = progress.sealed
      ? `share accepted: ${progress.progress} of ${progress.t} received\n`
      : `root key recovered: tee-kms is unsealed (root key ${progress.rootKeyId ?? ''})\n`;
    return { status: 200, text, json: progress };
  },
});

export const recoverRootKey = recoverRootKeyRoute.handler; // functions-framework: --target=recoverRootKey
