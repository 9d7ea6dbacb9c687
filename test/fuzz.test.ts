/**
 * Fuzzing the readers: a few thousand seeded mutants of the real fixtures (torch zip and legacy
 * files, the shared SD checkpoints, safetensors, and data.pkl alone for the pickle scanner).
 *
 * Contract under test: for every mutant, openCheckpoint (allowUnsafePickle false and true) plus a
 * readChunks pass over every tensor either succeeds with each tensor yielding exactly
 * TensorInfo.byteLength bytes, or throws a CkptError with a known code and a message naming the
 * file; scanPickleGlobals obeys the same rule. No other exception, no hang, no runaway memory.
 *
 * Mutants run in worker threads (test/helpers/mutate.ts): a parser stuck in a synchronous loop
 * would also block any in-thread timer, so the main thread terminates a worker silent for
 * HANG_MS and reports its mutant as a hang. Seeds are fixed, so every failure message carries a
 * reproduction: fixture, seed, strategy and offset, and the command replaying it.
 *
 * The long-running version is scripts/fuzz.ts.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  analyzeFixture,
  checkOpen,
  defaultTargets,
  describeMutant,
  modelFor,
  mutantSeed,
  mutateFixture,
  REPO_ROOT,
  runFuzz,
  STRATEGIES,
  torchFixturePath,
  validTorchFixtures,
  walkPickle,
  walkPickles,
  type FuzzFailure,
  type FuzzJob,
  type FuzzRunResult,
  type FuzzTarget,
} from './helpers/mutate.js';

const BASE_SEED = 0x5eed2024;
const HANG_MS = 5_000;
const WORKERS = 2;
/** Unbounded allocations show up as RSS growth; real reads of these fixtures stay far below. */
const RSS_GROWTH_BOUND = 1024 * 1024 * 1024;

/**
 * Mutants per target: the KB-sized torch fixtures are cheap and dense in structure, the MB-sized
 * shared cases cost a file write and a full read each, so they get fewer.
 */
function iterationsFor(t: FuzzTarget): number {
  if (t.mode === 'scan') return t.size < 8 * 1024 ? 60 : 30;
  if (t.size < 8 * 1024) return t.path.endsWith('.safetensors') ? 40 : 120;
  if (t.size < 1024 * 1024) return 45;
  if (t.size < 3 * 1024 * 1024) return 25;
  return 15;
}

const targets = defaultTargets();

/** Job seeds are numbered across the whole plan, so each (fixture, seed) pair is unique. */
function planJobs(): FuzzJob[] {
  const jobs: FuzzJob[] = [];
  for (const t of targets) {
    for (let i = 0; i < iterationsFor(t); i++) {
      jobs.push({ fixture: t.path, mode: t.mode, seed: mutantSeed(BASE_SEED, jobs.length) });
    }
  }
  return jobs;
}

const jobs = planJobs();

function rel(path: string): string {
  return relative(REPO_ROOT, path);
}

function formatFailure(f: FuzzFailure): string {
  const replay = `npx tsx scripts/fuzz.ts --fixture ${rel(f.job.fixture)} --mutant-seed ${f.job.seed}`;
  return `${rel(f.job.fixture)} [${f.job.mode}] ${f.description}\n  -> ${f.problem}\n  replay: ${replay}`;
}

describe('mutator', () => {
  const fixture = torchFixturePath('lightning.ckpt');

  it('is deterministic: the same seed gives the same bytes and description', () => {
    const model = analyzeFixture(fixture);
    for (let seed = 0; seed < 50; seed++) {
      const a = mutateFixture(model, seed);
      const b = mutateFixture(analyzeFixture(fixture), seed);
      expect(describeMutant(a)).toBe(describeMutant(b));
      expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), `seed ${seed}`).toBe(true);
    }
  });

  it('never writes through to the fixture it mutates', () => {
    const original = readFileSync(fixture);
    const model = analyzeFixture(fixture);
    for (const strategy of STRATEGIES) for (let seed = 0; seed < 20; seed++) mutateFixture(model, seed, strategy);
    expect(Buffer.from(model.bytes).equals(original)).toBe(true);
  });

  it('finds data.pkl and walks its opcodes to STOP in every stored torch zip fixture', () => {
    for (const name of validTorchFixtures()) {
      const model = analyzeFixture(torchFixturePath(name));
      if (model.kind !== 'zip' || !model.zipPickle) continue;
      const ops = walkPickle(model.bytes, model.zipPickle.start, model.zipPickle.end);
      expect(ops.at(-1)?.code, name).toBe(0x2e);
      expect(ops.at(-1)!.pos + 1, name).toBe(model.zipPickle.end);
    }
  });

  it('walks the five back-to-back pickles of a legacy file', () => {
    const model = analyzeFixture(torchFixturePath('legacy-dtypes.pt'));
    const ops = walkPickles(model.bytes, model.pickle!.start, model.pickle!.end);
    expect(ops.filter((o) => o.code === 0x2e)).toHaveLength(5);
  });

  it('keeps pickle edits inside data.pkl and re-signs its CRC', () => {
    const model = analyzeFixture(fixture);
    const pickle = model.zipPickle!;
    for (let seed = 0; seed < 30; seed++) {
      const m = mutateFixture(model, seed, 'pickle-opcode');
      expect(m.bytes.length).toBe(model.bytes.length);
      const outside = (i: number): boolean => (i < pickle.start || i >= pickle.end) && (i < pickle.crcOffset || i >= pickle.crcOffset + 4);
      const changed = [...m.bytes.keys()].filter((i) => m.bytes[i] !== model.bytes[i] && outside(i));
      expect(changed, describeMutant(m)).toEqual([]);
    }
  });
});

describe(`fuzz: ${jobs.length} mutants of ${targets.length} targets (seed 0x${BASE_SEED.toString(16)})`, () => {
  let result: FuzzRunResult;

  beforeAll(async () => {
    result = await runFuzz(jobs, { workers: WORKERS, hangMs: HANG_MS, rssGrowthBound: RSS_GROWTH_BOUND });
  }, 300_000);

  it('ran every mutant', () => {
    expect(result.count).toBe(jobs.length);
  });

  // A mutator that only produced unrecognisable files would pass vacuously: demand both clean
  // reads and a wide spread of error codes, from the zip, pickle, tensor and safetensors layers.
  it('reaches deep into the readers: some mutants read cleanly, many distinct codes', () => {
    const codes = Object.keys(result.outcomes).filter((k) => k.startsWith('E_'));
    expect(result.outcomes.ok ?? 0, JSON.stringify(result.outcomes)).toBeGreaterThan(100);
    expect(codes.length, JSON.stringify(result.outcomes)).toBeGreaterThanOrEqual(25);
    for (const prefix of ['E_ZIP_', 'E_PICKLE_', 'E_TENSOR_', 'E_SAFETENSORS_', 'E_LEGACY_']) {
      expect(codes.some((c) => c.startsWith(prefix)), `no ${prefix}* outcome`).toBe(true);
    }
  });

  it(`keeps RSS growth under ${RSS_GROWTH_BOUND / 2 ** 20} MiB`, () => {
    expect(result.peakRssGrowth).toBeLessThan(RSS_GROWTH_BOUND);
  });

  for (const t of targets) {
    const what = t.mode === 'open' ? 'openCheckpoint + readChunks' : 'scanPickleGlobals on data.pkl';
    it(`${rel(t.path)} [${t.mode}]: ${iterationsFor(t)} mutants, ${what}: success or a CkptError naming the file`, () => {
      const mine = result.failures.filter((f) => f.job.fixture === t.path && f.job.mode === t.mode);
      expect(mine.map(formatFailure), mine.map(formatFailure).join('\n')).toEqual([]);
    });
  }
});

// Checks of the harness on known-good inputs: an unmutated fixture must read cleanly, so a broken
// harness cannot hide behind "every mutant errored".
describe('harness', () => {
  it('reads the unmutated fixtures without error', async () => {
    const clean = targets.filter((t) => t.mode === 'open' && t.size < 8 * 1024).map((t) => modelFor(t.path, 'open'));
    expect(clean.length).toBeGreaterThan(10);
    for (const model of clean) expect(await checkOpen(model.path, true), model.path).toEqual({ outcome: 'ok', problem: undefined });
  });
});
