/**
 * x4 upscaling with recording stand-in networks: the UNet input channel order ([scaled latents,
 * noisy image]), class_labels = noise level repeated for the guidance batch, the draw order
 * (image noise [1, 3, h, w] first, then the latents [1, 4, h, w]), the low-res DDPM add_noise,
 * the VAE decode input (latents / scaling_factor) and the output size (4x the image).
 */
import { describe, expect, it } from 'vitest';
import type { PipelineModels, RgbImage } from '../../src/generate/pipeline.js';
import { preprocessImage } from '../../src/generate/pipeline.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { f32, sqrtf, type Tensor } from '../../src/generate/tensor.js';
import type { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { TorchGenerator } from '../../src/generate/torch-random.js';
import { checkNoiseLevel, generateUpscale, lowResAlphasCumprod } from '../../src/generate/upscale.js';

const h = 8;
const w = 12;
const F = 4;
const SCALING = 0.08333;
const tokenizer = { encode: (text: string) => ({ ids: Array.from({ length: 77 }, (_, i) => (i + text.length) % 50), truncated: false }) } as unknown as ClipTokenizer;
const SCHED: SchedulerConfigJson = { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'scaled_linear', steps_offset: 1, set_alpha_to_one: false, clip_sample: false, prediction_type: 'v_prediction' };
const LOW_RES: SchedulerConfigJson = { _class_name: 'DDPMScheduler', num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'scaled_linear' };
const copy = (t: Tensor): Tensor => ({ data: t.data.slice(), shape: [...t.shape] });
const image: RgbImage = { data: new Uint8Array(h * w * 3).map((_, i) => (i * 37 + 11) & 255), width: w, height: h };

interface Recorded {
  samples: Tensor[];
  labels: Tensor[];
  decoded: Tensor[];
}

function standIns(): PipelineModels & Recorded {
  const samples: Tensor[] = [];
  const labels: Tensor[] = [];
  const decoded: Tensor[] = [];
  return {
    samples,
    labels,
    decoded,
    async encodeText(ids) {
      return { data: new Float32Array(77 * 8).fill(ids[0]), shape: [1, 77, 8] };
    },
    async unet(sample, _t, ehs, extra) {
      samples.push(copy(sample));
      const cl = extra?.class_labels;
      if (!cl) throw new Error('no class_labels');
      labels.push(copy(cl));
      const [b, , hh, ww] = sample.shape;
      const n = 4 * hh * ww;
      return { data: new Float32Array(b * n).map((_, i) => f32(0.01 * ehs.data[Math.floor(i / n) * 77 * 8] + 0.001 * (i % n))), shape: [b, 4, hh, ww] };
    },
    async vaeDecode(latents) {
      decoded.push(copy(latents));
      return { data: new Float32Array(3 * h * F * w * F).fill(0.5), shape: [1, 3, h * F, w * F] };
    },
  };
}

describe('x4 upscale pipeline (stand-ins)', () => {
  it('draws image noise then latents, concatenates [latents, noisy image], passes the noise level as class labels', async () => {
    const m = standIns();
    const traced = new Map<string, Tensor>();
    const r = await generateUpscale({
      prompt: 'a cat',
      tokenizer,
      scheduler: createScheduler(SCHED),
      models: m,
      steps: 2,
      guidanceScale: 9,
      seed: 7,
      vaeScaleFactor: F,
      scalingFactor: SCALING,
      image,
      noiseLevel: 30,
      lowResScheduler: LOW_RES,
      trace: (name, v) => {
        if (!(v instanceof Int32Array) && !Array.isArray(v)) traced.set(name, copy(v));
      },
    });
    // Draw order: image noise [1, 3, h, w], then the latents [1, 4, h, w].
    const g = new TorchGenerator(7);
    const eps = g.randn([1, 3, h, w]);
    const lat = g.randn([1, 4, h, w]);
    expect(traced.get('upscale.image_noise')!.data).toEqual(eps);
    expect(traced.get('randn.0')!.data).toEqual(lat);
    // add_noise of the low-res DDPM schedule at t = 30.
    const a = lowResAlphasCumprod(LOW_RES)[30];
    const px = preprocessImage(image, h, w).data;
    const noisy = px.map((x, i) => f32(f32(sqrtf(a) * x) + f32(sqrtf(f32(1 - a)) * eps[i])));
    expect(traced.get('upscale.noisy_image')!.data).toEqual(noisy);
    // Every UNet call: batch 2, 7 channels = [scaled latents (4), noisy image (3)] per entry; labels [30, 30].
    expect(m.samples).toHaveLength(2);
    const plane = h * w;
    for (let s = 0; s < 2; s++) {
      const sample = m.samples[s];
      expect(sample.shape).toEqual([2, 7, h, w]);
      const scaled = traced.get(`step.${s}.unet.sample`)!;
      for (let b = 0; b < 2; b++) {
        expect(sample.data.slice(b * 7 * plane, b * 7 * plane + 4 * plane)).toEqual(scaled.data.slice(b * 4 * plane, (b + 1) * 4 * plane));
        expect(sample.data.slice(b * 7 * plane + 4 * plane, (b + 1) * 7 * plane)).toEqual(noisy);
      }
      expect(m.labels[s].shape).toEqual([2]);
      expect([...m.labels[s].data]).toEqual([30, 30]);
    }
    // The first step's latents are the second draw times init_noise_sigma (1 for DDIM).
    expect(traced.get('latents.initial')!.data).toEqual(lat);
    // Decode: latents / 0.08333, output 4x the image.
    expect(m.decoded[0].data).toEqual(r.latents.data.map((x) => f32(x / f32(SCALING))));
    expect(r.image!.shape).toEqual([1, h * F, w * F, 3]);
  });

  it('without guidance: batch 1, one label, default noise level 20', async () => {
    const m = standIns();
    await generateUpscale({ prompt: 'a cat', tokenizer, scheduler: createScheduler(SCHED), models: m, steps: 1, guidanceScale: 1, vaeScaleFactor: F, scalingFactor: SCALING, image, lowResScheduler: LOW_RES });
    expect(m.samples[0].shape).toEqual([1, 7, h, w]);
    expect([...m.labels[0].data]).toEqual([20]);
  });

  it('refuses bad noise levels and image sizes', async () => {
    expect(() => checkNoiseLevel(351, 350)).toThrow(/max_noise_level/);
    expect(() => checkNoiseLevel(2.5, 350)).toThrow(/integer/);
    expect(checkNoiseLevel(350, 350)).toBe(350);
    const odd: RgbImage = { data: new Uint8Array(6 * 6 * 3), width: 6, height: 6 };
    await expect(generateUpscale({ prompt: '', tokenizer, scheduler: createScheduler(SCHED), models: standIns(), steps: 1, vaeScaleFactor: F, image: odd, lowResScheduler: LOW_RES })).rejects.toThrow(/multiples of 4/);
  });
});
