/**
 * x4 upscaling, as Diffusers 0.31's StableDiffusionUpscalePipeline runs it (one image per prompt,
 * `generator=torch.Generator("cpu").manual_seed(seed)`):
 *
 *   - the low-resolution image is preprocessed to `2 * (x / 255) - 1`, NCHW (its sides must be
 *     multiples of the VAE scale factor, so the image processor leaves it unresized);
 *   - after set_timesteps, a first generator draw of the image's shape `[1, 3, h, w]` is the noise
 *     the low_res_scheduler (a DDPMScheduler) adds to the image at timestep `noise_level`
 *     (`sqrt(a) * image + sqrt(1 - a) * noise`, a = its alphas_cumprod[noise_level]);
 *   - the latents are a second draw `[1, C, h, w]` (the image's own size: the VAE decodes them
 *     at `vae_scale_factor` times that size) times init_noise_sigma;
 *   - every step the UNet gets cat([scaled latents, noisy image], dim=1) (4 + 3 = 7 channels) and
 *     `class_labels` = noise_level, both repeated for the guidance batch [uncond, cond];
 *     classifier-free guidance, scheduler step and VAE decode (`latents / scaling_factor`) as the
 *     text-to-image pipeline does.
 */
import { ErrorCode, fail } from '../errors.js';
import { concatChannels } from './inpaint.js';
import { generate, preprocessImage, type GenerateOptions, type GenerateResult, type PipelineModels, type PrepareContext, type PreparedLatents, type RgbImage } from './pipeline.js';
import { alphasCumprodOf, computeBetas, readBaseOptions, type SchedulerConfigJson } from './schedulers/common.js';
import { ddpmAddNoise } from './schedulers/ddim.js';
import { concat0, f32, type Tensor } from './tensor.js';
import { TorchGenerator } from './torch-random.js';

/** Diffusers' default `noise_level` of StableDiffusionUpscalePipeline. */
export const UPSCALE_DEFAULT_NOISE_LEVEL = 20;
/** Diffusers' default `max_noise_level` (model_index.json). */
export const UPSCALE_DEFAULT_MAX_NOISE_LEVEL = 350;

/** alphas_cumprod of the low-res DDPMScheduler (DDPMScheduler's defaults for missing keys). */
export function lowResAlphasCumprod(config: SchedulerConfigJson): Float32Array {
  const o = readBaseOptions(config, { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear', timestepSpacing: 'leading' });
  return alphasCumprodOf(computeBetas(o));
}

export interface UpscaleOptions extends Omit<GenerateOptions, 'initImage' | 'prepare' | 'strength' | 'height' | 'width'> {
  /** The low-resolution image; the result is `vaeScaleFactor` times its size. */
  readonly image: RgbImage;
  /** Default 20; an integer in [0, maxNoiseLevel]. */
  readonly noiseLevel?: number;
  /** Default 350 (model_index.json max_noise_level). */
  readonly maxNoiseLevel?: number;
  /** low_res_scheduler/scheduler_config.json (a DDPMScheduler config). */
  readonly lowResScheduler: SchedulerConfigJson;
}

/** Checks `noise_level` as Diffusers' check_inputs does (and as an embedding index). */
export function checkNoiseLevel(level: number, max: number): number {
  if (!Number.isInteger(level) || level < 0) fail(ErrorCode.E_USAGE, undefined, `noise level ${level} is not a non-negative integer.`);
  if (level > max) fail(ErrorCode.E_USAGE, undefined, `noise level ${level} is above the pipeline's max_noise_level ${max}.`);
  return level;
}

/** Runs one x4 upscale of `image` (the UNet takes latent channels + 3 and class_labels). */
export async function generateUpscale(o: UpscaleOptions): Promise<GenerateResult> {
  const { image, noiseLevel, maxNoiseLevel, lowResScheduler, models, ...rest } = o;
  const level = checkNoiseLevel(noiseLevel ?? UPSCALE_DEFAULT_NOISE_LEVEL, maxNoiseLevel ?? UPSCALE_DEFAULT_MAX_NOISE_LEVEL);
  const factor = o.vaeScaleFactor ?? 4;
  if (image.width % factor !== 0 || image.height % factor !== 0) {
    fail(ErrorCode.E_USAGE, undefined, `the image to upscale is ${image.width}x${image.height}: its sides must be multiples of ${factor} (resize it first).`);
  }
  const acp = lowResAlphasCumprod(lowResScheduler);
  if (acp[level] === undefined) fail(ErrorCode.E_USAGE, undefined, `noise level ${level} is outside the low-res scheduler's ${acp.length} training timesteps.`);
  const generator = o.generator ?? new TorchGenerator(o.seed ?? 0);

  const prepare = async (ctx: PrepareContext): Promise<PreparedLatents> => {
    const [, , h, w] = ctx.latentShape;
    if (h !== image.height || w !== image.width) fail(ErrorCode.E_PIPELINE, undefined, `latents [${ctx.latentShape.join(', ')}] do not match the image size ${image.width}x${image.height}.`);
    const pixels = preprocessImage(image, image.height, image.width);
    ctx.trace('upscale.image_preprocessed', pixels);
    const noise = generator.randn(pixels.shape);
    ctx.trace('upscale.image_noise', { data: noise, shape: [...pixels.shape] });
    const noisy: Tensor = { data: ddpmAddNoise(acp, pixels.data, noise, level), shape: [...pixels.shape] };
    ctx.trace('upscale.noisy_image', noisy);
    const sigma = f32(ctx.scheduler.initNoiseSigma);
    const latents: Tensor = { data: ctx.draw().map((x) => f32(x * sigma)), shape: [...ctx.latentShape] };
    const imageB = ctx.guidance ? concat0([noisy, noisy]) : noisy;
    return { latents, unetSample: (scaled) => concatChannels([scaled, imageB]) };
  };

  const unet: PipelineModels['unet'] = (sample, t, ehs, extra) => {
    const b = sample.shape[0];
    const classLabels: Tensor = { data: new Float32Array(b).fill(level), shape: [b] };
    return models.unet(sample, t, ehs, { ...extra, class_labels: classLabels });
  };

  return generate({
    ...rest,
    models: { encodeText: models.encodeText.bind(models), unet, vaeDecode: models.vaeDecode.bind(models), vaeEncode: models.vaeEncode?.bind(models) },
    generator,
    height: image.height * factor,
    width: image.width * factor,
    vaeScaleFactor: factor,
    strength: 1,
    prepare,
  });
}
