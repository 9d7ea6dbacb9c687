/**
 * PNDMScheduler (Diffusers 0.31): pseudo numerical methods for diffusion models. With
 * `skip_prk_steps` (what Stable Diffusion configs set) only the linear multistep (PLMS) part runs;
 * otherwise the first steps are Runge-Kutta (PRK) steps. All tensor arithmetic in float32.
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
  type BaseOptions,
  type Scheduler,
  type SchedulerConfigJson,
  type StepContext,
} from './common.js';
import { ddpmAddNoise } from './ddim.js';

export class PndmScheduler implements Scheduler {
  readonly className = 'PNDMScheduler' as const;
  readonly order = 1;
  readonly options: BaseOptions;
  readonly skipPrkSteps: boolean;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  private prkTimesteps: number[] = [];
  private numInferenceSteps = 0;
  private ets: Float32Array[] = [];
  private counter = 0;
  private curModelOutput: Float32Array | null = null;
  private curSample: Float32Array | null = null;

  constructor(config: SchedulerConfigJson) {
    this.options = readBaseOptions(config, { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', timestepSpacing: 'leading' });
    if (this.options.predictionType === 'sample') {
      fail(ErrorCode.E_SCHEDULER, undefined, 'PNDMScheduler prediction_type "sample" is not supported (expected "epsilon" or "v_prediction").');
    }
    this.skipPrkSteps = readBool(config, 'skip_prk_steps', false);
    this.alphasCumprod = alphasCumprodOf(computeBetas(this.options));
    this.finalAlphaCumprod = readBool(config, 'set_alpha_to_one', false) ? 1 : this.alphasCumprod[0];
  }

  get predictionType() {
    return this.options.predictionType;
  }
  get numTrainTimesteps() {
    return this.options.numTrainTimesteps;
  }

  setTimesteps(n: number, strength?: number): number[] {
    const N = this.options.numTrainTimesteps;
    checkSteps(n, N);
    this.numInferenceSteps = n;
    const ascending = integerTimesteps(this.options.timestepSpacing, N, n, this.options.stepsOffset).reverse();
    if (this.skipPrkSteps) {
      this.prkTimesteps = [];
      const plms = [...ascending.slice(0, -1), ...ascending.slice(-2, -1), ...ascending.slice(-1)];
      this.timesteps = plms.reverse();
    } else {
      const half = Math.floor(Math.floor(N / n) / 2);
      const last = ascending.slice(-4);
      const prk: number[] = [];
      for (const t of last) prk.push(t, t + half);
      const doubled = prk.slice(0, -1).flatMap((t) => [t, t]).slice(1, -1);
      this.prkTimesteps = doubled.reverse();
      this.timesteps = [...this.prkTimesteps, ...ascending.slice(0, -3).reverse()];
    }
    this.ets = [];
    this.counter = 0;
    this.curModelOutput = null;
    this.curSample = null;
    if (strength === undefined) return [...this.timesteps];
    return this.timesteps.slice(img2imgStart(n, strength) * this.order);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, _ctx: StepContext): Float32Array {
    if (this.numInferenceSteps === 0) fail(ErrorCode.E_SCHEDULER, undefined, 'PNDMScheduler.step called before setTimesteps.');
    if (this.counter < this.prkTimesteps.length && !this.skipPrkSteps) return this.stepPrk(modelOutput, timestep, sample);
    return this.stepPlms(modelOutput, timestep, sample);
  }

  private stepPrk(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const N = this.options.numTrainTimesteps;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(N / this.numInferenceSteps) / 2);
    const prevTimestep = timestep - diffToPrev;
    const t = this.prkTimesteps[Math.floor(this.counter / 4) * 4];
    const sixth = f32(1 / 6);
    const third = f32(1 / 3);
    const acc = (w: number) => {
      const term = map1(modelOutput, (m) => f32(w * m));
      this.curModelOutput = this.curModelOutput ? map2(this.curModelOutput, term, (a, b) => f32(a + b)) : term;
    };
    let output = modelOutput;
    const phase = this.counter % 4;
    if (phase === 0) {
      acc(sixth);
      this.ets.push(modelOutput);
      this.curSample = sample;
    } else if (phase === 1 || phase === 2) {
      acc(third);
    } else {
      const cur = this.curModelOutput ?? new Float32Array(modelOutput.length);
      output = map2(cur, modelOutput, (c, m) => f32(c + f32(sixth * m)));
      this.curModelOutput = null;
    }
    const curSample = this.curSample ?? sample;
    const prev = this.prevSample(curSample, t, prevTimestep, output);
    this.counter++;
    return prev;
  }

  private stepPlms(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const N = this.options.numTrainTimesteps;
    if (!this.skipPrkSteps && this.ets.length < 3) {
      fail(ErrorCode.E_SCHEDULER, undefined, 'PNDMScheduler PLMS step before the Runge-Kutta warm-up finished.');
    }
    let t = timestep;
    let prevTimestep = timestep - Math.floor(N / this.numInferenceSteps);
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      prevTimestep = timestep;
      t = timestep + Math.floor(N / this.numInferenceSteps);
    }
    const e = this.ets;
    const k = e.length;
    let output: Float32Array;
    let cur = sample;
    if (k === 1 && this.counter === 0) {
      output = modelOutput;
      this.curSample = sample;
    } else if (k === 1 && this.counter === 1) {
      output = map2(modelOutput, e[k - 1], (m, a) => f32(f32(m + a) / 2));
      cur = this.curSample ?? sample;
      this.curSample = null;
    } else if (k === 2) {
      output = map2(e[k - 1], e[k - 2], (a, b) => f32(f32(f32(3 * a) - b) / 2));
    } else if (k === 3) {
      output = new Float32Array(modelOutput.length);
      for (let i = 0; i < output.length; i++) {
        output[i] = f32(f32(f32(f32(23 * e[2][i]) - f32(16 * e[1][i])) + f32(5 * e[0][i])) / 12);
      }
    } else {
      const w = f32(1 / 24);
      output = new Float32Array(modelOutput.length);
      for (let i = 0; i < output.length; i++) {
        const s = f32(f32(f32(f32(55 * e[3][i]) - f32(59 * e[2][i])) + f32(37 * e[1][i])) - f32(9 * e[0][i]));
        output[i] = f32(w * s);
      }
    }
    const prev = this.prevSample(cur, t, prevTimestep, output);
    this.counter++;
    return prev;
  }

  /** Diffusers' `_get_prev_sample` (formula (9) of the PNDM paper). */
  private prevSample(sample: Float32Array, t: number, prevT: number, modelOutput: Float32Array): Float32Array {
    const aT = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const bT = f32(1 - aT);
    const bPrev = f32(1 - aPrev);
    let output = modelOutput;
    if (this.options.predictionType === 'v_prediction') {
      const sa = sqrtf(aT);
      const sb = sqrtf(bT);
      output = map2(modelOutput, sample, (m, s) => f32(f32(sa * m) + f32(sb * s)));
    }
    const sampleCoeff = sqrtf(f32(aPrev / aT));
    const denom = f32(f32(aT * sqrtf(bPrev)) + sqrtf(f32(f32(aT * bT) * aPrev)));
    const diff = f32(aPrev - aT);
    return map2(sample, output, (s, m) => f32(f32(sampleCoeff * s) - f32(f32(diff * m) / denom)));
  }

  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    return ddpmAddNoise(this.alphasCumprod, original, noise, timestep);
  }
}
