/**
 * A test generation from a converted folder: `ckpt2diffusers generate` and the generation half of
 * `ckpt2diffusers verify`.
 *
 *   folder      a Diffusers folder (its ONNX graphs are exported once into a cache, onnx-cache.ts)
 *               or an ONNX pipeline folder (optimum layout, or OnnxStableDiffusionPipeline's
 *               txt2img)
 *   engine      src/generate's pipeline (tokenizer, torch-exact noise, schedulers) with the ONNX
 *               sessions of onnx-models.ts as its networks: txt2img, img2img with --image,
 *               inpainting with --image and --mask (inpaint.ts), SDXL txt2img, img2img and
 *               inpainting (sdxl.ts), InstructPix2Pix with --image (pix2pix.ts), depth-to-image
 *               with --image and --depth (depth.ts)
 *   supported   SD 1.x / 2.x UNets (in_channels = the VAE's latent_channels: txt2img, img2img,
 *               and inpainting by latent blending with --mask; in_channels = 2 x latent + 1:
 *               inpainting UNets, which need --image and --mask), SDXL base txt2img
 *               (StableDiffusionXLPipeline: two text encoders, text_embeds / time_ids), SDXL
 *               img2img with --image (StableDiffusionXLImg2ImgPipeline, or a base folder), the
 *               refiner included (text_encoder_2 alone, aesthetic-score time ids; --image required),
 *               SDXL inpainting with --image and --mask (StableDiffusionXLInpaintPipeline: 9-channel
 *               SDXL inpainting UNets, or latent blending with a 4-channel SDXL UNet; strength
 *               default 0.9999 as in Diffusers), InstructPix2Pix (StableDiffusionInstructPix2PixPipeline:
 *               2 x latent channels, --image, --image-guidance) and SD 2 depth
 *               (StableDiffusionDepth2ImgPipeline: latent + 1 channels, --image and a depth map
 *               --depth, as the folder has no depth estimator) and the x4 upscaler
 *               (StableDiffusionUpscalePipeline: latent + 3 channels, --image, --noise-level;
 *               upscale.ts). Refused with E_GENERATE_UNSUPPORTED: unCLIP / ControlNet folders. Refused with
 *               E_GENERATE_INCONSISTENT (before any export): components that cannot run together
 *               (text encoder widths vs the UNet's cross_attention_dim; token ids beyond a text
 *               encoder's vocabulary).
 *   checks      checks.ts (finite, not flat, latent statistics) and the prediction-type probe
 *               (probe.ts), with a verdict.
 *
 * onnxruntime is loaded only when a generation runs (dynamic import of onnx-models.ts).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { DEPTH_DEFAULT_STRENGTH, generateDepth } from '../generate/depth.js';
import { concatChannels, generateInpaint, preprocessMask } from '../generate/inpaint.js';
import { generatePix2Pix, PIX2PIX_DEFAULT_IMAGE_GUIDANCE } from '../generate/pix2pix.js';
import { generateUpscale, UPSCALE_DEFAULT_MAX_NOISE_LEVEL, UPSCALE_DEFAULT_NOISE_LEVEL } from '../generate/upscale.js';
import { generate, type GenerateResult, type PipelineModels, type RgbImage, type StepEvent } from '../generate/pipeline.js';
import { generateSdxl, generateSdxlImg2Img, generateSdxlInpaint, SDXL_INPAINT_DEFAULT_STRENGTH, sdxlImg2ImgTimeIds, sdxlTimeIds, type SdxlModels } from '../generate/sdxl.js';
import { imageToRgb8, readPng, writePng } from '../generate/png.js';
import { createScheduler } from '../generate/schedulers/index.js';
import type { PredictionType, SchedulerConfigJson } from '../generate/schedulers/common.js';
import type { Tensor } from '../generate/tensor.js';
import { ClipTokenizer } from '../generate/tokenizer.js';
import type { ProgressCallback } from '../progress.js';
import { finiteCheck, flatImageCheck, latentStatsCheck, statsOf, verdictOf, type Check, type Stats, type Verdict } from './checks.js';
import { ensureOnnxFolder, type OnnxFolder } from './onnx-cache.js';
import type { Provider } from './providers.js';
import { predictionCheck, runPredictionProbe, type ProbeResult } from './probe.js';

export interface GenerationOptions {
  readonly prompt: string;
  readonly negativePrompt?: string;
  /** Default 20. */
  readonly steps?: number;
  /** Default 7.5. */
  readonly guidance?: number;
  /** Default 42. */
  readonly seed?: number | bigint;
  /** Default: the UNet's sample_size times the VAE scale factor (the init image's size for img2img). */
  readonly width?: number;
  readonly height?: number;
  /** Scheduler class or short name (pndm, ddim, euler, euler_a); default the folder's. */
  readonly scheduler?: string;
  /** img2img: a PNG path or an RGB image. */
  readonly initImage?: string | RgbImage;
  /** img2img strength, default 0.6; inpainting strength, default 1 (SDXL inpainting: 0.9999, as in Diffusers). */
  readonly strength?: number;
  /** Inpainting mask (PNG path or RGB image, the init image's size; white is repainted); needs initImage. */
  readonly mask?: string | RgbImage;
  /** InstructPix2Pix: image_guidance_scale (default 1.5). */
  readonly imageGuidance?: number;
  /** Depth-to-image: the depth map (grey PNG path or RGB image, any size; larger is nearer). */
  readonly depth?: string | RgbImage;
  /** x4 upscaler: the noise level added to the image (default 20). */
  readonly noiseLevel?: number;
  /** onnxruntime execution provider (default cpu). */
  readonly provider?: Provider;
  /** Write the image as PNG here. */
  readonly save?: string;
  /** ONNX cache parent folder (see onnx-cache.ts); default the folder's .ckpt2diffusers-onnx/. */
  readonly onnxCacheDir?: string;
  readonly onnxDtype?: 'fp32' | 'fp16';
  /** Re-export the ONNX graphs even when the cache matches. */
  readonly reexport?: boolean;
  /** Run the prediction-type probe (default true). */
  readonly probe?: boolean;
  /** Networks to use instead of ONNX sessions (tests, other runtimes); SDXL folders need `encodeTextXL` too. */
  readonly models?: PipelineModels | (PipelineModels & SdxlModels);
  readonly onStep?: (e: StepEvent) => void;
  readonly onProgress?: ProgressCallback;
  readonly trace?: (name: string, value: Tensor | Int32Array | number[]) => void;
  readonly signal?: AbortSignal;
}

export interface GenerationTimings {
  readonly exportMs: number;
  readonly loadMs: number;
  readonly encodeTextMs: number;
  readonly prepareMs: number;
  readonly stepMs: number[];
  readonly meanStepMs: number;
  readonly decodeMs: number;
  readonly probeMs: number;
  readonly totalMs: number;
}

export interface GenerationReport {
  readonly folder: string;
  readonly onnx?: { readonly dir: string; readonly origin: OnnxFolder['origin']; readonly warnings: readonly string[] };
  readonly pipelineClass: string;
  readonly mode: 'txt2img' | 'img2img' | 'inpaint' | 'pix2pix' | 'depth2img' | 'upscale';
  /** 'sdxl' for StableDiffusionXLPipeline folders. */
  readonly family: 'sd' | 'sdxl';
  /** Inpainting: the UNet's input channels (9: an inpainting UNet; 4: latent blending) and the share of pixels repainted. */
  readonly inpaint?: { readonly unetInChannels: number; readonly method: 'inpainting-unet' | 'latent-blend'; readonly maskedFraction: number };
  readonly prompt: string;
  readonly negativePrompt?: string;
  readonly promptTruncated: boolean;
  readonly seed: string;
  readonly steps: number;
  readonly guidance: number;
  readonly strength?: number;
  /** InstructPix2Pix: the image guidance scale. */
  readonly imageGuidance?: number;
  /** x4 upscaler: the noise level. */
  readonly noiseLevel?: number;
  readonly width: number;
  readonly height: number;
  readonly scheduler: string;
  readonly predictionType: PredictionType;
  readonly scalingFactor: number;
  readonly provider: string;
  readonly timesteps: number[];
  readonly latents: Stats;
  readonly image?: string;
  readonly probe?: ProbeResult;
  readonly timings: GenerationTimings;
  readonly checks: Check[];
  readonly verdict: Verdict;
}

export interface GenerationRun {
  readonly report: GenerationReport;
  readonly result: GenerateResult;
}

/** What generation needs to know about a folder. */
export interface FolderInfo {
  readonly pipelineClass: string;
  readonly unet: Record<string, unknown>;
  readonly vae: Record<string, unknown>;
  readonly schedulerConfig: SchedulerConfigJson;
  readonly tokenizerDir: string;
  readonly latentChannels: number;
  /** The UNet's in_channels (latentChannels, or 2 x latentChannels + 1 for an inpainting UNet). */
  readonly unetInChannels: number;
  /** What the UNet's extra input channels hold. */
  readonly unetKind: 'plain' | 'inpaint' | 'pix2pix' | 'depth' | 'upscale';
  /** x4 upscaler: low_res_scheduler/scheduler_config.json and model_index.json's max_noise_level. */
  readonly upscale?: { readonly lowResScheduler: SchedulerConfigJson; readonly maxNoiseLevel: number };
  /** SDXL folders: what the SDXL conditioning needs. */
  readonly xl?: {
    /** false for the refiner layout (tokenizer / text_encoder null in model_index.json). */
    readonly hasTextEncoder: boolean;
    /** model_index.json `requires_aesthetics_score` (img2img time ids; the refiner's true). */
    readonly requiresAestheticsScore: boolean;
    readonly tokenizer2Dir: string;
    readonly forceZerosForEmptyPrompt: boolean;
    readonly additionTimeEmbedDim?: number;
    readonly expectedAddEmbedDim?: number;
    readonly latentsMean?: number[] | null;
    readonly latentsStd?: number[] | null;
  };
  /** vocab_size of text_encoder (and text_encoder_2), when their configs are present. */
  readonly vocabSizes: { readonly text_encoder?: number; readonly text_encoder_2?: number };
  readonly vaeScaleFactor: number;
  readonly scalingFactor: number;
  readonly crossAttentionDim: number;
  readonly sampleSize: number;
}

const SUPPORTED_CLASSES = new Set([
  'StableDiffusionPipeline',
  'StableDiffusionImg2ImgPipeline',
  'StableDiffusionInpaintPipeline',
  'OnnxStableDiffusionPipeline',
  'OnnxStableDiffusionImg2ImgPipeline',
  'OnnxStableDiffusionInpaintPipeline',
  'ORTStableDiffusionPipeline',
  'ORTStableDiffusionImg2ImgPipeline',
  'ORTStableDiffusionInpaintPipeline',
  'StableDiffusionInstructPix2PixPipeline',
  'StableDiffusionDepth2ImgPipeline',
  'StableDiffusionUpscalePipeline',
]);
const SDXL_CLASSES = new Set([
  'StableDiffusionXLPipeline',
  'ORTStableDiffusionXLPipeline',
  'StableDiffusionXLImg2ImgPipeline',
  'ORTStableDiffusionXLImg2ImgPipeline',
  'StableDiffusionXLInpaintPipeline',
  'ORTStableDiffusionXLInpaintPipeline',
]);

function inconsistent(folder: string, what: string, hint?: string): never {
  return fail(ErrorCode.E_GENERATE_INCONSISTENT, folder, what, hint ? { hint } : {});
}

/** A component config, or {} when absent (ONNX folders may carry none). */
async function optionalJson(path: string): Promise<Record<string, unknown>> {
  return existsSync(path) ? readJson(path) : {};
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    return fail(ErrorCode.E_CONFIG, path, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}).`, { cause: e });
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    return fail(ErrorCode.E_CONFIG, path, `is not valid JSON (${(e as Error).message}).`, { cause: e });
  }
}

function firstExisting(paths: string[]): string {
  return paths.find((p) => existsSync(p)) ?? paths[0];
}

function unsupported(folder: string, what: string, hint?: string): never {
  return fail(ErrorCode.E_GENERATE_UNSUPPORTED, folder, what, hint ? { hint } : {});
}

/** Reads and checks the configs of a Diffusers or ONNX pipeline folder; refuses what the engine cannot run. */
export async function readFolderInfo(folder: string): Promise<FolderInfo> {
  const index = await readJson(join(folder, 'model_index.json'));
  const pipelineClass = String(index._class_name ?? '');
  const hasComponent = (c: string) => Array.isArray(index[c]) && (index[c] as unknown[])[0] !== null;
  const isXL = pipelineClass.includes('XL') || hasComponent('text_encoder_2');
  if (isXL) {
    if (!SDXL_CLASSES.has(pipelineClass)) {
      unsupported(folder, `${pipelineClass || 'this pipeline'}: of the SDXL pipelines, test generation runs StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline (the refiner included) and StableDiffusionXLInpaintPipeline only.`, 'Use `verify --source` for the weights check.');
    }
    if (!hasComponent('text_encoder_2')) {
      unsupported(folder, 'an SDXL pipeline without text_encoder_2: test generation runs the SDXL base layout (both text encoders) and the refiner layout (text_encoder_2 alone) only.');
    }
  } else if (!SUPPORTED_CLASSES.has(pipelineClass)) {
    unsupported(folder, `${pipelineClass || 'a pipeline without _class_name'}: test generation runs StableDiffusionPipeline (txt2img, img2img), StableDiffusionInpaintPipeline, StableDiffusionInstructPix2PixPipeline, StableDiffusionDepth2ImgPipeline, StableDiffusionUpscalePipeline and the SDXL pipelines (txt2img, img2img, inpainting) folders only.`);
  }
  const unet = await readJson(join(folder, 'unet', 'config.json')).catch((e: unknown) => {
    // OnnxStableDiffusionPipeline folders carry no component configs.
    if (existsSync(join(folder, 'unet', 'model.onnx'))) return {} as Record<string, unknown>;
    throw e;
  });
  const vae = await readJson(firstExisting([join(folder, 'vae', 'config.json'), join(folder, 'vae_decoder', 'config.json')])).catch(() => ({}) as Record<string, unknown>);
  const schedulerConfig = (await readJson(join(folder, 'scheduler', 'scheduler_config.json'))) as SchedulerConfigJson;
  const latentChannels = Number(vae.latent_channels ?? 4);
  const inChannels = Number(unet.in_channels ?? latentChannels);
  const isUpscaler = pipelineClass === 'StableDiffusionUpscalePipeline';
  if (isUpscaler && inChannels !== latentChannels + 3) unsupported(folder, `an x4 upscaler whose UNet takes ${inChannels} input channels (expected ${latentChannels} latent + 3 image channels).`);
  const unetKind: FolderInfo['unetKind'] = isUpscaler
    ? 'upscale'
    : inChannels === latentChannels ? 'plain' : inChannels === 2 * latentChannels + 1 ? 'inpaint' : inChannels === 2 * latentChannels && !isXL ? 'pix2pix' : inChannels === latentChannels + 1 && !isXL ? 'depth' : unsupported(folder, `the UNet takes ${inChannels} input channels for ${latentChannels} latent channels: test generation runs text-to-image UNets, inpainting UNets (${2 * latentChannels + 1} channels), InstructPix2Pix (${2 * latentChannels}) and depth (${latentChannels + 1}) UNets only.`);
  for (const key of ['class_embed_type', 'addition_embed_type', 'encoder_hid_dim_type']) {
    if (isXL && key === 'addition_embed_type' && unet[key] === 'text_time') continue;
    if (unet[key] !== undefined && unet[key] !== null) unsupported(folder, `the UNet config sets ${key} "${String(unet[key])}" (an upscaler, unCLIP or ${isXL ? 'non-text_time SDXL' : 'SDXL'} UNet): not supported by test generation.`);
  }
  if (isXL && unet.addition_embed_type !== undefined && unet.addition_embed_type !== 'text_time') {
    unsupported(folder, 'an SDXL UNet without addition_embed_type "text_time": not supported by test generation.');
  }
  let upscale: FolderInfo['upscale'];
  if (isUpscaler) {
    if (unet.num_class_embeds === undefined || unet.num_class_embeds === null) unsupported(folder, 'an x4 upscaler UNet without num_class_embeds (its noise-level class labels).');
    const max = index.max_noise_level;
    upscale = {
      lowResScheduler: (await readJson(join(folder, 'low_res_scheduler', 'scheduler_config.json'))) as SchedulerConfigJson,
      maxNoiseLevel: typeof max === 'number' ? max : UPSCALE_DEFAULT_MAX_NOISE_LEVEL,
    };
  }
  const blocks = Array.isArray(vae.block_out_channels) ? vae.block_out_channels.length : 4;
  const cross = Array.isArray(unet.cross_attention_dim) ? Number(unet.cross_attention_dim[0]) : Number(unet.cross_attention_dim ?? 768);
  const hasTe1 = !isXL || hasComponent('text_encoder');
  const te1 = hasTe1 ? await optionalJson(join(folder, 'text_encoder', 'config.json')) : {};
  const te2 = isXL ? await optionalJson(join(folder, 'text_encoder_2', 'config.json')) : {};
  // The text encoder widths must add up to the UNet's cross-attention context width.
  const widths = (isXL ? (hasTe1 ? [te1, te2] : [te2]) : [te1]).map((c) => (typeof c.hidden_size === 'number' ? c.hidden_size : undefined));
  if (widths.every((w) => w !== undefined) && unet.cross_attention_dim !== undefined) {
    const sum = (widths as number[]).reduce((a, b) => a + b, 0);
    if (sum !== cross) {
      const many = widths.length > 1;
      inconsistent(
        folder,
        `the text encoder${many ? 's give' : ' gives'} ${widths.join(' + ')}${many ? ` = ${sum}` : ''} features per token but the UNet's cross_attention_dim is ${cross}: the UNet cannot be called with these prompt embeddings (Diffusers fails the same way).`,
        'The folder mixes components of different models; a generation cannot run. `verify --source` still checks the weights.',
      );
    }
  }
  const vocab = (c: Record<string, unknown>): number | undefined => (typeof c.vocab_size === 'number' ? c.vocab_size : undefined);
  return {
    pipelineClass,
    unet,
    vae,
    schedulerConfig,
    tokenizerDir: join(folder, 'tokenizer'),
    latentChannels,
    unetInChannels: inChannels,
    unetKind,
    upscale,
    xl: isXL
      ? {
          hasTextEncoder: hasTe1,
          requiresAestheticsScore: index.requires_aesthetics_score === true,
          tokenizer2Dir: join(folder, 'tokenizer_2'),
          forceZerosForEmptyPrompt: index.force_zeros_for_empty_prompt === undefined ? true : Boolean(index.force_zeros_for_empty_prompt),
          additionTimeEmbedDim: typeof unet.addition_time_embed_dim === 'number' ? unet.addition_time_embed_dim : undefined,
          expectedAddEmbedDim: typeof unet.projection_class_embeddings_input_dim === 'number' ? unet.projection_class_embeddings_input_dim : undefined,
          latentsMean: Array.isArray(vae.latents_mean) ? (vae.latents_mean as number[]) : null,
          latentsStd: Array.isArray(vae.latents_std) ? (vae.latents_std as number[]) : null,
        }
      : undefined,
    vocabSizes: { text_encoder: hasTe1 ? vocab(te1) : undefined, text_encoder_2: isXL ? vocab(te2) : undefined },
    vaeScaleFactor: 2 ** (blocks - 1),
    scalingFactor: Number(vae.scaling_factor ?? 0.18215),
    crossAttentionDim: cross,
    sampleSize: Number(unet.sample_size ?? 64),
  };
}

/** Wraps models to record non-finite outputs per network. */
function watched(models: PipelineModels | (PipelineModels & SdxlModels), bad: Record<string, number>): PipelineModels & Partial<SdxlModels> {
  const count = (name: string, t: Tensor): Tensor => {
    let n = 0;
    for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) n++;
    if (n) bad[name] = (bad[name] ?? 0) + n;
    return t;
  };
  const out: PipelineModels & Partial<SdxlModels> = {
    encodeText: async (ids) => count('text embeddings', await models.encodeText(ids)),
    unet: async (s, t, e, x) => count('UNet outputs', await models.unet(s, t, e, x)),
    vaeDecode: async (l) => models.vaeDecode(l),
  };
  if (models.vaeEncode) {
    const enc = models.vaeEncode.bind(models);
    out.vaeEncode = async (img) => count('VAE encoder moments', await enc(img));
  }
  if ('encodeTextXL' in models && typeof models.encodeTextXL === 'function') {
    const xl = models.encodeTextXL.bind(models);
    out.encodeTextXL = async (which, ids) => {
      const r = await xl(which, ids);
      count('text embeddings', r.penultimate);
      if (r.textEmbeds) count('pooled text embeddings', r.textEmbeds);
      return r;
    };
  }
  return out;
}

/** Refuses token ids a text encoder has no embedding for (onnxruntime would fail on the Gather). */
function checkVocabulary(folder: string, component: string, tokenizer: ClipTokenizer, vocabSize: number | undefined, texts: readonly string[]): void {
  if (vocabSize === undefined) return;
  for (const text of texts) {
    const max = Math.max(...tokenizer.encode(text).ids);
    if (max >= vocabSize) {
      inconsistent(folder, `the tokenizer gives token id ${max} but ${component} has an embedding table of ${vocabSize} entries (vocab_size): the tokenizer and the text encoder do not belong together.`, 'A generation cannot run; `verify --source` still checks the weights.');
    }
  }
}

async function imageArg(v: string | RgbImage | undefined): Promise<RgbImage | undefined> {
  return typeof v === 'string' ? readPng(v) : v;
}

/** Runs one test generation from `folder` and checks the result. */
export async function runGeneration(folder: string, o: GenerationOptions): Promise<GenerationRun> {
  const t0 = performance.now();
  const progress = o.onProgress ?? (() => undefined);
  if (typeof o.prompt !== 'string') fail(ErrorCode.E_USAGE, undefined, 'a prompt is required.');
  if (o.mask !== undefined && o.initImage === undefined) fail(ErrorCode.E_USAGE, undefined, 'inpainting (--mask) needs the image to inpaint (--image).');
  const info = await readFolderInfo(folder);
  const inpaintUnet = info.unetKind === 'inpaint';
  if (info.unetKind === 'pix2pix' && (o.initImage === undefined || o.mask !== undefined || o.depth !== undefined)) {
    fail(ErrorCode.E_USAGE, folder, `is an InstructPix2Pix model (${info.unetInChannels} input channels): give the image to edit (--image), without --mask or --depth.`);
  }
  if (info.unetKind === 'depth' && (o.initImage === undefined || o.depth === undefined || o.mask !== undefined)) {
    fail(ErrorCode.E_USAGE, folder, `is a depth-to-image model (${info.unetInChannels} input channels): give the init image (--image) and its depth map (--depth, a grey PNG; the folder has no depth estimator), without --mask.`);
  }
  if (info.unetKind !== 'depth' && o.depth !== undefined) fail(ErrorCode.E_USAGE, folder, '--depth belongs to depth-to-image models (StableDiffusionDepth2ImgPipeline).');
  if (info.unetKind === 'upscale' && (o.initImage === undefined || o.mask !== undefined || o.width !== undefined || o.height !== undefined)) {
    fail(ErrorCode.E_USAGE, folder, 'is an x4 upscaler: give the low-resolution image (--image), without --mask, --width or --height (the result is 4x the image size).');
  }
  if (info.unetKind !== 'upscale' && o.noiseLevel !== undefined) fail(ErrorCode.E_USAGE, folder, '--noise-level belongs to the x4 upscaler (StableDiffusionUpscalePipeline).');
  if (info.unetKind !== 'pix2pix' && o.imageGuidance !== undefined) fail(ErrorCode.E_USAGE, folder, '--image-guidance belongs to InstructPix2Pix models.');
  if (inpaintUnet && o.mask === undefined) {
    fail(ErrorCode.E_USAGE, folder, `has an inpainting UNet (${info.unetInChannels} input channels): give the image (--image) and the mask (--mask).`);
  }
  const refiner = info.xl !== undefined && (!info.xl.hasTextEncoder || info.xl.requiresAestheticsScore);
  if (refiner && o.initImage === undefined) {
    fail(ErrorCode.E_USAGE, folder, `is an SDXL refiner (${info.xl?.hasTextEncoder ? 'requires_aesthetics_score' : 'text_encoder_2 alone'}): it runs img2img (or inpainting with --mask) only; give the init image (--image).`);
  }
  const tokenizer = info.xl && !info.xl.hasTextEncoder ? undefined : await ClipTokenizer.fromFolder(info.tokenizerDir);
  const tokenizer2 = info.xl ? await ClipTokenizer.fromFolder(info.xl.tokenizer2Dir) : undefined;
  if (!o.models) {
    const texts = [o.prompt, o.negativePrompt ?? ''];
    if (tokenizer) checkVocabulary(folder, 'text_encoder', tokenizer, info.vocabSizes.text_encoder, texts);
    if (tokenizer2) checkVocabulary(folder, 'text_encoder_2', tokenizer2, info.vocabSizes.text_encoder_2, texts);
  }
  const scheduler = createScheduler(info.schedulerConfig, o.scheduler);
  const init = await imageArg(o.initImage);
  const mask = await imageArg(o.mask);
  const depthMap = await imageArg(o.depth);
  const mode: GenerationReport['mode'] = info.unetKind === 'upscale' ? 'upscale' : info.unetKind === 'pix2pix' ? 'pix2pix' : info.unetKind === 'depth' ? 'depth2img' : mask ? 'inpaint' : init ? 'img2img' : 'txt2img';
  const upscaleFactor = mode === 'upscale' ? info.vaeScaleFactor : 1;
  const width = o.width ?? (init ? init.width * upscaleFactor : info.sampleSize * info.vaeScaleFactor);
  const height = o.height ?? (init ? init.height * upscaleFactor : info.sampleSize * info.vaeScaleFactor);
  const steps = o.steps ?? 20;
  const guidance = o.guidance ?? 7.5;
  const seed = o.seed ?? 42;
  const strength =
    mode === 'inpaint' ? (o.strength ?? (info.xl ? SDXL_INPAINT_DEFAULT_STRENGTH : 1)) : mode === 'pix2pix' || mode === 'upscale' ? undefined : mode === 'depth2img' ? (o.strength ?? DEPTH_DEFAULT_STRENGTH) : init ? (o.strength ?? 0.6) : undefined;
  const imageGuidance = mode === 'pix2pix' ? (o.imageGuidance ?? PIX2PIX_DEFAULT_IMAGE_GUIDANCE) : undefined;
  const noiseLevel = mode === 'upscale' ? (o.noiseLevel ?? UPSCALE_DEFAULT_NOISE_LEVEL) : undefined;

  let onnx: OnnxFolder | undefined;
  let models = o.models;
  let release: (() => Promise<void>) | undefined;
  let loadMs = 0;
  if (!models) {
    progress({ type: 'phase', phase: 'onnx', detail: 'graphs' });
    onnx = await ensureOnnxFolder(folder, { cacheDir: o.onnxCacheDir, dtype: o.onnxDtype, force: o.reexport, onProgress: o.onProgress });
    for (const w of onnx.warnings) progress({ type: 'warning', message: w });
    progress({ type: 'phase', phase: 'load', detail: `onnxruntime (${o.provider ?? 'cpu'})` });
    const { openOnnxModels } = await import('./onnx-models.js');
    type Part = 'text_encoder' | 'text_encoder_2' | 'unet' | 'vae_decoder' | 'vae_encoder';
    const components: Part[] = [...(tokenizer ? (['text_encoder'] as const) : []), ...(info.xl ? (['text_encoder_2'] as const) : []), 'unet', 'vae_decoder', ...(init && mode !== 'upscale' ? (['vae_encoder'] as const) : [])];
    if (info.xl && init && o.onnxDtype === 'fp16') {
      progress({ type: 'warning', message: `SDXL ${mask ? 'inpainting' : 'img2img'} from an fp16 export: its VAE encoder runs in float16, where Diffusers upcasts the SDXL VAE to float32 (force_upcast); use the fp32 export to match.` });
    }
    const opened = await openOnnxModels(onnx.dir, { provider: o.provider, components });
    models = opened;
    release = () => opened.release();
    loadMs = opened.loadMs;
  }
  try {
    const bad: Record<string, number> = {};
    const net = watched(models, bad);
    progress({ type: 'phase', phase: 'generate', detail: `${info.xl ? 'SDXL ' : ''}${mode} ${width}x${height}, ${steps} steps` });
    const common = {
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      scheduler,
      steps,
      guidanceScale: guidance,
      seed,
      width,
      height,
      vaeScaleFactor: info.vaeScaleFactor,
      latentChannels: info.latentChannels,
      scalingFactor: info.scalingFactor,
      onStep: o.onStep,
      trace: o.trace,
      signal: o.signal,
    };
    let result: GenerateResult;
    if (info.xl) {
      const encodeTextXL = net.encodeTextXL ?? fail(ErrorCode.E_PIPELINE, undefined, 'an SDXL generation needs models with encodeTextXL (the two text encoders).');
      const xl = {
        ...common,
        models: { unet: net.unet, vaeDecode: net.vaeDecode, vaeEncode: net.vaeEncode, encodeTextXL },
        forceZerosForEmptyPrompt: info.xl.forceZerosForEmptyPrompt,
        additionTimeEmbedDim: info.xl.additionTimeEmbedDim,
        expectedAddEmbedDim: info.xl.expectedAddEmbedDim,
        latentsMean: info.xl.latentsMean,
        latentsStd: info.xl.latentsStd,
      };
      if (mask && init) {
        result = await generateSdxlInpaint({ ...xl, tokenizers: [tokenizer ?? null, tokenizer2 as ClipTokenizer], image: init, mask, unetInChannels: info.unetInChannels, strength, requiresAestheticsScore: info.xl.requiresAestheticsScore });
      } else if (init) {
        result = await generateSdxlImg2Img({ ...xl, tokenizers: [tokenizer ?? null, tokenizer2 as ClipTokenizer], image: init, strength, requiresAestheticsScore: info.xl.requiresAestheticsScore });
      } else {
        result = await generateSdxl({ ...xl, tokenizers: [tokenizer as ClipTokenizer, tokenizer2 as ClipTokenizer] });
      }
    } else if (mode === 'pix2pix' && init) {
      result = await generatePix2Pix({ ...common, tokenizer: tokenizer as ClipTokenizer, models: net, image: init, imageGuidanceScale: imageGuidance });
    } else if (mode === 'upscale' && init && info.upscale) {
      result = await generateUpscale({ ...common, tokenizer, models: net, image: init, noiseLevel, maxNoiseLevel: info.upscale.maxNoiseLevel, lowResScheduler: info.upscale.lowResScheduler });
    } else if (mode === 'depth2img' && init && depthMap) {
      result = await generateDepth({ ...common, tokenizer, models: net, image: init, depth: depthMap, strength });
    } else if (mask && init) {
      result = await generateInpaint({ ...common, tokenizer, models: net, image: init, mask, unetInChannels: info.unetInChannels, strength });
    } else {
      result = await generate({ ...common, tokenizer, models: net, initImage: init, strength });
    }
    const checks: Check[] = [];
    checks.push(finiteCheck({ 'final latents': result.latents.data, image: result.image?.data }));
    const badNames = Object.keys(bad);
    if (badNames.length) checks.push({ name: 'finite-networks', status: 'fail', message: `NaN or Inf in ${badNames.map((n) => `${n} (${bad[n]} values)`).join(', ')}`, data: bad });
    const rgb = result.image ? imageToRgb8(result.image) : undefined;
    if (rgb) checks.push(flatImageCheck(rgb));
    checks.push(latentStatsCheck(result.latents, info.scalingFactor));
    let probe: ProbeResult | undefined;
    if (o.probe ?? true) {
      progress({ type: 'phase', phase: 'probe', detail: 'prediction type' });
      probe = await runPredictionProbe(probeUnet(models, info, width, height, init !== undefined), { latentChannels: info.latentChannels, crossAttentionDim: info.crossAttentionDim });
      checks.push(predictionCheck(probe, scheduler.predictionType));
    }
    let saved: string | undefined;
    if (o.save && result.image) {
      await writePng(o.save, result.image);
      saved = resolve(o.save);
    }
    let maskedFraction = 0;
    if (mask) {
      const m = preprocessMask(mask, height, width);
      maskedFraction = m.data.reduce((a, b) => a + b, 0) / m.data.length;
    }
    const t = result.timings;
    const report: GenerationReport = {
      folder: resolve(folder),
      onnx: onnx && { dir: onnx.dir, origin: onnx.origin, warnings: onnx.warnings },
      pipelineClass: info.pipelineClass,
      mode,
      family: info.xl ? 'sdxl' : 'sd',
      inpaint: mask ? { unetInChannels: info.unetInChannels, method: inpaintUnet ? 'inpainting-unet' : 'latent-blend', maskedFraction } : undefined,
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      promptTruncated: result.promptTruncated,
      seed: String(seed),
      steps,
      guidance,
      strength,
      imageGuidance,
      noiseLevel,
      width,
      height,
      scheduler: scheduler.className,
      predictionType: scheduler.predictionType,
      scalingFactor: info.scalingFactor,
      provider: o.models ? 'injected' : (o.provider ?? 'cpu'),
      timesteps: result.timesteps,
      latents: statsOf(result.latents.data),
      image: saved,
      probe,
      timings: {
        exportMs: onnx?.exportMs ?? 0,
        loadMs,
        encodeTextMs: t.encodeTextMs,
        prepareMs: t.prepareMs,
        stepMs: t.stepMs,
        meanStepMs: t.stepMs.length ? t.stepMs.reduce((a, b) => a + b, 0) / t.stepMs.length : 0,
        decodeMs: t.decodeMs,
        probeMs: probe?.ms ?? 0,
        totalMs: performance.now() - t0,
      },
      checks,
      verdict: verdictOf(checks),
    };
    return { report, result };
  } finally {
    await release?.();
  }
}

/**
 * The UNet as the prediction probe calls it (sample, t, constant context): an inpainting UNet gets
 * an all-ones mask and zero masked-image latents appended; InstructPix2Pix and depth UNets zero
 * image latents / a zero depth map; the x4 upscaler a zero image and class label 20; an SDXL UNet gets zero text_embeds and
 * the default time_ids of the probe's size (img2img with requires_aesthetics_score: the 5 ids
 * ending in the aesthetic score).
 */
function probeUnet(models: PipelineModels, info: FolderInfo, width: number, height: number, img2img = false): PipelineModels['unet'] {
  const unet = models.unet.bind(models);
  return async (sample, t, ehs) => {
    let s = sample;
    const [b, , h, w] = sample.shape;
    if (info.unetKind === 'pix2pix' || info.unetKind === 'depth' || info.unetKind === 'upscale') {
      const extra = info.unetInChannels - info.latentChannels;
      s = concatChannels([sample, { data: new Float32Array(b * extra * h * w), shape: [b, extra, h, w] }]);
      if (info.unetKind === 'upscale') return unet(s, t, ehs, { class_labels: { data: new Float32Array(b).fill(UPSCALE_DEFAULT_NOISE_LEVEL), shape: [b] } });
    } else if (info.unetInChannels !== info.latentChannels) {
      const ones: Tensor = { data: new Float32Array(b * h * w).fill(1), shape: [b, 1, h, w] };
      const zeros: Tensor = { data: new Float32Array(b * info.latentChannels * h * w), shape: [b, info.latentChannels, h, w] };
      s = concatChannels([sample, ones, zeros]);
    }
    if (!info.xl) return unet(s, t, ehs);
    const ph = h * info.vaeScaleFactor;
    const pw = w * info.vaeScaleFactor;
    const ids = img2img ? sdxlImg2ImgTimeIds(ph || height, pw || width, { requiresAestheticsScore: info.xl.requiresAestheticsScore }).cond : sdxlTimeIds(ph || height, pw || width);
    const n = ids.length;
    const proj = info.xl.expectedAddEmbedDim !== undefined && info.xl.additionTimeEmbedDim !== undefined ? info.xl.expectedAddEmbedDim - n * info.xl.additionTimeEmbedDim : 1280;
    const timeIds = new Float32Array(b * n);
    for (let i = 0; i < b; i++) timeIds.set(ids, i * n);
    return unet(s, t, ehs, { text_embeds: { data: new Float32Array(b * proj), shape: [b, proj] }, time_ids: { data: timeIds, shape: [b, n] } });
  };
}
