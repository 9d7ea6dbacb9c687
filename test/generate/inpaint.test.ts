/**
 * Inpainting with recording stand-in networks (no goldens of the inpainting pipelines exist here):
 * mask preprocessing (PIL "L" luma, binarized at 0.5), nearest downsampling, the 9-channel UNet
 * input [latents, mask, masked_image_latents] in that channel order with the guidance batch, the
 * masked image given to the VAE encoder, the order of the random draws, and the 4-channel latent
 * blending replayed step by step with an independent scheduler (DDIM and Euler).
 */
import { describe, expect, it } from 'vitest';
import { generateInpaint, luma8, preprocessMask, resizeMaskNearest } from '../../src/generate/inpaint.js';
import type { PipelineModels, RgbImage } from '../../src/generate/pipeline.js';
import { sampleLatents } from '../../src/generate/pipeline.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { f32, type Tensor } from '../../src/generate/tensor.js';
import { TorchGenerator } from '../../src/generate/torch-random.js';
import type { ClipTokenizer } from '../../src/generate/tokenizer.js';

const H = 32;
const W = 48;
const F = 8;
const h = H / F;
const w = W / F;
const SCALING = 0.18215;

/** A tokenizer stand-in: the pipeline only needs encode(). */
const tokenizer = { encode: (text: string) => ({ ids: Array.from({ length: 77 }, (_, i) => (i + text.length) % 50), truncated: false }) } as unknown as ClipTokenizer;

const BASE: SchedulerConfigJson = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', steps_offset: 1, set_alpha_to_one: false, clip_sample: false, prediction_type: 'epsilon' };

function image(): RgbImage {
  const data = new Uint8Array(H * W * 3).map((_, i) => (i * 37 + 11) & 255);
  return { data, width: W, height: H };
}

/** White (repaint) in the right half of the rows 8..23, black elsewhere; a few grey values near the threshold. */
function mask(): RgbImage {
  const data = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const v = y >= 8 && y < 24 && x >= 24 ? 255 : 0;
      data.set([v, v, v], (y * W + x) * 3);
    }
  }
  data.set([127, 127, 127], (8 * W + 24) * 3); // 127/255 < 0.5 → kept (0)
  data.set([128, 128, 128], (0 * W + 0) * 3); // 128/255 >= 0.5 → repainted (1)
  return { data, width: W, height: H };
}

interface Recorded {
  encoded: Tensor[];
  samples: Tensor[];
}

function standIns(channelsOut = 4): PipelineModels & Recorded {
  const encoded: Tensor[] = [];
  const samples: Tensor[] = [];
  return {
    encoded,
    samples,
    async encodeText(ids) {
      return { data: Float32Array.from({ length: 77 * 8 }, (_, i) => Math.sin(ids[i % 77] + i)), shape: [1, 77, 8] };
    },
    async unet(sample) {
      samples.push({ data: sample.data.slice(), shape: [...sample.shape] });
      const [b, , hh, ww] = sample.shape;
      const out = new Float32Array(b * channelsOut * hh * ww);
      for (let i = 0; i < out.length; i++) out[i] = Math.fround(0.1 * Math.sin(sample.data[i] + i));
      return { data: out, shape: [b, channelsOut, hh, ww] };
    },
    async vaeDecode(latents) {
      return { data: new Float32Array(3 * H * W).fill(0.25), shape: [1, 3, H, W] };
    },
    async vaeEncode(img) {
      encoded.push({ data: img.data.slice(), shape: [...img.shape] });
      // Moments from the image: mean = 2x2 average of the first channel, logvar = -2.
      const out = new Float32Array(8 * h * w);
      for (let c = 0; c < 4; c++) {
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(c * h + y) * w + x] = Math.fround(img.data[(y * F) * W + x * F] * (c + 1) * 0.5);
      }
      out.fill(-2, 4 * h * w);
      return { data: out, shape: [1, 8, h, w] };
    },
  };
}

describe('mask preprocessing', () => {
  it('converts to luma like PIL, binarizes at 0.5, and downsamples by nearest', () => {
    expect(luma8(255, 0, 0)).toBe(76);
    expect(luma8(0, 255, 0)).toBe(150);
    expect(luma8(0, 0, 255)).toBe(29);
    expect(luma8(200, 200, 200)).toBe(200);
    const m = preprocessMask(mask(), H, W);
    expect(m.shape).toEqual([1, 1, H, W]);
    expect(m.data[0]).toBe(1);
    expect(m.data[8 * W + 24]).toBe(0);
    expect(m.data[8 * W + 25]).toBe(1);
    expect(m.data[24 * W + 25]).toBe(0);
    const small = resizeMaskNearest(m, h, w);
    // Latent pixel (y, x) takes source pixel (8y, 8x).
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) expect(small.data[y * w + x]).toBe(m.data[y * F * W + x * F]);
    expect([...small.data]).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
  });
});

describe('9-channel inpainting UNet', () => {
  it('gets cat([latents, mask, masked_image_latents], dim=1), uncond and cond rows alike; draws: noise, then the masked image sample', async () => {
    const models = standIns();
    const traced = new Map<string, Tensor>();
    const seed = 7;
    const r = await generateInpaint({
      prompt: 'a door',
      tokenizer,
      models,
      scheduler: createScheduler({ ...BASE, _class_name: 'DDIMScheduler' }),
      steps: 3,
      guidanceScale: 7.5,
      seed,
      image: image(),
      mask: mask(),
      unetInChannels: 9,
      trace: (name, v) => {
        if (!(v instanceof Int32Array) && !Array.isArray(v)) traced.set(name, { data: v.data.slice(), shape: [...v.shape] });
      },
    });
    expect(r.timesteps).toEqual([667, 334, 1]);
    // One VAE encode (the masked image): strength 1 with a 9-channel UNet needs no image latents.
    expect(models.encoded).toHaveLength(1);
    const pre = traced.get('inpaint.image_preprocessed') as Tensor;
    const m = preprocessMask(mask(), H, W);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < H * W; p++) expect(models.encoded[0].data[c * H * W + p]).toBe(m.data[p] < 0.5 ? pre.data[c * H * W + p] : 0);
    }
    // Draw order: randn.0 = noise (initial latents), randn.1 = the masked image's posterior sample.
    const g = new TorchGenerator(seed);
    const noise = g.randn([1, 4, h, w]);
    const eps = g.randn([1, 4, h, w]);
    expect(traced.has('randn.2')).toBe(false);
    expect(traced.get('latents.initial')?.data).toEqual(noise);
    const moments = await standIns().vaeEncode!(models.encoded[0]);
    const maskedLatents = sampleLatents(moments.data, eps, SCALING);
    const small = resizeMaskNearest(m, h, w);
    const plane = h * w;
    expect(models.samples).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      const s = models.samples[i];
      expect(s.shape).toEqual([2, 9, h, w]);
      const scaled = traced.get(`step.${i}.unet.sample`) as Tensor;
      for (let b = 0; b < 2; b++) {
        const row = s.data.subarray(b * 9 * plane, (b + 1) * 9 * plane);
        expect(row.subarray(0, 4 * plane)).toEqual(scaled.data.subarray(b * 4 * plane, (b + 1) * 4 * plane));
        expect(row.subarray(4 * plane, 5 * plane)).toEqual(small.data);
        expect(row.subarray(5 * plane, 9 * plane)).toEqual(maskedLatents);
      }
    }
    // No paste-back: the decoder output is the image (here the stand-in's flat 0.25 → 0.625).
    expect(r.image?.data.every((x) => x === f32(f32(0.25 / 2) + 0.5))).toBe(true);
  });

  it('strength < 1: image latents (first draw), noise added at the first timestep, then the masked image draw', async () => {
    const models = standIns();
    const traced = new Map<string, Tensor>();
    const r = await generateInpaint({
      prompt: 'a door',
      tokenizer,
      models,
      scheduler: createScheduler({ ...BASE, _class_name: 'DDIMScheduler' }),
      steps: 4,
      guidanceScale: 1,
      strength: 0.5,
      seed: 3,
      image: image(),
      mask: mask(),
      unetInChannels: 9,
      trace: (name, v) => {
        if (!(v instanceof Int32Array) && !Array.isArray(v)) traced.set(name, { data: v.data.slice(), shape: [...v.shape] });
      },
    });
    expect(r.timesteps).toEqual([251, 1]); // [751, 501, 251, 1] cut to its last int(4 * 0.5)
    expect(models.encoded).toHaveLength(2);
    expect(models.samples[0].shape).toEqual([1, 9, h, w]);
    expect(traced.has('randn.2')).toBe(true);
    const sched = createScheduler({ ...BASE, _class_name: 'DDIMScheduler' });
    sched.setTimesteps(4, 0.5);
    const imageLatents = traced.get('inpaint.image_latents') as Tensor;
    expect(traced.get('latents.initial')?.data).toEqual(sched.addNoise(imageLatents.data, (traced.get('randn.1') as Tensor).data, 251));
  });
});

describe('4-channel UNet with a mask (latent blending)', () => {
  for (const cls of ['DDIMScheduler', 'EulerDiscreteScheduler'] as const) {
    it(`${cls}: after each step latents = (1 - m) * add_noise(image_latents, noise, t[i+1]) + m * latents; unnoised after the last`, async () => {
      const models = standIns();
      const traced = new Map<string, Tensor>();
      const config = { ...BASE, _class_name: cls, timestep_spacing: 'leading' };
      const steps = 4;
      const r = await generateInpaint({
        prompt: 'a door',
        tokenizer,
        models,
        scheduler: createScheduler(config),
        steps,
        guidanceScale: 1,
        seed: 11,
        image: image(),
        mask: mask(),
        unetInChannels: 4,
        trace: (name, v) => {
          if (!(v instanceof Int32Array) && !Array.isArray(v)) traced.set(name, { data: v.data.slice(), shape: [...v.shape] });
        },
      });
      // Draws: image latents sample, noise, masked image sample (computed though unused), as Diffusers.
      expect(models.encoded).toHaveLength(2);
      expect(traced.has('randn.2')).toBe(true);
      expect(traced.has('randn.3')).toBe(false);
      for (const s of models.samples) expect(s.shape).toEqual([1, 4, h, w]);
      const imageLatents = (traced.get('inpaint.image_latents') as Tensor).data;
      const noise = (traced.get('randn.1') as Tensor).data;
      const m = resizeMaskNearest(preprocessMask(mask(), H, W), h, w).data;
      // Replay with an independent scheduler.
      const sched = createScheduler(config);
      const ts = sched.setTimesteps(steps, 1);
      expect(r.timesteps).toEqual(ts);
      const sigma = f32(sched.initNoiseSigma);
      let latents = Float32Array.from(noise, (x) => f32(x * sigma));
      expect(traced.get('latents.initial')?.data).toEqual(latents);
      const sigmas = (sched as unknown as { sigmas?: number[] }).sigmas;
      for (let i = 0; i < ts.length; i++) {
        sched.scaleModelInput(latents, ts[i]);
        const out = (traced.get(`step.${i}.unet.out`) as Tensor).data;
        const stepped = sched.step(out, ts[i], latents, { shape: [1, 4, h, w] });
        let proper = imageLatents;
        if (i < ts.length - 1) {
          proper = sched.addNoise(imageLatents, noise, ts[i + 1]);
          // Euler: the noise level of the next timestep (step index i + 1), not the first one.
          if (sigmas) expect(proper).toEqual(imageLatents.map((x, k) => f32(x + f32(noise[k] * sigmas[i + 1]))));
        }
        const expected = new Float32Array(latents.length);
        for (let k = 0; k < expected.length; k++) {
          const mk = m[k % (h * w)];
          expected[k] = f32(f32(f32(1 - mk) * proper[k]) + f32(mk * stepped[k]));
        }
        expect((traced.get(`step.${i}.latents`) as Tensor).data).toEqual(expected);
        latents = expected;
      }
      // Outside the mask the final latents are the image latents exactly; inside they are the model's.
      for (let k = 0; k < latents.length; k++) {
        if (m[k % (h * w)] === 0) expect(r.latents.data[k]).toBe(imageLatents[k]);
      }
      expect(r.latents.data.some((x, k) => m[k % (h * w)] === 1 && x !== imageLatents[k])).toBe(true);
    });
  }
});
