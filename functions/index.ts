import type { Route } from '../shared/http/route.js';
import { createDataKey } from './create-data-key.js';
import { createPrimaryKey } from './create-primary-key.js';
import { enrollUser } from './enroll-user.js';
import { getDataKey } from './get-data-key.js';
import { recoverRootKey } from './recover-root-key.js';
import { rotateRootKey } from './rotate-root-key.js';
import { sealStatusRoute } from './seal-status.js';
import { verifyRootKey } from './verify-root-key.js';
import { welcome } from './welcome.js';

/** Every function, for hosts that serve several (npm start) and for deployment checks. */
export const routes: readonly Route[] = [
  welcome,
  enrollUser,
  createPrimaryKey,
  createDataKey,
  getDataKey,
  rotateRootKey,
  verifyRootKey,
  recoverRootKey,
  sealStatusRoute,
];
