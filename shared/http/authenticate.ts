import type { KeyStore, Principal } from '../keys/keystore.js';
import type { RouteContext } from '../runtime.js';
import type { KmsRequest } from './request.js';

/** The caller's credentials (query or headers), checked against their enrollment. */
export async function authenticate(request: KmsRequest, ctx: RouteContext): Promise<{ keys: KeyStore; principal: Principal }> {
  const { user, token } = request.credentials();
  const { keys } = await ctx.keys();
  return { keys, principal: await keys.authenticate(user, token) };
}

/** `/dataKey/{dataKeyName}?primaryKeyName=…`: the data key routes' names, validated. */
export function dataKeyNames(request: KmsRequest): { name: string; primaryKeyName: string } {
  return { name: request.pathName('/dataKey/', 'dataKeyName'), primaryKeyName: request.name('primaryKeyName') };
}
