/** Comparing two byte streams whose chunk boundaries differ, with memory bounded by a chunk. */

export type StreamComparison =
  | { readonly equal: true; readonly bytes: number }
  /** `offset`: first differing byte; `length` when one stream ended first (its length is `offset`). */
  | { readonly equal: false; readonly offset: number; readonly reason: 'bytes' | 'length'; readonly expected?: Uint8Array; readonly actual?: Uint8Array };

class Reader {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunk: Uint8Array = new Uint8Array(0);
  private at = 0;
  done = false;

  constructor(stream: AsyncIterable<Uint8Array>) {
    this.it = stream[Symbol.asyncIterator]();
  }

  /** The unread bytes of the current chunk (empty only at the end of the stream). */
  async peek(): Promise<Uint8Array> {
    while (this.at >= this.chunk.length && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        this.chunk = r.value;
        this.at = 0;
      }
    }
    return this.chunk.subarray(this.at);
  }

  advance(n: number): void {
    this.at += n;
  }

  async close(): Promise<void> {
    if (!this.done) await this.it.return?.();
  }
}

/**
 * Byte-for-byte comparison of two streams. On a difference, returns its offset and, for
 * `bytes`, the `window` bytes of each stream starting at the element holding it (`itemsize`
 * aligned), so callers can show the differing values.
 */
export async function compareStreams(expected: AsyncIterable<Uint8Array>, actual: AsyncIterable<Uint8Array>, itemsize = 1, window = 8): Promise<StreamComparison> {
  const a = new Reader(expected);
  const b = new Reader(actual);
  let offset = 0;
  try {
    for (;;) {
      const x = await a.peek();
      const y = await b.peek();
      if (x.length === 0 || y.length === 0) {
        if (x.length === 0 && y.length === 0) return { equal: true, bytes: offset };
        return { equal: false, offset, reason: 'length' };
      }
      const n = Math.min(x.length, y.length);
      for (let i = 0; i < n; i++) {
        if (x[i] !== y[i]) {
          const start = i - (((offset + i) % itemsize) + itemsize) % itemsize;
          const take = (r: Uint8Array) => r.slice(Math.max(0, start), Math.max(0, start) + Math.max(itemsize, window));
          return { equal: false, offset: offset + i, reason: 'bytes', expected: take(x), actual: take(y) };
        }
      }
      a.advance(n);
      b.advance(n);
      offset += n;
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}
