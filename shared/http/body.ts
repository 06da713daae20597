/**
 * Why a body was not read whole: more than the limit arrived (or was declared), or the stream ended
 * early (the peer closed the connection mid-body, or Node's HTTP parser refused its framing).
 * `cause` is the stream's own error when it had one. Never holds any of the body.
 */
export class BodyError extends Error {
  override readonly name = 'BodyError';

  constructor(
    readonly kind: 'too-large' | 'cut-short',
    readonly limit: number,
    options?: { cause?: unknown },
  ) {
    super(kind === 'too-large' ? `the body is larger than ${limit} bytes` : 'the body was cut short or malformed', options);
  }
}

/**
 * Reads a request or response body of at most `limit` bytes. Refuses with a BodyError, after
 * zeroing what it had read (bodies may hold shares or keys): `too-large` as soon as the count
 * passes the limit (leaving the loop destroys the stream, so nothing more is read; a response's
 * request is aborted), `cut-short` when the stream fails before its end. Every caller keeps its
 * own limit and error through a small adapter around this one loop.
 */
export async function readBounded(stream: AsyncIterable<Buffer>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) throw new BodyError('too-large', limit);
    }
  } catch (error) {
    for (const chunk of chunks) chunk.fill(0);
    throw error instanceof BodyError ? error : new BodyError('cut-short', limit, { cause: error });
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = Buffer.concat(chunks, size);
  for (const chunk of chunks) chunk.fill(0); // the copy is the caller's; the pieces are not kept
  return body;
}
