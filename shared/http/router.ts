import { KmsError } from '../errors.js';
import { metricsHooks } from '../metrics/hooks.js';
import { connectRefused } from './connect.js';
import { KmsRequest } from './request.js';
import type { RouteContext } from '../runtime.js';
import { errorResult, sendResult, withinConnectionBudget, type Handler, type Route } from './route.js';
import { rootKeyReadiness } from '../root-key/readiness.js';

/**
 * Routes each request to the function that serves its path and method: the same handlers that run
 * alone under functions-framework, so no route has a second implementation.
 */
export const HEALTH_PATH = '/healthz';
/** Readiness: 200 once the root key can be obtained (or the sealing service answers that it is sealed), else 503. */
export const READY_PATH = '/readyz';

export function routeRequests(routes: readonly Route[], ctx: RouteContext): Handler {
  const handlers = new Map(routes.map((route) => [route, route.handlerFor(ctx)]));
  return async (req, res) => {
    const started = process.hrtime.bigint();
    const request = KmsRequest.of(req);
    const refuse = (error: KmsError) => {
      const result = errorResult(error, 'router');
      sendResult(res, result, request.wantsJson);
      metricsHooks.request('router', result.status, Number(process.hrtime.bigint() - started) / 1e9);
    };
    // A CONNECT's target is a host (answerConnect, host.ts), never a path here.
    if (request.method === 'CONNECT') return refuse(connectRefused());
    if (request.pathname === HEALTH_PATH) {
      // Liveness: the process serves HTTP. Cheap; says nothing of storage or keys.
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 3 });
      res.end('ok\n');
      return;
    }
    if (request.pathname === READY_PATH) {
      // It may wait for the root key: pipelined without reading, it would hold memory without bound.
      return withinConnectionBudget(req, res, undefined, async () => {
        const readiness = await rootKeyReadiness(ctx);
        const body = JSON.stringify(readiness);
        res.writeHead(readiness.ready ? 200 : 503, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'cache-control': 'no-store',
        });
        res.end(body);
      });
    }
    const onPath = routes.filter((route) => route.matches(request.pathname));
    const route = onPath.find((r) => r.methods.includes(request.method));
    if (route !== undefined) return handlers.get(route)!(req, res);
    const allow = [...new Set(onPath.flatMap((r) => r.methods))].join(', ');
    refuse(
      onPath.length === 0
        ? new KmsError('NOT_FOUND', 'no such route; GET / lists the routes')
        : new KmsError('METHOD_NOT_ALLOWED', `${request.method} is not allowed here; use ${allow}`, { details: { allow } }),
    );
  };
}
