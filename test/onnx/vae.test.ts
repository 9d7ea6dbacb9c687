/**
 * VAE encoder/decoder graphs exported from the golden Diffusers folders and run by
 * onnxruntime-node (CPU) against diffusers' float32 outputs (forward goldens).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeOnnxModel } from '../../src/onnx/encode.js';
import { loadOnnxRuntime } from '../../src/onnx/runtime.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, type VaeConfig } from '../../src/onnx/vae.js';
import { openComponentWeights, type ComponentWeights } from '../../src/onnx/weights.js';
import { sharedFixture } from '../helpers/paths.js';
import { compare, readGolden, runModel } from './helpers.js';

/** fp16 graphs on the CPU EP, measured: max abs error ≤ 0.0029; asserted with margin. */
const FP16_ATOL = 0.01;
const FP16_RTOL = 0.02;

const CASES: [string, string][] = [
  ['vae', 'golden/vae/diffusers'],
  ['sd1', 'golden/sd1/diffusers/vae'],
  ['sd2', 'golden/sd2/diffusers/vae'],
  ['sdxl-base', 'golden/sdxl-base/diffusers/vae'],
];

const tmp = mkdtempSync(join(tmpdir(), 'onnx-vae-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function withVae<T>(rel: string, fn: (config: VaeConfig, w: ComponentWeights) => Promise<T>): Promise<T> {
  const dir = sharedFixture(rel);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as VaeConfig;
  const w = await openComponentWeights(dir);
  try {
    return await fn(config, w);
  } finally {
    await w.close();
  }
}

function check(actual: Float32Array, expected: Float32Array, fp16: boolean): void {
  const s = fp16 ? compare(actual, expected, FP16_ATOL, FP16_RTOL) : compare(actual, expected, 1e-4, 1e-3);
  expect(s.violations, JSON.stringify(s)).toBe(0);
}

describe.each(CASES)('%s VAE', (c, rel) => {
  for (const floatType of ['float32', 'float16'] as const) {
    it(`encoder mean/std and decoder match the goldens in ${floatType}`, async () => {
      const base = join(tmp, `${c}-${floatType}`);
      const [enc, par, dec] = await withVae(rel, async (config, w) => [
        (await writeOnnxModel(buildVaeEncoderGraph(config, w, 'mean-std', { floatType }), { dir: join(base, 'enc') })).modelPath,
        (await writeOnnxModel(buildVaeEncoderGraph(config, w, 'parameters', { floatType }), { dir: join(base, 'par') })).modelPath,
        (await writeOnnxModel(buildVaeDecoderGraph(config, w, { floatType }), { dir: join(base, 'dec') })).modelPath,
      ]);
      const gold = readGolden(`golden/${c}/forward/vae.safetensors`);
      const image = gold['input.image'];
      const latent = gold['input.latent'];
      const fp16 = floatType === 'float16';
      const e = await runModel(enc, { sample: { type: floatType, data: image.data as Float32Array, dims: image.shape } });
      check(e.latent_mean.data as Float32Array, gold['output.latent_mean'].data as Float32Array, fp16);
      check(e.latent_std.data as Float32Array, gold['output.latent_std'].data as Float32Array, fp16);

      // Optimum's latent_parameters = [mean, logvar] along channels.
      const p = await runModel(par, { sample: { type: floatType, data: image.data as Float32Array, dims: image.shape } });
      const [b, ch, h, wd] = p.latent_parameters.dims as number[];
      expect([b, ch, h, wd]).toEqual([1, 8, 16, 16]);
      const params = p.latent_parameters.data as Float32Array;
      const half = params.length / 2;
      check(params.subarray(0, half), gold['output.latent_mean'].data as Float32Array, fp16);
      const std = (gold['output.latent_std'].data as Float32Array).map((s) => 2 * Math.log(s));
      check(params.subarray(half), std, fp16);

      const d = await runModel(dec, { latent_sample: { type: floatType, data: latent.data as Float32Array, dims: latent.shape } });
      expect(d.sample.dims).toEqual(gold['output.decoded'].shape);
      check(d.sample.data as Float32Array, gold['output.decoded'].data as Float32Array, fp16);
    });
  }
});

describe('VAE encoder posterior sample (OnnxStableDiffusionPipeline dialect)', () => {
  it('latent_sample = mean + std·noise (noise supplied)', async () => {
    const model = await withVae('golden/vae/diffusers', async (config, w) =>
      (await writeOnnxModel(buildVaeEncoderGraph(config, w, 'noise-input'), { dir: join(tmp, 'noise') })).modelPath,
    );
    const gold = readGolden('golden/vae/forward/vae.safetensors');
    const image = gold['input.image'];
    const mean = gold['output.latent_mean'].data as Float32Array;
    const std = gold['output.latent_std'].data as Float32Array;
    const noise = new Float32Array(mean.length).map((_, i) => Math.sin(i * 1.7));
    const out = await runModel(model, {
      sample: { type: 'float32', data: image.data as Float32Array, dims: image.shape },
      noise: { type: 'float32', data: noise, dims: [1, 4, 16, 16] },
    });
    check(out.latent_sample.data as Float32Array, mean.map((m, i) => m + std[i] * noise[i]), false);
  });

  it('draws standard normal noise in-graph (RandomNormalLike)', async () => {
    const model = await withVae('golden/vae/diffusers', async (config, w) =>
      (await writeOnnxModel(buildVaeEncoderGraph(config, w, 'sample'), { dir: join(tmp, 'sample') })).modelPath,
    );
    const gold = readGolden('golden/vae/forward/vae.safetensors');
    const image = gold['input.image'];
    const mean = gold['output.latent_mean'].data as Float32Array;
    const std = gold['output.latent_std'].data as Float32Array;
    const ort = await loadOnnxRuntime();
    const session = await ort.InferenceSession.create(model);
    const feed = { sample: new ort.Tensor('float32', image.data as Float32Array, image.shape) };
    const a = (await session.run(feed)).latent_sample.data as Float32Array;
    const b = (await session.run(feed)).latent_sample.data as Float32Array;
    await session.release();
    const z = a.map((v, i) => (v - mean[i]) / std[i]);
    const mu = z.reduce((s, v) => s + v, 0) / z.length;
    const sd = Math.sqrt(z.reduce((s, v) => s + (v - mu) ** 2, 0) / z.length);
    // 1024 draws: the sample mean is within 4/√1024 of 0 and the standard deviation near 1.
    expect(Math.abs(mu)).toBeLessThan(0.125);
    expect(Math.abs(sd - 1)).toBeLessThan(0.15);
    // Each run of a session draws fresh noise.
    expect(a.some((v, i) => v !== b[i])).toBe(true);
  });
});
