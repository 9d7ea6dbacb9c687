/**
 * SDXL img2img through the ONNX-backed models and the `generate` command: the refiner
 * (StableDiffusionXLImg2ImgPipeline, text_encoder_2 alone, requires_aesthetics_score) and the base
 * layout with --image.
 *
 * The tiny fixtures cannot run as they are (embedding tables of 64 / 256 tokens for CLIP ids up
 * to 49407; the base case's text encoders give 64 features for a 2048-wide cross-attention; the
 * refiner's text_embeds are 32 wide where the ONNX UNet export reads the standard 1280), so the
 * runs use checkpoints derived from them as test/verify/sdxl.test.ts does: token embedding tables
 * repeated to 49408 rows; for the base, the UNet's cross-attention K/V projections cut to their
 * first 64 input features; for the refiner, text_projection widened to 1280 outputs and the
 * UNet's add_embedding input widened to 1280 text + 5 x 256 time-id features, the new columns
 * zero (the same function on the original 32 features). Everything else is the fixtures' weights.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { decodePng, encodePng } from '../../src/generate/png.js';
import type { RgbImage } from '../../src/generate/pipeline.js';
import { readFolderInfo, runGeneration } from '../../src/verify/generation.js';
import { sharedFixture } from '../helpers/paths.js';
import { elementBytes, rewriteCheckpoint, sliceCols, tileRows } from './checkpoint-edit.js';

const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-xl-i2i-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function gradient(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      data[p] = (x * 255) / (width - 1);
      data[p + 1] = (y * 255) / (height - 1);
      data[p + 2] = ((x + y) * 7) % 256;
    }
  }
  return { data, width, height };
}

/** A [rows, cols] tensor with `extra` zero columns inserted before column `at`. */
function insertZeroCols(bytes: Uint8Array, rows: number, cols: number, at: number, extra: number, eb: number): Uint8Array {
  const newCols = cols + extra;
  const out = new Uint8Array(rows * newCols * eb);
  for (let r = 0; r < rows; r++) {
    out.set(bytes.subarray(r * cols * eb, (r * cols + at) * eb), r * newCols * eb);
    out.set(bytes.subarray((r * cols + at) * eb, (r + 1) * cols * eb), (r * newCols + at + extra) * eb);
  }
  return out;
}

async function derive(src: string, dst: string, kind: 'base' | 'refiner'): Promise<void> {
  await rewriteCheckpoint(src, dst, (name, dtype, shape, bytes) => {
    const eb = elementBytes(dtype);
    if (name.endsWith('token_embedding.weight')) return { shape: [49408, shape[1]], data: tileRows(bytes, shape[0], shape[1], 49408, eb) };
    if (kind === 'base' && /attn2\.to_[kv]\.weight$/.test(name)) return { shape: [shape[0], 64], data: sliceCols(bytes, shape[0], shape[1], 64, eb) };
    if (kind === 'refiner' && name === 'conditioner.embedders.0.model.text_projection') {
      return { shape: [shape[0], 1280], data: insertZeroCols(bytes, shape[0], shape[1], shape[1], 1280 - shape[1], eb) };
    }
    if (kind === 'refiner' && name === 'model.diffusion_model.label_emb.0.0.weight') {
      const text = shape[1] - 5 * 256;
      return { shape: [shape[0], 1280 + 5 * 256], data: insertZeroCols(bytes, shape[0], shape[1], text, 1280 - text, eb) };
    }
    return undefined;
  });
}

async function runCli(folder: string, extra: string[]): Promise<{ status: number; r: Record<string, any>; png: string }> {
  const init = join(tmp, 'init.png');
  if (!existsSync(init)) await writeFile(init, encodePng(gradient(64, 64)));
  const png = join(folder + '.png');
  const io = memoryIO();
  const status = await main(['generate', folder, '--prompt', 'a lighthouse', '--image', init, '--strength', '0.6', '--steps', '5', '--save', png, '--json', ...extra], io);
  expect(io.err).toBe('');
  return { status, r: JSON.parse(io.out) as Record<string, any>, png };
}

async function expectGoodRun(status: number, r: Record<string, any>, png: string): Promise<void> {
  expect(status).toBe(0);
  expect(r).toMatchObject({ family: 'sdxl', mode: 'img2img', strength: 0.6, width: 64, height: 64, scheduler: 'EulerDiscreteScheduler' });
  // 5 steps, strength 0.6: int(5 * 0.6) = 3 of the leading schedule [801, 601, 401, 201, 1].
  expect(r.timesteps).toEqual([401, 201, 1]);
  expect(r.verdict).not.toBe('failed');
  for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
  const img = decodePng(await readFile(png));
  expect([img.width, img.height]).toEqual([64, 64]);
}

describe('SDXL img2img through ONNX', () => {
  it('the refiner: text_encoder_2 alone, aesthetic-score time ids, generate --image --strength 0.6 writes a PNG', async () => {
    const ckpt = join(tmp, 'refiner.safetensors');
    await derive('fixtures/families/sdxl-refiner.safetensors', ckpt, 'refiner');
    const folder = join(tmp, 'refiner');
    await convert(ckpt, folder);
    const info = await readFolderInfo(folder);
    expect(info.pipelineClass).toBe('StableDiffusionXLImg2ImgPipeline');
    expect(info.xl).toMatchObject({ hasTextEncoder: false, requiresAestheticsScore: true, forceZerosForEmptyPrompt: false });
    // A refiner runs img2img only.
    await expect(runGeneration(folder, { prompt: 'x', steps: 1, width: 64, height: 64, probe: false })).rejects.toMatchObject({ code: 'E_USAGE' });

    const { status, r, png } = await runCli(folder, []);
    await expectGoodRun(status, r, png);
    expect(r.pipelineClass).toBe('StableDiffusionXLImg2ImgPipeline');

    // What the ONNX UNet was given: tokenizer_2 ids only, encoded negatives, 5 time ids per row.
    const traced: Record<string, number[]> = {};
    const run = await runGeneration(folder, {
      prompt: 'a lighthouse',
      initImage: gradient(64, 64),
      strength: 0.6,
      steps: 2,
      probe: false,
      trace: (name, v) => {
        if (name.startsWith('input_ids') || name.startsWith('add_time_ids') || name === 'timesteps') traced[name] = Array.from('data' in v ? v.data : v);
      },
    });
    expect(Object.keys(traced).filter((k) => k.startsWith('input_ids')).sort()).toEqual(['input_ids_2.cond', 'input_ids_2.uncond']);
    expect(traced['add_time_ids.cond']).toEqual([64, 64, 0, 0, 6]);
    expect(traced['add_time_ids.uncond']).toEqual([64, 64, 0, 0, 2.5]);
    expect(traced.timesteps).toEqual([1]);
    expect(run.report.verdict).not.toBe('failed');
    const onnx = join(folder, '.ckpt2diffusers-onnx', 'fp32');
    expect(existsSync(join(onnx, 'text_encoder_2', 'model.onnx'))).toBe(true);
    expect(existsSync(join(onnx, 'vae_encoder', 'model.onnx'))).toBe(true);
    expect(existsSync(join(onnx, 'text_encoder'))).toBe(false);
  });

  it('the base layout with --image: 6 time ids, both text encoders', async () => {
    const ckpt = join(tmp, 'base.safetensors');
    await derive(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), ckpt, 'base');
    const folder = join(tmp, 'base');
    await convert(ckpt, folder);
    const info = await readFolderInfo(folder);
    expect(info.xl).toMatchObject({ hasTextEncoder: true, requiresAestheticsScore: false });
    const { status, r, png } = await runCli(folder, []);
    await expectGoodRun(status, r, png);
    expect(r.pipelineClass).toBe('StableDiffusionXLPipeline');
  });

  it('the base layout with --mask: SDXL inpainting by latent blending (4-channel UNet)', async () => {
    const folder = join(tmp, 'base');
    const init = join(tmp, 'init.png');
    const run = await runGeneration(folder, { prompt: 'x', initImage: init, mask: init, steps: 2, probe: false });
    expect(run.report).toMatchObject({ family: 'sdxl', mode: 'inpaint', strength: 0.9999, inpaint: { unetInChannels: 4, method: 'latent-blend' } });
    expect(run.report.timesteps).toHaveLength(1);
    expect(run.report.verdict).not.toBe('failed');
  });
});
