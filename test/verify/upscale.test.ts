/**
 * The x4 upscaler through the ONNX-backed models and the CLI: the sd-x4-upscaler family fixture
 * converted (StableDiffusionUpscalePipeline: 7-channel UNet with num_class_embeds and
 * only_cross_attention, 3-level VAE with scaling_factor 0.08333, DDPM low_res_scheduler), then
 * `generate --image --noise-level`. Its token embedding table is smaller than the CLIP vocabulary
 * its tokenizer uses; the rows are repeated to 49408 (as test/verify/pix2pix-depth.test.ts does).
 * The converted configs say norm_num_groups 32 while the tiny fixture's UNet and VAE have 4 to 32
 * channels per level (torch's GroupNorm would refuse 32 groups over 16 channels); both configs are
 * set to 4 groups here, which divide every level, so the model is well defined (and the
 * prediction-type probe's 8 x 8 sample runs down to the 1 x 1 level).
 * No Diffusers golden exists for this pipeline: the checks are shapes, finiteness and the verdict.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { decodePng, encodePng } from '../../src/generate/png.js';
import { repoRoot } from '../helpers/paths.js';
import { elementBytes, rewriteCheckpoint, tileRows } from './checkpoint-edit.js';

const S = 16;
const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-x4-'));
const lowPng = join(tmp, 'low.png');
const folder = join(tmp, 'x4');
const low = { data: new Uint8Array(S * S * 3).map((_, i) => (i * 29 + (i >> 5)) & 255), width: S, height: S };

beforeAll(async () => {
  await writeFile(lowPng, encodePng(low));
  const ckpt = join(tmp, 'x4.ckpt');
  await rewriteCheckpoint(join(repoRoot, 'fixtures', 'families', 'sd-x4-upscaler.ckpt'), ckpt, (name, dtype, shape, bytes) => {
    if (!name.endsWith('token_embedding.weight') || shape[0] >= 49408) return undefined;
    return { shape: [49408, shape[1]], data: tileRows(bytes, shape[0], shape[1], 49408, elementBytes(dtype)) };
  });
  await convert(ckpt, folder);
  for (const part of ['unet', 'vae']) {
    const path = join(folder, part, 'config.json');
    const config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    await writeFile(path, JSON.stringify({ ...config, norm_num_groups: 4 }, null, 2));
  }
}, 60_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('x4 upscaler through ONNX', () => {
  it('generate --image --noise-level writes a PNG 4x the image with no failed check', async () => {
    const index = JSON.parse(await readFile(join(folder, 'model_index.json'), 'utf8')) as Record<string, unknown>;
    expect(index._class_name).toBe('StableDiffusionUpscalePipeline');
    const io = memoryIO();
    const png = join(tmp, 'big.png');
    const status = await main(['generate', folder, '--prompt', 'a cat', '--image', lowPng, '--noise-level', '30', '--steps', '2', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    expect(status).toBe(0);
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(r).toMatchObject({ mode: 'upscale', noiseLevel: 30, width: 4 * S, height: 4 * S, scalingFactor: 0.08333, pipelineClass: 'StableDiffusionUpscalePipeline' });
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const out = decodePng(await readFile(png));
    expect([out.width, out.height]).toEqual([4 * S, 4 * S]);
  }, 60_000);

  it('refuses --noise-level above max_noise_level and the upscaler without --image', async () => {
    const io = memoryIO();
    expect(await main(['generate', folder, '--prompt', 'a cat', '--image', lowPng, '--noise-level', '351', '--steps', '1', '--no-probe'], io)).not.toBe(0);
    expect(io.err).toMatch(/max_noise_level 350/);
    const io2 = memoryIO();
    expect(await main(['generate', folder, '--prompt', 'a cat', '--steps', '1', '--no-probe'], io2)).not.toBe(0);
    expect(io2.err).toMatch(/x4 upscaler/);
  }, 60_000);
});
