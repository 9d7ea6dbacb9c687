/**
 * Compiled rows for the REAL SD1.5 / SD2 structures: known literal pairs (anchors.md "Key mapping
 * rules"), the committed dumps in mappings/generated/ kept equal to what compile produces, and
 * full-size plans of synthetic real-layout key lists.
 * Set UPDATE_MAPPING_DUMPS=1 to rewrite the dumps after changing mappings/.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  compileForStructures,
  dumpCompiledRows,
  formatRowDump,
  lookupRule,
  type CompiledFamily,
} from '../../src/mapping/compile.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { MAPPINGS_ROOT } from '../../src/mapping/load.js';
import { planConversion } from '../../src/mapping/plan.js';
import type { ComponentFolder } from '../../src/mapping/plan-types.js';
import { readStructure, relativeTensors, type OpenClipStructure, type UnetStructure, type VaeStructure } from '../../src/mapping/structure.js';
import { checkpointTensors, SD15_LAYOUT, SD2_LAYOUT, type CheckpointLayout } from '../../src/testing/ldm-layout.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { caseTensors, tensorInfo } from './case-data.js';

/** v1-inference.yaml: channel_mult [1,2,4,4], num_res_blocks 2, attention_resolutions [4,2,1]. */
const SD15_UNET: UnetStructure = {
  kind: 'ldm-unet',
  levels: 4,
  layersPerBlock: 2,
  attentionLevels: [true, true, true, false],
  inChannels: 4,
  outChannels: 4,
  blockOutChannels: [320, 640, 1280, 1280],
  contextDim: 768,
  linearProjection: false,
  transformerDepth: [1, 1, 1, 0],
};
const SD2_UNET: UnetStructure = { ...SD15_UNET, contextDim: 1024, linearProjection: true };
const SD_VAE: VaeStructure = {
  kind: 'ldm-vae',
  levels: 4,
  layersPerBlock: 2,
  decoderLevels: 4,
  decoderLayersPerBlock: 3,
  blockOutChannels: [128, 256, 512, 512],
  latentChannels: 4,
};
const SD2_OPENCLIP: OpenClipStructure = { kind: 'openclip', layers: 24, width: 1024 };

const DUMPS = [
  {
    file: 'generated/sd1-real.json',
    compile: () => compileForStructures('sd1', { unet: { 'ldm-unet': SD15_UNET }, vae: { 'ldm-vae': SD_VAE } }),
    note: 'Flat rows compiled from mappings/ for the real SD1.5 structure (4 levels, 2 layers per block, attention at levels 0-2). Generated; test/mapping/compile.test.ts keeps it current (UPDATE_MAPPING_DUMPS=1 rewrites it).',
  },
  {
    file: 'generated/sd2-real.json',
    compile: () =>
      compileForStructures('sd2', { unet: { 'ldm-unet': SD2_UNET }, vae: { 'ldm-vae': SD_VAE }, text_encoder: { openclip: SD2_OPENCLIP } }),
    note: 'Flat rows compiled from mappings/ for the real SD2 structure (UNet as SD1.5 with linear proj_in, 24 OpenCLIP layers of which the last is dropped). Generated; test/mapping/compile.test.ts keeps it current (UPDATE_MAPPING_DUMPS=1 rewrites it).',
  },
] as const;

/** Where one source key goes under the compiled rows: `component:target[@op]` each, or `drop:reason`. */
function route(compiled: CompiledFamily, key: string): string[] {
  const m = lookupRule(compiled.rules, key);
  if (!m) return ['unknown'];
  if (m.rule.kind === 'drop') return [`drop:${m.rule.reason}`];
  const { component } = m.rule;
  return m.rule.targets.map((t) => `${component}:${t.target}${m.remainder}${t.op.op === 'copy' ? '' : `@${t.op.op}`}`);
}

describe('real SD1.5 structure: literal pairs', () => {
  const sd1 = DUMPS[0].compile();
  const u = 'model.diffusion_model.';
  const v = 'first_stage_model.';

  test.each([
    [`${u}time_embed.0.weight`, 'unet:time_embedding.linear_1.weight'],
    [`${u}input_blocks.0.0.weight`, 'unet:conv_in.weight'],
    [`${u}input_blocks.1.0.in_layers.0.weight`, 'unet:down_blocks.0.resnets.0.norm1.weight'],
    [`${u}input_blocks.2.0.emb_layers.1.bias`, 'unet:down_blocks.0.resnets.1.time_emb_proj.bias'],
    [`${u}input_blocks.3.0.op.weight`, 'unet:down_blocks.0.downsamplers.0.conv.weight'],
    [`${u}input_blocks.4.1.proj_in.weight`, 'unet:down_blocks.1.attentions.0.proj_in.weight'],
    [`${u}input_blocks.4.0.skip_connection.weight`, 'unet:down_blocks.1.resnets.0.conv_shortcut.weight'],
    [`${u}input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight`, 'unet:down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight'],
    [`${u}input_blocks.9.0.op.bias`, 'unet:down_blocks.2.downsamplers.0.conv.bias'],
    [`${u}input_blocks.11.0.out_layers.3.weight`, 'unet:down_blocks.3.resnets.1.conv2.weight'],
    [`${u}middle_block.1.norm.weight`, 'unet:mid_block.attentions.0.norm.weight'],
    [`${u}middle_block.2.out_layers.0.bias`, 'unet:mid_block.resnets.1.norm2.bias'],
    [`${u}output_blocks.0.0.skip_connection.weight`, 'unet:up_blocks.0.resnets.0.conv_shortcut.weight'],
    [`${u}output_blocks.2.1.conv.weight`, 'unet:up_blocks.0.upsamplers.0.conv.weight'],
    [`${u}output_blocks.3.1.proj_out.bias`, 'unet:up_blocks.1.attentions.0.proj_out.bias'],
    [`${u}output_blocks.5.2.conv.weight`, 'unet:up_blocks.1.upsamplers.0.conv.weight'],
    [`${u}output_blocks.8.2.conv.bias`, 'unet:up_blocks.2.upsamplers.0.conv.bias'],
    [`${u}output_blocks.11.1.transformer_blocks.0.ff.net.2.weight`, 'unet:up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight'],
    [`${u}out.2.weight`, 'unet:conv_out.weight'],
    [`${v}encoder.down.0.block.1.conv2.weight`, 'vae:encoder.down_blocks.0.resnets.1.conv2.weight'],
    [`${v}encoder.down.1.block.0.nin_shortcut.weight`, 'vae:encoder.down_blocks.1.resnets.0.conv_shortcut.weight'],
    [`${v}encoder.down.2.downsample.conv.weight`, 'vae:encoder.down_blocks.2.downsamplers.0.conv.weight'],
    [`${v}decoder.up.3.block.0.conv1.weight`, 'vae:decoder.up_blocks.0.resnets.0.conv1.weight'],
    [`${v}decoder.up.3.upsample.conv.weight`, 'vae:decoder.up_blocks.0.upsamplers.0.conv.weight'],
    [`${v}decoder.up.0.block.2.norm1.bias`, 'vae:decoder.up_blocks.3.resnets.2.norm1.bias'],
    [`${v}decoder.mid.attn_1.q.weight`, 'vae:decoder.mid_block.attentions.0.to_q.weight@squeeze'],
    [`${v}decoder.mid.attn_1.proj_out.bias`, 'vae:decoder.mid_block.attentions.0.to_out.0.bias'],
    [`${v}encoder.norm_out.weight`, 'vae:encoder.conv_norm_out.weight'],
    ['cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight', 'text_encoder:text_model.encoder.layers.11.mlp.fc2.weight'],
    ['cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight', 'text_encoder:text_model.encoder.layers.0.mlp.fc1.weight'],
    ['cond_stage_model.transformer.text_model.embeddings.position_ids', 'drop:clip-position-ids'],
    ['model_ema.decay', 'drop:ema-bookkeeping'],
    ['model_ema.diffusion_modelinput_blocks00weight', 'drop:ema-copy'],
    ['alphas_cumprod', 'drop:ldm-schedule-buffer'],
  ])('%s -> %s', (key, expected) => {
    expect(route(sd1, key)).toEqual([expected]);
  });

  test.each([
    `${u}input_blocks.10.1.norm.weight`, // level 3 has no attention
    `${u}input_blocks.12.0.op.weight`, // the last level has no downsampler
    `${u}output_blocks.11.2.conv.weight`, // nor the last up level an upsampler
    `${u}input_blocks.1.0.in_layers.1.weight`, // not a ResBlock parameter
    `${v}decoder.up.0.upsample.conv.weight`,
    `${v}encoder.down.3.downsample.conv.weight`,
  ])('%s is not mapped', (key) => {
    expect(route(sd1, key)).toEqual(['unknown']);
  });
});

describe('real SD2 structure: literal pairs', () => {
  const sd2 = DUMPS[1].compile();
  const t = 'cond_stage_model.model.';
  test.each([
    [`${t}transformer.resblocks.22.mlp.c_fc.weight`, ['text_encoder:text_model.encoder.layers.22.mlp.fc1.weight']],
    [`${t}transformer.resblocks.0.ln_2.bias`, ['text_encoder:text_model.encoder.layers.0.layer_norm2.bias']],
    [`${t}transformer.resblocks.5.attn.out_proj.weight`, ['text_encoder:text_model.encoder.layers.5.self_attn.out_proj.weight']],
    [
      `${t}transformer.resblocks.3.attn.in_proj_weight`,
      [
        'text_encoder:text_model.encoder.layers.3.self_attn.q_proj.weight@split',
        'text_encoder:text_model.encoder.layers.3.self_attn.k_proj.weight@split',
        'text_encoder:text_model.encoder.layers.3.self_attn.v_proj.weight@split',
      ],
    ],
    [`${t}transformer.resblocks.23.mlp.c_fc.weight`, ['drop:sd2-penultimate-layer']],
    [`${t}text_projection`, ['drop:sd2-text-projection']],
    [`${t}logit_scale`, ['drop:openclip-logit-scale']],
    [`${t}positional_embedding`, ['text_encoder:text_model.embeddings.position_embedding.weight']],
    [`${t}ln_final.weight`, ['text_encoder:text_model.final_layer_norm.weight']],
    ['model.diffusion_model.output_blocks.5.2.conv.weight', ['unet:up_blocks.1.upsamplers.0.conv.weight']],
  ])('%s', (key, expected) => {
    expect(route(sd2, key)).toEqual(expected);
  });
});

describe('generated row dumps', () => {
  test.each(DUMPS)('mappings/$file equals what compile produces', ({ file, compile, note }) => {
    const text = formatRowDump(compile(), note);
    const url = new URL(file, MAPPINGS_ROOT);
    if (process.env.UPDATE_MAPPING_DUMPS === '1') writeFileSync(url, text);
    expect(readFileSync(url, 'utf8')).toBe(text);
  });

  test('dumps are valid JSON with one row per line, greppable by literal prefix', () => {
    const text = readFileSync(new URL(DUMPS[0].file, MAPPINGS_ROOT), 'utf8');
    const parsed = JSON.parse(text) as { family: string; rows: string[][] };
    expect(parsed.family).toBe('sd1');
    expect(parsed.rows).toEqual(dumpCompiledRows(DUMPS[0].compile()).map((r) => [...r]));
    expect(text).toContain('["model.diffusion_model.input_blocks.4.1.proj_in.", "unet", "down_blocks.1.attentions.0.proj_in."]');
    expect(text).toContain('["model.diffusion_model.output_blocks.5.2.conv.", "unet", "up_blocks.1.upsamplers.0.conv."]');
    expect(text).toContain('["first_stage_model.decoder.up.3.block.0.conv1.", "vae", "decoder.up_blocks.0.resnets.0.conv1."]');
  });
});

/** TensorInfo[] of a synthetic checkpoint with the real layout (names and shapes only). */
function layoutTensors(layout: CheckpointLayout): TensorInfo[] {
  return checkpointTensors(layout).map((t) => tensorInfo(t.name, t.dtype ?? 'F16', t.shape));
}

describe('full-size real layouts', () => {
  const counts = (tensors: readonly TensorInfo[]): Partial<Record<ComponentFolder, number>> => {
    const plan = planConversion(tensors, detectFamily(tensors));
    expect(plan.account.unknown).toEqual([]);
    return Object.fromEntries(plan.components.map((c) => [c.folder, c.tensors.length]));
  };

  test('SD1.5: structure read from the keys equals the v1-inference.yaml structure', () => {
    const tensors = layoutTensors(SD15_LAYOUT);
    expect(readStructure('ldm-unet', relativeTensors(tensors, 'model.diffusion_model.'))).toEqual(SD15_UNET);
    expect(readStructure('ldm-vae', relativeTensors(tensors, 'first_stage_model.'))).toEqual(SD_VAE);
  });

  test('SD2: structure read from the keys', () => {
    const tensors = layoutTensors(SD2_LAYOUT);
    expect(readStructure('ldm-unet', relativeTensors(tensors, 'model.diffusion_model.'))).toEqual(SD2_UNET);
    expect(readStructure('openclip', relativeTensors(tensors, 'cond_stage_model.model.'))).toEqual(SD2_OPENCLIP);
  });

  // Diffusers' state dicts: UNet2DConditionModel 686 tensors, AutoencoderKL 248, CLIPTextModel
  // ViT-L 196, SD2 CLIPTextModel with 23 layers 372.
  test('SD1.5 plan sizes match the Diffusers models', () => {
    expect(counts(layoutTensors(SD15_LAYOUT))).toEqual({ unet: 686, vae: 248, text_encoder: 196 });
  });

  test('SD2 plan sizes match the Diffusers models', () => {
    expect(counts(layoutTensors(SD2_LAYOUT))).toEqual({ unet: 686, vae: 248, text_encoder: 372 });
  });

  test('SD1.5 with EMA copies: extractEma finds every EMA key', () => {
    const tensors = layoutTensors({ ...SD15_LAYOUT, ema: true });
    const plan = planConversion(tensors, detectFamily(tensors), { extractEma: true });
    expect(plan.ema).toEqual({ present: true, count: 686, extracted: true });
  });
});

describe('fixture structures', () => {
  test.each([
    ['sd1', { levels: 2, layersPerBlock: 1, attentionLevels: [true, false], linearProjection: false }],
    ['sd1-pipe', { levels: 2, layersPerBlock: 1, attentionLevels: [true, true], linearProjection: false }],
    ['sd2', { levels: 2, layersPerBlock: 1, attentionLevels: [true, true], linearProjection: true }],
  ])('%s UNet', (name, expected) => {
    expect(readStructure('ldm-unet', relativeTensors(caseTensors(name), 'model.diffusion_model.'))).toMatchObject(expected);
  });

  test('sd1-pipe VAE has 4 levels', () => {
    expect(readStructure('ldm-vae', relativeTensors(caseTensors('sd1-pipe'), 'first_stage_model.'))).toMatchObject({ levels: 4, layersPerBlock: 1, decoderLayersPerBlock: 2 });
  });
});

describe('lookup', () => {
  const sd2 = DUMPS[1].compile();
  test('an exact row matches only the exact key', () => {
    expect(route(sd2, 'cond_stage_model.model.positional_embedding.extra')).toEqual(['unknown']);
  });
  test('the longest prefix wins', () => {
    // resblocks.23. (drop) is longer than cond_stage_model.model. rows and beats the layer rows
    expect(route(sd2, 'cond_stage_model.model.transformer.resblocks.23.attn.in_proj_bias')).toEqual(['drop:sd2-penultimate-layer']);
  });
});
