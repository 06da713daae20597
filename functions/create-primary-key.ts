import * as functions from '@google-cloud/functions-framework';
import { defineRoute } from '../shared/http/route.js';
import { authenticate } from '../shared/http/authenticate.js';

/** POST /primaryKey/{primaryKeyName}?user=…&token=…: a new AES-256 primary key, wrapped by the root key. */
export const createPrimaryKey = defineRoute({
  name: 'createPrimaryKey',
  methods: ['POST'],
  path: '/primaryKey/',
  async handle(request) {
    const name = request.pathName('/primaryKey/', 'primaryKeyName');
    const { keys, principal } = await authenticate(request);
    await keys.createPrimaryKey(principal, name);
    return {
      status: 201,
      text: `primaryKey [${name}] is generated successfully!\n`,
      json: { user: principal.user, primaryKey: name, created: true },
    };
  },
});

functions.http(createPrimaryKey.name, createPrimaryKey.handler);
