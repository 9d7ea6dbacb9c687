/**
 * Inpainting through the ONNX-backed models and the CLI (sd1-pipe: real CLIP vocabulary, VAE
 * downsampling by 8).
 *
 * 9 channels: an SD 1.x inpainting checkpoint derived from the sd1-pipe case (its
 * input_blocks.0.0.weight widened from 4 to 9 input channels, the extra 5 filled with copies of
 * the existing kernels; everything else unchanged), converted (family sd1-inpaint,
 * StableDiffusionInpaintPipeline) and run with --image / --mask. As in Diffusers, the output is the
 * decoded latents: the original pixels outside the mask are NOT pasted back (the report says so),
 * so with these random weights they differ from the input.
 *
 * 4 channels with --mask (latent blending): outside the mask the final latents equal the image
 * latents exactly (the blend leaves them unnoised after the last step).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { preprocessMask, resizeMaskNearest } from '../../src/generate/inpaint.js';
import { decodePng, encodePng } from '../../src/generate/png.js';
import type { Tensor } from '../../src/generate/tensor.js';
import { runGeneration } from '../../src/verify/generation.js';
import { sharedFixture } from '../helpers/paths.js';
import { elementBytes, rewriteCheckpoint } from './checkpoint-edit.js';

const S = 64;
const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-inp-'));
const initPng = join(tmp, 'init.png');
const maskPng = join(tmp, 'mask.png');
const inpaintFolder = join(tmp, 'sd1-inpaint');
const plainFolder = join(tmp, 'sd1-pipe');
const init = { data: new Uint8Array(S * S * 3).map((_, i) => (i * 13 + (i >> 7)) & 255), width: S, height: S };
/** White (repaint) in a centered 32 x 32 square. */
const mask = { data: new Uint8Array(S * S * 3).map((_, i) => {
  const p = Math.floor(i / 3);
  const y = Math.floor(p / S);
  const x = p % S;
  return y >= 16 && y < 48 && x >= 16 && x < 48 ? 255 : 0;
}), width: S, height: S };

beforeAll(async () => {
  await writeFile(initPng, encodePng(init));
  await writeFile(maskPng, encodePng(mask));
  const ckpt = join(tmp, 'sd1-inpaint.safetensors');
  await rewriteCheckpoint(sharedFixture('cases/sd1-pipe/model-fp16.ckpt'), ckpt, (name, dtype, shape, bytes) => {
    if (name !== 'model.diffusion_model.input_blocks.0.0.weight') return undefined;
    const [out, inCh, kh, kw] = shape;
    const k = kh * kw * elementBytes(dtype);
    const data = new Uint8Array(out * 9 * k);
    for (let o = 0; o < out; o++) for (let c = 0; c < 9; c++) data.set(bytes.subarray((o * inCh + (c % inCh)) * k, (o * inCh + (c % inCh) + 1) * k), (o * 9 + c) * k);
    return { shape: [out, 9, kh, kw], data };
  });
  await convert(ckpt, inpaintFolder);
  await convert(sharedFixture('cases/sd1-pipe/model-fp16.ckpt'), plainFolder);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('9-channel inpainting UNet through ONNX', () => {
  it('converts as sd1-inpaint; generate --image --mask writes a PNG with a verdict; no paste-back', async () => {
    const index = JSON.parse(await readFile(join(inpaintFolder, 'model_index.json'), 'utf8')) as Record<string, unknown>;
    expect(index._class_name).toBe('StableDiffusionInpaintPipeline');
    const unet = JSON.parse(await readFile(join(inpaintFolder, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(unet.in_channels).toBe(9);
    const io = memoryIO();
    const png = join(tmp, 'inpainted.png');
    const status = await main(['generate', inpaintFolder, '--prompt', 'a red door', '--image', initPng, '--mask', maskPng, '--steps', '3', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(status).toBe(0);
    expect(r).toMatchObject({ mode: 'inpaint', family: 'sd', strength: 1, width: S, height: S, inpaint: { unetInChannels: 9, method: 'inpainting-unet', maskedFraction: 0.25 } });
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const out = decodePng(await readFile(png));
    expect([out.width, out.height]).toEqual([S, S]);
    // Outside the mask the pixels are the model's reconstruction, not the input's.
    let differing = 0;
    for (let p = 0; p < S * S; p++) if (mask.data[p * 3] === 0 && out.data[p * 3] !== init.data[p * 3]) differing++;
    expect(differing).toBeGreaterThan(0);
    // Text output names the method.
    const io2 = memoryIO();
    expect(await main(['generate', inpaintFolder, '--prompt', 'a red door', '--image', initPng, '--mask', maskPng, '--steps', '2', '--no-probe'], io2)).toBe(0);
    expect(io2.out).toMatch(/generation: inpaint 64x64, 2 steps PNDMScheduler/);
    expect(io2.out).toMatch(/inpaint: inpainting UNet \(9 channels\), 25\.0% of the pixels masked; the original is not pasted back/);
  });

  it('an inpainting UNet without --mask is a usage error', async () => {
    await expect(runGeneration(inpaintFolder, { prompt: 'x', steps: 1 })).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});

describe('4-channel UNet with --mask through ONNX (latent blending)', () => {
  it('keeps the image latents outside the mask exactly', async () => {
    const traced = new Map<string, Tensor>();
    const r = await runGeneration(plainFolder, {
      prompt: 'a red door',
      initImage: initPng,
      mask: maskPng,
      steps: 3,
      scheduler: 'euler',
      probe: false,
      trace: (name, v) => {
        if (name === 'inpaint.image_latents') traced.set(name, { data: (v as Tensor).data.slice(), shape: [...(v as Tensor).shape] });
      },
    });
    expect(r.report).toMatchObject({ mode: 'inpaint', inpaint: { unetInChannels: 4, method: 'latent-blend' } });
    expect(r.report.verdict).not.toBe('failed');
    const imageLatents = traced.get('inpaint.image_latents') as Tensor;
    const m = resizeMaskNearest(preprocessMask(mask, S, S), S / 8, S / 8).data;
    let kept = 0;
    for (let k = 0; k < r.result.latents.data.length; k++) {
      if (m[k % m.length] === 0) {
        expect(r.result.latents.data[k]).toBe(imageLatents.data[k]);
        kept++;
      }
    }
    expect(kept).toBe(4 * 48);
    expect(r.result.latents.data.some((x, k) => m[k % m.length] === 1 && x !== imageLatents.data[k])).toBe(true);
  });
});
