import * as functions from '@google-cloud/functions-framework';
import { defineRoute } from '../shared/http/route.js';

const WELCOME = `welcome to tee-kms, a BigDL-KMS-compatible key management service for confidential computing

create a user like: POST /user/{userName}?token=a_token_string_for_the_user

get a primary key like: POST /primaryKey/{primaryKeyName}?user=your_username&&token=your_token

get a data key like: POST /dataKey/{dataKeyName}?primaryKeyName=the_primary_key_name&&user=your_username&&token=your_token

get the data key like: GET /dataKey/{dataKeyName}?primaryKeyName=the_primary_key_name&&user=your_username&&token=your_token

credentials may also be sent as headers: Authorization: Bearer your_token and X-KMS-User: your_username
`;

/** GET /: readiness, and the routes in the seed's words. */
export const welcome = defineRoute({
  name: 'welcome',
  methods: ['GET', 'HEAD'],
  path: '/',
  async handle() {
    return { status: 200, text: WELCOME, json: { service: 'tee-kms', routes: ROUTES } };
  },
});

const ROUTES = [
  'POST /user/{userName}',
  'POST /primaryKey/{primaryKeyName}',
  'POST /dataKey/{dataKeyName}',
  'GET /dataKey/{dataKeyName}',
];

functions.http(welcome.name, welcome.handler);
