/**
 * SDXL img2img (StableDiffusionXLImg2ImgPipeline) with recording stand-in networks: the text
 * encoders answer with values derived from (encoder, token ids), the VAE encoder with fixed
 * posterior moments, the UNet records what it is called with. Asserted:
 *   - add_time_ids: with requires_aesthetics_score [H, W, 0, 0, 6.0] and the negative row ending
 *     in 2.5 (or the scores given); without it [H, W, 0, 0, H, W] for both rows;
 *   - the refiner layout: only text_encoder_2 is called, with `prompt` (not `prompt_2`) through
 *     tokenizer_2; prompt_embeds = its penultimate state alone, text_embeds = its pooled output;
 *     with force_zeros_for_empty_prompt false the negative prompt ("") is encoded;
 *   - classifier-free guidance batches everything uncond first;
 *   - strength cuts the schedule to its last int(steps * strength) timesteps;
 *   - the generator draws: the VAE posterior sample first, then the noise of add_noise at the
 *     first kept timestep, and nothing else for Euler;
 *   - the init image preprocessing (2 * x / 255 - 1, NCHW) and latents_mean / latents_std
 *     normalization `(x - mean) * scaling_factor / std`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { RgbImage } from '../../src/generate/pipeline.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { generateSdxlImg2Img, sdxlImg2ImgTimeIds, type SdxlModels } from '../../src/generate/sdxl.js';
import type { Tensor } from '../../src/generate/tensor.js';
import { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { TorchGenerator } from '../../src/generate/torch-random.js';

const D1 = 5;
const D2 = 3;
const P = 4;
const H = 32;
const W = 48;
const SF = Math.fround(0.13025);

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

function hiddenValue(which: number, ids: Int32Array, s: number, d: number): number {
  return Math.fround((which + 1) * 1000 + (ids[s] % 997) + s * 0.01 + d * 0.0001);
}

function pooledOf(ids: Int32Array): Float32Array {
  return new Float32Array(P).map((_, i) => Math.fround(-(ids[1] % 101) - i * 0.5));
}

function penultimateOf(which: number, ids: Int32Array): Float32Array {
  const D = which === 0 ? D1 : D2;
  const data = new Float32Array(ids.length * D);
  for (let s = 0; s < ids.length; s++) for (let d = 0; d < D; d++) data[s * D + d] = hiddenValue(which, ids, s, d);
  return data;
}

/** Moments of the stand-in VAE encoder: mean and log-variance per latent element. */
function momentsOf(h: number, w: number): Float32Array {
  const n = 4 * h * w;
  const m = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    m[i] = Math.fround(Math.sin(i) * 2);
    m[n + i] = Math.fround(-3 + (i % 7) * 0.5);
  }
  return m;
}

interface UnetCall {
  sample: Tensor;
  t: number;
  ehs: Tensor;
  extra?: Readonly<Record<string, Tensor>>;
}

function recorder(): SdxlModels & { calls: UnetCall[]; encoded: { which: number; ids: number[] }[]; images: Tensor[] } {
  const calls: UnetCall[] = [];
  const encoded: { which: number; ids: number[] }[] = [];
  const images: Tensor[] = [];
  return {
    calls,
    encoded,
    images,
    async encodeTextXL(which, ids) {
      encoded.push({ which, ids: [...ids] });
      const penultimate = { data: penultimateOf(which, ids), shape: [1, ids.length, which === 0 ? D1 : D2] };
      if (which === 0) return { penultimate };
      return { penultimate, textEmbeds: { data: pooledOf(ids), shape: [1, P] } };
    },
    async unet(sample, t, ehs, extra) {
      calls.push({ sample: { data: sample.data.slice(), shape: [...sample.shape] }, t, ehs, extra });
      // Distinct halves, so that the guidance combination is checkable.
      const out = new Float32Array(sample.data.length);
      const half = out.length / sample.shape[0];
      for (let i = 0; i < out.length; i++) out[i] = i < half && sample.shape[0] === 2 ? 0.1 : 0.3;
      return { data: out, shape: [...sample.shape] };
    },
    async vaeDecode(latents) {
      const [, , h, w] = latents.shape;
      return { data: new Float32Array(3 * h * 8 * w * 8), shape: [1, 3, h * 8, w * 8] };
    },
    async vaeEncode(image) {
      images.push({ data: image.data.slice(), shape: [...image.shape] });
      const [, , h, w] = image.shape;
      return { data: momentsOf(h / 8, w / 8), shape: [1, 8, h / 8, w / 8] };
    },
  };
}

function initImage(): RgbImage {
  const data = new Uint8Array(H * W * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
  return { data, width: W, height: H };
}

function rows(t: Tensor): number[][] {
  const [b, n] = t.shape;
  return Array.from({ length: b }, (_, i) => Array.from(t.data.subarray(i * n, (i + 1) * n)));
}

describe('SDXL img2img add_time_ids', () => {
  it('with requires_aesthetics_score: 5 ids ending in the aesthetic scores', () => {
    expect(sdxlImg2ImgTimeIds(1024, 768, { requiresAestheticsScore: true })).toEqual({ cond: [1024, 768, 0, 0, 6], uncond: [1024, 768, 0, 0, 2.5] });
    expect(sdxlImg2ImgTimeIds(64, 64, { requiresAestheticsScore: true, aestheticScore: 7, negativeAestheticScore: 1, originalSize: [128, 96], cropsCoordsTopLeft: [4, 2] })).toEqual({
      cond: [128, 96, 4, 2, 7],
      uncond: [128, 96, 4, 2, 1],
    });
  });
  it('without: the txt2img row for both sides', () => {
    expect(sdxlImg2ImgTimeIds(1024, 768)).toEqual({ cond: [1024, 768, 0, 0, 1024, 768], uncond: [1024, 768, 0, 0, 1024, 768] });
  });
});

describe('SDXL refiner img2img with stand-in networks', () => {
  it('text_encoder_2 alone, encoded negatives, aesthetic time ids, uncond first', async () => {
    const models = recorder();
    const traced: Record<string, Tensor | Int32Array | number[]> = {};
    const r = await generateSdxlImg2Img({
      prompt: 'a red house',
      prompt2: 'ignored by the refiner',
      tokenizers: [null, tokenizers[1]],
      models,
      image: initImage(),
      strength: 0.5,
      steps: 4,
      guidanceScale: 6,
      seed: 7,
      forceZerosForEmptyPrompt: false,
      requiresAestheticsScore: true,
      scheduler: createScheduler(EULER),
      expectedAddEmbedDim: 5 * 8 + P,
      additionTimeEmbedDim: 8,
      trace: (name, v) => {
        traced[name] = v;
      },
    });
    const condIds = tokenizers[1].encode('a red house').ids;
    const uncondIds = tokenizers[1].encode('').ids;
    // Only text_encoder_2, the prompt (not prompt_2), then the negative "".
    expect(models.encoded).toEqual([
      { which: 1, ids: condIds },
      { which: 1, ids: uncondIds },
    ]);
    expect(r.inputIds).toEqual({ cond: condIds, uncond: uncondIds });
    expect(models.calls).toHaveLength(2);
    for (const call of models.calls) {
      expect(call.ehs.shape).toEqual([2, 77, D2]);
      expect(Array.from(call.ehs.data.subarray(0, 77 * D2))).toEqual(Array.from(penultimateOf(1, Int32Array.from(uncondIds))));
      expect(Array.from(call.ehs.data.subarray(77 * D2))).toEqual(Array.from(penultimateOf(1, Int32Array.from(condIds))));
      const x = call.extra as Record<string, Tensor>;
      expect(rows(x.text_embeds)).toEqual([Array.from(pooledOf(Int32Array.from(uncondIds))), Array.from(pooledOf(Int32Array.from(condIds)))]);
      expect(rows(x.time_ids)).toEqual([
        [H, W, 0, 0, 2.5],
        [H, W, 0, 0, 6],
      ]);
      expect(call.sample.shape).toEqual([2, 4, H / 8, W / 8]);
    }
    expect(traced['add_time_ids.cond']).toBeDefined();
  });

  it('guidance 1: one batch row, the positive time ids only, no negative encoding', async () => {
    const models = recorder();
    await generateSdxlImg2Img({
      prompt: 'a red house',
      tokenizers: [null, tokenizers[1]],
      models,
      image: initImage(),
      strength: 0.5,
      steps: 2,
      guidanceScale: 1,
      forceZerosForEmptyPrompt: false,
      requiresAestheticsScore: true,
      scheduler: createScheduler(EULER),
    });
    expect(models.encoded.map((e) => e.which)).toEqual([1]);
    expect(models.calls).toHaveLength(1);
    expect(rows((models.calls[0].extra as Record<string, Tensor>).time_ids)).toEqual([[H, W, 0, 0, 6]]);
    expect(models.calls[0].ehs.shape).toEqual([1, 77, D2]);
  });

  it('a UNet that wants one time id more is refused with a requires_aesthetics_score hint', async () => {
    await expect(
      generateSdxlImg2Img({
        prompt: 'x',
        tokenizers: [null, tokenizers[1]],
        models: recorder(),
        image: initImage(),
        steps: 2,
        scheduler: createScheduler(EULER),
        requiresAestheticsScore: false,
        expectedAddEmbedDim: 7 * 8 + P,
        additionTimeEmbedDim: 8,
      }),
    ).rejects.toMatchObject({ code: 'E_PIPELINE' });
  });
});

describe('SDXL base img2img with stand-in networks', () => {
  it('both encoders, zero negatives (force_zeros_for_empty_prompt), 6 time ids for both rows', async () => {
    const models = recorder();
    await generateSdxlImg2Img({
      prompt: 'a red house',
      tokenizers,
      models,
      image: initImage(),
      strength: 0.5,
      steps: 2,
      guidanceScale: 5,
      scheduler: createScheduler(EULER),
    });
    expect(models.encoded.map((e) => e.which)).toEqual([0, 1]);
    const call = models.calls[0];
    expect(call.ehs.shape).toEqual([2, 77, D1 + D2]);
    expect(call.ehs.data.subarray(0, 77 * (D1 + D2)).every((v) => v === 0)).toBe(true);
    const x = call.extra as Record<string, Tensor>;
    expect(rows(x.text_embeds)[0]).toEqual([0, 0, 0, 0]);
    expect(rows(x.time_ids)).toEqual([
      [H, W, 0, 0, H, W],
      [H, W, 0, 0, H, W],
    ]);
  });
});

describe('SDXL img2img schedule, draws and latents', () => {
  it('strength cuts the schedule; posterior draw, then add_noise draw at the first kept timestep; guidance combined uncond first', async () => {
    const models = recorder();
    const traced: Record<string, Tensor | Int32Array | number[]> = {};
    const draws: string[] = [];
    const r = await generateSdxlImg2Img({
      prompt: 'a red house',
      tokenizers,
      models,
      image: initImage(),
      strength: 0.45,
      steps: 10,
      guidanceScale: 3,
      seed: 1234,
      scheduler: createScheduler(EULER),
      output: 'latent',
      trace: (name, v) => {
        if (name.startsWith('randn.')) draws.push(name);
        traced[name] = name === 'latents.initial' || name.startsWith('step.0.') ? { data: (v as Tensor).data.slice(), shape: [...(v as Tensor).shape] } : v;
      },
    });
    // Full leading schedule for 10 steps: 901, 801, ..., 1; int(10 * 0.45) = 4 kept.
    expect(r.timesteps).toEqual([301, 201, 101, 1]);
    expect(models.calls.map((c) => c.t)).toEqual([301, 201, 101, 1]);
    expect(draws).toEqual(['randn.0', 'randn.1']);

    // The init image as the VAE encoder got it.
    const img = models.images[0];
    expect(img.shape).toEqual([1, 3, H, W]);
    const src = initImage().data;
    expect(img.data[0]).toBe(Math.fround(Math.fround(2 * Math.fround(src[0] / 255)) - 1));
    expect(img.data[H * W + 5]).toBe(Math.fround(Math.fround(2 * Math.fround(src[5 * 3 + 1] / 255)) - 1));

    // Expected initial latents from the same generator, drawn in Diffusers' order.
    const shape = [1, 4, H / 8, W / 8];
    const g = new TorchGenerator(1234);
    const eps = g.randn(shape);
    const noise = g.randn(shape);
    const m = momentsOf(H / 8, W / 8);
    const n = eps.length;
    const imageLatents = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const std = Math.fround(Math.exp(Math.fround(0.5 * m[n + i])));
      imageLatents[i] = Math.fround(SF * Math.fround(m[i] + Math.fround(std * eps[i])));
    }
    expect(Array.from((traced['img2img.image_latents'] as Tensor).data)).toEqual(Array.from(imageLatents));
    const ref = createScheduler(EULER);
    ref.setTimesteps(10, 0.45);
    const expected = ref.addNoise(imageLatents, noise, 301);
    expect(Array.from((traced['latents.initial'] as Tensor).data)).toEqual(Array.from(expected));

    // Guidance: the stand-in UNet answers 0.1 for the first (uncond) half and 0.3 for the second
    // (cond): the step takes uncond + g * (cond - uncond).
    expect(Array.from(models.calls[0].sample.data.subarray(0, n))).toEqual(Array.from(models.calls[0].sample.data.subarray(n)));
    const f = Math.fround;
    const pred = new Float32Array(n).fill(f(f(0.1) + f(3 * f(f(0.3) - f(0.1)))));
    const stepped = ref.step(pred, 301, expected, { generator: { randn: () => expect.fail('Euler draws no noise') }, shape });
    expect(Array.from((traced['step.0.latents'] as Tensor).data)).toEqual(Array.from(stepped));
  });

  it('latents_mean / latents_std: (sample - mean) * scaling_factor / std', async () => {
    const models = recorder();
    const traced: Record<string, Tensor | Int32Array | number[]> = {};
    const mean = [0.1, -0.2, 0.3, 0.05];
    const std = [2, 0.5, 1.5, 1];
    await generateSdxlImg2Img({
      prompt: 'x',
      tokenizers,
      models,
      image: initImage(),
      strength: 0.5,
      steps: 2,
      seed: 3,
      latentsMean: mean,
      latentsStd: std,
      scheduler: createScheduler(EULER),
      output: 'latent',
      trace: (name, v) => {
        traced[name] = v;
      },
    });
    const shape = [1, 4, H / 8, W / 8];
    const eps = new TorchGenerator(3).randn(shape);
    const m = momentsOf(H / 8, W / 8);
    const n = eps.length;
    const plane = n / 4;
    const got = (traced['img2img.image_latents'] as Tensor).data;
    for (const i of [0, plane + 3, 2 * plane + 7, n - 1]) {
      const c = Math.floor(i / plane);
      const sample = Math.fround(m[i] + Math.fround(Math.fround(Math.exp(Math.fround(0.5 * m[n + i]))) * eps[i]));
      expect(got[i]).toBe(Math.fround(Math.fround(Math.fround(sample - Math.fround(mean[c])) * SF) / Math.fround(std[c])));
    }
  });

  it('strength leaving no step is a usage error', async () => {
    await expect(
      generateSdxlImg2Img({ prompt: 'x', tokenizers, models: recorder(), image: initImage(), strength: 0.05, steps: 10, scheduler: createScheduler(EULER) }),
    ).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});
