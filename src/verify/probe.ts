/**
 * The prediction-type probe: does the UNet predict noise (epsilon) or velocity (v)? The criterion
 * is the one the AUTOMATIC1111 web UI uses to tell SD 2.x v-models from epsilon models
 * (`is_using_v_parameterization_for_sd2`):
 *
 *   x = 0.5 everywhere, shape [1, C, 8, 8]; context = 0.5 everywhere; t = 999;
 *   d = mean(UNet(x, t, context) − x);   d < −1  →  v-prediction, else epsilon.
 *
 * Why it separates them. At t = 999, ᾱ ≈ 0.0047 (SD's scaled-linear schedule): x_t = √ᾱ·x0 +
 * √(1−ᾱ)·ε is almost pure noise. An epsilon model's best answer is ε̂ ≈ x_t, so its output stays
 * close to the input and d ≈ 0. A v-model predicts v = √ᾱ·ε − √(1−ᾱ)·x0 ≈ −x̂0: an estimate of the
 * clean latent with the sign flipped, nothing like the input, so out − x is far from zero; on this
 * flat positive input trained SD 2.x v-models land well below −1 while epsilon models (SD 1.x,
 * SD 2.x-base) stay near 0. The threshold and the input are empirical (calibrated on trained SD
 * weights): the probe says nothing about a model with random weights, whose output is whatever
 * the random weights make of the input.
 *
 * The context is constant, so every attention key is the same and cross-attention returns the
 * same value for any sequence length: 77 tokens here (what fixed-shape exports accept) give the
 * result the web UI's 2 tokens give.
 */
import type { PipelineModels } from '../generate/pipeline.js';
import type { PredictionType } from '../generate/schedulers/common.js';
import type { Check } from './checks.js';
import { statsOf } from './checks.js';

export const PROBE_TIMESTEP = 999;
export const PROBE_VALUE = 0.5;
export const PROBE_SIZE = 8;
export const PROBE_TOKENS = 77;
/** d below this means v-prediction. */
export const V_PREDICTION_THRESHOLD = -1;

export type ProbeSuggestion = 'v_prediction' | 'epsilon' | 'inconclusive';

export interface ProbeResult {
  /** mean(out − x). */
  readonly meanDiff: number;
  readonly outMean: number;
  readonly outStd: number;
  readonly suggests: ProbeSuggestion;
  readonly ms: number;
}

/** The decision on a measured mean(out − x). */
export function probeDecision(meanDiff: number): ProbeSuggestion {
  if (!Number.isFinite(meanDiff)) return 'inconclusive';
  return meanDiff < V_PREDICTION_THRESHOLD ? 'v_prediction' : 'epsilon';
}

export interface ProbeOptions {
  /** The UNet's in_channels (default 4). */
  readonly latentChannels?: number;
  /** The UNet's cross_attention_dim (the text encoder's hidden size). */
  readonly crossAttentionDim: number;
  /** The UNet's timestep dtype may need an integer: 999 is one. */
  readonly timestep?: number;
}

/** Runs the UNet once on the probe input. */
export async function runPredictionProbe(unet: PipelineModels['unet'], options: ProbeOptions): Promise<ProbeResult> {
  const t0 = performance.now();
  const c = options.latentChannels ?? 4;
  const x = new Float32Array(c * PROBE_SIZE * PROBE_SIZE).fill(PROBE_VALUE);
  const context = new Float32Array(PROBE_TOKENS * options.crossAttentionDim).fill(PROBE_VALUE);
  const out = await unet({ data: x, shape: [1, c, PROBE_SIZE, PROBE_SIZE] }, options.timestep ?? PROBE_TIMESTEP, { data: context, shape: [1, PROBE_TOKENS, options.crossAttentionDim] });
  let sum = 0;
  for (let i = 0; i < out.data.length; i++) sum += out.data[i] - x[i];
  const meanDiff = out.data.length === x.length ? sum / x.length : NaN;
  const s = statsOf(out.data);
  return { meanDiff, outMean: s.mean, outStd: s.std, suggests: probeDecision(meanDiff), ms: performance.now() - t0 };
}

/** The verdict check: the probe against the scheduler config's prediction_type. */
export function predictionCheck(result: ProbeResult, configured: PredictionType): Check {
  const d = Number(result.meanDiff.toPrecision(4));
  const data = { meanDiff: d, threshold: V_PREDICTION_THRESHOLD, suggests: result.suggests, configured };
  if (result.suggests === 'inconclusive') {
    return { name: 'prediction-type', status: 'warn', message: `the probe's UNet output is not finite (mean(out - x) = ${d}); prediction type unchecked`, data };
  }
  if (configured === 'sample') {
    return { name: 'prediction-type', status: 'skip', message: `prediction_type "sample" is not probed (mean(out - x) = ${d})`, data };
  }
  const weak = Math.abs(result.meanDiff - V_PREDICTION_THRESHOLD) < 0.25 ? ' (close to the threshold: weak evidence)' : '';
  if (result.suggests !== configured) {
    return {
      name: 'prediction-type',
      status: 'warn',
      message: `scheduler_config.json says prediction_type "${configured}" but the UNet probe looks like "${result.suggests}" (mean(out - x) at t=${PROBE_TIMESTEP} = ${d}; v-models give < ${V_PREDICTION_THRESHOLD})${weak}. Check the scheduler config (convert --prediction-type); the probe is calibrated on trained weights`,
      data,
    };
  }
  return { name: 'prediction-type', status: 'pass', message: `probe agrees with prediction_type "${configured}" (mean(out - x) = ${d})${weak}`, data };
}
