import type { Argv } from 'yargs';
import { SCHEDULER_KINDS, type SchedulerKind } from '../../diffusers/configs.js';
import { CkptError, ErrorCode } from '../../errors.js';
import { verify, type VerifyReport } from '../../verify/index.js';
import type { VerifyWeightsReport } from '../../verify/weights.js';
import { formatBytes, table } from '../format.js';
import type { CliIO } from '../io.js';
import { progressRenderer } from '../progress.js';
import { generationJson, generationOptions, generationOptionsFrom, generationProgress, renderGeneration, type GenerationArgs } from './generate.js';
import type { CommandModule } from './types.js';

interface VerifyArgs extends GenerationArgs {
  folder: string;
  source?: string;
  extractEma?: boolean;
  originalConfig?: string;
  predictionType?: 'epsilon' | 'v_prediction' | 'v-prediction';
  imageSize?: number;
  upcastAttention?: boolean;
  pipelineClass?: string;
  tokenizer?: string;
  convertScheduler?: SchedulerKind;
  variant?: string;
  allowUnknownKeys: boolean;
  allowUnsafePickle: boolean;
  json: boolean;
  quiet: boolean;
  strict: boolean;
}

export const verifyCommand: CommandModule<VerifyArgs> = {
  command: 'verify <folder>',
  describe: 'Check a converted folder: every tensor against the source checkpoint (--source) and/or a test generation (--prompt)',
  builder: (y: Argv) =>
    generationOptions(y.positional('folder', { type: 'string', describe: 'converted Diffusers folder', demandOption: true }), false)
      .option('source', { type: 'string', describe: 'the checkpoint it was converted from: compare every tensor and config' })
      .option('extract-ema', { type: 'boolean', describe: 'the UNet was taken from the EMA weights (default: inferred from the bytes)' })
      .option('original-config', { type: 'string', describe: 'the original LDM yaml given to convert' })
      .option('prediction-type', { choices: ['epsilon', 'v_prediction', 'v-prediction'] as const, describe: 'the --prediction-type given to convert' })
      .option('image-size', { type: 'number', describe: 'the --image-size given to convert' })
      .option('upcast-attention', { type: 'boolean', describe: 'the --upcast-attention given to convert' })
      .option('pipeline-class', { type: 'string', describe: 'the --pipeline-class given to convert' })
      .option('tokenizer', { type: 'string', describe: 'the --tokenizer folder given to convert' })
      .option('convert-scheduler', { choices: SCHEDULER_KINDS, describe: "the --scheduler given to convert (default: the folder's scheduler class)" })
      .option('variant', { type: 'string', describe: 'check only this weights variant (default: every variant present)' })
      .option('allow-unknown-keys', { type: 'boolean', default: false, describe: 'the checkpoint was converted with --allow-unknown-keys' })
      .option('allow-unsafe-pickle', { type: 'boolean', default: false, describe: 'read a pickle that imports dangerous globals (never executed)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .option('strict', { type: 'boolean', default: false, describe: 'exit 1 when a generation check warns' })
      .example('$0 verify sd15/ --source v1-5-pruned.ckpt', 'every tensor and config against the checkpoint')
      .example('$0 verify sd15/ --prompt "a photo of a cat" --save cat.png', 'a test generation with checks')
      .example('$0 verify sd15/ --source v1-5.ckpt --prompt "a cat" --json', 'both, as JSON'),
  async run(args: VerifyArgs, io: CliIO): Promise<number> {
    if (args.prompt === undefined && (args.image || args.mask || args.depth || args.noiseLevel !== undefined || args.save)) {
      throw new CkptError(ErrorCode.E_USAGE, '--image, --mask, --depth, --noise-level and --save belong to a test generation: give --prompt too.');
    }
    const quiet = args.quiet || args.json;
    const weightsProgress = progressRenderer(io, quiet);
    const genProgress = generationProgress(io, quiet);
    const gen = generationOptionsFrom(args);
    let report: VerifyReport;
    try {
      report = await verify(args.folder, {
        source: args.source,
        extractEma: args.extractEma,
        originalConfig: args.originalConfig,
        predictionType: args.predictionType,
        imageSize: args.imageSize,
        upcastAttention: args.upcastAttention,
        pipelineClass: args.pipelineClass,
        tokenizerDir: args.tokenizer,
        scheduler: args.convertScheduler,
        variant: args.variant,
        allowUnknownKeys: args.allowUnknownKeys,
        allowUnsafePickle: args.allowUnsafePickle,
        onProgress: (e) => weightsProgress.onProgress(e),
        generation:
          gen.prompt === undefined
            ? undefined
            : {
                ...gen,
                prompt: gen.prompt,
                onProgress: (e) => {
                  weightsProgress.stop(false);
                  genProgress.onProgress(e);
                },
                onStep: genProgress.onStep,
              },
      });
    } catch (e) {
      weightsProgress.stop(false);
      genProgress.stop(false);
      throw e;
    }
    weightsProgress.stop(false);
    genProgress.stop(true);
    if (args.json) {
      const { run: _run, ...rest } = report as VerifyReport & { run?: unknown };
      io.stdout(JSON.stringify({ schema: 1, ...rest, generation: rest.generation && generationJson(rest.generation) }, null, 2) + '\n');
    } else {
      io.stdout(renderVerify(report));
    }
    return report.verdict === 'failed' || (args.strict && report.verdict === 'warnings') ? 1 : 0;
  },
};

export function renderWeights(w: VerifyWeightsReport): string {
  const lines = [`weights: ${w.outDir} against ${w.source} (${w.family}, ${w.dtype}${w.extractEma ? ', EMA UNet' : ''})`];
  if (w.inferred.length) lines.push(`  inferred: ${w.inferred.join('; ')}`);
  const rows = w.components.map((c) => [c.folder, c.className, `${c.matched}/${c.tensors} tensors`, formatBytes(c.bytes), c.variants.map((v) => v || 'default').join(', '), c.ok ? 'ok' : `${c.problemCount} problem(s)`]);
  lines.push(table(rows).trimEnd());
  for (const c of w.components) for (const p of c.problems) lines.push(`    ${c.folder}: ${p}`);
  const a = w.account;
  lines.push(`  source keys: ${a.sourceKeys} (${a.mapped} mapped, ${a.dropped} dropped with a reason, ${a.unknown.length} unknown)`);
  for (const k of a.unknown.slice(0, 20)) lines.push(`    unknown key: ${k}`);
  const d = w.configs.differences;
  lines.push(`  configs: ${w.configs.files} files, ${d.length ? `${d.length} difference(s)` : 'identical'}`);
  for (const x of d) lines.push(`    ${x.file}${x.key ? ` ${x.key}` : ''}: ${JSON.stringify(x.found)} (expected ${JSON.stringify(x.expected)})`);
  if (d.length) lines.push('    (configs are re-derived with the options given here: pass the --original-config, --prediction-type, --image-size, ... that convert was given)');
  lines.push(`  ${w.ok ? 'weights ok' : `${w.problems} problem(s)`} in ${(w.ms / 1000).toFixed(1)} s`);
  return lines.join('\n') + '\n';
}

export function renderVerify(r: VerifyReport): string {
  let out = '';
  if (r.weights) out += renderWeights(r.weights);
  if (r.generation) out += renderGeneration(r.generation);
  return out + `verdict: ${r.verdict}\n`;
}
