/**
 * Converting the family fixtures (fixtures/families/: ControlNet, x4 upscaler, SD 2.1 unCLIP, and
 * the SDXL refiner / inpainting, SD 1.x inpainting / pix2pix, SD 2.x inpainting and standalone
 * VAE fixtures, whose configs test/convert/families-more.test.ts checks): the
 * folder layout, the configs' key values, and every written tensor equal to its source tensor
 * through the mapping (both files re-read; copy / squeeze / split / transpose applied here).
 * `inspect` names each fixture's family.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { convert, type ConvertResult } from '../../src/convert.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { inspectPath } from '../../src/inspect.js';
import type { PlannedTensor } from '../../src/mapping/plan-types.js';
import { FAMILY_FIXTURES } from '../../src/testing/family-fixtures.js';
import { repoRoot } from '../helpers/paths.js';

const dir = join(repoRoot, 'fixtures', 'families');
const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** Converts keeping the float dtype of the file (fp16 files as fp16), so bytes compare exactly. */
async function convertFixture(file: string, floatDType: 'F32' | 'F16'): Promise<{ out: string; result: ConvertResult }> {
  const root = mkdtempSync(join(tmpdir(), 'families-'));
  roots.push(root);
  const out = join(root, 'out');
  const result = await convert(join(dir, file), out, { dtype: floatDType === 'F16' ? 'fp16' : 'fp32' });
  return { out, result };
}

function files(root: string, rel = ''): string[] {
  return readdirSync(join(root, rel))
    .flatMap((n) => (statSync(join(root, rel, n)).isDirectory() ? files(root, join(rel, n)) : [join(rel, n)]))
    .sort();
}

const readJson = (path: string): Record<string, unknown> => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

/** The expected output bytes of a planned tensor, from the source tensor's bytes. */
function applyOp(t: PlannedTensor, src: Uint8Array, srcShape: readonly number[], elem: number): Uint8Array {
  switch (t.op.op) {
    case 'copy':
    case 'squeeze':
      return src;
    case 'split': {
      const part = src.length / t.op.parts;
      return src.subarray(part * t.op.index, part * (t.op.index + 1));
    }
    case 'transpose': {
      const [rows, cols] = srcShape;
      const out = new Uint8Array(src.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out.set(src.subarray((r * cols + c) * elem, (r * cols + c + 1) * elem), (c * rows + r) * elem);
      return out;
    }
  }
}

/** Re-reads the source and every written weight file; each planned target must hold its source's bytes. */
async function expectTensorsThroughMapping(file: string, out: string, result: ConvertResult): Promise<number> {
  const source = await openCheckpoint(join(dir, file));
  let checked = 0;
  try {
    for (const c of result.plan.components) {
      const folder = result.plan.standalone ? out : join(out, c.folder);
      const weights = readdirSync(folder).filter((n) => n.endsWith('.safetensors'));
      expect(weights).toHaveLength(1);
      const written = await openCheckpoint(join(folder, weights[0]));
      try {
        expect(written.tensors.map((t) => t.name).sort()).toEqual(c.tensors.map((t) => t.target).sort());
        for (const t of c.tensors) {
          const info = source.get(t.source)!;
          const w = written.get(t.target)!;
          expect(w.shape).toEqual(t.shape);
          expect(w.dtype).toBe(info.dtype);
          const want = applyOp(t, await source.readTensor(t.source), info.shape, info.dtype === 'F16' ? 2 : 4);
          expect(Buffer.from(await written.readTensor(t.target)).equals(Buffer.from(want)), `${c.folder}/${t.target} <- ${t.source}`).toBe(true);
          checked++;
        }
      } finally {
        await written.close();
      }
    }
  } finally {
    await source.close();
  }
  return checked;
}

describe.each(FAMILY_FIXTURES.map((f) => [f.file, f] as const))('convert %s', (file, fixture) => {
  test('every written tensor equals its source tensor through the mapping; inspect names the family', async () => {
    const { out, result } = await convertFixture(file, fixture.floatDType);
    expect(result.family.family).toBe(fixture.family);
    expect(result.plan.account.unknown).toEqual([]);
    const checked = await expectTensorsThroughMapping(file, out, result);
    expect(checked).toBe(result.plan.components.reduce((n, c) => n + c.tensors.length, 0));
    const report = await inspectPath(join(dir, file));
    expect(report.kind).toBe('file');
    if (report.kind !== 'file') return;
    expect(report.family?.id).toBe(fixture.family);
    expect(report.keys?.unknown).toEqual([]);
    expect(report.verdict.status).toBe('convertible');
    // A ControlNet or a standalone VAE is one model folder; everything else a pipeline.
    expect(report.convert?.writes).toBe(fixture.family.startsWith('controlnet') || fixture.family === 'vae' ? 'model' : 'pipeline');
  });
});

describe('family configs', () => {
  test('ControlNet (SD 1.x, prefixed and bare): one ControlNetModel folder sized from the shapes', async () => {
    for (const f of ['controlnet-sd15.pth', 'controlnet-sd15-bare.safetensors']) {
      const { out } = await convertFixture(f, 'F32');
      expect(files(out)).toEqual(['config.json', 'diffusion_pytorch_model.safetensors']);
      expect(readJson(join(out, 'config.json'))).toMatchObject({
        _class_name: 'ControlNetModel',
        _diffusers_version: '0.31.0',
        in_channels: 4,
        conditioning_channels: 3,
        conditioning_embedding_out_channels: [4, 8, 12, 16],
        block_out_channels: [16, 32],
        down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
        layers_per_block: 1,
        cross_attention_dim: 24,
        attention_head_dim: 8,
        use_linear_projection: false,
        addition_embed_type: null,
        projection_class_embeddings_input_dim: null,
        transformer_layers_per_block: 1,
        global_pool_conditions: false,
        controlnet_conditioning_channel_order: 'rgb',
      });
      expect(readJson(join(out, 'config.json'))).not.toHaveProperty('sample_size');
    }
  });

  test('ControlNet (SDXL): text_time add embedding, 64-channel heads, depth per level', async () => {
    const { out } = await convertFixture('controlnet-sdxl.safetensors', 'F16');
    expect(readJson(join(out, 'config.json'))).toMatchObject({
      addition_embed_type: 'text_time',
      addition_time_embed_dim: 256,
      projection_class_embeddings_input_dim: 48,
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
      block_out_channels: [16, 32, 32],
      attention_head_dim: [1, 1, 1],
      transformer_layers_per_block: [1, 1, 2],
      use_linear_projection: true,
    });
  });

  test('x4 upscaler: StableDiffusionUpscalePipeline with low_res_scheduler, class embeddings, 0.08333 VAE', async () => {
    const { out, result } = await convertFixture('sd-x4-upscaler.ckpt', 'F16');
    expect(files(out).filter((p) => p.endsWith('.json') && !p.startsWith('tokenizer'))).toEqual([
      'low_res_scheduler/scheduler_config.json',
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'unet/config.json',
      'vae/config.json',
    ]);
    expect(readJson(join(out, 'model_index.json'))).toEqual({
      _class_name: 'StableDiffusionUpscalePipeline',
      _diffusers_version: '0.31.0',
      feature_extractor: [null, null],
      low_res_scheduler: ['diffusers', 'DDPMScheduler'],
      max_noise_level: 350,
      safety_checker: [null, null],
      scheduler: ['diffusers', 'DDIMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
      watermarker: [null, null],
    });
    expect(readJson(join(out, 'unet/config.json'))).toMatchObject({
      in_channels: 7,
      out_channels: 4,
      num_class_embeds: 1000,
      class_embed_type: null,
      only_cross_attention: [true, true, true, false],
      attention_head_dim: 8,
      use_linear_projection: true,
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
      up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
      // Diffusers: image_size 128 (unet_config) // 2 ** (len(ch_mult) - 1) = 32.
      sample_size: 32,
    });
    expect(readJson(join(out, 'vae/config.json'))).toMatchObject({ scaling_factor: 0.08333, block_out_channels: [4, 8, 16], sample_size: 128 });
    expect(readJson(join(out, 'scheduler/scheduler_config.json'))).toMatchObject({
      _class_name: 'DDIMScheduler',
      beta_start: 0.0001,
      beta_end: 0.02,
      beta_schedule: 'scaled_linear',
      prediction_type: 'v_prediction',
    });
    expect(readJson(join(out, 'low_res_scheduler/scheduler_config.json'))).toEqual({
      _class_name: 'DDPMScheduler',
      _diffusers_version: '0.31.0',
      beta_end: 0.02,
      beta_schedule: 'scaled_linear',
      beta_start: 0.0001,
      clip_sample: true,
      clip_sample_range: 1.0,
      dynamic_thresholding_ratio: 0.995,
      num_train_timesteps: 1000,
      prediction_type: 'epsilon',
      rescale_betas_zero_snr: false,
      sample_max_value: 1.0,
      steps_offset: 0,
      thresholding: false,
      timestep_spacing: 'leading',
      trained_betas: null,
      variance_type: 'fixed_small',
    });
    expect(readJson(join(out, 'text_encoder/config.json'))).toMatchObject({ hidden_act: 'gelu', num_hidden_layers: 1, hidden_size: 32 });
    expect(result.prediction.predictionType).toMatchObject({ value: 'v_prediction', confidence: 'medium' });
  });

  test.each([
    ['sd21-unclip-h.ckpt', 'F16', 'gelu', 24, 48, false],
    ['sd21-unclip-l.safetensors', 'F16', 'quick_gelu', 16, 32, true],
  ] as const)('%s: StableUnCLIPImg2ImgPipeline with the converted image encoder', async (file, dtype, act, embed, adm, statsInFile) => {
    const { out, result } = await convertFixture(file, dtype);
    expect(readJson(join(out, 'model_index.json'))).toEqual({
      _class_name: 'StableUnCLIPImg2ImgPipeline',
      _diffusers_version: '0.31.0',
      feature_extractor: ['transformers', 'CLIPImageProcessor'],
      image_encoder: ['transformers', 'CLIPVisionModelWithProjection'],
      image_normalizer: ['stable_diffusion', 'StableUnCLIPImageNormalizer'],
      image_noising_scheduler: ['diffusers', 'DDPMScheduler'],
      scheduler: ['diffusers', 'DDIMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    });
    expect(readJson(join(out, 'unet/config.json'))).toMatchObject({ class_embed_type: 'projection', projection_class_embeddings_input_dim: adm, cross_attention_dim: 32, use_linear_projection: true });
    expect(readJson(join(out, 'image_encoder/config.json'))).toMatchObject({
      architectures: ['CLIPVisionModelWithProjection'],
      model_type: 'clip_vision_model',
      hidden_act: act,
      image_size: 8,
      patch_size: 4,
      projection_dim: embed,
      num_channels: 3,
    });
    expect(readJson(join(out, 'image_normalizer/config.json'))).toEqual({ _class_name: 'StableUnCLIPImageNormalizer', _diffusers_version: '0.31.0', embedding_dim: embed });
    expect(readJson(join(out, 'image_noising_scheduler/scheduler_config.json'))).toMatchObject({ _class_name: 'DDPMScheduler', beta_schedule: 'squaredcos_cap_v2', num_train_timesteps: 1000 });
    expect(readJson(join(out, 'feature_extractor/preprocessor_config.json'))).toMatchObject({ image_processor_type: 'CLIPImageProcessor', crop_size: { height: 8, width: 8 } });
    expect(readJson(join(out, 'scheduler/scheduler_config.json'))).toMatchObject({ _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' });
    expect(result.prediction.imageSize.value).toBe(768);
    // The normalizer: the file's data_mean / data_std when present, else zeros / ones.
    const norm = await openCheckpoint(join(out, 'image_normalizer/diffusion_pytorch_model.safetensors'));
    try {
      expect(norm.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
        ['mean', 'F16', [1, embed]],
        ['std', 'F16', [1, embed]],
      ]);
      const std = await norm.readTensor('std');
      const allOnes = Buffer.from(std).equals(Buffer.from(new Uint16Array(embed).fill(0x3c00).buffer));
      expect(allOnes).toBe(!statsInFile);
    } finally {
      await norm.close();
    }
  });
});
