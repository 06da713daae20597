import type { Route } from '../shared/http/route.js';

/**
 * Every function's module, by function name, imported on demand: a host that serves one function
 * (FUNCTION_TARGET) imports only that one's module, which shortens its cold start. Each module also
 * exports its handler under the function's name, which is how functions-framework finds it
 * (`--source=dist/functions/get-data-key.js --target=getDataKey`); the modules do not import
 * functions-framework, so the lean host does not load it.
 */
export const routeModules: Readonly<Record<string, () => Promise<Route>>> = {
  welcome: async () => (await import('./welcome.js')).welcomeRoute,
  enrollUser: async () => (await import('./enroll-user.js')).enrollUserRoute,
  createPrimaryKey: async () => (await import('./create-primary-key.js')).createPrimaryKeyRoute,
  createDataKey: async () => (await import('./create-data-key.js')).createDataKeyRoute,
  getDataKey: async () => (await import('./get-data-key.js')).getDataKeyRoute,
  rotateRootKey: async () => (await import('./rotate-root-key.js')).rotateRootKeyRoute,
  verifyRootKey: async () => (await import('./verify-root-key.js')).verifyRootKeyRoute,
  recoverRootKey: async () => (await import('./recover-root-key.js')).recoverRootKeyRoute,
  sealStatus: async () => (await import('./seal-status.js')).sealStatusRoute,
  attestation: async () => (await import('./attestation.js')).attestationRoute,
};

/** The routes a host serves: the one FUNCTION_TARGET names, else every one (startHost rejects an unknown name). */
export async function loadRoutes(functionTarget = ''): Promise<readonly Route[]> {
  if (Object.hasOwn(routeModules, functionTarget)) return [await routeModules[functionTarget]!()];
  return Promise.all(Object.values(routeModules).map((load) => load()));
}
