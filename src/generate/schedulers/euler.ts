/**
 * EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (Diffusers 0.31): Euler steps on the
 * sigma (noise level) schedule of Karras et al., the ancestral variant adding fresh noise from the
 * generator after every step. Sigmas are interpolated in float64 (`np.interp`) and stored as
 * float32; tensor arithmetic is float32.
 *
 * Supported: interpolation_type "linear", final_sigmas_type "zero" / "sigma_min", discrete
 * timesteps. Not supported (refused with E_SCHEDULER): Karras / exponential / beta sigmas,
 * "log_linear" interpolation, continuous timesteps.
 */
import { ErrorCode, fail } from '../../errors.js';
import { f32, map2, roundHalfEven, sqrtf } from '../tensor.js';
import {
  alphasCumprodOf,
  checkSteps,
  computeBetas,
  img2imgStart,
  npArange,
  npLinspace,
  readBaseOptions,
  readEnum,
  type BaseOptions,
  type Scheduler,
  type SchedulerConfigJson,
  type StepContext,
} from './common.js';

/** `np.interp(x, [0, 1, ..., n-1], fp)` in float64. */
function interpUnitGrid(x: number, fp: Float32Array): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0];
  if (x >= last) return fp[last];
  const j = Math.floor(x);
  if (x === j) return fp[j];
  const slope = (fp[j + 1] - fp[j]) / 1;
  return slope * (x - j) + fp[j];
}

abstract class EulerBase implements Scheduler {
  abstract readonly className: 'EulerDiscreteScheduler' | 'EulerAncestralDiscreteScheduler';
  readonly order = 1;
  readonly options: BaseOptions;
  readonly alphasCumprod: Float32Array;
  /** Training sigmas `sqrt((1 - a) / a)` per timestep, float32, ascending in t. */
  readonly trainSigmas: Float32Array;
  readonly finalSigmasType: 'zero' | 'sigma_min';
  timesteps: number[] = [];
  /** Sigmas of the inference schedule, with the final one appended (float32 values). */
  sigmas: number[] = [];
  private stepIndex: number | null = null;
  private beginIndex: number | null = null;

  constructor(config: SchedulerConfigJson, ancestral: boolean) {
    this.options = readBaseOptions(config, { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', timestepSpacing: 'linspace' });
    const name = ancestral ? 'EulerAncestralDiscreteScheduler' : 'EulerDiscreteScheduler';
    for (const key of ['use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas'] as const) {
      if (config[key] === true) fail(ErrorCode.E_SCHEDULER, undefined, `${name} ${key} is not supported (expected false).`);
    }
    readEnum(config, 'interpolation_type', 'linear', ['linear']);
    readEnum(config, 'timestep_type', 'discrete', ['discrete']);
    this.finalSigmasType = ancestral ? 'zero' : readEnum(config, 'final_sigmas_type', 'zero', ['zero', 'sigma_min']);
    if (ancestral && this.options.predictionType === 'sample') {
      fail(ErrorCode.E_SCHEDULER, undefined, `${name} prediction_type "sample" is not supported (expected "epsilon" or "v_prediction").`);
    }
    this.alphasCumprod = alphasCumprodOf(computeBetas(this.options));
    if (this.options.rescaleBetasZeroSnr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.trainSigmas = this.alphasCumprod.map((a) => sqrtf(f32(f32(1 - a) / a)));
  }

  get predictionType() {
    return this.options.predictionType;
  }
  get numTrainTimesteps() {
    return this.options.numTrainTimesteps;
  }

  get initNoiseSigma(): number {
    const max = this.sigmas.length ? Math.max(...this.sigmas) : Math.max(...this.trainSigmas, 0);
    if (this.options.timestepSpacing === 'linspace' || this.options.timestepSpacing === 'trailing') return max;
    return sqrtf(f32(f32(max * max) + 1));
  }

  setTimesteps(n: number, strength?: number): number[] {
    const N = this.options.numTrainTimesteps;
    checkSteps(n, N);
    let ts: number[];
    switch (this.options.timestepSpacing) {
      case 'linspace':
        ts = npLinspace(0, N - 1, n).map(f32).reverse();
        break;
      case 'leading': {
        const ratio = Math.floor(N / n);
        ts = Array.from({ length: n }, (_, i) => f32(i * ratio)).reverse().map((t) => f32(t + this.options.stepsOffset));
        break;
      }
      default:
        ts = npArange(N, 0, -N / n).map((t) => f32(f32(roundHalfEven(t)) - 1));
    }
    const sigmas = ts.map((t) => f32(interpUnitGrid(t, this.trainSigmas)));
    const last = this.finalSigmasType === 'sigma_min' ? this.trainSigmas[0] : 0;
    this.timesteps = ts;
    this.sigmas = [...sigmas, last];
    this.stepIndex = null;
    this.beginIndex = null;
    if (strength === undefined) return [...ts];
    const start = img2imgStart(n, strength) * this.order;
    this.beginIndex = start;
    return ts.slice(start);
  }

  /** Diffusers' `index_for_timestep`: the second match when a timestep repeats. */
  private indexForTimestep(t: number): number {
    const hits: number[] = [];
    this.timesteps.forEach((v, i) => v === t && hits.push(i));
    if (hits.length === 0) fail(ErrorCode.E_SCHEDULER, undefined, `timestep ${t} is not in the schedule.`);
    return hits[hits.length > 1 ? 1 : 0];
  }

  protected currentIndex(t: number): number {
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? this.indexForTimestep(t);
    return this.stepIndex;
  }

  protected advance(): void {
    if (this.stepIndex !== null) this.stepIndex++;
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    const sigma = this.sigmas[this.currentIndex(timestep)];
    const d = sqrtf(f32(f32(sigma * sigma) + 1));
    return sample.map((x) => f32(x / d));
  }

  /** pred_original_sample for epsilon / v_prediction / sample at noise level `sigma` (`sigmaHat` for epsilon). */
  protected predictOriginal(modelOutput: Float32Array, sample: Float32Array, sigma: number, sigmaHat: number): Float32Array {
    switch (this.options.predictionType) {
      case 'epsilon':
        return map2(sample, modelOutput, (s, m) => f32(s - f32(sigmaHat * m)));
      case 'sample':
        return modelOutput;
      default: {
        const s2p1 = f32(f32(sigma * sigma) + 1);
        const c = f32(-sigma / sqrtf(s2p1));
        return map2(modelOutput, sample, (m, s) => f32(f32(m * c) + f32(s / s2p1)));
      }
    }
  }

  abstract step(modelOutput: Float32Array, timestep: number, sample: Float32Array, ctx: StepContext): Float32Array;

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    // Diffusers' order: no begin index → look the timestep up; inside the loop (inpainting's
    // per-step re-noising) → the current step index; before the first step (img2img) → the begin index.
    const index = this.beginIndex === null ? this.indexForTimestep(timestep) : (this.stepIndex ?? this.beginIndex);
    const sigma = this.sigmas[index];
    return map2(original, noise, (x, e) => f32(x + f32(e * sigma)));
  }
}

export class EulerDiscreteScheduler extends EulerBase {
  readonly className = 'EulerDiscreteScheduler' as const;

  constructor(config: SchedulerConfigJson) {
    super(config, false);
  }

  /** One Euler step (s_churn = 0: no noise is drawn, sigma_hat = sigma). */
  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const i = this.currentIndex(timestep);
    const sigma = this.sigmas[i];
    const sigmaHat = sigma;
    const x0 = this.predictOriginal(modelOutput, sample, sigma, sigmaHat);
    const dt = f32(this.sigmas[i + 1] - sigmaHat);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const derivative = f32(f32(sample[k] - x0[k]) / sigmaHat);
      out[k] = f32(sample[k] + f32(derivative * dt));
    }
    this.advance();
    return out;
  }
}

export class EulerAncestralDiscreteScheduler extends EulerBase {
  readonly className = 'EulerAncestralDiscreteScheduler' as const;

  constructor(config: SchedulerConfigJson) {
    super(config, true);
  }

  /** One ancestral Euler step: deterministic part to sigma_down, then noise * sigma_up from the generator. */
  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, ctx: StepContext): Float32Array {
    if (!ctx.generator) fail(ErrorCode.E_SCHEDULER, undefined, 'EulerAncestralDiscreteScheduler.step needs a generator.');
    const i = this.currentIndex(timestep);
    const sigma = this.sigmas[i];
    const x0 = this.predictOriginal(modelOutput, sample, sigma, sigma);
    const from2 = f32(sigma * sigma);
    const to = this.sigmas[i + 1];
    const to2 = f32(to * to);
    const sigmaUp = sqrtf(f32(f32(to2 * f32(from2 - to2)) / from2));
    const sigmaDown = sqrtf(f32(to2 - f32(sigmaUp * sigmaUp)));
    const dt = f32(sigmaDown - sigma);
    const noise = ctx.generator.randn(ctx.shape);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const derivative = f32(f32(sample[k] - x0[k]) / sigma);
      const prev = f32(sample[k] + f32(derivative * dt));
      out[k] = f32(prev + f32(noise[k] * sigmaUp));
    }
    this.advance();
    return out;
  }
}
