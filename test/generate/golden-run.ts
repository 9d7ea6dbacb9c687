/**
 * Reading Diffusers' end-to-end pipeline goldens (golden/sd1-pipe/pipeline/) and replaying them:
 * the "replay" models return the recorded text embeddings, UNet outputs and image, so a run of our
 * pipeline exercises everything except the networks (tokenizer, generator draws, timesteps,
 * scheduler math, guidance, img2img noising) against what Diffusers computed.
 */
import { readFileSync } from 'node:fs';
import { openSafetensors } from '../../src/formats/safetensors.js';
import type { PipelineModels, RgbImage } from '../../src/generate/pipeline.js';
import { f32, floatBits, floatFromBits, type Tensor } from '../../src/generate/tensor.js';
import { FileSource } from '../../src/io/file-source.js';
import { sharedFixture } from '../helpers/paths.js';

export interface GoldenRunInfo {
  run: string;
  file: string;
  kind: 'txt2img' | 'img2img';
  args: {
    prompt: string;
    negative_prompt: string | null;
    seed: number;
    num_inference_steps: number;
    guidance_scale: number;
    height: number;
    width: number;
    strength?: number;
  };
  scheduler_class: string;
  scheduler_config: Record<string, unknown>;
  do_classifier_free_guidance: boolean;
  unet_calls: number;
}

export interface GoldenTensor {
  dtype: string;
  shape: number[];
  /** Float tensors as Float32Array, integer ones as plain numbers. */
  data: Float32Array | number[];
}

export const PIPELINE_DIR = 'golden/sd1-pipe/pipeline';

export function goldenIndex(): { runs: GoldenRunInfo[] } {
  return JSON.parse(readFileSync(sharedFixture(`${PIPELINE_DIR}/index.json`), 'utf8')) as { runs: GoldenRunInfo[] };
}

/** Every tensor of a safetensors file, decoded. */
export async function readAllTensors(path: string): Promise<Map<string, GoldenTensor>> {
  const src = await openSafetensors(await FileSource.open(path));
  try {
    const out = new Map<string, GoldenTensor>();
    for (const t of src.tensors) {
      const bytes = await src.readTensor(t.name);
      const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      let data: Float32Array | number[];
      if (t.dtype === 'F32') data = new Float32Array(buf);
      else if (t.dtype === 'I64') data = Array.from(new BigInt64Array(buf), Number);
      else if (t.dtype === 'U8') data = Array.from(new Uint8Array(buf));
      else throw new Error(`unexpected dtype ${t.dtype} of ${t.name}`);
      out.set(t.name, { dtype: t.dtype, shape: [...t.shape], data });
    }
    return out;
  } finally {
    await src.close();
  }
}

export async function readGoldenRun(run: GoldenRunInfo): Promise<Map<string, GoldenTensor>> {
  return readAllTensors(sharedFixture(`${PIPELINE_DIR}/${run.file}`));
}

function floatTensor(g: Map<string, GoldenTensor>, name: string): Tensor {
  const t = g.get(name);
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`golden has no float tensor ${name}`);
  return { data: t.data, shape: t.shape };
}

export function initImageOf(g: Map<string, GoldenTensor>): RgbImage {
  const t = g.get('img2img.init_image');
  if (!t) throw new Error('golden has no img2img.init_image');
  return { data: Uint8Array.from(t.data as number[]), height: t.shape[0], width: t.shape[1] };
}

/**
 * Models that replay the golden: text embeddings by token ids, the UNet output of each call in
 * order, the decoded image, and VAE encoder moments whose sample with the golden's first draw
 * gives the golden image latents (mean = latents / scaling_factor - eps, logvar = 0).
 */
export function replayModels(g: Map<string, GoldenTensor>, scalingFactor: number): PipelineModels & { unetCalls: number } {
  const idsEqual = (a: Int32Array, name: string) => {
    const t = g.get(name);
    return !!t && (t.data as number[]).every((v, i) => v === a[i]);
  };
  const models = {
    unetCalls: 0,
    async encodeText(ids: Int32Array): Promise<Tensor> {
      if (idsEqual(ids, 'input_ids.cond')) return floatTensor(g, 'prompt_embeds.cond');
      if (idsEqual(ids, 'input_ids.uncond')) return floatTensor(g, 'prompt_embeds.uncond');
      throw new Error('token ids match neither recorded prompt');
    },
    async unet(): Promise<Tensor> {
      return floatTensor(g, `step.${models.unetCalls++}.unet.out`);
    },
    async vaeDecode(): Promise<Tensor> {
      const img = floatTensor(g, 'image');
      const [, h, w, c] = img.shape;
      const out = new Float32Array(c * h * w);
      for (let p = 0; p < h * w; p++) for (let ch = 0; ch < c; ch++) out[ch * h * w + p] = f32(f32(img.data[p * c + ch] - 0.5) * 2);
      return { data: out, shape: [1, c, h, w] };
    },
    async vaeEncode(): Promise<Tensor> {
      const target = floatTensor(g, 'img2img.image_latents');
      const eps = floatTensor(g, 'randn.0');
      const n = target.data.length;
      const moments = new Float32Array(2 * n);
      const sf = f32(scalingFactor);
      for (let i = 0; i < n; i++) moments[i] = meanFor(target.data[i], eps.data[i], sf);
      return { data: moments, shape: [1, 2 * target.shape[1], ...target.shape.slice(2)] };
    },
  };
  return models;
}

/**
 * A posterior mean m with `sf * (m + 1 * eps) == target` in float32 when one exists near
 * `target / sf - eps` (so the replayed encoder reproduces the recorded image latents exactly).
 */
function meanFor(target: number, eps: number, sf: number): number {
  const guess = f32(f32(target / sf) - eps);
  const bits = floatBits(guess);
  for (let d = 0; d <= 8; d++) {
    for (const b of d === 0 ? [bits] : [bits + d, bits - d]) {
      const m = floatFromBits(b);
      if (f32(sf * f32(m + eps)) === target) return m;
    }
  }
  return guess;
}

/** max |a - b| over two float arrays of the same length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
