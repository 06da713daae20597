import { defineRoute } from '../shared/http/route.js';
import { authenticate, dataKeyNames } from '../shared/http/authenticate.js';

/** POST /dataKey/{dataKeyName}?primaryKeyName=…&user=…&token=…: a new AES-256 data key under a primary key. */
export const createDataKeyRoute = defineRoute({
  name: 'createDataKey',
  methods: ['POST'],
  path: '/dataKey/',
  warmUp: (ctx) => ctx.warmUp(),
  async handle(request, ctx) {
    const { name, primaryKeyName } = dataKeyNames(request);
    const { keys, principal } = await authenticate(request, ctx);
    await keys.createDataKey(principal, primaryKeyName, name);
    return {
      status: 201,
      text: `dataKey [${name}] is generated successfully!\n`,
      json: { user: principal.user, primaryKey: primaryKeyName, dataKey: name, created: true },
    };
  },
});

export const createDataKey = createDataKeyRoute.handler; // functions-framework: --target=createDataKey
