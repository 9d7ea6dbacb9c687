import type { Argv } from 'yargs';
import { REVERSE_FAMILIES, type ReverseFamily } from '../../reverse/folder.js';
import { toSingleFile, type ToSingleFileOptions, type ToSingleFileResult } from '../../reverse/to-single-file.js';
import { formatBytes, plural, table } from '../format.js';
import type { CliIO } from '../io.js';
import { progressRenderer } from '../progress.js';
import type { CommandModule } from './types.js';

interface ToSingleFileArgs {
  dir: string;
  output: string;
  dtype?: 'fp32' | 'fp16' | 'bf16';
  half: boolean;
  family?: ReverseFamily;
  variant?: string;
  positionIds: boolean;
  markers: boolean;
  placeholders: boolean;
  title?: string;
  bare: boolean;
  allowUnsafePickle: boolean;
  force: boolean;
  json: boolean;
  quiet: boolean;
}

export const toSingleFileCommand: CommandModule<ToSingleFileArgs> = {
  command: 'to-single-file <dir> <output>',
  describe: 'Write a Diffusers folder (SD 1.x/2.x and variants, SDXL, x4 upscaler, SD 2.1 unCLIP, a VAE or a ControlNet) back as one original-layout .safetensors file',
  builder: (y: Argv) =>
    y
      .positional('dir', { type: 'string', describe: 'Diffusers pipeline folder (model_index.json), or an AutoencoderKL / ControlNetModel folder', demandOption: true })
      .positional('output', { type: 'string', describe: 'the .safetensors file to write (atomically)', demandOption: true })
      .option('dtype', { choices: ['fp32', 'fp16', 'bf16'] as const, describe: 'dtype of float tensors (default: as stored in the folder)' })
      .option('half', { type: 'boolean', default: false, describe: 'same as --dtype fp16' })
      .option('family', { choices: REVERSE_FAMILIES, describe: 'the folder\'s model family (default: detected from its configs)' })
      .option('variant', { type: 'string', describe: 'read this weight variant, e.g. fp16 → *.fp16.safetensors' })
      .option('position-ids', { type: 'boolean', default: true, describe: 'write CLIP position_ids (int64 arange) back; --no-position-ids to leave them out' })
      .option('markers', { type: 'boolean', default: true, describe: 'write ComfyUI v_pred/ztsnr marker tensors when the scheduler says so; --no-markers to leave them out' })
      .option('placeholders', {
        type: 'boolean',
        default: true,
        describe: 'SD 2.x: write stand-ins for the OpenCLIP tensors Diffusers drops (last layer, text_projection, logit_scale); --no-placeholders to leave them out',
      })
      .option('title', { type: 'string', describe: 'modelspec.title (default: the folder name)' })
      .option('bare', { type: 'boolean', default: false, describe: 'ControlNet: keys without the control_model. prefix (default: with it, as ControlNet 1.1 files)' })
      .option('allow-unsafe-pickle', { type: 'boolean', default: false, describe: 'read .bin weights whose pickle imports dangerous globals (never executed)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output file' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .conflicts('half', 'dtype')
      .example('$0 to-single-file sd15/ sd15.safetensors', 'a Diffusers folder as one A1111/ComfyUI checkpoint')
      .example('$0 to-single-file sdxl/ sdxl.safetensors --half', 'float16 tensors')
      .example('$0 to-single-file controlnet-canny/ control_canny.safetensors', 'a ControlNetModel folder as control_model.* keys'),
  async run(args: ToSingleFileArgs, io: CliIO): Promise<number> {
    const progress = progressRenderer(io, args.quiet || args.json);
    let result: ToSingleFileResult;
    try {
      result = await toSingleFile(args.dir, args.output, { ...optionsFrom(args), onProgress: progress.onProgress });
    } finally {
      progress.stop(false);
    }
    io.stdout(args.json ? JSON.stringify({ schema: 1, ...result }, null, 2) + '\n' : render(result));
    return 0;
  },
};

function optionsFrom(a: ToSingleFileArgs): ToSingleFileOptions {
  return {
    dtype: a.half ? 'fp16' : a.dtype,
    family: a.family,
    variant: a.variant,
    positionIds: a.positionIds,
    markers: a.markers,
    placeholders: a.placeholders,
    title: a.title,
    bare: a.bare,
    allowUnsafePickle: a.allowUnsafePickle,
    force: a.force,
  };
}

function render(r: ToSingleFileResult): string {
  let out = `${r.output}: ${r.family} single file, ${plural(r.tensors, 'tensor')}, ${formatBytes(r.bytes)}\n`;
  out += table([
    ['architecture', r.metadata['modelspec.architecture'] ?? ''],
    ...(r.predictionType ? [['prediction type', r.predictionType]] : []),
    ['detected from', r.familyEvidence.join('; ')],
  ]);
  out += grouped('added', r.added.map((a) => [a.name, a.reason]));
  out += grouped('not restored', r.notRestored.map((n) => [n.source, n.reason]));
  for (const w of r.warnings) out += `  warning: ${w}\n`;
  return out;
}

/** One line per reason: `label k1, k2, k3 ... (N): reason`. */
function grouped(label: string, items: readonly (readonly [string, string])[]): string {
  const byReason = new Map<string, string[]>();
  for (const [key, reason] of items) byReason.set(reason, [...(byReason.get(reason) ?? []), key]);
  let out = '';
  for (const [reason, keys] of byReason) out += `  ${label} ${keys.length > 3 ? `${keys.slice(0, 3).join(', ')} ... (${keys.length})` : keys.join(', ')}: ${reason}\n`;
  return out;
}
