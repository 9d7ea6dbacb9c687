/**
 * InstructPix2Pix editing, as Diffusers 0.31's StableDiffusionInstructPix2PixPipeline runs it (one
 * image per prompt, `generator=torch.Generator("cpu").manual_seed(seed)`):
 *
 *   - the image is preprocessed as for img2img (`2 * (x / 255) - 1`, NCHW, already the generation
 *     size) and encoded to the VAE posterior; its MODE (the mean) is the image latents: no random
 *     draw and no scaling_factor;
 *   - the latents start as txt2img does (one draw x init_noise_sigma, the full schedule);
 *   - every step the UNet gets cat([scaled latents, image latents], dim=1) (8 channels for SD 1.x);
 *   - guidance applies when `guidance > 1` and `imageGuidance >= 1`: the UNet then runs one batch
 *     of 3, prompt embeddings `[cond, uncond, uncond]` and image latents `[image, image, zeros]`,
 *     and the prediction is
 *       `uncond + g * (text - image) + ig * (image - uncond)`
 *     (text, image, uncond: the three batch entries in that order).
 *
 * Composed from the pipeline's hooks: the prompt embeddings come in as `conditioning`, the latents
 * and the channel concatenation from `prepare`, and the batch of 3 lives in a wrapper around the
 * UNet (the pipeline itself runs unguided, batch 1): the trace's `step.N.unet.out` is therefore the
 * guided prediction.
 */
import { ErrorCode, fail } from '../errors.js';
import { concatChannels } from './inpaint.js';
import { generate, preprocessImage, type GenerateOptions, type GenerateResult, type PipelineModels, type PrepareContext, type PreparedLatents, type RgbImage } from './pipeline.js';
import { chunk0, concat0, expectShape, f32, type Tensor } from './tensor.js';
import type { ClipTokenizer } from './tokenizer.js';

/** Diffusers' default image_guidance_scale. */
export const PIX2PIX_DEFAULT_IMAGE_GUIDANCE = 1.5;

export interface Pix2PixOptions extends Omit<GenerateOptions, 'initImage' | 'prepare' | 'conditioning' | 'strength' | 'tokenizer'> {
  readonly tokenizer: ClipTokenizer;
  /** The image to edit (height x width). */
  readonly image: RgbImage;
  /** image_guidance_scale (default 1.5). */
  readonly imageGuidanceScale?: number;
}

/** `uncond + g * (text - image) + ig * (image - uncond)`, float32, element-wise. */
export function pix2pixGuidance(text: Float32Array, image: Float32Array, uncond: Float32Array, g: number, ig: number): Float32Array {
  const gf = f32(g);
  const igf = f32(ig);
  const out = new Float32Array(text.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = f32(f32(uncond[i] + f32(gf * f32(text[i] - image[i]))) + f32(igf * f32(image[i] - uncond[i])));
  }
  return out;
}

/** The mean half of VAE posterior moments `[1, 2C, h, w]` (DiagonalGaussianDistribution.mode()). */
export function posteriorMode(moments: Tensor, channels: number): Tensor {
  const [, , h, w] = moments.shape;
  return { data: moments.data.slice(0, channels * h * w), shape: [1, channels, h, w] };
}

async function embed(models: PipelineModels, ids: number[], what: string): Promise<Tensor> {
  const out = await models.encodeText(Int32Array.from(ids));
  if (out.shape.length !== 3 || out.shape[0] !== 1 || out.shape[1] !== ids.length) fail(ErrorCode.E_PIPELINE, undefined, `${what} have shape [${out.shape.join(', ')}] (expected [1, ${ids.length}, D]).`);
  return out;
}

/** Runs one InstructPix2Pix edit of `image` (the UNet takes 2 x latent channels). */
export async function generatePix2Pix(o: Pix2PixOptions): Promise<GenerateResult> {
  const { image, imageGuidanceScale, tokenizer, models, ...rest } = o;
  const g = o.guidanceScale ?? 7.5;
  const ig = imageGuidanceScale ?? PIX2PIX_DEFAULT_IMAGE_GUIDANCE;
  if (!Number.isFinite(ig)) fail(ErrorCode.E_USAGE, undefined, `image guidance scale ${ig} is not a finite number.`);
  const cfg = g > 1 && ig >= 1;
  const trace = o.trace ?? (() => undefined);

  const cond = tokenizer.encode(o.prompt);
  trace('input_ids.cond', Int32Array.from(cond.ids));
  const condEmbeds = await embed(models, cond.ids, 'prompt embeddings');
  let uncondIds: number[] | undefined;
  let batchEmbeds = condEmbeds;
  if (cfg) {
    uncondIds = tokenizer.encode(o.negativePrompt ?? '').ids;
    trace('input_ids.uncond', Int32Array.from(uncondIds));
    const uncondEmbeds = await embed(models, uncondIds, 'negative prompt embeddings');
    expectShape(uncondEmbeds, condEmbeds.shape, 'negative prompt embeddings');
    batchEmbeds = concat0([condEmbeds, uncondEmbeds, uncondEmbeds]);
  }
  trace('pix2pix.prompt_embeds', batchEmbeds);

  let imageLatentsB: Tensor | undefined;
  const prepare = async (ctx: PrepareContext): Promise<PreparedLatents> => {
    const channels = ctx.latentShape[1];
    const [, , h, w] = ctx.latentShape;
    const encode = ctx.models.vaeEncode ?? fail(ErrorCode.E_PIPELINE, undefined, 'InstructPix2Pix needs a VAE encoder (models.vaeEncode).');
    const pixels = preprocessImage(image, ctx.height, ctx.width);
    ctx.trace('pix2pix.image_preprocessed', pixels);
    const moments = await encode(pixels);
    expectShape(moments, [1, 2 * channels, h, w], 'VAE encoder moments');
    const imageLatents = posteriorMode(moments, channels);
    ctx.trace('pix2pix.image_latents', imageLatents);
    const zeros: Tensor = { data: new Float32Array(imageLatents.data.length), shape: [...imageLatents.shape] };
    imageLatentsB = cfg ? concat0([imageLatents, imageLatents, zeros]) : imageLatents;
    const sigma = f32(ctx.scheduler.initNoiseSigma);
    const latents: Tensor = { data: ctx.draw().map((x) => f32(x * sigma)), shape: [...ctx.latentShape] };
    return {
      latents,
      unetSample: (scaled) => concatChannels([cfg ? concat0([scaled, scaled, scaled]) : scaled, imageLatentsB as Tensor]),
    };
  };

  const unet: PipelineModels['unet'] = async (sample, t, _ehs, extra) => {
    if (!cfg) return models.unet(sample, t, condEmbeds, extra);
    const out = await models.unet(sample, t, batchEmbeds, extra);
    const [, c, h, w] = out.shape;
    expectShape(out, [3, c, h, w], 'UNet output (batch of 3)');
    const [text, img, uncond] = chunk0(out, 3);
    return { data: pix2pixGuidance(text.data, img.data, uncond.data, g, ig), shape: [1, c, h, w] };
  };

  return generate({
    ...rest,
    models: { encodeText: models.encodeText.bind(models), unet, vaeDecode: models.vaeDecode.bind(models), vaeEncode: models.vaeEncode?.bind(models) },
    height: o.height ?? image.height,
    width: o.width ?? image.width,
    guidanceScale: 1,
    conditioning: { cond: condEmbeds, inputIds: { cond: cond.ids, uncond: uncondIds }, truncated: cond.truncated },
    strength: 1,
    prepare,
  });
}
