/**
 * The verdict of a test generation: checks on what the networks produced, each pass / warn / fail.
 *
 *   finite       text embeddings, every UNet output, final latents and the decoded image hold no
 *                NaN or ±Inf                                                          (fail)
 *   not flat     the 8-bit image has a standard deviation of at least 1.0 and a range of at least 8
 *                levels in some channel: a black, white or single-colour image is a broken
 *                decoder or latents                                                   (fail)
 *   latents      final latents (before the division by scaling_factor) have a standard deviation
 *                in [0.2, 5] and |mean| < 3. The scaling factor exists to bring the VAE's latents to
 *                unit variance (SD 1.x/2.x: 0.18215, SDXL: 0.13025), so a denoised result far from
 *                that usually means a wrong scaling_factor or a diverging schedule       (warn)
 *   prediction   the prediction-type probe (probe.ts) disagrees with scheduler_config.json
 *                                                                                     (warn)
 *
 * Verdict: 'failed' with any fail, 'warnings' with any warn, else 'clean'.
 */
import type { Tensor } from '../generate/tensor.js';
import type { RgbImage } from '../generate/pipeline.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface Check {
  readonly name: string;
  readonly status: CheckStatus;
  readonly message: string;
  readonly data?: Record<string, unknown>;
}

export type Verdict = 'clean' | 'warnings' | 'failed';

export const LATENT_STD_RANGE: readonly [number, number] = [0.2, 5];
export const LATENT_MEAN_LIMIT = 3;
export const FLAT_STD = 1.0;
export const FLAT_RANGE = 8;

export function verdictOf(checks: readonly Check[]): Verdict {
  if (checks.some((c) => c.status === 'fail')) return 'failed';
  if (checks.some((c) => c.status === 'warn')) return 'warnings';
  return 'clean';
}

export interface Stats {
  readonly mean: number;
  readonly std: number;
  readonly min: number;
  readonly max: number;
  readonly nonFinite: number;
  readonly count: number;
}

/** Mean, standard deviation, extremes over the finite values; non-finite values counted. */
export function statsOf(data: ArrayLike<number>): Stats {
  let sum = 0;
  let sq = 0;
  let min = Infinity;
  let max = -Infinity;
  let finite = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!Number.isFinite(v)) continue;
    finite++;
    sum += v;
    sq += v * v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const mean = finite ? sum / finite : NaN;
  const std = finite ? Math.sqrt(Math.max(0, sq / finite - mean * mean)) : NaN;
  return { mean, std, min, max, nonFinite: data.length - finite, count: data.length };
}

const round = (x: number, digits = 4): number => (Number.isFinite(x) ? Number(x.toPrecision(digits)) : x);

/** `tensors`: name → values whose every element must be finite. */
export function finiteCheck(tensors: Readonly<Record<string, ArrayLike<number> | undefined>>): Check {
  const bad: Record<string, number> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (!t) continue;
    let n = 0;
    for (let i = 0; i < t.length; i++) if (!Number.isFinite(t[i])) n++;
    if (n) bad[name] = n;
  }
  const names = Object.keys(bad);
  return names.length
    ? { name: 'finite', status: 'fail', message: `NaN or Inf in ${names.map((n) => `${n} (${bad[n]} values)`).join(', ')}`, data: bad }
    : { name: 'finite', status: 'pass', message: `no NaN or Inf in ${Object.keys(tensors).filter((k) => tensors[k]).join(', ')}` };
}

/** The image is not one flat colour. */
export function flatImageCheck(img: RgbImage): Check {
  const plane = img.width * img.height;
  const channels = [0, 1, 2].map((c) => {
    const v = new Float64Array(plane);
    for (let p = 0; p < plane; p++) v[p] = img.data[p * 3 + c];
    return statsOf(v);
  });
  const std = Math.max(...channels.map((s) => s.std));
  const range = Math.max(...channels.map((s) => s.max - s.min));
  const data = { std: round(std), range, channelMeans: channels.map((s) => round(s.mean)) };
  if (std < FLAT_STD || range < FLAT_RANGE) {
    return { name: 'not-flat', status: 'fail', message: `the image is flat (pixel std ${round(std, 3)}, range ${range} levels; expected std >= ${FLAT_STD}, range >= ${FLAT_RANGE})`, data };
  }
  return { name: 'not-flat', status: 'pass', message: `pixel std ${round(std, 3)}, range ${range} levels`, data };
}

/** Final latents plausible for a VAE whose scaling_factor normalises them to unit variance. */
export function latentStatsCheck(latents: Tensor, scalingFactor: number): Check {
  const s = statsOf(latents.data);
  const data = { mean: round(s.mean), std: round(s.std), min: round(s.min), max: round(s.max), scalingFactor, decoderInputStd: round(s.std / scalingFactor) };
  const [lo, hi] = LATENT_STD_RANGE;
  if (!(s.std >= lo && s.std <= hi) || !(Math.abs(s.mean) < LATENT_MEAN_LIMIT)) {
    return {
      name: 'latents',
      status: 'warn',
      message: `final latents have mean ${data.mean}, std ${data.std} (expected std in [${lo}, ${hi}] and |mean| < ${LATENT_MEAN_LIMIT} with scaling_factor ${scalingFactor}): a wrong scaling_factor or a diverging schedule`,
      data,
    };
  }
  return { name: 'latents', status: 'pass', message: `final latents mean ${data.mean}, std ${data.std} (scaling_factor ${scalingFactor})`, data };
}
