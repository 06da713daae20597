import { defineRoute } from '../shared/http/route.js';

/** POST /user/{userName}?token=…: enroll a user. An existing user is 409; its token never changes. */
export const enrollUserRoute = defineRoute({
  name: 'enrollUser',
  methods: ['POST'],
  path: '/user/',
  async handle(request, ctx) {
    const user = request.pathName('/user/', 'user');
    const token = request.token();
    const { keys } = await ctx.keys();
    await keys.enrollUser(user, token);
    return { status: 201, text: `user [${user}] is created successfully!\n`, json: { user, created: true } };
  },
});

export const enrollUser = enrollUserRoute.handler; // functions-framework: --target=enrollUser
