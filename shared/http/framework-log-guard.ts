/**
 * Under functions-framework, Express 5's body parsers run before a function does, and Express logs
 * a parse failure with `console.error(err)`: the error carries the raw request body (`err.body`) and
 * a piece of it in its message. A root key share sent as malformed JSON would land in the log. Its
 * router likewise logs a path that is not valid percent-encoding, whole, in a URIError's message:
 * a token typed after `&` instead of `?` would land there. This prints such errors as their type
 * and status only. Installed once, by route.ts (so by every
 * function module); the lean host never writes through console.error, so there it changes nothing.
 */
const INSTALLED = Symbol.for('tee-kms.framework-log-guard');

/** body-parser's error types (body-parser/README.md, "Errors", and its urlencoded parser's `querystring.parse.rangeError`). */
const BODY_PARSER_ERROR = /^(entity|request|charset|encoding|parameters|stream|querystring)\.[A-Za-z.]+$/;

export function installFrameworkLogGuard(): void {
  const holder = console as Console & { [INSTALLED]?: true };
  if (holder[INSTALLED]) return;
  holder[INSTALLED] = true;
  const print = console.error.bind(console);
  console.error = (...args: unknown[]) => print(...args.map(withoutBody));
}

function withoutBody(value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const { type, status } = value as { type?: unknown; status?: unknown };
  if (value instanceof URIError && status === 400) return 'functions-framework refused a request path: bad percent-encoding (400); the path is not logged';
  const known = typeof type === 'string' && BODY_PARSER_ERROR.test(type);
  // Any other error that carries a body is printed without it too, its type named only if it is one of the above.
  if (!known && !('body' in value)) return value;
  return `functions-framework refused a request body: ${known ? type : 'an error'} (${typeof status === 'number' ? status : '?'}); the body is not logged`;
}
