/**
 * DDIMScheduler (Diffusers 0.31): denoising diffusion implicit models, with `eta` (0 = the
 * deterministic DDIM the pipelines use by default; > 0 draws variance noise from the generator),
 * clip_sample and dynamic thresholding. All tensor arithmetic in float32.
 */
import { ErrorCode, fail } from '../../errors.js';
import { f32, map1, map2, sqrtf } from '../tensor.js';
import {
  alphasCumprodOf,
  checkSteps,
  computeBetas,
  img2imgStart,
  integerTimesteps,
  readBaseOptions,
  readBool,
  readNumber,
  thresholdSample,
  type BaseOptions,
  type Scheduler,
  type SchedulerConfigJson,
  type StepContext,
} from './common.js';

/** `sqrt(a_t) * x0 + sqrt(1 - a_t) * noise`: DDPM-family `add_noise`, float32. */
export function ddpmAddNoise(alphasCumprod: Float32Array, original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
  const a = alphasCumprod[timestep];
  if (a === undefined) fail(ErrorCode.E_SCHEDULER, undefined, `add_noise timestep ${timestep} is outside the training schedule.`);
  const sa = sqrtf(a);
  const sb = sqrtf(f32(1 - a));
  return map2(original, noise, (x, n) => f32(f32(sa * x) + f32(sb * n)));
}

export interface DdimStepOptions {
  /** DDIM's eta (0: deterministic). */
  eta?: number;
}

export class DdimScheduler implements Scheduler {
  readonly className = 'DDIMScheduler' as const;
  readonly order = 1;
  readonly options: BaseOptions;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  readonly clipSample: boolean;
  readonly clipSampleRange: number;
  readonly thresholding: boolean;
  readonly dynamicThresholdingRatio: number;
  readonly sampleMaxValue: number;
  readonly initNoiseSigma = 1;
  /** eta used by step(); the pipeline sets it from its options. */
  eta = 0;
  timesteps: number[] = [];
  private numInferenceSteps = 0;

  constructor(config: SchedulerConfigJson) {
    this.options = readBaseOptions(config, { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', timestepSpacing: 'leading' });
    this.alphasCumprod = alphasCumprodOf(computeBetas(this.options));
    this.finalAlphaCumprod = readBool(config, 'set_alpha_to_one', true) ? 1 : this.alphasCumprod[0];
    this.clipSample = readBool(config, 'clip_sample', true);
    this.clipSampleRange = readNumber(config, 'clip_sample_range', 1);
    this.thresholding = readBool(config, 'thresholding', false);
    this.dynamicThresholdingRatio = readNumber(config, 'dynamic_thresholding_ratio', 0.995);
    this.sampleMaxValue = readNumber(config, 'sample_max_value', 1);
  }

  get predictionType() {
    return this.options.predictionType;
  }
  get numTrainTimesteps() {
    return this.options.numTrainTimesteps;
  }

  setTimesteps(n: number, strength?: number): number[] {
    checkSteps(n, this.options.numTrainTimesteps);
    this.numInferenceSteps = n;
    this.timesteps = integerTimesteps(this.options.timestepSpacing, this.options.numTrainTimesteps, n, this.options.stepsOffset);
    if (strength === undefined) return [...this.timesteps];
    return this.timesteps.slice(img2imgStart(n, strength) * this.order);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, ctx: StepContext): Float32Array {
    if (this.numInferenceSteps === 0) fail(ErrorCode.E_SCHEDULER, undefined, 'DDIMScheduler.step called before setTimesteps.');
    const prevT = timestep - Math.floor(this.options.numTrainTimesteps / this.numInferenceSteps);
    const aT = this.alphasCumprod[timestep];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const bT = f32(1 - aT);
    const saT = sqrtf(aT);
    const sbT = sqrtf(bT);
    let x0: Float32Array;
    let eps: Float32Array;
    switch (this.options.predictionType) {
      case 'epsilon':
        x0 = map2(sample, modelOutput, (s, m) => f32(f32(s - f32(sbT * m)) / saT));
        eps = modelOutput;
        break;
      case 'sample':
        x0 = modelOutput;
        eps = map2(sample, x0, (s, x) => f32(f32(s - f32(saT * x)) / sbT));
        break;
      default:
        x0 = map2(sample, modelOutput, (s, m) => f32(f32(saT * s) - f32(sbT * m)));
        eps = map2(modelOutput, sample, (m, s) => f32(f32(saT * m) + f32(sbT * s)));
    }
    if (this.thresholding) {
      x0 = thresholdSample(x0, ctx.shape[0] ?? 1, this.dynamicThresholdingRatio, this.sampleMaxValue);
    } else if (this.clipSample) {
      const r = f32(this.clipSampleRange);
      x0 = map1(x0, (x) => Math.min(Math.max(x, -r), r));
    }
    const bPrev = f32(1 - aPrev);
    const variance = f32(f32(bPrev / bT) * f32(1 - f32(aT / aPrev)));
    const std = f32(f32(this.eta) * sqrtf(variance));
    const dirCoeff = sqrtf(f32(f32(1 - aPrev) - f32(std * std)));
    const saPrev = sqrtf(aPrev);
    let prev = map2(x0, eps, (x, e) => f32(f32(saPrev * x) + f32(dirCoeff * e)));
    if (this.eta > 0) {
      if (!ctx.generator) fail(ErrorCode.E_SCHEDULER, undefined, 'DDIMScheduler with eta > 0 needs a generator.');
      const noise = ctx.generator.randn(ctx.shape);
      prev = map2(prev, noise, (p, n) => f32(p + f32(std * n)));
    }
    return prev;
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return ddpmAddNoise(this.alphasCumprod, original, noise, timestep);
  }
}
