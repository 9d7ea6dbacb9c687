/**
 * SDXL text-to-image, as Diffusers 0.31's StableDiffusionXLPipeline runs it with
 * `generator=torch.Generator("cpu").manual_seed(seed)`, one image per prompt, no watermark
 * (`add_watermarker=False`: the invisible watermark changes pixels and is not reproduced here).
 *
 * Conditioning (`encode_prompt`):
 *   - two tokenizers and two text encoders: `prompt` goes through tokenizer / text_encoder,
 *     `prompt_2` (default `prompt`) through tokenizer_2 / text_encoder_2; each tokenizer pads to
 *     77 with its own pad token (tokenizer: `<|endoftext|>`, tokenizer_2: `!`);
 *   - prompt_embeds = concat(text_encoder hidden_states[-2], text_encoder_2 hidden_states[-2]) on
 *     the last axis (penultimate states, no final layer norm);
 *   - pooled_prompt_embeds = text_encoder_2's projected `text_embeds`;
 *   - with guidance > 1: when no negative prompt is given (`negative_prompt is None`) and the
 *     pipeline's `force_zeros_for_empty_prompt` is true, the negative embeddings and the negative
 *     pooled embeddings are zeros; otherwise the negative prompt (default "", negative_prompt_2
 *     default negative_prompt) is encoded the same way.
 * Added conditioning: add_time_ids = [original_h, original_w, crop_top, crop_left, target_h,
 * target_w] (defaults (H, W), (0, 0), (H, W)), the same row for the negative side; the UNet gets
 * `text_embeds` [B, proj] and `time_ids` [B, 6], batched like the sample (uncond first).
 * The rest (latents, loop, guidance, decode) is the shared pipeline (pipeline.ts); the decoder
 * input is `latents / scaling_factor`, or `latents * latents_std / scaling_factor + latents_mean`
 * when the VAE config gives both.
 *
 * img2img (StableDiffusionXLImg2ImgPipeline, `denoising_start` unset, one image per prompt):
 *   - the refiner layout (no tokenizer / text_encoder): only `prompt` (not `prompt_2`) goes through
 *     tokenizer_2 / text_encoder_2; prompt_embeds = its penultimate state alone, pooled = its
 *     text_embeds; negatives likewise (`negative_prompt`, default "") unless zeroed as above;
 *   - timesteps: the schedule cut to its last `min(int(steps * strength), steps)` entries
 *     (`get_timesteps`);
 *   - latents: the init image preprocessed to `2 * (x / 255) - 1`, encoded by the VAE (float32:
 *     the SDXL VAE's force_upcast), the posterior sampled with the first generator draw
 *     (`mean + exp(logvar / 2) * randn`), then `scaling_factor * x`, or
 *     `(x - latents_mean) * scaling_factor / latents_std` when the VAE config gives both; a second
 *     draw is the noise of `scheduler.add_noise(latents, noise, first timestep)`;
 *   - add_time_ids: with `requires_aesthetics_score` [original_h, original_w, crop_top, crop_left,
 *     aesthetic_score (6.0)] and the negative row with negative_aesthetic_score (2.5); without it
 *     the txt2img row [original_h, original_w, crop_top, crop_left, target_h, target_w] for both.
 *
 * Inpainting (StableDiffusionXLInpaintPipeline, `denoising_start` unset, no `padding_mask_crop`):
 * the img2img conditioning above (both layouts, the same time ids) composed with inpaint.ts's
 * latent preparation: 9-channel UNets get cat([latents, mask, masked_image_latents], dim=1),
 * 4-channel UNets blend the latents with the noised image latents after every step. The image and
 * masked-image latents are the VAE posterior sample x scaling_factor (the SDXL pipeline's
 * `_encode_vae_image` applies no latents_mean / latents_std; the decoder input does, as for
 * txt2img), encoded in float32 (force_upcast). Strength defaults to 0.9999, Diffusers' default for
 * this pipeline: not 1, so the latents start from `add_noise(image_latents, noise, first timestep)`
 * (the image latents are always encoded) and the schedule keeps `int(steps * 0.9999)` timesteps,
 * one fewer than `steps` for steps < 10000.
 */
import { ErrorCode, fail } from '../errors.js';
import { generate, preprocessImage, sampleLatents, type GenerateOptions, type GenerateResult, type PipelineModels, type PrepareContext, type PreparedLatents, type PromptConditioning, type RgbImage } from './pipeline.js';
import { inpaintPrepare } from './inpaint.js';
import { concat0, expectShape, f32, type Tensor } from './tensor.js';
import type { ClipTokenizer } from './tokenizer.js';

/** What SDXL reads from one text encoder. */
export interface SdxlTextEncoderOutput {
  /** `hidden_states[-2]`: `[1, 77, D]`. */
  readonly penultimate: Tensor;
  /** text_encoder_2 (CLIPTextModelWithProjection) only: the projected pooled output `[1, P]`. */
  readonly textEmbeds?: Tensor;
}

/**
 * The networks of an SDXL generation: the shared UNet / VAE calls (the UNet gets `text_embeds` and
 * `time_ids` as extra inputs) and the two text encoders (`which` 0: text_encoder, 1: text_encoder_2).
 */
export interface SdxlModels extends Omit<PipelineModels, 'encodeText'> {
  encodeTextXL(which: 0 | 1, ids: Int32Array): Promise<SdxlTextEncoderOutput>;
}

export interface SdxlConditioningOptions {
  readonly prompt: string;
  /** Default `prompt`. */
  readonly prompt2?: string;
  /** `undefined` is Diffusers' `negative_prompt=None` (zeros with force_zeros_for_empty_prompt). */
  readonly negativePrompt?: string;
  /** Default `negativePrompt`. */
  readonly negativePrompt2?: string;
  /**
   * tokenizer and tokenizer_2; `null` first for the refiner layout (no tokenizer / text_encoder:
   * `prompt` goes through tokenizer_2 / text_encoder_2 alone).
   */
  readonly tokenizers: readonly [ClipTokenizer | null, ClipTokenizer];
  readonly models: Pick<SdxlModels, 'encodeTextXL'>;
  /** Classifier-free guidance on (guidance scale > 1). */
  readonly guidance: boolean;
  /** model_index.json `force_zeros_for_empty_prompt` (default true). */
  readonly forceZerosForEmptyPrompt?: boolean;
  readonly height: number;
  readonly width: number;
  /** (height, width); default (height, width). */
  readonly originalSize?: readonly [number, number];
  /** (top, left); default (0, 0). */
  readonly cropsCoordsTopLeft?: readonly [number, number];
  /** (height, width); default (height, width). */
  readonly targetSize?: readonly [number, number];
  /**
   * img2img's model_index.json `requires_aesthetics_score`: 5 time ids ending in the aesthetic
   * score instead of the target size. Default false.
   */
  readonly requiresAestheticsScore?: boolean;
  /** Default 6.0. */
  readonly aestheticScore?: number;
  /** Default 2.5. */
  readonly negativeAestheticScore?: number;
  /**
   * When given, `addition_time_embed_dim * 6 + projection_dim` must equal this (the UNet's
   * `add_embedding.linear_1` input width, `projection_class_embeddings_input_dim`), as Diffusers checks.
   */
  readonly expectedAddEmbedDim?: number;
  readonly additionTimeEmbedDim?: number;
  readonly trace?: (name: string, value: Tensor | Int32Array | number[]) => void;
}

/** `[original_h, original_w, crop_top, crop_left, target_h, target_w]` (`_get_add_time_ids`). */
export function sdxlTimeIds(height: number, width: number, o: Pick<SdxlConditioningOptions, 'originalSize' | 'cropsCoordsTopLeft' | 'targetSize'> = {}): number[] {
  const original = o.originalSize ?? [height, width];
  const crop = o.cropsCoordsTopLeft ?? [0, 0];
  const target = o.targetSize ?? [height, width];
  return [original[0], original[1], crop[0], crop[1], target[0], target[1]];
}

/**
 * img2img's `_get_add_time_ids`: with `requiresAestheticsScore` `[original_h, original_w, crop_top,
 * crop_left, aesthetic_score]` and the negative row with `negative_aesthetic_score`; without it the
 * txt2img row for both.
 */
export function sdxlImg2ImgTimeIds(
  height: number,
  width: number,
  o: Pick<SdxlConditioningOptions, 'originalSize' | 'cropsCoordsTopLeft' | 'targetSize' | 'requiresAestheticsScore' | 'aestheticScore' | 'negativeAestheticScore'> = {},
): { cond: number[]; uncond: number[] } {
  if (!o.requiresAestheticsScore) {
    const row = sdxlTimeIds(height, width, o);
    return { cond: row, uncond: [...row] };
  }
  const original = o.originalSize ?? [height, width];
  const crop = o.cropsCoordsTopLeft ?? [0, 0];
  return {
    cond: [original[0], original[1], crop[0], crop[1], o.aestheticScore ?? 6.0],
    uncond: [original[0], original[1], crop[0], crop[1], o.negativeAestheticScore ?? 2.5],
  };
}

function checkEncoderOutput(out: SdxlTextEncoderOutput, which: 0 | 1, seq: number): void {
  const p = out.penultimate;
  if (p.shape.length !== 3 || p.shape[0] !== 1 || p.shape[1] !== seq || p.data.length !== p.shape[0] * p.shape[1] * p.shape[2]) {
    fail(ErrorCode.E_PIPELINE, undefined, `text_encoder${which ? '_2' : ''} penultimate hidden state has shape [${p.shape.join(', ')}] (expected [1, ${seq}, D]).`);
  }
  if (which === 1) {
    const t = out.textEmbeds;
    if (!t || t.shape.length !== 2 || t.shape[0] !== 1) fail(ErrorCode.E_PIPELINE, undefined, 'text_encoder_2 gave no text_embeds [1, P] (a CLIPTextModelWithProjection output).');
  }
}

/** Concatenation on the last axis of `[1, S, D1]` and `[1, S, D2]` → `[1, S, D1 + D2]`. */
export function concatLastAxis(a: Tensor, b: Tensor): Tensor {
  const [n, s, d1] = a.shape;
  const d2 = b.shape[2];
  if (b.shape[0] !== n || b.shape[1] !== s) fail(ErrorCode.E_PIPELINE, undefined, `cannot concatenate [${a.shape.join(', ')}] and [${b.shape.join(', ')}] on the last axis.`);
  const out = new Float32Array(n * s * (d1 + d2));
  for (let r = 0; r < n * s; r++) {
    out.set(a.data.subarray(r * d1, (r + 1) * d1), r * (d1 + d2));
    out.set(b.data.subarray(r * d2, (r + 1) * d2), r * (d1 + d2) + d1);
  }
  return { data: out, shape: [n, s, d1 + d2] };
}

function zerosLike(t: Tensor): Tensor {
  return { data: new Float32Array(t.data.length), shape: [...t.shape] };
}

/**
 * One side (prompt or negative prompt) through both encoders: `[1, 77, D1 + D2]` and pooled
 * `[1, P]`; in the refiner layout `texts[0]` through text_encoder_2 alone: `[1, 77, D2]`.
 */
async function encodeSide(o: SdxlConditioningOptions, texts: readonly [string, string], side: 'cond' | 'uncond'): Promise<{ embeds: Tensor; pooled: Tensor; ids: number[]; truncated: boolean }> {
  const trace = o.trace ?? (() => undefined);
  // Diffusers pairs [prompt, prompt_2] with the tokenizers present: [tokenizer_2] alone takes `prompt`.
  const pairs: { which: 0 | 1; tokenizer: ClipTokenizer; text: string }[] = o.tokenizers[0]
    ? [
        { which: 0, tokenizer: o.tokenizers[0], text: texts[0] },
        { which: 1, tokenizer: o.tokenizers[1], text: texts[1] },
      ]
    : [{ which: 1, tokenizer: o.tokenizers[1], text: texts[0] }];
  const hidden: Tensor[] = [];
  let pooled: Tensor | undefined;
  let ids: number[] = [];
  let truncated = false;
  for (const [i, { which, tokenizer, text }] of pairs.entries()) {
    const enc = tokenizer.encode(text);
    if (i === 0) {
      ids = enc.ids;
      truncated = enc.truncated;
    }
    trace(`input_ids${which ? '_2' : ''}.${side}`, Int32Array.from(enc.ids));
    const out = await o.models.encodeTextXL(which, Int32Array.from(enc.ids));
    checkEncoderOutput(out, which, enc.ids.length);
    hidden.push(out.penultimate);
    // Only the final encoder's pooled output is used (text_encoder gives none of rank 2).
    if (which === 1) pooled = out.textEmbeds;
  }
  if (hidden.length === 1) return { embeds: hidden[0], pooled: pooled as Tensor, ids, truncated };
  if (hidden[0].shape[1] !== hidden[1].shape[1]) fail(ErrorCode.E_PIPELINE, undefined, `the two tokenizers give ${hidden[0].shape[1]} and ${hidden[1].shape[1]} tokens (expected the same length).`);
  return { embeds: concatLastAxis(hidden[0], hidden[1]), pooled: pooled as Tensor, ids, truncated };
}

/** The SDXL conditioning for the shared pipeline: prompt embeddings and the UNet's text_embeds / time_ids. */
export async function sdxlConditioning(o: SdxlConditioningOptions & { readonly img2img?: boolean }): Promise<PromptConditioning & { pooled: Tensor; negativePooled?: Tensor; timeIds: number[]; negativeTimeIds: number[] }> {
  const trace = o.trace ?? (() => undefined);
  const cond = await encodeSide(o, [o.prompt, o.prompt2 || o.prompt], 'cond');
  const rows = o.img2img ? sdxlImg2ImgTimeIds(o.height, o.width, o) : { cond: sdxlTimeIds(o.height, o.width, o), uncond: sdxlTimeIds(o.height, o.width, o) };
  const timeIds = rows.cond;
  const projectionDim = cond.pooled.shape[1];
  if (o.expectedAddEmbedDim !== undefined && o.additionTimeEmbedDim !== undefined) {
    const passed = o.additionTimeEmbedDim * timeIds.length + projectionDim;
    if (passed !== o.expectedAddEmbedDim) {
      const off = o.expectedAddEmbedDim - passed;
      const hint =
        o.img2img && off === o.additionTimeEmbedDim
          ? 'The UNet takes one time id more: set requires_aesthetics_score true in model_index.json (a refiner UNet).'
          : o.img2img && off === -o.additionTimeEmbedDim
            ? 'The UNet takes one time id less: set requires_aesthetics_score false in model_index.json (not a refiner UNet).'
            : 'The text_encoder_2 projection_dim and the UNet addition_time_embed_dim / projection_class_embeddings_input_dim do not belong together.';
      fail(ErrorCode.E_PIPELINE, undefined, `the UNet expects an added embedding of ${o.expectedAddEmbedDim} features but gets ${o.additionTimeEmbedDim} x ${timeIds.length} time ids + ${projectionDim} text_embeds = ${passed}.`, { hint });
    }
  }
  trace('pooled_prompt_embeds.cond', cond.pooled);
  const ids: Tensor = { data: Float32Array.from(timeIds, f32), shape: [1, timeIds.length] };
  const negIds: Tensor = { data: Float32Array.from(rows.uncond, f32), shape: [1, rows.uncond.length] };
  trace('add_time_ids.cond', ids);
  if (!o.guidance) {
    return { cond: cond.embeds, inputIds: { cond: cond.ids }, truncated: cond.truncated, unetExtra: { text_embeds: cond.pooled, time_ids: ids }, pooled: cond.pooled, timeIds, negativeTimeIds: rows.uncond };
  }
  trace('add_time_ids.uncond', negIds);
  let uncondEmbeds: Tensor;
  let uncondPooled: Tensor;
  let uncondIds: number[] | undefined;
  if (o.negativePrompt === undefined && (o.forceZerosForEmptyPrompt ?? true)) {
    uncondEmbeds = zerosLike(cond.embeds);
    uncondPooled = zerosLike(cond.pooled);
  } else {
    const neg = o.negativePrompt ?? '';
    const u = await encodeSide(o, [neg, o.negativePrompt2 || neg], 'uncond');
    expectShape(u.embeds, cond.embeds.shape, 'negative prompt embeddings');
    expectShape(u.pooled, cond.pooled.shape, 'negative pooled prompt embeddings');
    uncondEmbeds = u.embeds;
    uncondPooled = u.pooled;
    uncondIds = u.ids;
  }
  trace('pooled_prompt_embeds.uncond', uncondPooled);
  return {
    cond: cond.embeds,
    uncond: uncondEmbeds,
    inputIds: { cond: cond.ids, uncond: uncondIds },
    truncated: cond.truncated,
    unetExtra: { text_embeds: concat0([uncondPooled, cond.pooled]), time_ids: concat0([negIds, ids]) },
    pooled: cond.pooled,
    negativePooled: uncondPooled,
    timeIds,
    negativeTimeIds: rows.uncond,
  };
}

export interface SdxlGenerateOptions extends Omit<GenerateOptions, 'tokenizer' | 'conditioning' | 'models' | 'initImage' | 'prepare'> {
  readonly prompt2?: string;
  readonly negativePrompt2?: string;
  readonly tokenizers: readonly [ClipTokenizer, ClipTokenizer];
  readonly models: SdxlModels;
  readonly forceZerosForEmptyPrompt?: boolean;
  readonly originalSize?: readonly [number, number];
  readonly cropsCoordsTopLeft?: readonly [number, number];
  readonly targetSize?: readonly [number, number];
  readonly expectedAddEmbedDim?: number;
  readonly additionTimeEmbedDim?: number;
  /** VAE config `latents_mean` / `latents_std` (both or neither). */
  readonly latentsMean?: readonly number[] | null;
  readonly latentsStd?: readonly number[] | null;
}

/** The decoder input: `latents / scaling_factor`, or `latents * std / scaling_factor + mean`. */
function sdxlVaeInput(scaling: number, mean: readonly number[] | null | undefined, std: readonly number[] | null | undefined): ((latents: Tensor) => Tensor) | undefined {
  if (!mean || !std) return undefined;
  return (latents) => {
    const [, c, h, w] = latents.shape;
    checkLatentStats(mean, std, c);
    const out = new Float32Array(latents.data.length);
    for (let ch = 0; ch < c; ch++) {
      const m = f32(mean[ch]);
      const s = f32(std[ch]);
      for (let p = 0; p < h * w; p++) out[ch * h * w + p] = f32(f32(f32(latents.data[ch * h * w + p] * s) / scaling) + m);
    }
    return { data: out, shape: latents.shape };
  };
}

function checkLatentStats(mean: readonly number[], std: readonly number[], channels: number): void {
  if (mean.length !== channels || std.length !== channels) fail(ErrorCode.E_PIPELINE, undefined, `latents_mean / latents_std have ${mean.length} / ${std.length} values for ${channels} latent channels.`);
}

function sharedModels(m: SdxlModels): PipelineModels {
  const out: PipelineModels = {
    encodeText: () => fail(ErrorCode.E_PIPELINE, undefined, 'SDXL encodes prompts with encodeTextXL.'),
    unet: (s, t, e, x) => m.unet(s, t, e, x),
    vaeDecode: (l) => m.vaeDecode(l),
  };
  if (m.vaeEncode) {
    const enc = m.vaeEncode.bind(m);
    out.vaeEncode = (image) => enc(image);
  }
  return out;
}

/** Runs one SDXL txt2img generation (default size 1024 x 1024). */
export async function generateSdxl(o: SdxlGenerateOptions): Promise<GenerateResult> {
  const height = o.height ?? 1024;
  const width = o.width ?? 1024;
  const guidance = (o.guidanceScale ?? 5) > 1;
  const conditioning = await conditioningOf(o, height, width, guidance, false);
  const scaling = f32(o.scalingFactor ?? 0.13025);
  return generate({
    ...o,
    guidanceScale: o.guidanceScale ?? 5,
    height,
    width,
    scalingFactor: scaling,
    models: sharedModels(o.models),
    conditioning,
    vaeInput: sdxlVaeInput(scaling, o.latentsMean, o.latentsStd),
  });
}

export interface SdxlImg2ImgOptions extends Omit<SdxlGenerateOptions, 'tokenizers'> {
  /** tokenizer and tokenizer_2; `null` first for the refiner layout. */
  readonly tokenizers: readonly [ClipTokenizer | null, ClipTokenizer];
  /** The init image; the generation size is its size unless height / width say otherwise (they must match it). */
  readonly image: RgbImage;
  /** Default 0.3 (Diffusers' default for SDXL img2img). */
  readonly strength?: number;
  /** model_index.json `requires_aesthetics_score` (true for the refiner). */
  readonly requiresAestheticsScore?: boolean;
  /** Default 6.0. */
  readonly aestheticScore?: number;
  /** Default 2.5. */
  readonly negativeAestheticScore?: number;
}

/**
 * The `prepare` hook of SDXL img2img (`prepare_latents` with add_noise): VAE posterior sample
 * (first draw), scaled or normalized by latents_mean / latents_std, then noised to the first
 * timestep with the second draw.
 */
export function sdxlImg2ImgPrepare(o: { image: RgbImage; latentsMean?: readonly number[] | null; latentsStd?: readonly number[] | null }): (ctx: PrepareContext) => Promise<PreparedLatents> {
  return async (ctx) => {
    const channels = ctx.latentShape[1];
    const encode = ctx.models.vaeEncode ?? fail(ErrorCode.E_PIPELINE, undefined, 'img2img needs a VAE encoder (models.vaeEncode).');
    const image = preprocessImage(o.image, ctx.height, ctx.width);
    ctx.trace('img2img.image_preprocessed', image);
    const moments = await encode(image);
    expectShape(moments, [1, 2 * channels, ...ctx.latentShape.slice(2)], 'VAE encoder moments');
    const eps = ctx.draw();
    let imageLatents: Float32Array;
    const mean = o.latentsMean;
    const std = o.latentsStd;
    if (mean && std) {
      checkLatentStats(mean, std, channels);
      const sample = sampleLatents(moments.data, eps, 1);
      const sf = f32(ctx.scalingFactor);
      const plane = sample.length / channels;
      imageLatents = new Float32Array(sample.length);
      for (let c = 0; c < channels; c++) {
        const m = f32(mean[c]);
        const s = f32(std[c]);
        for (let p = 0; p < plane; p++) imageLatents[c * plane + p] = f32(f32(f32(sample[c * plane + p] - m) * sf) / s);
      }
    } else {
      imageLatents = sampleLatents(moments.data, eps, ctx.scalingFactor);
    }
    ctx.trace('img2img.image_latents', { data: imageLatents, shape: [...ctx.latentShape] });
    ctx.trace('img2img.latent_timestep', [ctx.timesteps[0]]);
    const noise = ctx.draw();
    return { latents: { data: ctx.scheduler.addNoise(imageLatents, noise, ctx.timesteps[0]), shape: [...ctx.latentShape] } };
  };
}

/** The fields of SdxlImg2ImgOptions that only image-to-image generations have. */
type AestheticOptions = Partial<Pick<SdxlImg2ImgOptions, 'requiresAestheticsScore' | 'aestheticScore' | 'negativeAestheticScore'>>;

/**
 * The conditioning every SDXL mode builds from its options; `img2img` picks the image-to-image time
 * ids (with aesthetic scores when the folder asks for them) over the text-to-image ones.
 */
function conditioningOf(
  o: Omit<SdxlGenerateOptions, 'tokenizers'> & Pick<SdxlImg2ImgOptions, 'tokenizers'> & AestheticOptions,
  height: number,
  width: number,
  guidance: boolean,
  img2img: boolean,
): ReturnType<typeof sdxlConditioning> {
  return sdxlConditioning({
    prompt: o.prompt,
    prompt2: o.prompt2,
    negativePrompt: o.negativePrompt,
    negativePrompt2: o.negativePrompt2,
    tokenizers: o.tokenizers,
    models: o.models,
    guidance,
    forceZerosForEmptyPrompt: o.forceZerosForEmptyPrompt,
    height,
    width,
    originalSize: o.originalSize,
    cropsCoordsTopLeft: o.cropsCoordsTopLeft,
    targetSize: o.targetSize,
    requiresAestheticsScore: o.requiresAestheticsScore,
    aestheticScore: o.aestheticScore,
    negativeAestheticScore: o.negativeAestheticScore,
    expectedAddEmbedDim: o.expectedAddEmbedDim,
    additionTimeEmbedDim: o.additionTimeEmbedDim,
    trace: o.trace,
    img2img,
  });
}

/**
 * Runs one SDXL img2img generation (StableDiffusionXLImg2ImgPipeline: the base layout, or the
 * refiner's with text_encoder_2 alone and aesthetic-score time ids).
 */
export async function generateSdxlImg2Img(o: SdxlImg2ImgOptions): Promise<GenerateResult> {
  const height = o.height ?? o.image.height;
  const width = o.width ?? o.image.width;
  const guidance = (o.guidanceScale ?? 5) > 1;
  const strength = o.strength ?? 0.3;
  if (!(strength >= 0 && strength <= 1)) fail(ErrorCode.E_USAGE, undefined, `strength ${strength} is not in [0, 1].`);
  const conditioning = await conditioningOf(o, height, width, guidance, true);
  const scaling = f32(o.scalingFactor ?? 0.13025);
  return generate({
    ...o,
    guidanceScale: o.guidanceScale ?? 5,
    height,
    width,
    strength,
    scalingFactor: scaling,
    models: sharedModels(o.models),
    conditioning,
    prepare: sdxlImg2ImgPrepare({ image: o.image, latentsMean: o.latentsMean, latentsStd: o.latentsStd }),
    vaeInput: sdxlVaeInput(scaling, o.latentsMean, o.latentsStd),
  });
}

export interface SdxlInpaintOptions extends Omit<SdxlImg2ImgOptions, 'strength'> {
  /** The mask (the image's size): white is repainted. */
  readonly mask: RgbImage;
  /** The UNet's in_channels: 2 x latent channels + 1 (an SDXL inpainting UNet) or the latent channels (blending). */
  readonly unetInChannels: number;
  /** Default 0.9999 (Diffusers' default for SDXL inpainting). */
  readonly strength?: number;
}

/** Diffusers' default strength of StableDiffusionXLInpaintPipeline. */
export const SDXL_INPAINT_DEFAULT_STRENGTH = 0.9999;

/**
 * Runs one SDXL inpainting generation (StableDiffusionXLInpaintPipeline): the img2img conditioning
 * (time ids with aesthetic scores when `requiresAestheticsScore`) and inpaint.ts's preparation.
 */
export async function generateSdxlInpaint(o: SdxlInpaintOptions): Promise<GenerateResult> {
  const height = o.height ?? o.image.height;
  const width = o.width ?? o.image.width;
  const guidance = (o.guidanceScale ?? 5) > 1;
  const strength = o.strength ?? SDXL_INPAINT_DEFAULT_STRENGTH;
  if (!(strength > 0 && strength <= 1)) fail(ErrorCode.E_USAGE, undefined, `strength ${strength} is not in (0, 1].`);
  const conditioning = await conditioningOf(o, height, width, guidance, true);
  const scaling = f32(o.scalingFactor ?? 0.13025);
  return generate({
    ...o,
    guidanceScale: o.guidanceScale ?? 5,
    height,
    width,
    strength,
    scalingFactor: scaling,
    models: sharedModels(o.models),
    conditioning,
    prepare: inpaintPrepare({ image: o.image, mask: o.mask, unetInChannels: o.unetInChannels, strength }),
    vaeInput: sdxlVaeInput(scaling, o.latentsMean, o.latentsStd),
  });
}
