/**
 * The main job: an original Stable Diffusion checkpoint in, a complete Diffusers folder out.
 *
 *   open (headers only) → detect family → plan (every key accounted for) → decide prediction type
 *   → configs, scheduler, tokenizer → stream tensors into sharded safetensors in a temporary folder
 *   → re-read every written header against the plan → rename the folder into place.
 *
 * Memory stays bounded by a chunk: tensor bytes flow from the source range to the output file.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  isControlNetFamily,
  isSdxlFamily,
  isUnclipFamily,
  modelIndex,
  pyNumber,
  schedulerConfig,
  sdxlSchedulerConfig,
  textEncoder2Kind,
  textEncoderConfig,
  textEncoderKind,
  unetConfig,
  vaeConfig,
  vaeScalingFactor,
  type SchedulerKind,
  type TextEncoderKind,
} from './diffusers/configs.js';
import {
  clipTextShapes,
  controlNetShapes,
  openClipProjectedTextShapes,
  openClipTextShapes,
  unetShapes,
  vaeShapes,
  visionTowerShapes,
  type TextEncoderShapes,
} from './diffusers/configs-shapes.js';
import { controlNetConfig, defaultNormalizerWeights, featureExtractorConfig, imageEncoderConfig, imageNormalizerConfig } from './diffusers/configs-families.js';
import { ddpmSchedulerConfig } from './diffusers/configs-scheduler.js';
import { pyFloat } from './formats/python-json.js';
import { prepareOutputFolder, writeTextFile } from './diffusers/output-folder.js';
import { loadPackagedBpe, loadTokenizerDir, tokenizerFiles, type ClipBpe } from './diffusers/tokenizer.js';
import { DEFAULT_MAX_SHARD_BYTES, outputDTypeFor, writeComponentWeights } from './diffusers/write-component.js';
import { dtypeBytes, numelOf } from './dtypes.js';
import { verifyWrittenComponent } from './diffusers/verify-written.js';
import { CkptError, ErrorCode, fail } from './errors.js';
import { openCheckpoint } from './formats/open.js';
import { writeError } from './io/write-errors.js';
import { pythonJsonDumps } from './formats/python-json.js';
import { parseSizeString } from './formats/shards.js';
import type { TensorSource } from './formats/tensor-source.js';
import { detectFamily } from './mapping/detect-family.js';
import { readOriginalConfig, type OriginalConfig } from './mapping/original-config.js';
import type { ConversionPlan, FamilyDetection, PlannedComponent } from './mapping/plan-types.js';
import { planConversion } from './mapping/plan.js';
import { decidePrediction, type PredictionDecision, type PredictionOverrides } from './mapping/prediction.js';
import { decideVaeScaling, type VaeFamily, type VaeScalingDecision } from './diffusers/vae-scaling.js';
import type { ProgressCallback } from './progress.js';

export type OutputDType = 'fp32' | 'fp16' | 'bf16';

export interface ConvertOptions {
  /** The original LDM yaml (v1-inference.yaml, ...): overrides values read from the tensors. */
  originalConfig?: string;
  /** Take the UNet from the EMA copies (`model_ema.*`). */
  extractEma?: boolean;
  /** Convert even when the file holds keys no table knows (they are listed in the result). */
  allowUnknownKeys?: boolean;
  /** Read a file whose pickle imports dangerous globals (still never executing anything). */
  allowUnsafePickle?: boolean;
  /** Output dtype of float tensors; default float32, as Diffusers writes them. */
  dtype?: OutputDType;
  /** Variant inserted in the weight file names, e.g. `fp16` → `*.fp16.safetensors`. */
  variant?: string;
  /** Largest weight file before sharding: bytes or a size string such as `10GB` (the default). */
  maxShardSize?: string | number;
  scheduler?: SchedulerKind;
  predictionType?: PredictionOverrides['predictionType'];
  imageSize?: number;
  upcastAttention?: boolean;
  /** Force zero-terminal-SNR scheduling (rescale_betas_zero_snr, trailing spacing) on or off. */
  zeroTerminalSnr?: boolean;
  /** Overrides the pipeline class written in model_index.json. */
  pipelineClass?: string;
  /**
   * A standalone VAE file (.safetensors/.ckpt, e.g. a fine-tuned `vae-ft-mse`) written as `vae/`
   * instead of the checkpoint's own VAE; the checkpoint's VAE keys are then dropped with that reason.
   */
  vae?: string;
  /** A local tokenizer folder to take vocab.json / merges.txt from instead of the bundled BPE. */
  tokenizerDir?: string;
  /** Replace an existing non-empty output folder. */
  force?: boolean;
  /** Fail when a float16 cast overflows (values beyond ±65504 become ±Inf). */
  failOnFp16Overflow?: boolean;
  onProgress?: ProgressCallback;
  /** Standalone VAE: `scaling_factor` to write (overrides every other evidence). */
  scalingFactor?: number;
  /** Standalone VAE: whose latent scaling it uses (sd 0.18215, sdxl 0.13025). */
  vaeFamily?: VaeFamily;
}

export const CONVERT_DEFAULTS = {
  dtype: 'fp32',
  maxShardSize: DEFAULT_MAX_SHARD_BYTES,
  scheduler: 'pndm',
} as const satisfies Partial<ConvertOptions>;

export interface ConvertedComponent {
  folder: string;
  className: string;
  tensors: number;
  bytes: number;
  files: string[];
}

export interface ConvertResult {
  input: string;
  outDir: string;
  family: FamilyDetection;
  prediction: PredictionDecision;
  plan: ConversionPlan;
  components: ConvertedComponent[];
  /** Tensors whose float16 cast overflowed (values beyond ±65504 became ±Inf). */
  fp16Overflow: string[];
  warnings: string[];
  /** Standalone VAE: the scaling_factor written and the evidence that decided it. */
  vaeScaling?: VaeScalingDecision;
}

/** What a checkpoint's headers say it becomes: everything but the tensor bytes. */
export interface FolderPlan {
  family: FamilyDetection;
  plan: ConversionPlan;
  prediction: PredictionDecision;
  /** Every non-weight file of the output (configs, scheduler, tokenizer, model_index), by relative path. */
  textFiles: Map<string, string | Uint8Array>;
}

/** The tensor list and header values a plan is made from (a TensorSource, or names and shapes alone). */
export type CheckpointView = Pick<TensorSource, 'tensors' | 'metadata' | 'extras'>;

/**
 * Plans a conversion from headers alone: family, key account, prediction type and every config
 * file. `convert` writes exactly this; tests and `inspect` use it without touching tensor bytes.
 */
export async function planFolder(view: CheckpointView, options: ConvertOptions = {}, originalConfig?: OriginalConfig): Promise<FolderPlan> {
  const family = detectFamily(view.tensors, view.metadata);
  const plan = planConversion(view.tensors, family, { extractEma: options.extractEma, allowUnknownKeys: options.allowUnknownKeys });
  const prediction = decidePrediction({
    family,
    originalConfig,
    metadata: view.metadata,
    extras: view.extras,
    tensors: view.tensors,
    overrides: {
      predictionType: options.predictionType,
      imageSize: options.imageSize,
      upcastAttention: options.upcastAttention,
      zeroTerminalSnr: options.zeroTerminalSnr,
    },
  });
  const textFiles = await buildTextFiles(view, plan, prediction, originalConfig, options);
  return { family, plan, prediction, textFiles };
}

/** Converts `input` into a Diffusers folder at `outDir`. */
export async function convert(input: string, outDir: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  const progress = options.onProgress ?? (() => undefined);
  progress({ type: 'phase', phase: 'read', detail: input });
  const originalConfig = options.originalConfig ? await readOriginalConfig(options.originalConfig) : undefined;
  const source = await openCheckpoint(input, { allowUnsafePickle: options.allowUnsafePickle });
  let vaeSource: TensorSource | undefined;
  try {
    progress({ type: 'phase', phase: 'plan' });
    let { family, plan, prediction, textFiles } = await planFolder(source, options, originalConfig);
    if (options.vae) {
      vaeSource = await openCheckpoint(options.vae, { allowUnsafePickle: options.allowUnsafePickle });
      ({ plan, textFiles } = replaceVae(plan, textFiles, vaeSource, prediction, originalConfig, options));
    }
    const sourceFor = (c: PlannedComponent) => (vaeSource && c.folder === 'vae' ? vaeSource : source);
    const result = await writeFolder(source, plan, textFiles, outDir, options, progress, sourceFor);
    if (plan.family !== 'vae') return { input, family, prediction, plan, ...result };
    const vaeScaling = vaeScalingFor(source, options, originalConfig);
    return { input, family, prediction, plan, ...result, vaeScaling, warnings: [...result.warnings, ...(vaeScaling.warning ? [vaeScaling.warning] : [])] };
  } finally {
    await vaeSource?.close();
    await source.close();
  }
}

/**
 * `--vae FILE`: the standalone VAE's plan takes the place of the checkpoint's `vae` component, its
 * shapes size vae/config.json (the pipeline's family keeps its scaling factor), and the
 * checkpoint's own VAE keys are accounted for as dropped.
 */
function replaceVae(
  plan: ConversionPlan,
  textFiles: Map<string, string | Uint8Array>,
  vaeSource: TensorSource,
  prediction: PredictionDecision,
  originalConfig: OriginalConfig | undefined,
  options: ConvertOptions,
): { plan: ConversionPlan; textFiles: Map<string, string | Uint8Array> } {
  if (!plan.components.some((c) => c.folder === 'vae')) {
    fail(ErrorCode.E_USAGE, options.vae, `--vae replaces a pipeline's VAE, but a ${plan.family} conversion has no vae component.`);
  }
  const detected = detectFamily(vaeSource.tensors, vaeSource.metadata);
  if (detected.family !== 'vae') {
    fail(ErrorCode.E_USAGE, vaeSource.path, `--vae needs a standalone VAE file, but this file holds a ${detected.family} model.`);
  }
  const vaePlan = planConversion(vaeSource.tensors, detected, { allowUnknownKeys: options.allowUnknownKeys });
  const replacement: PlannedComponent = { ...vaePlan.components[0], folder: 'vae', standalone: false };
  const reason = `replaced by the VAE of ${vaeSource.path} (--vae)`;
  const replaced = plan.account.mapped.filter((m) => m.component === 'vae');
  const account = {
    ...plan.account,
    mapped: plan.account.mapped.filter((m) => m.component !== 'vae'),
    dropped: [...plan.account.dropped, ...replaced.map((m) => ({ source: m.source, reason }))],
  };
  const files = new Map(textFiles);
  const json = pythonJsonDumps(
    vaeConfig({ shapes: vaeShapes(vaeSource.tensors), originalConfig, imageSize: prediction.imageSize.value, scalingFactor: vaeScalingFactor(plan.family, originalConfig) }),
    { indent: 2, sortKeys: true },
  );
  files.set('vae/config.json', json + '\n');
  return { plan: { ...plan, components: plan.components.map((c) => (c.folder === 'vae' ? replacement : c)), account }, textFiles: files };
}

/** Every non-weight file of the output, by path relative to the output folder. */
async function buildTextFiles(
  source: CheckpointView,
  plan: ConversionPlan,
  prediction: PredictionDecision,
  originalConfig: OriginalConfig | undefined,
  options: ConvertOptions,
): Promise<Map<string, string | Uint8Array>> {
  const files = new Map<string, string | Uint8Array>();
  const json = (obj: unknown) => pythonJsonDumps(obj, { indent: 2, sortKeys: true }) + '\n';
  const tensors = source.tensors;
  const imageSize = prediction.imageSize.value;
  const torchDtype = options.dtype === 'fp16' ? 'float16' : options.dtype === 'bf16' ? 'bfloat16' : 'float32';
  if (plan.family === 'vae') {
    const scalingFactor = { value: vaeScalingFor(source, options, originalConfig).value, kind: 'float' as const };
    files.set('config.json', json(vaeConfig({ shapes: vaeShapes(tensors), originalConfig, imageSize, scalingFactor })));
    return files;
  }
  if (isControlNetFamily(plan.family)) {
    // A ControlNet file is one ControlNetModel folder; its shapes size the whole config.
    const shapes = controlNetShapes(tensors, componentPrefix(plan, 'controlnet') ?? 'control_model.');
    files.set('config.json', json(controlNetConfig({ family: plan.family, shapes, upcastAttention: prediction.upcastAttention.value })));
    return files;
  }
  const vae = vaeShapes(tensors);
  files.set(
    'unet/config.json',
    json(unetConfig({ family: plan.family, shapes: unetShapes(tensors), originalConfig, imageSize, vae, upcastAttention: prediction.upcastAttention.value })),
  );
  files.set('vae/config.json', json(vaeConfig({ shapes: vae, originalConfig, imageSize, scalingFactor: vaeScalingFactor(plan.family, originalConfig) })));
  let bpe: ClipBpe | undefined;
  const textEncoders: [string, string, TextEncoderKind | undefined][] = [
    ['text_encoder', 'tokenizer', textEncoderKind(plan.family)],
    ['text_encoder_2', 'tokenizer_2', textEncoder2Kind(plan.family)],
  ];
  for (const [folder, tokenizerFolder, kind] of textEncoders) {
    if (!kind) continue;
    files.set(`${folder}/config.json`, json(textEncoderConfig(kind, textEncoderShapes(tensors, kind, componentPrefix(plan, folder)), { torchDtype })));
    bpe ??= options.tokenizerDir ? await loadTokenizerDir(options.tokenizerDir) : await loadPackagedBpe();
    const tokenizer = tokenizerFiles(kind === 'clip-l' ? 'clip-l' : 'openclip', { bpe });
    for (const [name, data] of tokenizer) files.set(`${tokenizerFolder}/${name}`, data);
  }
  const upscaler = plan.family === 'sd-x4-upscaler';
  const schedulerParams = {
    predictionType: prediction.predictionType.value,
    numTrainTimesteps: originalConfig?.timesteps,
    // x4-upscaling.yaml: linear_start 0.0001, linear_end 0.02 (SD's 0.00085 / 0.012 otherwise).
    betaStart: originalConfig?.linearStart ? pyNumber(originalConfig.linearStart) : upscaler ? pyFloat(X4_BETA_START) : undefined,
    betaEnd: originalConfig?.linearEnd ? pyNumber(originalConfig.linearEnd) : upscaler ? pyFloat(X4_BETA_END) : undefined,
    zeroTerminalSnr: prediction.zeroTerminalSnr?.value,
  };
  const scheduler = defaultScheduler(plan, options);
  const sdxl = isSdxlFamily(plan.family);
  files.set('scheduler/scheduler_config.json', json(sdxl ? sdxlSchedulerConfig(scheduler, schedulerParams) : schedulerConfig(scheduler, schedulerParams)));
  if (upscaler) {
    // The low-resolution image's noise augmentation (low_scale_config: LDM "linear" betas, i.e.
    // Diffusers' scaled_linear, 0.0001 .. 0.02 over 1000 steps). Diffusers itself downloads this
    // file from stabilityai/stable-diffusion-x4-upscaler.
    files.set(
      'low_res_scheduler/scheduler_config.json',
      json(ddpmSchedulerConfig({ num_train_timesteps: 1000, beta_start: pyFloat(X4_BETA_START), beta_end: pyFloat(X4_BETA_END), beta_schedule: 'scaled_linear' })),
    );
  }
  if (isUnclipFamily(plan.family)) addUnclipFiles(files, json, source, plan, options, torchDtype);
  files.set('model_index.json', json(modelIndex({ family: plan.family, scheduler, pipelineClass: options.pipelineClass })));
  return files;
}

/** x4-upscaling.yaml `linear_start` / `linear_end` (the model's and its low_scale_config's betas). */
const X4_BETA_START = 0.0001;
const X4_BETA_END = 0.02;

/**
 * The scheduler written when --scheduler is not given (or left at its default): Diffusers' SDXL
 * branch always writes Euler; the x4 upscaler and unCLIP pipelines are published with DDIM
 * (Diffusers downloads the upscaler's DDIMScheduler config). An explicit other kind is honoured.
 */
function defaultScheduler(plan: ConversionPlan, options: ConvertOptions): SchedulerKind {
  const unset = options.scheduler === undefined || options.scheduler === CONVERT_DEFAULTS.scheduler;
  if (unset && isSdxlFamily(plan.family)) return 'euler';
  if (unset && (plan.family === 'sd-x4-upscaler' || isUnclipFamily(plan.family))) return 'ddim';
  return options.scheduler ?? CONVERT_DEFAULTS.scheduler;
}

/**
 * StableUnCLIPImg2ImgPipeline's extra parts, all from the checkpoint: image_encoder config (the
 * embedder's vision tower), feature_extractor, image_normalizer (config, and zeros / ones weights
 * when the file holds no CLIP statistics), image_noising_scheduler (v2-1-stable-unclip-*.yaml
 * noise_schedule_config: 1000 steps, squaredcos_cap_v2, as stable_unclip_image_noising_components).
 */
function addUnclipFiles(
  files: Map<string, string | Uint8Array>,
  json: (obj: unknown) => string,
  source: CheckpointView,
  plan: ConversionPlan,
  options: ConvertOptions,
  torchDtype: string,
): void {
  const vision = visionTowerShapes(source.tensors, componentPrefix(plan, 'image_encoder') ?? 'embedder.model.visual.');
  files.set('image_encoder/config.json', json(imageEncoderConfig(plan.family, vision, { torchDtype })));
  files.set('feature_extractor/preprocessor_config.json', json(featureExtractorConfig(vision.imageSize)));
  files.set('image_normalizer/config.json', json(imageNormalizerConfig(vision.projectionDim)));
  if (!plan.components.some((c) => c.folder === 'image_normalizer')) {
    const dtype = options.dtype === 'fp16' ? 'F16' : options.dtype === 'bf16' ? 'BF16' : 'F32';
    const name = `diffusion_pytorch_model${options.variant ? `.${options.variant}` : ''}.safetensors`;
    files.set(`image_normalizer/${name}`, defaultNormalizerWeights(vision.projectionDim, dtype));
  }
  files.set('image_noising_scheduler/scheduler_config.json', json(ddpmSchedulerConfig({ num_train_timesteps: 1000, beta_schedule: 'squaredcos_cap_v2' })));
}

/** A standalone VAE's scaling_factor: flags, metadata, file name, yaml, default (diffusers/vae-scaling.ts). */
function vaeScalingFor(view: CheckpointView, options: ConvertOptions, originalConfig: OriginalConfig | undefined): VaeScalingDecision {
  const fileName = (view as Partial<TensorSource>).path;
  return decideVaeScaling({ scalingFactor: options.scalingFactor, family: options.vaeFamily, metadata: view.metadata, fileName, originalConfig });
}

/** Where a text encoder's keys start: the plan's source prefix, else the family's usual one. */
function componentPrefix(plan: ConversionPlan, folder: string): string | undefined {
  return plan.components.find((c) => c.folder === folder)?.sourcePrefix;
}

function textEncoderShapes(tensors: TensorSource['tensors'], kind: TextEncoderKind, prefix: string | undefined): TextEncoderShapes {
  switch (kind) {
    case 'clip-l':
      return clipTextShapes(tensors, prefix);
    case 'openclip-h':
      return openClipTextShapes(tensors, prefix);
    case 'openclip-bigg':
      return openClipProjectedTextShapes(tensors, prefix ?? 'conditioner.embedders.1.model.');
  }
}

interface WrittenFolder {
  outDir: string;
  components: ConvertedComponent[];
  fp16Overflow: string[];
  warnings: string[];
}

async function writeFolder(
  source: TensorSource,
  plan: ConversionPlan,
  textFiles: Map<string, string | Uint8Array>,
  outDir: string,
  options: ConvertOptions,
  progress: ProgressCallback,
  sourceFor: (component: PlannedComponent) => TensorSource = () => source,
): Promise<WrittenFolder> {
  const folder = await prepareOutputFolder(outDir, { force: options.force, keep: [source.path, ...(options.vae ? [options.vae] : [])] });
  try {
    const components: ConvertedComponent[] = [];
    const fp16Overflow: string[] = [];
    for (const component of plan.components) {
      progress({ type: 'phase', phase: 'write', detail: componentFolder(plan, component) || 'model', total: plannedTotal(component, options) });
      const written = await writeOne(sourceFor(component), plan, component, folder.tempDir, options, progress);
      components.push(written.summary);
      fp16Overflow.push(...written.overflow);
    }
    for (const [rel, data] of textFiles) {
      if (typeof data === 'string') await writeTextFile(folder.tempDir, rel, data);
      else await writeBinaryFile(folder.tempDir, rel, data);
    }
    progress({ type: 'phase', phase: 'verify' });
    for (const component of plan.components) await verifyWrittenComponent(join(folder.tempDir, componentFolder(plan, component)), component, options.dtype ?? 'fp32', options.variant);
    if (options.failOnFp16Overflow && fp16Overflow.length) {
      throw new CkptError(ErrorCode.E_FP16_OVERFLOW, `${fp16Overflow.length} tensors overflow float16: ${fp16Overflow.slice(0, 10).join(', ')}`, {
        file: source.path,
        data: { tensors: fp16Overflow },
      });
    }
    await folder.commit();
    const warnings = fp16Overflow.length ? [`${fp16Overflow.length} tensors have values beyond ±65504 that became ±Inf in float16`] : [];
    return { outDir, components, fp16Overflow, warnings };
  } catch (e) {
    await folder.abort();
    throw e;
  }
}

function plannedTotal(component: PlannedComponent, options: ConvertOptions): { tensors: number; bytes: number } {
  const mode = options.dtype ?? CONVERT_DEFAULTS.dtype;
  const bytes = component.tensors.reduce((n, t) => n + numelOf(t.shape) * dtypeBytes(outputDTypeFor(t.dtype, mode)), 0);
  return { tensors: component.tensors.length, bytes };
}

/** A standalone model (a VAE file) is written as the output folder itself. */
function componentFolder(plan: ConversionPlan, component: PlannedComponent): string {
  return plan.standalone || component.standalone ? '' : component.folder;
}

async function writeOne(
  source: TensorSource,
  plan: ConversionPlan,
  component: PlannedComponent,
  root: string,
  options: ConvertOptions,
  progress: ProgressCallback,
): Promise<{ summary: ConvertedComponent; overflow: string[] }> {
  const dir = join(root, componentFolder(plan, component));
  const written = await writeComponentWeights(source, component, dir, {
    dtype: options.dtype ?? CONVERT_DEFAULTS.dtype,
    maxShardBytes: parseSizeString(options.maxShardSize ?? CONVERT_DEFAULTS.maxShardSize),
    variant: options.variant,
    onProgress: progress,
  });
  return {
    summary: {
      folder: componentFolder(plan, component) || '.',
      className: component.className,
      tensors: component.tensors.length,
      bytes: written.totalBytes,
      files: written.files.map((f) => f.slice(root.length + 1)),
    },
    overflow: written.overflowTensors,
  };
}

async function writeBinaryFile(dir: string, rel: string, data: Uint8Array): Promise<void> {
  // writeTextFile validates the relative path and creates parent folders; reuse it for the path.
  const path = await writeTextFile(dir, rel, '');
  try {
    await writeFile(path, data);
  } catch (e) {
    throw writeError(path, `writing ${rel}`, e);
  }
}
