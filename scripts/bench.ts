/**
 * Conversion speed and peak memory on full-size synthetic checkpoints (every real key and shape,
 * deterministic pseudo-random weights), side by side with `cp` of the same file to the same disk:
 * the physical floor of reading and writing the bytes.
 *
 *   npm run bench                          # all cases
 *   npm run bench -- --cases sd15,sd15-st  # some cases
 *   npm run bench -- --dir /mnt/fast/bench # where inputs are cached and outputs written
 *
 * Inputs are generated once and cached in the bench folder (default ~/.cache/ckpt2diffusers-bench,
 * or $CKPT2DIFFUSERS_BENCH_DIR). Each conversion runs the built CLI in a child process under
 * /usr/bin/time, which reports its peak resident memory. Writers fsync their files, so the `cp`
 * floor is timed with a `sync` of the copy as well.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import * as layouts from '../src/testing/ldm-layout.js';
import type { CheckpointLayout, SgmCheckpointLayout } from '../src/testing/ldm-layout.js';
import { writeSyntheticCkpt, writeSyntheticSafetensors } from '../src/testing/synthetic.js';

interface BenchCase {
  id: string;
  file: string;
  describe: string;
  make: (path: string) => Promise<number>;
  /** Conversions to time: extra CLI flags per row. */
  runs: { label: string; flags: string[] }[];
}

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'ckpt2diffusers.js');

function layout(name: string): CheckpointLayout | SgmCheckpointLayout | undefined {
  return (layouts as Record<string, unknown>)[name] as CheckpointLayout | SgmCheckpointLayout | undefined;
}

function cases(): BenchCase[] {
  const sd15 = layouts.SD15_LAYOUT;
  const list: BenchCase[] = [
    {
      id: 'sd15',
      file: 'sd15-fp32.ckpt',
      describe: 'SD 1.5 .ckpt, fp32, no EMA',
      make: (p) => writeSyntheticCkpt(p, sd15, 'F32'),
      runs: [
        { label: 'convert → fp32', flags: [] },
        { label: 'convert → fp16', flags: ['--half'] },
      ],
    },
    {
      id: 'sd15-ema',
      file: 'sd15-fp32-ema.ckpt',
      describe: 'SD 1.5 .ckpt, fp32, with EMA',
      make: (p) => writeSyntheticCkpt(p, { ...sd15, ema: true }, 'F32'),
      runs: [{ label: 'convert --extract-ema → fp32', flags: ['--extract-ema'] }],
    },
    {
      id: 'sd15-st',
      file: 'sd15-fp16.safetensors',
      describe: 'SD 1.5 .safetensors, fp16',
      make: (p) => writeSyntheticSafetensors(p, sd15, 'F16'),
      runs: [
        { label: 'convert → fp32', flags: [] },
        { label: 'convert → fp16', flags: ['--half'] },
      ],
    },
  ];
  const sdxl = layout('SDXL_BASE_LAYOUT');
  if (sdxl) {
    list.push({
      id: 'sdxl',
      file: 'sdxl-base-fp16.safetensors',
      describe: 'SDXL base .safetensors, fp16',
      make: (p) => writeSyntheticSafetensors(p, sdxl, 'F16'),
      runs: [
        { label: 'convert → fp16', flags: ['--half'] },
        { label: 'convert → fp32', flags: [] },
      ],
    });
  }
  return list;
}

interface Timed {
  seconds: number;
  maxRssMB: number;
}

/** Runs a command under GNU time; returns wall seconds and peak RSS. */
function timed(cmd: string, args: string[]): Timed {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const last = r.stderr.trim().split('\n').pop()!.split(' ');
  return { seconds: Number(last[0]), maxRssMB: Number(last[1]) / 1024 };
}

function dropCaches(): boolean {
  try {
    execFileSync('sh', ['-c', 'sync && echo 3 > /proc/sys/vm/drop_caches'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const dir = resolve(arg('dir') ?? process.env.CKPT2DIFFUSERS_BENCH_DIR ?? join(homedir(), '.cache', 'ckpt2diffusers-bench'));
  const wanted = arg('cases')?.split(',');
  const cold = process.argv.includes('--cold');
  mkdirSync(dir, { recursive: true });
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  const rows: string[][] = [];
  for (const c of cases().filter((c) => !wanted || wanted.includes(c.id))) {
    const input = join(dir, c.file);
    if (!existsSync(input)) {
      process.stderr.write(`generating ${input} ...\n`);
      await c.make(input);
    }
    const bytes = statSync(input).size;
    const copy = join(dir, 'copy.tmp');
    const mb = bytes / 1e6;
    if (cold) dropCaches();
    const floor = timed('sh', ['-c', `cp "${input}" "${copy}" && sync "${copy}"`]);
    rmSync(copy, { force: true });
    const push = (r: string[]) => {
      rows.push(r);
      process.stderr.write(`${r.join(' | ')}\n`);
    };
    push([c.describe, `cp (floor), ${(bytes / 1e9).toFixed(2)} GB`, floor.seconds.toFixed(1), '1.00', (mb / floor.seconds).toFixed(0), floor.maxRssMB.toFixed(0)]);
    for (const run of c.runs) {
      const out = join(dir, 'out');
      rmSync(out, { recursive: true, force: true });
      if (cold) dropCaches();
      const t = timed(process.execPath, [CLI, input, out, '--quiet', '--json', ...run.flags]);
      rmSync(out, { recursive: true, force: true });
      push(['', run.label, t.seconds.toFixed(1), (t.seconds / floor.seconds).toFixed(2), (mb / t.seconds).toFixed(0), t.maxRssMB.toFixed(0)]);
    }
  }
  const header = ['input', 'run', 'wall s', '× cp', 'MB/s (input)', 'peak RSS MB'];
  const line = (r: string[]) => `| ${r.join(' | ')} |`;
  process.stdout.write([line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n') + '\n');
  process.stdout.write(`\n(${cold ? 'page cache dropped before each run' : 'warm page cache'}; bench folder ${dir})\n`);
}

await main();
