/**
 * SDXL families (sdxl-base, sdxl-refiner, sdxl-inpaint) as mapping data: plans for the sdxl-base
 * fixture give Diffusers' golden names and shapes with every key accounted for; the OpenCLIP bigG
 * `text_projection` is transposed (checked on the converted bytes: the tiny fixture's projection
 * is not square, the real one is, where a missing transpose would raise nothing); refiner and
 * inpainting, which have no fixture, are checked on key lists from the SGM layout generator (proven
 * on the fixture in test/testing/sgm-layout.test.ts) and on the real-size SDXL layouts.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { convert } from '../../src/convert.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { loadMappings } from '../../src/mapping/load.js';
import { planConversion } from '../../src/mapping/plan.js';
import type { ComponentFolder, ConversionPlan, FamilyId } from '../../src/mapping/plan-types.js';
import {
  SDXL_BASE_LAYOUT,
  SDXL_REFINER_LAYOUT,
  sgmCheckpointTensors,
  sgmLayout,
  type SgmCheckpointLayout,
  type SgmParams,
} from '../../src/testing/ldm-layout.js';
import { sharedFixture } from '../helpers/paths.js';
import { caseTensors, goldenShapes, readCase, tensorInfo } from './case-data.js';

const GOLDEN: Record<Exclude<ComponentFolder, 'controlnet' | 'image_encoder' | 'image_normalizer'>, string> = {
  unet: 'golden/sdxl-base/diffusers/unet/diffusion_pytorch_model.safetensors',
  vae: 'golden/sdxl-base/diffusers/vae/diffusion_pytorch_model.safetensors',
  text_encoder: 'golden/sdxl-base/diffusers/text_encoder/model.safetensors',
  text_encoder_2: 'golden/sdxl-base/diffusers/text_encoder_2/model.safetensors',
};

/** The sdxl-base fixture's architecture parameters (case.json). */
const caseParams = (): SgmParams => readCase('sdxl-base') as unknown as SgmParams;

function infos(layout: SgmCheckpointLayout): TensorInfo[] {
  return sgmCheckpointTensors(layout).map((t) => tensorInfo(t.name, t.dtype ?? 'F16', t.shape));
}

/** A tiny refiner: the fixture's parameters with bigG as the only embedder, 1280-wide context, 2560 adm. */
function tinyRefiner(): TensorInfo[] {
  const p = caseParams();
  return infos(sgmLayout({ ...p, unet: { ...p.unet, context_dim: 1280, adm_in_channels: 2560 }, text_encoders: { te2: p.text_encoders.te2 } }));
}

function tinyInpaint(): TensorInfo[] {
  const p = caseParams();
  return infos(sgmLayout({ ...p, unet: { ...p.unet, in_channels: 9 } }));
}

function component(plan: ConversionPlan, folder: ComponentFolder) {
  const c = plan.components.find((x) => x.folder === folder);
  if (!c) throw new Error(`no ${folder} in the plan`);
  return c;
}

describe('sdxl-base plan against the Diffusers golden', () => {
  const tensors = caseTensors('sdxl-base');
  const plan = planConversion(tensors, detectFamily(tensors));

  test('is detected as sdxl-base with high confidence', () => {
    const d = detectFamily(tensors);
    expect(d).toMatchObject({ family: 'sdxl-base', confidence: 'high' });
    expect(d.evidence.find((e) => e.what === 'keys conditioner.embedders.1.model.*')?.implies).toMatch(/bigG/);
    expect(d.evidence.find((e) => e.what === 'key model.diffusion_model.label_emb.0.0.weight')?.found).toBe('present');
  });

  test.each(Object.entries(GOLDEN))('%s: every target name and shape', (folder, rel) => {
    const c = component(plan, folder as ComponentFolder);
    expect(Object.fromEntries(c.tensors.map((t) => [t.target, t.shape]))).toEqual(Object.fromEntries(goldenShapes(rel)));
  });

  test('the plan has exactly the four golden components, with their classes and source prefixes', () => {
    expect(plan.components.map((c) => [c.folder, c.className, c.sourcePrefix]).sort()).toEqual([
      ['text_encoder', 'CLIPTextModel', 'conditioner.embedders.0.transformer.'],
      ['text_encoder_2', 'CLIPTextModelWithProjection', 'conditioner.embedders.1.model.'],
      ['unet', 'UNet2DConditionModel', 'model.diffusion_model.'],
      ['vae', 'AutoencoderKL', 'first_stage_model.'],
    ]);
  });

  test('accounts for every source key once: mapped, or dropped with a named reason', () => {
    const { mapped, dropped, unknown } = plan.account;
    expect(unknown).toEqual([]);
    expect(mapped.length + dropped.length).toBe(tensors.length);
    expect(new Set([...mapped.map((m) => m.source), ...dropped.map((d) => d.source)]).size).toBe(tensors.length);
    expect(dropped.map((d) => [d.source, d.rule])).toEqual([
      ['denoiser.sigmas', 'sgm-denoiser-sigmas'],
      ['conditioner.embedders.0.transformer.text_model.embeddings.position_ids', 'clip-position-ids'],
      ['conditioner.embedders.1.model.logit_scale', 'openclip-logit-scale'],
    ]);
    const targets = plan.components.reduce((n, c) => n + c.tensors.length, 0);
    // in_proj weight and bias of each bigG layer become three tensors each.
    expect(targets).toBe(mapped.length + 2 * 2 * 2);
  });

  test('label_emb becomes the text_time add_embedding; bigG keeps its last layer and splits in_proj', () => {
    const unet = component(plan, 'unet');
    expect(unet.tensors.find((t) => t.source === 'model.diffusion_model.label_emb.0.0.weight')).toMatchObject({ target: 'add_embedding.linear_1.weight', shape: [128, 2816] });
    expect(unet.tensors.find((t) => t.source === 'model.diffusion_model.label_emb.0.2.bias')?.target).toBe('add_embedding.linear_2.bias');
    const te2 = component(plan, 'text_encoder_2');
    expect(te2.tensors.filter((t) => t.source === 'conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight').map((t) => [t.target, t.op])).toEqual([
      ['text_model.encoder.layers.1.self_attn.k_proj.weight', { op: 'split', axis: 0, index: 1, parts: 3 }],
      ['text_model.encoder.layers.1.self_attn.q_proj.weight', { op: 'split', axis: 0, index: 0, parts: 3 }],
      ['text_model.encoder.layers.1.self_attn.v_proj.weight', { op: 'split', axis: 0, index: 2, parts: 3 }],
    ]);
    expect(te2.tensors.find((t) => t.target === 'text_projection.weight')).toMatchObject({ op: { op: 'transpose' }, shape: [1280, 32] });
  });
});

describe('the transpose of text_projection, by value', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** The raw bytes of one tensor of a safetensors file. */
  function tensorBytes(path: string, name: string): { shape: number[]; dtype: string; bytes: Buffer } {
    const buf = readFileSync(path);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const e = header[name];
    return { shape: e.shape, dtype: e.dtype, bytes: buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) };
  }

  test('converting the fixture gives the golden text_encoder_2 text_projection.weight bit for bit', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sdxl-proj-'));
    dirs.push(root);
    const out = join(root, 'out');
    await convert(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), out, {
      originalConfig: sharedFixture('cases/sdxl-base/original_config.yaml'),
    });
    const ours = tensorBytes(join(out, 'text_encoder_2/model.safetensors'), 'text_projection.weight');
    const golden = tensorBytes(sharedFixture(GOLDEN.text_encoder_2), 'text_projection.weight');
    expect(ours.shape).toEqual([1280, 32]);
    expect(ours.dtype).toBe(golden.dtype);
    expect(ours.bytes.equals(golden.bytes)).toBe(true);

    // The source is [32, 1280] float16: element [r][c] of the output is source [c][r].
    const src = tensorBytes(sharedFixture('cases/sdxl-base/model-fp16.safetensors'), 'conditioner.embedders.1.model.text_projection');
    expect(src.shape).toEqual([32, 1280]);
    const f32 = new Float32Array(ours.bytes.buffer, ours.bytes.byteOffset, ours.bytes.length / 4);
    const f16 = (i: number) => src.bytes.readUInt16LE(2 * i);
    const asF32 = (h: number) => {
      const s = h >> 15 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    };
    for (const [r, c] of [[0, 1], [1, 0], [1279, 31], [640, 17]]) expect(f32[r * 32 + c]).toBe(asF32(f16(c * 1280 + r)));
  });
});

describe('SDXL family detection', () => {
  test('refiner (bigG as embedder 0, label_emb) and inpainting (9 input channels) from generated key lists', () => {
    expect(detectFamily(tinyRefiner())).toMatchObject({ family: 'sdxl-refiner', confidence: 'high' });
    expect(detectFamily(tinyInpaint())).toMatchObject({ family: 'sdxl-inpaint', confidence: 'high' });
  });

  test('the released SDXL base and refiner layouts', () => {
    expect(detectFamily(infos(SDXL_BASE_LAYOUT), { 'modelspec.architecture': 'stable-diffusion-xl-v1-base' })).toMatchObject({ family: 'sdxl-base', confidence: 'high' });
    expect(detectFamily(infos(SDXL_REFINER_LAYOUT), { 'modelspec.architecture': 'stable-diffusion-xl-v1-refiner' })).toMatchObject({ family: 'sdxl-refiner', confidence: 'high' });
  });

  test('a modelspec architecture that disagrees lowers the confidence', () => {
    expect(detectFamily(infos(SDXL_BASE_LAYOUT), { 'modelspec.architecture': 'stable-diffusion-xl-v1-refiner' }).confidence).toBe('low');
  });

  test('SD2 saved in SGM layout (OpenCLIP as embedder 0, no label_emb) is not taken for a refiner', () => {
    const sd2Sgm = tinyRefiner().filter((t) => !t.name.includes('.label_emb.'));
    expect(() => detectFamily(sd2Sgm)).toThrow(/no known model family/);
  });

  test('an SGM file with 8 input channels matches no family', () => {
    const p = caseParams();
    expect(() => detectFamily(infos(sgmLayout({ ...p, unet: { ...p.unet, in_channels: 8 } })))).toThrow(/no known model family/);
  });
});

describe('SDXL refiner and inpainting plans', () => {
  test('refiner: bigG from conditioner.embedders.0.model. into text_encoder_2, no text_encoder', () => {
    const tensors = tinyRefiner();
    const plan = planConversion(tensors, { family: 'sdxl-refiner' });
    expect(plan.account.unknown).toEqual([]);
    expect(plan.components.map((c) => c.folder).sort()).toEqual(['text_encoder_2', 'unet', 'vae']);
    const te2 = component(plan, 'text_encoder_2');
    expect(te2.sourcePrefix).toBe('conditioner.embedders.0.model.');
    expect(te2.tensors.find((t) => t.target === 'text_projection.weight')).toMatchObject({ source: 'conditioner.embedders.0.model.text_projection', op: { op: 'transpose' } });
    expect(component(plan, 'unet').tensors.find((t) => t.target === 'add_embedding.linear_1.weight')?.shape).toEqual([128, 2560]);
    // Same targets as the base's text_encoder_2 (the golden), only the source prefix differs.
    expect(te2.tensors.map((t) => t.target)).toEqual([...goldenShapes(GOLDEN.text_encoder_2).keys()].sort());
  });

  test('inpainting: the base plan with a 9-channel conv_in', () => {
    const plan = planConversion(tinyInpaint(), { family: 'sdxl-inpaint' });
    expect(plan.account.unknown).toEqual([]);
    expect(component(plan, 'unet').tensors.find((t) => t.target === 'conv_in.weight')?.shape).toEqual([32, 9, 3, 3]);
  });

  test.each<[string, SgmCheckpointLayout, FamilyId, number]>([
    ['SDXL base 1.0', SDXL_BASE_LAYOUT, 'sdxl-base', 4],
    ['SDXL refiner 1.0', SDXL_REFINER_LAYOUT, 'sdxl-refiner', 3],
  ])('%s (real size) plans with no unknown keys, markers and EMA included', (_, layout, family, components) => {
    const tensors = infos({ ...layout, ema: true, markers: ['v_pred', 'ztsnr'] });
    const plan = planConversion(tensors, { family }, { extractEma: true });
    expect(plan.account.unknown).toEqual([]);
    expect(plan.components).toHaveLength(components);
    expect(plan.ema).toMatchObject({ present: true, extracted: true });
    expect(plan.account.dropped.filter((d) => d.rule === 'prediction-marker').map((d) => d.source)).toEqual(['v_pred', 'ztsnr']);
    const te2 = component(plan, 'text_encoder_2');
    expect(te2.tensors.filter((t) => t.target.endsWith('.self_attn.q_proj.weight'))).toHaveLength(32);
    expect(te2.tensors.find((t) => t.target === 'text_projection.weight')).toMatchObject({ op: { op: 'transpose' }, shape: [1280, 1280] });
    const unet = component(plan, 'unet');
    expect(unet.tensors.filter((t) => /^mid_block\.attentions\.0\.transformer_blocks\.\d+\.norm1\.weight$/.test(t.target))).toHaveLength(family === 'sdxl-base' ? 10 : 4);
    expect(unet.tensors.every((t) => t.source.startsWith('model_ema.'))).toBe(true);
  });
});

describe('the unet-sgm table', () => {
  test('is unet-ldm plus the two label_emb rows (the copies stay in step)', () => {
    const { tables } = loadMappings();
    const strip = (name: string) => {
      const t = tables.get(name)!;
      const rows = (rs: readonly { source: string; targets: readonly unknown[]; drop?: string; inner?: string }[]) => rs.map((r) => ({ source: r.source, targets: r.targets, drop: r.drop, inner: r.inner }));
      return { rows: rows(t.rows), inner: [...t.inner].map(([k, v]) => [k, rows(v)]), layouts: t.layouts.map((l) => ({ generator: l.generator, rows: rows(l.rows).map((r, i) => ({ ...r, slot: l.rows[i].slot })) })) };
    };
    const ldm = strip('unet-ldm');
    const sgm = strip('unet-sgm');
    const extra = sgm.rows.filter((r) => r.source.startsWith('label_emb.'));
    expect(extra.map((r) => [r.source, r.targets])).toEqual([
      ['label_emb.0.0.', [{ target: 'add_embedding.linear_1.', op: { op: 'copy' } }]],
      ['label_emb.0.2.', [{ target: 'add_embedding.linear_2.', op: { op: 'copy' } }]],
    ]);
    expect({ ...sgm, rows: sgm.rows.filter((r) => !extra.includes(r)) }).toEqual(ldm);
  });
});
