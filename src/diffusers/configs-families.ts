/**
 * Config files of the ControlNet, x4 upscaler and SD 2.1 unCLIP outputs that the SD pipelines do
 * not have: ControlNetModel, CLIPVisionModelWithProjection (unCLIP image_encoder),
 * StableUnCLIPImageNormalizer, CLIPImageProcessor (feature_extractor). Sizes come from the
 * checkpoint's shapes; what shapes cannot tell comes from the family (documented per value).
 */
import { ErrorCode, fail } from '../errors.js';
import { pyFloat } from '../formats/python-json.js';
import { planSafetensorsLayout } from '../formats/safetensors.js';
import type { FamilyId } from '../mapping/plan-types.js';
import { type ConfigObject, DIFFUSERS_VERSION, TRANSFORMERS_VERSION } from './configs-common.js';
import type { ControlNetShapes, VisionTowerShapes } from './configs-shapes.js';

export interface ControlNetConfigInput {
  readonly family: FamilyId;
  readonly shapes: ControlNetShapes;
  readonly upcastAttention: boolean;
}

/**
 * controlnet config.json: the keys of ControlNetModel.__init__ (diffusers 0.31.0
 * models/controlnet.py) with the values convert_controlnet_checkpoint takes from the UNet part of
 * the config (create_unet_diffusers_config(controlnet=True): no sample_size, no out_channels / up
 * blocks, conditioning_channels = hint_channels), here read from the shapes. Heads: SD 1.x
 * ControlNets (conv proj_in) use 8 heads (cldm_v15.yaml num_heads: 8); linear-projection
 * ControlNets (SD 2.x, SDXL) use 64-channel heads (num_head_channels: 64), width / 64 per level.
 */
export function controlNetConfig(input: ControlNetConfigInput): ConfigObject {
  const s = input.shapes;
  const sdxl = input.family === 'controlnet-sdxl';
  if (sdxl && s.admInChannels === undefined) {
    fail(ErrorCode.E_MISSING_TENSOR, undefined, 'ControlNet: SDXL ControlNet without label_emb.0.0.weight (needed to size the text_time embedding).');
  }
  const withAttention = s.transformerDepth.filter((_, i) => s.downAttention[i]);
  const depth = withAttention.length === 0 || withAttention.every((d) => d === withAttention[0]) ? (withAttention[0] ?? 1) : s.transformerDepth.map((d) => Math.max(1, d));
  return {
    _class_name: 'ControlNetModel',
    _diffusers_version: DIFFUSERS_VERSION,
    act_fn: 'silu',
    addition_embed_type: sdxl ? 'text_time' : null,
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: sdxl ? 256 : null,
    attention_head_dim: s.useLinearProjection ? s.blockOutChannels.map((w) => Math.max(1, Math.floor(w / 64))) : 8,
    block_out_channels: [...s.blockOutChannels],
    class_embed_type: null,
    conditioning_channels: s.conditioningChannels,
    conditioning_embedding_out_channels: [...s.conditioningEmbeddingOutChannels],
    controlnet_conditioning_channel_order: 'rgb',
    cross_attention_dim: s.crossAttentionDim ?? 1280,
    down_block_types: s.downAttention.map((a) => (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    downsample_padding: 1,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    global_pool_conditions: false,
    in_channels: s.inChannels,
    layers_per_block: s.layersPerBlock,
    mid_block_scale_factor: 1,
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    norm_eps: pyFloat(1e-5),
    norm_num_groups: 32,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    projection_class_embeddings_input_dim: sdxl ? (s.admInChannels ?? null) : null,
    resnet_time_scale_shift: 'default',
    transformer_layers_per_block: depth,
    upcast_attention: input.upcastAttention,
    use_linear_projection: s.useLinearProjection,
  };
}

/**
 * Which CLIP the unCLIP image embedder is: unCLIP-H uses OpenCLIP ViT-H/14 (Diffusers downloads
 * laion/CLIP-ViT-H-14-laion2B-s32B-b79K: gelu, 80-channel heads), unCLIP-L OpenAI CLIP ViT-L/14
 * (openai/clip-vit-large-patch14: quick_gelu, 64-channel heads). Neither is readable from shapes.
 */
function visionFamilyFacts(family: FamilyId): { readonly hiddenAct: string; readonly headWidth: number } {
  if (family === 'sd21-unclip-h') return { hiddenAct: 'gelu', headWidth: 80 };
  if (family === 'sd21-unclip-l') return { hiddenAct: 'quick_gelu', headWidth: 64 };
  return fail(ErrorCode.E_CONFIG, undefined, `family ${family} has no CLIP image encoder.`);
}

/**
 * image_encoder/config.json: a transformers CLIPVisionConfig (model_type clip_vision_model) as
 * CLIPVisionModelWithProjection.save_pretrained writes it, sized from the embedder's vision tower.
 */
export function imageEncoderConfig(family: FamilyId, shapes: VisionTowerShapes, options: { readonly torchDtype?: string } = {}): ConfigObject {
  const facts = visionFamilyFacts(family);
  return {
    architectures: ['CLIPVisionModelWithProjection'],
    attention_dropout: pyFloat(0),
    dropout: pyFloat(0),
    hidden_act: facts.hiddenAct,
    hidden_size: shapes.hiddenSize,
    image_size: shapes.imageSize,
    initializer_factor: pyFloat(1),
    initializer_range: pyFloat(0.02),
    intermediate_size: shapes.intermediateSize,
    layer_norm_eps: pyFloat(1e-5),
    model_type: 'clip_vision_model',
    num_attention_heads: Math.max(1, Math.floor(shapes.hiddenSize / facts.headWidth)),
    num_channels: shapes.numChannels,
    num_hidden_layers: shapes.layers,
    patch_size: shapes.patchSize,
    projection_dim: shapes.projectionDim,
    torch_dtype: options.torchDtype ?? 'float32',
    transformers_version: TRANSFORMERS_VERSION,
  };
}

/** image_normalizer/config.json: `embedding_dim` = the noise augmentor's timestep_dim = the image-embedding width. */
export function imageNormalizerConfig(embeddingDim: number): ConfigObject {
  return { _class_name: 'StableUnCLIPImageNormalizer', _diffusers_version: DIFFUSERS_VERSION, embedding_dim: embeddingDim };
}

/**
 * image_normalizer weights when the checkpoint stores no CLIP statistics: mean zeros and std ones
 * of shape [1, embedding_dim], what StableUnCLIPImageNormalizer holds when Diffusers' converter
 * gets no clip_stats_path. Float32, `{"format": "pt"}`, laid out as the reference writer does.
 */
export function defaultNormalizerWeights(embeddingDim: number, dtype: 'F32' | 'F16' | 'BF16' = 'F32'): Uint8Array {
  const layout = planSafetensorsLayout(
    [
      { name: 'mean', dtype, shape: [1, embeddingDim] },
      { name: 'std', dtype, shape: [1, embeddingDim] },
    ],
    { format: 'pt' },
  );
  const out = new Uint8Array(layout.totalBytes);
  out.set(layout.prefix, 0);
  const view = new DataView(out.buffer);
  const one = { F32: 0x3f800000, F16: 0x3c00, BF16: 0x3f80 }[dtype];
  const width = dtype === 'F32' ? 4 : 2;
  for (const t of layout.tensors) {
    if (t.name !== 'std') continue; // mean stays zero
    for (let i = 0; i < embeddingDim; i++) {
      const at = layout.dataStart + t.dataOffsets[0] + i * width;
      if (width === 4) view.setUint32(at, one, true);
      else view.setUint16(at, one, true);
    }
  }
  return out;
}

/**
 * feature_extractor/preprocessor_config.json: CLIPImageProcessor() with its defaults (OpenAI CLIP
 * mean/std, 224 crop, bicubic), which is what Diffusers' stable_unclip_image_encoder constructs;
 * the crop and resize follow the image encoder's input size.
 */
export function featureExtractorConfig(imageSize: number): ConfigObject {
  return {
    crop_size: { height: imageSize, width: imageSize },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [pyFloat(0.48145466), pyFloat(0.4578275), pyFloat(0.40821073)],
    image_processor_type: 'CLIPImageProcessor',
    image_std: [pyFloat(0.26862954), pyFloat(0.26130258), pyFloat(0.27577711)],
    resample: 3,
    rescale_factor: pyFloat(1 / 255),
    size: { shortest_edge: imageSize },
  };
}
