/**
 * The convert command end to end through `main(argv, memoryIO())`: both command forms, the --json
 * summary, the --report key account, output folder safety (refusal, --force, no leftovers after a
 * failure), sharding, variants and float16, scheduler and prediction-type overrides, the pickle
 * and unknown-key refusals, and usage errors. Outputs are compared with the shared goldens.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { parsePythonJson } from '../../src/formats/python-json.js';
import { writeSafetensorsFile, type SafetensorsTensorData } from '../../src/formats/safetensors.js';
import { compareWithGolden } from '../helpers/compare-golden.js';
import { sharedFixture, torchFixture } from '../helpers/paths.js';

const SD1 = sharedFixture('cases/sd1/model.ckpt');
const SD1_EMA = sharedFixture('cases/sd1/model-fp16-ema.ckpt');
const SD1_YAML = sharedFixture('cases/sd1/original_config.yaml');
const SD1_GOLDEN = sharedFixture('golden/sd1');
const SD2 = sharedFixture('cases/sd2/model-fp16.ckpt');
const SD2_YAML = sharedFixture('cases/sd2/original_config.yaml');
const VAE = sharedFixture('cases/vae/vae.ckpt');
const VAE_GOLDEN = sharedFixture('golden/vae');
const BOGUS_KEY = 'model.diffusion_model.bogus.weight';

async function run(...argv: string[]) {
  const io = memoryIO();
  const status = await main(argv, io);
  return { status, out: io.out, err: io.err };
}

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-cli-convert-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let serial = 0;
/** A fresh empty folder for one test; the output goes to `<dir>/out`. */
async function fresh(): Promise<{ dir: string; out: string }> {
  const dir = join(work, `t${++serial}`);
  await mkdir(dir);
  return { dir, out: join(dir, 'out') };
}

/** After a failure: no output folder and no `out.partial-*` temp folder, the parent as it was. */
async function expectNothingLeft(dir: string, before: string[] = []): Promise<void> {
  expect((await readdir(dir)).sort()).toEqual([...before].sort());
}

/** JSON as Python writes it (DPMSolver's config holds `-Infinity`). */
async function readJson(path: string): Promise<Record<string, unknown>> {
  return parsePythonJson(await readFile(path, 'utf8'), path) as Record<string, unknown>;
}

async function sourceKeys(path: string): Promise<string[]> {
  const source = await openCheckpoint(path);
  try {
    return source.tensors.map((t) => t.name);
  } finally {
    await source.close();
  }
}

/** A safetensors copy of `path` with one extra tensor named `extra`. */
async function withExtraTensor(path: string, dest: string, extra: string): Promise<void> {
  const source = await openCheckpoint(path);
  try {
    const tensors: SafetensorsTensorData[] = [];
    for (const t of source.tensors) tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await source.readTensor(t.name) });
    tensors.push({ name: extra, dtype: 'F32', shape: [2, 2], data: new Uint8Array(16) });
    await writeSafetensorsFile(dest, tensors);
  } finally {
    await source.close();
  }
}

describe('command forms', () => {
  it('`ckpt2diffusers IN OUT` converts sd1 bit-exact', async () => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--quiet');
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    expect(r.out).toContain(`${out}: sd1`);
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
  });

  it('`ckpt2diffusers convert IN OUT` converts the standalone VAE bit-exact', async () => {
    const { out } = await fresh();
    const r = await run('convert', VAE, out, '-q');
    expect(r.status).toBe(0);
    const cmp = await compareWithGolden(VAE_GOLDEN, out, { input: 'vae.ckpt' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
  });
});

describe('--json and --report', () => {
  const evidenceShape = { what: expect.any(String), found: expect.any(String), implies: expect.any(String) };

  it('--json prints the documented summary', async () => {
    const { out } = await fresh();
    const r = await run(SD2, out, '--original-config', SD2_YAML, '--json');
    expect(r.status).toBe(0);
    expect(r.err).toBe('');
    const s = JSON.parse(r.out);
    expect(s).toMatchObject({ schema: 1, input: SD2, output: out, family: 'sd2', familyConfidence: 'high' });
    expect(s.familyEvidence.length).toBeGreaterThan(0);
    for (const e of s.familyEvidence) expect(e).toEqual(evidenceShape);
    expect(s.familyEvidence.map((e: { what: string }) => e.what)).toContain('keys cond_stage_model.model.*');
    // The case yaml says `parameterization: "v"`.
    expect(s.predictionType.value).toBe('v_prediction');
    expect(s.predictionType.evidence.length).toBeGreaterThan(0);
    for (const e of s.predictionType.evidence) expect(e).toEqual(evidenceShape);
    expect(s.components.map((c: { folder: string }) => c.folder).sort()).toEqual(['text_encoder', 'unet', 'vae']);
    for (const c of s.components) {
      expect(c).toEqual({ folder: expect.any(String), className: expect.any(String), tensors: expect.any(Number), bytes: expect.any(Number), files: expect.any(Array) });
      for (const f of c.files) expect(existsSync(join(out, f))).toBe(true);
    }
    expect(s.keys).toEqual({ mapped: expect.any(Number), dropped: expect.any(Number), unknown: [] });
    expect(s.keys.mapped).toBeGreaterThan(0);
  });

  it.each([
    ['without --extract-ema', []],
    ['with --extract-ema', ['--extract-ema']],
  ])('--report accounts for every source key exactly once (EMA file, %s)', async (_label, flags) => {
    const { dir, out } = await fresh();
    const report = join(dir, 'report.json');
    const r = await run(SD1_EMA, out, '--original-config', SD1_YAML, '--report', report, '-q', ...flags);
    expect(r.status).toBe(0);
    const rep = await readJson(report);
    const account = rep.account as { mapped: { source: string }[]; dropped: { source: string; reason: string }[]; unknown: string[] };
    const accounted = [...account.mapped.map((m) => m.source), ...account.dropped.map((d) => d.source), ...account.unknown];
    const keys = await sourceKeys(SD1_EMA);
    expect(new Set(accounted).size).toBe(accounted.length);
    expect([...accounted].sort()).toEqual([...keys].sort());
    expect(account.unknown).toEqual([]);
    expect(rep.keys).toEqual({ mapped: account.mapped.length, dropped: account.dropped.length, unknown: [] });
    for (const d of account.dropped) expect(d.reason).toEqual(expect.any(String));
    // The EMA copies are dropped unless extracted; then the plain UNet weights are.
    const emaMapped = account.mapped.filter((m) => m.source.startsWith('model_ema.')).length;
    if (flags.length) expect(emaMapped).toBeGreaterThan(0);
    else expect(emaMapped).toBe(0);
  });
});

describe('the output folder', () => {
  it('refuses an existing non-empty OUT with E_OUTPUT_EXISTS and leaves it untouched; --force replaces it', async () => {
    const { dir, out } = await fresh();
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'mine\n');
    const mtime = (await stat(join(out, 'keep.txt'))).mtimeMs;
    const r = await run(SD1, out, '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^error\[E_OUTPUT_EXISTS\]: /m);
    expect(await readdir(out)).toEqual(['keep.txt']);
    expect(await readFile(join(out, 'keep.txt'), 'utf8')).toBe('mine\n');
    expect((await stat(join(out, 'keep.txt'))).mtimeMs).toBe(mtime);
    await expectNothingLeft(dir, ['out']);

    const forced = await run(SD1, out, '--original-config', SD1_YAML, '--force', '-q');
    expect(forced.status).toBe(0);
    expect(existsSync(join(out, 'keep.txt'))).toBe(false);
    expect((await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' })).ok).toBe(true);
    await expectNothingLeft(dir, ['out']);
  });

  it('converts into an existing empty folder', async () => {
    const { out } = await fresh();
    await mkdir(out);
    expect((await run(VAE, out, '-q')).status).toBe(0);
    expect((await compareWithGolden(VAE_GOLDEN, out, { input: 'vae.ckpt' })).ok).toBe(true);
  });
});

/** Numbered shards `<base>-0000i-of-0000N.safetensors` and the index listing them, per component. */
async function expectShards(componentDir: string, base: string, variant?: string): Promise<void> {
  const files = (await readdir(componentDir)).filter((f) => f.includes('.safetensors'));
  const v = variant ? `.${variant}` : '';
  const indexName = variant ? `${base}.safetensors.index.${variant}.json` : `${base}.safetensors.index.json`;
  const shards = files.filter((f) => f !== indexName).sort();
  expect(files).toContain(indexName);
  expect(shards.length).toBeGreaterThan(1);
  const n = String(shards.length).padStart(5, '0');
  expect(shards).toEqual(shards.map((_, i) => `${base}${v}-${String(i + 1).padStart(5, '0')}-of-${n}.safetensors`));
  const index = await readJson(join(componentDir, indexName));
  expect(new Set(Object.values(index.weight_map as Record<string, string>))).toEqual(new Set(shards));
}

describe('weight files', () => {
  it('--max-shard-size 100KB writes numbered shards and an index per component, still bit-exact', async () => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--max-shard-size', '100KB', '--json');
    expect(r.status).toBe(0);
    await expectShards(join(out, 'unet'), 'diffusion_pytorch_model');
    await expectShards(join(out, 'vae'), 'diffusion_pytorch_model');
    await expectShards(join(out, 'text_encoder'), 'model');
    for (const c of JSON.parse(r.out).components) expect(c.files.length).toBeGreaterThan(2);
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
  });

  it('--variant fp16 --half writes *.fp16.safetensors float16 weights equal to the golden in half mode', async () => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--variant', 'fp16', '--half', '-q');
    expect(r.status).toBe(0);
    expect(await readdir(join(out, 'unet'))).toEqual(['config.json', 'diffusion_pytorch_model.fp16.safetensors']);
    expect(await readdir(join(out, 'vae'))).toEqual(['config.json', 'diffusion_pytorch_model.fp16.safetensors']);
    expect(await readdir(join(out, 'text_encoder'))).toEqual(['config.json', 'model.fp16.safetensors']);
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt', mode: 'half', variant: 'fp16' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
    // Without the variant the file names are what differs (compare.py has no variant option).
    const plain = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt', mode: 'half' });
    expect(plain.ok).toBe(false);
    expect(plain.differences).toContain("unet: weight file name ['diffusion_pytorch_model.fp16'] != golden ['diffusion_pytorch_model']");
  });

  it('--variant fp16 --half with --max-shard-size shards under variant names, followed through the variant index', async () => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--variant', 'fp16', '--half', '--max-shard-size', '100KB', '-q');
    expect(r.status).toBe(0);
    await expectShards(join(out, 'unet'), 'diffusion_pytorch_model', 'fp16');
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt', mode: 'half', variant: 'fp16' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
  });
});

describe('scheduler and prediction type', () => {
  it.each([
    ['pndm', 'PNDMScheduler'],
    ['ddim', 'DDIMScheduler'],
    ['euler', 'EulerDiscreteScheduler'],
    ['euler-ancestral', 'EulerAncestralDiscreteScheduler'],
    ['lms', 'LMSDiscreteScheduler'],
    ['heun', 'HeunDiscreteScheduler'],
    ['dpm', 'DPMSolverMultistepScheduler'],
  ])('--scheduler %s writes %s', async (kind, className) => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--scheduler', kind, '-q');
    expect(r.status).toBe(0);
    const cfg = await readJson(join(out, 'scheduler/scheduler_config.json'));
    expect(cfg._class_name).toBe(className);
    expect(cfg.prediction_type).toBe('epsilon');
    expect((await readJson(join(out, 'model_index.json'))).scheduler).toEqual(['diffusers', className]);
    // Only the scheduler differs from the golden (PNDM).
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' });
    expect(cmp.mismatches).toBe(0);
    expect(cmp.okComponents).toBe(kind === 'pndm' ? 5 : 4);
    for (const line of cmp.differences) expect(line).toMatch(/^(scheduler\/scheduler_config\.json|model_index\.json): /);
  });

  it.each(['v_prediction', 'v-prediction'])('--prediction-type %s overrides the detected epsilon', async (flag) => {
    const { out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--prediction-type', flag, '--json');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.predictionType.value).toBe('v_prediction');
    expect(s.predictionType.evidence[0]).toMatchObject({ what: 'flag --prediction-type', found: flag });
    expect((await readJson(join(out, 'scheduler/scheduler_config.json'))).prediction_type).toBe('v_prediction');
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' });
    expect(cmp.differences).toEqual([`scheduler/scheduler_config.json: 'prediction_type' differs: golden "epsilon" != product "v_prediction"`]);
  });

  it('--prediction-type epsilon overrides the yaml v-parameterization of sd2', async () => {
    const { out } = await fresh();
    const r = await run(SD2, out, '--original-config', SD2_YAML, '--prediction-type', 'epsilon', '-q');
    expect(r.status).toBe(0);
    expect((await readJson(join(out, 'scheduler/scheduler_config.json'))).prediction_type).toBe('epsilon');
  });
});

describe('refusals leave nothing behind', () => {
  it('a hostile pickle: E_UNSAFE_PICKLE, exit 1, no output folder', async () => {
    const { dir, out } = await fresh();
    const r = await run(torchFixture('hostile-system.pt'), out, '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^error\[E_UNSAFE_PICKLE\]: .*posix\.system/m);
    expect(r.out).toBe('');
    await expectNothingLeft(dir);
  });

  it('an unknown key: E_UNMATCHED_KEYS naming it; --allow-unknown-keys converts and lists it', async () => {
    const { dir, out } = await fresh();
    const input = join(dir, 'sd1-bogus.safetensors');
    await withExtraTensor(SD1, input, BOGUS_KEY);
    const r = await run(input, out, '--original-config', SD1_YAML, '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^error\[E_UNMATCHED_KEYS\]: /m);
    expect(r.err).toContain(BOGUS_KEY);
    await expectNothingLeft(dir, ['sd1-bogus.safetensors']);

    const ok = await run(input, out, '--original-config', SD1_YAML, '--allow-unknown-keys', '--json');
    expect(ok.status).toBe(0);
    const s = JSON.parse(ok.out);
    expect(s.keys.unknown).toEqual([BOGUS_KEY]);
    // Everything else converts as from the original checkpoint.
    const cmp = await compareWithGolden(SD1_GOLDEN, out, { input: 'model.ckpt' });
    expect(cmp.differences).toEqual([]);
    expect(cmp.ok).toBe(true);
  });

  it('--extract-ema on a file without EMA weights: a coded error, exit 1', async () => {
    const { dir, out } = await fresh();
    const r = await run(SD1, out, '--original-config', SD1_YAML, '--extract-ema', '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^error\[E_[A-Z_]+\]: .*EMA/m);
    await expectNothingLeft(dir);
  });

  it('--report into a folder that does not exist: a coded error, exit 1, no output folder', async () => {
    const { dir, out } = await fresh();
    const r = await run(VAE, out, '--report', join(dir, 'missing', 'report.json'), '-q');
    expect.soft(r.err).toMatch(/^error\[E_[A-Z_]+\]: /m);
    expect.soft(r.err).not.toMatch(/E_INTERNAL/);
    expect.soft(r.status).toBe(1);
    await expectNothingLeft(dir);
  });

  it.each([
    ['a missing input file', ['/nonexistent/model.ckpt'], 'E_IO'],
    ['a file in no checkpoint format', [sharedFixture('cases/sd1/case.json')], 'E_UNKNOWN_FORMAT'],
    ['a missing original config', [SD1, '--original-config', '/nonexistent/v1-inference.yaml'], 'E_IO'],
  ])('%s: a coded error, exit 1', async (_label, args, code) => {
    const { dir, out } = await fresh();
    const [input, ...flags] = args;
    const r = await run(input, out, ...flags, '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(new RegExp(`^error\\[${code}\\]: `, 'm'));
    await expectNothingLeft(dir);
  });
});

describe('usage errors exit 2', () => {
  it.each([
    ['no output folder', [SD1]],
    ['an unknown flag', [SD1, 'OUT', '--no-such-flag']],
    ['--half with --dtype', [SD1, 'OUT', '--half', '--dtype', 'fp32']],
    ['an unknown scheduler', [SD1, 'OUT', '--scheduler', 'nope']],
    ['an unknown prediction type', [SD1, 'OUT', '--prediction-type', 'sample']],
    ['an unknown dtype', [SD1, 'OUT', '--dtype', 'fp8']],
  ])('%s', async (_label, args) => {
    const { dir, out } = await fresh();
    const r = await run(...args.map((a) => (a === 'OUT' ? out : a)));
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/^error\[E_USAGE\]: /);
    await expectNothingLeft(dir);
  });

  // A flag value the converter rejects is a usage error as well (README, "Exit status": convert
  // exits 2 on a usage error): it is reported as E_USAGE, and the exit status has to say so too.
  it.each([
    ['an unparsable --max-shard-size', ['--max-shard-size', 'bogus']],
    ['a --variant that is not a file name part', ['--variant', 'a/b']],
    ['a --image-size that is not a number', ['--image-size', 'abc']],
    ['a negative --image-size', ['--image-size', '-5']],
  ])('%s', async (_label, flags) => {
    const { dir, out } = await fresh();
    const r = await run(SD1, out, ...flags, '-q');
    expect.soft(r.status).toBe(2);
    expect.soft(r.err).toMatch(/^error\[E_USAGE\]: /);
    await expectNothingLeft(dir);
  });
});
