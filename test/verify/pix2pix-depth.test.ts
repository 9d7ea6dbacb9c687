/**
 * InstructPix2Pix and depth-to-image through the ONNX-backed models and the CLI.
 *
 * pix2pix: the torch-made sd1-pix2pix fixture (8-channel UNet), converted
 * (StableDiffusionInstructPix2PixPipeline) and run with --image --image-guidance.
 * depth: an SD 2 depth checkpoint derived from the sd2 case (its input_blocks.0.0.weight widened
 * from 4 to 5 input channels, the extra one a copy of the first kernel), converted
 * (StableDiffusionDepth2ImgPipeline) and run with --image --depth.
 * Both tiny checkpoints have token embedding tables smaller than the CLIP vocabulary their
 * tokenizer uses; their rows are repeated to 49408 (as test/verify/sdxl-inpaint.test.ts does) so
 * the prompts can be embedded. Everything else is the checkpoints' weights.
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
import { runGeneration } from '../../src/verify/generation.js';
import { repoRoot, sharedFixture } from '../helpers/paths.js';
import { elementBytes, rewriteCheckpoint, tileRows } from './checkpoint-edit.js';

const S = 64;
const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-p2p-'));
const initPng = join(tmp, 'init.png');
const depthPng = join(tmp, 'depth.png');
const p2pFolder = join(tmp, 'sd1-pix2pix');
const depthFolder = join(tmp, 'sd2-depth');
const init = { data: new Uint8Array(S * S * 3).map((_, i) => (i * 13 + (i >> 7)) & 255), width: S, height: S };
/** A vertical gradient, 32 x 32 (resized to the latent size by the pipeline). */
const depth = { data: new Uint8Array(32 * 32 * 3).map((_, i) => Math.floor(i / (32 * 3)) * 8), width: 32, height: 32 };

/** Token embedding tables repeated to the 49408 rows of the CLIP vocabulary. */
function fullVocab(name: string, dtype: Parameters<typeof elementBytes>[0], shape: readonly number[], bytes: Uint8Array) {
  if (!name.endsWith('token_embedding.weight') || shape[0] >= 49408) return undefined;
  return { shape: [49408, shape[1]], data: tileRows(bytes, shape[0], shape[1], 49408, elementBytes(dtype)) };
}

beforeAll(async () => {
  await writeFile(initPng, encodePng(init));
  await writeFile(depthPng, encodePng(depth));
  const p2pCkpt = join(tmp, 'sd1-pix2pix.safetensors');
  await rewriteCheckpoint(join(repoRoot, 'fixtures', 'families', 'sd1-pix2pix.safetensors'), p2pCkpt, fullVocab);
  await convert(p2pCkpt, p2pFolder);
  const ckpt = join(tmp, 'sd2-depth.safetensors');
  await rewriteCheckpoint(sharedFixture('cases/sd2/model-fp16.ckpt'), ckpt, (name, dtype, shape, bytes) => {
    if (name !== 'model.diffusion_model.input_blocks.0.0.weight') return fullVocab(name, dtype, shape, bytes);
    const [out, inCh, kh, kw] = shape;
    const k = kh * kw * elementBytes(dtype);
    const data = new Uint8Array(out * 5 * k);
    for (let o = 0; o < out; o++) for (let c = 0; c < 5; c++) data.set(bytes.subarray((o * inCh + (c % inCh)) * k, (o * inCh + (c % inCh) + 1) * k), (o * 5 + c) * k);
    return { shape: [out, 5, kh, kw], data };
  });
  await convert(ckpt, depthFolder);
}, 60_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function config(folder: string, file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(folder, file), 'utf8')) as Record<string, unknown>;
}

describe('InstructPix2Pix through ONNX', () => {
  it('generate --image --image-guidance writes a PNG with no failed check', async () => {
    expect((await config(p2pFolder, 'model_index.json'))._class_name).toBe('StableDiffusionInstructPix2PixPipeline');
    expect((await config(p2pFolder, 'unet/config.json')).in_channels).toBe(8);
    const io = memoryIO();
    const png = join(tmp, 'edited.png');
    const status = await main(['generate', p2pFolder, '--prompt', 'make it snowy', '--image', initPng, '--image-guidance', '1.5', '--steps', '2', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    expect(status).toBe(0);
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(r).toMatchObject({ mode: 'pix2pix', imageGuidance: 1.5, width: S, height: S, pipelineClass: 'StableDiffusionInstructPix2PixPipeline' });
    expect(r.strength).toBeUndefined();
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const out = decodePng(await readFile(png));
    expect([out.width, out.height]).toEqual([S, S]);
  });

  it('needs --image', async () => {
    await expect(runGeneration(p2pFolder, { prompt: 'x', steps: 1, probe: false })).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});

describe('SD 2 depth-to-image through ONNX', () => {
  it('generate --image --depth writes a PNG with no failed check', async () => {
    expect((await config(depthFolder, 'model_index.json'))._class_name).toBe('StableDiffusionDepth2ImgPipeline');
    expect((await config(depthFolder, 'unet/config.json')).in_channels).toBe(5);
    const io = memoryIO();
    const png = join(tmp, 'depth-out.png');
    const status = await main(['generate', depthFolder, '--prompt', 'a castle', '--image', initPng, '--depth', depthPng, '--steps', '3', '--scheduler', 'ddim', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    expect(status).toBe(0);
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(r).toMatchObject({ mode: 'depth2img', strength: 0.8, width: S, height: S });
    expect(r.timesteps).toHaveLength(2); // int(3 x 0.8) DDIM steps
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const out = decodePng(await readFile(png));
    expect([out.width, out.height]).toEqual([S, S]);
  });

  it('refuses a run without --depth, and --depth on other folders', async () => {
    await expect(runGeneration(depthFolder, { prompt: 'x', steps: 1, initImage: initPng, probe: false })).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(runGeneration(p2pFolder, { prompt: 'x', steps: 1, initImage: initPng, depth: depthPng, probe: false })).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});
