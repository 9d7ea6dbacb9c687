/**
 * Stable Diffusion text-to-image and image-to-image generation, step for step as Diffusers 0.31's
 * StableDiffusionPipeline / StableDiffusionImg2ImgPipeline run with
 * `generator=torch.Generator("cpu").manual_seed(seed)`, one image per prompt:
 *
 * txt2img: ids = tokenizer(prompt) -> cond embeddings; with guidance > 1 also the negative prompt
 * ("" when none) -> uncond embeddings; set_timesteps(steps); latents = randn(1, C, H/f, W/f) *
 * init_noise_sigma; per timestep: UNet(scale_model_input(cat[latents] * B), t) -> guidance
 * `uncond + g * (cond - uncond)` -> scheduler.step; image = VAE decode(latents / scaling_factor),
 * `(x / 2 + 0.5).clamp(0, 1)`, NHWC.
 *
 * img2img: the schedule is cut to its last `int(steps * strength)` entries; the init image
 * (uint8 RGB) is preprocessed to `2 * (x / 255) - 1`, encoded to the VAE posterior, sampled with one
 * generator draw (`mean + exp(logvar / 2) * randn`), scaled by scaling_factor, then noised to the
 * first timestep with a second draw (`scheduler.add_noise`).
 *
 * The networks are injected (`PipelineModels`), so the same loop runs ONNX graphs or recorded
 * outputs. The random draws all come from one TorchGenerator, in Diffusers' order.
 *
 * Extension points for the other pipelines (sdxl.ts, inpaint.ts), unused by the SD txt2img /
 * img2img runs: `conditioning` (prompt embeddings computed elsewhere, plus extra UNet inputs such
 * as SDXL's text_embeds / time_ids), `prepare` (initial latents computed elsewhere, with per-step
 * hooks on the UNet sample and on the latents after each scheduler step) and `vaeInput` (the
 * latents -> VAE decoder input transform).
 */
import { performance } from 'node:perf_hooks';
import { ErrorCode, fail } from '../errors.js';
import type { NoiseSource, Scheduler } from './schedulers/common.js';
import { DdimScheduler } from './schedulers/ddim.js';
import { chunk0, concat0, expectShape, f32, map2, type Tensor } from './tensor.js';
import type { ClipTokenizer } from './tokenizer.js';
import { TorchGenerator } from './torch-random.js';

/**
 * The networks a generation needs. Tensors are float32, C order, batch first.
 *
 * - `encodeText(ids)`: `ids` holds one sequence of `tokenizer.maxLength` (77) token ids; returns
 *   the text encoder's last hidden state `[1, 77, D]` (what Diffusers passes as
 *   `encoder_hidden_states`).
 * - `unet(sample, timestep, encoderHiddenStates, extra)`: `sample` is `[B, C, h, w]` (B = 2 with
 *   classifier-free guidance: uncond first, then cond), `timestep` the scheduler timestep (an
 *   integer, or a float32 value for Euler schedulers), `encoderHiddenStates` `[B, 77, D]`; returns
 *   the noise (or v) prediction `[B, C, h, w]`.
 * - `vaeDecode(latents)`: `[1, C, h, w]` latents already divided by the scaling factor; returns the
 *   decoder output `[1, 3, H, W]` (about [-1, 1], before any clamping).
 * - `vaeEncode(image)` (img2img only): `[1, 3, H, W]` in [-1, 1]; returns the posterior moments
 *   `[1, 2C, h, w]`: mean in the first C channels, log-variance in the last C (the encoder's
 *   `quant_conv` output, unclamped).
 */
export interface PipelineModels {
  encodeText(ids: Int32Array): Promise<Tensor>;
  unet(sample: Tensor, timestep: number, encoderHiddenStates: Tensor, extra?: Readonly<Record<string, Tensor>>): Promise<Tensor>;
  vaeDecode(latents: Tensor): Promise<Tensor>;
  vaeEncode?(image: Tensor): Promise<Tensor>;
}

/**
 * Prompt conditioning computed outside the pipeline (SDXL's two text encoders): replaces the
 * tokenizer + `encodeText` stage.
 */
export interface PromptConditioning {
  /** Prompt embeddings `[1, S, D]`. */
  readonly cond: Tensor;
  /** Negative prompt embeddings `[1, S, D]`; required with guidance > 1. */
  readonly uncond?: Tensor;
  readonly inputIds: { readonly cond: number[]; readonly uncond?: number[] };
  readonly truncated: boolean;
  /**
   * Extra UNet inputs (passed as the `extra` argument of every UNet call), batched like the UNet
   * sample: with guidance `[uncond, cond]`, without `[cond]`.
   */
  readonly unetExtra?: Readonly<Record<string, Tensor>>;
}

/** What a `prepare` hook gets. */
export interface PrepareContext {
  /** The timesteps the loop will run (already cut by `strength`). */
  readonly timesteps: readonly number[];
  readonly scheduler: Scheduler;
  readonly models: PipelineModels;
  /** `[1, C, h, w]`. */
  readonly latentShape: readonly number[];
  readonly height: number;
  readonly width: number;
  readonly scalingFactor: number;
  readonly guidance: boolean;
  /** One draw of `latentShape` from the pipeline's generator (traced as `randn.N`). */
  draw(): Float32Array;
  readonly trace: (name: string, value: Tensor | Int32Array | number[]) => void;
}

/** Initial latents and per-step hooks from a `prepare` hook. */
export interface PreparedLatents {
  /** Initial latents `[1, C, h, w]` (already scaled by init_noise_sigma where that applies). */
  readonly latents: Tensor;
  /** The UNet sample from the scaled model input (e.g. 9-channel inpainting concatenation). */
  unetSample?(scaled: Tensor, step: number, timestep: number): Tensor;
  /** The latents after the scheduler step of loop iteration `step` (e.g. inpainting blending). */
  afterStep?(latents: Tensor, step: number, timestep: number): Tensor;
}

/** An 8-bit RGB image, rows top to bottom, `height * width * 3` bytes. */
export interface RgbImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

export interface StepEvent {
  /** 0-based loop iteration. */
  readonly step: number;
  /** Loop iterations in all. */
  readonly total: number;
  readonly timestep: number;
  /** Latents after this step (do not modify). */
  readonly latents: Tensor;
  /** Milliseconds this step took (UNet + scheduler). */
  readonly ms: number;
}

export interface GenerateOptions {
  readonly prompt: string;
  /** Negative prompt; none means "" (only used with guidance > 1). */
  readonly negativePrompt?: string;
  /** Required unless `conditioning` is given. */
  readonly tokenizer?: ClipTokenizer;
  /** Prompt embeddings computed elsewhere (the tokenizer and `encodeText` are then not used). */
  readonly conditioning?: PromptConditioning;
  /**
   * Computes the initial latents instead of txt2img / img2img (`initImage` is then ignored); the
   * schedule is cut by `strength` (default 1: the full schedule).
   */
  readonly prepare?: (ctx: PrepareContext) => Promise<PreparedLatents>;
  /** The VAE decoder input from the final latents (default: `latents / scaling_factor`). */
  readonly vaeInput?: (latents: Tensor) => Tensor;
  readonly scheduler: Scheduler;
  readonly models: PipelineModels;
  /** Default 50. */
  readonly steps?: number;
  /** Classifier-free guidance scale; guidance applies when > 1. Default 7.5. */
  readonly guidanceScale?: number;
  /** Seed of a fresh CPU generator (default 0), unless `generator` is given. */
  readonly seed?: bigint | number;
  /** A generator to draw from (its state advances). */
  readonly generator?: TorchGenerator;
  /** Image size in pixels (default 512 x 512); multiples of `vaeScaleFactor`. */
  readonly height?: number;
  readonly width?: number;
  /** Pixels per latent (default 8: 2^(len(vae block_out_channels) - 1)). */
  readonly vaeScaleFactor?: number;
  /** Latent channels (the UNet's in_channels, default 4). */
  readonly latentChannels?: number;
  /** The VAE's scaling_factor (default 0.18215, SD 1.x / 2.x). */
  readonly scalingFactor?: number;
  /** img2img: the init image (its size must be height x width). */
  readonly initImage?: RgbImage;
  /** img2img strength in [0, 1] (default 0.8). */
  readonly strength?: number;
  /** DDIM eta (default 0). */
  readonly eta?: number;
  /** 'image' (default) decodes; 'latent' stops after the loop. */
  readonly output?: 'image' | 'latent';
  /** Called after every loop step. */
  readonly onStep?: (e: StepEvent) => void;
  /**
   * Receives every intermediate under the names the Diffusers pipeline goldens use
   * (`input_ids.cond`, `prompt_embeds.uncond`, `randn.0`, `latents.initial`, `step.3.unet.out`,
   * `img2img.image_latents`, ...). The arrays are the pipeline's own: copy to keep.
   */
  readonly trace?: (name: string, value: Tensor | Int32Array | number[]) => void;
  readonly signal?: AbortSignal;
}

export interface GenerateTimings {
  readonly encodeTextMs: number;
  readonly prepareMs: number;
  /** Per loop step (UNet + scheduler). */
  readonly stepMs: number[];
  readonly decodeMs: number;
  readonly totalMs: number;
}

export interface GenerateResult {
  /** Final latents `[1, C, h, w]` (not divided by the scaling factor). */
  readonly latents: Tensor;
  /** `[1, H, W, 3]` float32 in [0, 1]; absent with output 'latent'. */
  readonly image?: Tensor;
  /** The timesteps the loop ran. */
  readonly timesteps: number[];
  readonly inputIds: { readonly cond: number[]; readonly uncond?: number[] };
  readonly promptTruncated: boolean;
  readonly timings: GenerateTimings;
}

function positiveInt(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 1) fail(ErrorCode.E_USAGE, undefined, `${what} ${v} is not a positive integer.`);
  return v;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) fail(ErrorCode.E_INTERRUPTED, undefined, 'generation was interrupted.');
}

/** Runs one txt2img (no `initImage`) or img2img generation. */
export async function generate(o: GenerateOptions): Promise<GenerateResult> {
  const t0 = performance.now();
  const trace = o.trace ?? (() => undefined);
  const steps = positiveInt(o.steps ?? 50, 'steps');
  const guidance = o.guidanceScale ?? 7.5;
  if (!Number.isFinite(guidance)) fail(ErrorCode.E_USAGE, undefined, `guidance scale ${guidance} is not a finite number.`);
  const height = positiveInt(o.height ?? o.initImage?.height ?? 512, 'height');
  const width = positiveInt(o.width ?? o.initImage?.width ?? 512, 'width');
  const factor = positiveInt(o.vaeScaleFactor ?? 8, 'VAE scale factor');
  const channels = positiveInt(o.latentChannels ?? 4, 'latent channels');
  const scaling = o.scalingFactor ?? 0.18215;
  if (height % factor !== 0 || width % factor !== 0) {
    fail(ErrorCode.E_USAGE, undefined, `image size ${width}x${height} is not a multiple of ${factor}.`);
  }
  const cfg = guidance > 1;
  const generator = o.generator ?? new TorchGenerator(o.seed ?? 0);
  const scheduler = o.scheduler;
  if (scheduler instanceof DdimScheduler) scheduler.eta = o.eta ?? 0;
  const latentShape = [1, channels, height / factor, width / factor];
  const batchShape = [cfg ? 2 : 1, ...latentShape.slice(1)];

  // 1. Prompt embeddings: [uncond, cond] with guidance.
  checkAbort(o.signal);
  let cond: { ids: number[]; truncated: boolean };
  let embeds: Tensor;
  let uncondIds: number[] | undefined;
  const unetExtra = o.conditioning?.unetExtra;
  if (o.conditioning) {
    const c = o.conditioning;
    cond = { ids: c.inputIds.cond, truncated: c.truncated };
    uncondIds = c.inputIds.uncond;
    trace('prompt_embeds.cond', c.cond);
    embeds = c.cond;
    if (cfg) {
      if (!c.uncond) fail(ErrorCode.E_PIPELINE, undefined, 'guidance > 1 needs negative prompt embeddings (conditioning.uncond).');
      expectShape(c.uncond, c.cond.shape, 'negative prompt embeddings');
      trace('prompt_embeds.uncond', c.uncond);
      embeds = concat0([c.uncond, c.cond]);
    }
    for (const [name, t] of Object.entries(unetExtra ?? {})) {
      if (t.shape[0] !== (cfg ? 2 : 1)) fail(ErrorCode.E_PIPELINE, undefined, `UNet input ${name} has batch ${t.shape[0]} (expected ${cfg ? 2 : 1}).`);
    }
  } else {
    const tokenizer = o.tokenizer ?? fail(ErrorCode.E_PIPELINE, undefined, 'a tokenizer (or precomputed conditioning) is required.');
    cond = tokenizer.encode(o.prompt);
    trace('input_ids.cond', Int32Array.from(cond.ids));
    const condEmbeds = await encode(o.models, cond.ids, 'prompt embeddings');
    trace('prompt_embeds.cond', condEmbeds);
    embeds = condEmbeds;
    if (cfg) {
      uncondIds = tokenizer.encode(o.negativePrompt ?? '').ids;
      trace('input_ids.uncond', Int32Array.from(uncondIds));
      const uncondEmbeds = await encode(o.models, uncondIds, 'negative prompt embeddings');
      expectShape(uncondEmbeds, condEmbeds.shape, 'negative prompt embeddings');
      trace('prompt_embeds.uncond', uncondEmbeds);
      embeds = concat0([uncondEmbeds, condEmbeds]);
    }
  }
  const t1 = performance.now();

  // 2. Timesteps and initial latents.
  // Every draw, the scheduler's included, goes through here so the trace numbers them in order.
  let draws = 0;
  const noise: NoiseSource = {
    randn(shape: readonly number[]): Float32Array {
      const x = generator.randn(shape);
      trace(`randn.${draws++}`, { data: x, shape: [...shape] });
      return x;
    },
  };
  const draw = (): Float32Array => noise.randn(latentShape);
  let timesteps: number[];
  let latents: Tensor;
  let prepared: PreparedLatents | undefined;
  if (o.prepare) {
    const strength = o.strength ?? 1;
    timesteps = scheduler.setTimesteps(steps, strength);
    if (timesteps.length === 0) {
      fail(ErrorCode.E_USAGE, undefined, `strength ${strength} with ${steps} steps leaves no denoising step (expected steps * strength >= 1).`);
    }
    prepared = await o.prepare({ timesteps, scheduler, models: o.models, latentShape, height, width, scalingFactor: scaling, guidance: cfg, draw, trace });
    expectShape(prepared.latents, latentShape, 'prepared latents');
    latents = prepared.latents;
    trace('init_noise_sigma', { data: Float32Array.of(f32(scheduler.initNoiseSigma)), shape: [1] });
  } else if (!o.initImage) {
    timesteps = scheduler.setTimesteps(steps);
    const sigma = f32(scheduler.initNoiseSigma);
    latents = { data: draw().map((x) => f32(x * sigma)), shape: latentShape };
    trace('init_noise_sigma', { data: Float32Array.of(sigma), shape: [1] });
  } else {
    const strength = o.strength ?? 0.8;
    timesteps = scheduler.setTimesteps(steps, strength);
    if (timesteps.length === 0) {
      fail(ErrorCode.E_USAGE, undefined, `strength ${strength} with ${steps} steps leaves no denoising step (expected steps * strength >= 1).`);
    }
    const image = preprocessImage(o.initImage, height, width);
    trace('img2img.image_preprocessed', image);
    if (!o.models.vaeEncode) fail(ErrorCode.E_PIPELINE, undefined, 'img2img needs a VAE encoder (models.vaeEncode).');
    const moments = await o.models.vaeEncode(image);
    expectShape(moments, [1, 2 * channels, ...latentShape.slice(2)], 'VAE encoder moments');
    const eps = draw();
    const imageLatents = sampleLatents(moments.data, eps, scaling);
    trace('img2img.image_latents', { data: imageLatents, shape: latentShape });
    trace('img2img.latent_timestep', [timesteps[0]]);
    const noise = draw();
    latents = { data: scheduler.addNoise(imageLatents, noise, timesteps[0]), shape: latentShape };
    trace('init_noise_sigma', { data: Float32Array.of(f32(scheduler.initNoiseSigma)), shape: [1] });
  }
  trace('scheduler.timesteps', [...scheduler.timesteps]);
  if ('sigmas' in scheduler) trace('sigmas', { data: Float32Array.from((scheduler as { sigmas: number[] }).sigmas), shape: [(scheduler as { sigmas: number[] }).sigmas.length] });
  trace('timesteps', timesteps);
  trace('latents.initial', latents);
  const t2 = performance.now();

  // 3. Denoising loop.
  const stepMs: number[] = [];
  for (let i = 0; i < timesteps.length; i++) {
    checkAbort(o.signal);
    const s0 = performance.now();
    const t = timesteps[i];
    const input = cfg ? concat0([latents, latents]) : latents;
    const scaled: Tensor = { data: scheduler.scaleModelInput(input.data, t), shape: batchShape };
    trace(`step.${i}.unet.sample`, scaled);
    const sample = prepared?.unetSample ? prepared.unetSample(scaled, i, t) : scaled;
    const out = unetExtra ? await o.models.unet(sample, t, embeds, unetExtra) : await o.models.unet(sample, t, embeds);
    expectShape(out, batchShape, `UNet output of step ${i}`);
    trace(`step.${i}.unet.out`, out);
    let noisePred = out.data;
    if (cfg) {
      const [u, c] = chunk0(out, 2);
      const g = f32(guidance);
      noisePred = map2(u.data, c.data, (a, b) => f32(a + f32(g * f32(b - a))));
    }
    latents = { data: scheduler.step(noisePred, t, latents.data, { generator: noise, shape: latentShape }), shape: latentShape };
    if (prepared?.afterStep) {
      latents = prepared.afterStep(latents, i, t);
      expectShape(latents, latentShape, `latents after step ${i}`);
    }
    trace(`step.${i}.latents`, latents);
    const ms = performance.now() - s0;
    stepMs.push(ms);
    o.onStep?.({ step: i, total: timesteps.length, timestep: t, latents, ms });
  }
  trace('latents.final', latents);

  // 4. Decode.
  const t3 = performance.now();
  let image: Tensor | undefined;
  if ((o.output ?? 'image') === 'image') {
    checkAbort(o.signal);
    const sf = f32(scaling);
    const vaeIn = o.vaeInput ? o.vaeInput(latents) : { data: latents.data.map((x) => f32(x / sf)), shape: latentShape };
    const decoded = await o.models.vaeDecode(vaeIn);
    expectShape(decoded, [1, 3, height, width], 'VAE decoder output');
    image = postprocessImage(decoded);
    trace('image', image);
  }
  const t4 = performance.now();
  return {
    latents,
    image,
    timesteps,
    inputIds: { cond: cond.ids, uncond: uncondIds },
    promptTruncated: cond.truncated,
    timings: { encodeTextMs: t1 - t0, prepareMs: t2 - t1, stepMs, decodeMs: t4 - t3, totalMs: t4 - t0 },
  };
}

async function encode(models: PipelineModels, ids: number[], what: string): Promise<Tensor> {
  const out = await models.encodeText(Int32Array.from(ids));
  if (out.shape.length !== 3 || out.shape[0] !== 1 || out.shape[1] !== ids.length || out.data.length !== out.shape[0] * out.shape[1] * out.shape[2]) {
    fail(ErrorCode.E_PIPELINE, undefined, `${what} have shape [${out.shape.join(', ')}] (expected [1, ${ids.length}, D]).`);
  }
  return out;
}

/** Diffusers' VaeImageProcessor.preprocess for an RGB image of the right size: `2 * (x / 255) - 1`, NCHW. */
export function preprocessImage(img: RgbImage, height: number, width: number): Tensor {
  if (img.height !== height || img.width !== width) {
    fail(ErrorCode.E_USAGE, undefined, `init image is ${img.width}x${img.height} (expected ${width}x${height}; resize it first).`);
  }
  if (img.data.length !== height * width * 3) fail(ErrorCode.E_PIPELINE, undefined, `init image has ${img.data.length} bytes (expected ${height * width * 3}).`);
  const plane = height * width;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = f32(f32(2 * f32(img.data[p * 3 + c] / 255)) - 1);
  }
  return { data: out, shape: [1, 3, height, width] };
}

/**
 * DiagonalGaussianDistribution(moments).sample(eps) * scaling_factor: logvar clamped to
 * [-30, 20], `std = exp(0.5 * logvar)`, `(mean + std * eps) * scaling_factor`, float32.
 */
export function sampleLatents(moments: Float32Array, eps: Float32Array, scaling: number): Float32Array {
  const n = eps.length;
  const sf = f32(scaling);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const logvar = Math.min(Math.max(moments[n + i], -30), 20);
    const std = f32(Math.exp(f32(0.5 * logvar)));
    out[i] = f32(sf * f32(moments[i] + f32(std * eps[i])));
  }
  return out;
}

/** `(x / 2 + 0.5).clamp(0, 1)`, NCHW -> NHWC. */
export function postprocessImage(decoded: Tensor): Tensor {
  const [n, c, h, w] = decoded.shape;
  const out = new Float32Array(n * h * w * c);
  const plane = h * w;
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      for (let p = 0; p < plane; p++) {
        const x = f32(f32(decoded.data[(b * c + ch) * plane + p] / 2) + 0.5);
        out[(b * plane + p) * c + ch] = Math.min(Math.max(x, 0), 1);
      }
    }
  }
  return { data: out, shape: [n, h, w, c] };
}
