/**
 * Keeps `depth` items of an async iterable requested ahead of the consumer, so the next chunk is
 * being read (and cast) while the current one is being written: reading and writing overlap instead
 * of taking turns. Memory grows by `depth` chunks.
 */
export async function* readAhead<T>(source: AsyncIterable<T>, depth = 2): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  const pending: Promise<IteratorResult<T>>[] = [];
  const request = () => {
    const next = it.next();
    // Awaited later; until then a rejection must not count as unhandled.
    next.catch(() => undefined);
    pending.push(next);
  };
  let finished = false;
  try {
    for (let i = 0; i < depth; i++) request();
    for (;;) {
      const result = await pending.shift()!;
      if (result.done) {
        finished = true;
        return;
      }
      request();
      yield result.value;
    }
  } finally {
    // The consumer stopped early (or failed): let the producer close its files.
    if (!finished) await it.return?.(undefined).catch(() => undefined);
  }
}
