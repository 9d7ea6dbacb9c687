import ora, { type Ora } from 'ora';
import { relative } from 'node:path';
import type { Argv } from 'yargs';
import { batch, type BatchFileResult, type BatchOptions, type BatchProgressEvent, type BatchReport } from '../../batch.js';
import { SCHEDULER_KINDS, type SchedulerKind } from '../../diffusers/configs.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

interface BatchArgs {
  inputs: string[];
  outDir: string;
  jobs?: number;
  resume: boolean;
  force: boolean;
  report?: string;
  shard?: string;
  originalConfig?: string;
  extractEma: boolean;
  allowUnknownKeys: boolean;
  allowUnsafePickle: boolean;
  dtype?: 'fp32' | 'fp16' | 'bf16';
  half: boolean;
  variant?: string;
  maxShardSize?: string;
  scheduler?: SchedulerKind;
  predictionType?: 'epsilon' | 'v_prediction' | 'v-prediction';
  imageSize?: number;
  upcastAttention?: boolean;
  pipelineClass?: string;
  tokenizer?: string;
  json: boolean;
  quiet: boolean;
}

export const batchCommand: CommandModule<BatchArgs> = {
  command: 'batch <inputs..>',
  describe: 'Convert many checkpoints (files, folders, globs, .jsonl manifests), one output folder each',
  builder: (y: Argv) =>
    y
      .positional('inputs', { type: 'string', array: true, describe: 'files, folders (recursive), globs, or .jsonl manifests', demandOption: true })
      .option('out-dir', { alias: 'o', type: 'string', demandOption: true, describe: 'folder receiving one <input name>/ folder per input' })
      .option('jobs', { alias: 'j', type: 'number', describe: 'parallel conversions (default and bound: min(cores, free memory / 1 GiB))' })
      .option('resume', { type: 'boolean', default: false, describe: 'skip complete outputs, redo incomplete or outdated ones' })
      .option('force', { type: 'boolean', default: false, describe: 'replace existing output folders' })
      .option('report', { type: 'string', describe: 'write one JSON line per input, then a summary line, to this file' })
      .option('shard', { type: 'string', describe: 'take share i of n (e.g. 2/4): a stable partition, no coordination needed' })
      .option('original-config', { type: 'string', describe: 'original LDM yaml for every input (per input: use a manifest)' })
      .option('extract-ema', { type: 'boolean', default: false, describe: 'take the UNet from the EMA weights' })
      .option('prediction-type', { choices: ['epsilon', 'v_prediction', 'v-prediction'] as const, describe: 'override the detected prediction type' })
      .option('image-size', { type: 'number', describe: 'override the detected training image size' })
      .option('upcast-attention', { type: 'boolean', describe: 'set upcast_attention in the UNet config' })
      .option('scheduler', { choices: SCHEDULER_KINDS, describe: 'scheduler written to scheduler/ (default pndm)' })
      .option('pipeline-class', { type: 'string', describe: 'pipeline class for model_index.json' })
      .option('dtype', { choices: ['fp32', 'fp16', 'bf16'] as const, describe: 'dtype of float weights (default fp32)' })
      .option('half', { type: 'boolean', default: false, describe: 'same as --dtype fp16' })
      .option('variant', { type: 'string', describe: 'weight file variant, e.g. fp16' })
      .option('max-shard-size', { type: 'string', describe: 'shard weight files above this size (default 10GB)' })
      .option('tokenizer', { type: 'string', describe: 'local tokenizer folder with vocab.json and merges.txt' })
      .option('allow-unknown-keys', { type: 'boolean', default: false, describe: 'convert even if some keys match no table' })
      .option('allow-unsafe-pickle', { type: 'boolean', default: false, describe: 'read pickles that import dangerous globals (never executed)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the results as JSON lines on stdout' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'no progress on stderr' })
      .conflicts('half', 'dtype')
      .example('$0 batch models/ --out-dir converted/ --jobs 2 --report report.jsonl', 'every checkpoint below models/')
      .example('$0 batch "models/**/*.safetensors" --out-dir out/ --resume --shard 1/4', 'this machine’s quarter, skipping finished ones')
      .example('$0 batch list.jsonl --out-dir out/', 'a manifest: {"input": "a.ckpt", "output": "a-fp16", "dtype": "fp16"} per line'),
  // A CkptError thrown here means the batch could not start (malformed manifest, --shard, report path).
  errorExitCode: 2,
  async run(args: BatchArgs, io: CliIO): Promise<number> {
    const view = batchRenderer(io, args.quiet || args.json);
    let report: BatchReport;
    try {
      report = await batch(args.inputs, { ...optionsFrom(args), onProgress: view.onProgress });
    } finally {
      view.stop();
    }
    if (args.json) {
      for (const r of report.results) io.stdout(JSON.stringify(r) + '\n');
      const { results: _r, ...summary } = report;
      io.stdout(JSON.stringify(summary) + '\n');
    } else {
      io.stdout(summaryLine(report, args.report));
    }
    return report.ok ? 0 : 1;
  },
};

function optionsFrom(a: BatchArgs): BatchOptions {
  const options: BatchOptions = {
    outDir: a.outDir,
    jobs: a.jobs,
    resume: a.resume,
    force: a.force,
    report: a.report,
    shard: a.shard,
    originalConfig: a.originalConfig,
    extractEma: a.extractEma,
    allowUnknownKeys: a.allowUnknownKeys,
    allowUnsafePickle: a.allowUnsafePickle,
    dtype: a.half ? 'fp16' : a.dtype,
    variant: a.variant,
    maxShardSize: a.maxShardSize,
    scheduler: a.scheduler,
    predictionType: a.predictionType === 'v-prediction' ? 'v_prediction' : a.predictionType,
    imageSize: a.imageSize,
    upcastAttention: a.upcastAttention,
    pipelineClass: a.pipelineClass,
    tokenizerDir: a.tokenizer,
  };
  // Unset flags stay out, so a manifest line's own options are not overridden by defaults.
  for (const key of Object.keys(options) as (keyof BatchOptions)[]) if (options[key] === undefined) delete options[key];
  return options;
}

function summaryLine(r: BatchReport, reportPath: string | undefined): string {
  const parts = [`${r.converted} converted`, `${r.skipped} skipped`, `${r.failed} failed`];
  if (r.cancelled) parts.push(`${r.cancelled} cancelled`);
  return `${parts.join(', ')} of ${r.total} (jobs ${r.jobs}${r.shard ? `, shard ${r.shard}` : ''})${reportPath ? `; report: ${reportPath}` : ''}\n`;
}

function display(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') ? rel : path;
}

/** One line per finished input; on a terminal an ora spinner shows the overall count meanwhile. */
function resultLine(r: BatchFileResult, done: number, total: number): string {
  const count = `[${done}/${total}]`;
  const secs = `${(r.durationMs / 1000).toFixed(1)} s`;
  switch (r.status) {
    case 'converted':
      return `${count} ok       ${display(r.input)} → ${display(r.output)} (${r.family}${r.redone ? `, redone: ${r.redone}` : ''}, ${secs})`;
    case 'skipped':
      return `${count} skipped  ${display(r.input)}: ${r.reason}`;
    case 'cancelled':
      return `${count} cancelled ${display(r.input)}`;
    default:
      // Messages of file errors start with the file's path already.
      return `${count} FAILED   ${display(r.input)}: error[${r.code}]: ${r.message?.startsWith(`${r.input}: `) ? r.message.slice(r.input.length + 2) : r.message}`;
  }
}

function batchRenderer(io: CliIO, quiet: boolean): { onProgress: (e: BatchProgressEvent) => void; stop: () => void } {
  let spinner: Ora | undefined;
  let total = 0;
  let done = 0;
  const running = new Map<number, string>();
  // One spinner line, cut to the terminal's width (a wrapped line would not be redrawn in place).
  const status = () => {
    const text = running.size ? `[${done}/${total}] converting ${[...running.values()].map(display).join(', ')}` : `[${done}/${total}]`;
    const width = (process.stderr.columns ?? 80) - 4;
    return text.length > width ? text.slice(0, Math.max(width - 1, 1)) + '…' : text;
  };
  // ora needs a terminal with a width: a pty reporting 0 columns makes it clear lines forever.
  const spin = io.interactive && (process.stderr.columns ?? 0) > 0;
  return {
    onProgress(e) {
      if (quiet) return;
      if (e.type === 'batch-start') {
        total = e.total;
        if (spin) spinner = ora({ stream: process.stderr, discardStdin: false }).start(`[0/${total}]`);
        else io.stderr(`${total} input${total === 1 ? '' : 's'}, ${e.jobs} job${e.jobs === 1 ? '' : 's'}${e.shard ? `, shard ${e.shard}` : ''}\n`);
      } else if (e.type === 'file-start') {
        running.set(e.index, e.input);
        if (spinner) spinner.text = status();
      } else if (e.type === 'file-done') {
        running.delete(e.index);
        done = e.done;
        const line = resultLine(e.result, e.done, e.total);
        if (spinner) {
          spinner.clear();
          io.stderr(line + '\n');
          spinner.text = status();
          spinner.render();
        } else io.stderr(line + '\n');
      } else if (e.type === 'file-progress' && e.event.type === 'warning') {
        spinner?.clear();
        io.stderr(`warning${e.event.code ? `[${e.event.code}]` : ''}: ${display(e.input)}: ${e.event.message}\n`);
        spinner?.render();
      }
    },
    stop() {
      spinner?.stop();
    },
  };
}
