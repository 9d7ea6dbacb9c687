/**
 * InstructPix2Pix and depth-to-image with recording stand-in networks: the UNet input channel
 * order ([latents, image latents] / [latents, depth]), the guidance batches (pix2pix: 3 entries,
 * embeddings [cond, uncond, uncond], image latents [image, image, zeros]; depth: the usual 2), the
 * pix2pix guidance formula, the image latents as the posterior mode (no draw, no scaling), the
 * depth map resizing / normalisation, and the random draws.
 */
import { describe, expect, it } from 'vitest';
import { depthFromImage, generateDepth, prepareDepthMap, resizeBicubic } from '../../src/generate/depth.js';
import type { PipelineModels, RgbImage } from '../../src/generate/pipeline.js';
import { sampleLatents } from '../../src/generate/pipeline.js';
import { generatePix2Pix, pix2pixGuidance } from '../../src/generate/pix2pix.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { f32, type Tensor } from '../../src/generate/tensor.js';
import type { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { TorchGenerator } from '../../src/generate/torch-random.js';

const H = 32;
const W = 48;
const F = 8;
const h = H / F;
const w = W / F;
const plane = h * w;

/** ids[0] = text length: the prompt and the empty negative prompt embed differently. */
const tokenizer = { encode: (text: string) => ({ ids: Array.from({ length: 77 }, (_, i) => (i + text.length) % 50), truncated: false }) } as unknown as ClipTokenizer;
const BASE: SchedulerConfigJson = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', steps_offset: 1, set_alpha_to_one: false, clip_sample: false, prediction_type: 'epsilon' };
const copy = (t: Tensor): Tensor => ({ data: t.data.slice(), shape: [...t.shape] });

function image(): RgbImage {
  return { data: new Uint8Array(H * W * 3).map((_, i) => (i * 37 + 11) & 255), width: W, height: H };
}

interface Recorded {
  samples: Tensor[];
  contexts: Tensor[];
  outputs: Tensor[];
}

/** Embeddings filled with ids[0]; UNet output per batch entry from its context and sample; moments: mean c + 1 + pixel / 8, logvar -2. */
function standIns(): PipelineModels & Recorded {
  const samples: Tensor[] = [];
  const contexts: Tensor[] = [];
  const outputs: Tensor[] = [];
  return {
    samples,
    contexts,
    outputs,
    async encodeText(ids) {
      return { data: new Float32Array(77 * 8).fill(ids[0]), shape: [1, 77, 8] };
    },
    async unet(sample, _t, ehs) {
      samples.push(copy(sample));
      contexts.push(copy(ehs));
      const [b, c, hh, ww] = sample.shape;
      const out = new Float32Array(b * 4 * hh * ww);
      for (let n = 0; n < b; n++) {
        for (let i = 0; i < 4 * hh * ww; i++) {
          const extra = sample.data[(n * c + 4) * hh * ww + (i % (hh * ww))];
          out[n * 4 * hh * ww + i] = f32(0.01 * ehs.data[n * 77 * 8] + 0.1 * extra + 0.001 * i);
        }
      }
      const t: Tensor = { data: out, shape: [b, 4, hh, ww] };
      outputs.push(copy(t));
      return t;
    },
    async vaeDecode() {
      return { data: new Float32Array(3 * H * W).fill(0.25), shape: [1, 3, H, W] };
    },
    async vaeEncode(img) {
      const out = new Float32Array(8 * plane);
      for (let c = 0; c < 4; c++) for (let p = 0; p < plane; p++) out[c * plane + p] = f32(c + 1 + img.data[p] / 8);
      out.fill(-2, 4 * plane);
      return { data: out, shape: [1, 8, h, w] };
    },
  };
}

function traceInto(map: Map<string, Tensor>) {
  return (name: string, v: Tensor | Int32Array | number[]) => {
    if (!Array.isArray(v) && !(v instanceof Int32Array)) map.set(name, copy(v));
  };
}

describe('InstructPix2Pix', () => {
  it('runs a batch of 3 with [cond, uncond, uncond] and image latents [mode, mode, zeros] after the latents; guidance uncond + g(text - image) + ig(image - uncond)', async () => {
    const models = standIns();
    const traced = new Map<string, Tensor>();
    const seed = 5;
    const r = await generatePix2Pix({ prompt: 'make it snowy', tokenizer, scheduler: createScheduler(BASE, 'ddim'), models, image: image(), steps: 3, guidanceScale: 7, imageGuidanceScale: 1.5, seed, trace: traceInto(traced) });
    expect(r.timesteps).toHaveLength(3); // no strength: the full schedule
    // Latents: one draw x init_noise_sigma (1 for DDIM); the image encoding takes no draw.
    const noise = new TorchGenerator(seed).randn([1, 4, h, w]);
    expect([...(traced.get('latents.initial') as Tensor).data]).toEqual([...noise]);
    // Image latents: the posterior mean, unscaled.
    const pre = traced.get('pix2pix.image_preprocessed') as Tensor;
    const mode = Float32Array.from({ length: 4 * plane }, (_, i) => f32(Math.floor(i / plane) + 1 + pre.data[i % plane] / 8));
    expect([...(traced.get('pix2pix.image_latents') as Tensor).data]).toEqual([...mode]);
    expect(models.samples).toHaveLength(3);
    for (let s = 0; s < 3; s++) {
      const x = models.samples[s];
      expect(x.shape).toEqual([3, 8, h, w]);
      const entry = (n: number, c0: number, c1: number) => [...x.data.slice((n * 8 + c0) * plane, (n * 8 + c1) * plane)];
      // The three entries share the (scaled) latents in channels 0..3.
      expect(entry(1, 0, 4)).toEqual(entry(0, 0, 4));
      expect(entry(2, 0, 4)).toEqual(entry(0, 0, 4));
      expect(entry(0, 4, 8)).toEqual([...mode]);
      expect(entry(1, 4, 8)).toEqual([...mode]);
      expect(entry(2, 4, 8).every((v) => v === 0)).toBe(true);
      // Contexts: cond ('make it snowy': 13), uncond (''), uncond.
      const ctx = models.contexts[s];
      expect(ctx.shape).toEqual([3, 77, 8]);
      expect([0, 1, 2].map((n) => ctx.data[n * 77 * 8])).toEqual([13, 0, 0]);
    }
    // The pipeline loop sees the guided prediction.
    const out = models.outputs[0];
    const n = 4 * plane;
    const guided = traced.get('step.0.unet.out') as Tensor;
    expect(guided.shape).toEqual([1, 4, h, w]);
    for (let i = 0; i < n; i++) {
      const [text, img, unc] = [out.data[i], out.data[n + i], out.data[2 * n + i]];
      expect(guided.data[i]).toBeCloseTo(unc + 7 * (text - img) + 1.5 * (img - unc), 5);
    }
    expect([...guided.data]).toEqual([...pix2pixGuidance(out.data.slice(0, n), out.data.slice(n, 2 * n), out.data.slice(2 * n), 7, 1.5)]);
    expect(r.inputIds.uncond).toBeDefined();
  });

  it('without guidance (image guidance < 1) runs batch 1: [latents, image latents] with the prompt embeddings', async () => {
    const models = standIns();
    await generatePix2Pix({ prompt: 'x', tokenizer, scheduler: createScheduler(BASE, 'euler'), models, image: image(), steps: 2, guidanceScale: 7, imageGuidanceScale: 0.5, seed: 1 });
    expect(models.samples.map((s) => s.shape)).toEqual([[1, 8, h, w], [1, 8, h, w]]);
    expect(models.contexts[0].shape).toEqual([1, 77, 8]);
    expect(models.contexts[0].data[0]).toBe(1);
    // Channel 4 holds the first image-latent channel (posterior mean: 1 + pixel / 8), not noise.
    expect(models.samples[0].data[4 * plane]).toBe(models.samples[1].data[4 * plane]);
  });
});

describe('depth map preparation', () => {
  it('bicubic resize (align_corners=False) keeps constants, reproduces a ramp inside, is the identity at the same size', () => {
    const ramp: Tensor = { data: Float32Array.from({ length: 16 * 16 }, (_, i) => i % 16), shape: [1, 1, 16, 16] };
    expect([...resizeBicubic(ramp, 16, 16).data]).toEqual([...ramp.data]);
    const half = resizeBicubic(ramp, 8, 8);
    // Output column x samples source column 2x + 0.5; cubic convolution is exact on linear data away from the borders.
    for (let x = 1; x < 7; x++) expect(half.data[3 * 8 + x]).toBeCloseTo(2 * x + 0.5, 5);
    const flat = resizeBicubic({ data: new Float32Array(36).fill(0.3), shape: [1, 1, 6, 6] }, 4, 5);
    for (const v of flat.data) expect(v).toBeCloseTo(0.3, 6);
  });

  it('normalises to [-1, 1] at the latent size; a flat map is a usage error', () => {
    const grey: RgbImage = { data: new Uint8Array(20 * 10 * 3).map((_, i) => Math.floor(i / 3) % 20 * 10), width: 20, height: 10 };
    const d = depthFromImage(grey);
    expect(d.shape).toEqual([1, 1, 10, 20]);
    expect(d.data[19]).toBe(f32(190 / 255));
    const p = prepareDepthMap(d, 4, 6);
    expect(p.shape).toEqual([1, 1, 4, 6]);
    expect(Math.min(...p.data)).toBe(-1);
    expect(Math.max(...p.data)).toBe(1);
    expect(() => prepareDepthMap({ data: new Float32Array(4).fill(2), shape: [1, 1, 2, 2] }, 2, 2)).toThrow(/flat/);
  });
});

describe('depth-to-image', () => {
  it('feeds cat([latents, depth]) for both guidance rows; img2img latents (sample draw, then noise) at strength 0.8', async () => {
    const models = standIns();
    const traced = new Map<string, Tensor>();
    const depth: RgbImage = { data: new Uint8Array(16 * 24 * 3).map((_, i) => (Math.floor(i / 3) * 7) & 255), width: 24, height: 16 };
    const scheduler = createScheduler(BASE, 'ddim');
    const r = await generateDepth({ prompt: 'a castle', tokenizer, scheduler, models, image: image(), depth, steps: 10, seed: 3, trace: traceInto(traced) });
    expect(r.timesteps).toHaveLength(8);
    const expectedDepth = prepareDepthMap(depthFromImage(depth), h, w);
    expect([...(traced.get('depth.depth_map') as Tensor).data]).toEqual([...expectedDepth.data]);
    // Draws: the posterior sample, then the noise.
    const g = new TorchGenerator(3);
    const eps = g.randn([1, 4, h, w]);
    const noise = g.randn([1, 4, h, w]);
    const pre = traced.get('depth.image_preprocessed') as Tensor;
    const moments = Float32Array.from({ length: 8 * plane }, (_, i) => (i < 4 * plane ? f32(Math.floor(i / plane) + 1 + pre.data[i % plane] / 8) : -2));
    const imageLatents = sampleLatents(moments, eps, 0.18215);
    const replay = createScheduler(BASE, 'ddim');
    replay.setTimesteps(10, 0.8);
    expect([...(traced.get('latents.initial') as Tensor).data]).toEqual([...replay.addNoise(imageLatents, noise, r.timesteps[0])]);
    for (const x of models.samples) {
      expect(x.shape).toEqual([2, 5, h, w]);
      expect([...x.data.slice(4 * plane, 5 * plane)]).toEqual([...expectedDepth.data]);
      expect([...x.data.slice(9 * plane, 10 * plane)]).toEqual([...expectedDepth.data]);
      expect([...x.data.slice(5 * plane, 9 * plane)]).toEqual([...x.data.slice(0, 4 * plane)]);
    }
    expect(models.contexts[0].shape).toEqual([2, 77, 8]);
    expect([models.contexts[0].data[0], models.contexts[0].data[77 * 8]]).toEqual([0, 8]); // uncond first
  });
});
