import { KmsError } from '../shared/errors.js';
import { defineRoute } from '../shared/http/route.js';

/** POST /user/{userName}?token=…: enroll a user. An existing user is 409; its token never changes. */
export const enrollUserRoute = defineRoute({
  name: 'enrollUser',
  methods: ['POST'],
  path: '/user/',
  async handle(request, ctx) {
    const user = request.pathName('/user/', 'user');
    const token = request.token();
    // The name is the path's; a credential that names someone else was made for another enrollment.
    const claimed = request.claimedUser();
    if (claimed !== undefined && claimed !== user) {
      throw new KmsError('BAD_REQUEST', `the ${request.sealed?.user === undefined ? 'header or query' : 'sealed credential'} names another user than the path`);
    }
    const { keys } = await ctx.keys();
    await keys.enrollUser(user, token);
    return { status: 201, text: `user [${user}] is created successfully!\n`, json: { user, created: true } };
  },
});

export const enrollUser = enrollUserRoute.handler; // functions-framework: --target=enrollUser
