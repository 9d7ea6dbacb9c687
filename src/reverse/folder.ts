/**
 * Reading a Diffusers folder for the reverse direction: which family it is (from model_index.json
 * and the component configs), the weight files each component loads (the set `from_pretrained`
 * picks: safetensors before .bin, sharded or not, optionally a variant), and the block structure
 * the forward tables need, read back from the Diffusers key names.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { openCheckpoint } from '../formats/open.js';
import type { TensorInfo, TensorSource } from '../formats/tensor-source.js';
import { parsePythonJson } from '../formats/python-json.js';
import { defaultSet, findWeightSets, type Entry } from '../inspect/weights.js';
import { GENERATORS } from '../mapping/layouts.js';
import type { ComponentFolder, FamilyId } from '../mapping/plan-types.js';
import type { TableSpec } from '../mapping/spec.js';
import type { ComponentStructures, OpenClipStructure, UnetStructure, VaeStructure } from '../mapping/structure.js';

/** Families the reverse direction writes. */
export const REVERSE_FAMILIES = [
  'sd1',
  'sd1-inpaint',
  'sd1-pix2pix',
  'sd2',
  'sd2-inpaint',
  'sd2-depth',
  'sdxl-base',
  'sdxl-refiner',
  'sdxl-inpaint',
  'vae',
  'controlnet-sd15',
  'controlnet-sdxl',
  'sd-x4-upscaler',
  'sd21-unclip-h',
  'sd21-unclip-l',
] as const satisfies readonly FamilyId[];
export type ReverseFamily = (typeof REVERSE_FAMILIES)[number];

export type JsonObject = Record<string, unknown>;

/** One component folder and the tensors its weight files hold. */
export interface FolderComponent {
  readonly folder: ComponentFolder;
  /** Absolute path of the component folder ('' component = the folder itself). */
  readonly dir: string;
  readonly config: JsonObject;
  readonly files: readonly string[];
  readonly tensors: readonly TensorInfo[];
}

export interface FolderFamily {
  readonly family: ReverseFamily;
  /** How it was decided (flag, model_index.json, configs). */
  readonly evidence: readonly string[];
}

export async function readJsonFile(path: string): Promise<JsonObject | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const obj = parsePythonJson(text, path);
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail(ErrorCode.E_CONFIG, path, 'is not a JSON object.');
  return obj as JsonObject;
}

/** Whether `dir` is a folder; E_IO otherwise. */
export async function checkFolder(dir: string): Promise<void> {
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => fail(ErrorCode.E_IO, dir, `cannot read (${e.code ?? e.message}).`));
  if (!st.isDirectory()) fail(ErrorCode.E_USAGE, dir, 'is not a folder (expected a Diffusers folder with model_index.json, or a VAE folder with config.json).');
}

/**
 * The family of a Diffusers folder. A pipeline: the x4 upscaler by its `low_res_scheduler` (or
 * pipeline class), SD 2.1 unCLIP by its `image_encoder` + `image_normalizer` (H or L by the image
 * encoder: OpenCLIP ViT-H uses `gelu`, OpenAI ViT-L `quick_gelu`), SDXL by its two text encoders
 * (refiner: only text_encoder_2), SD 2.x by the OpenCLIP text encoder (`hidden_act: gelu`; SD 1.x
 * CLIP-L uses `quick_gelu`; else the UNet's `use_linear_projection`), variants by the UNet's
 * `in_channels` (9 inpainting, 8 instruct-pix2pix, 5 depth). A folder with only config.json is a
 * standalone model: AutoencoderKL (a VAE) or ControlNetModel (SDXL when its config has the
 * `text_time` add embedding).
 */
export async function detectFolderFamily(dir: string): Promise<FolderFamily> {
  const index = await readJsonFile(join(dir, 'model_index.json'));
  if (!index) {
    const config = await readJsonFile(join(dir, 'config.json'));
    if (config?._class_name === 'AutoencoderKL') return { family: 'vae', evidence: ['config.json: _class_name AutoencoderKL (a standalone VAE)'] };
    if (config?._class_name === 'ControlNetModel') {
      const xl = config.addition_embed_type === 'text_time';
      return {
        family: xl ? 'controlnet-sdxl' : 'controlnet-sd15',
        evidence: ['config.json: _class_name ControlNetModel', `addition_embed_type ${String(config.addition_embed_type ?? null)} (${xl ? 'SDXL vector conditioning' : 'no vector conditioning: SD 1.x/2.x'})`],
      };
    }
    return fail(ErrorCode.E_UNKNOWN_FAMILY, dir, 'has neither model_index.json nor an AutoencoderKL / ControlNetModel config.json (expected a Diffusers pipeline, VAE or ControlNet folder).');
  }
  const has = (name: string): boolean => Array.isArray(index[name]) && (index[name] as unknown[])[1] !== null;
  const unet = (await readJsonFile(join(dir, 'unet', 'config.json'))) ?? {};
  const inChannels = typeof unet.in_channels === 'number' ? unet.in_channels : 4;
  const evidence = [`model_index.json: _class_name ${String(index._class_name)}`];
  if (has('low_res_scheduler') || index._class_name === 'StableDiffusionUpscalePipeline') {
    return { family: 'sd-x4-upscaler', evidence: [...evidence, 'low_res_scheduler (x4 upscaler)', `unet in_channels ${inChannels}`] };
  }
  if (has('image_encoder') && has('image_normalizer')) return unclipFamily(dir, evidence);
  if (has('text_encoder_2')) {
    if (!has('text_encoder')) return { family: 'sdxl-refiner', evidence: [...evidence, 'text_encoder_2 only (SDXL refiner)'] };
    evidence.push('text_encoder and text_encoder_2 (SDXL)');
    if (inChannels === 9) return { family: 'sdxl-inpaint', evidence: [...evidence, 'unet in_channels 9 (inpainting)'] };
    return { family: 'sdxl-base', evidence };
  }
  if (!has('text_encoder')) fail(ErrorCode.E_UNKNOWN_FAMILY, dir, 'model_index.json lists no text encoder (expected an SD 1.x, SD 2.x or SDXL pipeline).');
  const te = (await readJsonFile(join(dir, 'text_encoder', 'config.json'))) ?? {};
  let sd2: boolean;
  if (te.hidden_act === 'gelu' || te.hidden_act === 'quick_gelu') {
    sd2 = te.hidden_act === 'gelu';
    evidence.push(`text_encoder hidden_act ${te.hidden_act} (${sd2 ? 'OpenCLIP, SD 2.x' : 'CLIP ViT-L, SD 1.x'})`);
  } else {
    sd2 = unet.use_linear_projection === true;
    evidence.push(`unet use_linear_projection ${String(unet.use_linear_projection)} (${sd2 ? 'SD 2.x' : 'SD 1.x'})`);
  }
  const variants: Record<number, ReverseFamily | undefined> = sd2 ? { 9: 'sd2-inpaint', 5: 'sd2-depth' } : { 9: 'sd1-inpaint', 8: 'sd1-pix2pix' };
  const variant = variants[inChannels];
  if (variant) return { family: variant, evidence: [...evidence, `unet in_channels ${inChannels}`] };
  return { family: sd2 ? 'sd2' : 'sd1', evidence };
}

/** unCLIP H (OpenCLIP ViT-H/14 image encoder, gelu) or L (OpenAI ViT-L/14, quick_gelu). */
async function unclipFamily(dir: string, evidence: readonly string[]): Promise<FolderFamily> {
  const enc = (await readJsonFile(join(dir, 'image_encoder', 'config.json'))) ?? {};
  const found = [...evidence, 'image_encoder and image_normalizer (SD 2.1 unCLIP)'];
  if (enc.hidden_act === 'gelu') return { family: 'sd21-unclip-h', evidence: [...found, 'image_encoder hidden_act gelu (OpenCLIP ViT-H/14)'] };
  if (enc.hidden_act === 'quick_gelu') return { family: 'sd21-unclip-l', evidence: [...found, 'image_encoder hidden_act quick_gelu (OpenAI CLIP ViT-L/14)'] };
  return fail(ErrorCode.E_UNKNOWN_FAMILY, join(dir, 'image_encoder', 'config.json'), `has hidden_act ${String(enc.hidden_act)} (expected gelu for unCLIP-H or quick_gelu for unCLIP-L).`, {
    hint: 'Pass --family sd21-unclip-h or --family sd21-unclip-l.',
  });
}

async function entriesOf(dir: string): Promise<Entry[]> {
  const names = await readdir(dir, { withFileTypes: true });
  const out: Entry[] = [];
  for (const d of names) {
    const st = await stat(join(dir, d.name)).catch(() => undefined);
    out.push({ name: d.name, type: !st ? 'broken' : st.isDirectory() ? 'dir' : 'file', size: st?.size ?? 0 });
  }
  return out;
}

/** The weight files a loader picks in `dir` (`variant` names a variant set, e.g. fp16). */
export async function componentWeightFiles(dir: string, library: 'diffusers' | 'transformers', variant?: string): Promise<string[]> {
  const base = library === 'transformers' ? 'model' : 'diffusion_pytorch_model';
  const binBase = library === 'transformers' ? 'pytorch_model' : 'diffusion_pytorch_model';
  const sets = findWeightSets(await entriesOf(dir), base, binBase);
  const set = variant
    ? (sets.find((s) => s.variant === variant && s.format === 'safetensors') ?? sets.find((s) => s.variant === variant))
    : defaultSet(sets);
  if (!set || set.files.length === 0) {
    const found = sets.map((s) => `${s.format}${s.variant ? ` (${s.variant})` : ''}`).join(', ') || 'none';
    fail(ErrorCode.E_MISSING_TENSOR, dir, `has no ${variant ? `${variant} variant ` : ''}weights a loader would read (weight sets found: ${found}).`, {
      hint: variant ? 'Check --variant.' : 'A variant-only folder needs --variant.',
    });
  }
  return set.files.map((f) => join(dir, f));
}

/** Open weight files of a folder; closes them all at once. */
export class FolderSources {
  private readonly byComponent = new Map<ComponentFolder, Map<string, TensorSource>>();
  private readonly sources: TensorSource[] = [];

  /** Opens `files` as one component's state dict; fails on a tensor held twice. */
  async add(component: ComponentFolder, files: readonly string[], allowUnsafePickle = false): Promise<TensorInfo[]> {
    const map = this.byComponent.get(component) ?? new Map<string, TensorSource>();
    this.byComponent.set(component, map);
    const tensors: TensorInfo[] = [];
    for (const file of files) {
      const source = await openCheckpoint(file, { allowUnsafePickle });
      this.sources.push(source);
      for (const t of source.tensors) {
        if (map.has(t.name)) fail(ErrorCode.E_DUPLICATE_TENSOR, file, `tensor "${t.name}" is also in ${map.get(t.name)?.path} (expected each tensor in one shard).`);
        map.set(t.name, source);
        tensors.push(t);
      }
    }
    return tensors;
  }

  /** The open source holding a component's tensor. */
  source(component: ComponentFolder, key: string): TensorSource {
    const s = this.byComponent.get(component)?.get(key);
    if (!s) return fail(ErrorCode.E_MISSING_TENSOR, undefined, `${component}/${key} is not in the folder's weight files.`);
    return s;
  }

  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close().catch(() => undefined)));
  }
}

// --- structures read back from Diffusers names -------------------------------------------------

function indices(tensors: readonly TensorInfo[], re: RegExp): number[] {
  const found = new Set<number>();
  for (const t of tensors) {
    const m = re.exec(t.name);
    if (m) found.add(Number(m[1]));
  }
  const sorted = [...found].sort((a, b) => a - b);
  sorted.forEach((v, i) => {
    if (v !== i) fail(ErrorCode.E_MODEL_STRUCTURE, undefined, `${re.source}: indices [${sorted.join(', ')}] have a gap at ${i}.`);
  });
  return sorted;
}

function dim(tensors: readonly TensorInfo[], name: string, d: number): number {
  return tensors.find((t) => t.name === name)?.shape[d] ?? 0;
}

/** UNet2DConditionModel: down_blocks.{level}.resnets.{j}, attentions where the level has them. */
export function unetStructureOf(tensors: readonly TensorInfo[]): UnetStructure | undefined {
  const levels = indices(tensors, /^down_blocks\.(\d+)\./).length;
  if (levels === 0) return undefined;
  const layersPerBlock = indices(tensors, /^down_blocks\.0\.resnets\.(\d+)\./).length;
  const range = Array.from({ length: levels }, (_, d) => d);
  const attentionLevels = range.map((d) => tensors.some((t) => t.name.startsWith(`down_blocks.${d}.attentions.`)));
  return {
    kind: 'ldm-unet',
    levels,
    layersPerBlock,
    attentionLevels,
    inChannels: dim(tensors, 'conv_in.weight', 1),
    outChannels: dim(tensors, 'conv_out.weight', 0),
    blockOutChannels: range.map((d) => dim(tensors, `down_blocks.${d}.resnets.0.conv2.weight`, 0)),
    transformerDepth: range.map((d) => indices(tensors, new RegExp(`^down_blocks\\.${d}\\.attentions\\.0\\.transformer_blocks\\.(\\d+)\\.`)).length),
  };
}

/** AutoencoderKL: encoder.down_blocks.{level}.resnets.{j}, decoder.up_blocks.{level}.resnets.{j}. */
export function vaeStructureOf(tensors: readonly TensorInfo[]): VaeStructure | undefined {
  const levels = indices(tensors, /^encoder\.down_blocks\.(\d+)\./).length;
  const decoderLevels = indices(tensors, /^decoder\.up_blocks\.(\d+)\./).length;
  if (levels === 0 && decoderLevels === 0) return undefined;
  return {
    kind: 'ldm-vae',
    levels,
    layersPerBlock: indices(tensors, /^encoder\.down_blocks\.0\.resnets\.(\d+)\./).length,
    decoderLevels,
    decoderLayersPerBlock: indices(tensors, /^decoder\.up_blocks\.0\.resnets\.(\d+)\./).length,
    blockOutChannels: Array.from({ length: levels }, (_, d) => dim(tensors, `encoder.down_blocks.${d}.resnets.0.conv2.weight`, 0)),
    latentChannels: dim(tensors, 'post_quant_conv.weight', 0),
  };
}

/**
 * CLIPTextModel(WithProjection) converted from OpenCLIP: text_model.encoder.layers.{n}; a
 * CLIPVisionModelWithProjection (unCLIP image encoder): vision_model.encoder.layers.{n}. With
 * `skipLastLayer` (SD 2.x) the original held one layer more, which Diffusers dropped.
 */
export function openClipStructureOf(tensors: readonly TensorInfo[], skipLastLayer: boolean): OpenClipStructure | undefined {
  for (const tower of ['text_model', 'vision_model']) {
    const layers = indices(tensors, new RegExp(`^${tower}\\.encoder\\.layers\\.(\\d+)\\.`)).length;
    if (layers === 0) continue;
    const width = tower === 'text_model' ? dim(tensors, 'text_model.embeddings.token_embedding.weight', 1) : dim(tensors, 'vision_model.embeddings.class_embedding', 0);
    return { kind: 'openclip', layers: layers + (skipLastLayer ? 1 : 0), width };
  }
  return undefined;
}

/**
 * The structures a component's table needs (the kinds its layout generators walk, as the forward
 * compiler reads them), read back from the component's Diffusers tensors.
 */
export function componentStructures(table: TableSpec, tensors: readonly TensorInfo[], skipLastLayer: boolean): ComponentStructures {
  const out: { -readonly [K in keyof ComponentStructures]: ComponentStructures[K] } = {};
  for (const kind of new Set(table.layouts.map((l) => GENERATORS[l.generator].structure))) {
    if (kind === 'ldm-unet') out['ldm-unet'] = unetStructureOf(tensors);
    else if (kind === 'ldm-vae') out['ldm-vae'] = vaeStructureOf(tensors);
    else out.openclip = openClipStructureOf(tensors, skipLastLayer);
  }
  return out;
}
