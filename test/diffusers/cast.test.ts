import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32Bits,
  canCast,
  castBytes,
  castChunks,
  createCaster,
  f16BitsToF32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
} from '../../src/diffusers/cast.js';
import type { DType } from '../../src/dtypes.js';
import { CkptError } from '../../src/errors.js';

// ---- helpers ------------------------------------------------------------------------------------

const view = new DataView(new ArrayBuffer(8));

function f32Value(bits: number): number {
  view.setUint32(0, bits >>> 0, true);
  return view.getFloat32(0, true);
}

function f32Bits(value: number): number {
  view.setFloat32(0, value, true);
  return view.getUint32(0, true);
}

function u32Bytes(words: number[]): Uint8Array {
  return new Uint8Array(new Uint32Array(words.map((w) => w >>> 0)).buffer);
}

function u16Words(bytes: Uint8Array): number[] {
  const copy = bytes.slice();
  return Array.from(new Uint16Array(copy.buffer, 0, copy.length / 2));
}

function u32Words(bytes: Uint8Array): number[] {
  const copy = bytes.slice();
  return Array.from(new Uint32Array(copy.buffer, 0, copy.length / 4));
}

/** Small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function isF16NaN(h: number): boolean {
  return (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
}

// ---- slow references, written from the number values, not from the bit tricks of cast.ts ----------

/** Value of a float16 code by its definition. */
function f16ValueByDefinition(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Positive finite float16 values in code order (code i has value POSITIVE_HALVES[i]). */
const POSITIVE_HALVES = Array.from({ length: 0x7c00 }, (_, code) => f16ValueByDefinition(code));

/**
 * Nearest of two neighbours `lo <= a < hi` (codes loCode, loCode+1), ties to the even code.
 * Compares with the midpoint, which is exact in float64 for these narrow formats.
 */
function nearestEven(a: number, lo: number, hi: number, loCode: number): number {
  const mid = (lo + hi) / 2;
  if (a < mid) return loCode;
  if (a > mid) return loCode + 1;
  return loCode % 2 === 0 ? loCode : loCode + 1;
}

function referenceF32ToF16(bits: number): number {
  const x = f32Value(bits);
  const sign = bits & 0x80000000 ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  // Largest code whose value <= a (binary search).
  let lo = 0;
  let hi = POSITIVE_HALVES.length - 1;
  while (lo < hi) {
    const m = (lo + hi + 1) >> 1;
    if (POSITIVE_HALVES[m] <= a) lo = m;
    else hi = m - 1;
  }
  if (POSITIVE_HALVES[lo] === a) return sign | lo;
  // Past 65504 the next step would be 2^16, which is Inf (code 0x7C00).
  const upper = lo === 0x7bff ? 65536 : POSITIVE_HALVES[lo + 1];
  return sign | nearestEven(a, POSITIVE_HALVES[lo], upper, lo);
}

function referenceF32ToBf16(bits: number): number {
  const sign = bits & 0x80000000 ? 0x8000 : 0;
  const abs = bits & 0x7fffffff;
  const a = f32Value(abs);
  if (a === Infinity) return sign | 0x7f80;
  const loCode = abs >>> 16;
  const lo = f32Value(loCode << 16);
  if (lo === a) return sign | loCode;
  const hi = loCode === 0x7f7f ? 2 ** 128 : f32Value((loCode + 1) << 16);
  return sign | nearestEven(a, lo, hi, loCode);
}

// ---- tests ----------------------------------------------------------------------------------------

describe('float16 <-> float32, exhaustive', () => {
  it('widens every one of the 65,536 halves to its exact value', () => {
    for (let h = 0; h < 65536; h++) {
      const bits = f16BitsToF32Bits(h);
      const expected = f16ValueByDefinition(h);
      if (Number.isNaN(expected)) {
        expect(Number.isNaN(f32Value(bits))).toBe(true);
      } else {
        expect(f32Value(bits)).toBe(expected);
        expect(bits).toBe(f32Bits(expected));
      }
    }
  });

  it('F16 -> F32 -> F16 is the identity on all 65,536 bit patterns (NaN payloads included)', () => {
    const halves = new Uint16Array(65536).map((_, i) => i);
    const wide = castBytes(new Uint8Array(halves.buffer), 'F16', 'F32');
    expect(wide.bytes.length).toBe(65536 * 4);
    const back = castBytes(wide.bytes, 'F32', 'F16');
    expect(u16Words(back.bytes)).toEqual(Array.from(halves));
    expect(back.overflowCount).toBe(0);
  });
});

describe('float32 -> float16, tricky values', () => {
  const cases: [string, number, number][] = [
    ['1.0', f32Bits(1), 0x3c00],
    ['-2.0', f32Bits(-2), 0xc000],
    ['65504 (max half)', f32Bits(65504), 0x7bff],
    ['just below 65520', 0x477fefff, 0x7bff],
    ['65520 -> Inf (tie to even)', f32Bits(65520), 0x7c00],
    ['-65520 -> -Inf', f32Bits(-65520), 0xfc00],
    ['1e9 -> Inf', f32Bits(1e9), 0x7c00],
    ['max float -> Inf', 0x7f7fffff, 0x7c00],
    ['+Inf', 0x7f800000, 0x7c00],
    ['-Inf', 0xff800000, 0xfc00],
    ['+0', 0, 0],
    ['-0', 0x80000000, 0x8000],
    ['1 + 2^-11: tie, stays at even 1.0', f32Bits(1 + 2 ** -11), 0x3c00],
    ['1 + 3*2^-11: tie, goes up to even', f32Bits(1 + 3 * 2 ** -11), 0x3c02],
    ['1 + 2^-11 + 2^-23: above the tie', f32Bits(1 + 2 ** -11 + 2 ** -23), 0x3c01],
    ['1 + 2^-11 - 2^-23: below the tie', f32Bits(1 + 2 ** -11 - 2 ** -23), 0x3c00],
    ['2^-14 (min normal)', f32Bits(2 ** -14), 0x0400],
    ['largest subnormal', f32Bits(1023 * 2 ** -24), 0x03ff],
    ['2^-14 - 2^-25: tie between subnormal and normal, to even', f32Bits(2 ** -14 - 2 ** -25), 0x0400],
    ['2^-24 (min subnormal)', f32Bits(2 ** -24), 0x0001],
    ['-2^-24', f32Bits(-(2 ** -24)), 0x8001],
    ['2^-25: tie, to even zero', f32Bits(2 ** -25), 0x0000],
    ['-2^-25: tie, to -0', f32Bits(-(2 ** -25)), 0x8000],
    ['just above 2^-25', 0x33000001, 0x0001],
    ['3*2^-25: tie between 1 and 2 ulps, to even', f32Bits(3 * 2 ** -25), 0x0002],
    ['5*2^-25: tie between 2 and 3 ulps, to even', f32Bits(5 * 2 ** -25), 0x0002],
    ['float32 subnormal -> 0', 0x00000001, 0x0000],
    ['quiet NaN', 0x7fc00000, 0x7e00],
    ['negative quiet NaN', 0xffc00000, 0xfe00],
  ];
  it.each(cases)('%s', (_name, input, expected) => {
    expect(f32BitsToF16Bits(input)).toBe(expected);
    expect(referenceF32ToF16(input) === expected || isF16NaN(expected)).toBe(true);
  });

  it('keeps NaN a NaN with its sign and top payload bits', () => {
    expect(f32BitsToF16Bits(0x7fa00000)).toBe(0x7d00); // payload 0x100 kept
    expect(f32BitsToF16Bits(0xfff02000)).toBe(0xff81);
    // Payload only in the 13 dropped bits: must not turn into Inf.
    expect(f32BitsToF16Bits(0x7f800001)).toBe(0x7e00);
    expect(f32BitsToF16Bits(0xff800fff)).toBe(0xfe00);
  });

  it('counts finite values that became Inf, not Inf inputs', () => {
    const input = u32Bytes([f32Bits(65520), f32Bits(-1e6), f32Bits(65504), 0x7f800000, 0x7fc00000, f32Bits(1)]);
    const { bytes, overflowCount } = castBytes(input, 'F32', 'F16');
    expect(u16Words(bytes)).toEqual([0x7c00, 0xfc00, 0x7bff, 0x7c00, 0x7e00, 0x3c00]);
    expect(overflowCount).toBe(2);
  });

  it('matches the slow reference on random bit patterns and on values near the half range', () => {
    const next = prng(1234);
    for (let i = 0; i < 200_000; i++) {
      let bits = next();
      // Half of the samples: exponent within the float16 range and a bit around it.
      if (i % 2 === 0) bits = (bits & 0x807fffff) | (((next() % 48) + 97) << 23);
      if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) continue; // NaN: tested above
      const got = f32BitsToF16Bits(bits);
      const want = referenceF32ToF16(bits);
      if (got !== want) expect({ bits: bits.toString(16), got: got.toString(16) }).toEqual({ bits: bits.toString(16), got: want.toString(16) });
    }
  });
});

describe('float32 -> float16, the array path', () => {
  it('equals the slow reference for every exponent and every rounding case of the dropped 13 bits', () => {
    const next = prng(99);
    const words: number[] = [];
    const tails = [0, 1, 0xfff, 0x1000, 0x1001, 0x1fff];
    for (let exponent = 0; exponent < 256; exponent++) {
      for (const sign of [0, 0x80000000]) {
        for (const tail of tails) {
          for (const kept of [0, 1, 0x3fe, 0x3ff, next() & 0x3ff]) {
            const bits = (sign | (exponent << 23) | (kept << 13) | tail) >>> 0;
            if (exponent === 255 && (kept | tail) !== 0) continue; // NaN payloads: tested above
            words.push(bits);
          }
        }
      }
    }
    for (let i = 0; i < 100_000; i++) {
      const bits = next() >>> 0;
      if ((bits & 0x7f800000) !== 0x7f800000) words.push(bits);
    }
    const { bytes } = castBytes(u32Bytes(words), 'F32', 'F16');
    const got = u16Words(bytes);
    const bad = words.map((w, i) => [w, got[i], referenceF32ToF16(w)]).filter(([, g, r]) => g !== r);
    expect(bad.slice(0, 5).map(([w, g, r]) => `${w.toString(16)}: ${g.toString(16)} != ${r.toString(16)}`)).toEqual([]);
  });
});

describe('float32 -> bfloat16', () => {
  const cases: [string, number, number][] = [
    ['1.0', f32Bits(1), 0x3f80],
    ['1 + 2^-8: tie, to even', f32Bits(1 + 2 ** -8), 0x3f80],
    ['1 + 3*2^-8: tie, to even', f32Bits(1 + 3 * 2 ** -8), 0x3f82],
    ['just above the tie', 0x3f808001, 0x3f81],
    ['max float -> Inf', 0x7f7fffff, 0x7f80],
    ['largest value rounding down', 0x7f7f7fff, 0x7f7f],
    ['-Inf', 0xff800000, 0xff80],
    ['-0', 0x80000000, 0x8000],
    ['subnormal tie, to even', 0x00008000, 0x0000],
    ['subnormal tie, to even (up)', 0x00018000, 0x0002],
    ['quiet NaN', 0x7fc00000, 0x7fc0],
    ['NaN with payload only in the dropped bits', 0x7f800001, 0x7fc0],
    ['NaN payload kept', 0xff812345, 0xff81],
  ];
  it.each(cases)('%s', (_name, input, expected) => {
    expect(f32BitsToBf16Bits(input)).toBe(expected);
  });

  it('matches the slow reference on random bit patterns', () => {
    const next = prng(99);
    for (let i = 0; i < 200_000; i++) {
      const bits = next();
      if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) continue;
      const got = f32BitsToBf16Bits(bits);
      const want = referenceF32ToBf16(bits);
      if (got !== want) expect({ bits: bits.toString(16), got: got.toString(16) }).toEqual({ bits: bits.toString(16), got: want.toString(16) });
    }
  });

  it('counts overflow to Inf', () => {
    const { bytes, overflowCount } = castBytes(u32Bytes([0x7f7fffff, 0x7f7f7fff, 0xff800000]), 'F32', 'BF16');
    expect(u16Words(bytes)).toEqual([0x7f80, 0x7f7f, 0xff80]);
    expect(overflowCount).toBe(1);
  });
});

describe('other casts', () => {
  it('widens BF16 exactly', () => {
    for (let h = 0; h < 65536; h += 7) expect(bf16BitsToF32Bits(h)).toBe((h << 16) >>> 0);
    const { bytes } = castBytes(new Uint8Array(new Uint16Array([0x3f80, 0xc040, 0x7f80]).buffer), 'BF16', 'F32');
    expect(u32Words(bytes)).toEqual([0x3f800000, 0xc0400000, 0x7f800000]);
  });

  it('casts F16 <-> BF16 through float32', () => {
    // 65504 (F16 max) is not a bf16 value: it rounds to 65536 (0x4780).
    const f16 = new Uint8Array(new Uint16Array([0x3c00, 0x7bff, 0x0001, 0xfc00]).buffer);
    expect(u16Words(castBytes(f16, 'F16', 'BF16').bytes)).toEqual([0x3f80, 0x4780, 0x3380, 0xff80]);
    // bf16 70000-ish (0x4789 = 70144) overflows float16.
    const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0x4789, 0x3380]).buffer);
    const back = castBytes(bf16, 'BF16', 'F16');
    expect(u16Words(back.bytes)).toEqual([0x3c00, 0x7c00, 0x0001]);
    expect(back.overflowCount).toBe(1);
  });

  it('narrows F64 to F32 with round to nearest even, Inf on overflow, NaN with sign', () => {
    const values = [1, 1 + 2 ** -24, 1 + 3 * 2 ** -24, 1 + 2 ** -24 + 2 ** -50, 1e39, -1e39, 2 ** -150, 3 * 2 ** -150, -0, Infinity];
    const f64 = new Float64Array([...values, NaN, NaN]);
    const words = new Uint32Array(f64.buffer);
    words[2 * values.length + 1] = 0xfff80000; // the first NaN becomes -NaN
    const { bytes, overflowCount } = castBytes(new Uint8Array(f64.buffer), 'F64', 'F32');
    const expected = [0x3f800000, 0x3f800000, 0x3f800002, 0x3f800001, 0x7f800000, 0xff800000, 0, 2, 0x80000000, 0x7f800000, 0xffc00000, 0x7fc00000];
    expect(u32Words(bytes)).toEqual(expected);
    expect(overflowCount).toBe(2);
  });

  it('casts F64 to F16 as float32 then float16 (the path Diffusers takes)', () => {
    const f64 = new Float64Array([1 + 2 ** -11 + 2 ** -40, 70000]);
    const { bytes, overflowCount } = castBytes(new Uint8Array(f64.buffer), 'F64', 'F16');
    // 1 + 2^-11 + 2^-40 rounds to 1 + 2^-11 in float32, then ties to even 1.0 in float16.
    expect(u16Words(bytes)).toEqual([0x3c00, 0x7c00]);
    expect(overflowCount).toBe(1);
  });

  it('passes same-dtype bytes through untouched, integers included', () => {
    const bytes = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(castBytes(bytes, 'I64', 'I64').bytes).toBe(bytes);
    expect(castBytes(bytes, 'F32', 'F32').bytes).toBe(bytes);
  });

  it('never casts integer or bool tensors', () => {
    expect(canCast('I64', 'F32')).toBe(false);
    expect(canCast('F32', 'I32')).toBe(false);
    expect(canCast('BOOL', 'F16')).toBe(false);
    expect(canCast('F32', 'F64')).toBe(false);
    expect(canCast('F16', 'BF16')).toBe(true);
    expect(() => createCaster('I64', 'F32')).toThrow(expect.objectContaining({ code: 'E_TENSOR_DTYPE' }));
  });
});

describe('streaming', () => {
  async function* chunked(bytes: Uint8Array, sizes: () => number): AsyncGenerator<Uint8Array> {
    let offset = 0;
    while (offset < bytes.length) {
      const size = Math.min(sizes(), bytes.length - offset);
      // Copy into a buffer at an odd offset so typed-array views cannot be taken directly.
      const holder = new Uint8Array(size + 1);
      holder.set(bytes.subarray(offset, offset + size), 1);
      yield holder.subarray(1);
      offset += size;
    }
  }

  async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const c of chunks) parts.push(c.slice());
    return new Uint8Array(Buffer.concat(parts));
  }

  const pairs: [DType, DType][] = [
    ['F32', 'F16'],
    ['F32', 'BF16'],
    ['F16', 'F32'],
    ['BF16', 'F32'],
    ['F16', 'BF16'],
    ['BF16', 'F16'],
    ['F64', 'F32'],
    ['F64', 'F16'],
  ];

  it.each(pairs)('%s -> %s gives the same bytes for any chunking', async (from, to) => {
    const next = prng(7);
    const input = new Uint8Array(8 * 1001);
    const f32 = new Float32Array(input.buffer, 0, 2002);
    for (let i = 0; i < f32.length; i++) f32[i] = ((next() / 2 ** 32) - 0.5) * 2 ** ((next() % 40) - 20);
    if (from === 'F64') new Float64Array(input.buffer).forEach((_, i, a) => (a[i] = f32[i % f32.length] * 3.0000001));
    const whole = castBytes(input, from, to);
    for (const sizes of [() => 1, () => 3, () => (next() % 97) + 1, () => 4096]) {
      const stats = { overflowCount: 0 };
      const streamed = await collect(castChunks(chunked(input, sizes), from, to, stats));
      expect(Buffer.from(streamed).equals(Buffer.from(whole.bytes))).toBe(true);
      expect(stats.overflowCount).toBe(whole.overflowCount);
    }
  });

  it('fails when the stream ends inside an element', async () => {
    const stream = castChunks(chunked(new Uint8Array(6), () => 6), 'F32', 'F16');
    await expect(collect(stream)).rejects.toBeInstanceOf(CkptError);
    await expect(collect(castChunks(chunked(new Uint8Array(6), () => 6), 'F32', 'F16'))).rejects.toMatchObject({ code: 'E_SHAPE_MISMATCH' });
  });
});
