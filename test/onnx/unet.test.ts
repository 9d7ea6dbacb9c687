/**
 * UNet2DConditionModel graphs exported from the golden Diffusers folders and run by
 * onnxruntime-node (CPU) against diffusers 0.31's float32 outputs (forward goldens): SD 1.x
 * (1×1 conv projections, 8 heads of width 4), SD 2.x (linear projections, per-level head
 * counts), SDXL (text_time add-embedding), both timestep dialects, batch broadcasting, odd sizes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeOnnxModel } from '../../src/onnx/encode.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { buildUnetGraph, timestepFrequencies, type UnetGraphOptions } from '../../src/onnx/unet.js';
import { openComponentWeights } from '../../src/onnx/weights.js';
import { sharedFixture } from '../helpers/paths.js';
import { compare, readGolden, runModel, type Feed, type GoldenTensor } from './helpers.js';

/** fp16 graphs on the CPU EP, measured: max abs error ≤ 0.0025 (outputs up to ~2.5); asserted with margin. */
const FP16_ATOL = 0.01;
const FP16_RTOL = 0.02;

const CASES = ['sd1', 'sd1-pipe', 'sd2', 'sdxl-base'] as const;

const tmp = mkdtempSync(join(tmpdir(), 'onnx-unet-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function exportUnet(c: string, dir: string, options: UnetGraphOptions): Promise<string> {
  const src = sharedFixture(`golden/${c}/diffusers/unet`);
  const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  const w = await openComponentWeights(src);
  try {
    return (await writeOnnxModel(buildUnetGraph(config, w, options), { dir: join(tmp, dir) })).modelPath;
  } finally {
    await w.close();
  }
}

/** Repeats a [1, ...] golden tensor `n` times along the batch axis. */
function batched(t: GoldenTensor, n: number): { data: Float32Array; dims: number[] } {
  const src = t.data as Float32Array;
  const data = new Float32Array(src.length * n);
  for (let i = 0; i < n; i++) data.set(src, i * src.length);
  return { data, dims: [n, ...t.shape.slice(1)] };
}

function feedFor(gold: Record<string, GoldenTensor>, type: 'float32' | 'float16', timestep: Feed[string], batch = 1): Feed {
  const f = (name: string): Feed[string] => ({ type, ...batched(gold[name], batch) });
  const feed: Feed = { sample: f('input.sample'), timestep, encoder_hidden_states: f('input.encoder_hidden_states') };
  if (gold['input.text_embeds']) {
    feed.text_embeds = f('input.text_embeds');
    feed.time_ids = f('input.time_ids');
  }
  return feed;
}

function goldenTimestep(gold: Record<string, GoldenTensor>): number {
  return Number((gold['input.timestep'].data as BigInt64Array)[0]);
}

describe.each(CASES)('%s UNet', (c) => {
  for (const floatType of ['float32', 'float16'] as const) {
    it(`matches diffusers' output in ${floatType} (Optimum dialect: 0-d timestep)`, async () => {
      const model = await exportUnet(c, `${c}-${floatType}`, { floatType, layout: 'optimum', isXL: c === 'sdxl-base' });
      const gold = readGolden(`golden/${c}/forward/unet.safetensors`);
      const t = goldenTimestep(gold);
      const out = await runModel(model, feedFor(gold, floatType, { type: floatType, data: new Float32Array([t]), dims: [] }));
      expect(out.out_sample.dims).toEqual(gold['output.sample'].shape);
      const s = floatType === 'float16'
        ? compare(out.out_sample.data as Float32Array, gold['output.sample'].data as Float32Array, FP16_ATOL, FP16_RTOL)
        : compare(out.out_sample.data as Float32Array, gold['output.sample'].data as Float32Array, 1e-4, 1e-3);
      expect(s.violations, JSON.stringify(s)).toBe(0);
    });
  }
});

describe('timestep dialects and shapes', () => {
  it('Optimum dialect: the timestep input has no declared rank, so a [1] timestep runs too', async () => {
    const model = await exportUnet('sd1', 'sd1-rank1', { floatType: 'float32', layout: 'optimum', isXL: false });
    const gold = readGolden('golden/sd1/forward/unet.safetensors');
    const t = goldenTimestep(gold);
    const out = await runModel(model, feedFor(gold, 'float32', { type: 'float32', data: new Float32Array([t]), dims: [1] }));
    const s = compare(out.out_sample.data as Float32Array, gold['output.sample'].data as Float32Array, 1e-4, 1e-3);
    expect(s.violations, JSON.stringify(s)).toBe(0);
  });

  it('diffusers dialect: timestep [1] broadcast over a batch of 2 (CFG), through exportOnnx', async () => {
    const out = join(tmp, 'sd1-diffusers');
    const r = await exportOnnx(sharedFixture('golden/sd1/diffusers'), out, { layout: 'diffusers', components: ['unet'] });
    const unet = r.components.find((x) => x.name === 'unet');
    expect(unet?.inputs).toEqual(['sample', 'timestep', 'encoder_hidden_states']);
    expect(unet?.outputs).toEqual(['out_sample']);
    const gold = readGolden('golden/sd1/forward/unet.safetensors');
    const t = goldenTimestep(gold);
    const res = await runModel(join(out, 'unet', 'model.onnx'), feedFor(gold, 'float32', { type: 'float32', data: new Float32Array([t]), dims: [1] }, 2));
    expect(res.out_sample.dims).toEqual([2, 4, 16, 16]);
    const exp = gold['output.sample'].data as Float32Array;
    const got = res.out_sample.data as Float32Array;
    expect(compare(got.subarray(0, exp.length), exp).violations).toBe(0);
    expect(compare(got.subarray(exp.length), exp).violations).toBe(0);
  });

  it('int64 timestep of shape [batch] (timestepType option), SDXL with batch 2', async () => {
    const model = await exportUnet('sdxl-base', 'sdxl-int64', { floatType: 'float32', layout: 'diffusers', isXL: true, timestepType: 'int64' });
    const gold = readGolden('golden/sdxl-base/forward/unet.safetensors');
    const t = BigInt(goldenTimestep(gold));
    const res = await runModel(model, feedFor(gold, 'float32', { type: 'int64', data: new BigInt64Array([t, t]), dims: [2] }, 2));
    const exp = gold['output.sample'].data as Float32Array;
    const got = res.out_sample.data as Float32Array;
    expect(compare(got.subarray(0, exp.length), exp).violations).toBe(0);
    expect(compare(got.subarray(exp.length), exp).violations).toBe(0);
  });

  it('runs on sides that are not multiples of 2^upsamplers (upsampling to the skip size)', async () => {
    const model = await exportUnet('sd2', 'sd2-odd', { floatType: 'float32', layout: 'optimum' });
    const gold = readGolden('golden/sd2/forward/unet.safetensors');
    const full = gold['input.sample'].data as Float32Array; // [1, 4, 16, 16]
    const [h, w] = [15, 13];
    const crop = new Float32Array(4 * h * w);
    for (let ch = 0; ch < 4; ch++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) crop[(ch * h + y) * w + x] = full[(ch * 16 + y) * 16 + x];
    const feed = feedFor(gold, 'float32', { type: 'float32', data: new Float32Array([goldenTimestep(gold)]), dims: [] });
    feed.sample = { type: 'float32', data: crop, dims: [1, 4, h, w] };
    const res = await runModel(model, feed);
    expect(res.out_sample.dims).toEqual([1, 4, h, w]);
    expect((res.out_sample.data as Float32Array).every(Number.isFinite)).toBe(true);
  });

  it('sinusoidal frequencies follow get_timestep_embedding (float32 rounding)', () => {
    expect(timestepFrequencies(4, 0)).toEqual([1, Math.fround(Math.exp(Math.fround(Math.fround(-Math.log(10000)) / 2)))]);
    const f = timestepFrequencies(320, 0);
    expect(f).toHaveLength(160);
    expect(f[159]).toBeCloseTo(Math.exp((-Math.log(10000) * 159) / 160), 9);
    // freq_shift 1 (downscale_freq_shift) divides by half - 1: the last frequency is 1/10000.
    expect(timestepFrequencies(8, 1)[3]).toBeCloseTo(1e-4, 9);
  });

  it('refuses configs it does not build', () => {
    const config = JSON.parse(readFileSync(join(sharedFixture('golden/sd1/diffusers/unet'), 'config.json'), 'utf8')) as Record<string, unknown>;
    const none = { info: () => undefined, readChunks: () => { throw new Error('unused'); }, readTensor: () => { throw new Error('unused'); } };
    expect(() => buildUnetGraph({ ...config, time_cond_proj_dim: 256 }, none, { floatType: 'float32', layout: 'optimum' })).toThrow(/timestep_cond/);
    expect(() => buildUnetGraph({ ...config, down_block_types: ['SimpleCrossAttnDownBlock2D', 'DownBlock2D'] }, none, { floatType: 'float32', layout: 'optimum' })).toThrow(/SimpleCrossAttnDownBlock2D/);
  });
});
