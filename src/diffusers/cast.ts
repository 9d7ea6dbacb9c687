/**
 * Floating-point dtype casts on little-endian byte chunks, bit-exact with torch's conversions
 * (`tensor.half()`, `.bfloat16()`, `.float()`): round to nearest, ties to even; subnormals kept;
 * ±Inf kept; finite values beyond the target's range become ±Inf (counted as overflow).
 *
 * Casts stream: a caster accepts chunks whose lengths need not be multiples of the element size
 * and carries the few bytes of a split element over to the next chunk.
 *
 * NaN: stays NaN with its sign and the top bits of its payload (the quiet bit is set when the
 * truncated payload would be empty, so the result is never Inf). Torch's own CPU kernels disagree
 * among themselves on NaN bit patterns (scalar vs vectorised paths, e.g. bfloat16 0x7FC0 vs
 * 0xFFFF), so no choice matches all of them; for float16 and the ordinary quiet NaNs
 * (0x7FC00000 / 0xFFC00000 -> 0x7E00 / 0xFE00) they agree with this one.
 *
 * Integer and bool tensors are never cast.
 */
import { type DType, dtypeBytes, isFloatDType } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';

// Typed-array views below read the host byte order; tensor bytes are little-endian.
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const F32_EXP_MASK = 0x7f800000;
const F32_ABS_MASK = 0x7fffffff;
/** Smallest |x| that rounds to Inf in float16: 65520 = halfway between 65504 and 2^16 (ties go up, to even). */
const F16_OVERFLOW_THRESHOLD = 0x477ff000;
/** 2^-14: smallest normal float16. */
const F16_MIN_NORMAL_AS_F32 = 0x38800000;
/** 2^-25: half the smallest float16 subnormal; |x| <= this rounds to zero (the tie goes to even 0). */
const F16_HALF_MIN_SUBNORMAL_AS_F32 = 0x33000000;
/** Exponent rebias 127 -> 15, as it appears in float32 bits. */
const F32_TO_F16_REBIAS = (127 - 15) << 23;

/** float32 bits -> float16 bits, round to nearest even (torch `c10::Half(float)` for every non-NaN input). */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & F32_ABS_MASK;
  if (abs >= F32_EXP_MASK) return sign | f16InfOrNaN(abs);
  if (abs >= F16_OVERFLOW_THRESHOLD) return sign | 0x7c00;
  if (abs < F16_MIN_NORMAL_AS_F32) return sign | f16Subnormal(abs);
  return sign | roundShiftRightEven(abs - F32_TO_F16_REBIAS, 13);
}

function f16InfOrNaN(abs: number): number {
  if (abs === F32_EXP_MASK) return 0x7c00;
  const payload = (abs >>> 13) & 0x3ff;
  return 0x7c00 | (payload === 0 ? 0x200 : payload);
}

/** |x| < 2^-14: the float16 result is m * 2^-24 with m = round(|x| / 2^-24) (may reach 0x400 = min normal). */
function f16Subnormal(abs: number): number {
  if (abs <= F16_HALF_MIN_SUBNORMAL_AS_F32) return 0;
  const exponent = abs >>> 23;
  const significand = (abs & 0x7fffff) | 0x800000;
  // |x| = significand * 2^(exponent-150); divided by 2^-24 that is significand * 2^(exponent-126).
  return roundShiftRightEven(significand, 126 - exponent);
}

/** value >> shift, rounding the dropped bits to nearest, ties to even (1 <= shift <= 24). */
function roundShiftRightEven(value: number, shift: number): number {
  const quotient = value >>> shift;
  const remainder = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return remainder > half || (remainder === half && (quotient & 1) === 1) ? quotient + 1 : quotient;
}

/** float32 bits -> bfloat16 bits, round to nearest even (torch `round_to_nearest_even`). */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & F32_ABS_MASK) > F32_EXP_MASK) {
    const high = bits >>> 16;
    return (high & 0x7f) === 0 ? high | 0x40 : high;
  }
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** float16 bits -> float32 bits, exact. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | F32_EXP_MASK | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // Subnormal: normalise the mantissa, lowering the exponent once per shift.
  let f32Exponent = 113;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    f32Exponent--;
  }
  return (sign | (f32Exponent << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

/** bfloat16 bits -> float32 bits, exact. */
export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

let f16ToF32Table: Uint32Array | undefined;

/** All 65,536 float16 -> float32 results (256 KiB), built on first use. */
function f16Table(): Uint32Array {
  if (!f16ToF32Table) {
    f16ToF32Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16ToF32Table[h] = f16BitsToF32Bits(h);
  }
  return f16ToF32Table;
}

/** Whether `from` can be cast to `to` (same dtype: always; otherwise float to a float, never widening to F64). */
export function canCast(from: DType, to: DType): boolean {
  if (from === to) return true;
  return isFloatDType(from) && isFloatDType(to) && to !== 'F64';
}

/** Finite-to-Inf counter, shared across the steps of one cast. */
interface Overflow {
  count: number;
}

/** Widens or narrows whole elements to float32 bits. */
function toF32Bits(bytes: Uint8Array, from: DType, overflow: Overflow): Uint32Array {
  switch (from) {
    case 'F32':
      return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    case 'F16':
      return widenF16(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
    case 'BF16':
      return widenBf16(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
    case 'F64':
      return narrowF64(new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8), overflow);
    default:
      return fail(ErrorCode.E_TENSOR_DTYPE, undefined, `cannot cast dtype ${from} (not a float dtype)`);
  }
}

function widenF16(src: Uint16Array): Uint32Array {
  const table = f16Table();
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

function widenBf16(src: Uint16Array): Uint32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return out;
}

/** float64 -> float32, round to nearest even (the Float32Array store does exactly that); NaN handled by bits. */
function narrowF64(src: Float64Array, overflow: Overflow): Uint32Array {
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  const srcWords = new Uint32Array(src.buffer, src.byteOffset, src.length * 2);
  for (let i = 0; i < src.length; i++) {
    const value = src[i];
    if (value !== value) {
      outBits[i] = f64NaNToF32Bits(srcWords[2 * i], srcWords[2 * i + 1]);
      continue;
    }
    out[i] = value;
    if (!Number.isFinite(out[i]) && Number.isFinite(value)) overflow.count++;
  }
  return outBits;
}

/** Keeps sign and the top 22 payload bits, and sets the quiet bit as x86 `cvtsd2ss` does. */
function f64NaNToF32Bits(low: number, high: number): number {
  return ((high & 0x80000000) | 0x7fc00000 | ((high & 0x7ffff) << 3) | (low >>> 29)) >>> 0;
}

/** Narrows float32 bits to the target dtype's bytes. */
function fromF32Bits(bits: Uint32Array, to: DType, overflow: Overflow): Uint8Array {
  switch (to) {
    case 'F32':
      return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
    case 'F16':
      return narrowToF16(bits, overflow);
    case 'BF16':
      return narrowToBf16(bits, overflow);
    default:
      return fail(ErrorCode.E_TENSOR_DTYPE, undefined, `cannot cast to dtype ${to}`);
  }
}

function narrowToF16(bits: Uint32Array, overflow: Overflow): Uint8Array {
  const out = new Uint16Array(bits.length);
  let overflowed = 0;
  for (let i = 0, n = bits.length; i < n; i++) {
    const b = bits[i];
    const abs = b & F32_ABS_MASK;
    if (abs >= F16_MIN_NORMAL_AS_F32 && abs < F16_OVERFLOW_THRESHOLD) {
      // The common case, inlined: rebias the exponent, then round the 13 dropped bits to nearest
      // even (adding 0xfff plus the kept low bit carries exactly when the tail is over half, or
      // is half and the kept part is odd). A carry into the exponent is the correct result.
      const v = abs - F32_TO_F16_REBIAS;
      out[i] = ((b >>> 16) & 0x8000) | ((v + 0xfff + ((v >>> 13) & 1)) >>> 13);
      continue;
    }
    if (abs >= F16_OVERFLOW_THRESHOLD && abs < F32_EXP_MASK) overflowed++;
    out[i] = f32BitsToF16Bits(b);
  }
  overflow.count += overflowed;
  return new Uint8Array(out.buffer);
}

function narrowToBf16(bits: Uint32Array, overflow: Overflow): Uint8Array {
  const out = new Uint16Array(bits.length);
  let overflowed = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    const h = f32BitsToBf16Bits(b);
    // A finite input whose rounded result is Inf (0x7F80 / 0xFF80).
    if ((h & 0x7fff) === 0x7f80 && (b & F32_EXP_MASK) !== F32_EXP_MASK) overflowed++;
    out[i] = h;
  }
  overflow.count += overflowed;
  return new Uint8Array(out.buffer);
}

/** Casts whole elements (aligned to the source itemsize). */
function castElements(bytes: Uint8Array, from: DType, to: DType, overflow: Overflow): Uint8Array {
  return fromF32Bits(toF32Bits(bytes, from, overflow), to, overflow);
}

/**
 * A streaming cast of one tensor. `push` returns the cast bytes of every element completed so
 * far (possibly empty); `finish` checks that no partial element is left over.
 */
export interface ChunkCaster {
  readonly from: DType;
  readonly to: DType;
  /** Finite inputs that became ±Inf so far (an F16/BF16/F64->F32 narrowing overflowed). */
  readonly overflowCount: number;
  push(chunk: Uint8Array): Uint8Array;
  finish(): void;
}

/** Creates a streaming caster; throws E_TENSOR_DTYPE when the cast is not allowed (see canCast). */
export function createCaster(from: DType, to: DType): ChunkCaster {
  if (!canCast(from, to)) fail(ErrorCode.E_TENSOR_DTYPE, undefined, `cannot cast ${from} to ${to} (only float tensors are cast)`);
  if (!HOST_IS_LITTLE_ENDIAN) fail(ErrorCode.E_TENSOR_DTYPE, undefined, 'dtype casts need a little-endian host');
  return from === to ? new PassThroughCaster(from) : new ElementCaster(from, to);
}

class PassThroughCaster implements ChunkCaster {
  readonly overflowCount = 0;
  constructor(readonly from: DType) {}
  get to(): DType {
    return this.from;
  }
  push(chunk: Uint8Array): Uint8Array {
    return chunk;
  }
  finish(): void {}
}

class ElementCaster implements ChunkCaster {
  private readonly itemsize: number;
  private readonly overflow: Overflow = { count: 0 };
  /** Bytes of an element split across chunks (< itemsize). */
  private carry: Uint8Array = new Uint8Array(0);

  constructor(
    readonly from: DType,
    readonly to: DType,
  ) {
    this.itemsize = dtypeBytes(from);
  }

  get overflowCount(): number {
    return this.overflow.count;
  }

  push(chunk: Uint8Array): Uint8Array {
    const total = this.carry.length + chunk.length;
    const whole = total - (total % this.itemsize);
    if (whole === 0) {
      this.carry = concat(this.carry, chunk);
      return new Uint8Array(0);
    }
    const elements = this.alignedElements(chunk, whole);
    this.carry = chunk.slice(chunk.length - (total - whole));
    return castElements(elements, this.from, this.to, this.overflow);
  }

  finish(): void {
    if (this.carry.length !== 0) {
      fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `tensor bytes end inside a ${this.from} element (${this.carry.length} stray bytes)`);
    }
  }

  /** The first `whole` bytes of carry+chunk, at an offset the typed-array views accept. */
  private alignedElements(chunk: Uint8Array, whole: number): Uint8Array {
    if (this.carry.length === 0 && chunk.byteOffset % this.itemsize === 0) return chunk.subarray(0, whole);
    const out = new Uint8Array(whole);
    out.set(this.carry);
    out.set(chunk.subarray(0, whole - this.carry.length), this.carry.length);
    return out;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Counter a caller passes to castChunks to learn the overflow count once the stream ends. */
export interface CastStats {
  overflowCount: number;
}

/** Casts a chunk stream; adds the overflow count to `stats` when the stream ends. */
export async function* castChunks(
  chunks: AsyncIterable<Uint8Array>,
  from: DType,
  to: DType,
  stats?: CastStats,
): AsyncGenerator<Uint8Array> {
  const caster = createCaster(from, to);
  for await (const chunk of chunks) {
    const out = caster.push(chunk);
    if (out.length > 0) yield out;
  }
  caster.finish();
  if (stats) stats.overflowCount += caster.overflowCount;
}

/** Casts a whole buffer (small tensors, tests). */
export function castBytes(bytes: Uint8Array, from: DType, to: DType): { bytes: Uint8Array; overflowCount: number } {
  const caster = createCaster(from, to);
  const out = caster.push(bytes);
  caster.finish();
  return { bytes: out, overflowCount: caster.overflowCount };
}
