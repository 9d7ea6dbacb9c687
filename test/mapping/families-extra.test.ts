/**
 * ControlNet (SD 1.x and SDXL), x4 upscaler and SD 2.1 unCLIP as mapping data, plus the other
 * torch-made family fixtures (SDXL refiner / inpainting, SD 1.x inpainting / pix2pix, SD 2.x
 * inpainting, standalone VAEs): the layout generator reproduces each fixture's key list
 * (fixtures/families/, made by fixtures/generate_families.py), detection names each family with
 * evidence, plans account for every key (zero unknown), and the real-size layouts plan cleanly too.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { openCheckpoint } from '../../src/formats/open.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { planConversion } from '../../src/mapping/plan.js';
import type { ConversionPlan, FamilyId } from '../../src/mapping/plan-types.js';
import { FAMILY_FIXTURES } from '../../src/testing/family-fixtures.js';
import {
  CONTROLNET_SD15_LAYOUT,
  controlNetTensors,
  SD21_UNCLIP_H_LAYOUT,
  SD21_UNCLIP_L_LAYOUT,
  unclipCheckpointTensors,
  upscalerCheckpointTensors,
  X4_UPSCALER_LAYOUT,
  type LayoutTensor,
} from '../../src/testing/ldm-layout.js';
import { repoRoot } from '../helpers/paths.js';
import { tensorInfo } from './case-data.js';

const dir = join(repoRoot, 'fixtures', 'families');

async function headers(file: string): Promise<{ tensors: TensorInfo[]; metadata: Record<string, string> }> {
  const s = await openCheckpoint(join(dir, file));
  try {
    return { tensors: [...s.tensors], metadata: { ...s.metadata } };
  } finally {
    await s.close();
  }
}

function infos(list: readonly LayoutTensor[]): TensorInfo[] {
  return list.map((t) => tensorInfo(t.name, t.dtype ?? 'F16', t.shape));
}

function fullAccount(plan: ConversionPlan, tensors: readonly TensorInfo[]): void {
  const { mapped, dropped, unknown } = plan.account;
  expect(unknown).toEqual([]);
  expect(mapped.length + dropped.length).toBe(tensors.length);
  expect(new Set([...mapped.map((m) => m.source), ...dropped.map((d) => d.source)]).size).toBe(tensors.length);
}

describe.each(FAMILY_FIXTURES.map((f) => [f.file, f] as const))('%s', (file, fixture) => {
  test('the layout generator gives the torch-made file its exact key list, shapes and dtypes', async () => {
    const { tensors } = await headers(file);
    const want = fixture.tensors().map((t) => `${t.name} ${JSON.stringify(t.shape)} ${t.dtype ?? fixture.floatDType}`);
    const got = tensors.map((t) => `${t.name} ${JSON.stringify(t.shape)} ${t.dtype}`);
    // safetensors files list their tensors sorted by name; torch files keep state_dict order.
    expect(got).toEqual(fixture.container === 'safetensors' ? [...want].sort() : want);
    const spec = JSON.parse(readFileSync(join(dir, `${file}.keys.json`), 'utf8')) as { tensors: { name: string }[] };
    expect(spec.tensors.map((t) => t.name)).toEqual(fixture.tensors().map((t) => t.name));
  });

  test(`is detected as ${fixture.family} with evidence, and every key is accounted for`, async () => {
    const { tensors, metadata } = await headers(file);
    const d = detectFamily(tensors, metadata);
    expect(d.family).toBe(fixture.family);
    expect(d.evidence.length).toBeGreaterThan(2);
    fullAccount(planConversion(tensors, d), tensors);
  });
});

describe('detection evidence and plans per family', () => {
  test('ControlNet: the hint encoder and zero convs decide, with or without the control_model. prefix', async () => {
    for (const file of ['controlnet-sd15.pth', 'controlnet-sd15-bare.safetensors']) {
      const { tensors } = await headers(file);
      const d = detectFamily(tensors);
      expect(d).toMatchObject({ family: 'controlnet-sd15', confidence: 'high' });
      expect(d.evidence.map((e) => e.what)).toContain(file.includes('bare') ? 'key input_hint_block.0.weight' : 'key control_model.input_hint_block.0.weight');
      const plan = planConversion(tensors, d);
      expect(plan.standalone).toBe(true);
      expect(plan.components.map((c) => [c.folder, c.className, c.sourcePrefix])).toEqual([['controlnet', 'ControlNetModel', file.includes('bare') ? '' : 'control_model.']]);
      const byTarget = new Map(plan.components[0].tensors.map((t) => [t.target, t.source.replace(/^control_model\./, '')]));
      expect(byTarget.get('controlnet_cond_embedding.conv_in.weight')).toBe('input_hint_block.0.weight');
      expect(byTarget.get('controlnet_cond_embedding.blocks.0.weight')).toBe('input_hint_block.2.weight');
      expect(byTarget.get('controlnet_cond_embedding.blocks.5.bias')).toBe('input_hint_block.12.bias');
      expect(byTarget.get('controlnet_cond_embedding.conv_out.weight')).toBe('input_hint_block.14.weight');
      // 2 levels x (1 ResBlock) + 1 downsampler + conv_in = 4 input blocks, one zero conv each.
      for (let i = 0; i < 4; i++) expect(byTarget.get(`controlnet_down_blocks.${i}.weight`)).toBe(`zero_convs.${i}.0.weight`);
      expect(byTarget.has('controlnet_down_blocks.4.weight')).toBe(false);
      expect(byTarget.get('controlnet_mid_block.weight')).toBe('middle_block_out.0.weight');
      expect(byTarget.get('down_blocks.0.downsamplers.0.conv.weight')).toBe('input_blocks.2.0.op.weight');
      expect(byTarget.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight')).toBe('middle_block.1.transformer_blocks.0.attn2.to_k.weight');
      expect([...byTarget.keys()].some((k) => k.startsWith('up_blocks.') || k.startsWith('conv_out.'))).toBe(false);
    }
  });

  test('SDXL ControlNet: label_emb becomes the text_time add_embedding', async () => {
    const { tensors } = await headers('controlnet-sdxl.safetensors');
    const d = detectFamily(tensors);
    expect(d.family).toBe('controlnet-sdxl');
    expect(d.evidence.find((e) => e.what === 'key label_emb.0.0.weight')?.found).toBe('present');
    const plan = planConversion(tensors, d);
    const t = plan.components[0].tensors;
    expect(t.find((x) => x.source === 'label_emb.0.0.weight')).toMatchObject({ target: 'add_embedding.linear_1.weight', shape: [64, 48] });
    expect(t.find((x) => x.source === 'label_emb.0.2.bias')?.target).toBe('add_embedding.linear_2.bias');
    // 3 levels x 1 ResBlock + 2 downsamplers + conv_in = 6 zero convs.
    expect(t.filter((x) => /^controlnet_down_blocks\.\d+\.weight$/.test(x.target))).toHaveLength(6);
  });

  test('x4 upscaler: 7 input channels and the noise-level embedding; low_scale_model and schedule buffers dropped', async () => {
    const { tensors } = await headers('sd-x4-upscaler.ckpt');
    const d = detectFamily(tensors);
    expect(d).toMatchObject({ family: 'sd-x4-upscaler', confidence: 'high' });
    expect(d.evidence.find((e) => e.what === 'model.diffusion_model.input_blocks.0.0.weight shape[1]')?.found).toBe('7');
    const plan = planConversion(tensors, d);
    const unet = plan.components.find((c) => c.folder === 'unet')!;
    expect(unet.tensors.find((t) => t.source === 'model.diffusion_model.label_emb.weight')).toMatchObject({ target: 'class_embedding.weight', shape: [1000, 32] });
    const rules = new Map<string, number>();
    for (const x of plan.account.dropped) rules.set(x.rule ?? '', (rules.get(x.rule ?? '') ?? 0) + 1);
    expect(Object.fromEntries(rules)).toEqual({
      'ldm-schedule-buffer': 12,
      'upscaler-low-scale-schedule': 8,
      'sd2-penultimate-layer': 12,
      'sd2-text-projection': 1,
      'openclip-logit-scale': 1,
    });
    expect(plan.components.map((c) => c.folder).sort()).toEqual(['text_encoder', 'unet', 'vae']);
  });

  test.each([
    ['sd21-unclip-h.ckpt', 'sd21-unclip-h', 'embedder.model.transformer.*'],
    ['sd21-unclip-l.safetensors', 'sd21-unclip-l', 'embedder.model.transformer.*'],
  ] as const)('%s: unCLIP image encoder from embedder.model.visual, label_emb as projection class embedding', async (file, family) => {
    const { tensors } = await headers(file);
    const d = detectFamily(tensors);
    // The tiny fixtures' widths differ from the released models': the width probes only support.
    expect(d).toMatchObject({ family, confidence: 'medium' });
    expect(d.evidence.find((e) => e.what === 'keys embedder.model.visual.*')?.found).toMatch(/keys$/);
    const plan = planConversion(tensors, d);
    const enc = plan.components.find((c) => c.folder === 'image_encoder')!;
    expect(enc.className).toBe('CLIPVisionModelWithProjection');
    const t = new Map(enc.tensors.map((x) => [x.target, x]));
    expect(t.get('vision_model.embeddings.patch_embedding.weight')?.source).toBe('embedder.model.visual.conv1.weight');
    expect(t.get('vision_model.embeddings.class_embedding')?.source).toBe('embedder.model.visual.class_embedding');
    expect(t.get('vision_model.embeddings.position_embedding.weight')?.source).toBe('embedder.model.visual.positional_embedding');
    expect(t.get('vision_model.pre_layrnorm.weight')?.source).toBe('embedder.model.visual.ln_pre.weight');
    expect(t.get('vision_model.post_layernorm.bias')?.source).toBe('embedder.model.visual.ln_post.bias');
    expect(t.get('visual_projection.weight')).toMatchObject({ source: 'embedder.model.visual.proj', op: { op: 'transpose' } });
    expect(t.get('vision_model.encoder.layers.0.self_attn.v_proj.weight')).toMatchObject({
      source: 'embedder.model.visual.transformer.resblocks.0.attn.in_proj_weight',
      op: { op: 'split', axis: 0, index: 2, parts: 3 },
    });
    const unet = plan.components.find((c) => c.folder === 'unet')!;
    expect(unet.tensors.find((x) => x.source === 'model.diffusion_model.label_emb.0.0.weight')?.target).toBe('class_embedding.linear_1.weight');
    const dropped = new Set(plan.account.dropped.map((x) => x.rule));
    expect(dropped).toContain('unclip-noise-schedule');
    expect(dropped).toContain('unclip-embedder-text-tower');
    const normalizer = plan.components.find((c) => c.folder === 'image_normalizer');
    if (family === 'sd21-unclip-l') {
      expect(normalizer?.tensors.map((x) => [x.source, x.target])).toEqual([
        ['noise_augmentor.data_mean', 'mean'],
        ['noise_augmentor.data_std', 'std'],
      ]);
    } else {
      expect(normalizer).toBeUndefined(); // released files keep no statistics: the writer adds zeros / ones
    }
  });

  test('unCLIP-L without the embedder text tower (written back from Diffusers): the modelspec architecture decides', async () => {
    const { tensors } = await headers('sd21-unclip-l.safetensors');
    const written = tensors.filter((t) => !t.name.startsWith('embedder.model.transformer.'));
    // Only the dropped text tower told L from H: without it and without metadata, it reads as H.
    expect(detectFamily(written).family).toBe('sd21-unclip-h');
    const d = detectFamily(written, { 'modelspec.architecture': 'stable-diffusion-v2-unclip-l' });
    expect(d.family).toBe('sd21-unclip-l');
    expect(d.evidence).toContainEqual(expect.objectContaining({ what: 'metadata modelspec.architecture', found: 'stable-diffusion-v2-unclip-l' }));
    fullAccount(planConversion(written, d), written);
    // The original file keeps deciding by its keys, metadata or not.
    expect(detectFamily(tensors, { 'modelspec.architecture': 'stable-diffusion-v2-unclip-l' }).family).toBe('sd21-unclip-l');
  });

  test('no fixture of these families is taken for another family', async () => {
    const seen = new Map<string, FamilyId>();
    for (const f of FAMILY_FIXTURES) seen.set(f.file, detectFamily((await headers(f.file)).tensors).family);
    expect(Object.fromEntries(seen)).toEqual(Object.fromEntries(FAMILY_FIXTURES.map((f) => [f.file, f.family])));
  });
});

describe('real-size layouts (Stability / lllyasviel architectures) detect and plan with zero unknown keys', () => {
  const cases: [string, FamilyId, TensorInfo[]][] = [
    ['ControlNet 1.1 SD 1.5', 'controlnet-sd15', infos(controlNetTensors(CONTROLNET_SD15_LAYOUT))],
    ['ControlNet 1.1 SD 1.5, bare', 'controlnet-sd15', infos(controlNetTensors({ ...CONTROLNET_SD15_LAYOUT, prefix: '' }))],
    ['x4 upscaler', 'sd-x4-upscaler', infos(upscalerCheckpointTensors(X4_UPSCALER_LAYOUT))],
    ['sd21-unclip-h', 'sd21-unclip-h', infos(unclipCheckpointTensors(SD21_UNCLIP_H_LAYOUT))],
    ['sd21-unclip-l', 'sd21-unclip-l', infos(unclipCheckpointTensors(SD21_UNCLIP_L_LAYOUT))],
  ];
  test.each(cases)('%s', (_, family, tensors) => {
    const d = detectFamily(tensors);
    expect(d).toMatchObject({ family, confidence: 'high' });
    fullAccount(planConversion(tensors, d), tensors);
  });

  test('ControlNet 1.1 SD 1.5 has 12 zero convs (one per input block) and the hint encoder of cldm.py', () => {
    const t = controlNetTensors(CONTROLNET_SD15_LAYOUT);
    expect(t.filter((x) => /^control_model\.zero_convs\.\d+\.0\.weight$/.test(x.name))).toHaveLength(12);
    expect(t.find((x) => x.name === 'control_model.input_hint_block.14.weight')?.shape).toEqual([320, 256, 3, 3]);
    expect(t.find((x) => x.name === 'control_model.middle_block_out.0.weight')?.shape).toEqual([1280, 1280, 1, 1]);
  });

  test('x4 upscaler attn1 reads the 1024-wide context where disable_self_attentions is set', () => {
    const t = upscalerCheckpointTensors(X4_UPSCALER_LAYOUT);
    expect(t.find((x) => x.name === 'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight')?.shape).toEqual([512, 1024]);
    expect(t.find((x) => x.name === 'model.diffusion_model.input_blocks.10.1.transformer_blocks.0.attn1.to_k.weight')?.shape).toEqual([1024, 1024]);
    expect(t.find((x) => x.name === 'model.diffusion_model.label_emb.weight')?.shape).toEqual([1000, 1024]);
    expect(t.some((x) => x.name === 'model.diffusion_model.input_blocks.10.0.skip_connection.bias')).toBe(true);
  });
});

describe('table extends', () => {
  test('an extending table holds its base rows first; a missing base is E_MAPPING_TABLE naming the file', async () => {
    const { loadMappings, MAPPINGS_ROOT, readMappings } = await import('../../src/mapping/load.js');
    const m = loadMappings();
    const base = m.tables.get('unet-ldm')!;
    const upscaler = m.tables.get('unet-upscaler')!;
    expect(upscaler.rows.slice(0, base.rows.length)).toEqual(base.rows);
    expect(upscaler.rows.slice(base.rows.length).map((r) => [r.source, r.targets[0].target])).toEqual([['label_emb.weight', 'class_embedding.weight']]);
    expect(upscaler.layouts).toEqual(base.layouts);
    const { cpSync, mkdtempSync, readFileSync: read, rmSync: rm, writeFileSync } = await import('node:fs');
    const { tmpdir: tmp } = await import('node:os');
    const { pathToFileURL } = await import('node:url');
    const copy = mkdtempSync(join(tmp(), 'mappings-'));
    try {
      cpSync(new URL('.', MAPPINGS_ROOT), copy, { recursive: true });
      const file = join(copy, 'tables', 'controlnet-sgm.json');
      writeFileSync(file, read(file, 'utf8').replace('"extends": "controlnet-ldm"', '"extends": "controlnet-nope"'));
      let error: unknown;
      try {
        readMappings(pathToFileURL(`${copy}/`));
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({ code: 'E_MAPPING_TABLE', data: { file: 'mappings/tables/controlnet-sgm.json', row: 'extends' } });
    } finally {
      rm(copy, { recursive: true, force: true });
    }
  });
});
