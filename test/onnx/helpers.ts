/** Shared helpers of the ONNX export tests: golden tensors, onnxruntime runs, error measures. */
import { readFileSync } from 'node:fs';
import { sharedFixture } from '../helpers/paths.js';
import { loadOnnxRuntime } from '../../src/onnx/runtime.js';
import { f16BitsToF32Bits } from '../../src/diffusers/cast.js';

export interface GoldenTensor {
  dtype: string;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

/** Reads a small golden safetensors file whole (forward goldens are a few kB). */
export function readGolden(rel: string): Record<string, GoldenTensor> {
  const buf = readFileSync(sharedFixture(rel));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, GoldenTensor> = {};
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    const copy = new Uint8Array(bytes).buffer;
    const data = e.dtype === 'I64' ? new BigInt64Array(copy) : new Float32Array(copy);
    out[name] = { dtype: e.dtype, shape: e.shape, data };
  }
  return out;
}

export type Feed = Record<string, { type: 'float32' | 'float16' | 'int64' | 'int32'; data: Float32Array | BigInt64Array | Int32Array; dims: number[] }>;

/** Runs a model file on the CPU EP; float16 outputs come back as float32. */
export async function runModel(modelPath: string, feed: Feed): Promise<Record<string, { dims: readonly number[]; data: Float32Array | BigInt64Array }>> {
  const ort = await loadOnnxRuntime();
  const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] });
  try {
    const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
    for (const [name, f] of Object.entries(feed)) {
      if (f.type === 'float16') {
        const src = f.data as Float32Array;
        const half = new Uint16Array(src.length);
        for (let i = 0; i < src.length; i++) half[i] = f32ToF16(src[i]);
        feeds[name] = new ort.Tensor('float16', half, f.dims);
      } else {
        feeds[name] = new ort.Tensor(f.type, f.data as never, f.dims);
      }
    }
    const res = await session.run(feeds);
    const out: Record<string, { dims: readonly number[]; data: Float32Array | BigInt64Array }> = {};
    for (const [name, t] of Object.entries(res)) {
      if (t.type === 'float16') {
        const raw = t.data as Uint16Array;
        const f = new Float32Array(raw.length);
        const u = new Uint32Array(f.buffer);
        for (let i = 0; i < raw.length; i++) u[i] = f16BitsToF32Bits(raw[i]);
        out[name] = { dims: t.dims, data: f };
      } else {
        out[name] = { dims: t.dims, data: t.data as Float32Array };
      }
    }
    return out;
  } finally {
    await session.release();
  }
}

function f32ToF16(x: number): number {
  const f = new Float32Array([x]);
  const bits = new Uint32Array(f.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export interface ErrorStats {
  maxAbs: number;
  /** max |a-b| / |b| over elements with |b| > 1e-3 (relative error where it is meaningful). */
  maxRel: number;
  /** Elements outside atol + rtol·|expected| (numpy allclose rule). */
  violations: number;
}

export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, atol = 1e-4, rtol = 1e-3): ErrorStats {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxAbs = 0;
  let maxRel = 0;
  let violations = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
    const e = Math.abs(expected[i]);
    if (e > 1e-3) maxRel = Math.max(maxRel, d / e);
    if (!(d <= atol + rtol * e)) violations++;
  }
  return { maxAbs, maxRel, violations };
}
