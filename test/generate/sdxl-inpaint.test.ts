/**
 * SDXL inpainting (StableDiffusionXLInpaintPipeline) with recording stand-in networks: the text
 * encoders answer with values derived from (encoder, token ids), the VAE encoder with posterior
 * moments derived from the image it is given, the UNet records what it is called with. Asserted:
 *   - 9-channel UNets get cat([scaled latents, mask, masked_image_latents], dim=1) in that channel
 *     order, batched uncond first, with SDXL's text_embeds / time_ids extra inputs;
 *   - the time ids: the txt2img row [H, W, 0, 0, H, W] for both sides, or with
 *     requires_aesthetics_score [H, W, 0, 0, 6] / [H, W, 0, 0, 2.5];
 *   - the default strength 0.9999: int(steps * 0.9999) timesteps, and the latents start from
 *     add_noise(image latents, noise, first timestep) (the image is always encoded);
 *   - the random draws: image posterior sample, noise, masked-image posterior sample;
 *   - the encoder latents are posterior sample x scaling_factor (no latents_mean / latents_std),
 *     the decoder input `latents * std / scaling_factor + mean`;
 *   - 4-channel UNets: after every step the kept area (mask 0) holds the image latents noised to
 *     the next timestep (unnoised after the last), the repainted area the scheduler's output,
 *     replayed with an independent scheduler.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { sampleLatents, type RgbImage } from '../../src/generate/pipeline.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { generateSdxlInpaint, SDXL_INPAINT_DEFAULT_STRENGTH, type SdxlModels } from '../../src/generate/sdxl.js';
import { f32, type Tensor } from '../../src/generate/tensor.js';
import { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { TorchGenerator } from '../../src/generate/torch-random.js';

const D1 = 5;
const D2 = 3;
const P = 4;
const H = 32;
const W = 48;
const h = H / 8;
const w = W / 8;
const SF = Math.fround(0.13025);
const LATENT = [1, 4, h, w];

const EULER: SchedulerConfigJson = {
  _class_name: 'EulerDiscreteScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  steps_offset: 1,
  timestep_spacing: 'leading',
  interpolation_type: 'linear',
  use_karras_sigmas: false,
} as SchedulerConfigJson;

let tokenizers: [ClipTokenizer, ClipTokenizer];
beforeAll(async () => {
  tokenizers = [await ClipTokenizer.packaged(), await ClipTokenizer.packaged({ padToken: '!' })];
});

/** Posterior moments from an image [1, 3, H, W]: mean = the pixel at the block's corner (channel c % 3), logvar fixed. */
function momentsOf(image: Tensor): Float32Array {
  const n = 4 * h * w;
  const m = new Float32Array(2 * n);
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (c * h + y) * w + x;
        m[i] = Math.fround(image.data[((c % 3) * H + y * 8) * W + x * 8] * 2 + c * 0.25);
        m[n + i] = -4;
      }
    }
  }
  return m;
}

interface Recorder extends SdxlModels {
  samples: Tensor[];
  extras: Record<string, Tensor>[];
  images: Tensor[];
  decoded: Tensor[];
}

function recorder(): Recorder {
  const samples: Tensor[] = [];
  const extras: Record<string, Tensor>[] = [];
  const images: Tensor[] = [];
  const decoded: Tensor[] = [];
  return {
    samples,
    extras,
    images,
    decoded,
    async encodeTextXL(which, ids) {
      const D = which === 0 ? D1 : D2;
      const penultimate = { data: new Float32Array(ids.length * D).map((_, i) => Math.fround((which + 1) * 10 + (ids[Math.floor(i / D)] % 97) * 0.01)), shape: [1, ids.length, D] };
      if (which === 0) return { penultimate };
      return { penultimate, textEmbeds: { data: new Float32Array(P).map((_, i) => Math.fround(1 + i + (ids[1] % 13))), shape: [1, P] } };
    },
    async unet(sample, _t, _ehs, extra) {
      samples.push({ data: sample.data.slice(), shape: [...sample.shape] });
      extras.push(extra as Record<string, Tensor>);
      const [b, , hh, ww] = sample.shape;
      const out = new Float32Array(b * 4 * hh * ww);
      const half = out.length / b;
      for (let i = 0; i < out.length; i++) out[i] = i < half && b === 2 ? 0.1 : 0.3;
      return { data: out, shape: [b, 4, hh, ww] };
    },
    async vaeDecode(latents) {
      decoded.push({ data: latents.data.slice(), shape: [...latents.shape] });
      return { data: new Float32Array(3 * H * W), shape: [1, 3, H, W] };
    },
    async vaeEncode(image) {
      images.push({ data: image.data.slice(), shape: [...image.shape] });
      return { data: momentsOf(image), shape: [1, 8, h, w] };
    },
  };
}

function initImage(): RgbImage {
  const data = new Uint8Array(H * W * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + 11) % 256;
  return { data, width: W, height: H };
}

/** White (repaint) in the right half of pixel rows 8..23, black elsewhere: latent rows 1..2, columns 3..5. */
function maskImage(): RgbImage {
  const data = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (y >= 8 && y < 24 && x >= 24) data.fill(255, (y * W + x) * 3, (y * W + x) * 3 + 3);
  return { data, width: W, height: H };
}

const latentMask = Float32Array.from({ length: h * w }, (_, p) => (Math.floor(p / w) >= 1 && Math.floor(p / w) <= 2 && p % w >= 3 ? 1 : 0));

function channel(t: Tensor, b: number, c: number): number[] {
  const [, C, hh, ww] = t.shape;
  const plane = hh * ww;
  return Array.from(t.data.subarray((b * C + c) * plane, (b * C + c + 1) * plane));
}

function rows(t: Tensor): number[][] {
  const [b, n] = t.shape;
  return Array.from({ length: b }, (_, i) => Array.from(t.data.subarray(i * n, (i + 1) * n)));
}

/** The image preprocessing, the masked image, and their posterior samples from an independent generator. */
function expectedLatents(seed: number): { image: Float32Array; noise: Float32Array; masked: Float32Array; maskedImage: Tensor } {
  const img = initImage();
  const pre = new Float32Array(3 * H * W);
  for (let p = 0; p < H * W; p++) for (let c = 0; c < 3; c++) pre[c * H * W + p] = f32(f32(2 * f32(img.data[p * 3 + c] / 255)) - 1);
  const m = maskImage();
  const maskedData = pre.map((v, i) => (m.data[(i % (H * W)) * 3] >= 128 ? 0 : v));
  const maskedImage = { data: maskedData, shape: [1, 3, H, W] };
  const g = new TorchGenerator(seed);
  const image = sampleLatents(momentsOf({ data: pre, shape: [1, 3, H, W] }), g.randn(LATENT), SF);
  const noise = g.randn(LATENT);
  const masked = sampleLatents(momentsOf(maskedImage), g.randn(LATENT), SF);
  return { image, noise, masked, maskedImage };
}

describe('SDXL inpainting with a 9-channel UNet', () => {
  it('UNet input [latents, mask, masked_image_latents], SDXL time ids, default strength 0.9999, the draws in order', async () => {
    const models = recorder();
    const traced: Record<string, Tensor | number[]> = {};
    const mean = [0.5, -0.25, 0.125, 1];
    const std = [2, 4, 0.5, 1];
    const r = await generateSdxlInpaint({
      prompt: 'a red door',
      tokenizers,
      models,
      image: initImage(),
      mask: maskImage(),
      unetInChannels: 9,
      steps: 10,
      guidanceScale: 6,
      seed: 11,
      scheduler: createScheduler(EULER),
      latentsMean: mean,
      latentsStd: std,
      expectedAddEmbedDim: 6 * 8 + P,
      additionTimeEmbedDim: 8,
      trace: (name, v) => {
        traced[name] = 'data' in v ? { data: v.data.slice() as Float32Array, shape: [...v.shape] } : [...v];
      },
    });
    expect(SDXL_INPAINT_DEFAULT_STRENGTH).toBe(0.9999);
    // int(10 * 0.9999) = 9 of the leading schedule.
    const ref = createScheduler(EULER);
    const kept = ref.setTimesteps(10, 0.9999);
    expect(kept).toHaveLength(9);
    expect(r.timesteps).toEqual(kept);
    expect(models.samples).toHaveLength(9);

    // Three draws: image posterior, noise, masked-image posterior (Euler draws nothing more).
    expect(Object.keys(traced).filter((k) => k.startsWith('randn.'))).toEqual(['randn.0', 'randn.1', 'randn.2']);
    const e = expectedLatents(11);
    // The VAE encoder gets the image, then the masked image; the latents are not normalized by latents_mean / std.
    expect(models.images).toHaveLength(2);
    expect(Array.from(models.images[1].data)).toEqual(Array.from(e.maskedImage.data));
    expect(Array.from((traced['inpaint.image_latents'] as Tensor).data)).toEqual(Array.from(e.image));
    expect(Array.from((traced['inpaint.masked_image_latents'] as Tensor).data)).toEqual(Array.from(e.masked));
    // strength < 1: add_noise at the first kept timestep (not noise x init_noise_sigma).
    expect(Array.from((traced['latents.initial'] as Tensor).data)).toEqual(Array.from(ref.addNoise(e.image, e.noise, kept[0])));

    for (const [i, s] of models.samples.entries()) {
      expect(s.shape).toEqual([2, 9, h, w]);
      const scaled = traced[`step.${i}.unet.sample`] as Tensor;
      for (let b = 0; b < 2; b++) {
        for (let c = 0; c < 4; c++) expect(channel(s, b, c)).toEqual(channel(scaled, b, c));
        expect(channel(s, b, 4)).toEqual(Array.from(latentMask));
        for (let c = 0; c < 4; c++) expect(channel(s, b, 5 + c)).toEqual(Array.from(e.masked.subarray(c * h * w, (c + 1) * h * w)));
      }
      const x = models.extras[i];
      expect(rows(x.time_ids)).toEqual([
        [H, W, 0, 0, H, W],
        [H, W, 0, 0, H, W],
      ]);
      // force_zeros_for_empty_prompt with no negative prompt: zero negative pooled embeddings.
      expect(rows(x.text_embeds)[0]).toEqual([0, 0, 0, 0]);
      expect(rows(x.text_embeds)[1]).not.toEqual([0, 0, 0, 0]);
    }

    // The decoder input: latents * std / scaling_factor + mean.
    const fin = r.latents;
    const plane = h * w;
    const expected = Array.from(fin.data, (v, i) => {
      const c = Math.floor(i / plane);
      return f32(f32(f32(v * f32(std[c])) / SF) + f32(mean[c]));
    });
    expect(Array.from(models.decoded[0].data)).toEqual(expected);
  });

  it('requires_aesthetics_score: time ids end in the aesthetic scores; guidance 1 gives one batch row', async () => {
    const models = recorder();
    await generateSdxlInpaint({
      prompt: 'a red door',
      tokenizers,
      models,
      image: initImage(),
      mask: maskImage(),
      unetInChannels: 9,
      steps: 3,
      strength: 1,
      guidanceScale: 1,
      requiresAestheticsScore: true,
      scheduler: createScheduler(EULER),
    });
    expect(models.samples).toHaveLength(3);
    expect(models.samples[0].shape).toEqual([1, 9, h, w]);
    expect(rows(models.extras[0].time_ids)).toEqual([[H, W, 0, 0, 6]]);
    // strength 1 with a 9-channel UNet: only the masked image goes through the VAE encoder.
    expect(models.images).toHaveLength(1);

    const cfg = recorder();
    await generateSdxlInpaint({ prompt: 'x', tokenizers, models: cfg, image: initImage(), mask: maskImage(), unetInChannels: 9, steps: 2, strength: 1, requiresAestheticsScore: true, aestheticScore: 7, negativeAestheticScore: 1, scheduler: createScheduler(EULER) });
    expect(rows(cfg.extras[0].time_ids)).toEqual([
      [H, W, 0, 0, 1],
      [H, W, 0, 0, 7],
    ]);
  });

  it('refuses UNet widths that fit neither 4 nor 9 channels', async () => {
    await expect(
      generateSdxlInpaint({ prompt: 'x', tokenizers, models: recorder(), image: initImage(), mask: maskImage(), unetInChannels: 8, steps: 2, scheduler: createScheduler(EULER) }),
    ).rejects.toMatchObject({ code: 'E_PIPELINE' });
  });
});

describe('SDXL inpainting with a 4-channel UNet (latent blending)', () => {
  it('the kept area follows the noised image latents, the repainted area the scheduler', async () => {
    const models = recorder();
    const traced: Record<string, Tensor> = {};
    const g = 6;
    const r = await generateSdxlInpaint({
      prompt: 'a red door',
      tokenizers,
      models,
      image: initImage(),
      mask: maskImage(),
      unetInChannels: 4,
      steps: 5,
      guidanceScale: g,
      seed: 3,
      scheduler: createScheduler(EULER),
      trace: (name, v) => {
        if (name.startsWith('step.') || name === 'latents.initial') traced[name] = { data: (v as Tensor).data.slice(), shape: [...(v as Tensor).shape] };
      },
    });
    expect(models.samples.every((s) => s.shape[1] === 4)).toBe(true);
    const e = expectedLatents(3);
    const ref = createScheduler(EULER);
    const ts = ref.setTimesteps(5, SDXL_INPAINT_DEFAULT_STRENGTH);
    expect(r.timesteps).toEqual(ts);
    let lat = ref.addNoise(e.image, e.noise, ts[0]);
    expect(Array.from(traced['latents.initial'].data)).toEqual(Array.from(lat));
    const pred = new Float32Array(lat.length).fill(f32(0.1 + f32(g * f32(0.3 - 0.1))));
    const plane = h * w;
    for (let i = 0; i < ts.length; i++) {
      const stepped = ref.step(pred, ts[i], lat, { shape: LATENT });
      const proper = i < ts.length - 1 ? ref.addNoise(e.image, e.noise, ts[i + 1]) : e.image;
      lat = stepped.map((v, k) => (latentMask[k % plane] === 1 ? v : proper[k]));
      expect(Array.from(traced[`step.${i}.latents`].data), `step ${i}`).toEqual(Array.from(lat));
    }
    // After the last step the kept area is the unnoised image latents.
    for (let k = 0; k < lat.length; k++) if (latentMask[k % plane] === 0) expect(r.latents.data[k]).toBe(e.image[k]);
  });
});
