/**
 * UNet graphs with class labels (num_class_embeds) and only_cross_attention, from the converted
 * x4 upscaler fixture (in_channels 7, num_class_embeds 1000, only_cross_attention
 * [true, true, true, false]).
 *
 * There is no Diffusers forward golden for this UNet, so the outputs are NOT compared with
 * Diffusers. What is checked instead:
 *   - the class embedding is a row lookup added to the time embedding: the graph run with
 *     class_labels = k equals a graph without class labels whose time_embedding.linear_2.bias has
 *     class_embedding.weight[k] added to it (emb = linear_2(x) + b + E[k]), up to float rounding;
 *   - the exported graph (float32) runs in onnxruntime with batch 2 (as classifier-free guidance
 *     calls it) and gives finite outputs of the right shape; different labels give different
 *     outputs. attn1's to_k in the only-cross-attention blocks is [16, 32] (context width 32, 16
 *     channels), so a graph wiring attn1 to its own 16-channel input would not run.
 * The fixture's config says 32 GroupNorm groups over levels of 8 to 32 channels; the graphs'
 * reshape-based GroupNorm runs that when the element counts divide, which a 16 x 16 sample keeps.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { writeOnnxModel } from '../../src/onnx/encode.js';
import type { WeightSource } from '../../src/onnx/graph.js';
import { buildUnetGraph } from '../../src/onnx/unet.js';
import { openComponentWeights, type ComponentWeights } from '../../src/onnx/weights.js';
import { repoRoot } from '../helpers/paths.js';
import { runModel, type Feed } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'onnx-unet-cls-'));
const folder = join(tmp, 'x4');
let weights: ComponentWeights;
let config: Record<string, unknown>;

beforeAll(async () => {
  await convert(join(repoRoot, 'fixtures', 'families', 'sd-x4-upscaler.ckpt'), folder);
  config = JSON.parse(readFileSync(join(folder, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
  weights = await openComponentWeights(join(folder, 'unet'));
}, 60_000);
afterAll(async () => {
  await weights?.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function f32Tensor(w: WeightSource, key: string): Promise<Float32Array> {
  const bytes = await w.readTensor(key);
  return new Float32Array(new Uint8Array(bytes).buffer);
}

/** `source` with `key` replaced by float32 `data` (same shape). */
function overriding(source: WeightSource, key: string, data: Float32Array): WeightSource {
  const bytes = new Uint8Array(data.buffer.slice(0));
  return {
    info: (k) => (k === key ? { dtype: 'F32', shape: source.info(k)!.shape, byteLength: bytes.length } : source.info(k)),
    readChunks: (k) => (k === key ? (async function* () { yield bytes; })() : source.readChunks(k)),
    readTensor: async (k) => (k === key ? bytes : source.readTensor(k)),
  };
}

/** Deterministic pseudo-random floats in [-1, 1). */
function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

const B = 2;
const S = 16;
function feed(labels: readonly number[] | undefined): Feed {
  const f: Feed = {
    sample: { type: 'float32', data: noise(B * 7 * S * S, 1), dims: [B, 7, S, S] },
    timestep: { type: 'float32', data: Float32Array.of(981), dims: [1] },
    encoder_hidden_states: { type: 'float32', data: noise(B * 77 * 32, 2), dims: [B, 77, 32] },
  };
  if (labels) f.class_labels = { type: 'int64', data: BigInt64Array.from(labels.map(BigInt)), dims: [B] };
  return f;
}

describe('UNet with class labels and only_cross_attention (x4 upscaler fixture)', () => {
  it('the converted config asks for both', () => {
    expect(config).toMatchObject({ in_channels: 7, class_embed_type: null, num_class_embeds: 1000, only_cross_attention: [true, true, true, false] });
  });

  it('declares class_labels (int64 [batch]) only when num_class_embeds is set', () => {
    const g = buildUnetGraph(config, weights, { floatType: 'float32', layout: 'optimum' });
    const bytes = JSON.stringify(g.inputs ?? null);
    expect(bytes).toContain('class_labels');
    const plain = buildUnetGraph({ ...config, num_class_embeds: null }, weights, { floatType: 'float32', layout: 'optimum' });
    expect(JSON.stringify(plain.inputs ?? null)).not.toContain('class_labels');
  });

  it('class embedding = Gather of class_embedding.weight added to the time embedding; finite batch-2 outputs', async () => {
    const model = (await writeOnnxModel(buildUnetGraph(config, weights, { floatType: 'float32', layout: 'optimum' }), { dir: join(tmp, 'cls') })).modelPath;
    const k = 20;
    const out = (await runModel(model, feed([k, k]))).out_sample;
    expect([...out.dims]).toEqual([B, 4, S, S]);
    const y = out.data as Float32Array;
    expect(y.every(Number.isFinite)).toBe(true);
    expect(Math.max(...y.map(Math.abs))).toBeGreaterThan(0);

    // Same graph without class labels, the embedding row folded into linear_2's bias.
    const table = await f32Tensor(weights, 'class_embedding.weight');
    const bias = await f32Tensor(weights, 'time_embedding.linear_2.bias');
    const d = bias.length;
    const folded = bias.map((b, i) => Math.fround(b + table[k * d + i]));
    const w2 = overriding(weights, 'time_embedding.linear_2.bias', folded);
    const ref = (await writeOnnxModel(buildUnetGraph({ ...config, num_class_embeds: null }, w2, { floatType: 'float32', layout: 'optimum' }), { dir: join(tmp, 'folded') })).modelPath;
    const r = (await runModel(ref, feed(undefined))).out_sample.data as Float32Array;
    let maxErr = 0;
    for (let i = 0; i < y.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i] - r[i]));
    expect(maxErr).toBeLessThan(1e-4);

    // Per-sample labels: batch entry 1 with another label differs, entry 0 does not.
    const mixed = (await runModel(model, feed([k, 300]))).out_sample.data as Float32Array;
    const half = y.length / 2;
    let d0 = 0;
    let d1 = 0;
    for (let i = 0; i < half; i++) {
      d0 = Math.max(d0, Math.abs(mixed[i] - y[i]));
      d1 = Math.max(d1, Math.abs(mixed[half + i] - y[half + i]));
    }
    expect(d0).toBe(0);
    expect(d1).toBeGreaterThan(0);
  }, 30_000);

  it('refuses what it does not build', () => {
    expect(() => buildUnetGraph({ ...config, class_embed_type: 'timestep' }, weights, { floatType: 'float32', layout: 'optimum' })).toThrow(/class_embed_type/);
    expect(() => buildUnetGraph({ ...config, class_embeddings_concat: true }, weights, { floatType: 'float32', layout: 'optimum' })).toThrow(/class_embeddings_concat/);
  });
});
