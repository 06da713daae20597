/**
 * A byte queue for the chunked formats: incoming buffers are kept as they arrive and handed out as
 * views (no copy), so a format can cut fixed-size chunks out of whatever sizes the input stream
 * delivers while holding at most one chunk plus one input buffer.
 */
export class ChunkQueue {
  #parts: Buffer[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(buffer: Buffer): void {
    if (buffer.length === 0) return;
    this.#parts.push(buffer);
    this.#length += buffer.length;
  }

  /** The next `n` bytes (n <= length) as views of the queued buffers, in order. */
  take(n: number): Buffer[] {
    if (n > this.#length) throw new RangeError('ChunkQueue.take beyond its length');
    const out: Buffer[] = [];
    let want = n;
    while (want > 0) {
      const head = this.#parts[0]!;
      if (head.length <= want) {
        out.push(head);
        this.#parts.shift();
        want -= head.length;
      } else {
        out.push(head.subarray(0, want));
        this.#parts[0] = head.subarray(want);
        want = 0;
      }
    }
    this.#length -= n;
    return out;
  }

  /** The next `n` bytes as one buffer (a copy only when they span several parts). */
  takeBuffer(n: number): Buffer {
    const parts = this.take(n);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** The first `n` bytes without consuming them, or undefined while fewer are queued. */
  peek(n: number): Buffer | undefined {
    if (n > this.#length) return undefined;
    const head = this.#parts[0];
    if (head !== undefined && head.length >= n) return head.subarray(0, n);
    return Buffer.concat(this.#parts, this.#length).subarray(0, n);
  }
}
