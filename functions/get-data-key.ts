import { defineRoute } from '../shared/http/route.js';
import { authenticate, dataKeyNames } from '../shared/http/authenticate.js';

/** GET /dataKey/{dataKeyName}?primaryKeyName=…&user=…&token=…: the data key's plaintext, base64. */
export const getDataKeyRoute = defineRoute({
  name: 'getDataKey',
  methods: ['GET'],
  path: '/dataKey/',
  warmUp: (ctx) => ctx.warmUp(),
  async handle(request, ctx) {
    const { name, primaryKeyName } = dataKeyNames(request);
    const { keys, principal } = await authenticate(request, ctx);
    const key = (await keys.getDataKey(principal, primaryKeyName, name)).toString('base64');
    return { status: 200, text: `${key}\n`, json: { user: principal.user, primaryKey: primaryKeyName, dataKey: name, key } };
  },
});

export const getDataKey = getDataKeyRoute.handler; // functions-framework: --target=getDataKey
