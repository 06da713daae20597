import type { Route } from '../shared/http/route.js';
import { loadRoutes } from './catalog.js';

/** Every function (functions/catalog.ts), for hosts that serve several (npm start) and for deployment checks. */
export const routes: readonly Route[] = await loadRoutes();

// package.json's `main`: every function's handler under its name, as functions-framework finds it
// (`npx functions-framework --target=getDataKey`, FUNCTION_TARGET, buildpacks' GOOGLE_FUNCTION_TARGET).
// A test checks that this list and functions/catalog.ts name the same functions.
export { welcome } from './welcome.js';
export { enrollUser } from './enroll-user.js';
export { createPrimaryKey } from './create-primary-key.js';
export { createDataKey } from './create-data-key.js';
export { getDataKey } from './get-data-key.js';
export { rotateRootKey } from './rotate-root-key.js';
export { verifyRootKey } from './verify-root-key.js';
export { recoverRootKey } from './recover-root-key.js';
export { sealStatus } from './seal-status.js';
export { attestation } from './attestation.js';
