/**
 * The one tensor type of the generation engine: float32 data in C order plus its shape. Every
 * operation here is elementwise and rounds each intermediate result to float32 (`Math.fround`),
 * in the order PyTorch evaluates the same expression, so results match PyTorch's float32 CPU
 * kernels to the last bit wherever those kernels are correctly rounded.
 */
import { ErrorCode, fail } from '../errors.js';

export interface Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

export const f32 = Math.fround;

export function numelOfShape(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensor(data: Float32Array, shape: readonly number[]): Tensor {
  if (data.length !== numelOfShape(shape)) {
    fail(ErrorCode.E_PIPELINE, undefined, `tensor data has ${data.length} elements (expected ${numelOfShape(shape)} for shape [${shape.join(', ')}]).`);
  }
  return { data, shape: [...shape] };
}

/** Throws E_PIPELINE unless `t` has exactly `shape`. */
export function expectShape(t: Tensor, shape: readonly number[], what: string): void {
  const ok = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]) && t.data.length === numelOfShape(shape);
  if (!ok) fail(ErrorCode.E_PIPELINE, undefined, `${what} has shape [${t.shape.join(', ')}] (expected [${shape.join(', ')}]).`);
}

/** Concatenates along the first dimension (torch.cat(..., dim=0)). */
export function concat0(parts: readonly Tensor[]): Tensor {
  const rest = parts[0].shape.slice(1);
  const total = parts.reduce((n, p) => n + p.data.length, 0);
  const data = new Float32Array(total);
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { data, shape: [parts.reduce((n, p) => n + p.shape[0], 0), ...rest] };
}

/** Splits the first dimension into `n` equal chunks (torch.chunk(n, dim=0)). */
export function chunk0(t: Tensor, n: number): Tensor[] {
  const per = t.shape[0] / n;
  const size = t.data.length / n;
  return Array.from({ length: n }, (_, i) => ({ data: t.data.slice(i * size, (i + 1) * size), shape: [per, ...t.shape.slice(1)] }));
}

/** Elementwise map into a new float32 array (the callback's result is rounded to float32). */
export function map1(a: Float32Array, fn: (x: number) => number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = fn(a[i]);
  return out;
}

export function map2(a: Float32Array, b: Float32Array, fn: (x: number, y: number) => number): Float32Array {
  if (a.length !== b.length) fail(ErrorCode.E_PIPELINE, undefined, `elementwise operands have ${a.length} and ${b.length} elements (expected equal).`);
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = fn(a[i], b[i]);
  return out;
}

/** float32 square root of a float32 value (torch `x ** 0.5` on a float tensor; correctly rounded). */
export function sqrtf(x: number): number {
  return f32(Math.sqrt(x));
}

/** numpy's round (half to even). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const bitsView = new DataView(new ArrayBuffer(4));

/** The IEEE bits of a float32 value. */
export function floatBits(x: number): number {
  bitsView.setFloat32(0, x, true);
  return bitsView.getUint32(0, true);
}

export function floatFromBits(bits: number): number {
  bitsView.setUint32(0, bits >>> 0, true);
  return bitsView.getFloat32(0, true);
}

/**
 * `a * b + c` rounded once to float32 (an FMA instruction) for float32 inputs. The product is exact
 * in double; the double sum is exact too unless it was rounded, and then only a sum landing exactly
 * halfway between two floats could round differently: that case is settled with the sum's error.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s) return r;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0) return r;
  const other = nextFloatToward(r, s);
  if (s - r !== other - s) return r; // not a tie: double rounding cannot change the result
  return err > 0 === other > r ? other : r;
}

/** The float32 next to `r` in the direction of `toward`. */
function nextFloatToward(r: number, toward: number): number {
  const bits = floatBits(r);
  if (r === 0) return toward > 0 ? floatFromBits(1) : floatFromBits(0x80000001);
  const up = toward > r === r > 0;
  return floatFromBits(up ? bits + 1 : bits - 1);
}

