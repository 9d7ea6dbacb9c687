/**
 * Test generation through ONNX graphs exported from a converted folder (sd1-pipe: the real CLIP
 * vocabulary, a VAE downsampling by 8).
 *
 * Goldens: the 24 Diffusers pipeline runs of golden/sd1-pipe/pipeline (16 txt2img with PNDM, DDIM,
 * Euler, Euler ancestral at guidance 7.5 and 1; 8 img2img at strength 0.6) replayed with the
 * onnxruntime-backed models instead of recorded network outputs. Measured on this machine (CPU EP,
 * float32 graphs) against Diffusers' float32 PyTorch run, max |difference| over all 24 runs:
 * final latents 7.0e-5 (euler_a, guidance 7.5; the latents reach |x| ~ 30, so ~2e-6 relative),
 * image 6.9e-6, text embeddings 1.8e-6, first UNet output 3.2e-6, img2img image latents 1.4e-6.
 * Bounds asserted: latents 2e-4, image 2e-5 (kernel choices differ between CPUs).
 *
 * Also: the export cache (reused, refreshed when a source file changes), `generate` and `verify`
 * through the CLI (PNG written, JSON timings per step and stage), img2img from a PNG, and the
 * refusals (--mask without --image, an SDXL folder whose components do not fit together).
 */
import { mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { generate } from '../../src/generate/pipeline.js';
import { decodePng, encodePng } from '../../src/generate/png.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { ensureOnnxFolder } from '../../src/verify/onnx-cache.js';
import { openOnnxModels, type OnnxPipelineModels } from '../../src/verify/onnx-models.js';
import { readFolderInfo, runGeneration } from '../../src/verify/generation.js';
import { goldenIndex, initImageOf, maxAbsDiff, readGoldenRun } from '../generate/golden-run.js';
import { sharedFixture } from '../helpers/paths.js';

const LATENTS_BOUND = 2e-4;
const IMAGE_BOUND = 2e-5;

const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-g-'));
const folder = join(tmp, 'sd1-pipe');
let models: OnnxPipelineModels;
let tokenizer: ClipTokenizer;

beforeAll(async () => {
  await convert(sharedFixture('cases/sd1-pipe/model-fp16.ckpt'), folder);
  const onnx = await ensureOnnxFolder(folder);
  expect(onnx.origin).toBe('exported');
  models = await openOnnxModels(onnx.dir);
  tokenizer = await ClipTokenizer.fromFolder(join(folder, 'tokenizer'));
});
afterAll(async () => {
  await models?.release();
  rmSync(tmp, { recursive: true, force: true });
});

describe('ONNX-backed engine vs the Diffusers pipeline goldens', () => {
  for (const run of goldenIndex().runs) {
    it(run.run, async () => {
      const golden = await readGoldenRun(run);
      const info = await readFolderInfo(folder);
      const calls = models.unetCalls;
      const result = await generate({
        prompt: run.args.prompt,
        negativePrompt: run.args.negative_prompt ?? undefined,
        tokenizer,
        scheduler: createScheduler(run.scheduler_config as SchedulerConfigJson, run.scheduler_class),
        models,
        steps: run.args.num_inference_steps,
        guidanceScale: run.args.guidance_scale,
        seed: run.args.seed,
        height: run.args.height,
        width: run.args.width,
        scalingFactor: info.scalingFactor,
        vaeScaleFactor: info.vaeScaleFactor,
        initImage: run.kind === 'img2img' ? initImageOf(golden) : undefined,
        strength: run.args.strength,
      });
      expect(models.unetCalls - calls).toBe(run.unet_calls);
      expect(result.inputIds.cond).toEqual(golden.get('input_ids.cond')?.data);
      const latents = maxAbsDiff(result.latents.data, golden.get('latents.final')?.data as Float32Array);
      const image = maxAbsDiff(result.image?.data ?? [], golden.get('image')?.data as Float32Array);
      expect(latents).toBeLessThanOrEqual(LATENTS_BOUND);
      expect(image).toBeLessThanOrEqual(IMAGE_BOUND);
    });
  }
});

describe('export cache', () => {
  it('is reused while the source files are unchanged and refreshed when one changes', async () => {
    const again = await ensureOnnxFolder(folder);
    expect(again.origin).toBe('cache');
    expect(again.dir).toBe(join(folder, '.ckpt2diffusers-onnx', 'fp32'));
    const later = new Date(Date.now() + 5000);
    utimesSync(join(folder, 'unet', 'config.json'), later, later);
    expect((await ensureOnnxFolder(folder)).origin).toBe('exported');
    expect((await ensureOnnxFolder(folder)).origin).toBe('cache');
    // A cache dir of the caller's choosing, keyed by the folder path.
    const elsewhere = await ensureOnnxFolder(folder, { cacheDir: join(tmp, 'cache') });
    expect(elsewhere.dir.startsWith(join(tmp, 'cache'))).toBe(true);
  });
});

describe('CLI', () => {
  it('generate writes a PNG and reports timings per step and stage', async () => {
    const io = memoryIO();
    const png = join(tmp, 'cat.png');
    const status = await main(['generate', folder, '--prompt', 'a photo of a cat', '--steps', '4', '--width', '128', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    expect(status).toBe(0);
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(r).toMatchObject({ mode: 'txt2img', width: 128, height: 128, steps: 4, scheduler: 'PNDMScheduler', predictionType: 'epsilon', provider: 'cpu' });
    expect(r.onnx.origin).toBe('cache');
    expect(r.timings.stepMs).toHaveLength(5); // PNDM runs its first step twice
    for (const k of ['loadMs', 'encodeTextMs', 'prepareMs', 'decodeMs', 'probeMs', 'totalMs']) expect(r.timings[k]).toBeGreaterThanOrEqual(0);
    expect(r.checks.map((c: { name: string }) => c.name)).toEqual(['finite', 'not-flat', 'latents', 'prediction-type']);
    expect(r.verdict).not.toBe('failed');
    const img = decodePng(await readFile(png));
    expect([img.width, img.height]).toEqual([128, 128]);
  });

  it('verify with --source and --prompt: weights and a generation, one verdict', async () => {
    const io = memoryIO();
    const status = await main(['verify', folder, '--source', sharedFixture('cases/sd1-pipe/model-fp16.ckpt'), '--prompt', 'a lighthouse', '--steps', '3', '--width', '64', '--scheduler', 'ddim'], io);
    expect(status).toBe(0);
    expect(io.out).toMatch(/weights ok/);
    expect(io.out).toMatch(/generation: txt2img 64x64, 3 steps DDIMScheduler/);
    expect(io.out).toMatch(/verdict: (clean|warnings)\n$/);
  });

  it('img2img from a PNG', async () => {
    const init = join(tmp, 'init.png');
    const data = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 13) & 255);
    await writeFile(init, encodePng({ data, width: 64, height: 64 }));
    const r = await runGeneration(folder, { prompt: 'a cat', steps: 4, initImage: init, strength: 0.5, probe: false });
    expect(r.report.mode).toBe('img2img');
    expect(r.report.timesteps).toEqual([501, 251, 1]); // int(4 * 0.5) = 2 steps; PNDM runs its first twice
    expect([r.report.width, r.report.height]).toEqual([64, 64]);
  });

  it('refuses --mask without --image, and an SDXL folder whose components cannot run together', async () => {
    const io = memoryIO();
    expect(await main(['generate', folder, '--prompt', 'x', '--mask', 'm.png'], io)).toBe(2);
    expect(io.err).toMatch(/^error\[E_USAGE\]: .*inpainting \(--mask\) needs the image to inpaint \(--image\)/);
    // The tiny sdxl-base case: two 32-wide text encoders for a UNet with cross_attention_dim 2048.
    const xl = join(tmp, 'sdxl');
    await convert(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), xl);
    const io2 = memoryIO();
    expect(await main(['generate', xl, '--prompt', 'x'], io2)).toBe(1);
    expect(io2.err).toMatch(/^error\[E_GENERATE_INCONSISTENT\]: .*32 \+ 32 = 64 features per token but the UNet's cross_attention_dim is 2048/);
  });

  it('verify without --source or --prompt is a usage error', async () => {
    const io = memoryIO();
    expect(await main(['verify', folder], io)).toBe(2);
    expect(io.err).toMatch(/nothing to verify/);
  });
});
