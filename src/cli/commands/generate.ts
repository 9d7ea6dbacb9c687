import ora, { type Ora } from 'ora';
import type { Argv } from 'yargs';
import type { StepEvent } from '../../generate/pipeline.js';
import type { ProgressEvent } from '../../progress.js';
import type { Check } from '../../verify/checks.js';
import { runGeneration, type GenerationOptions, type GenerationReport } from '../../verify/generation.js';
import { PROVIDERS, type Provider } from '../../verify/providers.js';
import { formatBytes } from '../format.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

/** The generation flags `generate` and `verify` share. */
export interface GenerationArgs {
  prompt?: string;
  negativePrompt?: string;
  steps: number;
  guidance: number;
  seed: number;
  width?: number;
  height?: number;
  scheduler?: string;
  image?: string;
  strength?: number;
  mask?: string;
  imageGuidance?: number;
  depth?: string;
  noiseLevel?: number;
  provider: Provider;
  save?: string;
  onnxCache?: string;
  onnxDtype: 'fp32' | 'fp16';
  reexport: boolean;
  probe: boolean;
}

function positiveInt(name: string) {
  return (v: number): number => {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer (got ${v})`);
    return v;
  };
}

function multipleOf8(name: string) {
  return (v: number): number => {
    if (!Number.isInteger(v) || v < 8 || v % 8 !== 0) throw new Error(`--${name} must be a positive multiple of 8 (got ${v})`);
    return v;
  };
}

function unitInterval(v: number): number {
  if (!Number.isFinite(v) || v <= 0 || v > 1) throw new Error(`--strength must be in (0, 1] (got ${v})`);
  return v;
}

function badNoiseLevel(v: number): never {
  throw new Error(`--noise-level must be a non-negative integer (got ${v})`);
}

function seedValue(v: number): number {
  if (!Number.isSafeInteger(v)) throw new Error(`--seed must be an integer (got ${v})`);
  return v;
}

export function generationOptions(y: Argv, promptRequired: boolean): Argv {
  return y
    .option('prompt', { type: 'string', demandOption: promptRequired, describe: 'text prompt of the test generation' })
    .option('negative-prompt', { type: 'string', describe: 'negative prompt (default "")' })
    .option('steps', { type: 'number', default: 20, describe: 'denoising steps', coerce: positiveInt('steps') })
    .option('guidance', { type: 'number', default: 7.5, describe: 'classifier-free guidance scale (> 1 runs the UNet on a batch of 2)' })
    .option('seed', { type: 'number', default: 42, describe: 'seed of the torch-exact CPU generator', coerce: seedValue })
    .option('width', { type: 'number', describe: 'image width (default: the UNet sample_size x 8, or the init image)', coerce: multipleOf8('width') })
    .option('height', { type: 'number', describe: 'image height (default: as width)', coerce: multipleOf8('height') })
    .option('scheduler', { type: 'string', describe: "scheduler (pndm, ddim, euler, euler_a or a class name; default the folder's)" })
    .option('image', { type: 'string', describe: 'init image (PNG) for img2img, or the image to inpaint with --mask' })
    .option('strength', { type: 'number', describe: 'img2img strength (default 0.6); inpainting strength (default 1, SDXL 0.9999 as Diffusers)', coerce: (v: number | undefined) => (v === undefined ? v : unitInterval(v)) })
    .option('mask', { type: 'string', describe: 'inpainting mask (PNG, the size of --image; white is repainted): an inpainting UNet, or latent blending with a text-to-image UNet' })
    .option('image-guidance', { type: 'number', describe: 'InstructPix2Pix image guidance scale (default 1.5; guidance applies when >= 1 and --guidance > 1)' })
    .option('depth', { type: 'string', describe: 'depth map (grey PNG, any size; larger is nearer) for a depth-to-image model, with --image' })
    .option('noise-level', { type: 'number', describe: 'x4 upscaler noise level added to --image (default 20, an integer up to max_noise_level)', coerce: (v: number | undefined) => (v === undefined || (Number.isInteger(v) && v >= 0) ? v : badNoiseLevel(v)) })
    .option('provider', { choices: PROVIDERS, default: 'cpu' as Provider, describe: 'onnxruntime execution provider' })
    .option('save', { type: 'string', describe: 'write the image to this PNG file' })
    .option('onnx-cache', { type: 'string', describe: "parent folder of the ONNX export cache (default: <folder>/.ckpt2diffusers-onnx/, or the user cache dir when the folder is read-only)" })
    .option('onnx-dtype', { choices: ['fp32', 'fp16'] as const, default: 'fp32' as const, describe: 'precision of the exported ONNX graphs' })
    .option('reexport', { type: 'boolean', default: false, describe: 'export the ONNX graphs again even when the cache matches' })
    .option('probe', { type: 'boolean', default: true, describe: 'run the prediction-type probe (--no-probe skips it)' });
}

export function generationOptionsFrom(a: GenerationArgs): Omit<GenerationOptions, 'prompt'> & { prompt?: string } {
  return {
    prompt: a.prompt,
    negativePrompt: a.negativePrompt,
    steps: a.steps,
    guidance: a.guidance,
    seed: a.seed,
    width: a.width ?? a.height,
    height: a.height ?? a.width,
    scheduler: a.scheduler,
    initImage: a.image,
    strength: a.strength,
    mask: a.mask,
    imageGuidance: a.imageGuidance,
    depth: a.depth,
    noiseLevel: a.noiseLevel,
    provider: a.provider,
    save: a.save,
    onnxCacheDir: a.onnxCache,
    onnxDtype: a.onnxDtype,
    reexport: a.reexport,
    probe: a.probe,
  };
}

/** Progress of a generation on stderr: an ora spinner on a terminal, a line per phase and step otherwise. */
export function generationProgress(io: CliIO, quiet: boolean): { onProgress(e: ProgressEvent): void; onStep(e: StepEvent): void; stop(ok: boolean): void } {
  let spinner: Ora | undefined;
  let phase = '';
  let done = 0;
  let total = 0;
  let lastDraw = 0;
  const stepTimes: number[] = [];
  const terminal = io.interactive && (process.stderr.columns ?? 0) > 0;
  const show = (text: string) => {
    if (quiet) return;
    if (!terminal) return io.stderr(`${text}\n`);
    spinner ??= ora({ stream: process.stderr }).start();
    spinner.text = text;
  };
  return {
    onProgress(e) {
      if (e.type === 'phase') {
        phase = e.detail ? `${e.phase} ${e.detail}` : e.phase;
        done = 0;
        total = e.total?.bytes ?? 0;
        show(total ? `${phase} (${formatBytes(total)})` : phase);
      } else if (e.type === 'tensor') {
        done += e.bytes;
        const now = Date.now();
        if (terminal && spinner && total && now - lastDraw > 100) {
          spinner.text = `${phase}: ${formatBytes(done)} / ${formatBytes(total)} (${Math.floor((100 * done) / total)}%)`;
          lastDraw = now;
        }
      } else if (e.type === 'warning') {
        spinner?.clear();
        io.stderr(`warning: ${e.message}\n`);
        spinner?.render();
      }
    },
    onStep(e) {
      stepTimes.push(e.ms);
      const mean = stepTimes.reduce((a, b) => a + b, 0) / stepTimes.length;
      const eta = ((e.total - e.step - 1) * mean) / 1000;
      show(`step ${e.step + 1}/${e.total}  t=${Number(e.timestep.toFixed(3))}  ${(e.ms / 1000).toFixed(2)} s  (mean ${(mean / 1000).toFixed(2)} s/step, ${eta.toFixed(0)} s left)`);
    },
    stop(ok) {
      if (!spinner) return;
      if (ok) spinner.succeed('done');
      else spinner.stop();
    },
  };
}

const ms = (v: number): string => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`);

export function renderChecks(checks: readonly Check[]): string[] {
  return checks.map((c) => `    ${c.status.padEnd(4)} ${c.name}: ${c.message}`);
}

export function renderGeneration(r: GenerationReport): string {
  const t = r.timings;
  const lines = [
    `generation: ${r.family === 'sdxl' ? 'SDXL ' : ''}${r.mode} ${r.width}x${r.height}, ${r.steps} steps ${r.scheduler} (${r.predictionType}), guidance ${r.guidance}, seed ${r.seed}${r.strength !== undefined ? `, strength ${r.strength}` : ''}${r.imageGuidance !== undefined ? `, image guidance ${r.imageGuidance}` : ''}${r.noiseLevel !== undefined ? `, noise level ${r.noiseLevel}` : ''} [${r.provider}]`,
  ];
  if (r.onnx) lines.push(`  onnx: ${r.onnx.dir} (${r.onnx.origin === 'exported' ? `exported in ${ms(t.exportMs)}` : r.onnx.origin === 'cache' ? 'cached export reused' : 'ONNX folder'})`);
  if (r.promptTruncated) lines.push('  prompt: truncated to 77 tokens');
  if (r.inpaint) {
    lines.push(
      `  inpaint: ${r.inpaint.method === 'inpainting-unet' ? `inpainting UNet (${r.inpaint.unetInChannels} channels)` : 'latent blending (text-to-image UNet)'}, ${(100 * r.inpaint.maskedFraction).toFixed(1)}% of the pixels masked; the original is not pasted back`,
    );
  }
  const steps = t.stepMs.length ? `${t.stepMs.length} x mean ${ms(t.meanStepMs)} (min ${ms(Math.min(...t.stepMs))}, max ${ms(Math.max(...t.stepMs))})` : 'none';
  lines.push(`  time: load ${ms(t.loadMs)}, text ${ms(t.encodeTextMs)}, steps ${steps}, decode ${ms(t.decodeMs)}, probe ${ms(t.probeMs)}, total ${ms(t.totalMs)}`);
  lines.push(`  latents: mean ${r.latents.mean.toPrecision(4)}, std ${r.latents.std.toPrecision(4)}`);
  if (r.image) lines.push(`  image: ${r.image}`);
  lines.push('  checks:', ...renderChecks(r.checks));
  lines.push(`  verdict: ${r.verdict}`);
  return lines.join('\n') + '\n';
}

/** The --json form of a generation report. */
export function generationJson(r: GenerationReport): Record<string, unknown> {
  return { ...r };
}

interface GenerateArgs extends GenerationArgs {
  folder: string;
  prompt: string;
  json: boolean;
  quiet: boolean;
  strict: boolean;
}

export const generateCommand: CommandModule<GenerateArgs> = {
  command: 'generate <folder>',
  describe: 'Generate an image from a converted folder (ONNX graphs exported and cached on first use; SD 1.x/2.x txt2img, img2img and inpainting, InstructPix2Pix, SD 2 depth-to-image (depth map given), the x4 upscaler, SDXL txt2img, img2img and inpainting, the SDXL refiner)',
  builder: (y: Argv) =>
    generationOptions(y.positional('folder', { type: 'string', describe: 'Diffusers folder (or ONNX pipeline folder)', demandOption: true }), true)
      .option('json', { type: 'boolean', default: false, describe: 'print the report (timings per step and stage, checks) as JSON on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .option('strict', { type: 'boolean', default: false, describe: 'exit 1 when a check warns' })
      .example('$0 generate sd15/ --prompt "a photo of a cat" --save cat.png', 'txt2img, 20 steps, seed 42')
      .example('$0 generate sd15/ --prompt "a watercolor" --image in.png --strength 0.6 --save out.png', 'img2img')
      .example('$0 generate pix2pix/ --prompt "make it snowy" --image in.png --image-guidance 1.5 --save out.png', 'InstructPix2Pix editing')
      .example('$0 generate x4-upscaler/ --prompt "a cat" --image small.png --noise-level 20 --save big.png', 'x4 upscaling (the PNG comes out 4x the image size)')
      .example('$0 generate sd2-depth/ --prompt "a castle" --image in.png --depth depth.png --save out.png', 'depth-to-image (the depth map is given)')
      .example('$0 generate sd15-inpaint/ --prompt "a red door" --image in.png --mask mask.png --save out.png', 'inpainting (white mask pixels are repainted)'),
  async run(args: GenerateArgs, io: CliIO): Promise<number> {
    const progress = generationProgress(io, args.quiet || args.json);
    let report: GenerationReport;
    try {
      report = (await runGeneration(args.folder, { ...generationOptionsFrom(args), prompt: args.prompt, onProgress: progress.onProgress, onStep: progress.onStep })).report;
    } catch (e) {
      progress.stop(false);
      throw e;
    }
    progress.stop(true);
    io.stdout(args.json ? JSON.stringify(generationJson(report), null, 2) + '\n' : renderGeneration(report));
    return report.verdict === 'failed' || (args.strict && report.verdict === 'warnings') ? 1 : 0;
  },
};
