/**
 * Long-running fuzzer for the checkpoint readers (the suite in test/fuzz.test.ts runs a few
 * thousand mutants; this runs as many as asked).
 *
 *   npx tsx scripts/fuzz.ts --iterations 100000 --seed 1 [--fixture path ...] [--workers n]
 *                           [--hang-ms 5000] [--rss-bound-mb 1024] [--out .fuzz-out] [--mutant-seed n]
 *
 * Every mutant whose outcome breaks the reader contract (an exception other than CkptError, an
 * unknown code, a message not naming the file, a wrong byte count, a hang, a crash) is written to
 * the output folder with a .txt describing it; the exit code is 1 when there was any.
 * `--mutant-seed n` replays one reported mutant of each given fixture.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  analyzeFixture,
  buildMutant,
  defaultTargets,
  describeMutant,
  extractPickle,
  mutantSeed,
  REPO_ROOT,
  Rng,
  runFuzz,
  type FuzzFailure,
  type FuzzJob,
  type FuzzTarget,
} from '../test/helpers/mutate.js';

interface Options {
  iterations: number;
  seed: number;
  fixtures: string[];
  workers: number;
  hangMs: number;
  rssBoundMb: number;
  out: string;
  mutantSeed?: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      iterations: { type: 'string', default: '10000' },
      seed: { type: 'string', default: '1' },
      fixture: { type: 'string', multiple: true, default: [] },
      workers: { type: 'string', default: String(Math.max(1, availableParallelism() - 1)) },
      'hang-ms': { type: 'string', default: '5000' },
      'rss-bound-mb': { type: 'string', default: '1024' },
      out: { type: 'string', default: join(REPO_ROOT, '.fuzz-out') },
      'mutant-seed': { type: 'string' },
    },
  });
  return {
    iterations: positiveInt(values.iterations, '--iterations'),
    seed: positiveInt(values.seed, '--seed', true),
    fixtures: values.fixture.map((f) => resolve(f)),
    workers: positiveInt(values.workers, '--workers'),
    hangMs: positiveInt(values['hang-ms'], '--hang-ms'),
    rssBoundMb: positiveInt(values['rss-bound-mb'], '--rss-bound-mb'),
    out: resolve(values.out),
    mutantSeed: values['mutant-seed'] === undefined ? undefined : positiveInt(values['mutant-seed'], '--mutant-seed', true),
  };
}

function positiveInt(text: string, flag: string, zeroOk = false): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < (zeroOk ? 0 : 1)) throw new Error(`${flag} expects an integer, got "${text}"`);
  return n;
}

/** Given fixtures are opened, and their data.pkl scanned too when they have a stored one. */
function targetsFor(fixtures: string[]): FuzzTarget[] {
  if (fixtures.length === 0) return defaultTargets();
  return fixtures.flatMap((path) => {
    const model = analyzeFixture(path);
    const open: FuzzTarget = { path, mode: 'open', size: model.bytes.length };
    const pickle = extractPickle(model);
    return pickle ? [open, { path, mode: 'scan', size: pickle.length }] : [open];
  });
}

/**
 * Draws each mutant's target with weight ~ 1/sqrt(size): the small fixtures are cheap and dense
 * in structure, the multi-MB cases still get a steady share.
 */
function planJobs(targets: FuzzTarget[], opts: Options): FuzzJob[] {
  if (opts.mutantSeed !== undefined) {
    return targets.map((t) => ({ fixture: t.path, mode: t.mode, seed: opts.mutantSeed! }));
  }
  const weights = targets.map((t) => 1 / Math.sqrt(Math.max(t.size, 1024)));
  const total = weights.reduce((a, b) => a + b, 0);
  const rng = new Rng(opts.seed);
  const jobs: FuzzJob[] = [];
  for (let i = 0; i < opts.iterations; i++) {
    let roll = (rng.u32() / 0x1_0000_0000) * total;
    let k = 0;
    while (k < targets.length - 1 && roll >= weights[k]) roll -= weights[k++];
    jobs.push({ fixture: targets[k].path, mode: targets[k].mode, seed: mutantSeed(opts.seed, i) });
  }
  return jobs;
}

/** Writes the mutant and a description next to it; returns the mutant's path. */
function saveFailure(failure: FuzzFailure, out: string): string {
  mkdirSync(out, { recursive: true });
  const { job } = failure;
  const ext = job.mode === 'scan' ? '.pkl' : extname(job.fixture);
  const stem = join(out, `${basename(job.fixture)}-${job.mode}-seed${job.seed}`);
  const mutant = buildMutant(job);
  writeFileSync(`${stem}${ext}`, mutant.bytes);
  const replay = `npx tsx scripts/fuzz.ts --fixture ${job.fixture} --mutant-seed ${job.seed}`;
  const text = [`fixture: ${job.fixture}`, `mode: ${job.mode}`, `mutation: ${describeMutant(mutant)}`, `problem: ${failure.problem}`, `replay: ${replay}`, ''];
  writeFileSync(`${stem}.txt`, text.join('\n'));
  return `${stem}${ext}`;
}

function progressLine(done: number, total: number, failures: number, started: number): string {
  const seconds = (Date.now() - started) / 1000;
  const rss = Math.round(process.memoryUsage().rss / 2 ** 20);
  return `${done}/${total} mutants, ${failures} failure(s), ${(done / Math.max(seconds, 0.001)).toFixed(0)}/s, rss ${rss} MiB`;
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const jobs = planJobs(targetsFor(opts.fixtures), opts);
  console.log(`fuzzing: ${jobs.length} mutants, seed ${opts.seed}, ${opts.workers} worker(s), output ${opts.out}`);
  const started = Date.now();
  let failures = 0;
  let lastReport = started;
  const result = await runFuzz(jobs, {
    workers: opts.workers,
    hangMs: opts.hangMs,
    rssGrowthBound: opts.rssBoundMb * 2 ** 20,
    onResult: (_job, failure, done) => {
      if (failure) {
        failures++;
        const saved = saveFailure(failure, opts.out);
        console.log(`FAIL ${failure.job.fixture} [${failure.job.mode}] ${failure.description}\n  ${failure.problem}\n  saved ${saved}`);
      }
      if (Date.now() - lastReport > 2000 || done === jobs.length) {
        lastReport = Date.now();
        console.log(progressLine(done, jobs.length, failures, started));
      }
    },
  });
  const growth = Math.round(result.peakRssGrowth / 2 ** 20);
  console.log(`done: ${result.count} mutants in ${(result.elapsedMs / 1000).toFixed(1)} s, ${result.failures.length} failure(s), peak rss growth ${growth} MiB`);
  const outcomes = Object.entries(result.outcomes).sort((a, b) => b[1] - a[1]);
  console.log(`outcomes: ${outcomes.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  return result.failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(2);
  },
);
