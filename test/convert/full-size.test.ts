/**
 * Full-size checkpoints, from names and shapes alone (no bytes): the configs the converter writes
 * without an original yaml must be the ones Diffusers uses for the released models. The expected
 * values are those of the Hub repositories' config files (runwayml/stable-diffusion-v1-5,
 * stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0).
 */
import { describe, expect, it } from 'vitest';
import { planFolder, type CheckpointView } from '../../src/convert.js';
import { numelOf, DTYPES } from '../../src/dtypes.js';
import { checkpointTensors, sgmCheckpointTensors, SD15_LAYOUT, SD2_LAYOUT, SDXL_BASE_LAYOUT, type CheckpointLayout, type SgmCheckpointLayout } from '../../src/testing/ldm-layout.js';

function view(layout: CheckpointLayout | SgmCheckpointLayout, extras: Record<string, unknown> = {}): CheckpointView {
  const list = 'embedders' in layout ? sgmCheckpointTensors(layout) : checkpointTensors(layout);
  const tensors = list.map((t) => {
    const dtype = t.dtype ?? 'F16';
    return { name: t.name, dtype, shape: t.shape, byteLength: numelOf(t.shape) * DTYPES[dtype].bytes };
  });
  return { tensors, metadata: {}, extras };
}

async function configs(v: CheckpointView): Promise<Record<string, Record<string, unknown>>> {
  const { textFiles } = await planFolder(v);
  const out: Record<string, Record<string, unknown>> = {};
  for (const [rel, data] of textFiles) if (rel.endsWith('.json') && typeof data === 'string') out[rel] = JSON.parse(data);
  return out;
}

const DOWN4 = ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'];
const UP4 = ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'];
const SD_VAE = {
  block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill('DownEncoderBlock2D'),
  up_block_types: Array(4).fill('UpDecoderBlock2D'),
  layers_per_block: 2,
  latent_channels: 4,
  in_channels: 3,
  out_channels: 3,
  norm_num_groups: 32,
};

describe('full-size checkpoints without an original yaml', () => {
  it('SD 1.5: the stable-diffusion-v1-5 configs', async () => {
    const c = await configs(view(SD15_LAYOUT, { global_step: 840000 }));
    expect(c['unet/config.json']).toMatchObject({
      attention_head_dim: 8,
      block_out_channels: [320, 640, 1280, 1280],
      cross_attention_dim: 768,
      down_block_types: DOWN4,
      up_block_types: UP4,
      in_channels: 4,
      out_channels: 4,
      layers_per_block: 2,
      sample_size: 64,
      use_linear_projection: false,
      upcast_attention: false,
      transformer_layers_per_block: 1,
    });
    expect(c['vae/config.json']).toMatchObject({ ...SD_VAE, sample_size: 512, scaling_factor: 0.18215 });
    expect(c['text_encoder/config.json']).toMatchObject({
      hidden_size: 768,
      intermediate_size: 3072,
      num_attention_heads: 12,
      num_hidden_layers: 12,
      max_position_embeddings: 77,
      vocab_size: 49408,
      hidden_act: 'quick_gelu',
      projection_dim: 768,
    });
    expect(c['scheduler/scheduler_config.json']).toMatchObject({ _class_name: 'PNDMScheduler', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'epsilon' });
    expect(c['model_index.json']).toMatchObject({ _class_name: 'StableDiffusionPipeline', text_encoder: ['transformers', 'CLIPTextModel'] });
  });

  it('SD 2.1-v (global_step 110000): the stable-diffusion-2-1 configs', async () => {
    const c = await configs(view(SD2_LAYOUT, { global_step: 110000 }));
    expect(c['unet/config.json']).toMatchObject({
      attention_head_dim: [5, 10, 20, 20],
      cross_attention_dim: 1024,
      sample_size: 96,
      use_linear_projection: true,
      upcast_attention: true,
      down_block_types: DOWN4,
    });
    expect(c['vae/config.json']).toMatchObject({ ...SD_VAE, sample_size: 768 });
    expect(c['text_encoder/config.json']).toMatchObject({
      hidden_size: 1024,
      intermediate_size: 4096,
      num_attention_heads: 16,
      num_hidden_layers: 23,
      hidden_act: 'gelu',
      projection_dim: 512,
    });
    expect(c['scheduler/scheduler_config.json']).toMatchObject({ prediction_type: 'v_prediction' });
  });

  it('SD 2.0-base (global_step 875000): epsilon at 512', async () => {
    const c = await configs(view(SD2_LAYOUT, { global_step: 875000 }));
    expect(c['unet/config.json']).toMatchObject({ sample_size: 64, upcast_attention: false });
    expect(c['scheduler/scheduler_config.json']).toMatchObject({ prediction_type: 'epsilon' });
  });

  it('SDXL base: the stable-diffusion-xl-base-1.0 configs', async () => {
    const c = await configs(view(SDXL_BASE_LAYOUT));
    expect(c['unet/config.json']).toMatchObject({
      addition_embed_type: 'text_time',
      addition_time_embed_dim: 256,
      attention_head_dim: [5, 10, 20],
      block_out_channels: [320, 640, 1280],
      cross_attention_dim: 2048,
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
      up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
      projection_class_embeddings_input_dim: 2816,
      sample_size: 128,
      transformer_layers_per_block: [1, 2, 10],
      use_linear_projection: true,
    });
    expect(c['vae/config.json']).toMatchObject({ ...SD_VAE, sample_size: 1024, scaling_factor: 0.13025 });
    expect(c['text_encoder_2/config.json']).toMatchObject({
      architectures: ['CLIPTextModelWithProjection'],
      hidden_size: 1280,
      intermediate_size: 5120,
      num_attention_heads: 20,
      num_hidden_layers: 32,
      projection_dim: 1280,
      hidden_act: 'gelu',
    });
    expect(c['scheduler/scheduler_config.json']).toMatchObject({ _class_name: 'EulerDiscreteScheduler', prediction_type: 'epsilon' });
    expect(c['model_index.json']).toMatchObject({ _class_name: 'StableDiffusionXLPipeline', force_zeros_for_empty_prompt: true });
  });
});
