/**
 * Full-size test generation timing (run by hand): a synthetic SD 1.5 checkpoint (every real key and
 * shape, float32) is converted, its weights are checked with `verifyWeights` against it, then
 * redrawn with fan-in scaling (random, but with activations in the range trained weights give),
 * and a 512×512 txt2img with classifier-free guidance (UNet batch 2) runs through the same engine
 * as `ckpt2diffusers verify --prompt` (ONNX export into the folder's cache, onnxruntime CPU).
 *
 *   npx tsx scripts/verify-full.ts                     # prepare (cached), verify weights, generate
 *   npx tsx scripts/verify-full.ts --steps 4 --dir /mnt/fast/verify-full
 *
 * Prints one JSON line per phase and a summary with the time per denoising step.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { convert } from '../src/convert.js';
import { planSafetensorsLayout, SafetensorsWriter } from '../src/formats/safetensors.js';
import { openComponentWeights } from '../src/onnx/weights.js';
import { SD15_LAYOUT } from '../src/testing/ldm-layout.js';
import { writeSyntheticSafetensors } from '../src/testing/synthetic.js';
import { runGeneration } from '../src/verify/generation.js';
import { verifyWeights } from '../src/verify/weights.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const DIR = resolve(arg('dir', join(tmpdir(), 'ckpt2diffusers-verify-full')));
const STEPS = Number(arg('steps', '3'));
const SIZE = Number(arg('size', '512'));
const FOLDER = join(DIR, 'diffusers');
const MiB = 1024 * 1024;

function log(phase: string, data: Record<string, unknown>): void {
  console.log(JSON.stringify({ phase, ...data, rssMiB: Math.round(process.memoryUsage().rss / MiB) }));
}

/** xorshift32 values in [-1, 1). */
function fill(out: Float32Array, seed: number, scale: number, offset: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = offset + ((x >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
}

/**
 * Rewrites a component's float32 weights in place: matrices and kernels uniform with variance
 * 1/fan_in, 1-D weights (norm scales) 1 ± 0.1, biases ± 0.02.
 */
async function redraw(componentDir: string): Promise<void> {
  const w = await openComponentWeights(componentDir);
  const file = w.files[0];
  const specs = w.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
  await w.close();
  const plan = planSafetensorsLayout(specs, { format: 'pt' });
  const tmp = `${file}.redraw`;
  const writer = await SafetensorsWriter.create(tmp, plan);
  let seed = 17;
  for (const t of plan.tensors) {
    const n = t.shape.reduce((p, d) => p * d, 1);
    const fanIn = t.shape.length >= 2 ? t.shape.slice(1).reduce((p, d) => p * d, 1) : 0;
    const [offset, scale] = fanIn > 0 ? [0, Math.sqrt(3 / fanIn)] : t.name.endsWith('.weight') ? [1, 0.1] : [0, 0.02];
    const s = seed++ * 104729;
    async function* chunks(): AsyncIterable<Uint8Array> {
      const step = 1 << 20;
      for (let i = 0; i < n; i += step) {
        const v = new Float32Array(Math.min(step, n - i));
        fill(v, s + i, scale, offset);
        yield new Uint8Array(v.buffer);
      }
    }
    await writer.writeTensor(t.name, chunks());
  }
  await writer.finish();
  renameSync(tmp, file);
}

async function prepare(): Promise<void> {
  if (existsSync(join(FOLDER, 'model_index.json'))) {
    log('prepare', { cached: FOLDER });
    return;
  }
  mkdirSync(DIR, { recursive: true });
  const ckpt = join(DIR, 'sd15-synthetic.safetensors');
  let t = performance.now();
  const bytes = await writeSyntheticSafetensors(ckpt, SD15_LAYOUT, 'F32');
  log('synthetic checkpoint', { MiB: Math.round(bytes / MiB), s: +((performance.now() - t) / 1000).toFixed(1) });
  t = performance.now();
  await convert(ckpt, FOLDER, { force: true });
  log('convert', { s: +((performance.now() - t) / 1000).toFixed(1) });
  t = performance.now();
  const report = await verifyWeights(FOLDER, ckpt);
  log('verify weights', {
    ok: report.ok,
    problems: report.problems,
    tensors: report.components.reduce((n, c) => n + c.matched, 0),
    MiB: Math.round(report.components.reduce((n, c) => n + c.bytes, 0) / MiB),
    s: +((performance.now() - t) / 1000).toFixed(1),
  });
  rmSync(ckpt, { force: true });
  t = performance.now();
  for (const c of ['unet', 'vae', 'text_encoder']) await redraw(join(FOLDER, c));
  log('redraw weights', { s: +((performance.now() - t) / 1000).toFixed(1) });
}

await prepare();
let last = performance.now();
const run = await runGeneration(FOLDER, {
  prompt: 'a photograph of an astronaut riding a horse',
  steps: STEPS,
  guidance: 7.5,
  seed: 42,
  width: SIZE,
  height: SIZE,
  save: join(DIR, 'image.png'),
  onProgress: (e) => {
    if (e.type === 'phase') {
      log(e.phase, { detail: e.detail, sinceLastS: +((performance.now() - last) / 1000).toFixed(1) });
      last = performance.now();
    }
  },
  onStep: (e) => log('step', { step: e.step + 1, of: e.total, timestep: e.timestep, s: +(e.ms / 1000).toFixed(2) }),
});
const r = run.report;
const after = r.timings.stepMs.slice(1);
console.log(
  JSON.stringify(
    {
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memGiB: Math.round(totalmem() / 1024 ** 3) },
      size: `${r.width}x${r.height}`,
      steps: r.steps,
      scheduler: r.scheduler,
      onnx: r.onnx,
      exportS: +(r.timings.exportMs / 1000).toFixed(1),
      loadS: +(r.timings.loadMs / 1000).toFixed(1),
      encodeTextS: +(r.timings.encodeTextMs / 1000).toFixed(2),
      stepS: r.timings.stepMs.map((ms) => +(ms / 1000).toFixed(2)),
      meanStepS: +(r.timings.meanStepMs / 1000).toFixed(2),
      meanStepAfterFirstS: after.length ? +(after.reduce((a, b) => a + b, 0) / after.length / 1000).toFixed(2) : null,
      decodeS: +(r.timings.decodeMs / 1000).toFixed(2),
      probeS: +(r.timings.probeMs / 1000).toFixed(2),
      totalS: +(r.timings.totalMs / 1000).toFixed(1),
      verdict: r.verdict,
      checks: r.checks.map((c) => `${c.status} ${c.name}: ${c.message}`),
      image: r.image,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    },
    null,
    1,
  ),
);
