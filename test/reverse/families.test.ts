/**
 * Round trips on every torch-made family fixture (fixtures/families/: ControlNet SD 1.5 / SDXL,
 * x4 upscaler, SD 2.1 unCLIP H / L, SDXL refiner / inpainting, SD 1.x inpainting / pix2pix, SD 2.x
 * inpainting, standalone SDXL and SD VAEs):
 *   file -> folder -> file: the regenerated single file holds every original tensor under its
 *     original name with the same bytes, except the keys the result documents as not restored
 *     (listed per family below, each with the reason); what it adds is exactly the documented
 *     extras (CLIP position_ids, SD 2.x placeholders, the v_pred marker);
 *   folder -> file -> folder: converting the single file again gives byte-identical Diffusers
 *     tensors and the same configs.
 * The folder's family is detected from model_index.json and the configs alone.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { openCheckpoint } from '../../src/formats/open.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { detectFolderFamily } from '../../src/reverse/folder.js';
import { toSingleFile, type ToSingleFileResult } from '../../src/reverse/to-single-file.js';
import { FAMILY_FIXTURES, type FamilyFixture } from '../../src/testing/family-fixtures.js';
import { repoRoot } from '../helpers/paths.js';

const fixtures = join(repoRoot, 'fixtures', 'families');
let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-reverse-families-'));
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

const covers = (patterns: readonly string[], name: string): boolean => patterns.some((p) => (p.endsWith('.') ? name.startsWith(p) : name === p));
const notRestored = (r: ToSingleFileResult, name: string): boolean => covers(r.notRestored.map((n) => n.source), name);

/** Every weight tensor and every JSON file of a Diffusers folder, by relative path. */
async function folderContents(dir: string): Promise<{ tensors: Map<string, { dtype: string; shape: string; bytes: Buffer }>; json: Map<string, unknown> }> {
  const tensors = new Map<string, { dtype: string; shape: string; bytes: Buffer }>();
  const json = new Map<string, unknown>();
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(d, e.name), path);
      else if (e.name.endsWith('.json')) json.set(path, JSON.parse(await readFile(join(d, e.name), 'utf8')));
      else if (e.name.endsWith('.safetensors')) {
        await withSource(join(d, e.name), async (s) => {
          for (const t of s.tensors) tensors.set(`${path}/${t.name}`, { dtype: t.dtype, shape: t.shape.join(','), bytes: Buffer.from(await s.readTensor(t.name)) });
        });
      }
    }
  };
  await walk(dir, '');
  return { tensors, json };
}

/**
 * The original keys each family cannot get back, as patterns (a trailing '.' is a prefix): what
 * Diffusers has no place for. Every one must also be in the result's `notRestored`.
 */
const LDM_SCHEDULE = ['betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance', 'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2'];
const LOW_SCALE = LDM_SCHEDULE.slice(0, 8);
const UNCLIP_EMBEDDER_TEXT = ['embedder.model.positional_embedding', 'embedder.model.text_projection', 'embedder.model.logit_scale', 'embedder.model.token_embedding.', 'embedder.model.ln_final.'];
const LOST: Record<string, readonly string[]> = {
  'controlnet-sd15.pth': [],
  'controlnet-sd15-bare.safetensors': [],
  'controlnet-sdxl.safetensors': [],
  // The low-resolution noise schedule becomes low_res_scheduler's config.
  'sd-x4-upscaler.ckpt': [...LDM_SCHEDULE, ...LOW_SCALE.map((n) => `low_scale_model.${n}`)],
  // The image embedder's text side is unused by unCLIP and has no Diffusers component; the
  // noise_augmentor schedule becomes image_noising_scheduler's config.
  'sd21-unclip-h.ckpt': [...LDM_SCHEDULE, ...UNCLIP_EMBEDDER_TEXT, ...LOW_SCALE.map((n) => `noise_augmentor.${n}`)],
  'sd21-unclip-l.safetensors': [...LDM_SCHEDULE, ...UNCLIP_EMBEDDER_TEXT, 'embedder.model.transformer.', ...LOW_SCALE.map((n) => `noise_augmentor.${n}`)],
  // SGM: the denoiser's sigmas (rebuilt from the scheduler) and the unused OpenCLIP logit_scale.
  'sdxl-refiner.safetensors': ['denoiser.sigmas', 'conditioner.embedders.0.model.logit_scale'],
  'sdxl-inpaint.safetensors': ['denoiser.sigmas', 'conditioner.embedders.1.model.logit_scale'],
  'sd1-inpaint.ckpt': LDM_SCHEDULE,
  // LitEma shadow weights: Diffusers keeps one UNet.
  'sd1-pix2pix.safetensors': [...LDM_SCHEDULE, 'model_ema.'],
  'sd2-inpaint.ckpt': LDM_SCHEDULE,
  'vae-modelspec.safetensors': [],
  'vae-ft-mse-tiny.pt': [],
};

/** A ControlNet fixture without the `control_model.` prefix (written back with `bare`). */
const isBare = (f: FamilyFixture): boolean => f.family.startsWith('controlnet') && !f.tensors()[0].name.startsWith('control_model.');
const dtypeOf = (f: FamilyFixture) => (f.floatDType === 'F16' ? ('fp16' as const) : ('fp32' as const));

describe.each(FAMILY_FIXTURES.map((f) => [f.file, f] as const))('round trip: %s', (file, fixture) => {
  const folder = (): string => join(work, `${file}-folder`);

  it('file -> folder -> file gives the original tensors and names, except the documented ones', async () => {
    await convert(join(fixtures, file), folder(), { dtype: dtypeOf(fixture) });
    const detected = await detectFolderFamily(folder());
    expect(detected.family).toBe(fixture.family);
    expect(detected.evidence.length).toBeGreaterThan(0);
    const single = join(work, `${file}.safetensors`);
    const r = await toSingleFile(folder(), single, { bare: isBare(fixture) });
    expect(r.family).toBe(fixture.family);
    const added = new Map(r.added.map((a) => [a.name, a.reason]));
    await withSource(join(fixtures, file), (orig) =>
      withSource(single, async (back) => {
        const missing: string[] = [];
        for (const t of orig.tensors) {
          const u = back.get(t.name);
          if (!u) {
            missing.push(t.name);
            continue;
          }
          expect([u.dtype, u.shape], t.name).toEqual([t.dtype, t.shape]);
          if (added.get(t.name)?.startsWith('placeholder')) continue; // documented SD 2.x stand-in, not the original value
          expect(Buffer.from(await back.readTensor(t.name)).equals(Buffer.from(await orig.readTensor(t.name))), t.name).toBe(true);
        }
        // Exactly the documented keys are lost, and the result says so for each.
        const lost = LOST[file];
        expect(missing.filter((m) => !covers(lost, m))).toEqual([]);
        expect(missing.filter((m) => !notRestored(r, m))).toEqual([]);
        for (const p of lost) expect(missing.some((m) => covers([p], m)), p).toBe(true);
        const extra = back.tensors.filter((t) => !orig.get(t.name)).map((t) => t.name);
        expect(extra.filter((n) => !added.has(n))).toEqual([]);
        expect(back.metadata['modelspec.sai_model_spec']).toBe('1.0.0');
      }),
    );
  });

  it('folder -> file -> folder gives identical Diffusers tensors and configs', async () => {
    const single = join(work, `${file}-again.safetensors`);
    const again = join(work, `${file}-folder-again`);
    await toSingleFile(folder(), single);
    const r = await convert(single, again, { dtype: dtypeOf(fixture) });
    expect(r.family.family).toBe(fixture.family);
    expect(r.plan.account.unknown).toEqual([]);
    const a = await folderContents(folder());
    const b = await folderContents(again);
    expect([...b.tensors.keys()].sort()).toEqual([...a.tensors.keys()].sort());
    for (const [k, v] of a.tensors) {
      const w = b.tensors.get(k);
      expect([w?.dtype, w?.shape], k).toEqual([v.dtype, v.shape]);
      expect(w?.bytes.equals(v.bytes), k).toBe(true);
    }
    expect(Object.fromEntries(b.json)).toEqual(Object.fromEntries(a.json));
  });
});

describe('what each family writes about itself', () => {
  const single = async (file: string, options: Parameters<typeof toSingleFile>[2] = {}): Promise<{ r: ToSingleFileResult; path: string }> => {
    const path = join(work, `${file}-${Object.keys(options).join('-') || 'plain'}.safetensors`);
    return { r: await toSingleFile(join(work, `${file}-folder`), path, { force: true, ...options }), path };
  };

  it('ControlNet: control_model.* by default (ControlNet 1.1 layout), bare on request; architecture names it', async () => {
    for (const file of ['controlnet-sd15.pth', 'controlnet-sd15-bare.safetensors']) {
      const prefixed = await single(file);
      expect(prefixed.r.family).toBe('controlnet-sd15');
      expect(prefixed.r.familyEvidence).toContain('config.json: _class_name ControlNetModel');
      expect(prefixed.r.metadata['modelspec.architecture']).toBe('stable-diffusion-v1/controlnet');
      expect(prefixed.r.metadata['modelspec.predict_key']).toBeUndefined();
      await withSource(prefixed.path, async (s) => {
        expect(s.tensors.every((t) => t.name.startsWith('control_model.'))).toBe(true);
        expect(s.get('control_model.input_hint_block.14.weight')?.shape).toEqual([16, 16, 3, 3]);
        expect(s.get('control_model.zero_convs.3.0.weight')?.shape).toEqual([32, 32, 1, 1]);
      });
      const bare = await single(file, { bare: true });
      await withSource(bare.path, async (s) => {
        expect(s.tensors.some((t) => t.name.startsWith('control_model.'))).toBe(false);
        expect(s.get('middle_block_out.0.weight')?.shape).toEqual([32, 32, 1, 1]);
      });
    }
    const xl = await single('controlnet-sdxl.safetensors');
    expect(xl.r.family).toBe('controlnet-sdxl');
    expect(xl.r.metadata['modelspec.architecture']).toBe('stable-diffusion-xl-v1-base/controlnet');
    await withSource(xl.path, async (s) => expect(s.get('control_model.label_emb.0.0.weight')?.shape).toEqual([64, 48]));
  });

  it('x4 upscaler: low_scale_model schedule not restored, v_pred marker, its own architecture id', async () => {
    const { r } = await single('sd-x4-upscaler.ckpt');
    expect(r.familyEvidence).toContain('low_res_scheduler (x4 upscaler)');
    expect(r.metadata).toMatchObject({ 'modelspec.architecture': 'stable-diffusion-v2-x4-upscaler', 'modelspec.predict_key': 'v' });
    expect(r.added.map((a) => a.name)).toContain('v_pred');
    expect(r.notRestored.filter((n) => n.source.startsWith('low_scale_model.'))).toHaveLength(8);
  });

  it('unCLIP: image_encoder back to embedder.model.visual.*; the normalizer statistics only when they came from the file', async () => {
    const h = await single('sd21-unclip-h.ckpt');
    expect(h.r.familyEvidence).toContain('image_encoder hidden_act gelu (OpenCLIP ViT-H/14)');
    expect(h.r.metadata['modelspec.architecture']).toBe('stable-diffusion-v2-unclip-h');
    // The folder's mean 0 / std 1 are the converter's stand-ins for a file without statistics.
    expect(h.r.notRestored.filter((n) => n.source.startsWith('noise_augmentor.data_')).map((n) => n.source)).toEqual(['noise_augmentor.data_mean', 'noise_augmentor.data_std']);
    await withSource(h.path, async (s) => {
      expect(s.get('noise_augmentor.data_mean')).toBeUndefined();
      expect(s.get('embedder.model.visual.proj')?.shape).toEqual([32, 24]);
      expect(s.get('embedder.model.visual.transformer.resblocks.1.attn.in_proj_weight')?.shape).toEqual([96, 32]);
    });
    const l = await single('sd21-unclip-l.safetensors');
    expect(l.r.family).toBe('sd21-unclip-l');
    expect(l.r.metadata['modelspec.architecture']).toBe('stable-diffusion-v2-unclip-l');
    expect(l.r.notRestored.some((n) => n.source.startsWith('noise_augmentor.data_'))).toBe(false);
    await withSource(l.path, (s) => withSource(join(fixtures, 'sd21-unclip-l.safetensors'), async (o) => {
      for (const name of ['noise_augmentor.data_mean', 'noise_augmentor.data_std']) {
        expect(Buffer.from(await s.readTensor(name)).equals(Buffer.from(await o.readTensor(name))), name).toBe(true);
      }
    }));
  });

  it('SDXL refiner and inpainting, SD inpainting and pix2pix: the variant ids in the metadata', async () => {
    const arch = async (file: string): Promise<string | undefined> => (await single(file)).r.metadata['modelspec.architecture'];
    expect(await arch('sdxl-refiner.safetensors')).toBe('stable-diffusion-xl-v1-refiner');
    expect(await arch('sdxl-inpaint.safetensors')).toBe('stable-diffusion-xl-v1-base');
    expect(await arch('sd1-inpaint.ckpt')).toBe('stable-diffusion-v1-inpainting');
    expect(await arch('sd1-pix2pix.safetensors')).toBe('stable-diffusion-v1');
    expect(await arch('sd2-inpaint.ckpt')).toBe('stable-diffusion-v2-inpainting');
  });

  it('standalone VAEs: the scaling factor survives as the architecture', async () => {
    const xl = await single('vae-modelspec.safetensors');
    expect(xl.r.metadata['modelspec.architecture']).toBe('stable-diffusion-xl-v1-base/vae');
    const sd = await single('vae-ft-mse-tiny.pt');
    expect(sd.r.metadata['modelspec.architecture']).toBe('stable-diffusion-v1/vae');
  });

  it('the CLI: --bare and --json for a ControlNet folder', async () => {
    const io = memoryIO();
    const out = join(work, 'cli-controlnet.safetensors');
    const status = await main(['to-single-file', join(work, 'controlnet-sd15.pth-folder'), out, '--bare', '--json'], io);
    expect(status).toBe(0);
    const result = JSON.parse(io.out) as { family: string; tensors: number };
    expect(result).toMatchObject({ family: 'controlnet-sd15', tensors: 154 });
    await withSource(out, async (s) => expect(s.get('input_hint_block.0.weight')).toBeDefined());
  });
});
