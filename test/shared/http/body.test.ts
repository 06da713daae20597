import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BodyError, readBounded } from '../../../shared/http/body.js';

/** A stream of these chunks, then (when `fail` is given) an error instead of its end. */
function stream(chunks: Buffer[], fail?: Error): Readable {
  return Readable.from(
    (async function* () {
      yield* chunks;
      if (fail !== undefined) throw fail;
    })(),
    { objectMode: false },
  );
}

async function refusal(promise: Promise<unknown>): Promise<BodyError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BodyError);
  return error as BodyError;
}

describe('readBounded', () => {
  it('reads a body whole, up to and including the limit', async () => {
    expect((await readBounded(stream([]), 4)).length).toBe(0);
    expect((await readBounded(stream([Buffer.from('abcd')]), 4)).toString()).toBe('abcd');
    expect((await readBounded(stream([Buffer.from('ab'), Buffer.from('cd')]), 4)).toString()).toBe('abcd');
  });

  it('zeroes the pieces it copied from, so one copy of a body stays in memory', async () => {
    const pieces = [Buffer.from('ab'), Buffer.from('cd')];
    expect((await readBounded(stream(pieces), 4)).toString()).toBe('abcd');
    expect(pieces.every((piece) => piece.every((byte) => byte === 0))).toBe(true);
  });

  it('refuses a body over the limit as too-large, zeroing what it read, and stops reading', async () => {
    const pieces = [Buffer.from('secret'), Buffer.from('share!'), Buffer.from('never read')];
    let pulled = 0;
    const source = Readable.from(
      (function* () {
        for (const piece of pieces) {
          pulled++;
          yield piece;
        }
      })(),
      { objectMode: false, highWaterMark: 1 },
    );
    const error = await refusal(readBounded(source, 8));
    expect(error).toMatchObject({ kind: 'too-large', limit: 8, message: 'the body is larger than 8 bytes' });
    expect(pieces.slice(0, 2).every((piece) => piece.every((byte) => byte === 0))).toBe(true);
    expect(pulled).toBeLessThan(3);
    expect(source.destroyed).toBe(true);
  });

  it('refuses a stream that fails before its end as cut-short, with its error as the cause, zeroing what it read', async () => {
    const piece = Buffer.from('half a share');
    const cut = new Error('aborted');
    const error = await refusal(readBounded(stream([piece], cut), 1024));
    expect(error).toMatchObject({ kind: 'cut-short', message: 'the body was cut short or malformed' });
    expect(error.cause).toBe(cut);
    expect(piece.every((byte) => byte === 0)).toBe(true);
  });

  it('keeps the body out of its errors', async () => {
    const error = await refusal(readBounded(stream([Buffer.from('top-secret-share')]), 4));
    expect(JSON.stringify({ message: error.message, stack: error.stack })).not.toContain('top-secret');
  });
});
