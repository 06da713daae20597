import { defineRoute } from '../shared/http/route.js';
import { authenticate } from '../shared/http/authenticate.js';

/** POST /primaryKey/{primaryKeyName}?user=…&token=…: a new AES-256 primary key, wrapped by the root key. */
export const createPrimaryKeyRoute = defineRoute({
  name: 'createPrimaryKey',
  methods: ['POST'],
  path: '/primaryKey/',
  warmUp: (ctx) => ctx.warmUp(),
  async handle(request, ctx) {
    const name = request.pathName('/primaryKey/', 'primaryKeyName');
    const { keys, principal } = await authenticate(request, ctx);
    await keys.createPrimaryKey(principal, name);
    return {
      status: 201,
      text: `primaryKey [${name}] is generated successfully!\n`,
      json: { user: principal.user, primaryKey: name, created: true },
    };
  },
});

export const createPrimaryKey = createPrimaryKeyRoute.handler; // functions-framework: --target=createPrimaryKey
