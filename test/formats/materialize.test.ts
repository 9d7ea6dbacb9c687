import { describe, expect, test } from 'vitest';
import type { DType } from '../../src/dtypes.js';
import { byteSwapInPlace, isCContiguous, materializeChunks, validateTensorGeometry } from '../../src/formats/materialize.js';
import type { PickledTensor } from '../../src/formats/torch-types.js';
import { MAX_STRIDED_SPAN_BYTES } from '../../src/limits.js';

function tensor(shape: number[], stride: number[], storageOffset = 0, dtype: DType = 'F32', numel = 64): PickledTensor {
  return { name: 't', dtype, storage: { key: '0', dtype, numel, location: 'cpu' }, storageOffset, shape, stride };
}

/** A float32 storage 0..n-1, with a log of the reads made. */
function storage(n: number) {
  const bytes = new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer);
  const reads: [number, number][] = [];
  const read = async (at: number, length: number) => {
    reads.push([at, length]);
    return bytes.slice(at, at + length);
  };
  return { bytes, reads, read };
}

async function values(t: PickledTensor, chunkBytes = 1 << 20, n = 64): Promise<{ values: number[]; chunks: number[]; reads: [number, number][] }> {
  const s = storage(n);
  const chunks: Uint8Array[] = [];
  for await (const c of materializeChunks(s.read, t, n * 4, chunkBytes, 'f.ckpt')) chunks.push(c);
  const all = Buffer.concat(chunks);
  return { values: Array.from(new Float32Array(new Uint8Array(all).buffer)), chunks: chunks.map((c) => c.length), reads: s.reads };
}

describe('materializeChunks', () => {
  test('reads a C-contiguous tensor straight from the storage, in chunks', async () => {
    const r = await values(tensor([2, 3], [3, 1], 4), 8);
    expect(r.values).toEqual([4, 5, 6, 7, 8, 9]);
    expect(r.chunks).toEqual([8, 8, 8]);
    expect(r.reads).toEqual([
      [16, 8],
      [24, 8],
      [32, 8],
    ]);
  });

  test('rounds chunks down to whole elements', async () => {
    const r = await values(tensor([5], [1]), 10);
    expect(r.chunks).toEqual([8, 8, 4]);
  });

  test('treats strides of size-1 dimensions as free', async () => {
    expect(isCContiguous([1, 3], [99, 1])).toBe(true);
    expect(isCContiguous([3, 1], [1, 7])).toBe(true);
    expect(isCContiguous([3, 4], [1, 3])).toBe(false);
  });

  test.each([
    { name: 'transpose', t: tensor([4, 3], [1, 4]), expected: [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11] },
    { name: 'every other column', t: tensor([2, 3], [6, 2], 1), expected: [1, 3, 5, 7, 9, 11] },
    { name: 'broadcast (stride 0)', t: tensor([2, 3], [0, 1]), expected: [0, 1, 2, 0, 1, 2] },
    { name: 'rank 3 permuted', t: tensor([2, 2, 2], [1, 4, 2]), expected: [0, 2, 4, 6, 1, 3, 5, 7] },
    { name: 'rank 1 strided', t: tensor([4], [3], 2), expected: [2, 5, 8, 11] },
  ])('gathers $name in C order, in any chunk size', async ({ t, expected }) => {
    expect((await values(t)).values).toEqual(expected);
    const small = await values(t, 4 * 5);
    expect(small.values).toEqual(expected);
    expect(small.chunks.every((n) => n <= 20 && n % 4 === 0)).toBe(true);
  });

  test('a scalar is one element', async () => {
    expect((await values(tensor([], [], 7))).values).toEqual([7]);
  });

  test('a tensor with zero elements yields nothing and reads nothing', async () => {
    const r = await values(tensor([0, 5], [5, 1], 0, 'F32', 0), 1 << 20, 0);
    expect(r.chunks).toEqual([]);
    expect(r.reads).toEqual([]);
  });

  test.each([
    { name: 'contiguous past the storage', t: tensor([65], [1]), code: 'E_TENSOR_BOUNDS' },
    { name: 'offset past the storage', t: tensor([4], [1], 61), code: 'E_TENSOR_BOUNDS' },
    { name: 'strided past the storage', t: tensor([2, 2], [70, 1]), code: 'E_TENSOR_BOUNDS' },
    { name: 'rank mismatch', t: tensor([2, 2], [1]), code: 'E_TENSOR_SHAPE' },
    { name: 'negative stride', t: tensor([2], [-1], 4), code: 'E_TENSOR_SHAPE' },
    { name: 'negative size', t: tensor([-2], [1]), code: 'E_TENSOR_SHAPE' },
    { name: 'fractional offset', t: tensor([2], [1], 0.5), code: 'E_TENSOR_SHAPE' },
  ])('rejects $name with $code', async ({ t, code }) => {
    await expect(values(t)).rejects.toMatchObject({ code });
    expect(() => validateTensorGeometry(t, 64 * 4, 'f.ckpt')).toThrow(expect.objectContaining({ code }));
  });

  test('refuses to hold a strided span above MAX_STRIDED_SPAN_BYTES (E_LIMIT)', async () => {
    const stride = MAX_STRIDED_SPAN_BYTES / 4;
    const t = tensor([2, 2], [1, stride]);
    let read = false;
    const chunks = materializeChunks(
      async () => {
        read = true;
        return new Uint8Array(0);
      },
      t,
      MAX_STRIDED_SPAN_BYTES * 2,
      1 << 20,
      'f.ckpt',
    );
    await expect((async () => {
      for await (const _ of chunks) void _;
    })()).rejects.toMatchObject({ code: 'E_LIMIT' });
    expect(read).toBe(false);
  });
});

describe('byteSwapInPlace', () => {
  test.each([
    [1, [1, 2, 3], [1, 2, 3]],
    [2, [1, 2, 3, 4], [2, 1, 4, 3]],
    [4, [1, 2, 3, 4, 5, 6, 7, 8], [4, 3, 2, 1, 8, 7, 6, 5]],
    [8, [1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]],
  ])('itemsize %i', (itemsize, input, expected) => {
    const buf = Uint8Array.from(input);
    byteSwapInPlace(buf, itemsize);
    expect([...buf]).toEqual(expected);
  });

  test('rejects a buffer that is not whole elements', () => {
    expect(() => byteSwapInPlace(new Uint8Array(3), 2)).toThrow(RangeError);
  });
});
