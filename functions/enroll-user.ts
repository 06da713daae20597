import * as functions from '@google-cloud/functions-framework';
import { defineRoute } from '../shared/http/route.js';
import { kmsRuntime } from '../shared/runtime.js';

/** POST /user/{userName}?token=…: enroll a user. An existing user is 409; its token never changes. */
export const enrollUser = defineRoute({
  name: 'enrollUser',
  methods: ['POST'],
  path: '/user/',
  async handle(request) {
    const user = request.pathName('/user/', 'user');
    const token = request.token();
    const { keys } = await kmsRuntime();
    await keys.enrollUser(user, token);
    return { status: 201, text: `user [${user}] is created successfully!\n`, json: { user, created: true } };
  },
});

functions.http(enrollUser.name, enrollUser.handler);
