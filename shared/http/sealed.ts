import { KmsError } from '../errors.js';
import type { RouteContext } from '../runtime.js';
import type { SealedKeyCaches } from '../sealed/key-cache.js';
import type { ReplayGuard } from '../sealed/replay.js';
import { authorizationHeader } from './bearer.js';
import type { KmsRequest } from './request.js';

/** This process's memory of sealed credentials already used; made with the first sealed request. */
let replay: ReplayGuard | undefined;
/** Keys agreed with sealing clients, for the current service key only. */
let caches: SealedKeyCaches | undefined;
/** The JWE code, loaded with the first sealed request (a dynamic import per request costs a module lookup). */
let modules: Promise<Awaited<ReturnType<typeof loadModules>>> | undefined;

function loadModules() {
  return Promise.all([import('../sealed/credential.js'), import('../sealed/replay.js'), import('../sealed/service-key.js'), import('../sealed/key-cache.js')]);
}

/**
 * Opens an `Authorization: Sealed` credential before the route runs (docs/sealed-channel.md), or,
 * under KMS_REQUIRE_SEALED, refuses credentials sent in the clear. A refusal here answers in plain
 * JSON: the client's response key is not trusted until its credential is. The JWE code is loaded
 * only for a sealed request, so plaintext requests and cold starts do not pay for it.
 */
export async function openSealedRequest(request: KmsRequest, ctx: RouteContext): Promise<void> {
  const jwe = sealedJwe(request.raw.headers.authorization);
  const { config, rootKeys } = await ctx.keys();
  if (jwe === undefined) {
    if (config.requireSealed && request.hasClearCredentials()) {
      throw new KmsError(
        'UNAUTHORIZED',
        'this KMS takes credentials only sealed (KMS_REQUIRE_SEALED): send them as Authorization: Sealed <JWE to the service key of GET /attestation>, never in the query or a Bearer header',
      );
    }
    return;
  }
  if (typeof authorizationHeader(request.raw) === 'object') throw new KmsError('BAD_REQUEST', 'give the Authorization header once');
  const [{ openSealedCredential, sealedKeyId }, { ReplayGuard }, { serviceKeyOf }, { sealedKeyCaches }] = await (modules ??= loadModules());
  const kid = sealedKeyId(jwe);
  const current = await rootKeys.current();
  if (kid !== current.id) {
    throw new KmsError(
      'SERVICE_KEY_CHANGED',
      'the credential is sealed to a service key this KMS no longer uses (the root key was rotated): attest again (GET /attestation) and seal to the new key',
      { details: { rootKeyId: current.id } },
    );
  }
  if (caches?.rootKeyId !== current.id) {
    // Never shared across service keys: a rotation zeroes what was agreed under the old one.
    caches?.requests.close();
    caches?.answers.close();
    caches = sealedKeyCaches(current.id, config.sealedKeyReuseSeconds);
  }
  // The body has arrived whole already (the route awaited it); a credential may bind it (htb).
  const body = await request.received();
  const bound = { method: request.method, target: request.target, body };
  request.useSealed(
    openSealedCredential(jwe, serviceKeyOf(current).privateKey, bound, (replay ??= new ReplayGuard(config.sealedReplayEntries)), Date.now(), caches),
  );
}

/**
 * The compact JWE of an `Authorization: Sealed <jwe>` header ('' when the scheme is Sealed but no
 * single token follows); undefined for any other scheme.
 */
export function sealedJwe(header: string | undefined): string | undefined {
  if (header === undefined || !/^[ \t]*sealed(?:[ \t]|$)/i.test(header)) return undefined;
  return SEALED.exec(header)?.[1] ?? '';
}

const SEALED = /^[ \t]*sealed +(\S+)[ \t]*$/i;

/**
 * The values of a route's sealed headers that its answer carries, as the protected header
 * parameters of a sealed answer: `x-kms-root-key-id: …` becomes `"kms-root-key-id": "…"`.
 */
export function authenticatedHeaders(
  headers: Readonly<Record<string, string>> | undefined,
  names: readonly `x-kms-${string}`[],
): Record<`kms-${string}`, string> {
  const parameters: Record<`kms-${string}`, string> = {};
  for (const name of names) {
    const value = headers?.[name];
    if (value !== undefined) parameters[name.slice('x-'.length) as `kms-${string}`] = value;
  }
  return parameters;
}
