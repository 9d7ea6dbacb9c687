/**
 * Public library API of ckpt2diffusers: re-exports only.
 *
 * Importing this module loads no native code and no ONNX runtime: `exportOnnx` builds graphs in
 * plain TypeScript, and `verify` loads onnxruntime lazily inside the function, so that
 * `import { convert } from 'ckpt2diffusers'` stays light.
 */
export * from './errors.js';
export * from './dtypes.js';
export * as limits from './limits.js';
export type * from './formats/tensor-source.js';
export type * from './progress.js';

// Conversion
export { convert, planFolder, CONVERT_DEFAULTS } from './convert.js';
export type { ConvertOptions, ConvertResult, ConvertedComponent, OutputDType, FolderPlan, CheckpointView } from './convert.js';

// Batch
export {
  batch,
  expandInputs,
  shardOf,
  parseShard,
  defaultJobs,
  fingerprint,
  readCompletionRecord,
  COMPLETION_RECORD,
  CHECKPOINT_EXTENSIONS,
} from './batch.js';
export type {
  BatchOptions,
  BatchReport,
  BatchFileResult,
  BatchStatus,
  BatchItem,
  BatchProgressEvent,
  CompletionRecord,
  FileOptions,
  Shard,
  SourceFingerprint,
} from './batch.js';

// Reading and checking checkpoints
export { inspectFile, inspectPath } from './inspect.js';
export type { FileInspection, InspectOptions, PrefixCount } from './inspect.js';
export { scanFile } from './scan.js';
export type { ScanResult, ScannedPickle } from './scan.js';
export { openCheckpoint } from './formats/open.js';
export type { OpenCheckpointOptions } from './formats/open.js';
export { readSafetensorsHeader, openSafetensors, writeSafetensorsFile } from './formats/safetensors.js';
export type { SafetensorsHeader, SafetensorsTensorData, SafetensorsLayout } from './formats/safetensors.js';
export { FileSource } from './io/file-source.js';

// Mapping
export { detectFamily } from './mapping/detect-family.js';
export { planConversion } from './mapping/plan.js';
export type { ConversionPlan, FamilyDetection, PlannedComponent } from './mapping/plan-types.js';

// Output folders (atomic write, leftover cleanup) for tools that write their own
export { cleanStaleTempFolders, removeLiveTempFolders, liveTempFolders } from './diffusers/output-folder.js';

// Test generation without the networks: PyTorch-identical noise, CLIP tokenizer, schedulers, pipeline loop
export * from './generate/index.js';

// Verification of converted folders and test generation through ONNX graphs (onnxruntime is loaded
// only when a generation runs)
export {
  verify,
  verifyWeights,
  runGeneration,
  readFolderInfo,
  ensureOnnxFolder,
  onnxCacheDir,
  ONNX_CACHE_FOLDER,
  runPredictionProbe,
  predictionCheck,
  probeDecision,
  V_PREDICTION_THRESHOLD,
  PROVIDERS,
} from './verify/index.js';
export type {
  VerifyOptions,
  VerifyReport,
  VerifyWeightsOptions,
  VerifyWeightsReport,
  ComponentWeightsReport,
  ConfigDifference,
  GenerationOptions,
  GenerationReport,
  GenerationRun,
  GenerationTimings,
  Check,
  CheckStatus,
  Verdict,
  ProbeResult,
  Provider,
} from './verify/index.js';

// ONNX export (plain TypeScript graph building; no onnxruntime import) and the reverse direction.
export { exportOnnx } from './onnx-entry.js';
export type { ExportOnnxOptions, ExportOnnxResult, ExportedComponent, OnnxLayout, OnnxDType } from './onnx/export.js';
export { toSingleFile } from './reverse/to-single-file.js';
export type { ToSingleFileOptions, ToSingleFileResult } from './reverse/to-single-file.js';
