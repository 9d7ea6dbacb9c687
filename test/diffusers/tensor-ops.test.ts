import { describe, expect, it } from 'vitest';
import { f32BitsToF16Bits } from '../../src/diffusers/cast.js';
import { byteRange, checkOpShapes, plannedTensorChunks, transpose2d } from '../../src/diffusers/tensor-ops.js';
import type { DType } from '../../src/dtypes.js';
import type { ReadChunksOptions } from '../../src/formats/tensor-source.js';
import type { PlannedTensor, TensorOp } from '../../src/mapping/plan-types.js';
import { asF32, asU16, collectBytes, f32, iotaF32, MemorySource } from './memory-source.js';

function planned(source: string, op: TensorOp, shape: number[], dtype: DType = 'F32'): PlannedTensor {
  return { source, target: `t.${source}`, op, dtype, shape };
}

function f16Of(values: number[]): number[] {
  return values.map((v) => f32BitsToF16Bits(new Uint32Array(new Float32Array([v]).buffer)[0]));
}

async function run(src: MemorySource, p: PlannedTensor, out: DType = p.dtype): Promise<Uint8Array> {
  return collectBytes(plannedTensorChunks(src, p, out, undefined, { chunkBytes: 8 }));
}

describe('copy and squeeze', () => {
  it('copy passes bytes through, whatever the chunking', async () => {
    for (const chunk of [1, 3, 7, 64]) {
      const src = new MemorySource([iotaF32('w', [3, 5])], chunk);
      expect(asF32(await run(src, planned('w', { op: 'copy' }, [3, 5])))).toEqual(Array.from({ length: 15 }, (_, i) => i));
    }
  });

  it('copy then cast to float16 with chunks that split elements', async () => {
    const values = [0.1, -2.5, 65504, 70000, 1e-8, 3];
    const src = new MemorySource([{ name: 'w', dtype: 'F32', shape: [6], data: f32(values) }], 3);
    const stats = { overflowCount: 0 };
    const bytes = await collectBytes(plannedTensorChunks(src, planned('w', { op: 'copy' }, [6]), 'F16', stats));
    expect(asU16(bytes)).toEqual(f16Of(values));
    expect(stats.overflowCount).toBe(1);
  });

  it('squeeze keeps the bytes of a 1x1 conv weight', async () => {
    const src = new MemorySource([iotaF32('w', [4, 4, 1, 1]), iotaF32('one', [1, 1, 1, 1])], 5);
    expect(asF32(await run(src, planned('w', { op: 'squeeze' }, [4, 4])))).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(asF32(await run(src, planned('one', { op: 'squeeze' }, [1, 1])))).toEqual([0]);
  });
});

describe('split', () => {
  it('takes each third along axis 0 (q/k/v of an in_proj weight)', async () => {
    const src = new MemorySource([iotaF32('in_proj', [6, 2])], 3);
    const parts = [];
    for (let index = 0; index < 3; index++) parts.push(asF32(await run(src, planned('in_proj', { op: 'split', axis: 0, index, parts: 3 }, [2, 2]))));
    expect(parts).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9, 10, 11],
    ]);
  });

  it('splits a 1-D bias and casts it', async () => {
    const src = new MemorySource([iotaF32('b', [9])], 5);
    const bytes = await collectBytes(plannedTensorChunks(src, planned('b', { op: 'split', axis: 0, index: 2, parts: 3 }, [3]), 'F16'));
    expect(asU16(bytes)).toEqual(f16Of([6, 7, 8]));
  });

  it('stops reading the source once past the part it needs', async () => {
    let pulled = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 100; i++) {
        pulled++;
        yield new Uint8Array(10).fill(i);
      }
    }
    const bytes = await collectBytes(byteRange(counted(), 15, 35));
    expect(Array.from(bytes)).toEqual([...Array(5).fill(1), ...Array(10).fill(2), ...Array(5).fill(3)]);
    expect(pulled).toBe(4);
  });
});

describe('transpose', () => {
  it('transposes a 2-D float32 matrix', async () => {
    const src = new MemorySource([iotaF32('proj', [2, 3])], 4);
    expect(asF32(await run(src, planned('proj', { op: 'transpose' }, [3, 2])))).toEqual([0, 3, 1, 4, 2, 5]);
  });

  it('transposes elements of 1, 2 and 8 bytes', () => {
    const bytes = Uint8Array.from([1, 2, 3, 4, 5, 6]);
    expect(Array.from(transpose2d(bytes, 2, 3, 1))).toEqual([1, 4, 2, 5, 3, 6]);
    const u16 = new Uint8Array(new Uint16Array([10, 20, 30, 40, 50, 60]).buffer);
    expect(asU16(transpose2d(u16, 3, 2, 2))).toEqual([10, 30, 50, 20, 40, 60]);
    const f64 = new Uint8Array(new Float64Array([1.5, 2.5, 3.5, 4.5]).buffer);
    expect(Array.from(new Float64Array(transpose2d(f64, 2, 2, 8).buffer))).toEqual([1.5, 3.5, 2.5, 4.5]);
  });

  it('yields the transposed tensor in chunks no larger than chunkBytes', async () => {
    const src = new MemorySource([iotaF32('proj', [4, 4])]);
    const sizes: number[] = [];
    for await (const c of plannedTensorChunks(src, planned('proj', { op: 'transpose' }, [4, 4]), 'F32', undefined, { chunkBytes: 24 })) sizes.push(c.length);
    expect(sizes).toEqual([24, 24, 16]);
  });
});

describe('checks', () => {
  const src = new MemorySource([iotaF32('w', [6, 2]), iotaF32('cube', [2, 2, 2])]);

  it.each([
    ['copy into another shape', planned('w', { op: 'copy' }, [12])],
    ['squeeze of a non-1 dim', planned('w', { op: 'squeeze' }, [6])],
    ['split into parts that do not divide axis 0', planned('w', { op: 'split', axis: 0, index: 0, parts: 4 }, [1, 2])],
    ['split index past the parts', planned('w', { op: 'split', axis: 0, index: 3, parts: 3 }, [2, 2])],
    ['split with a wrong target shape', planned('w', { op: 'split', axis: 0, index: 0, parts: 3 }, [3, 2])],
    ['transpose of a 3-D tensor', planned('cube', { op: 'transpose' }, [2, 2, 2])],
    ['transpose with a wrong target shape', planned('w', { op: 'transpose' }, [6, 2])],
  ])('refuses %s with E_SHAPE_MISMATCH', async (_name, p) => {
    await expect(run(src, p)).rejects.toMatchObject({ code: 'E_SHAPE_MISMATCH' });
  });

  it('names a missing source tensor', async () => {
    await expect(run(src, planned('nope', { op: 'copy' }, [1]))).rejects.toMatchObject({ code: 'E_MISSING_TENSOR' });
  });

  it('refuses a plan whose dtype differs from the source', async () => {
    await expect(run(src, planned('w', { op: 'copy' }, [6, 2], 'F16'))).rejects.toMatchObject({ code: 'E_TENSOR_DTYPE' });
  });

  it('refuses a source that yields more or fewer bytes than its shape', async () => {
    class Lying extends MemorySource {
      constructor(private readonly extra: number) {
        super([iotaF32('w', [2, 2])]);
      }
      override async *readChunks(name: string, options?: ReadChunksOptions): AsyncIterable<Uint8Array> {
        yield* super.readChunks(name, options);
        if (this.extra > 0) yield new Uint8Array(this.extra);
      }
    }
    await expect(run(new Lying(4), planned('w', { op: 'copy' }, [2, 2]))).rejects.toMatchObject({ code: 'E_SHAPE_MISMATCH' });
    class Short extends MemorySource {
      override async *readChunks(): AsyncIterable<Uint8Array> {
        yield new Uint8Array(8);
      }
    }
    await expect(run(new Short([iotaF32('w', [2, 2])]), planned('w', { op: 'copy' }, [2, 2]))).rejects.toMatchObject({ code: 'E_SHAPE_MISMATCH' });
  });

  it('checkOpShapes accepts the valid cases', () => {
    expect(() => checkOpShapes({ op: 'squeeze' }, [8, 4, 1, 1], [8, 4], 'x')).not.toThrow();
    expect(() => checkOpShapes({ op: 'split', axis: 0, index: 1, parts: 3 }, [9], [3], 'x')).not.toThrow();
    expect(() => checkOpShapes({ op: 'transpose' }, [2, 5], [5, 2], 'x')).not.toThrow();
  });
});
