/**
 * What the checkpoint itself says about each component's architecture, read from tensor names
 * and shapes alone (no tensor bytes). The Diffusers configs are built from these facts; an
 * original YAML, when given, may only add what shapes cannot tell (heads, image size).
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';

/** Original-layout prefixes (anchors.md "Key mapping rules"). */
export const UNET_PREFIX = 'model.diffusion_model.';
export const VAE_PREFIX = 'first_stage_model.';
export const CLIP_L_PREFIX = 'cond_stage_model.transformer.';
export const OPENCLIP_PREFIX = 'cond_stage_model.model.';
/** SGM (SDXL) conditioner prefixes: CLIP-L and OpenCLIP bigG of the base, OpenCLIP bigG of the refiner. */
export const SGM_CLIP_L_PREFIX = 'conditioner.embedders.0.transformer.';
export const SGM_OPENCLIP_PREFIX = 'conditioner.embedders.1.model.';
export const SGM_REFINER_OPENCLIP_PREFIX = 'conditioner.embedders.0.model.';

export interface UnetShapes {
  readonly inChannels: number;
  readonly outChannels: number;
  /** Output width of each down level (ResBlock `out_layers.3`), i.e. model_channels * mult. */
  readonly blockOutChannels: readonly number[];
  /** ResBlocks per down level (num_res_blocks). */
  readonly layersPerBlock: number;
  /** Whether each down level has a spatial transformer after its ResBlocks. */
  readonly downAttention: readonly boolean[];
  /** Whether each up level (in output order) has a spatial transformer. */
  readonly upAttention: readonly boolean[];
  /** Transformer blocks per down level (0 where the level has no attention). */
  readonly transformerDepth: readonly number[];
  /** attn2.to_k input width: the text-embedding width; null when no cross attention exists. */
  readonly crossAttentionDim: number | null;
  /** proj_in is a Linear (rank 2) rather than a 1x1 conv (rank 4). */
  readonly useLinearProjection: boolean;
  /** `label_emb.0.0.weight` input width (SDXL add-embedding / projection class embedding). */
  readonly admInChannels?: number;
  /** `label_emb.weight` rows: an nn.Embedding class embedding (num_class_embeds; x4 upscaler). */
  readonly numClassEmbeds?: number;
  /**
   * Per down level: attn1 attends to the context (its to_k takes the context width, not the
   * block width), i.e. LDM `disable_self_attentions` / Diffusers `only_cross_attention`; false for
   * levels without attention.
   */
  readonly crossOnlyAttention?: readonly boolean[];
}

/** ControlNet facts: the UNet's down half plus the hint encoder. */
export interface ControlNetShapes extends UnetShapes {
  /** input_hint_block.0 input channels (hint_channels / conditioning_channels). */
  readonly conditioningChannels: number;
  /** Output widths of input_hint_block.0, .4, .8, .12 (conditioning_embedding_out_channels). */
  readonly conditioningEmbeddingOutChannels: readonly number[];
}

export interface VaeShapes {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly blockOutChannels: readonly number[];
  readonly layersPerBlock: number;
  readonly latentChannels: number;
}

export interface TextEncoderShapes {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  /** Transformer layers present in the checkpoint. */
  readonly layers: number;
  readonly vocabSize: number;
  readonly maxPositionEmbeddings: number;
  /** OpenCLIP `text_projection` output width ([width, projection]); undefined without one. */
  readonly projectionDim?: number;
}

/** Name -> tensor lookup with shape accessors that fail with the missing key named. */
class ShapeIndex {
  private readonly byName: Map<string, TensorInfo>;

  constructor(
    tensors: readonly TensorInfo[],
    private readonly what: string,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  shape(name: string): readonly number[] | undefined {
    return this.byName.get(name)?.shape;
  }

  /** Dimension `dim` of tensor `name` (negative counts from the end). */
  dim(name: string, dim: number): number {
    const shape = this.byName.get(name)?.shape;
    if (!shape) {
      fail(ErrorCode.E_MISSING_TENSOR, undefined, `${this.what}: tensor ${name} not found (needed to size the config).`, {
        data: { key: name },
      });
    }
    const d = dim < 0 ? shape.length + dim : dim;
    if (d < 0 || d >= shape.length) {
      fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${this.what}: tensor ${name} has shape [${shape.join(', ')}] (expected rank > ${d}).`, {
        data: { key: name, shape },
      });
    }
    return shape[d];
  }

  /** Distinct values of the numeric path segment right after `prefix`, ascending. */
  indicesAfter(prefix: string): number[] {
    const found = new Set<number>();
    for (const name of this.byName.keys()) {
      if (!name.startsWith(prefix)) continue;
      const m = /^(\d+)\./.exec(name.slice(prefix.length));
      if (m) found.add(Number(m[1]));
    }
    return [...found].sort((a, b) => a - b);
  }
}

/**
 * UNet facts from the original LDM key layout: `input_blocks.0.0` is conv_in; each down level is
 * num_res_blocks ResBlocks (`input_blocks.i.0`, with `input_blocks.i.1` the transformer when the
 * level has attention) followed by one downsampler (`input_blocks.i.0.op`) except after the last
 * level; `output_blocks` mirror it with num_res_blocks + 1 ResBlocks per level. Same layout that
 * Diffusers' convert_ldm_unet_checkpoint walks.
 */
export function unetShapes(tensors: readonly TensorInfo[], prefix = UNET_PREFIX, options: { readonly downOnly?: boolean } = {}): UnetShapes {
  const ix = new ShapeIndex(tensors, options.downOnly ? 'ControlNet' : 'UNet');
  const p = (rest: string) => prefix + rest;
  const levels = downLevels(ix, prefix);
  const layersPerBlock = levels[0].length;
  if (levels.some((l) => l.length !== layersPerBlock)) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `UNet: down levels hold ${levels.map((l) => l.length).join('/')} ResBlocks (expected the same count per level).`);
  }
  const projIn = tensors.find((t) => t.name.startsWith(prefix) && t.name.endsWith('.proj_in.weight'));
  const toK = tensors.find((t) => t.name.startsWith(prefix) && /\.attn2\.to_k\.weight$/.test(t.name));
  const blockOutChannels = levels.map((l) => ix.dim(p(`input_blocks.${l[l.length - 1]}.0.out_layers.3.weight`), 0));
  const numClassEmbeds = ix.shape(p('label_emb.weight'))?.[0];
  const crossOnly = levels.map((l, d) => {
    const attn1 = ix.shape(p(`input_blocks.${l[0]}.1.transformer_blocks.0.attn1.to_k.weight`));
    return attn1 !== undefined && attn1[attn1.length - 1] !== blockOutChannels[d];
  });
  return {
    inChannels: ix.dim(p('input_blocks.0.0.weight'), 1),
    outChannels: options.downOnly ? 0 : ix.dim(p('out.2.weight'), 0),
    blockOutChannels,
    layersPerBlock,
    downAttention: levels.map((l) => l.some((i) => ix.has(p(`input_blocks.${i}.1.proj_in.weight`)))),
    upAttention: options.downOnly ? [] : upAttention(ix, prefix, levels.length, layersPerBlock + 1),
    transformerDepth: levels.map((l) => Math.max(0, ...l.map((i) => ix.indicesAfter(p(`input_blocks.${i}.1.transformer_blocks.`)).length))),
    crossAttentionDim: toK ? toK.shape[toK.shape.length - 1] : null,
    useLinearProjection: projIn !== undefined && projIn.shape.length === 2,
    admInChannels: ix.shape(p('label_emb.0.0.weight'))?.[1],
    ...(numClassEmbeds !== undefined ? { numClassEmbeds } : {}),
    ...(crossOnly.some((c) => c) ? { crossOnlyAttention: crossOnly } : {}),
  };
}

/**
 * ControlNet facts (cldm ControlNet under `control_model.` or bare): the UNet down-half facts plus
 * the hint encoder's widths. Its convs at even indices 0..14 are conv_in, six blocks (every
 * second one strided: indices 4, 8, 12 end a width) and conv_out.
 */
export function controlNetShapes(tensors: readonly TensorInfo[], prefix: string): ControlNetShapes {
  const ix = new ShapeIndex(tensors, 'ControlNet');
  return {
    ...unetShapes(tensors, prefix, { downOnly: true }),
    conditioningChannels: ix.dim(`${prefix}input_hint_block.0.weight`, 1),
    conditioningEmbeddingOutChannels: [0, 4, 8, 12].map((i) => ix.dim(`${prefix}input_hint_block.${i}.weight`, 0)),
  };
}

/** CLIP vision tower facts (OpenCLIP / OpenAI layout, e.g. unCLIP's `embedder.model.visual.`). */
export interface VisionTowerShapes {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly layers: number;
  readonly patchSize: number;
  readonly numChannels: number;
  readonly imageSize: number;
  /** `proj` output width (projection_dim). */
  readonly projectionDim: number;
}

export function visionTowerShapes(tensors: readonly TensorInfo[], prefix: string): VisionTowerShapes {
  const ix = new ShapeIndex(tensors, 'image encoder');
  const patch = ix.dim(`${prefix}conv1.weight`, -1);
  const grid = Math.round(Math.sqrt(ix.dim(`${prefix}positional_embedding`, 0) - 1));
  return {
    hiddenSize: ix.dim(`${prefix}conv1.weight`, 0),
    numChannels: ix.dim(`${prefix}conv1.weight`, 1),
    patchSize: patch,
    imageSize: grid * patch,
    intermediateSize: ix.dim(`${prefix}transformer.resblocks.0.mlp.c_fc.weight`, 0),
    layers: ix.indicesAfter(`${prefix}transformer.resblocks.`).length,
    projectionDim: ix.dim(`${prefix}proj`, 1),
  };
}

/** Groups input_blocks indices >= 1 into levels, split at the downsamplers. */
function downLevels(ix: ShapeIndex, prefix: string): number[][] {
  const indices = ix.indicesAfter(prefix + 'input_blocks.').filter((i) => i > 0);
  const levels: number[][] = [[]];
  for (const i of indices) {
    if (ix.has(`${prefix}input_blocks.${i}.0.op.weight`)) levels.push([]);
    else levels[levels.length - 1].push(i);
  }
  if (levels.some((l) => l.length === 0)) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, 'UNet: input_blocks do not form levels of ResBlocks separated by downsamplers.', {
      data: { inputBlocks: indices },
    });
  }
  return levels;
}

function upAttention(ix: ShapeIndex, prefix: string, levels: number, perLevel: number): boolean[] {
  const out: boolean[] = [];
  for (let level = 0; level < levels; level++) {
    let attention = false;
    for (let j = 0; j < perLevel; j++) {
      attention ||= ix.has(`${prefix}output_blocks.${level * perLevel + j}.1.proj_in.weight`);
    }
    out.push(attention);
  }
  return out;
}

/** Finds where the VAE keys start: `first_stage_model.`, `vae.` or nothing (a standalone VAE). */
export function vaePrefix(tensors: readonly TensorInfo[]): string {
  for (const candidate of [VAE_PREFIX, 'vae.', '']) {
    if (tensors.some((t) => t.name === `${candidate}encoder.conv_in.weight`)) return candidate;
  }
  fail(ErrorCode.E_MISSING_TENSOR, undefined, 'VAE: no encoder.conv_in.weight under first_stage_model., vae. or the top level.');
}

/** VAE facts (original `encoder.down.i.block.j` layout, as convert_ldm_vae_checkpoint reads it). */
export function vaeShapes(tensors: readonly TensorInfo[], prefix = vaePrefix(tensors)): VaeShapes {
  const ix = new ShapeIndex(tensors, 'VAE');
  const levels = ix.indicesAfter(`${prefix}encoder.down.`);
  if (levels.length === 0) fail(ErrorCode.E_MISSING_TENSOR, undefined, `VAE: no ${prefix}encoder.down.* tensors.`);
  const blocks = ix.indicesAfter(`${prefix}encoder.down.0.block.`);
  return {
    inChannels: ix.dim(`${prefix}encoder.conv_in.weight`, 1),
    outChannels: ix.dim(`${prefix}decoder.conv_out.weight`, 0),
    blockOutChannels: levels.map((i) => {
      const last = ix.indicesAfter(`${prefix}encoder.down.${i}.block.`).pop() ?? 0;
      return ix.dim(`${prefix}encoder.down.${i}.block.${last}.conv2.weight`, 0);
    }),
    layersPerBlock: blocks.length,
    latentChannels: ix.dim(`${prefix}decoder.conv_in.weight`, 1),
  };
}

/**
 * CLIP-L text encoder facts (HF naming under `cond_stage_model.transformer.`; some old files lack
 * the `text_model.` level, which is accepted here too).
 */
export function clipTextShapes(tensors: readonly TensorInfo[], prefix = CLIP_L_PREFIX): TextEncoderShapes {
  const ix = new ShapeIndex(tensors, 'text encoder');
  const base = ix.has(`${prefix}text_model.embeddings.token_embedding.weight`) ? `${prefix}text_model.` : prefix;
  return {
    hiddenSize: ix.dim(`${base}embeddings.token_embedding.weight`, 1),
    vocabSize: ix.dim(`${base}embeddings.token_embedding.weight`, 0),
    maxPositionEmbeddings: ix.dim(`${base}embeddings.position_embedding.weight`, 0),
    intermediateSize: ix.dim(`${base}encoder.layers.0.mlp.fc1.weight`, 0),
    layers: ix.indicesAfter(`${base}encoder.layers.`).length,
  };
}

/** OpenCLIP text tower facts (`cond_stage_model.model.` for SD 2, `conditioner.embedders.N.model.` for SDXL). */
export function openClipTextShapes(tensors: readonly TensorInfo[], prefix = OPENCLIP_PREFIX): TextEncoderShapes {
  const ix = new ShapeIndex(tensors, 'text encoder');
  return {
    hiddenSize: ix.dim(`${prefix}token_embedding.weight`, 1),
    vocabSize: ix.dim(`${prefix}token_embedding.weight`, 0),
    maxPositionEmbeddings: ix.dim(`${prefix}positional_embedding`, 0),
    intermediateSize: ix.dim(`${prefix}transformer.resblocks.0.mlp.c_fc.weight`, 0),
    layers: ix.indicesAfter(`${prefix}transformer.resblocks.`).length,
  };
}

/**
 * OpenCLIP text tower with its projection (SDXL text_encoder_2): the tower's facts plus the
 * `text_projection` output width ([width, projection] in OpenCLIP, transposed for transformers).
 */
export function openClipProjectedTextShapes(tensors: readonly TensorInfo[], prefix: string): TextEncoderShapes {
  const ix = new ShapeIndex(tensors, 'text encoder 2');
  return { ...openClipTextShapes(tensors, prefix), projectionDim: ix.dim(`${prefix}text_projection`, 1) };
}
