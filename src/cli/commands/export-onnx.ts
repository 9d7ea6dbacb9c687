import type { Argv } from 'yargs';
import { exportOnnx, type ExportOnnxResult, type OnnxDType, type OnnxLayout } from '../../onnx/export.js';
import { formatBytes, table } from '../format.js';
import type { CliIO } from '../io.js';
import { progressRenderer } from '../progress.js';
import type { CommandModule } from './types.js';

interface ExportOnnxArgs {
  input: string;
  output: string;
  layout: OnnxLayout;
  dtype: OnnxDType;
  fp16Vae: boolean;
  force: boolean;
  json: boolean;
  quiet: boolean;
}

export const exportOnnxCommand: CommandModule<ExportOnnxArgs> = {
  command: 'export-onnx <input> <output>',
  describe: 'Export a Diffusers folder to ONNX (text encoders, UNet, VAE encoder/decoder) for onnxruntime',
  builder: (y: Argv) =>
    y
      .positional('input', { type: 'string', describe: 'Diffusers pipeline folder (model_index.json)', demandOption: true })
      .positional('output', { type: 'string', describe: 'output ONNX folder (created atomically)', demandOption: true })
      .option('layout', {
        choices: ['optimum', 'diffusers'] as const,
        default: 'optimum' as OnnxLayout,
        describe: 'optimum: model.onnx(+_data), int64 ids (ORT pipelines, diffusers.js); diffusers: weights.pb, int32 ids (OnnxStableDiffusionPipeline)',
      })
      .option('dtype', { choices: ['fp32', 'fp16'] as const, default: 'fp32' as OnnxDType, describe: 'precision of weights and graphs' })
      .option('fp16-vae', { type: 'boolean', default: false, describe: 'with --dtype fp16, also run the SDXL VAE decoder in fp16 (the original SDXL VAE overflows)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing non-empty output folder' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .example('$0 export-onnx sd15/ sd15-onnx/', 'Optimum-style ONNX folder')
      .example('$0 export-onnx sd15/ sd15-onnx/ --layout diffusers --dtype fp16', 'for OnnxStableDiffusionPipeline, float16'),
  async run(args: ExportOnnxArgs, io: CliIO): Promise<number> {
    const progress = progressRenderer(io, args.quiet || args.json);
    let result: ExportOnnxResult;
    try {
      result = await exportOnnx(args.input, args.output, {
        layout: args.layout,
        dtype: args.dtype,
        fp16Vae: args.fp16Vae,
        force: args.force,
        onProgress: (e) => progress.onProgress(e),
      });
    } catch (e) {
      progress.stop(false);
      throw e;
    }
    progress.stop(true);
    io.stdout(args.json ? JSON.stringify(result, null, 2) + '\n' : renderExport(result));
    return 0;
  },
};

export function renderExport(r: ExportOnnxResult): string {
  const rows = r.components.map((c) => [c.name, c.floatType, formatBytes(c.modelBytes + c.externalBytes), c.externalDataPath ? 'external data' : 'embedded', `${c.inputs.join(', ')} → ${c.outputs.join(', ')}`]);
  const lines = [`${r.outDir}: ONNX (${r.layout} layout, ${r.dtype}, opset ${r.opset}, IR ${r.irVersion})`, table(rows).trimEnd()];
  if (r.copied.length) lines.push(`  copied: ${r.copied.join(', ')}`);
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n') + '\n';
}
