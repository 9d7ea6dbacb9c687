/** An in-memory TensorSource for writer tests: tiny tensors, chunk sizes chosen by the test. */
import { dtypeBytes, numelOf, type DType } from '../../src/dtypes.js';
import { ErrorCode, fail } from '../../src/errors.js';
import type { ReadChunksOptions, SafetyReport, TensorInfo, TensorSource } from '../../src/formats/tensor-source.js';

export interface MemoryTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export class MemorySource implements TensorSource {
  readonly path = 'memory.safetensors';
  readonly format = 'safetensors' as const;
  readonly fileSize = 0;
  readonly metadata = {};
  readonly extras = {};
  readonly wrapperPath = [];
  readonly container = {};
  readonly safety: SafetyReport = { hasPickle: false, globals: [], dangerous: false };
  readonly tensors: TensorInfo[];
  /** Names passed to readChunks, in call order. */
  readonly reads: string[] = [];
  private readonly data = new Map<string, Uint8Array>();

  /**
   * `chunkBytes` overrides the caller's chunk size; it need not be a multiple of the element
   * size, to exercise carry-over in the cast.
   */
  constructor(
    tensors: MemoryTensor[],
    private readonly chunkBytes?: number,
  ) {
    this.tensors = tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.data.length }));
    for (const t of tensors) {
      if (t.data.length !== numelOf(t.shape) * dtypeBytes(t.dtype)) throw new Error(`bad test tensor ${t.name}`);
      this.data.set(t.name, t.data);
    }
  }

  get(name: string): TensorInfo | undefined {
    return this.tensors.find((t) => t.name === name);
  }

  async *readChunks(name: string, options: ReadChunksOptions = {}): AsyncIterable<Uint8Array> {
    this.reads.push(name);
    const data = this.data.get(name) ?? fail(ErrorCode.E_TENSOR_NOT_FOUND, this.path, name);
    const size = this.chunkBytes ?? options.chunkBytes ?? 16;
    for (let offset = 0; offset < data.length; offset += size) {
      // Hand out copies at an odd byte offset: callers must not rely on alignment.
      const piece = data.subarray(offset, Math.min(offset + size, data.length));
      const holder = new Uint8Array(piece.length + 1);
      holder.set(piece, 1);
      yield holder.subarray(1);
    }
  }

  async readTensor(name: string): Promise<Uint8Array> {
    return (this.data.get(name) ?? fail(ErrorCode.E_TENSOR_NOT_FOUND, this.path, name)).slice();
  }

  async close(): Promise<void> {}
}

/** Little-endian bytes of float32 values. */
export function f32(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** Bytes of float16 codes. */
export function f16(codes: number[]): Uint8Array {
  return new Uint8Array(new Uint16Array(codes).buffer);
}

export function i64(values: number[]): Uint8Array {
  return new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
}

/** 0, 1, 2, ... as float32 in the given shape. */
export function iotaF32(name: string, shape: number[]): MemoryTensor {
  const n = numelOf(shape);
  return { name, dtype: 'F32', shape, data: f32(Array.from({ length: n }, (_, i) => i)) };
}

export async function collectBytes(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c.slice());
  return new Uint8Array(Buffer.concat(parts));
}

export function asF32(bytes: Uint8Array): number[] {
  const copy = bytes.slice();
  return Array.from(new Float32Array(copy.buffer, 0, copy.length / 4));
}

export function asU16(bytes: Uint8Array): number[] {
  const copy = bytes.slice();
  return Array.from(new Uint16Array(copy.buffer, 0, copy.length / 2));
}
