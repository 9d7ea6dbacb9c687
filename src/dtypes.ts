/**
 * The dtypes ckpt2diffusers reads and writes, named as safetensors names them
 * (https://github.com/huggingface/safetensors, `enum Dtype`).
 */

export const DTYPES = {
  F64: { bytes: 8, torch: 'float64', storage: 'DoubleStorage' },
  F32: { bytes: 4, torch: 'float32', storage: 'FloatStorage' },
  F16: { bytes: 2, torch: 'float16', storage: 'HalfStorage' },
  BF16: { bytes: 2, torch: 'bfloat16', storage: 'BFloat16Storage' },
  I64: { bytes: 8, torch: 'int64', storage: 'LongStorage' },
  I32: { bytes: 4, torch: 'int32', storage: 'IntStorage' },
  I16: { bytes: 2, torch: 'int16', storage: 'ShortStorage' },
  I8: { bytes: 1, torch: 'int8', storage: 'CharStorage' },
  U8: { bytes: 1, torch: 'uint8', storage: 'ByteStorage' },
  BOOL: { bytes: 1, torch: 'bool', storage: 'BoolStorage' },
} as const;

export type DType = keyof typeof DTYPES;

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, s);
}

export function dtypeBytes(d: DType): number {
  return DTYPES[d].bytes;
}

export function isFloatDType(d: DType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

/** Element count of a shape (1 for a scalar); throws RangeError past Number.MAX_SAFE_INTEGER. */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) throw new RangeError(`element count of [${shape.join(', ')}] overflows`);
  }
  return n;
}
