/**
 * The catalogue of ways planning and the mapping data can fail, each with its error code.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, test } from 'vitest';
import { isCkptError, type CkptError } from '../../src/errors.js';
import { compileForTensors } from '../../src/mapping/compile.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { loadMappings, MAPPINGS_ROOT, parseFamily, parseTable, readMappings, resolveFamilies } from '../../src/mapping/load.js';
import { planConversion, type PlanOptions } from '../../src/mapping/plan.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { caseTensors, tensorInfo } from './case-data.js';

function caught(fn: () => unknown): CkptError {
  try {
    fn();
  } catch (e) {
    if (isCkptError(e)) return e;
    throw e;
  }
  throw new Error('expected a CkptError');
}

const U = 'model.diffusion_model.';

interface PlanFailure {
  readonly name: string;
  readonly input: string;
  readonly edit: (t: TensorInfo[]) => TensorInfo[];
  readonly opts?: PlanOptions;
  readonly code: string;
  /** Text the message must contain. */
  readonly mentions: string;
}

const replaceShape = (name: string, shape: number[]) => (ts: TensorInfo[]) => ts.map((t) => (t.name === name ? tensorInfo(name, t.dtype, shape) : t));

const PLAN_FAILURES: readonly PlanFailure[] = [
  {
    name: 'unknown key inside a ResBlock',
    input: 'sd1',
    edit: (ts) => [...ts, tensorInfo(`${U}input_blocks.1.0.in_layers.1.weight`, 'F32', [32])],
    code: 'E_UNMATCHED_KEYS',
    mentions: `${U}input_blocks.1.0.in_layers.1.weight`,
  },
  {
    name: 'unknown top-level key',
    input: 'sd2',
    edit: (ts) => [...ts, tensorInfo('lvlb_weights', 'F32', [1000])],
    code: 'E_UNMATCHED_KEYS',
    mentions: 'lvlb_weights',
  },
  {
    name: 'a block beyond the structure (attention on a level without one)',
    input: 'sd1',
    edit: (ts) => [...ts, tensorInfo(`${U}input_blocks.3.1.norm.weight`, 'F32', [32])],
    code: 'E_MODEL_STRUCTURE',
    mentions: 'output_blocks.0 lacks attention but down level 1 has it',
  },
  {
    name: 'the same CLIP weight in old and new layout',
    input: 'sd1',
    edit: (ts) => [...ts, tensorInfo('cond_stage_model.transformer.final_layer_norm.weight', 'F32', [32])],
    code: 'E_TARGET_COLLISION',
    mentions: 'text_encoder/text_model.final_layer_norm.weight',
  },
  {
    name: 'missing EMA key',
    input: 'sd1',
    edit: (ts) => ts.filter((t) => t.name !== 'model_ema.diffusion_modelout2weight'),
    opts: { extractEma: true },
    code: 'E_MISSING_TENSOR',
    mentions: 'model_ema.diffusion_modelout2weight',
  },
  {
    name: 'EMA requested on a file without EMA copies',
    input: 'sd2',
    edit: (ts) => ts,
    opts: { extractEma: true },
    code: 'E_MISSING_TENSOR',
    mentions: 'model_ema.diffusion_modeltime_embed0weight',
  },
  {
    name: 'EMA tensor of another shape',
    input: 'sd1',
    edit: replaceShape('model_ema.diffusion_modelout2bias', [8]),
    opts: { extractEma: true },
    code: 'E_SHAPE_MISMATCH',
    mentions: 'model_ema.diffusion_modelout2bias',
  },
  {
    name: 'squeeze of a 3x3 conv (VAE attention)',
    input: 'vae',
    edit: replaceShape('encoder.mid.attn_1.q.weight', [32, 32, 3, 3]),
    code: 'E_SHAPE_MISMATCH',
    mentions: 'encoder.mid.attn_1.q.weight',
  },
  {
    name: 'in_proj not divisible in 3',
    input: 'sd2',
    edit: replaceShape('cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight', [95, 32]),
    code: 'E_SHAPE_MISMATCH',
    mentions: 'divisible by 3',
  },
  {
    name: 'a missing UNet block',
    input: 'sd1',
    edit: (ts) => ts.filter((t) => !t.name.startsWith(`${U}input_blocks.3.`)),
    code: 'E_MODEL_STRUCTURE',
    mentions: '3 input_blocks, 4 output_blocks',
  },
  {
    name: 'a gap in the OpenCLIP layers',
    input: 'sd2',
    edit: (ts) => ts.filter((t) => !t.name.startsWith('cond_stage_model.model.transformer.resblocks.7.')),
    code: 'E_MODEL_STRUCTURE',
    mentions: 'gap at 7',
  },
];

describe('planning failures', () => {
  test.each(PLAN_FAILURES)('$name -> $code', (c) => {
    const tensors = c.edit(caseTensors(c.input));
    const e = caught(() => planConversion(tensors, detectFamily(tensors), c.opts));
    expect(e.code).toBe(c.code);
    expect(e.message).toContain(c.mentions);
  });

  test('E_UNMATCHED_KEYS lists the keys in data; allowUnknownKeys keeps them in the account instead', () => {
    const extra = [`${U}input_blocks.1.0.in_layers.1.weight`, 'lvlb_weights'];
    const tensors = [...caseTensors('sd1'), ...extra.map((n) => tensorInfo(n, 'F32', [32]))];
    const d = detectFamily(tensors);
    expect(caught(() => planConversion(tensors, d)).data?.keys).toEqual(extra);
    const plan = planConversion(tensors, d, { allowUnknownKeys: true });
    expect(plan.account.unknown).toEqual(extra);
    expect(plan.components.find((c) => c.folder === 'unet')!.tensors).toHaveLength(206);
  });

  test('E_TARGET_COLLISION lists component, target and both sources in data', () => {
    const tensors = [...caseTensors('sd1'), tensorInfo('cond_stage_model.transformer.final_layer_norm.weight', 'F32', [32])];
    const e = caught(() => planConversion(tensors, detectFamily(tensors)));
    expect(e.data?.collisions).toEqual([
      {
        component: 'text_encoder',
        target: 'text_model.final_layer_norm.weight',
        sources: ['cond_stage_model.transformer.text_model.final_layer_norm.weight', 'cond_stage_model.transformer.final_layer_norm.weight'],
      },
    ]);
  });

  test('a long list of unknown keys is cut in the message but complete in data', () => {
    const extra = Array.from({ length: 30 }, (_, i) => tensorInfo(`junk.${i}`, 'F32', [1]));
    const tensors = [...caseTensors('vae'), ...extra];
    const e = caught(() => planConversion(tensors, detectFamily(tensors)));
    expect(e.message).toContain('... and 10 more');
    expect(e.data?.keys).toHaveLength(30);
  });

  test('old CLIP files without text_model. get it re-inserted', () => {
    const tensors = caseTensors('sd1').map((t) => (t.name.startsWith('cond_stage_model.transformer.text_model.') ? tensorInfo(t.name.replace('text_model.', ''), t.dtype, t.shape) : t));
    const plan = planConversion(tensors, detectFamily(tensors));
    const te = plan.components.find((c) => c.folder === 'text_encoder')!;
    expect(te.tensors).toHaveLength(36);
    expect(te.tensors.find((t) => t.source === 'cond_stage_model.transformer.encoder.layers.1.mlp.fc2.weight')?.target).toBe('text_model.encoder.layers.1.mlp.fc2.weight');
    expect(plan.account.dropped.find((d) => d.source === 'cond_stage_model.transformer.embeddings.position_ids')?.rule).toBe('clip-position-ids');
  });
});

// --- bad mapping data --------------------------------------------------------------------------

const REASONS = loadMappings().reasons;

const VALID_TABLE = {
  table: 'demo',
  inner: { attn: { rows: [['q.weight', 'to_q.weight', 'squeeze']] } },
  rows: [['conv_in.', 'conv_in.'], { source: 'mid.attn_1.', target: 'mid_block.attentions.0.', inner: 'attn' }],
  layouts: [{ generator: 'openclip-layers', rows: [{ slot: 'layer', source: 'resblocks.{n}.', target: 'layers.{n}.' }] }],
};

type Json = Record<string, unknown>;
const withRow = (row: unknown): Json => ({ ...VALID_TABLE, rows: [...VALID_TABLE.rows, row] });
const withLayoutRow = (row: unknown, generator = 'openclip-layers'): Json => ({ ...VALID_TABLE, layouts: [{ generator, rows: [row] }] });

const BAD_TABLES: readonly [string, Json, string, string][] = [
  ['unknown op', withRow(['k.weight', 'to_k.weight', 'squash']), 'rows[2]', 'unknown op "squash"'],
  ['split index out of range', withRow({ source: 'qkv', targets: [{ target: 'q', op: { op: 'split', axis: 0, index: 3, parts: 3 } }] }), 'rows[2].targets[0]', 'split index'],
  ['split on axis 1', withRow({ source: 'qkv', targets: [{ target: 'q', op: { op: 'split', axis: 1, index: 0, parts: 3 } }] }), 'rows[2].targets[0]', 'split axis must be 0'],
  ['unknown inner table', withRow({ source: 'a.', target: 'b.', inner: 'resnet' }), 'rows[2]', 'unknown inner table "resnet"'],
  ['inner row with an op', withRow({ source: 'a.', target: 'b.', inner: 'attn', op: 'squeeze' }), 'rows[2]', 'one target and no op'],
  ['prefix source with an exact target', withRow(['a.', 'b']), 'rows[2]', 'prefix row and exact row mixed'],
  ['no target', withRow({ source: 'a.' }), 'rows[2]', 'exactly one of target, targets, drop'],
  ['target and drop', withRow({ source: 'a.', target: 'b.', drop: 'clip-position-ids' }), 'rows[2]', 'exactly one of'],
  ['unknown drop reason', withRow({ source: 'a', drop: 'because' }), 'rows[2]', 'unknown drop reason "because"'],
  ['misspelt field', withRow({ source: 'a.', taget: 'b.' }), 'rows[2]', 'unknown field "taget"'],
  ['empty source', withRow(['', 'b']), 'rows[2]', 'source is empty'],
  ['row array of 4', withRow(['a', 'b', 'squeeze', 'x']), 'rows[2]', 'got 4 items'],
  ['placeholder outside a layout', withRow(['blocks.{i}.', 'b.{i}.']), 'rows[2]', 'only layout rows take placeholders'],
  ['unknown generator', withLayoutRow({ slot: 'layer', source: 'a.', target: 'b.' }, 'ldm-unet-sideways'), 'layouts[0].generator', 'unknown layout generator'],
  ['unknown slot', withLayoutRow({ slot: 'resnet', source: 'a.{n}.', target: 'b.{n}.' }), 'layouts[0].rows[0]', 'slot "resnet" is not a slot of openclip-layers'],
  ['placeholder the slot does not have', withLayoutRow({ slot: 'layer', source: 'a.{i}.', target: 'b.{n}.' }), 'layouts[0].rows[0]', 'placeholder {i}'],
  ['table name differs from file', { ...VALID_TABLE, table: 'other' }, 'table', 'differs from the file name'],
];

describe('bad table rows -> E_MAPPING_TABLE with file and row', () => {
  test('the valid base table parses', () => {
    const t = parseTable(VALID_TABLE, 'tables/demo.json', REASONS);
    expect(t.rows).toHaveLength(2);
    expect(t.inner.get('attn')?.[0].targets[0].op).toEqual({ op: 'squeeze' });
  });

  test.each(BAD_TABLES)('%s', (_, json, row, mentions) => {
    const e = caught(() => parseTable(json, 'tables/demo.json', REASONS));
    expect(e.code).toBe('E_MAPPING_TABLE');
    expect(e.data).toEqual({ file: 'mappings/tables/demo.json', row });
    expect(e.message).toContain(mentions);
    expect(e.message.startsWith('mappings/tables/demo.json: ')).toBe(true);
  });
});

const FAMILY = {
  family: 'sd1',
  components: [{ folder: 'unet', source: 'model.diffusion_model.', table: 'unet-ldm', className: 'UNet2DConditionModel', library: 'diffusers' }],
  detect: { require: [{ key: 'model.diffusion_model.input_blocks.0.0.weight' }] },
};

const BAD_FAMILIES: readonly [string, Json, string][] = [
  ['unknown folder', { ...FAMILY, components: [{ ...FAMILY.components[0], folder: 'unet2' }] }, 'unknown component folder "unet2"'],
  ['source prefix without a dot', { ...FAMILY, components: [{ ...FAMILY.components[0], source: 'model' }] }, 'must end in "."'],
  ['unknown library', { ...FAMILY, components: [{ ...FAMILY.components[0], library: 'torch' }] }, 'library must be'],
  ['unknown option', { ...FAMILY, components: [{ ...FAMILY.components[0], options: { skipFirstLayer: true } }] }, 'unknown field "skipFirstLayer"'],
  ['unknown drop reason', { ...FAMILY, drop: [{ source: 'betas', reason: 'unused' }] }, 'unknown drop reason "unused"'],
  ['unknown probe field', { ...FAMILY, detect: { require: [{ key: 'a', shape: [1] }] } }, 'unknown field "shape"'],
  ['unknown EMA key rule', { ...FAMILY, ema: { component: 'unet', prefix: 'model_ema.', keyRule: 'dots' } }, 'unknown EMA key rule'],
];

describe('bad family files -> E_MAPPING_TABLE', () => {
  test.each(BAD_FAMILIES)('%s', (_, json, mentions) => {
    const e = caught(() => parseFamily(json, 'families/demo.json', REASONS));
    expect(e.code).toBe('E_MAPPING_TABLE');
    expect(e.message).toContain(mentions);
  });

  const tables = loadMappings().tables;
  const resolve = (...fams: Json[]) => resolveFamilies(fams.map((f, i) => parseFamily(f, `families/f${i}.json`, REASONS)), tables);

  test.each<[string, Json[], string]>([
    ['unknown table', [{ ...FAMILY, components: [{ ...FAMILY.components[0], table: 'unet-xl' }] }], 'unknown table "unet-xl"'],
    ['not a FamilyId', [{ ...FAMILY, family: 'sd3' }], '"sd3" is not a FamilyId'],
    ['no required probe', [{ ...FAMILY, detect: {} }], 'needs at least one required probe'],
    ['extends an unknown family', [{ ...FAMILY, extends: 'sd0' }], 'unknown family "sd0"'],
    ['extends cycle', [{ family: 'a', abstract: true, extends: 'b' }, { family: 'b', abstract: true, extends: 'a' }, { ...FAMILY, extends: 'a' }], 'cycle'],
    ['defined twice', [FAMILY, FAMILY], 'is also defined in'],
    ['EMA of a missing component', [{ ...FAMILY, ema: { component: 'vae', prefix: 'model_ema.', keyRule: 'ldm-dotless' } }], 'no component "vae"'],
  ])('%s', (_, fams, mentions) => {
    const e = caught(() => resolve(...fams));
    expect(e.code).toBe('E_MAPPING_TABLE');
    expect(e.message).toContain(mentions);
  });

  test('two table rows for one source fail when compiled', () => {
    const real = loadMappings();
    const clip = real.tables.get('clip-hf')!;
    const doubled = { ...clip, rows: [...clip.rows, { ...clip.rows[0], where: 'rows[9]' }] };
    const mappings = { ...real, tables: new Map([...real.tables, ['clip-hf', doubled]]) };
    const e = caught(() => compileForTensors(caseTensors('sd1'), 'sd1', mappings));
    expect(e.code).toBe('E_MAPPING_TABLE');
    expect(e.message).toContain('"cond_stage_model.transformer.text_model." is already mapped by tables/clip-hf.json rows[0]');
  });
});

describe('reading a mappings folder', () => {
  test('the package mappings load', () => {
    const m = loadMappings();
    expect([...m.families.keys()].sort()).toEqual([
      'controlnet-sd15',
      'controlnet-sdxl',
      'sd-x4-upscaler',
      'sd1',
      'sd1-inpaint',
      'sd1-pix2pix',
      'sd2',
      'sd2-depth',
      'sd2-inpaint',
      'sd21-unclip-h',
      'sd21-unclip-l',
      'sdxl-base',
      'sdxl-inpaint',
      'sdxl-refiner',
      'vae',
    ]);
    expect([...m.tables.keys()].sort()).toEqual([
      'clip-hf',
      'controlnet-ldm',
      'controlnet-sgm',
      'openclip',
      'openclip-vision',
      'unclip-normalizer',
      'unet-ldm',
      'unet-sgm',
      'unet-unclip',
      'unet-upscaler',
      'vae-ldm',
    ]);
  });

  test('a broken row in a copy of mappings/ names its file and row', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mappings-'));
    try {
      cpSync(new URL('.', MAPPINGS_ROOT), dir, { recursive: true });
      const file = join(dir, 'tables', 'vae-ldm.json');
      writeFileSync(file, readFileSync(file, 'utf8').replace('["q.weight", "to_q.weight", "squeeze"]', '["q.weight", "to_q.weight", "sqeeze"]'));
      const e = caught(() => readMappings(pathToFileURL(`${dir}/`)));
      expect(e.code).toBe('E_MAPPING_TABLE');
      expect(e.data).toEqual({ file: 'mappings/tables/vae-ldm.json', row: 'inner.attention.rows[1]' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('invalid JSON is E_MAPPING_TABLE too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mappings-'));
    try {
      cpSync(new URL('.', MAPPINGS_ROOT), dir, { recursive: true });
      writeFileSync(join(dir, 'families', 'sd2.json'), '{ "family": "sd2", ');
      const e = caught(() => readMappings(pathToFileURL(`${dir}/`)));
      expect(e.code).toBe('E_MAPPING_TABLE');
      expect(e.file).toBe('mappings/families/sd2.json');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
