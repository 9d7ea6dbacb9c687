/**
 * SDXL conditioning with recording stand-in networks (no goldens of the SDXL pipeline exist here):
 * the text encoders answer with values derived from (encoder, token ids), the UNet records what it
 * is called with. Asserted: prompt embeddings = concat(text_encoder penultimate, text_encoder_2
 * penultimate) on the last axis; pooled = text_encoder_2 text_embeds; zero negative embeddings
 * and pooled embeddings when no negative prompt is given (force_zeros_for_empty_prompt), encoded
 * ones otherwise; time_ids values; the guidance batch order (uncond first); tokenizer_2's "!" padding.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { createScheduler } from '../../src/generate/schedulers/index.js';
import type { SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { generateSdxl, sdxlTimeIds, type SdxlModels } from '../../src/generate/sdxl.js';
import type { Tensor } from '../../src/generate/tensor.js';
import { ClipTokenizer } from '../../src/generate/tokenizer.js';
import { sharedFixture } from '../helpers/paths.js';
import { readFile } from 'node:fs/promises';

const D1 = 5;
const D2 = 3;
const P = 4;

const tmp = mkdtempSync(join(tmpdir(), 'c2d-sdxl-'));
let tokenizers: [ClipTokenizer, ClipTokenizer];
let schedulerConfig: SchedulerConfigJson;
beforeAll(async () => {
  const folder = join(tmp, 'xl');
  await convert(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), folder);
  tokenizers = [await ClipTokenizer.fromFolder(join(folder, 'tokenizer')), await ClipTokenizer.fromFolder(join(folder, 'tokenizer_2'))];
  schedulerConfig = JSON.parse(await readFile(join(folder, 'scheduler', 'scheduler_config.json'), 'utf8')) as SchedulerConfigJson;
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A distinct value per (encoder, token position, feature, ids). */
function hiddenValue(which: number, ids: Int32Array, s: number, d: number): number {
  return Math.fround((which + 1) * 1000 + (ids[s] % 997) + s * 0.01 + d * 0.0001);
}

interface UnetCall {
  sample: Tensor;
  t: number;
  ehs: Tensor;
  extra?: Readonly<Record<string, Tensor>>;
}

function recorder(): SdxlModels & { calls: UnetCall[]; encoded: { which: number; ids: number[] }[] } {
  const calls: UnetCall[] = [];
  const encoded: { which: number; ids: number[] }[] = [];
  return {
    calls,
    encoded,
    async encodeTextXL(which, ids) {
      encoded.push({ which, ids: [...ids] });
      const D = which === 0 ? D1 : D2;
      const data = new Float32Array(ids.length * D);
      for (let s = 0; s < ids.length; s++) for (let d = 0; d < D; d++) data[s * D + d] = hiddenValue(which, ids, s, d);
      const penultimate = { data, shape: [1, ids.length, D] };
      if (which === 0) return { penultimate };
      const te = new Float32Array(P).map((_, i) => Math.fround(-(ids[1] % 101) - i * 0.5));
      return { penultimate, textEmbeds: { data: te, shape: [1, P] } };
    },
    async unet(sample, t, ehs, extra) {
      calls.push({ sample: { data: sample.data.slice(), shape: [...sample.shape] }, t, ehs, extra });
      return { data: new Float32Array(sample.data.length).fill(0.01), shape: [...sample.shape] };
    },
    async vaeDecode(latents) {
      const [, , h, w] = latents.shape;
      return { data: new Float32Array(3 * h * 8 * w * 8), shape: [1, 3, h * 8, w * 8] };
    },
  };
}

function expectedEmbeds(idsA: number[], idsB: number[]): Float32Array {
  const out = new Float32Array(77 * (D1 + D2));
  const a = Int32Array.from(idsA);
  const b = Int32Array.from(idsB);
  for (let s = 0; s < 77; s++) {
    for (let d = 0; d < D1; d++) out[s * (D1 + D2) + d] = hiddenValue(0, a, s, d);
    for (let d = 0; d < D2; d++) out[s * (D1 + D2) + D1 + d] = hiddenValue(1, b, s, d);
  }
  return out;
}

describe('SDXL conditioning (recording stand-ins)', () => {
  it('guidance, no negative prompt: zeros first, then concat(te1, te2) penultimate states; pooled and time_ids batched uncond first', async () => {
    const models = recorder();
    const r = await generateSdxl({ prompt: 'a lighthouse at dusk', tokenizers, models, scheduler: createScheduler(schedulerConfig), steps: 3, guidanceScale: 5, seed: 1, height: 64, width: 96 });
    // Both encoders ran once each, on their own tokenizer's ids (prompt_2 defaults to prompt).
    expect(models.encoded.map((e) => e.which)).toEqual([0, 1]);
    const ids1 = tokenizers[0].encode('a lighthouse at dusk').ids;
    const ids2 = tokenizers[1].encode('a lighthouse at dusk').ids;
    expect(models.encoded[0].ids).toEqual(ids1);
    expect(models.encoded[1].ids).toEqual(ids2);
    // tokenizer pads with <|endoftext|> (49407), tokenizer_2 with "!" (0).
    expect(ids1[76]).toBe(49407);
    expect(ids2[76]).toBe(0);
    expect(ids1.slice(0, 6)).toEqual(ids2.slice(0, 6)); // <|startoftext|>, 4 words, <|endoftext|>
    expect(models.calls).toHaveLength(3);
    const pooled = new Float32Array(P).map((_, i) => Math.fround(-(ids2[1] % 101) - i * 0.5));
    const cond = expectedEmbeds(ids1, ids2);
    for (const c of models.calls) {
      expect(c.sample.shape).toEqual([2, 4, 8, 12]);
      expect(c.ehs.shape).toEqual([2, 77, D1 + D2]);
      const n = 77 * (D1 + D2);
      expect([...c.ehs.data.subarray(0, n)].every((x) => x === 0)).toBe(true);
      expect(c.ehs.data.subarray(n)).toEqual(cond);
      expect(Object.keys(c.extra ?? {}).sort()).toEqual(['text_embeds', 'time_ids']);
      expect(c.extra?.text_embeds.shape).toEqual([2, P]);
      expect([...(c.extra?.text_embeds.data.subarray(0, P) ?? [])]).toEqual([0, 0, 0, 0]);
      expect(c.extra?.text_embeds.data.subarray(P)).toEqual(pooled);
      expect(c.extra?.time_ids.shape).toEqual([2, 6]);
      expect([...(c.extra?.time_ids.data ?? [])]).toEqual([64, 96, 0, 0, 64, 96, 64, 96, 0, 0, 64, 96]);
    }
    // EulerDiscreteScheduler, leading spacing, steps_offset 1: 1000 // 3 = 333 → 667, 334, 1.
    expect(r.timesteps).toEqual([667, 334, 1]);
    expect(r.inputIds.uncond).toBeUndefined();
  });

  it('a given negative prompt is encoded by both encoders (negative_prompt_2 defaults to it) and goes first', async () => {
    const models = recorder();
    await generateSdxl({ prompt: 'a cat', negativePrompt: 'blurry', tokenizers, models, scheduler: createScheduler(schedulerConfig), steps: 1, guidanceScale: 7, height: 64, width: 64 });
    expect(models.encoded.map((e) => e.which)).toEqual([0, 1, 0, 1]);
    const neg1 = tokenizers[0].encode('blurry').ids;
    const neg2 = tokenizers[1].encode('blurry').ids;
    expect(models.encoded[2].ids).toEqual(neg1);
    expect(models.encoded[3].ids).toEqual(neg2);
    const c = models.calls[0];
    const n = 77 * (D1 + D2);
    expect(c.ehs.data.subarray(0, n)).toEqual(expectedEmbeds(neg1, neg2));
    expect(c.ehs.data.subarray(n)).toEqual(expectedEmbeds(tokenizers[0].encode('a cat').ids, tokenizers[1].encode('a cat').ids));
    expect(c.extra?.text_embeds.data.subarray(0, P)).toEqual(new Float32Array(P).map((_, i) => Math.fround(-(neg2[1] % 101) - i * 0.5)));
  });

  it('an empty negative prompt given explicitly is encoded; force_zeros_for_empty_prompt false encodes "" too', async () => {
    for (const o of [{ negativePrompt: '' }, { forceZerosForEmptyPrompt: false }]) {
      const models = recorder();
      await generateSdxl({ prompt: 'a cat', ...o, tokenizers, models, scheduler: createScheduler(schedulerConfig), steps: 1, guidanceScale: 7, height: 64, width: 64 });
      expect(models.encoded).toHaveLength(4);
      const n = 77 * (D1 + D2);
      expect(models.calls[0].ehs.data.subarray(0, n)).toEqual(expectedEmbeds(tokenizers[0].encode('').ids, tokenizers[1].encode('').ids));
    }
  });

  it('guidance 1: one batch row, no negative side; original size, crop and target size go into time_ids in order', async () => {
    const models = recorder();
    await generateSdxl({
      prompt: 'a cat',
      prompt2: 'a dog',
      tokenizers,
      models,
      scheduler: createScheduler(schedulerConfig),
      steps: 2,
      guidanceScale: 1,
      height: 64,
      width: 128,
      originalSize: [1024, 768],
      cropsCoordsTopLeft: [16, 32],
      targetSize: [512, 640],
    });
    expect(models.encoded.map((e) => e.ids)).toEqual([tokenizers[0].encode('a cat').ids, tokenizers[1].encode('a dog').ids]);
    const c = models.calls[0];
    expect(c.sample.shape).toEqual([1, 4, 8, 16]);
    expect(c.ehs.shape).toEqual([1, 77, D1 + D2]);
    expect([...(c.extra?.time_ids.data ?? [])]).toEqual([1024, 768, 16, 32, 512, 640]);
    expect(c.extra?.text_embeds.shape).toEqual([1, P]);
    expect(sdxlTimeIds(1024, 1024)).toEqual([1024, 1024, 0, 0, 1024, 1024]);
  });

  it('checks the added-embedding width as Diffusers does', async () => {
    const models = recorder();
    await expect(
      generateSdxl({ prompt: 'x', tokenizers, models, scheduler: createScheduler(schedulerConfig), steps: 1, height: 64, width: 64, additionTimeEmbedDim: 256, expectedAddEmbedDim: 2816 }),
    ).rejects.toMatchObject({ code: 'E_PIPELINE', message: expect.stringMatching(/256 x 6 time ids \+ 4 text_embeds = 1540/) });
  });
});
