/**
 * SDXL through the ONNX-backed models (src/verify/onnx-models.ts) and the `generate` command.
 *
 * Pieces against the forward goldens of golden/sdxl-base (transformers / diffusers float32 on CPU):
 * encodeTextXL(0) penultimate state = text_encoder hidden_states[-2]; encodeTextXL(1) penultimate
 * state and text_embeds = text_encoder_2's; the UNet called with text_embeds / time_ids extra
 * inputs = unet(..., added_cond_kwargs). Asserted within atol 1e-4 (+ rtol 1e-3); the measured
 * maxima are printed by the test (about 1e-6 on this machine).
 *
 * A full txt2img run: the tiny sdxl-base case cannot run as it is (its two 32-wide text encoders
 * give 64 features per token for a UNet with cross_attention_dim 2048, and its 256-token
 * embedding tables cannot take CLIP ids such as 49407); it is refused with
 * E_GENERATE_INCONSISTENT. The run uses a checkpoint derived from it that fits together: token
 * embedding tables repeated to 49408 rows, and the UNet's cross-attention K/V projections cut to
 * their first 64 input features (so convert infers cross_attention_dim 64). Everything else is
 * the case's weights.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { decodePng } from '../../src/generate/png.js';
import { runGeneration } from '../../src/verify/generation.js';
import { ensureOnnxFolder } from '../../src/verify/onnx-cache.js';
import { openOnnxModels, type OnnxPipelineModels } from '../../src/verify/onnx-models.js';
import { compare, readGolden } from '../onnx/helpers.js';
import { sharedFixture } from '../helpers/paths.js';
import { elementBytes, rewriteCheckpoint, sliceCols, tileRows } from './checkpoint-edit.js';

const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-xl-'));
let golden: OnnxPipelineModels;
beforeAll(async () => {
  const onnx = await ensureOnnxFolder(sharedFixture('golden/sdxl-base/diffusers'), { cacheDir: join(tmp, 'cache') });
  golden = await openOnnxModels(onnx.dir, { components: ['text_encoder', 'text_encoder_2', 'unet', 'vae_decoder'] });
});
afterAll(async () => {
  await golden?.release();
  rmSync(tmp, { recursive: true, force: true });
});

function ids(t: { data: Float32Array | BigInt64Array }): Int32Array {
  return Int32Array.from(t.data as BigInt64Array, (v) => Number(v));
}

describe('ONNX-backed SDXL pieces vs the forward goldens', () => {
  it('text_encoder: penultimate hidden state', async () => {
    const g = readGolden('golden/sdxl-base/forward/text_encoder.safetensors');
    const out = await golden.encodeTextXL(0, ids(g['input.input_ids']));
    expect(out.penultimate.shape).toEqual(g['output.penultimate_hidden_state'].shape);
    const s = compare(out.penultimate.data, g['output.penultimate_hidden_state'].data as Float32Array, 1e-4, 1e-3);
    console.log(`sdxl text_encoder penultimate: max |diff| ${s.maxAbs.toExponential(2)}`);
    expect(s.violations, JSON.stringify(s)).toBe(0);
    expect(out.textEmbeds).toBeUndefined();
  });

  it('text_encoder_2: penultimate hidden state and text_embeds', async () => {
    const g = readGolden('golden/sdxl-base/forward/text_encoder_2.safetensors');
    const out = await golden.encodeTextXL(1, ids(g['input.input_ids']));
    const p = compare(out.penultimate.data, g['output.penultimate_hidden_state'].data as Float32Array, 1e-4, 1e-3);
    const t = compare(out.textEmbeds?.data ?? [], g['output.text_embeds'].data as Float32Array, 1e-4, 1e-3);
    console.log(`sdxl text_encoder_2 penultimate: max |diff| ${p.maxAbs.toExponential(2)}; text_embeds: ${t.maxAbs.toExponential(2)}`);
    expect(out.textEmbeds?.shape).toEqual(g['output.text_embeds'].shape);
    expect(p.violations, JSON.stringify(p)).toBe(0);
    expect(t.violations, JSON.stringify(t)).toBe(0);
  });

  it('UNet with text_embeds and time_ids', async () => {
    const g = readGolden('golden/sdxl-base/forward/unet.safetensors');
    const tensor = (name: string) => ({ data: g[name].data as Float32Array, shape: g[name].shape });
    const t = Number((g['input.timestep'].data as BigInt64Array)[0]);
    const out = await golden.unet(tensor('input.sample'), t, tensor('input.encoder_hidden_states'), { text_embeds: tensor('input.text_embeds'), time_ids: tensor('input.time_ids') });
    expect(out.shape).toEqual(g['output.sample'].shape);
    const s = compare(out.data, g['output.sample'].data as Float32Array, 1e-4, 1e-3);
    console.log(`sdxl unet (text_embeds, time_ids): max |diff| ${s.maxAbs.toExponential(2)}`);
    expect(s.violations, JSON.stringify(s)).toBe(0);
  });
});

describe('SDXL txt2img through ONNX', () => {
  it('the unmodified tiny case is refused before any export', async () => {
    const folder = join(tmp, 'xl-tiny');
    await convert(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), folder);
    await expect(runGeneration(folder, { prompt: 'x', steps: 1, width: 64, height: 64 })).rejects.toMatchObject({ code: 'E_GENERATE_INCONSISTENT' });
    expect(existsSync(join(folder, '.ckpt2diffusers-onnx'))).toBe(false);
  });

  it('a consistent derived checkpoint: generate writes a PNG, verdict not failed, Euler leading schedule', async () => {
    const ckpt = join(tmp, 'xl-consistent.safetensors');
    await rewriteCheckpoint(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), ckpt, (name, dtype, shape, bytes) => {
      const eb = elementBytes(dtype);
      if (name.endsWith('token_embedding.weight')) return { shape: [49408, shape[1]], data: tileRows(bytes, shape[0], shape[1], 49408, eb) };
      if (/attn2\.to_[kv]\.weight$/.test(name)) return { shape: [shape[0], 64], data: sliceCols(bytes, shape[0], shape[1], 64, eb) };
      return undefined;
    });
    const folder = join(tmp, 'xl');
    await convert(ckpt, folder);
    const unet = JSON.parse(await readFile(join(folder, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(unet.cross_attention_dim).toBe(64);
    const io = memoryIO();
    const png = join(tmp, 'xl.png');
    const status = await main(['generate', folder, '--prompt', 'a lighthouse', '--steps', '3', '--width', '64', '--height', '64', '--save', png, '--json'], io);
    expect(io.err).toBe('');
    const r = JSON.parse(io.out) as Record<string, any>;
    expect(status).toBe(0);
    expect(r).toMatchObject({ family: 'sdxl', mode: 'txt2img', pipelineClass: 'StableDiffusionXLPipeline', scheduler: 'EulerDiscreteScheduler', scalingFactor: 0.13025, width: 64, height: 64 });
    expect(r.timesteps).toEqual([667, 334, 1]);
    expect(r.verdict).not.toBe('failed');
    for (const c of r.checks as { name: string; status: string }[]) expect(c.status, c.name).not.toBe('fail');
    const img = decodePng(await readFile(png));
    expect([img.width, img.height]).toEqual([64, 64]);
    // The export cache holds text_encoder_2.
    expect(existsSync(join(folder, '.ckpt2diffusers-onnx', 'fp32', 'text_encoder_2', 'model.onnx'))).toBe(true);
  });
});
