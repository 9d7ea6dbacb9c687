/**
 * PyTorch's CPU random number generator, reproduced bit for bit: the same seed gives the same
 * float32 tensors as `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))` and
 * `torch.rand(...)` (PyTorch 1.13, the version the goldens come from).
 *
 * How torch draws (ATen CPUGeneratorImpl, core/DistributionsHelper.h, native/cpu/DistributionTemplates.h):
 *
 * - Engine: a standard 32-bit Mersenne Twister (mt19937). `manual_seed(s)` initialises it from the
 *   low 32 bits of `s` (any value in [-2^63, 2^64) is accepted; negative ones wrap modulo 2^64)
 *   and clears the cached normal sample.
 * - float uniform in [0, 1): one 32-bit output `v`, `(v & (2^24 - 1)) * 2^-24`.
 *   double uniform: two outputs `hi`, `lo` joined as `hi << 32 | lo`, masked to 53 bits, times 2^-53.
 * - `torch.rand` (float32): one float uniform per element, in C order.
 * - `torch.randn` (float32), two paths chosen by the element count:
 *   - fewer than 16 elements: per element, a double Box-Muller sample (`u1`, `u2` double uniforms,
 *     `r = sqrt(-2 log(1 - u2))`, `theta = 2 pi u1`, returns `r cos theta` and caches `r sin theta`
 *     for the next element; the cache lives in the generator and survives between calls), cast to
 *     float32;
 *   - 16 or more (the vectorised path, `normal_fill`): fill the whole tensor with float uniforms,
 *     then transform each block of 16 in place: for j < 8, `u1 = 1 - x[j]`, `u2 = x[j+8]`,
 *     `radius = sqrt(-2 log u1)`, `theta = 2pi * u2`, `x[j] = radius cos theta`,
 *     `x[j+8] = radius sin theta`; when the count is not a multiple of 16, 16 fresh uniforms
 *     overwrite the last 16 elements and that block is transformed again.
 *
 * The block transform runs in float32. x86-64 builds of PyTorch dispatch it to the AVX2 kernel
 * (`normal_fill_16_AVX2`), which evaluates `log`, `sin` and `cos` with the Cephes-derived
 * polynomials of `avx_mathfun.h` (float constants, `2pi` rounded to float) and whose multiply-adds
 * the compiler fused into FMA instructions. That is the arithmetic reproduced below, operation by
 * operation, since the goldens (and Diffusers on any x86-64 machine) come from it: evaluating the
 * same formula with correctly rounded float `log`/`cos`/`sin` instead gives a different last bit in
 * about 40% of the values (up to 1.7e-6 absolute), and computing it in double in about 67%.
 */
import { ErrorCode, fail } from '../errors.js';
import { floatBits, floatFromBits, fmaf } from './tensor.js';

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;
const TWO_POW_24_INV = 1 / 16777216;
const TWO_POW_32 = 4294967296;
const TWO_POW_53_INV = 1 / 9007199254740992;
const TWO_PI = 2 * Math.PI;
const f32 = Math.fround;

/** Largest seed torch accepts (2^64 - 1); the smallest is -2^63. */
export const MAX_TORCH_SEED = (1n << 64n) - 1n;
const MIN_TORCH_SEED = -(1n << 63n);

/** A seed as torch stores it: the unsigned 64-bit value. */
export function normalizeSeed(seed: bigint | number): bigint {
  let s: bigint;
  if (typeof seed === 'number') {
    if (!Number.isSafeInteger(seed)) {
      fail(ErrorCode.E_USAGE, undefined, `seed ${seed} is not a safe integer (pass larger seeds as a bigint).`);
    }
    s = BigInt(seed);
  } else {
    s = seed;
  }
  if (s < MIN_TORCH_SEED || s > MAX_TORCH_SEED) {
    fail(ErrorCode.E_USAGE, undefined, `seed ${s} is out of range (expected -2^63 <= seed <= 2^64-1).`);
  }
  return s < 0n ? s + (1n << 64n) : s;
}

/** The 32-bit Mersenne Twister as torch uses it (same seeding and output as std::mt19937). */
class MersenneTwister {
  private readonly state = new Uint32Array(N);
  private next = 0;
  private left = 1;

  constructor(seed32: number) {
    const st = this.state;
    st[0] = seed32 >>> 0;
    for (let j = 1; j < N; j++) {
      const prev = st[j - 1];
      st[j] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + j) >>> 0;
    }
  }

  private twist(): void {
    const st = this.state;
    for (let j = 0; j < N; j++) {
      const y = (st[j] & UPPER_MASK) | (st[(j + 1) % N] & LOWER_MASK);
      st[j] = st[(j + M) % N] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.left = N;
    this.next = 0;
  }

  /** Next 32-bit output, as an unsigned number. */
  nextUint32(): number {
    if (--this.left === 0) this.twist();
    let y = this.state[this.next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  clone(): MersenneTwister {
    const c = Object.create(MersenneTwister.prototype) as MersenneTwister;
    (c as unknown as { state: Uint32Array }).state = new Uint32Array(this.state);
    (c as unknown as { next: number }).next = this.next;
    (c as unknown as { left: number }).left = this.left;
    return c;
  }
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) fail(ErrorCode.E_USAGE, undefined, `tensor shape [${shape.join(', ')}] has an invalid dimension ${d}.`);
    n *= d;
  }
  if (n > 2 ** 31) fail(ErrorCode.E_LIMIT, undefined, `tensor shape [${shape.join(', ')}] has ${n} elements (expected <= 2^31).`);
  return n;
}

/**
 * A stateful torch CPU generator (`torch.Generator("cpu").manual_seed(seed)`): successive draws
 * continue the same stream, exactly as a pipeline drawing several tensors from one generator.
 */
export class TorchGenerator {
  private engine: MersenneTwister;
  private seedValue: bigint;
  /** torch's cached second Box-Muller sample of the double normal path. */
  private nextDoubleNormal: number | undefined;

  constructor(seed: bigint | number = 67280421310721n) {
    this.seedValue = normalizeSeed(seed);
    this.engine = new MersenneTwister(Number(this.seedValue & 0xffffffffn));
  }

  /** Reseeds (torch `manual_seed`) and returns this generator. */
  manualSeed(seed: bigint | number): this {
    this.seedValue = normalizeSeed(seed);
    this.engine = new MersenneTwister(Number(this.seedValue & 0xffffffffn));
    this.nextDoubleNormal = undefined;
    return this;
  }

  /** The seed as torch's `initial_seed()` reports it (unsigned 64-bit). */
  initialSeed(): bigint {
    return this.seedValue;
  }

  /** An independent copy with the same state. */
  clone(): TorchGenerator {
    const g = new TorchGenerator(this.seedValue);
    g.engine = this.engine.clone();
    g.nextDoubleNormal = this.nextDoubleNormal;
    return g;
  }

  /** Next raw 32-bit engine output. */
  nextUint32(): number {
    return this.engine.nextUint32();
  }

  private uniformFloat(): number {
    return (this.engine.nextUint32() & 0xffffff) * TWO_POW_24_INV;
  }

  private uniformDouble(): number {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * TWO_POW_53_INV;
  }

  /** One standard normal sample of torch's double path (`at::normal_distribution<double>`). */
  private normalDouble(): number {
    if (this.nextDoubleNormal !== undefined) {
      const cached = this.nextDoubleNormal;
      this.nextDoubleNormal = undefined;
      return cached;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = TWO_PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** `torch.rand(shape, generator=g)` in float32. */
  rand(shape: readonly number[]): Float32Array {
    const n = numel(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    return out;
  }

  /** `torch.randn(shape, generator=g)` in float32 (mean 0, std 1). */
  randn(shape: readonly number[]): Float32Array {
    const n = numel(shape);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = this.uniformFloat();
      boxMuller16(out, start);
    }
    return out;
  }
}

/** torch's AVX2 `normal_fill_16` on float32 data (mean 0, std 1), in place. */
function boxMuller16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[at + j]);
    const u2 = data[at + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * logf(u1))));
    const theta = f32(TWO_PI_F * u2);
    sincosf(theta);
    // fmadd(radius * cos, std, mean) with std 1 and mean 0 is the product itself.
    data[at + j] = f32(radius * sincosOut.cos);
    data[at + j + 8] = f32(radius * sincosOut.sin);
  }
}

// ------------------------------------------------------------------------------------------------
// float32 arithmetic of the AVX2 kernel
// ------------------------------------------------------------------------------------------------

const TWO_PI_F = f32(2 * Math.PI);
const SMALLEST_NORMAL_F = 1.1754943508222875e-38;

const LOG_SQRTHF = f32(0.707106781186547524);
const LOG_P = [7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/** Cephes single-precision natural log as `log256_ps` evaluates it (argument > 0 here). */
function logf(arg: number): number {
  const bits = floatBits(Math.max(arg, SMALLEST_NORMAL_F));
  let e = f32((bits >>> 23) - 127 + 1);
  // mantissa scaled into [0.5, 1)
  let x = floatFromBits((bits & ~0x7f800000) | 0x3f000000);
  let tmp = 0;
  if (x < LOG_SQRTHF) {
    tmp = x;
    e = f32(e - 1);
  }
  x = f32(f32(x - 1) + tmp);
  const z = f32(x * x);
  let y = LOG_P[0];
  for (let k = 1; k < LOG_P.length; k++) y = fmaf(y, x, LOG_P[k]);
  y = f32(y * x);
  y = fmaf(y, z, f32(e * LOG_Q1));
  y = f32(y - f32(z * 0.5));
  return fmaf(e, LOG_Q2, f32(x + y));
}

const FOPI = f32(1.27323954473516);
const DP1 = f32(-0.78515625);
const DP2 = f32(-2.4187564849853515625e-4);
const DP3 = f32(-3.77489497744594108e-8);
const SIN_P0 = f32(-1.9515295891e-4);
const SIN_P1 = f32(8.3321608736e-3);
const SIN_P2 = f32(-1.6666654611e-1);
const COS_P0 = f32(2.443315711809948e-5);
const COS_P1 = f32(-1.388731625493765e-3);
const COS_P2 = f32(4.166664568298827e-2);
const sincosOut = { sin: 0, cos: 0 };

/** Cephes single-precision sine and cosine as `sincos256_ps` evaluates them, into `sincosOut`. */
function sincosf(arg: number): void {
  let x = Math.abs(arg);
  // octant, rounded up to even (Cephes' j = (j + 1) & ~1)
  const j = (Math.trunc(f32(x * FOPI)) + 1) & ~1;
  x = fmaf(j, DP1, x);
  x = fmaf(j, DP2, x);
  x = fmaf(j, DP3, x);
  const z = f32(x * x);
  let c = fmaf(COS_P0, z, COS_P1);
  c = fmaf(c, z, COS_P2);
  c = f32(c * z);
  c = f32(fmaf(c, z, -f32(z * 0.5)) + 1);
  let s = fmaf(SIN_P0, z, SIN_P1);
  s = fmaf(s, z, SIN_P2);
  s = f32(s * z);
  s = fmaf(s, x, x);
  const sinFirst = (j & 2) === 0;
  let sin = sinFirst ? s : c;
  let cos = sinFirst ? c : s;
  if (arg < 0 !== ((j & 4) !== 0)) sin = -sin;
  if (((j - 2) & 4) === 0) cos = -cos;
  sincosOut.sin = sin;
  sincosOut.cos = cos;
}

/** `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`, float32, C order. */
export function torchRandn(seed: bigint | number, shape: readonly number[]): Float32Array {
  return new TorchGenerator(seed).randn(shape);
}

/** `torch.rand(shape, generator=torch.Generator("cpu").manual_seed(seed))`, float32, C order. */
export function torchRand(seed: bigint | number, shape: readonly number[]): Float32Array {
  return new TorchGenerator(seed).rand(shape);
}
