/**
 * The SDXL refiner / inpainting, SD 1.x inpainting / instruct-pix2pix, SD 2.x inpainting and
 * standalone VAE fixtures (fixtures/families/, torch-made): detection with the evidence that
 * decides, every key accounted for, the config values each variant is about (input channels, the
 * refiner's aesthetic score and missing first text encoder, the VAE scaling factor and what
 * decided it), and `inspect` naming the family. Tensor-by-tensor equality through the mapping is
 * test/convert/families.test.ts (it walks every fixture); the round trips are
 * test/reverse/families.test.ts.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { convert, type ConvertResult } from '../../src/convert.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { inspectPath } from '../../src/inspect.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import type { FamilyDetection, FamilyId } from '../../src/mapping/plan-types.js';
import { FAMILY_FIXTURES } from '../../src/testing/family-fixtures.js';
import { repoRoot } from '../helpers/paths.js';

const dir = join(repoRoot, 'fixtures', 'families');
const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function detect(file: string): Promise<FamilyDetection> {
  const s = await openCheckpoint(join(dir, file));
  try {
    return detectFamily(s.tensors, s.metadata);
  } finally {
    await s.close();
  }
}

async function convertFixture(file: string, path = join(dir, file)): Promise<{ out: string; result: ConvertResult }> {
  const root = mkdtempSync(join(tmpdir(), 'families-more-'));
  roots.push(root);
  const out = join(root, 'out');
  const fixture = FAMILY_FIXTURES.find((f) => f.file === file)!;
  const result = await convert(path, out, { dtype: fixture.floatDType === 'F16' ? 'fp16' : 'fp32' });
  return { out, result };
}

const readJson = (path: string): Record<string, unknown> => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
const evidenceOf = (d: FamilyDetection, what: string): string | undefined => d.evidence.find((e) => e.what === what)?.found;
const IN = 'model.diffusion_model.input_blocks.0.0.weight shape[1]';

const NEW: [string, FamilyId][] = [
  ['sdxl-refiner.safetensors', 'sdxl-refiner'],
  ['sdxl-inpaint.safetensors', 'sdxl-inpaint'],
  ['sd1-inpaint.ckpt', 'sd1-inpaint'],
  ['sd1-pix2pix.safetensors', 'sd1-pix2pix'],
  ['sd2-inpaint.ckpt', 'sd2-inpaint'],
  ['vae-modelspec.safetensors', 'vae'],
  ['vae-ft-mse-tiny.pt', 'vae'],
];

describe.each(NEW)('%s', (file, family) => {
  test(`detected as ${family}, every key accounted for, inspect names it`, async () => {
    const { result } = await convertFixture(file);
    expect(result.family.family).toBe(family);
    const { mapped, dropped, unknown } = result.plan.account;
    expect(unknown).toEqual([]);
    const s = await openCheckpoint(join(dir, file));
    try {
      expect(new Set([...mapped.map((m) => m.source), ...dropped.map((d) => d.source)])).toEqual(new Set(s.tensors.map((t) => t.name)));
    } finally {
      await s.close();
    }
    const report = await inspectPath(join(dir, file));
    if (report.kind !== 'file') throw new Error(`inspect gave a ${report.kind} report`);
    expect(report.family?.id).toBe(family);
    expect(report.keys?.unknown).toEqual([]);
    expect(report.verdict.status).toBe('convertible');
  });
});

describe('detection evidence', () => {
  test('SDXL refiner: bigG as the only embedder, vector conditioning, 4 input channels', async () => {
    const d = await detect('sdxl-refiner.safetensors');
    expect(d).toMatchObject({ family: 'sdxl-refiner', confidence: 'high' });
    expect(evidenceOf(d, 'keys conditioner.embedders.0.model.*')).toMatch(/keys$/);
    expect(evidenceOf(d, 'key model.diffusion_model.label_emb.0.0.weight')).toBe('present');
    expect(evidenceOf(d, 'keys conditioner.embedders.1.*')).toBe('none');
    expect(evidenceOf(d, IN)).toBe('4');
  });

  test.each([
    ['sdxl-inpaint.safetensors', 'sdxl-inpaint', '9'],
    ['sd1-inpaint.ckpt', 'sd1-inpaint', '9'],
    ['sd1-pix2pix.safetensors', 'sd1-pix2pix', '8'],
    ['sd2-inpaint.ckpt', 'sd2-inpaint', '9'],
  ] as const)('%s: the UNet input channels decide (%s, %s)', async (file, family, channels) => {
    const d = await detect(file);
    expect(d).toMatchObject({ family, confidence: 'high' });
    expect(evidenceOf(d, IN)).toBe(channels);
  });

  test('standalone VAEs: VAE keys at the top level, no UNet, text encoder or conditioner', async () => {
    for (const file of ['vae-modelspec.safetensors', 'vae-ft-mse-tiny.pt']) {
      const d = await detect(file);
      expect(d.family).toBe('vae');
      expect(evidenceOf(d, 'keys encoder.conv_in.*')).toMatch(/keys$/);
      expect(evidenceOf(d, 'keys model.diffusion_model.*')).toBe('none');
    }
  });
});

describe('configs', () => {
  test('SDXL refiner: Img2Img pipeline with the aesthetic score, no text_encoder / tokenizer, bigG as text_encoder_2', async () => {
    const { out } = await convertFixture('sdxl-refiner.safetensors');
    expect(readJson(join(out, 'model_index.json'))).toMatchObject({
      _class_name: 'StableDiffusionXLImg2ImgPipeline',
      requires_aesthetics_score: true,
      force_zeros_for_empty_prompt: false,
      text_encoder: [null, null],
      tokenizer: [null, null],
      text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
      tokenizer_2: ['transformers', 'CLIPTokenizer'],
    });
    expect(existsSync(join(out, 'text_encoder'))).toBe(false);
    expect(existsSync(join(out, 'tokenizer'))).toBe(false);
    expect(readJson(join(out, 'unet/config.json'))).toMatchObject({
      in_channels: 4,
      addition_embed_type: 'text_time',
      addition_time_embed_dim: 256,
      // 32 (pooled bigG) + 5 x 256 (size, crop and aesthetic-score features)
      projection_class_embeddings_input_dim: 1312,
      cross_attention_dim: 32,
      block_out_channels: [8, 16, 16],
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
    });
    expect(readJson(join(out, 'text_encoder_2/config.json'))).toMatchObject({ architectures: ['CLIPTextModelWithProjection'], hidden_size: 32, projection_dim: 32, num_hidden_layers: 2 });
    expect(readJson(join(out, 'vae/config.json'))).toMatchObject({ scaling_factor: 0.13025 });
  });

  test('SDXL inpainting: 9-channel UNet, both text encoders, no aesthetic score', async () => {
    const { out } = await convertFixture('sdxl-inpaint.safetensors');
    expect(readJson(join(out, 'model_index.json'))).toMatchObject({
      _class_name: 'StableDiffusionXLInpaintPipeline',
      requires_aesthetics_score: false,
      text_encoder: ['transformers', 'CLIPTextModel'],
      text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    });
    expect(readJson(join(out, 'unet/config.json'))).toMatchObject({ in_channels: 9, out_channels: 4, projection_class_embeddings_input_dim: 1568, cross_attention_dim: 56 });
    expect(readJson(join(out, 'text_encoder/config.json'))).toMatchObject({ hidden_size: 24, hidden_act: 'quick_gelu' });
  });

  test.each([
    ['sd1-inpaint.ckpt', 'StableDiffusionInpaintPipeline', 9, false],
    ['sd1-pix2pix.safetensors', 'StableDiffusionInstructPix2PixPipeline', 8, false],
    ['sd2-inpaint.ckpt', 'StableDiffusionInpaintPipeline', 9, true],
  ] as const)('%s: %s, in_channels %d', async (file, pipeline, inChannels, sd2) => {
    const { out, result } = await convertFixture(file);
    expect(readJson(join(out, 'model_index.json'))._class_name).toBe(pipeline);
    expect(readJson(join(out, 'unet/config.json'))).toMatchObject({ in_channels: inChannels, out_channels: 4, use_linear_projection: sd2 });
    expect(readJson(join(out, 'text_encoder/config.json'))).toMatchObject({ hidden_act: sd2 ? 'gelu' : 'quick_gelu' });
    expect(readJson(join(out, 'vae/config.json'))).toMatchObject({ scaling_factor: 0.18215 });
    expect(result.prediction.predictionType.value).toBe('epsilon');
  });

  test('instruct-pix2pix: the EMA copies are accounted for and left out unless asked for', async () => {
    const { result } = await convertFixture('sd1-pix2pix.safetensors');
    expect(result.plan.ema).toMatchObject({ present: true, extracted: false });
    expect(result.plan.account.dropped.filter((d) => d.rule === 'ema-copy').length).toBe(result.plan.ema?.count);
  });

  test('SDXL VAE: scaling_factor 0.13025 decided by the modelspec metadata', async () => {
    const { out, result } = await convertFixture('vae-modelspec.safetensors');
    expect(readJson(join(out, 'config.json'))).toMatchObject({ _class_name: 'AutoencoderKL', scaling_factor: 0.13025, block_out_channels: [8, 16] });
    expect(result.vaeScaling).toMatchObject({ value: 0.13025, family: 'sdxl', confidence: 'high' });
    expect(result.vaeScaling?.evidence[0]).toMatchObject({ what: 'metadata modelspec.architecture', found: 'stable-diffusion-xl-v1-base/vae' });
    expect(result.warnings).toEqual([]);
  });

  test('SD VAE (.pt, no metadata): scaling_factor 0.18215 decided by the file name; a neutral name falls back with a warning', async () => {
    const { out, result } = await convertFixture('vae-ft-mse-tiny.pt');
    expect(readJson(join(out, 'config.json'))).toMatchObject({ scaling_factor: 0.18215 });
    expect(result.vaeScaling).toMatchObject({ value: 0.18215, family: 'sd', confidence: 'medium' });
    expect(result.vaeScaling?.evidence[0]).toMatchObject({ what: 'file name', found: 'vae-ft-mse-tiny.pt' });
    const root = mkdtempSync(join(tmpdir(), 'families-more-'));
    roots.push(root);
    const neutral = join(root, 'autoencoder.pt');
    copyFileSync(join(dir, 'vae-ft-mse-tiny.pt'), neutral);
    const again = await convertFixture('vae-ft-mse-tiny.pt', neutral);
    expect(again.result.vaeScaling).toMatchObject({ value: 0.18215, confidence: 'low' });
    expect(again.result.warnings.join(' ')).toMatch(/--family sdxl/);
  });
});
