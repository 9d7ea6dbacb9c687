/**
 * Reads a component's block structure from its key names and shapes: how many UNet levels, how
 * many layers per block, which levels carry attention, how many text layers. The layout
 * generators (layouts.ts) turn this into literal prefix rows, so the same table serves the real
 * SD1.5 UNet (4 levels, 2 layers) and a tiny test model (2 levels, 1 layer).
 *
 * The counting mirrors what Diffusers' converters do at run time (convert_ldm_unet_checkpoint
 * counts `input_blocks.N` / `output_blocks.N`; convert_ldm_vae_checkpoint counts `down.N` /
 * `up.N`; convert_open_clip_checkpoint counts `resblocks.N`), but with every count checked.
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';

export type StructureKind = 'ldm-unet' | 'ldm-vae' | 'openclip';

export interface UnetStructure {
  readonly kind: 'ldm-unet';
  /** Resolution levels (len(channel_mult)). */
  readonly levels: number;
  /** Res blocks per down level (num_res_blocks / layers_per_block); up levels have one more. */
  readonly layersPerBlock: number;
  /** Per down level: whether its blocks carry a spatial transformer. Up level u mirrors down level levels-1-u. */
  readonly attentionLevels: readonly boolean[];
  /** conv_in input channels (4 text-to-image, 9 inpainting, 8 pix2pix, 5 depth). */
  readonly inChannels?: number;
  readonly outChannels?: number;
  /** Output channels of each down level's res blocks (block_out_channels). */
  readonly blockOutChannels: readonly number[];
  /** attn2.to_k input width (cross_attention_dim). */
  readonly contextDim?: number;
  /** proj_in stored as linear (2-D) rather than 1x1 conv (use_linear_projection). */
  readonly linearProjection?: boolean;
  /** Transformer blocks per attention of each down level (0 without attention). */
  readonly transformerDepth: readonly number[];
}

export interface VaeStructure {
  readonly kind: 'ldm-vae';
  readonly levels: number;
  /** Res blocks per encoder level (layers_per_block). */
  readonly layersPerBlock: number;
  readonly decoderLevels: number;
  /** Res blocks per decoder level (layers_per_block + 1 in AutoencoderKL). */
  readonly decoderLayersPerBlock: number;
  readonly blockOutChannels: readonly number[];
  /** post_quant_conv channels. */
  readonly latentChannels?: number;
}

export interface OpenClipStructure {
  readonly kind: 'openclip';
  /** Transformer layers stored in the file (resblocks). */
  readonly layers: number;
  /** token_embedding width. */
  readonly width?: number;
}

export type Structure = UnetStructure | VaeStructure | OpenClipStructure;

/** The structures a component's table needs, by kind. */
export interface ComponentStructures {
  readonly 'ldm-unet'?: UnetStructure;
  readonly 'ldm-vae'?: VaeStructure;
  readonly openclip?: OpenClipStructure;
}

/** Tensors of one component, keyed by the name relative to the component prefix. */
export type RelativeTensors = ReadonlyMap<string, TensorInfo>;

/** Strips `prefix` from every tensor that has it. */
export function relativeTensors(tensors: readonly TensorInfo[], prefix: string): Map<string, TensorInfo> {
  const out = new Map<string, TensorInfo>();
  for (const t of tensors) if (t.name.startsWith(prefix)) out.set(t.name.slice(prefix.length), t);
  return out;
}

/** Reads one structure kind from a component's tensors; undefined when the component has none of its keys. */
export function readStructure(kind: StructureKind, rel: RelativeTensors, component = ''): Structure | undefined {
  switch (kind) {
    case 'ldm-unet':
      return readUnetStructure(rel, component);
    case 'ldm-vae':
      return readVaeStructure(rel, component);
    case 'openclip':
      return readOpenClipStructure(rel);
  }
}

/** The sorted distinct values of capture group 1 of `re` over the names (non-negative integers). */
function indicesOf(rel: RelativeTensors, re: RegExp): number[] {
  const found = new Set<number>();
  for (const name of rel.keys()) {
    const m = re.exec(name);
    if (m) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

/** Count of a 0-based index range; fails when the indices have holes (a block went missing). */
function contiguousCount(indices: readonly number[], what: string, component: string): number {
  indices.forEach((v, i) => {
    if (v !== i) structureFail(component, `${what} indices [${indices.join(', ')}] have a gap at ${i} (expected 0..${indices.length - 1})`);
  });
  return indices.length;
}

function structureFail(component: string, message: string): never {
  return fail(ErrorCode.E_MODEL_STRUCTURE, undefined, `${component ? `${component}: ` : ''}${message}.`, {
    hint: 'The file looks truncated or is a model layout this family does not describe.',
  });
}

function dimOf(rel: RelativeTensors, key: string, dim: number): number | undefined {
  const shape = rel.get(key)?.shape;
  if (!shape || shape.length === 0) return undefined;
  return shape[dim < 0 ? shape.length + dim : dim];
}

/**
 * LDM UNet: input_blocks 0..N-1 and output_blocks 0..N-1 with N = levels*(L+1); one downsampler
 * (`input_blocks.i.0.op`) per level but the last, so levels = downsamplers + 1.
 */
function readUnetStructure(rel: RelativeTensors, component: string): UnetStructure | undefined {
  const inputs = indicesOf(rel, /^input_blocks\.(\d+)\./);
  const outputs = indicesOf(rel, /^output_blocks\.(\d+)\./);
  if (inputs.length === 0 && outputs.length === 0) return undefined;
  const nIn = contiguousCount(inputs, 'input_blocks', component);
  const nOut = contiguousCount(outputs, 'output_blocks', component);
  const levels = indicesOf(rel, /^input_blocks\.(\d+)\.0\.op\./).length + 1;
  // A ControlNet is the down half alone (no output_blocks): its input blocks give the structure.
  const downOnly = nOut === 0;
  const perLevel = (downOnly ? nIn : nOut) / levels;
  if (!Number.isInteger(perLevel) || perLevel < 2 || (!downOnly && nIn !== nOut)) {
    structureFail(component, `${nIn} input_blocks, ${nOut} output_blocks and ${levels - 1} downsamplers do not form an LDM UNet (expected levels*(L+1) of each)`);
  }
  const L = perLevel - 1;
  const firstOfLevel = (d: number): number => d * perLevel + 1;
  const attentionLevels = range(levels).map((d) => hasPrefix(rel, `input_blocks.${firstOfLevel(d)}.1.`));
  if (!downOnly) checkUpAttention(rel, levels, perLevel, attentionLevels, component);
  return {
    kind: 'ldm-unet',
    levels,
    layersPerBlock: L,
    attentionLevels,
    inChannels: dimOf(rel, 'input_blocks.0.0.weight', 1),
    outChannels: dimOf(rel, 'out.2.weight', 0),
    blockOutChannels: range(levels).map((d) => dimOf(rel, `input_blocks.${firstOfLevel(d)}.0.out_layers.3.weight`, 0) ?? 0),
    contextDim: firstDim(rel, /\.attn2\.to_k\.weight$/, -1),
    linearProjection: firstRank(rel, /\.proj_in\.weight$/, (r) => r === 2),
    transformerDepth: range(levels).map((d) => indicesOf(rel, new RegExp(`^input_blocks\\.${firstOfLevel(d)}\\.1\\.transformer_blocks\\.(\\d+)\\.`)).length),
  };
}

/**
 * Up level u mirrors down level levels-1-u (Diffusers derives both from one attention_resolutions
 * list); a file where they disagree would otherwise map its upsamplers to the wrong slot.
 */
function checkUpAttention(rel: RelativeTensors, levels: number, perLevel: number, down: readonly boolean[], component: string): void {
  for (let u = 0; u < levels; u++) {
    const up = hasPrefix(rel, `output_blocks.${u * perLevel}.1.transformer_blocks.`);
    if (up !== down[levels - 1 - u]) {
      structureFail(component, `output_blocks.${u * perLevel} ${up ? 'has' : 'lacks'} attention but down level ${levels - 1 - u} ${up ? 'lacks' : 'has'} it (expected up blocks to mirror down blocks)`);
    }
  }
}

/** LDM VAE: encoder.down.{d}.block.{j}, decoder.up.{u}.block.{j}. */
function readVaeStructure(rel: RelativeTensors, component: string): VaeStructure | undefined {
  const down = indicesOf(rel, /^encoder\.down\.(\d+)\./);
  const up = indicesOf(rel, /^decoder\.up\.(\d+)\./);
  if (down.length === 0 && up.length === 0) return undefined;
  const levels = contiguousCount(down, 'encoder.down', component);
  const decoderLevels = contiguousCount(up, 'decoder.up', component);
  const encBlocks = contiguousCount(indicesOf(rel, /^encoder\.down\.0\.block\.(\d+)\./), 'encoder.down.0.block', component);
  const decBlocks = contiguousCount(indicesOf(rel, /^decoder\.up\.0\.block\.(\d+)\./), 'decoder.up.0.block', component);
  return {
    kind: 'ldm-vae',
    levels,
    layersPerBlock: encBlocks,
    decoderLevels,
    decoderLayersPerBlock: decBlocks,
    blockOutChannels: range(levels).map((d) => dimOf(rel, `encoder.down.${d}.block.0.conv2.weight`, 0) ?? 0),
    latentChannels: dimOf(rel, 'post_quant_conv.weight', 0),
  };
}

/** OpenCLIP text tower: transformer.resblocks.{n}. */
function readOpenClipStructure(rel: RelativeTensors): OpenClipStructure | undefined {
  const layers = indicesOf(rel, /^transformer\.resblocks\.(\d+)\./);
  if (layers.length === 0) return undefined;
  return { kind: 'openclip', layers: contiguousCount(layers, 'transformer.resblocks', 'text encoder'), width: dimOf(rel, 'token_embedding.weight', 1) };
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function hasPrefix(rel: RelativeTensors, prefix: string): boolean {
  for (const name of rel.keys()) if (name.startsWith(prefix)) return true;
  return false;
}

function firstMatching(rel: RelativeTensors, re: RegExp): TensorInfo | undefined {
  for (const [name, t] of rel) if (re.test(name)) return t;
  return undefined;
}

function firstDim(rel: RelativeTensors, re: RegExp, dim: number): number | undefined {
  const shape = firstMatching(rel, re)?.shape;
  if (!shape || shape.length === 0) return undefined;
  return shape[dim < 0 ? shape.length + dim : dim];
}

function firstRank(rel: RelativeTensors, re: RegExp, test: (rank: number) => boolean): boolean | undefined {
  const t = firstMatching(rel, re);
  return t ? test(t.shape.length) : undefined;
}
