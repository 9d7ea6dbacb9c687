/**
 * What the Diffusers schedulers share: reading scheduler_config.json, the training noise schedule
 * (betas, alphas_cumprod) and the inference timestep spacings, computed with the same float32 /
 * float64 steps as Diffusers 0.31 on PyTorch's CPU kernels.
 */
import { ErrorCode, fail } from '../../errors.js';
import { f32, fmaf, roundHalfEven } from '../tensor.js';

export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';

/** The scheduler_config.json keys the schedulers read (snake_case, as Diffusers writes them). */
export interface SchedulerConfigJson {
  readonly _class_name?: string;
  readonly num_train_timesteps?: number;
  readonly beta_start?: number;
  readonly beta_end?: number;
  readonly beta_schedule?: string;
  readonly trained_betas?: readonly number[] | null;
  readonly prediction_type?: string;
  readonly timestep_spacing?: string;
  readonly steps_offset?: number;
  readonly set_alpha_to_one?: boolean;
  readonly skip_prk_steps?: boolean;
  readonly clip_sample?: boolean;
  readonly clip_sample_range?: number;
  readonly thresholding?: boolean;
  readonly dynamic_thresholding_ratio?: number;
  readonly sample_max_value?: number;
  readonly rescale_betas_zero_snr?: boolean;
  readonly interpolation_type?: string;
  readonly use_karras_sigmas?: boolean | null;
  readonly use_exponential_sigmas?: boolean | null;
  readonly use_beta_sigmas?: boolean | null;
  readonly timestep_type?: string;
  readonly final_sigmas_type?: string;
  readonly [key: string]: unknown;
}

/** Where schedulers draw noise from: a TorchGenerator, or anything drawing like one. */
export interface NoiseSource {
  randn(shape: readonly number[]): Float32Array;
}

/** Per-step inputs beyond the model output: the generator for schedulers that draw noise. */
export interface StepContext {
  readonly generator?: NoiseSource;
  /** Shape of the sample (the generator draws tensors of this shape). */
  readonly shape: readonly number[];
}

/** The scheduler API the pipeline drives (Diffusers' method names in camelCase). */
export interface Scheduler {
  readonly className: SchedulerClassName;
  /** Steps per UNet call pattern: 1 for every scheduler here (Diffusers' `scheduler.order`). */
  readonly order: number;
  readonly predictionType: PredictionType;
  readonly numTrainTimesteps: number;
  /** `alphas_cumprod` of the training schedule (float32). */
  readonly alphasCumprod: Float32Array;
  /** The full schedule after setTimesteps (`scheduler.timesteps`): integers, or float32 values (Euler). */
  readonly timesteps: readonly number[];
  /** Standard deviation of the initial noise (`scheduler.init_noise_sigma`), a float32 value. */
  readonly initNoiseSigma: number;
  /**
   * Sets the inference schedule. With `strength` (img2img), returns only the timesteps the loop
   * runs (`pipeline.get_timesteps`: the last `int(n * strength)`) and starts the scheduler there;
   * without, returns the full schedule.
   */
  setTimesteps(numInferenceSteps: number, strength?: number): number[];
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array;
  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, ctx: StepContext): Float32Array;
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array;
}

export type SchedulerClassName = 'PNDMScheduler' | 'DDIMScheduler' | 'EulerDiscreteScheduler' | 'EulerAncestralDiscreteScheduler';

/** Options every scheduler reads, after class defaults are applied. */
export interface BaseOptions {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: readonly number[] | null;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
}

export interface ClassDefaults {
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  timestepSpacing: TimestepSpacing;
}

function bad(what: string, value: unknown, expected: string): never {
  fail(ErrorCode.E_SCHEDULER, undefined, `scheduler config ${what} is ${JSON.stringify(value)} (expected ${expected}).`);
}

export function readNumber(cfg: SchedulerConfigJson, key: string, dflt: number, integer = false): number {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) bad(key, v, integer ? 'an integer' : 'a number');
  return v;
}

export function readBool(cfg: SchedulerConfigJson, key: string, dflt: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') bad(key, v, 'true or false');
  return v;
}

export function readEnum<T extends string>(cfg: SchedulerConfigJson, key: string, dflt: T, allowed: readonly T[]): T {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string' || !allowed.includes(v as T)) bad(key, v, allowed.map((a) => `"${a}"`).join(' or '));
  return v as T;
}

export function readBaseOptions(cfg: SchedulerConfigJson, d: ClassDefaults): BaseOptions {
  const trained = cfg.trained_betas;
  if (trained !== undefined && trained !== null && (!Array.isArray(trained) || trained.some((b) => typeof b !== 'number'))) {
    bad('trained_betas', trained, 'null or a list of numbers');
  }
  const numTrainTimesteps = readNumber(cfg, 'num_train_timesteps', 1000, true);
  if (numTrainTimesteps < 2) bad('num_train_timesteps', numTrainTimesteps, '>= 2');
  const options: BaseOptions = {
    numTrainTimesteps,
    betaStart: readNumber(cfg, 'beta_start', d.betaStart),
    betaEnd: readNumber(cfg, 'beta_end', d.betaEnd),
    betaSchedule: readEnum(cfg, 'beta_schedule', d.betaSchedule, ['linear', 'scaled_linear', 'squaredcos_cap_v2']),
    trainedBetas: trained ?? null,
    predictionType: readEnum(cfg, 'prediction_type', 'epsilon', ['epsilon', 'v_prediction', 'sample']),
    timestepSpacing: readEnum(cfg, 'timestep_spacing', d.timestepSpacing, ['leading', 'trailing', 'linspace']),
    stepsOffset: readNumber(cfg, 'steps_offset', 0, true),
    rescaleBetasZeroSnr: readBool(cfg, 'rescale_betas_zero_snr', false),
  };
  if (options.trainedBetas && options.trainedBetas.length !== numTrainTimesteps) {
    bad('trained_betas length', options.trainedBetas.length, String(numTrainTimesteps));
  }
  return options;
}

// ------------------------------------------------------------------------------------------------
// Training noise schedule
// ------------------------------------------------------------------------------------------------

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` as PyTorch 1.13's x86-64 CPU kernel
 * computes it: `step = (end - start) / (steps - 1)` in float; the first half counts up from
 * `start`, the second half down from `end`. Blocks of 16 go through the AVX2 vector path (two
 * vectors of 8: base `start + step * idx` or `end - step * (steps - idx - 1)` at each vector's
 * first index, then `base + i * step`), the remainder through the scalar path; the compiler fused
 * each multiply-add. This matters in the last bit of the betas (and so of alphas_cumprod and the
 * sigmas: without it up to 4.8e-7 off at t = 751 of the SD schedule).
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const at = (idx: number): number => (idx < halfway ? fmaf(step, idx, s) : fmaf(-step, steps - idx - 1, e));
  let idx = 0;
  for (; idx + 16 <= steps; idx += 8) {
    const base = at(idx);
    for (let i = 0; i < 8; i++) out[idx + i] = i === 0 ? base : fmaf(i, step, base);
  }
  for (; idx < steps; idx++) out[idx] = at(idx);
  return out;
}

/** Diffusers' `betas_for_alpha_bar` (cosine), in double, then float32. */
function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

export function computeBetas(o: BaseOptions): Float32Array {
  let betas: Float32Array;
  if (o.trainedBetas) betas = Float32Array.from(o.trainedBetas);
  else if (o.betaSchedule === 'linear') betas = torchLinspaceF32(o.betaStart, o.betaEnd, o.numTrainTimesteps);
  else if (o.betaSchedule === 'scaled_linear') {
    betas = torchLinspaceF32(Math.sqrt(o.betaStart), Math.sqrt(o.betaEnd), o.numTrainTimesteps);
    for (let i = 0; i < betas.length; i++) betas[i] = f32(betas[i] * betas[i]);
  } else betas = cosineBetas(o.numTrainTimesteps);
  return o.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** `torch.cumprod` on a float32 CPU tensor: accumulated in double, each output rounded to float32. */
export function cumprod(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i];
    out[i] = acc;
  }
  return out;
}

/** `alphas_cumprod` from betas: `cumprod(1 - betas)`. */
export function alphasCumprodOf(betas: Float32Array): Float32Array {
  return cumprod(betas.map((b) => f32(1 - b)));
}

/** Diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1) in float32. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const acp = alphasCumprodOf(betas);
  const sqrtAcp = acp.map((a) => f32(Math.sqrt(a)));
  const first = sqrtAcp[0];
  const last = sqrtAcp[sqrtAcp.length - 1];
  const scale = f32(first / f32(first - last));
  const bar = sqrtAcp.map((s) => {
    const v = f32(f32(s - last) * scale);
    return f32(v * v);
  });
  const out = new Float32Array(betas.length);
  out[0] = f32(1 - bar[0]);
  for (let i = 1; i < bar.length; i++) out[i] = f32(1 - f32(bar[i] / bar[i - 1]));
  return out;
}

// ------------------------------------------------------------------------------------------------
// Inference timesteps
// ------------------------------------------------------------------------------------------------

/** `np.arange(start, stop, step)` for float arguments: numpy fills `start + i * (start + step - start)`. */
export function npArange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  return Array.from({ length: n }, (_, i) => (i === 0 ? start : i === 1 ? start + step : start + i * delta));
}

/** `np.linspace(start, stop, num)` in float64 (endpoint included). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/**
 * The descending integer timesteps of DDIM/PNDM-style spacings (before any scheduler-specific
 * reordering), as Diffusers computes them.
 */
export function integerTimesteps(spacing: TimestepSpacing, numTrain: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace') return npLinspace(0, numTrain - 1, n).map(roundHalfEven).reverse();
  if (spacing === 'leading') {
    const ratio = Math.floor(numTrain / n);
    return Array.from({ length: n }, (_, i) => i * ratio + stepsOffset).reverse();
  }
  const ratio = numTrain / n;
  return npArange(numTrain, 0, -ratio).map((t) => roundHalfEven(t) - 1);
}

export function checkSteps(n: number, numTrain: number): void {
  if (!Number.isInteger(n) || n < 1) fail(ErrorCode.E_USAGE, undefined, `number of inference steps ${n} is not a positive integer.`);
  if (n > numTrain) fail(ErrorCode.E_USAGE, undefined, `number of inference steps ${n} is larger than num_train_timesteps ${numTrain}.`);
}

/** img2img's `get_timesteps`: how many leading entries of the schedule to skip. */
export function img2imgStart(n: number, strength: number): number {
  if (!(strength >= 0 && strength <= 1)) fail(ErrorCode.E_USAGE, undefined, `strength ${strength} is out of range (expected 0 <= strength <= 1).`);
  const initTimestep = Math.min(Math.floor(n * strength), n);
  return Math.max(n - initTimestep, 0);
}

/** `torch.quantile(x, q)` with linear interpolation (float32 data). */
function quantile(sorted: Float32Array, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  const w = pos - lo;
  return f32(sorted[lo] + w * (sorted[hi] - sorted[lo]));
}

/** Diffusers' `_threshold_sample` (dynamic thresholding, per batch item), float32. */
export function thresholdSample(sample: Float32Array, batch: number, ratio: number, maxValue: number): Float32Array {
  const per = sample.length / batch;
  const out = new Float32Array(sample.length);
  for (let b = 0; b < batch; b++) {
    const part = sample.subarray(b * per, (b + 1) * per);
    const sorted = part.map(Math.abs).sort();
    const s = Math.min(Math.max(quantile(sorted, ratio), 1), f32(maxValue));
    for (let i = 0; i < per; i++) out[b * per + i] = f32(Math.min(Math.max(part[i], -s), s) / s);
  }
  return out;
}
