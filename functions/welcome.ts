import { KmsError } from '../shared/errors.js';
import { defineRoute } from '../shared/http/route.js';
import { sealStatus, type KmsSealStatus } from '../shared/root-key/status.js';

const WELCOME = `welcome to tee-kms, a BigDL-KMS-compatible key management service for confidential computing

create a user like: POST /user/{userName}?token=a_token_string_for_the_user

get a primary key like: POST /primaryKey/{primaryKeyName}?user=your_username&&token=your_token

get a data key like: POST /dataKey/{dataKeyName}?primaryKeyName=the_primary_key_name&&user=your_username&&token=your_token

get the data key like: GET /dataKey/{dataKeyName}?primaryKeyName=the_primary_key_name&&user=your_username&&token=your_token

credentials may also be sent as headers: Authorization: Bearer your_token and X-KMS-User: your_username

root key: GET /rootKey/rotate (save the shares), PUT /rootKey/recover {"index":n,"content":"..."}, POST /rootKey/verify, GET /rootKey/status
`;

const ROUTES = [
  'POST /user/{userName}',
  'POST /primaryKey/{primaryKeyName}',
  'POST /dataKey/{dataKeyName}',
  'GET /dataKey/{dataKeyName}',
  'GET|POST /rootKey/rotate',
  'POST /rootKey/verify',
  'PUT|DELETE /rootKey/recover',
  'GET /rootKey/status',
];

/** GET /: readiness, the routes in BigDL KMS's words, and the root key's state. */
export const welcomeRoute = defineRoute({
  name: 'welcome',
  methods: ['GET', 'HEAD'],
  path: '/',
  async handle(_request, ctx) {
    const state = await sealStatus(await ctx.runtime()).catch((error: unknown) => (error instanceof KmsError ? error : undefined));
    return { status: 200, text: `${WELCOME}\n${describe(state)}\n`, json: { service: 'tee-kms', routes: ROUTES, state: stateJson(state) } };
  },
});

function describe(state: KmsSealStatus | KmsError | undefined): string {
  if (state === undefined) return 'state: unknown';
  if (state instanceof KmsError) return `state: unavailable: ${state.message}`;
  if (state.integrityAlarm) return `state: INTEGRITY ALARM: ${state.integrityAlarm}`;
  if (!state.initialized) return 'state: uninitialized: call GET /rootKey/rotate once to create the root key and its shares';
  if (state.sealed) return `state: sealed: send ${state.t} shares with PUT /rootKey/recover (${state.progress} received)`;
  return `state: unsealed (root key ${state.rootKeyId ?? 'from a secret'})${state.pendingRootKeyId ? `; a rotation's new key ${state.pendingRootKeyId} waits for its shares to be verified (POST /rootKey/verify)` : ''}`;
}

function stateJson(state: KmsSealStatus | KmsError | undefined): unknown {
  if (state instanceof KmsError) return { error: { code: state.code, message: state.message } };
  return state ?? null;
}

export const welcome = welcomeRoute.handler; // functions-framework: --target=welcome
