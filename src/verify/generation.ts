/**
 * A test generation from a converted folder: `ckpt2diffusers generate` and the generation half of
 * `ckpt2diffusers verify`.
 *
 *   folder      a Diffusers folder (its ONNX graphs are exported once into a cache, onnx-cache.ts)
 *               or an ONNX pipeline folder (optimum layout, or OnnxStableDiffusionPipeline's
 *               txt2img)
 *   engine      src/generate's pipeline (tokenizer, torch-exact noise, schedulers) with the ONNX
 *               sessions of onnx-models.ts as its networks: txt2img, and img2img with --image
 *   supported   SD 1.x / 2.x text-to-image UNets (in_channels = the VAE's latent_channels, no class
 *               or addition embeddings). Refused with E_GENERATE_UNSUPPORTED: SDXL (two text
 *               encoders, pooled text_embeds and time_ids conditioning), inpainting (--mask, or a
 *               9-channel UNet), depth / pix2pix / upscaler / unCLIP / ControlNet folders.
 *   checks      checks.ts (finite, not flat, latent statistics) and the prediction-type probe
 *               (probe.ts), with a verdict.
 *
 * onnxruntime is loaded only when a generation runs (dynamic import of onnx-models.ts).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { generate, type GenerateResult, type PipelineModels, type RgbImage, type StepEvent } from '../generate/pipeline.js';
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
  /** img2img strength, default 0.6. */
  readonly strength?: number;
  /** Inpainting mask: refused (not supported). */
  readonly mask?: string;
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
  /** Networks to use instead of ONNX sessions (tests, other runtimes). */
  readonly models?: PipelineModels;
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
  readonly mode: 'txt2img' | 'img2img';
  readonly prompt: string;
  readonly negativePrompt?: string;
  readonly promptTruncated: boolean;
  readonly seed: string;
  readonly steps: number;
  readonly guidance: number;
  readonly strength?: number;
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
  readonly vaeScaleFactor: number;
  readonly scalingFactor: number;
  readonly crossAttentionDim: number;
  readonly sampleSize: number;
}

const SUPPORTED_CLASSES = new Set(['StableDiffusionPipeline', 'StableDiffusionImg2ImgPipeline', 'OnnxStableDiffusionPipeline', 'OnnxStableDiffusionImg2ImgPipeline', 'ORTStableDiffusionPipeline', 'ORTStableDiffusionImg2ImgPipeline']);

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
  if (pipelineClass.includes('XL') || hasComponent('text_encoder_2')) {
    unsupported(folder, `${pipelineClass || 'this pipeline'} is SDXL: test generation runs SD 1.x / 2.x pipelines only (SDXL's two text encoders with penultimate states, pooled text_embeds and time_ids conditioning are not implemented).`, 'Use `verify --source` for the weights check.');
  }
  if (!SUPPORTED_CLASSES.has(pipelineClass)) {
    unsupported(folder, `${pipelineClass || 'a pipeline without _class_name'}: test generation runs StableDiffusionPipeline folders (txt2img, img2img) only.`);
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
  if (inChannels !== latentChannels) {
    unsupported(folder, `the UNet takes ${inChannels} input channels for ${latentChannels} latent channels: an inpainting, depth or instruct-pix2pix model; test generation runs text-to-image UNets only.`);
  }
  for (const key of ['class_embed_type', 'addition_embed_type', 'encoder_hid_dim_type']) {
    if (unet[key] !== undefined && unet[key] !== null) unsupported(folder, `the UNet config sets ${key} "${String(unet[key])}" (an upscaler, unCLIP or SDXL UNet): not supported by test generation.`);
  }
  const blocks = Array.isArray(vae.block_out_channels) ? vae.block_out_channels.length : 4;
  const cross = Array.isArray(unet.cross_attention_dim) ? Number(unet.cross_attention_dim[0]) : Number(unet.cross_attention_dim ?? 768);
  return {
    pipelineClass,
    unet,
    vae,
    schedulerConfig,
    tokenizerDir: join(folder, 'tokenizer'),
    latentChannels,
    vaeScaleFactor: 2 ** (blocks - 1),
    scalingFactor: Number(vae.scaling_factor ?? 0.18215),
    crossAttentionDim: cross,
    sampleSize: Number(unet.sample_size ?? 64),
  };
}

/** Wraps models to record non-finite outputs per network. */
function watched(models: PipelineModels, bad: Record<string, number>): PipelineModels {
  const count = (name: string, t: Tensor): Tensor => {
    let n = 0;
    for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) n++;
    if (n) bad[name] = (bad[name] ?? 0) + n;
    return t;
  };
  const out: PipelineModels = {
    encodeText: async (ids) => count('text embeddings', await models.encodeText(ids)),
    unet: async (s, t, e, x) => count('UNet outputs', await models.unet(s, t, e, x)),
    vaeDecode: async (l) => models.vaeDecode(l),
  };
  if (models.vaeEncode) {
    const enc = models.vaeEncode.bind(models);
    out.vaeEncode = async (img) => count('VAE encoder moments', await enc(img));
  }
  return out;
}

/** Runs one test generation from `folder` and checks the result. */
export async function runGeneration(folder: string, o: GenerationOptions): Promise<GenerationRun> {
  const t0 = performance.now();
  const progress = o.onProgress ?? (() => undefined);
  if (o.mask !== undefined) {
    unsupported(folder, 'inpainting (--mask) is not supported by test generation: txt2img, and img2img with --image, only.');
  }
  if (typeof o.prompt !== 'string') fail(ErrorCode.E_USAGE, undefined, 'a prompt is required.');
  const info = await readFolderInfo(folder);
  const tokenizer = await ClipTokenizer.fromFolder(info.tokenizerDir);
  const scheduler = createScheduler(info.schedulerConfig, o.scheduler);
  const init = typeof o.initImage === 'string' ? await readPng(o.initImage) : o.initImage;
  const width = o.width ?? init?.width ?? info.sampleSize * info.vaeScaleFactor;
  const height = o.height ?? init?.height ?? info.sampleSize * info.vaeScaleFactor;
  const steps = o.steps ?? 20;
  const guidance = o.guidance ?? 7.5;
  const seed = o.seed ?? 42;
  const strength = init ? (o.strength ?? 0.6) : undefined;

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
    const opened = await openOnnxModels(onnx.dir, { provider: o.provider, components: init ? undefined : ['text_encoder', 'unet', 'vae_decoder'] });
    models = opened;
    release = () => opened.release();
    loadMs = opened.loadMs;
  }
  try {
    const bad: Record<string, number> = {};
    const net = watched(models, bad);
    progress({ type: 'phase', phase: 'generate', detail: `${init ? 'img2img' : 'txt2img'} ${width}x${height}, ${steps} steps` });
    const result = await generate({
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      tokenizer,
      scheduler,
      models: net,
      steps,
      guidanceScale: guidance,
      seed,
      width,
      height,
      vaeScaleFactor: info.vaeScaleFactor,
      latentChannels: info.latentChannels,
      scalingFactor: info.scalingFactor,
      initImage: init,
      strength,
      onStep: o.onStep,
      trace: o.trace,
      signal: o.signal,
    });
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
      probe = await runPredictionProbe(models.unet.bind(models), { latentChannels: info.latentChannels, crossAttentionDim: info.crossAttentionDim });
      checks.push(predictionCheck(probe, scheduler.predictionType));
    }
    let saved: string | undefined;
    if (o.save && result.image) {
      await writePng(o.save, result.image);
      saved = resolve(o.save);
    }
    const t = result.timings;
    const report: GenerationReport = {
      folder: resolve(folder),
      onnx: onnx && { dir: onnx.dir, origin: onnx.origin, warnings: onnx.warnings },
      pipelineClass: info.pipelineClass,
      mode: init ? 'img2img' : 'txt2img',
      prompt: o.prompt,
      negativePrompt: o.negativePrompt,
      promptTruncated: result.promptTruncated,
      seed: String(seed),
      steps,
      guidance,
      strength,
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
