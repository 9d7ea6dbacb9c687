import { constants } from 'node:fs';
import { access, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { convert, type ConvertOptions, type ConvertResult } from '../../convert.js';
import { SCHEDULER_KINDS, type SchedulerKind } from '../../diffusers/configs.js';
import { VAE_FAMILIES, type VaeFamily } from '../../diffusers/vae-scaling.js';
import { CkptError, ErrorCode } from '../../errors.js';
import { formatBytes, plural, table } from '../format.js';
import type { ExportOnnxResult } from '../../onnx/export.js';
import type { CliIO } from '../io.js';
import { progressRenderer } from '../progress.js';
import type { CommandModule } from './types.js';

interface ConvertArgs {
  vae?: string;
  onnx?: string;
  onnxLayout: 'optimum' | 'diffusers';
  onnxDtype: 'fp32' | 'fp16';
  input: string;
  output: string;
  originalConfig?: string;
  extractEma: boolean;
  allowUnknownKeys: boolean;
  allowUnsafePickle: boolean;
  dtype?: 'fp32' | 'fp16' | 'bf16';
  half: boolean;
  variant?: string;
  maxShardSize: string;
  scheduler: SchedulerKind;
  predictionType?: 'epsilon' | 'v_prediction' | 'v-prediction';
  imageSize?: number;
  upcastAttention?: boolean;
  pipelineClass?: string;
  tokenizer?: string;
  scalingFactor?: number;
  family?: VaeFamily;
  force: boolean;
  report?: string;
  json: boolean;
  quiet: boolean;
}

export const convertCommand: CommandModule<ConvertArgs> = {
  command: ['$0 <input> <output>', 'convert <input> <output>'],
  describe: 'Convert an original SD checkpoint (.ckpt/.pt/.bin/.safetensors) to a Diffusers folder',
  builder: (y: Argv) =>
    y
      .positional('input', { type: 'string', describe: 'checkpoint file', demandOption: true })
      .positional('output', { type: 'string', describe: 'output Diffusers folder (created atomically)', demandOption: true })
      .option('original-config', { type: 'string', describe: 'original LDM yaml (v1-inference.yaml, ...); overrides values read from the tensors' })
      .option('extract-ema', { type: 'boolean', default: false, describe: 'take the UNet from the EMA weights (model_ema.*)' })
      .option('prediction-type', { choices: ['epsilon', 'v_prediction', 'v-prediction'] as const, describe: 'override the detected prediction type' })
      .option('image-size', { type: 'number', describe: 'override the detected training image size (512, 768, ...)', coerce: positiveMultipleOf8 })
      .option('upcast-attention', { type: 'boolean', describe: 'set upcast_attention in the UNet config (SD 2.1 in fp16)' })
      .option('scheduler', { choices: SCHEDULER_KINDS, default: 'pndm' as SchedulerKind, describe: 'scheduler written to scheduler/' })
      .option('pipeline-class', { type: 'string', describe: 'pipeline class for model_index.json (default: from the family)' })
      .option('dtype', { choices: ['fp32', 'fp16', 'bf16'] as const, describe: 'dtype of float weights (default fp32, as Diffusers)' })
      .option('half', { type: 'boolean', default: false, describe: 'same as --dtype fp16' })
      .option('variant', { type: 'string', describe: 'weight file variant, e.g. fp16 → *.fp16.safetensors' })
      .option('max-shard-size', { type: 'string', default: '10GB', describe: 'shard weight files above this size' })
      .option('tokenizer', { type: 'string', describe: 'local tokenizer folder with vocab.json and merges.txt' })
      .option('scaling-factor', { type: 'number', describe: 'standalone VAE: scaling_factor to write (default: from metadata, file name or yaml, else 0.18215)', coerce: positiveNumber })
      .option('family', { choices: VAE_FAMILIES, describe: 'standalone VAE: sd (scaling_factor 0.18215) or sdxl (0.13025)' })
      .option('vae', { type: 'string', describe: "a standalone VAE file to use instead of the checkpoint's own VAE" })
      .option('onnx', { type: 'string', describe: 'also export the converted folder to ONNX in this folder (see export-onnx)' })
      .option('onnx-layout', { choices: ['optimum', 'diffusers'] as const, default: 'optimum' as const, describe: 'ONNX consumer dialect for --onnx' })
      .option('onnx-dtype', { choices: ['fp32', 'fp16'] as const, default: 'fp32' as const, describe: 'ONNX precision for --onnx' })
      .option('allow-unknown-keys', { type: 'boolean', default: false, describe: 'convert even if some keys match no table' })
      .option('allow-unsafe-pickle', { type: 'boolean', default: false, describe: 'read a pickle that imports dangerous globals (never executed)' })
      .option('report', { type: 'string', describe: 'write the full key account (mapped / dropped / unknown) as JSON to this file' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing non-empty output folder' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .conflicts('half', 'dtype')
      .example('$0 v1-5-pruned.ckpt sd15/', 'convert a checkpoint')
      .example('$0 sd21.safetensors sd21/ --half --variant fp16', 'float16 weights named *.fp16.safetensors'),
  async run(args: ConvertArgs, io: CliIO): Promise<number> {
    // Fail before converting rather than after: a report that cannot be written is a usage slip.
    if (args.report) await checkWritableFile(args.report);
    const progress = progressRenderer(io, args.quiet || args.json);
    let result: ConvertResult;
    try {
      result = await convert(args.input, args.output, { ...optionsFrom(args), onProgress: progress.onProgress });
    } finally {
      progress.stop(false);
    }
    if (args.report) await writeFile(args.report, JSON.stringify(keyReport(result), null, 2) + '\n');
    const onnx = args.onnx ? await exportAfterConvert(args, result, io) : undefined;
    io.stdout(args.json ? JSON.stringify({ ...summary(result), ...(onnx ? { onnx } : {}) }, null, 2) + '\n' : renderSummary(result) + (onnx ? renderOnnx(onnx) : ''));
    return 0;
  },
};

/** `--onnx DIR`: the converted folder goes on to the ONNX export (loaded only when asked for). */
async function exportAfterConvert(args: ConvertArgs, result: ConvertResult, io: CliIO): Promise<ExportOnnxResult> {
  const { exportOnnx } = await import('../../onnx/export.js');
  const progress = progressRenderer(io, args.quiet || args.json);
  try {
    return await exportOnnx(result.outDir, args.onnx!, { layout: args.onnxLayout, dtype: args.onnxDtype, force: args.force, onProgress: progress.onProgress });
  } finally {
    progress.stop(false);
  }
}

function renderOnnx(r: ExportOnnxResult): string {
  return `${r.outDir}: ONNX (${r.layout}, ${r.dtype}) ${r.components.map((c) => c.name).join(', ')}\n`;
}

function positiveNumber(v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--scaling-factor must be a positive number (got ${v})`);
  return v;
}

function positiveMultipleOf8(v: number): number {
  if (!Number.isInteger(v) || v <= 0 || v % 8 !== 0) throw new Error(`--image-size must be a positive multiple of 8 (got ${v})`);
  return v;
}

async function checkWritableFile(path: string): Promise<void> {
  try {
    await access(dirname(resolve(path)), constants.W_OK);
  } catch (e) {
    throw new CkptError(ErrorCode.E_IO, `--report: cannot write in ${dirname(resolve(path))} (${(e as NodeJS.ErrnoException).code ?? e})`, { file: path });
  }
}

function optionsFrom(a: ConvertArgs): ConvertOptions {
  return {
    originalConfig: a.originalConfig,
    extractEma: a.extractEma,
    allowUnknownKeys: a.allowUnknownKeys,
    allowUnsafePickle: a.allowUnsafePickle,
    dtype: a.half ? 'fp16' : a.dtype,
    variant: a.variant,
    maxShardSize: a.maxShardSize,
    scheduler: a.scheduler,
    predictionType: a.predictionType,
    imageSize: a.imageSize,
    upcastAttention: a.upcastAttention,
    pipelineClass: a.pipelineClass,
    tokenizerDir: a.tokenizer,
    scalingFactor: a.scalingFactor,
    vae: a.vae,
    vaeFamily: a.family,
    force: a.force,
  };
}

/** The documented --json result (schema 1). */
function summary(r: ConvertResult) {
  const { account } = r.plan;
  return {
    schema: 1,
    input: r.input,
    output: r.outDir,
    family: r.family.family,
    familyConfidence: r.family.confidence,
    familyEvidence: r.family.evidence,
    predictionType: r.prediction.predictionType,
    imageSize: r.prediction.imageSize,
    upcastAttention: r.prediction.upcastAttention,
    ema: r.plan.ema ?? { present: false, count: 0, extracted: false },
    components: r.components,
    keys: { mapped: account.mapped.length, dropped: account.dropped.length, unknown: account.unknown },
    fp16Overflow: r.fp16Overflow,
    warnings: r.warnings,
    ...(r.vaeScaling ? { vaeScaling: r.vaeScaling } : {}),
  };
}

/** --report: every source key and what became of it. */
function keyReport(r: ConvertResult) {
  return { ...summary(r), account: r.plan.account };
}

function renderSummary(r: ConvertResult): string {
  const s = summary(r);
  const dropped = new Map<string, number>();
  for (const d of r.plan.account.dropped) dropped.set(d.reason, (dropped.get(d.reason) ?? 0) + 1);
  let out = `${r.outDir}: ${s.family} (${s.familyConfidence} confidence)\n`;
  // A single model (standalone VAE, ControlNet) has no scheduler: its prediction type means nothing.
  const pipeline = r.components.length > 1 || r.components[0]?.folder !== '.';
  out += table([
    ...(pipeline
      ? [
          ['prediction type', `${s.predictionType.value} (${s.predictionType.confidence}: ${s.predictionType.evidence[0]?.what ?? 'default'})`],
          ['image size', String(s.imageSize.value)],
        ]
      : []),
    ['EMA', s.ema.present ? `${plural(s.ema.count, 'EMA tensor')}${s.ema.extracted ? ', UNet taken from EMA' : ' (not used; --extract-ema to use them)'}` : 'none'],
    ...(r.vaeScaling ? [['VAE scaling', `${r.vaeScaling.value} (${r.vaeScaling.confidence}: ${r.vaeScaling.evidence[0]?.what ?? 'default'})`]] : []),
    ['keys', `${s.keys.mapped} mapped, ${s.keys.dropped} dropped, ${s.keys.unknown.length} unknown`],
  ]);
  out += table(r.components.map((c) => [c.folder, c.className, plural(c.tensors, 'tensor'), formatBytes(c.bytes)]));
  for (const [reason, n] of dropped) out += `  dropped ${n}: ${reason}\n`;
  for (const w of r.warnings) out += `  warning: ${w}\n`;
  return out;
}
