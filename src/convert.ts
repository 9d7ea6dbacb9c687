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
  isSdxlFamily,
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
import { clipTextShapes, openClipProjectedTextShapes, openClipTextShapes, unetShapes, vaeShapes, type TextEncoderShapes } from './diffusers/configs-shapes.js';
import { prepareOutputFolder, writeTextFile } from './diffusers/output-folder.js';
import { loadPackagedBpe, loadTokenizerDir, tokenizerFiles, type ClipBpe } from './diffusers/tokenizer.js';
import { DEFAULT_MAX_SHARD_BYTES, outputDTypeFor, writeComponentWeights } from './diffusers/write-component.js';
import { dtypeBytes, numelOf } from './dtypes.js';
import { verifyWrittenComponent } from './diffusers/verify-written.js';
import { CkptError, ErrorCode } from './errors.js';
import { openCheckpoint } from './formats/open.js';
import { pythonJsonDumps } from './formats/python-json.js';
import { parseSizeString } from './formats/shards.js';
import type { TensorSource } from './formats/tensor-source.js';
import { detectFamily } from './mapping/detect-family.js';
import { readOriginalConfig, type OriginalConfig } from './mapping/original-config.js';
import type { ConversionPlan, FamilyDetection, PlannedComponent } from './mapping/plan-types.js';
import { planConversion } from './mapping/plan.js';
import { decidePrediction, type PredictionDecision, type PredictionOverrides } from './mapping/prediction.js';
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
  /** A local tokenizer folder to take vocab.json / merges.txt from instead of the bundled BPE. */
  tokenizerDir?: string;
  /** Replace an existing non-empty output folder. */
  force?: boolean;
  /** Fail when a float16 cast overflows (values beyond ±65504 become ±Inf). */
  failOnFp16Overflow?: boolean;
  onProgress?: ProgressCallback;
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
  try {
    progress({ type: 'phase', phase: 'plan' });
    const { family, plan, prediction, textFiles } = await planFolder(source, options, originalConfig);
    const result = await writeFolder(source, plan, textFiles, outDir, options, progress);
    return { input, family, prediction, plan, ...result };
  } finally {
    await source.close();
  }
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
    files.set('config.json', json(vaeConfig({ shapes: vaeShapes(tensors), originalConfig, imageSize, scalingFactor: vaeScalingFactor('vae', originalConfig) })));
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
  const schedulerParams = {
    predictionType: prediction.predictionType.value,
    numTrainTimesteps: originalConfig?.timesteps,
    betaStart: originalConfig?.linearStart && pyNumber(originalConfig.linearStart),
    betaEnd: originalConfig?.linearEnd && pyNumber(originalConfig.linearEnd),
    zeroTerminalSnr: prediction.zeroTerminalSnr?.value,
  };
  // Diffusers' SDXL branch always writes Euler; an explicit other --scheduler is honoured.
  const sdxl = isSdxlFamily(plan.family);
  const scheduler = sdxl && (options.scheduler === undefined || options.scheduler === CONVERT_DEFAULTS.scheduler) ? 'euler' : (options.scheduler ?? CONVERT_DEFAULTS.scheduler);
  files.set('scheduler/scheduler_config.json', json(sdxl ? sdxlSchedulerConfig(scheduler, schedulerParams) : schedulerConfig(scheduler, schedulerParams)));
  files.set('model_index.json', json(modelIndex({ family: plan.family, scheduler, pipelineClass: options.pipelineClass })));
  return files;
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
): Promise<WrittenFolder> {
  const folder = await prepareOutputFolder(outDir, { force: options.force, keep: [source.path] });
  try {
    const components: ConvertedComponent[] = [];
    const fp16Overflow: string[] = [];
    for (const component of plan.components) {
      progress({ type: 'phase', phase: 'write', detail: componentFolder(plan, component) || 'model', total: plannedTotal(component, options) });
      const written = await writeOne(source, plan, component, folder.tempDir, options, progress);
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
  await writeFile(path, data);
}
