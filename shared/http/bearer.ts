import type { IncomingMessage } from 'node:http';

/**
 * The token of an `Authorization: Bearer <token>` header, by one rule for every caller: RFC 6750
 * section 2.1's `"Bearer" 1*SP b64token`, with the scheme case-insensitive (RFC 9110 section 11.1)
 * and one or more spaces, as the grammar says (a tab is not a space there). The token is wider than
 * b64token, because BigDL KMS's tokens are free text: non-whitespace characters, with single or
 * repeated spaces between them (a token enrolled as `two words` travels as `Bearer two words`).
 * Whitespace around the whole value is ignored (HTTP's optional whitespace; Node strips it already).
 *
 * Answers undefined when there is no header, null when there is one that is not a single Bearer
 * credential: another scheme, no token, a tab or other whitespace inside the token, or the header
 * given twice (Node keeps only the first Authorization header in `headers`; authorizationHeader
 * gives them all).
 */
export function bearerToken(header: string | readonly string[] | undefined): string | null | undefined {
  if (header === undefined) return undefined;
  if (typeof header !== 'string') return header.length === 1 ? bearerToken(header[0]) : null;
  const match = BEARER.exec(header);
  return match === null ? null : match[1]!;
}

// Anchored, and within the token a space and a non-space are matched by disjoint classes (trailing
// spaces only by the last run): linear on any header length.
const BEARER = /^[ \t]*bearer +(\S+(?: +\S+)*)[ \t]*$/i;

/**
 * The Authorization header as bearerToken takes it: its value, or every value when it is given more
 * than once (Node keeps only the first in `headers`, where a proxy on the way may read the last).
 * Counted in `rawHeaders`: `headersDistinct` builds an object of every header on first use.
 */
export function authorizationHeader(req: IncomingMessage): string | readonly string[] | undefined {
  const first = req.headers.authorization;
  if (first === undefined) return undefined;
  const values: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 13 && raw[i]!.toLowerCase() === 'authorization') values.push(raw[i + 1]!);
  return values.length > 1 ? values : first;
}
