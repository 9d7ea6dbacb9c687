import { describe, expect, it } from 'vitest';
import { readAhead } from '../../src/io/read-ahead.js';

async function* numbers(n: number, log: string[], failAt = -1): AsyncGenerator<number> {
  try {
    for (let i = 0; i < n; i++) {
      await new Promise((r) => setTimeout(r, 1));
      if (i === failAt) throw new Error(`boom at ${i}`);
      log.push(`produced ${i}`);
      yield i;
    }
  } finally {
    log.push('closed');
  }
}

describe('readAhead', () => {
  it('yields every item in order and requests ahead of the consumer', async () => {
    const log: string[] = [];
    const seen: number[] = [];
    for await (const x of readAhead(numbers(5, log), 2)) {
      seen.push(x);
      // A slow consumer (a write): the producer works on the next items meanwhile.
      await new Promise((r) => setTimeout(r, 10));
      log.push(`consumed ${x}`);
    }
    expect(seen).toEqual([0, 1, 2, 3, 4]);
    // Item 1 was already produced before item 0 was consumed.
    expect(log.indexOf('produced 1')).toBeLessThan(log.indexOf('consumed 0'));
    expect(log).toContain('closed');
  });

  it('surfaces a producer error at the consumer, after the items before it', async () => {
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const x of readAhead(numbers(5, [], 3), 2)) seen.push(x);
      })(),
    ).rejects.toThrow('boom at 3');
    expect(seen).toEqual([0, 1, 2]);
  });

  it('closes the producer when the consumer stops early', async () => {
    const log: string[] = [];
    for await (const x of readAhead(numbers(100, log), 2)) if (x === 1) break;
    expect(log).toContain('closed');
    expect(log.filter((l) => l.startsWith('produced')).length).toBeLessThanOrEqual(4);
  });
});
