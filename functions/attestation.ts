import { quoteFor } from '../shared/attestation/public-evidence.js';
import { defineRoute } from '../shared/http/route.js';
import { parseEvidenceNonce } from '../shared/kbs/protocol.js';
import { serviceKeyReportData } from '../shared/sealed/binding.js';
import { serviceKeyOf } from '../shared/sealed/service-key.js';

/**
 * GET /attestation?nonce=<base64url, 16-64 bytes>: the service key clients seal requests to, with
 * this TD's evidence binding it to the client's nonce (docs/sealed-channel.md). Public: it is what
 * a client checks before it sends any secret.
 */
export const attestationRoute = defineRoute({
  name: 'attestation',
  methods: ['GET'],
  path: '/attestation',
  warmUp: (ctx) => ctx.warmUp(),
  async handle(request, ctx) {
    const nonce = parseEvidenceNonce(request.param('nonce'));
    const [{ rootKeys }, attester] = await Promise.all([ctx.keys(), ctx.attester()]);
    const rootKey = await rootKeys.current();
    const serviceKey = serviceKeyOf(rootKey).publicJwk;
    const evidence = await quoteFor('attestation', request.raw, () => attester.getEvidence(serviceKeyReportData(nonce, serviceKey)));
    const answer = { serviceKey, rootKeyId: rootKey.id, tee: attester.tee, evidence };
    return { status: 200, text: `${JSON.stringify(answer, null, 2)}\n`, json: answer, headers: { 'content-type': 'application/json' } };
  },
});

export const attestation = attestationRoute.handler; // functions-framework: --target=attestation
