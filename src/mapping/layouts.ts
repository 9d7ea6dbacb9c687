/**
 * The closed set of layout generators. A table's layout names one generator and gives one row
 * template per slot (`"source": "input_blocks.{i}.0.", "target": "down_blocks.{level}.resnets.{j}."`);
 * the generator walks the structure read from the checkpoint and yields, for each block, the slot
 * and the index values that fill the templates. All index arithmetic of the SD key maps lives
 * here, one small function per structure kind; everything else is data.
 */
import type { OpenClipStructure, Structure, StructureKind, UnetStructure, VaeStructure } from './structure.js';

/** One block the generator found: which row template applies and the values of its placeholders. */
export interface Slot {
  readonly slot: string;
  readonly vars: Readonly<Record<string, number>>;
}

/** Component options a generator understands (family data: `components[].options`). */
export interface LayoutOptions {
  /** openclip-layers: emit the last layer as slot `skipped-layer` (SD2 uses the penultimate layer). */
  readonly skipLastLayer?: boolean;
}

export const OPTION_NAMES: readonly (keyof LayoutOptions)[] = ['skipLastLayer'];

interface GeneratorDef {
  readonly structure: StructureKind;
  /** Slot name -> placeholders its row templates may use. */
  readonly slots: Readonly<Record<string, readonly string[]>>;
  generate(structure: Structure, options: LayoutOptions): Slot[];
}

export const GENERATORS = {
  /**
   * Diffusers convert_ldm_unet_checkpoint, down blocks: input_blocks.{i} with
   * i = level*(L+1) + j + 1 holds resnet j (and attention j); the level's downsampler is
   * input_blocks.{(level+1)*(L+1)}.0.op, for every level but the last.
   */
  'ldm-unet-down': {
    structure: 'ldm-unet',
    slots: { resnet: ['i', 'level', 'j'], attention: ['i', 'level', 'j'], downsampler: ['i', 'level'] },
    generate: (s) => unetDown(s as UnetStructure),
  },
  /**
   * Up blocks: output_blocks.{i} with i = level*(L+1) + j, j in 0..L. Up level u mirrors down
   * level levels-1-u for attention; its upsampler is `.1.conv` in the level's last block, or
   * `.2.conv` when that block also has an attention ({k}).
   */
  'ldm-unet-up': {
    structure: 'ldm-unet',
    slots: { resnet: ['i', 'level', 'j'], attention: ['i', 'level', 'j'], upsampler: ['i', 'level', 'k'] },
    generate: (s) => unetUp(s as UnetStructure),
  },
  /** convert_ldm_vae_checkpoint, encoder: down.{level}.block.{j}; downsample on every level but the last. */
  'ldm-vae-encoder-down': {
    structure: 'ldm-vae',
    slots: { resnet: ['level', 'j'], downsampler: ['level'] },
    generate: (s) => vaeEncoderDown(s as VaeStructure),
  },
  /** Decoder: up_blocks.{level} is up.{src} with src = levels-1-level (LDM numbers them bottom-up). */
  'ldm-vae-decoder-up-reversed': {
    structure: 'ldm-vae',
    slots: { resnet: ['level', 'src', 'j'], upsampler: ['level', 'src'] },
    generate: (s) => vaeDecoderUpReversed(s as VaeStructure),
  },
  /** convert_open_clip_checkpoint: resblocks.{n} -> encoder.layers.{n}. */
  'openclip-layers': {
    structure: 'openclip',
    slots: { layer: ['n'], 'skipped-layer': ['n'] },
    generate: (s, o) => openClipLayers(s as OpenClipStructure, o),
  },
} as const satisfies Record<string, GeneratorDef>;

export type GeneratorName = keyof typeof GENERATORS;

export function isGeneratorName(s: unknown): s is GeneratorName {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(GENERATORS, s);
}

function unetDown(s: UnetStructure): Slot[] {
  const out: Slot[] = [];
  const B = s.layersPerBlock + 1;
  for (let level = 0; level < s.levels; level++) {
    for (let j = 0; j < s.layersPerBlock; j++) {
      const i = level * B + j + 1;
      out.push({ slot: 'resnet', vars: { i, level, j } });
      if (s.attentionLevels[level]) out.push({ slot: 'attention', vars: { i, level, j } });
    }
    if (level < s.levels - 1) out.push({ slot: 'downsampler', vars: { i: (level + 1) * B, level } });
  }
  return out;
}

function unetUp(s: UnetStructure): Slot[] {
  const out: Slot[] = [];
  const B = s.layersPerBlock + 1;
  for (let level = 0; level < s.levels; level++) {
    const attention = s.attentionLevels[s.levels - 1 - level];
    for (let j = 0; j < B; j++) {
      const i = level * B + j;
      out.push({ slot: 'resnet', vars: { i, level, j } });
      if (attention) out.push({ slot: 'attention', vars: { i, level, j } });
    }
    if (level < s.levels - 1) out.push({ slot: 'upsampler', vars: { i: level * B + s.layersPerBlock, level, k: attention ? 2 : 1 } });
  }
  return out;
}

function vaeEncoderDown(s: VaeStructure): Slot[] {
  const out: Slot[] = [];
  for (let level = 0; level < s.levels; level++) {
    for (let j = 0; j < s.layersPerBlock; j++) out.push({ slot: 'resnet', vars: { level, j } });
    if (level < s.levels - 1) out.push({ slot: 'downsampler', vars: { level } });
  }
  return out;
}

function vaeDecoderUpReversed(s: VaeStructure): Slot[] {
  const out: Slot[] = [];
  for (let level = 0; level < s.decoderLevels; level++) {
    const src = s.decoderLevels - 1 - level;
    for (let j = 0; j < s.decoderLayersPerBlock; j++) out.push({ slot: 'resnet', vars: { level, src, j } });
    if (level < s.decoderLevels - 1) out.push({ slot: 'upsampler', vars: { level, src } });
  }
  return out;
}

function openClipLayers(s: OpenClipStructure, o: LayoutOptions): Slot[] {
  return Array.from({ length: s.layers }, (_, n) => ({
    slot: o.skipLastLayer === true && n === s.layers - 1 ? 'skipped-layer' : 'layer',
    vars: { n },
  }));
}

/** Fills `{name}` placeholders; the loader has checked that every placeholder is a slot variable. */
export function fillTemplate(template: string, vars: Readonly<Record<string, number>>): string {
  return template.replace(/\{([a-z]+)\}/g, (_, name: string) => String(vars[name]));
}

/** Placeholder names used in a template. */
export function placeholdersOf(template: string): string[] {
  return [...template.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]);
}
