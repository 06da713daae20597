import type { Route } from '../shared/http/route.js';
import { createDataKeyRoute } from './create-data-key.js';
import { createPrimaryKeyRoute } from './create-primary-key.js';
import { enrollUserRoute } from './enroll-user.js';
import { getDataKeyRoute } from './get-data-key.js';
import { recoverRootKeyRoute } from './recover-root-key.js';
import { rotateRootKeyRoute } from './rotate-root-key.js';
import { sealStatusRoute } from './seal-status.js';
import { verifyRootKeyRoute } from './verify-root-key.js';
import { welcomeRoute } from './welcome.js';

/**
 * Every function, for hosts that serve several (npm start) and for deployment checks. Each module
 * also exports its handler under the function's name, which is how functions-framework finds it
 * (`--source=dist/functions/get-data-key.js --target=getDataKey`): the modules do not import
 * functions-framework, so the lean host does not load it.
 */
export const routes: readonly Route[] = [
  welcomeRoute,
  enrollUserRoute,
  createPrimaryKeyRoute,
  createDataKeyRoute,
  getDataKeyRoute,
  rotateRootKeyRoute,
  verifyRootKeyRoute,
  recoverRootKeyRoute,
  sealStatusRoute,
];
