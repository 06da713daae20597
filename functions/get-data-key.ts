import * as functions from '@google-cloud/functions-framework';
import { defineRoute } from '../shared/http/route.js';
import { kmsRuntime } from '../shared/runtime.js';

/** GET /dataKey/{dataKeyName}?primaryKeyName=…&user=…&token=…: the data key's plaintext, base64. */
export const getDataKey = defineRoute({
  name: 'getDataKey',
  methods: ['GET'],
  path: '/dataKey/',
  async handle(request) {
    const name = request.pathName('/dataKey/', 'dataKeyName');
    const primaryKeyName = request.name('primaryKeyName');
    const { user, token } = request.credentials();
    const { keys } = await kmsRuntime();
    const key = (await keys.getDataKey(await keys.authenticate(user, token), primaryKeyName, name)).toString('base64');
    return { status: 200, text: `${key}\n`, json: { user, primaryKey: primaryKeyName, dataKey: name, key } };
  },
});

functions.http(getDataKey.name, getDataKey.handler);
