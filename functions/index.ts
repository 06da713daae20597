import type { Route } from '../shared/http/route.js';
import { loadRoutes } from './catalog.js';

/** Every function (functions/catalog.ts), for hosts that serve several (npm start) and for deployment checks. */
export const routes: readonly Route[] = await loadRoutes();
