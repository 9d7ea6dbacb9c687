/**
 * The config objects Diffusers 0.31.0 (and transformers 4.44 for the text encoder) write into a
 * converted Stable Diffusion folder, built without Python: structure from the checkpoint's
 * shapes (configs-shapes.ts), what shapes cannot tell from the original YAML exactly as
 * Diffusers' `convert_from_ckpt.py` derives it, and family defaults otherwise.
 *
 * Every object holds the full key set the reference files carry. Values Python holds as floats
 * are wrapped in `pyFloat` so `pythonJsonDumps(obj, { indent: 2, sortKeys: true }) + '\n'` gives
 * the reference text byte for byte.
 */
import { ErrorCode, fail } from '../errors.js';
import { pyFloat } from '../formats/python-json.js';
import type { OriginalConfig, OriginalUnetParams, YamlNumber } from '../mapping/original-config.js';
import type { FamilyId } from '../mapping/plan-types.js';
import type { TextEncoderShapes, UnetShapes, VaeShapes } from './configs-shapes.js';
import { type ConfigObject, DIFFUSERS_VERSION, pyNumber, TRANSFORMERS_VERSION } from './configs-common.js';
import { type SchedulerKind, schedulerClassName } from './configs-scheduler.js';

export { DIFFUSERS_VERSION, TRANSFORMERS_VERSION, pyNumber, type ConfigObject, type ConfigValue } from './configs-common.js';
export { schedulerConfig, sdxlSchedulerConfig, schedulerClassName, SCHEDULER_KINDS, type SchedulerKind, type SchedulerParams } from './configs-scheduler.js';

/** AutoencoderKL's `scaling_factor` default (LDM_VAE_DEFAULT_SCALING_FACTOR in Diffusers). */
export const DEFAULT_VAE_SCALING_FACTOR = 0.18215;
/** The SDXL VAE's `scale_factor` (sd_xl_base.yaml / sd_xl_refiner.yaml `scale_factor: 0.13025`). */
export const SDXL_VAE_SCALING_FACTOR = 0.13025;
/** The x4 upscaler VAE's `scale_factor` (x4-upscaling.yaml; StableDiffusionUpscalePipeline insists on it). */
export const X4_UPSCALER_VAE_SCALING_FACTOR = 0.08333;

/** SDXL base, refiner and inpainting: Stability's SGM checkpoints. */
export function isSdxlFamily(family: FamilyId): boolean {
  return family === 'sdxl-base' || family === 'sdxl-refiner' || family === 'sdxl-inpaint';
}

// ------------------------------------------------------------------------------------------------
// UNet2DConditionModel
// ------------------------------------------------------------------------------------------------

export interface UnetConfigInput {
  readonly family: FamilyId;
  readonly shapes: UnetShapes;
  /** The original YAML; when given it decides what Diffusers takes from it (heads, types, ...). */
  readonly originalConfig?: OriginalConfig;
  /** Pixel size the model was trained at (prediction.ts decides it). */
  readonly imageSize: number;
  /** VAE facts: their level count gives the latent downscale when there is no YAML. */
  readonly vae?: VaeShapes;
  readonly upcastAttention: boolean;
}

/**
 * unet/config.json. Mirrors create_unet_diffusers_config (convert_from_ckpt.py) when a YAML is
 * given, checking every structural value against the checkpoint; without one, the shapes decide
 * and the family supplies the head layout.
 */
export function unetConfig(input: UnetConfigInput): ConfigObject {
  const derived = input.originalConfig?.unet
    ? unetFromYaml(input.family, input.originalConfig, input.originalConfig.unet, input.shapes)
    : unetFromShapes(input.family, input.shapes);
  const sampleSize = Math.floor(input.imageSize / latentDownscale(input.originalConfig, input.vae));
  return { ...unetDefaults(), ...derived, sample_size: sampleSize, upcast_attention: input.upcastAttention };
}

/** `__init__` defaults of UNet2DConditionModel (diffusers 0.31.0), as save_pretrained writes them. */
function unetDefaults(): ConfigObject {
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: DIFFUSERS_VERSION,
    act_fn: 'silu',
    addition_embed_type: null,
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: null,
    attention_head_dim: 8,
    attention_type: 'default',
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    class_embed_type: null,
    class_embeddings_concat: false,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: 1280,
    cross_attention_norm: null,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    downsample_padding: 1,
    dropout: pyFloat(0),
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_only_cross_attention: null,
    mid_block_scale_factor: 1,
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    norm_eps: pyFloat(1e-5),
    norm_num_groups: 32,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    projection_class_embeddings_input_dim: null,
    resnet_out_scale_factor: pyFloat(1),
    resnet_skip_time_act: false,
    resnet_time_scale_shift: 'default',
    reverse_transformer_layers_per_block: null,
    sample_size: null,
    time_cond_proj_dim: null,
    time_embedding_act_fn: null,
    time_embedding_dim: null,
    time_embedding_type: 'positional',
    timestep_post_act: null,
    transformer_layers_per_block: 1,
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    upcast_attention: false,
    use_linear_projection: false,
  };
}

/** create_unet_diffusers_config: `vae_scale_factor = 2 ** (len(ch_mult) - 1)`. */
function latentDownscale(originalConfig: OriginalConfig | undefined, vae: VaeShapes | undefined): number {
  const levels = originalConfig?.vae.chMult.length ?? vae?.blockOutChannels.length ?? 4;
  return 2 ** (levels - 1);
}

function blockTypes(attention: readonly boolean[], direction: 'down' | 'up'): string[] {
  return attention.map((a) =>
    direction === 'down' ? (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D') : a ? 'CrossAttnUpBlock2D' : 'UpBlock2D',
  );
}

/** The values create_unet_diffusers_config takes from the YAML, each checked against the shapes. */
function unetFromYaml(family: FamilyId, oc: OriginalConfig, u: OriginalUnetParams, shapes: UnetShapes): ConfigObject {
  const at = `model.params.${oc.unetSection ?? 'unet_config'}.params`;
  const check = conflictChecker(oc.file);
  const blockOut = u.channelMult.map((m) => u.modelChannels * m);
  check(`${at}.model_channels x channel_mult`, blockOut, shapes.blockOutChannels);
  // Resolution 1, 2, 4, ... per level going down, then back up in reverse.
  const downAttention = blockOut.map((_, i) => u.attentionResolutions.includes(2 ** i));
  const upAttention = [...downAttention].reverse();
  check(`${at}.attention_resolutions (down blocks)`, blockTypes(downAttention, 'down'), blockTypes(shapes.downAttention, 'down'));
  check(`${at}.attention_resolutions (up blocks)`, blockTypes(upAttention, 'up'), blockTypes(shapes.upAttention, 'up'));
  check(`${at}.num_res_blocks`, u.numResBlocks, shapes.layersPerBlock);
  check(`${at}.out_channels`, u.outChannels, shapes.outChannels);
  check(`${at}.use_linear_in_transformer`, u.useLinearInTransformer, shapes.useLinearProjection);
  if (shapes.crossAttentionDim !== null) check(`${at}.context_dim`, u.contextDim, shapes.crossAttentionDim);
  const depth = u.transformerDepth === null ? 1 : u.transformerDepth;
  checkDepth(check, `${at}.transformer_depth`, depth, shapes);
  return {
    // Diffusers overrides the YAML's in_channels with num_in_channels; the checkpoint knows it.
    in_channels: shapes.inChannels,
    out_channels: u.outChannels,
    down_block_types: blockTypes(downAttention, 'down'),
    up_block_types: blockTypes(upAttention, 'up'),
    block_out_channels: blockOut,
    layers_per_block: u.numResBlocks,
    cross_attention_dim: u.contextDim,
    // Neither num_heads nor a linear num_head_channels: Diffusers would build no valid UNet;
    // the family layout is the only sensible reading.
    attention_head_dim: yamlHeadDim(u) ?? familyHeadDim(family, blockOut),
    use_linear_projection: u.useLinearInTransformer,
    transformer_layers_per_block: depth,
    ...yamlClassEmbedding(u),
  };
}

/**
 * create_unet_diffusers_config: `num_heads` when present; linear-transformer models (SD 2.x)
 * without it get `model_channels // num_head_channels * mult` per level.
 */
function yamlHeadDim(u: OriginalUnetParams): number | number[] | undefined {
  if (u.numHeads !== undefined) return u.numHeads;
  if (u.useLinearInTransformer && u.numHeadChannels !== undefined) {
    const perLevel = Math.floor(u.modelChannels / u.numHeadChannels);
    return u.channelMult.map((m) => perLevel * m);
  }
  return undefined;
}

/** create_unet_diffusers_config's num_classes / disable_self_attentions handling. */
function yamlClassEmbedding(u: OriginalUnetParams): ConfigObject {
  const out: ConfigObject = {};
  if (u.numClasses === 'sequential') {
    if (u.contextDim === 2048 || u.contextDim === 1280) {
      out.addition_embed_type = 'text_time';
      out.addition_time_embed_dim = 256;
    } else {
      out.class_embed_type = 'projection';
    }
    out.projection_class_embeddings_input_dim = u.admInChannels ?? null;
  } else if (typeof u.numClasses === 'number') {
    out.num_class_embeds = u.numClasses;
  }
  if (u.disableSelfAttentions !== undefined) out.only_cross_attention = u.disableSelfAttentions;
  return out;
}

/** transformer_depth (int: every attention level; list: per level) must match the blocks found. */
function checkDepth(check: ConflictCheck, field: string, depth: number | readonly number[], shapes: UnetShapes): void {
  const expected = shapes.transformerDepth.map((d, i) =>
    shapes.downAttention[i] ? (typeof depth === 'number' ? depth : depth[i]) : d,
  );
  check(field, expected, shapes.transformerDepth);
}

/** Without a YAML: the checkpoint's structure plus the family's head layout. */
function unetFromShapes(family: FamilyId, shapes: UnetShapes): ConfigObject {
  return {
    in_channels: shapes.inChannels,
    out_channels: shapes.outChannels,
    down_block_types: blockTypes(shapes.downAttention, 'down'),
    up_block_types: blockTypes(shapes.upAttention, 'up'),
    block_out_channels: [...shapes.blockOutChannels],
    layers_per_block: shapes.layersPerBlock,
    cross_attention_dim: shapes.crossAttentionDim ?? 1280,
    attention_head_dim: familyHeadDim(family, shapes.blockOutChannels),
    use_linear_projection: shapes.useLinearProjection,
    transformer_layers_per_block: shapeDepth(shapes),
    ...shapeAdditionEmbedding(family, shapes),
    ...shapeClassEmbedding(family, shapes),
  };
}

/**
 * Class embeddings without a YAML, as create_unet_diffusers_config derives them from the
 * families' YAMLs: unCLIP's `num_classes: sequential` with a 1024 context gives
 * `class_embed_type: "projection"` sized by `label_emb.0.0.weight`; the x4 upscaler's integer
 * `num_classes` gives `num_class_embeds` (the rows of `label_emb.weight`) and its
 * `disable_self_attentions` gives `only_cross_attention`, read per level from attn1's input width
 * (a level without attention takes its neighbour's value, as x4-upscaling.yaml writes
 * [True, True, True, False]).
 */
function shapeClassEmbedding(family: FamilyId, shapes: UnetShapes): ConfigObject {
  const out: ConfigObject = {};
  if (isUnclipFamily(family)) {
    if (shapes.admInChannels === undefined) {
      fail(ErrorCode.E_MISSING_TENSOR, undefined, 'UNet: unCLIP checkpoint without label_emb.0.0.weight (needed to size the projection class embedding).', {
        data: { key: 'model.diffusion_model.label_emb.0.0.weight' },
      });
    }
    out.class_embed_type = 'projection';
    out.projection_class_embeddings_input_dim = shapes.admInChannels;
  }
  if (shapes.numClassEmbeds !== undefined) out.num_class_embeds = shapes.numClassEmbeds;
  if (shapes.crossOnlyAttention) {
    const flags = shapes.crossOnlyAttention;
    out.only_cross_attention = flags.map((f, i) => {
      if (shapes.downAttention[i]) return f;
      const next = flags.findIndex((_, k) => k > i && shapes.downAttention[k]);
      const prev = [...flags.keys()].reverse().find((k) => k < i && shapes.downAttention[k]);
      return next >= 0 ? flags[next] : prev !== undefined ? flags[prev] : false;
    });
  }
  return out;
}

/** SD 2.1 unCLIP (H and L image embedders). */
export function isUnclipFamily(family: FamilyId): boolean {
  return family === 'sd21-unclip-h' || family === 'sd21-unclip-l';
}

/** Standalone ControlNet files (SD 1.x/2.x and SDXL). */
export function isControlNetFamily(family: FamilyId): boolean {
  return family === 'controlnet-sd15' || family === 'controlnet-sdxl';
}

/**
 * SDXL's vector conditioning without a YAML: what create_unet_diffusers_config derives from
 * `num_classes: sequential` with a 2048/1280 context (sd_xl_base.yaml, sd_xl_refiner.yaml), the
 * input width read from `label_emb.0.0.weight` (2816 base, 2560 refiner).
 */
function shapeAdditionEmbedding(family: FamilyId, shapes: UnetShapes): ConfigObject {
  if (!isSdxlFamily(family)) return {};
  if (shapes.admInChannels === undefined) {
    fail(ErrorCode.E_MISSING_TENSOR, undefined, 'UNet: SDXL checkpoint without label_emb.0.0.weight (needed to size the text_time embedding).', {
      data: { key: 'model.diffusion_model.label_emb.0.0.weight' },
    });
  }
  return { addition_embed_type: 'text_time', addition_time_embed_dim: 256, projection_class_embeddings_input_dim: shapes.admInChannels };
}

/**
 * Heads when no YAML says: SD 1.x uses 8 heads everywhere (v1-inference.yaml `num_heads: 8`);
 * SD 2.x and SDXL use 64-channel heads (`num_head_channels: 64`), i.e. width / 64 per level
 * (SDXL base [5, 10, 20], refiner [6, 12, 24, 24], as their Hub configs).
 */
export function familyHeadDim(family: FamilyId, blockOutChannels: readonly number[]): number | number[] {
  if (family.startsWith('sd2') || isSdxlFamily(family)) return blockOutChannels.map((w) => Math.max(1, Math.floor(w / 64)));
  return 8;
}

/** One number when every attention level has the same depth (how the YAMLs write it). */
function shapeDepth(shapes: UnetShapes): number | number[] {
  const withAttention = shapes.transformerDepth.filter((_, i) => shapes.downAttention[i]);
  if (withAttention.length === 0 || withAttention.every((d) => d === withAttention[0])) return withAttention[0] ?? 1;
  return shapes.transformerDepth.map((d) => Math.max(1, d));
}

type ConflictCheck = (field: string, fromYaml: unknown, fromCheckpoint: unknown) => void;

/** A YAML value that contradicts the checkpoint would build a model the weights cannot load into. */
function conflictChecker(file: string | undefined): ConflictCheck {
  return (field, fromYaml, fromCheckpoint) => {
    if (JSON.stringify(fromYaml) === JSON.stringify(fromCheckpoint)) return;
    fail(
      ErrorCode.E_ORIGINAL_CONFIG,
      file,
      `original config ${field} gives ${JSON.stringify(fromYaml)} but the checkpoint has ${JSON.stringify(fromCheckpoint)}.`,
      { hint: 'Use the YAML that belongs to this checkpoint, or none.', data: { field, yaml: fromYaml, checkpoint: fromCheckpoint } },
    );
  };
}

// ------------------------------------------------------------------------------------------------
// AutoencoderKL
// ------------------------------------------------------------------------------------------------

export interface VaeConfigInput {
  readonly shapes: VaeShapes;
  readonly originalConfig?: OriginalConfig;
  /** VAE sample_size = the image size (create_vae_diffusers_config). */
  readonly imageSize: number;
  /** Defaults to the YAML's `scale_factor`, else 0.18215 (see vaeScalingFactor). */
  readonly scalingFactor?: YamlNumber;
}

/** vae/config.json: create_vae_diffusers_config plus `scaling_factor`, checked against the shapes. */
export function vaeConfig(input: VaeConfigInput): ConfigObject {
  const { shapes, originalConfig: oc } = input;
  if (oc) checkVaeYaml(oc, shapes);
  const levels = shapes.blockOutChannels.length;
  return {
    _class_name: 'AutoencoderKL',
    _diffusers_version: DIFFUSERS_VERSION,
    act_fn: 'silu',
    block_out_channels: [...shapes.blockOutChannels],
    down_block_types: Array<string>(levels).fill('DownEncoderBlock2D'),
    force_upcast: true,
    in_channels: shapes.inChannels,
    latent_channels: shapes.latentChannels,
    latents_mean: null,
    latents_std: null,
    layers_per_block: shapes.layersPerBlock,
    mid_block_add_attention: true,
    norm_num_groups: 32,
    out_channels: shapes.outChannels,
    sample_size: input.imageSize,
    scaling_factor: pyNumber(input.scalingFactor ?? vaeScalingFactor('sd1', oc)),
    shift_factor: null,
    up_block_types: Array<string>(levels).fill('UpDecoderBlock2D'),
    use_post_quant_conv: true,
    use_quant_conv: true,
  };
}

/**
 * The legacy pipeline converter copies the YAML's `scale_factor` (0.18215 when absent); the
 * standalone VAE converter (convert_vae_pt_to_diffusers.py) never sets it, so AutoencoderKL's
 * default 0.18215 applies whatever the YAML says. SDXL without a YAML: the converter would fetch
 * sd_xl_base.yaml / sd_xl_refiner.yaml, whose `scale_factor` is 0.13025.
 */
export function vaeScalingFactor(family: FamilyId, originalConfig?: OriginalConfig): YamlNumber {
  if (family !== 'vae' && originalConfig?.scaleFactor) return originalConfig.scaleFactor;
  if (isSdxlFamily(family)) return { value: SDXL_VAE_SCALING_FACTOR, kind: 'float' };
  if (family === 'sd-x4-upscaler') return { value: X4_UPSCALER_VAE_SCALING_FACTOR, kind: 'float' };
  return { value: DEFAULT_VAE_SCALING_FACTOR, kind: 'float' };
}

function checkVaeYaml(oc: OriginalConfig, shapes: VaeShapes): void {
  const at = 'model.params.first_stage_config.params.ddconfig';
  const check = conflictChecker(oc.file);
  const v = oc.vae;
  check(`${at}.ch x ch_mult`, v.chMult.map((m) => v.ch * m), shapes.blockOutChannels);
  check(`${at}.num_res_blocks`, v.numResBlocks, shapes.layersPerBlock);
  check(`${at}.in_channels`, v.inChannels, shapes.inChannels);
  check(`${at}.out_ch`, v.outCh, shapes.outChannels);
  check(`${at}.z_channels`, v.zChannels, shapes.latentChannels);
}

// ------------------------------------------------------------------------------------------------
// CLIPTextModel (transformers)
// ------------------------------------------------------------------------------------------------

/**
 * `clip-l`: OpenAI CLIP ViT-L/14 text tower (SD 1.x, SDXL text_encoder); `openclip-h`: OpenCLIP
 * ViT-H (SD 2.x); `openclip-bigg`: OpenCLIP ViT-bigG with its projection (SDXL text_encoder_2).
 */
export type TextEncoderKind = 'clip-l' | 'openclip-h' | 'openclip-bigg';

export interface TextEncoderConfigOptions {
  /** transformers records the weights' dtype; `--half` output is float16. */
  readonly torchDtype?: 'float32' | 'float16' | 'bfloat16';
}

/**
 * text_encoder/config.json: the Hub config Diffusers loads for the family
 * (openai/clip-vit-large-patch14 for FrozenCLIPEmbedder, stabilityai/stable-diffusion-2
 * `text_encoder` for FrozenOpenCLIPEmbedder, laion/CLIP-ViT-bigG-14-laion2B-39B-b160k with
 * `projection_dim=1280` for SDXL's text_encoder_2) with the checkpoint's sizes. SD 2 uses the
 * penultimate OpenCLIP layer, so Diffusers' config has one layer fewer than the checkpoint
 * (convert_open_clip_checkpoint drops `resblocks.23`); SDXL keeps every bigG layer.
 */
export function textEncoderConfig(kind: TextEncoderKind, shapes: TextEncoderShapes, options: TextEncoderConfigOptions = {}): ConfigObject {
  const layers = kind === 'openclip-h' ? shapes.layers - 1 : shapes.layers;
  if (layers < 1) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `text encoder: ${shapes.layers} transformer layers found (expected at least ${kind === 'openclip-h' ? 2 : 1}).`);
  }
  return {
    architectures: [kind === 'openclip-bigg' ? 'CLIPTextModelWithProjection' : 'CLIPTextModel'],
    attention_dropout: pyFloat(0),
    bos_token_id: 0,
    dropout: pyFloat(0),
    eos_token_id: 2,
    hidden_act: kind === 'clip-l' ? 'quick_gelu' : 'gelu',
    hidden_size: shapes.hiddenSize,
    initializer_factor: pyFloat(1),
    initializer_range: pyFloat(0.02),
    intermediate_size: shapes.intermediateSize,
    layer_norm_eps: pyFloat(1e-5),
    max_position_embeddings: shapes.maxPositionEmbeddings,
    model_type: 'clip_text_model',
    // The convention the Hub configs follow: 64-channel heads.
    num_attention_heads: Math.max(1, Math.floor(shapes.hiddenSize / 64)),
    num_hidden_layers: layers,
    pad_token_id: 1,
    projection_dim: projectionDim(kind, shapes),
    torch_dtype: options.torchDtype ?? 'float32',
    transformers_version: TRANSFORMERS_VERSION,
    vocab_size: shapes.vocabSize,
  };
}

/**
 * The Hub configs' projection_dim: 768 (CLIP-L), 512 (SD 2's ViT-H config); SDXL's bigG gets the
 * width its `text_projection` maps to (Diffusers passes projection_dim=1280, the real width).
 */
function projectionDim(kind: TextEncoderKind, shapes: TextEncoderShapes): number {
  if (kind === 'openclip-bigg') return shapes.projectionDim ?? 1280;
  return kind === 'openclip-h' ? 512 : 768;
}

/** Which text encoder a family carries in `text_encoder/` (none for a VAE or the SDXL refiner). */
export function textEncoderKind(family: FamilyId): TextEncoderKind | undefined {
  if (family === 'vae' || family === 'sdxl-refiner' || isControlNetFamily(family)) return undefined;
  // sd2*, sd21-unclip-* and the x4 upscaler condition on OpenCLIP ViT-H (penultimate layer).
  return family.startsWith('sd2') || family === 'sd-x4-upscaler' ? 'openclip-h' : 'clip-l';
}

/** What `text_encoder_2/` holds: OpenCLIP bigG with projection for every SDXL family. */
export function textEncoder2Kind(family: FamilyId): TextEncoderKind | undefined {
  return isSdxlFamily(family) ? 'openclip-bigg' : undefined;
}

// ------------------------------------------------------------------------------------------------
// model_index.json
// ------------------------------------------------------------------------------------------------

export interface ModelIndexInput {
  readonly family: FamilyId;
  readonly scheduler: SchedulerKind;
  /** Overrides the family's pipeline class (like the converter's --pipeline_class_name). */
  readonly pipelineClass?: string;
}

/** The pipeline class Diffusers' converter picks (or that the family needs) by default. */
export function defaultPipelineClass(family: FamilyId): string {
  switch (family) {
    case 'sd1-inpaint':
    case 'sd2-inpaint':
      return 'StableDiffusionInpaintPipeline';
    case 'sd1-pix2pix':
      return 'StableDiffusionInstructPix2PixPipeline';
    case 'sd2-depth':
      return 'StableDiffusionDepth2ImgPipeline';
    case 'sdxl-base':
      return 'StableDiffusionXLPipeline';
    case 'sdxl-refiner':
      return 'StableDiffusionXLImg2ImgPipeline';
    case 'sdxl-inpaint':
      return 'StableDiffusionXLInpaintPipeline';
    case 'sd-x4-upscaler':
      return 'StableDiffusionUpscalePipeline';
    case 'sd21-unclip-h':
    case 'sd21-unclip-l':
      return 'StableUnCLIPImg2ImgPipeline';
    default:
      return 'StableDiffusionPipeline';
  }
}

/**
 * model_index.json as DiffusionPipeline.save_pretrained writes it for a pipeline built without
 * safety checker: optional components `[null, null]`, `requires_safety_checker` kept at its
 * `__init__` default (true). Depth2Img registers a depth estimator instead and has no such flag.
 */
export function modelIndex(input: ModelIndexInput): ConfigObject {
  if (input.family === 'vae' || isControlNetFamily(input.family)) {
    fail(ErrorCode.E_CONFIG, undefined, `a standalone ${input.family === 'vae' ? 'VAE' : 'ControlNet'} is written as a single model folder, without model_index.json.`);
  }
  const pipelineClass = input.pipelineClass ?? defaultPipelineClass(input.family);
  if (isSdxlFamily(input.family)) return sdxlModelIndex(input.family, pipelineClass, input.scheduler);
  if (input.family === 'sd-x4-upscaler' && pipelineClass === 'StableDiffusionUpscalePipeline') return upscalerModelIndex(input.scheduler);
  if (isUnclipFamily(input.family) && pipelineClass === 'StableUnCLIPImg2ImgPipeline') return unclipModelIndex(input.scheduler);
  const core: ConfigObject = {
    _class_name: pipelineClass,
    _diffusers_version: DIFFUSERS_VERSION,
    scheduler: ['diffusers', schedulerClassName(input.scheduler)],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
  if (pipelineClass === 'StableDiffusionDepth2ImgPipeline') {
    return { ...core, depth_estimator: [null, null], feature_extractor: [null, null] };
  }
  return {
    ...core,
    feature_extractor: [null, null],
    image_encoder: [null, null],
    requires_safety_checker: true,
    safety_checker: [null, null],
  };
}

/** SDXL pipelines whose `__init__` registers `requires_aesthetics_score`. */
const AESTHETICS_PIPELINES = new Set(['StableDiffusionXLImg2ImgPipeline', 'StableDiffusionXLInpaintPipeline']);

/**
 * The SDXL branch of download_from_original_stable_diffusion_ckpt: both text encoders and
 * tokenizers (the refiner has neither `text_encoder` nor `tokenizer`: `[null, null]`),
 * `force_zeros_for_empty_prompt` (false for the refiner) and, for the Img2Img/Inpaint classes,
 * `requires_aesthetics_score` (true only for the refiner). No safety checker exists for SDXL.
 */
function sdxlModelIndex(family: FamilyId, pipelineClass: string, scheduler: SchedulerKind): ConfigObject {
  const refiner = family === 'sdxl-refiner';
  const out: ConfigObject = {
    _class_name: pipelineClass,
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    force_zeros_for_empty_prompt: !refiner,
    image_encoder: [null, null],
    scheduler: ['diffusers', schedulerClassName(scheduler)],
    text_encoder: refiner ? [null, null] : ['transformers', 'CLIPTextModel'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    tokenizer: refiner ? [null, null] : ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
  if (AESTHETICS_PIPELINES.has(pipelineClass)) out.requires_aesthetics_score = refiner;
  return out;
}

/**
 * StableDiffusionUpscalePipeline as the legacy converter builds it (no safety checker, feature
 * extractor or watermarker): its `__init__` registers `max_noise_level` (350, also the
 * x4-upscaling.yaml low_scale_config value) and the DDPM `low_res_scheduler`.
 */
function upscalerModelIndex(scheduler: SchedulerKind): ConfigObject {
  return {
    _class_name: 'StableDiffusionUpscalePipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    low_res_scheduler: ['diffusers', 'DDPMScheduler'],
    max_noise_level: X4_MAX_NOISE_LEVEL,
    safety_checker: [null, null],
    scheduler: ['diffusers', schedulerClassName(scheduler)],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    watermarker: [null, null],
  };
}

/** x4-upscaling.yaml low_scale_config.params.max_noise_level (= the pipeline's default). */
export const X4_MAX_NOISE_LEVEL = 350;

/** StableUnCLIPImg2ImgPipeline (convert_from_ckpt.py, stable_unclip="img2img"): nine components, no flags. */
function unclipModelIndex(scheduler: SchedulerKind): ConfigObject {
  return {
    _class_name: 'StableUnCLIPImg2ImgPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: ['transformers', 'CLIPImageProcessor'],
    image_encoder: ['transformers', 'CLIPVisionModelWithProjection'],
    image_normalizer: ['stable_diffusion', 'StableUnCLIPImageNormalizer'],
    image_noising_scheduler: ['diffusers', 'DDPMScheduler'],
    scheduler: ['diffusers', schedulerClassName(scheduler)],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
}
