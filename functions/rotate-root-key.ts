import { isCompactJwe, parseCustodianKeys, readCustodianKeysFile } from '../shared/custody/share-jwe.js';
import { isKmsError, KmsError } from '../shared/errors.js';
import { requireAdmin } from '../shared/http/admin-auth.js';
import type { KmsRequest } from '../shared/http/request.js';
import { defineRoute } from '../shared/http/route.js';
import { lifecycleOf } from '../shared/root-key/lifecycle.js';
import { parseShares } from '../shared/root-key/shares.js';
import type { Share } from '../shared/sealer-client/protocol.js';

/**
 * GET|POST /rootKey/rotate: a new root key, split into Shamir shares (BigDL KMS's JSON shape).
 * The first call initializes an uninitialized sealing service (like `vault operator init`): that
 * key is current at once. Every later one needs `Authorization: Bearer <KMS_ADMIN_TOKEN>`, and its
 * key stays pending until POST /rootKey/verify proves the new shares; until then the current key
 * and its shares stay in use (GET /rootKey/status shows the pending key's id).
 *
 * Shares leave the sealing service encrypted to their custodians (docs/custodians.md): POST
 * {"custodians": [JWK, …]}, one public key per share, else KMS_CUSTODIAN_KEYS_FILE, else the keys
 * stored with the current root key; each share's content is then a compact JWE to its custodian.
 * Under KMS_REQUIRE_SEALED a rotate that is not sealed must name custodians. A sealed answer carries
 * the X-KMS-* headers authenticated too (docs/sealed-channel.md).
 */
export const rotateRootKeyRoute = defineRoute({
  name: 'rotateRootKey',
  methods: ['GET', 'POST'],
  path: '/rootKey/rotate',
  // What an operator acts on (a pending key must be verified): authenticated in a sealed answer.
  sealedHeaders: ['x-kms-root-key-id', 'x-kms-root-key-state', 'x-kms-shares-encrypted'],
  async handle(request, ctx) {
    const runtime = await ctx.runtime();
    const { sealer, rotation } = lifecycleOf(runtime);
    const status = await sealer.sealStatus();
    if (status.initialized) requireAdmin(request, runtime.config.adminToken);
    const custody = await custodyOf(request, runtime.config);
    // Only the first rotate can come unsealed (no service key exists before a root key does): under
    // KMS_REQUIRE_SEALED its shares must not cross the ingress in plaintext.
    if (runtime.config.requireSealed && request.sealed === undefined && custody.custodians === undefined) {
      throw new KmsError(
        'BAD_REQUEST',
        'this KMS takes credentials only sealed (KMS_REQUIRE_SEALED), and a rotate that is not sealed would answer the shares in plaintext to whoever relays it: give the custodians\' public keys, one per share (POST {"custodians": [JWK, …]} or KMS_CUSTODIAN_KEYS_FILE); nothing was changed',
      );
    }
    const result = await rotation.rotate({ initialized: status.initialized }, custody);
    const body = JSON.stringify(result.shares, null, 2);
    return {
      status: 200,
      text: `${body}\n`,
      json: result.shares,
      headers: {
        'x-kms-shares-encrypted': result.shares.every((share) => isCompactJwe(share.content)) ? 'custodians' : 'no',
        'x-kms-root-key-id': result.rootKeyId,
        'x-kms-root-key-state': result.pending ? 'pending-verification' : 'current',
        'content-type': 'application/json',
      },
    };
  },
});

/**
 * The custodians' public keys for this rotation (parsed here as the sealing service parses them) and,
 * to name others than the stored ones, the threshold of the current shares.
 */
async function custodyOf(
  request: KmsRequest,
  config: { custodianKeysFile: string; shares: number },
): Promise<{ custodians?: readonly unknown[]; currentShares?: readonly Share[] }> {
  const body = request.received();
  if (body !== undefined && (await body).length > 0) {
    const value = await request.jsonValue();
    const { custodians, shares } = (value ?? {}) as { custodians?: unknown; shares?: unknown };
    if (typeof value !== 'object' || value === null || Array.isArray(value) || !Array.isArray(custodians)) {
      throw new KmsError('BAD_REQUEST', 'the body, when given, must be {"custodians": [<public JWK>, …], "shares"?: [current shares]}: one key per share');
    }
    // Checked here as the sealing service checks them, and passed on as parsed: a body the sealing
    // service would refuse is a 400 here, never a failed call to it.
    const keys = parseCustodianKeys(custodians).map(({ kty, crv, x, y }) => ({ kty, crv, x, y }));
    return { custodians: keys, ...(shares === undefined ? {} : { currentShares: parseShares(shares) }) };
  }
  if (config.custodianKeysFile === '') return {};
  // Read again at every rotate (operators may replace the file; npm start checked it at start): a
  // file gone bad since is the server's configuration, answered 500 CONFIG, saying what to do.
  let keys: Awaited<ReturnType<typeof readCustodianKeysFile>>;
  try {
    keys = await readCustodianKeysFile(config.custodianKeysFile, config.shares);
  } catch (error) {
    if (!isKmsError(error, 'CONFIG')) throw error;
    throw new KmsError('CONFIG', `${error.message}. Nothing was changed; or give the custodians' keys in the body ({"custodians": [JWK, …]})`, {
      cause: error,
    });
  }
  return { custodians: keys.map(({ kty, crv, x, y }) => ({ kty, crv, x, y })) };
}

export const rotateRootKey = rotateRootKeyRoute.handler; // functions-framework: --target=rotateRootKey
