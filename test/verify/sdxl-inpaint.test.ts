/**
 * SDXL inpainting (StableDiffusionXLInpaintPipeline, a 9-channel SDXL inpainting UNet) through the
 * ONNX-backed models and the `generate` command.
 *
 * The tiny sdxl-inpaint fixture cannot run as it is (embedding tables of 64 tokens for CLIP ids up
 * to 49407; text_embeds 32 wide where the ONNX UNet export reads the standard 1280), so the run
 * uses a checkpoint derived from it as test/verify/sdxl-img2img.test.ts does for the refiner: token
 * embedding tables repeated to 49408 rows, text_projection widened to 1280 outputs and the UNet's
 * add_embedding input widened to 1280 text + 6 x 256 time-id features, the new columns zero (the
 * same function on the original 32 features). Everything else is the fixture's weights.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { decodePng, encodePng } from '../../src/generate/png.js';
import type { RgbImage } from '../../src/generate/pipeline.js';
import { readFolderInfo } from '../../src/verify/generation.js';
import { elementBytes, rewriteCheckpoint, tileRows } from './checkpoint-edit.js';

const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-xl-inpaint-'));
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

/** White (repaint) in the centre square, black elsewhere. */
function centreMask(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = height / 4; y < (3 * height) / 4; y++) data.fill(255, (y * width + width / 4) * 3, (y * width + (3 * width) / 4) * 3);
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

async function derive(src: string, dst: string): Promise<void> {
  await rewriteCheckpoint(src, dst, (name, dtype, shape, bytes) => {
    const eb = elementBytes(dtype);
    if (name.endsWith('token_embedding.weight')) return { shape: [49408, shape[1]], data: tileRows(bytes, shape[0], shape[1], 49408, eb) };
    if (name === 'conditioner.embedders.1.model.text_projection') {
      return { shape: [shape[0], 1280], data: insertZeroCols(bytes, shape[0], shape[1], shape[1], 1280 - shape[1], eb) };
    }
    if (name === 'model.diffusion_model.label_emb.0.0.weight') {
      const text = shape[1] - 6 * 256;
      return { shape: [shape[0], 1280 + 6 * 256], data: insertZeroCols(bytes, shape[0], shape[1], text, 1280 - text, eb) };
    }
    return undefined;
  });
}

describe('SDXL inpainting through ONNX', () => {
  it('a 9-channel SDXL inpainting UNet: generate --image --mask writes a PNG with no failed check', async () => {
    const ckpt = join(tmp, 'inpaint.safetensors');
    await derive('fixtures/families/sdxl-inpaint.safetensors', ckpt);
    const folder = join(tmp, 'inpaint');
    await convert(ckpt, folder);
    const info = await readFolderInfo(folder);
    expect(info.pipelineClass).toBe('StableDiffusionXLInpaintPipeline');
    expect(info.unetInChannels).toBe(2 * info.latentChannels + 1);
    expect(info.xl).toMatchObject({ hasTextEncoder: true, requiresAestheticsScore: false });

    const init = join(tmp, 'init.png');
    const mask = join(tmp, 'mask.png');
    await writeFile(init, encodePng(gradient(64, 64)));
    await writeFile(mask, encodePng(centreMask(64, 64)));
    const png = join(tmp, 'out.png');
    const io = memoryIO();
    const status = await main(['generate', folder, '--prompt', 'a lighthouse', '--image', init, '--mask', mask, '--steps', '4', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    expect(status).toBe(0);
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(r).toMatchObject({
      family: 'sdxl',
      mode: 'inpaint',
      pipelineClass: 'StableDiffusionXLInpaintPipeline',
      strength: 0.9999,
      width: 64,
      height: 64,
      inpaint: { unetInChannels: 9, method: 'inpainting-unet', maskedFraction: 0.25 },
    });
    // Strength 0.9999 keeps int(4 * 0.9999) = 3 timesteps.
    expect(r.timesteps).toHaveLength(3);
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const img = decodePng(await readFile(png));
    expect([img.width, img.height]).toEqual([64, 64]);
  });
});
