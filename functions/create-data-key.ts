import * as functions from '@google-cloud/functions-framework';
import { defineRoute } from '../shared/http/route.js';
import { kmsRuntime } from '../shared/runtime.js';

/** POST /dataKey/{dataKeyName}?primaryKeyName=…&user=…&token=…: a new AES-256 data key under a primary key. */
export const createDataKey = defineRoute({
  name: 'createDataKey',
  methods: ['POST'],
  path: '/dataKey/',
  async handle(request) {
    const name = request.pathName('/dataKey/', 'dataKeyName');
    const primaryKeyName = request.name('primaryKeyName');
    const { user, token } = request.credentials();
    const { keys } = await kmsRuntime();
    await keys.createDataKey(await keys.authenticate(user, token), primaryKeyName, name);
    return {
      status: 201,
      text: `dataKey [${name}] is generated successfully!\n`,
      json: { user, primaryKey: primaryKeyName, dataKey: name, created: true },
    };
  },
});

functions.http(createDataKey.name, createDataKey.handler);
