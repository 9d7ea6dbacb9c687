/**
 * Round trips on every shared case input:
 *   file -> folder -> file: the regenerated single file holds every original tensor under its
 *     original name with the same bytes (after the same dtype cast), except the keys the result
 *     documents as not restored; what it adds is exactly the documented extras;
 *   folder -> file -> folder: converting the single file again gives byte-identical Diffusers tensors.
 */
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { castBytes } from '../../src/diffusers/cast.js';
import { openCheckpoint } from '../../src/formats/open.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { toSingleFile, type ToSingleFileResult } from '../../src/reverse/to-single-file.js';
import { sharedFixture } from '../helpers/paths.js';

interface Case {
  name: string;
  input: string;
  yaml: string;
  /** dtype of the original's floats, for the cast back. */
  dtype: 'keep' | 'fp16';
  family: string;
}

const CASES: Case[] = [
  { name: 'sd1', input: 'cases/sd1/model.ckpt', yaml: 'cases/sd1/original_config.yaml', dtype: 'keep', family: 'sd1' },
  { name: 'sd1-pipe', input: 'cases/sd1-pipe/model-fp16.ckpt', yaml: 'cases/sd1-pipe/original_config.yaml', dtype: 'fp16', family: 'sd1' },
  { name: 'sd2', input: 'cases/sd2/model-fp16.safetensors', yaml: 'cases/sd2/original_config.yaml', dtype: 'fp16', family: 'sd2' },
  { name: 'sdxl-base', input: 'cases/sdxl-base/model-fp16.safetensors', yaml: 'cases/sdxl-base/original_config.yaml', dtype: 'fp16', family: 'sdxl-base' },
  { name: 'vae', input: 'cases/vae/vae.safetensors', yaml: 'cases/vae/original_config.yaml', dtype: 'keep', family: 'vae' },
];

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-reverse-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function withSource<T>(path: string, fn: (s: TensorSource) => Promise<T>): Promise<T> {
  const s = await openCheckpoint(path);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function notRestored(r: ToSingleFileResult, name: string): boolean {
  return r.notRestored.some((n) => (n.source.endsWith('.') ? name.startsWith(n.source) : name === n.source));
}

/** Every component's tensors of a Diffusers folder: `component/name` -> bytes. */
async function folderTensors(dir: string): Promise<Map<string, { dtype: string; shape: string; bytes: Buffer }>> {
  const out = new Map<string, { dtype: string; shape: string; bytes: Buffer }>();
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name), rel ? `${rel}/${e.name}` : e.name);
      else if (e.name.endsWith('.safetensors')) {
        await withSource(join(d, e.name), async (s) => {
          for (const t of s.tensors) out.set(`${rel}/${t.name}`, { dtype: t.dtype, shape: t.shape.join(','), bytes: Buffer.from(await s.readTensor(t.name)) });
        });
      }
    }
  };
  await walk(dir, '');
  return out;
}

describe.each(CASES)('round trip: $name', (c) => {
  it('file -> folder -> file gives the original tensors, except the documented ones', async () => {
    const folder = join(work, `${c.name}-folder`);
    const single = join(work, `${c.name}.safetensors`);
    await convert(sharedFixture(c.input), folder, { originalConfig: sharedFixture(c.yaml) });
    const r = await toSingleFile(folder, single, { dtype: c.dtype });
    expect(r.family).toBe(c.family);
    const added = new Map(r.added.map((a) => [a.name, a.reason]));
    await withSource(sharedFixture(c.input), (orig) =>
      withSource(single, async (back) => {
        const missing: string[] = [];
        for (const t of orig.tensors) {
          const u = back.get(t.name);
          if (!u) {
            missing.push(t.name);
            continue;
          }
          expect(u.shape, t.name).toEqual(t.shape);
          if (added.get(t.name)?.startsWith('placeholder')) continue; // documented stand-in, not the original value
          let want = await orig.readTensor(t.name);
          if (t.dtype !== u.dtype) want = castBytes(want, t.dtype, u.dtype).bytes;
          expect(Buffer.from(await back.readTensor(t.name)).equals(Buffer.from(want)), t.name).toBe(true);
        }
        expect(missing.filter((m) => !notRestored(r, m))).toEqual([]);
        const extra = back.tensors.filter((t) => !orig.get(t.name)).map((t) => t.name);
        expect(extra.every((n) => added.has(n)), extra.join(', ')).toBe(true);
        expect(back.metadata.format).toBe('pt');
        expect(back.metadata['modelspec.sai_model_spec']).toBe('1.0.0');
      }),
    );
  });

  it('folder -> file -> folder gives identical Diffusers tensors', async () => {
    const folder = join(work, `${c.name}-folder`);
    const single = join(work, `${c.name}-again.safetensors`);
    const again = join(work, `${c.name}-folder-again`);
    await toSingleFile(folder, single);
    const r = await convert(single, again);
    expect(r.family.family).toBe(c.family);
    const a = await folderTensors(folder);
    const b = await folderTensors(again);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) {
      const w = b.get(k);
      expect(w?.dtype, k).toBe(v.dtype);
      expect(w?.shape, k).toBe(v.shape);
      expect(w?.bytes.equals(v.bytes), k).toBe(true);
    }
  });
});

describe('what the single file says about itself', () => {
  it('SD 2.x (v-prediction): marker, metadata and placeholders read back as evidence', async () => {
    const folder = join(work, 'sd2-folder');
    const single = join(work, 'sd2-evidence.safetensors');
    const r = await toSingleFile(folder, single, { force: true });
    expect(r.metadata['modelspec.architecture']).toBe('stable-diffusion-v2-768-v');
    expect(r.metadata['modelspec.predict_key']).toBe('v');
    expect(r.added.map((a) => a.name)).toContain('v_pred');
    const again = await convert(single, join(work, 'sd2-evidence-folder'));
    expect(again.prediction.predictionType.value).toBe('v_prediction');
    expect(again.prediction.predictionType.evidence.map((e) => e.what)).toEqual(expect.arrayContaining(['metadata modelspec.predict_key', 'marker tensor v_pred']));
  });

  it('SD 2.x documents the keys it cannot restore, and leaves out placeholders on request', async () => {
    const single = join(work, 'sd2-no-placeholders.safetensors');
    const r = await toSingleFile(join(work, 'sd2-folder'), single, { placeholders: false, markers: false });
    const sources = r.notRestored.map((n) => n.source);
    expect(sources).toEqual(
      expect.arrayContaining(['cond_stage_model.model.transformer.resblocks.23.', 'cond_stage_model.model.text_projection', 'cond_stage_model.model.logit_scale', 'betas']),
    );
    expect(r.added).toEqual([]);
    await withSource(single, async (s) => {
      expect(s.tensors.some((t) => t.name.includes('resblocks.23.') || t.name === 'v_pred' || t.name.endsWith('text_projection'))).toBe(false);
    });
  });

  it('SDXL: original prefixes, position_ids as int64 arange, nothing made up', async () => {
    const single = join(work, 'sdxl-names.safetensors');
    const r = await toSingleFile(join(work, 'sdxl-base-folder'), single);
    expect(r.metadata['modelspec.architecture']).toBe('stable-diffusion-xl-v1-base');
    expect(r.added.map((a) => a.name)).toEqual(['conditioner.embedders.0.transformer.text_model.embeddings.position_ids']);
    expect(r.notRestored.map((n) => n.source)).toEqual(expect.arrayContaining(['conditioner.embedders.1.model.logit_scale', 'denoiser.sigmas']));
    await withSource(single, async (s) => {
      const prefixes = new Set(s.tensors.map((t) => t.name.split('.').slice(0, 2).join('.')));
      expect([...prefixes].sort()).toEqual(['conditioner.embedders', 'first_stage_model.decoder', 'first_stage_model.encoder', 'first_stage_model.post_quant_conv', 'first_stage_model.quant_conv', 'model.diffusion_model'].sort());
      const ids = s.get('conditioner.embedders.0.transformer.text_model.embeddings.position_ids');
      expect(ids?.dtype).toBe('I64');
      const bytes = await s.readTensor(ids!.name);
      const values = [...new BigInt64Array(bytes.slice().buffer)].map(Number);
      expect(values).toEqual(values.map((_, i) => i));
    });
  });

  it('a standalone VAE keeps top-level names and names its scaling in the metadata', async () => {
    const single = join(work, 'vae-names.safetensors');
    const r = await toSingleFile(join(work, 'vae-folder'), single);
    expect(r.metadata['modelspec.architecture']).toBe('stable-diffusion-v1/vae');
    await withSource(single, async (s) => {
      expect(s.tensors.every((t) => t.name.startsWith('encoder.') || t.name.startsWith('decoder.') || t.name.includes('quant_conv.'))).toBe(true);
      expect(s.get('encoder.mid.attn_1.q.weight')?.shape.slice(2)).toEqual([1, 1]);
    });
  });
});

describe('SDXL refiner layout (a base folder without text_encoder)', () => {
  it('bigG becomes conditioner.embedders.0.model. and converts back to the same folder tensors', async () => {
    const base = join(work, 'sdxl-refiner-src');
    await convert(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), base);
    const refiner = join(work, 'sdxl-refiner');
    await cp(base, refiner, { recursive: true });
    await rm(join(refiner, 'text_encoder'), { recursive: true });
    await rm(join(refiner, 'tokenizer'), { recursive: true });
    const indexPath = join(refiner, 'model_index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8')) as Record<string, unknown>;
    await writeFile(indexPath, JSON.stringify({ ...index, _class_name: 'StableDiffusionXLImg2ImgPipeline', text_encoder: [null, null], tokenizer: [null, null] }));
    const single = join(work, 'sdxl-refiner.safetensors');
    const r = await toSingleFile(refiner, single);
    expect(r.family).toBe('sdxl-refiner');
    expect(r.metadata['modelspec.architecture']).toBe('stable-diffusion-xl-v1-refiner');
    await withSource(single, async (s) => {
      expect(s.tensors.some((t) => t.name.startsWith('conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight'))).toBe(true);
      expect(s.tensors.some((t) => t.name.startsWith('conditioner.embedders.1.'))).toBe(false);
    });
    const again = join(work, 'sdxl-refiner-again');
    expect((await convert(single, again)).family.family).toBe('sdxl-refiner');
    const a = await folderTensors(refiner);
    const b = await folderTensors(again);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) expect(b.get(k)?.bytes.equals(v.bytes), k).toBe(true);
  });
});
