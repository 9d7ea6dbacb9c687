/**
 * The golden comparer must be able to fail: a good conversion is copied and damaged in one named
 * way per row, and the comparer has to reject it with the exact difference line compare.py would
 * print. Edits compare.py deliberately tolerates (ignored keys, 1 vs 1.0, the canonical forms of
 * the tokenizer files, files a shard index does not list) must still pass.
 */
import { cp, mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { castBytes } from '../../src/diffusers/cast.js';
import { openSafetensors, readSafetensorsHeader, writeSafetensorsFile, type SafetensorsTensorData } from '../../src/formats/safetensors.js';
import { parsePythonJson, pythonJsonDumps } from '../../src/formats/python-json.js';
import { FileSource } from '../../src/io/file-source.js';
import { compareWithGolden, jsonValuesEqual, type CompareOptions } from '../helpers/compare-golden.js';
import { sharedFixture } from '../helpers/paths.js';

const SD1_GOLDEN = sharedFixture('golden/sd1');
const VAE_GOLDEN = sharedFixture('golden/vae');
const UNET = 'unet/diffusion_pytorch_model.safetensors';
const MERGES_CANONICAL = 'f61f2adf497e6f53';
const VOCAB_CANONICAL = 'f9190aead40a965a';

let work: string;
/** Good conversions, converted once: sd1 (pipeline), sd1 sharded at 100KB, the standalone VAE. */
const good = { sd1: '', sd1Sharded: '', vae: '' };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-comparer-'));
  good.sd1 = join(work, 'good-sd1');
  good.sd1Sharded = join(work, 'good-sd1-sharded');
  good.vae = join(work, 'good-vae');
  const sd1 = sharedFixture('cases/sd1/model.ckpt');
  const sd1Yaml = sharedFixture('cases/sd1/original_config.yaml');
  await convert(sd1, good.sd1, { originalConfig: sd1Yaml });
  await convert(sd1, good.sd1Sharded, { originalConfig: sd1Yaml, maxShardSize: '100KB' });
  await convert(sharedFixture('cases/vae/vae.ckpt'), good.vae, { originalConfig: sharedFixture('cases/vae/original_config.yaml') });
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let serial = 0;
async function copyOf(dir: string): Promise<string> {
  const copy = join(work, `damaged-${++serial}`);
  await cp(dir, copy, { recursive: true });
  return copy;
}

// ------------------------------------------------------------------------------------------------
// Damage
// ------------------------------------------------------------------------------------------------

async function readAll(path: string): Promise<SafetensorsTensorData[]> {
  const source = await openSafetensors(await FileSource.open(path));
  try {
    const out: SafetensorsTensorData[] = [];
    for (const t of source.tensors) out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await source.readTensor(t.name) });
    return out;
  } finally {
    await source.close();
  }
}

/** Rewrites a safetensors file through `edit` (a valid file again afterwards). */
async function rewriteTensors(path: string, edit: (tensors: SafetensorsTensorData[]) => SafetensorsTensorData[]): Promise<void> {
  const tensors = edit(await readAll(path));
  await unlink(path);
  await writeSafetensorsFile(path, tensors);
}

/** XORs one byte of a tensor's data in place. */
async function xorTensorByte(path: string, tensor: string, byte: number, mask: number): Promise<void> {
  const file = await FileSource.open(path);
  const header = await readSafetensorsHeader(file);
  await file.close();
  const entry = header.tensors.find((t) => t.name === tensor);
  if (!entry) throw new Error(`no tensor ${tensor} in ${path}`);
  const bytes = await readFile(path);
  bytes[header.dataStart + entry.dataOffsets[0] + byte] ^= mask;
  await writeFile(path, bytes);
}

/** Edits a JSON file, writing it back as Diffusers does (indent 2, sorted keys). */
async function editJson(path: string, edit: (obj: Record<string, unknown>) => void): Promise<void> {
  const obj = parsePythonJson(await readFile(path, 'utf8'), path) as Record<string, unknown>;
  edit(obj);
  await writeFile(path, pythonJsonDumps(obj, { indent: 2, sortKeys: true }) + '\n');
}

async function editText(path: string, edit: (text: string) => string): Promise<void> {
  await writeFile(path, edit(await readFile(path, 'utf8')));
}

/** float32 element 0 of a golden tensor. */
async function goldenFirstFloat(path: string, tensor: string): Promise<number> {
  const all = await readAll(path);
  const t = all.find((x) => x.name === tensor)!;
  return new DataView(t.data.buffer, t.data.byteOffset).getFloat32(0, true);
}

interface Damage {
  readonly name: string;
  readonly product: keyof typeof good;
  readonly damage: (dir: string) => Promise<void>;
  /** Expected difference lines, in order; a RegExp matches one line. */
  readonly differences: readonly (string | RegExp)[];
  /** Every line after `differences` must match this (a run of missing tensors). */
  readonly rest?: RegExp;
  readonly summary: string | RegExp;
  readonly golden?: string;
  readonly options?: CompareOptions;
}


const CATALOGUE: readonly Damage[] = [
  {
    name: 'a flipped sign bit in one UNet tensor',
    product: 'sd1',
    damage: (d) => xorTensorByte(join(d, UNET), 'conv_in.bias', 3, 0x80),
    differences: [/^unet: conv_in\.bias: values differ \(1\/32 elements, max \|diff\| [0-9.e+-]+\)$/],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a flipped lowest mantissa bit in the text encoder',
    product: 'sd1',
    damage: (d) => xorTensorByte(join(d, 'text_encoder/model.safetensors'), 'text_model.final_layer_norm.weight', 0, 0x01),
    differences: [/^text_encoder: text_model\.final_layer_norm\.weight: values differ \(1\/32 elements, max \|diff\| [0-9.e+-]+\)$/],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a flipped bit in a tensor of one shard',
    product: 'sd1Sharded',
    damage: async (d) => {
      const index = JSON.parse(await readFile(join(d, 'unet/diffusion_pytorch_model.safetensors.index.json'), 'utf8'));
      await xorTensorByte(join(d, 'unet', index.weight_map['conv_out.bias']), 'conv_out.bias', 1, 0x10);
    },
    differences: [/^unet: conv_out\.bias: values differ \(1\/4 elements, max \|diff\| [0-9.e+-]+\)$/],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a flipped bit in the standalone VAE',
    product: 'vae',
    golden: VAE_GOLDEN,
    damage: (d) => xorTensorByte(join(d, 'diffusion_pytorch_model.safetensors'), 'decoder.conv_out.bias', 2, 0x04),
    differences: [/^\(model\): decoder\.conv_out\.bias: values differ \(1\/3 elements, max \|diff\| [0-9.e+-]+\)$/],
    summary: 'match: 0/1 components, 1 tensor mismatches',
  },
  {
    name: 'a missing tensor',
    product: 'sd1',
    damage: (d) => rewriteTensors(join(d, UNET), (ts) => ts.filter((t) => t.name !== 'conv_in.bias')),
    differences: ['unet: missing tensor conv_in.bias [32]'],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'an extra tensor',
    product: 'sd1',
    damage: (d) =>
      rewriteTensors(join(d, 'vae/diffusion_pytorch_model.safetensors'), (ts) => [
        ...ts,
        { name: 'bogus.weight', dtype: 'F32', shape: [2], data: new Uint8Array(8) },
      ]),
    differences: ['vae: extra tensor bogus.weight [2]'],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a wrong dtype (float16 where the golden is float32)',
    product: 'sd1',
    damage: (d) =>
      rewriteTensors(join(d, UNET), (ts) =>
        ts.map((t) => (t.name === 'conv_in.bias' ? { ...t, dtype: 'F16' as const, data: castBytes(t.data, 'F32', 'F16').bytes } : t)),
      ),
    differences: ['unet: conv_in.bias: dtype F16 != expected F32'],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a wrong shape',
    product: 'sd1',
    damage: (d) => rewriteTensors(join(d, UNET), (ts) => ts.map((t) => (t.name === 'conv_in.bias' ? { ...t, shape: [32, 1] } : t))),
    differences: ['unet: conv_in.bias: shape [32, 1] != golden [32]'],
    summary: 'match: 4/5 components, 1 tensor mismatches',
  },
  {
    name: 'a weight file under another base name',
    product: 'sd1',
    damage: (d) => rename(join(d, UNET), join(d, 'unet/model.safetensors')),
    differences: ["unet: weight file name ['model'] != golden ['diffusion_pytorch_model']"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a truncated weight file',
    product: 'sd1',
    damage: async (d) => {
      const bytes = await readFile(join(d, UNET));
      await writeFile(join(d, UNET), bytes.subarray(0, bytes.length - 4));
    },
    differences: [/^unet: weights: cannot read diffusion_pytorch_model\.safetensors: .*truncated/, ...Array<RegExp>(206).fill(/^unet: missing tensor /)],
    summary: 'match: 4/5 components, 206 tensor mismatches',
  },
  {
    name: 'a shard the index lists is missing',
    product: 'sd1Sharded',
    damage: async (d) => {
      const index = JSON.parse(await readFile(join(d, 'unet/diffusion_pytorch_model.safetensors.index.json'), 'utf8'));
      await unlink(join(d, 'unet', index.weight_map['conv_in.bias']));
    },
    differences: [/^unet: weights: index lists missing shard diffusion_pytorch_model-\d{5}-of-\d{5}\.safetensors$/, /^unet: missing tensor conv_in\.bias \[32\]$/],
    rest: /^unet: missing tensor \S+ \[[0-9, ]*\]$/,
    summary: /^match: 4\/5 components, \d+ tensor mismatches$/,
  },
  {
    name: 'a UNet config value changed',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'unet/config.json'), (c) => void (c.layers_per_block = 2)),
    differences: ["unet/config.json: 'layers_per_block' differs: golden 1 != product 2"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a VAE config key missing',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'vae/config.json'), (c) => void delete c.sample_size),
    differences: ["vae/config.json: missing key 'sample_size' (golden 512)"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'an extra scheduler config key',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'scheduler/scheduler_config.json'), (c) => void (c.bogus_key = true)),
    differences: ["scheduler/scheduler_config.json: extra key 'bogus_key' = true"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a scheduler config value of another type (bool where the golden has a number)',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'scheduler/scheduler_config.json'), (c) => void (c.steps_offset = true)),
    differences: ["scheduler/scheduler_config.json: 'steps_offset' differs: golden 1 != product true"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a missing scheduler_config.json',
    product: 'sd1',
    damage: (d) => unlink(join(d, 'scheduler/scheduler_config.json')),
    differences: ['scheduler: scheduler_config.json missing'],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a model_index entry changed',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'model_index.json'), (c) => void (c.scheduler = ['diffusers', 'DDIMScheduler'])),
    differences: ['model_index.json: \'scheduler\' differs: golden ["diffusers", "PNDMScheduler"] != product ["diffusers", "DDIMScheduler"]'],
    summary: 'match: 5/5 components, 0 tensor mismatches, model_index.json differs',
  },
  {
    name: 'a missing model_index.json',
    product: 'sd1',
    damage: (d) => unlink(join(d, 'model_index.json')),
    differences: ['model_index.json: missing'],
    summary: 'match: 5/5 components, 0 tensor mismatches, model_index.json differs',
  },
  {
    name: 'a wrong merges.txt (one merge dropped)',
    product: 'sd1',
    damage: (d) => editText(join(d, 'tokenizer/merges.txt'), (t) => t.replace(/\n[^\n]+\n?$/, '\n')),
    differences: [new RegExp(`^tokenizer: merges\\.txt content differs \\(canonical sha256 [0-9a-f]{16}\\.\\.\\. != ${MERGES_CANONICAL}\\.\\.\\.\\)$`)],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a wrong vocab.json (one id changed)',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'tokenizer/vocab.json'), (v) => void (v['a</w>'] = 1)),
    differences: [new RegExp(`^tokenizer: vocab\\.json content differs \\(canonical sha256 [0-9a-f]{16}\\.\\.\\. != ${VOCAB_CANONICAL}\\.\\.\\.\\)$`)],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a tokenizer config value changed',
    product: 'sd1',
    damage: (d) => editJson(join(d, 'tokenizer/tokenizer_config.json'), (c) => void (c.model_max_length = 76)),
    differences: ["tokenizer/tokenizer_config.json: 'model_max_length' differs: golden 77 != product 76"],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a missing tokenizer file',
    product: 'sd1',
    damage: (d) => unlink(join(d, 'tokenizer/special_tokens_map.json')),
    differences: ['tokenizer: missing file special_tokens_map.json'],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'an extra tokenizer.json',
    product: 'sd1',
    damage: (d) => writeFile(join(d, 'tokenizer/tokenizer.json'), '{}\n'),
    differences: ['tokenizer: extra file tokenizer.json'],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a missing component folder',
    product: 'sd1',
    damage: (d) => rm(join(d, 'vae'), { recursive: true }),
    differences: ['vae: directory missing in product output'],
    // A missing component counts all its golden tensors as mismatches.
    summary: 'match: 4/5 components, 120 tensor mismatches',
  },
  {
    name: 'a missing tokenizer folder',
    product: 'sd1',
    damage: (d) => rm(join(d, 'tokenizer'), { recursive: true }),
    differences: ['tokenizer: directory missing in product output'],
    summary: 'match: 4/5 components, 0 tensor mismatches',
  },
  {
    name: 'a standalone VAE config value changed',
    product: 'vae',
    golden: VAE_GOLDEN,
    damage: (d) => editJson(join(d, 'config.json'), (c) => void (c.scaling_factor = 0.13025)),
    differences: ["(model)/config.json: 'scaling_factor' differs: golden 0.18215 != product 0.13025"],
    summary: 'match: 0/1 components, 0 tensor mismatches',
  },
];

describe('the comparer rejects a damaged product with the precise difference', () => {
  it('passes the undamaged conversions (the baseline of every row)', async () => {
    for (const [dir, golden, options] of [
      [good.sd1, SD1_GOLDEN, { input: 'model.ckpt' }],
      [good.sd1Sharded, SD1_GOLDEN, { input: 'model.ckpt' }],
      [good.vae, VAE_GOLDEN, { input: 'vae.ckpt' }],
    ] as const) {
      const r = await compareWithGolden(golden, dir, options);
      expect(r.differences).toEqual([]);
      expect(r.ok).toBe(true);
    }
  });

  it.each(CATALOGUE)('$name', async (row) => {
    const dir = await copyOf(good[row.product]);
    await row.damage(dir);
    const r = await compareWithGolden(row.golden ?? SD1_GOLDEN, dir, row.options ?? {});
    expect(r.ok).toBe(false);
    if (typeof row.summary === 'string') expect(r.summary).toBe(row.summary);
    else expect(r.summary).toMatch(row.summary);
    if (row.rest) {
      expect(r.differences.length).toBeGreaterThanOrEqual(row.differences.length);
      for (const line of r.differences.slice(row.differences.length)) expect(line).toMatch(row.rest);
      // Every line but the shard problem is one tensor mismatch.
      expect(r.mismatches).toBe(r.differences.length - 1);
    } else {
      expect(r.differences).toHaveLength(row.differences.length);
    }
    row.differences.forEach((want, i) => (typeof want === 'string' ? expect(r.differences[i]).toBe(want) : expect(r.differences[i]).toMatch(want)));
    await rm(dir, { recursive: true, force: true });
  });

  it('reports the size of a value difference: max |diff| is twice the value whose sign flipped', async () => {
    const dir = await copyOf(good.sd1);
    await xorTensorByte(join(dir, UNET), 'conv_in.bias', 3, 0x80);
    const x = await goldenFirstFloat(join(SD1_GOLDEN, 'diffusers', UNET), 'conv_in.bias');
    const r = await compareWithGolden(SD1_GOLDEN, dir);
    const reported = Number(/max \|diff\| (\S+)\)$/.exec(r.differences[0])![1]);
    expect(reported).toBeCloseTo(2 * Math.abs(x), 5);
    await rm(dir, { recursive: true, force: true });
  });

  it('says so when the product folder does not exist', async () => {
    const missing = join(work, 'never-written');
    const r = await compareWithGolden(SD1_GOLDEN, missing);
    expect(r).toMatchObject({ ok: false, components: 0, summary: 'match: 0/0 components, 0 tensor mismatches' });
    expect(r.differences).toEqual([`product output directory ${missing} does not exist`]);
  });
});

describe('the comparer tolerates what compare.py tolerates', () => {
  const TOLERATED: readonly { name: string; product: keyof typeof good; damage: (dir: string) => Promise<void> }[] = [
    {
      name: 'ignored config keys changed (_diffusers_version, _name_or_path, torch_dtype)',
      product: 'sd1',
      damage: async (d) => {
        await editJson(join(d, 'unet/config.json'), (c) => void ((c._diffusers_version = '9.9.9'), (c._name_or_path = '/somewhere')));
        await editJson(join(d, 'text_encoder/config.json'), (c) => void ((c.torch_dtype = 'bfloat16'), (c.transformers_version = '0.0.1')));
        await editJson(join(d, 'model_index.json'), (c) => void (c._diffusers_version = '9.9.9'));
      },
    },
    {
      name: 'an integer written as a float (1 == 1.0)',
      product: 'sd1',
      damage: (d) => editText(join(d, 'unet/config.json'), (t) => t.replace('"layers_per_block": 1,', '"layers_per_block": 1.0,')),
    },
    {
      name: 'ignored tokenizer keys changed',
      product: 'sd1',
      damage: (d) => editJson(join(d, 'tokenizer/tokenizer_config.json'), (c) => void ((c.name_or_path = '/elsewhere'), (c.tokenizer_file = null))),
    },
    {
      name: 'merges.txt with CRLF line ends and without its #version line (same canonical form)',
      product: 'sd1',
      damage: (d) => editText(join(d, 'tokenizer/merges.txt'), (t) => t.replace(/^#version[^\n]*\n/, '').replace(/\n/g, '\r\n')),
    },
    {
      name: 'vocab.json re-serialised in another key order and spacing',
      product: 'sd1',
      damage: (d) =>
        editText(join(d, 'tokenizer/vocab.json'), (t) => {
          const entries = Object.entries(JSON.parse(t) as Record<string, number>).reverse();
          return JSON.stringify(Object.fromEntries(entries), null, 1);
        }),
    },
    {
      name: 'a stray weight file next to a shard index that does not list it',
      product: 'sd1Sharded',
      damage: async (d) => {
        await writeSafetensorsFile(join(d, 'unet/stray.safetensors'), [{ name: 'stray.weight', dtype: 'F32', shape: [1], data: new Uint8Array(4) }]);
      },
    },
    {
      name: 'an unlisted extra file in the tokenizer folder',
      product: 'sd1',
      damage: (d) => writeFile(join(d, 'tokenizer/README.md'), 'notes\n'),
    },
  ];

  it.each(TOLERATED)('$name', async (row) => {
    const dir = await copyOf(good[row.product]);
    await row.damage(dir);
    const r = await compareWithGolden(SD1_GOLDEN, dir, { input: 'model.ckpt' });
    expect(r.differences).toEqual([]);
    expect(r.ok).toBe(true);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('comparison modes and golden selection', () => {
  it('fp16-input rejects a float32 conversion of full-precision weights', async () => {
    const r = await compareWithGolden(SD1_GOLDEN, good.sd1, { mode: 'fp16-input' });
    expect(r.ok).toBe(false);
    expect(r.mismatches).toBeGreaterThan(100);
    for (const line of r.differences) expect(line).toMatch(/^(unet|vae|text_encoder): \S+: values differ \(\d+\/\d+ elements, max \|diff\| /);
  });

  it('half rejects float32 tensors by dtype', async () => {
    const r = await compareWithGolden(VAE_GOLDEN, good.vae, { mode: 'half' });
    expect(r.ok).toBe(false);
    expect(r.mismatches).toBe(120);
    expect(r.differences[0]).toMatch(/^\(model\): \S+: dtype F32 != expected F16$/);
  });

  it('takes the mode golden.json records for the input, and an explicit mode over it', async () => {
    expect((await compareWithGolden(SD1_GOLDEN, good.sd1, { input: 'model.ckpt' })).mode).toBe('exact');
    expect((await compareWithGolden(SD1_GOLDEN, good.sd1, { input: '/anywhere/model-legacy-fp16.ckpt' })).mode).toBe('fp16-input');
    expect((await compareWithGolden(SD1_GOLDEN, good.sd1, { input: 'model-legacy-fp16.ckpt', mode: 'exact' })).ok).toBe(true);
  });

  it('the ema golden compares only its listed components, against diffusers-ema', async () => {
    const r = await compareWithGolden(SD1_GOLDEN, good.sd1, { golden: 'ema' });
    expect(r.components).toBe(1);
    expect(r.ok).toBe(false);
    for (const line of r.differences) expect(line).toMatch(/^unet: \S+: values differ /);
  });

  it('refuses an unknown golden variant or input name, as compare.py exits for them', async () => {
    await expect(compareWithGolden(SD1_GOLDEN, good.sd1, { golden: 'nope' })).rejects.toThrow(/unknown golden variant 'nope'; available: default, ema/);
    await expect(compareWithGolden(SD1_GOLDEN, good.sd1, { input: 'nope.ckpt' })).rejects.toThrow(/unknown input 'nope\.ckpt'/);
  });

  it('compares a plain Diffusers folder given as the golden', async () => {
    expect((await compareWithGolden(join(SD1_GOLDEN, 'diffusers'), good.sd1)).ok).toBe(true);
    expect((await compareWithGolden(join(VAE_GOLDEN, 'diffusers'), good.vae)).ok).toBe(true);
  });
});

describe('variant weight file names', () => {
  it('accepts *.fp16.safetensors only when told the variant, and names a file without it', async () => {
    const out = join(work, 'variant-vae');
    await convert(sharedFixture('cases/vae/vae.ckpt'), out, { dtype: 'fp16', variant: 'fp16' });
    expect((await compareWithGolden(VAE_GOLDEN, out, { mode: 'half', variant: 'fp16' })).ok).toBe(true);
    const plain = await compareWithGolden(VAE_GOLDEN, out, { mode: 'half' });
    expect(plain.differences).toEqual(["(model): weight file name ['diffusion_pytorch_model.fp16'] != golden ['diffusion_pytorch_model']"]);
    const wrongVariant = await compareWithGolden(VAE_GOLDEN, good.vae, { variant: 'fp16' });
    expect(wrongVariant.differences).toEqual(["(model): weight file name ['diffusion_pytorch_model (no .fp16 variant)'] != golden ['diffusion_pytorch_model']"]);
    await rm(out, { recursive: true, force: true });
  });
});

describe('JSON value equality (compare.py jeq)', () => {
  const j = (text: string) => parsePythonJson(text);
  it.each([
    ['1', '1.0', true],
    ['1', '1.5', false],
    ['NaN', 'NaN', true],
    ['Infinity', 'Infinity', true],
    ['true', '1', false],
    ['false', '0', false],
    ['true', 'true', true],
    ['null', 'null', true],
    ['null', '0', false],
    ['[1, 2]', '[1.0, 2]', true],
    ['[1, 2]', '[1, 2, 3]', false],
    ['[1]', '{"0": 1}', false],
    ['{"a": 1, "b": [2]}', '{"b": [2.0], "a": 1}', true],
    ['{"a": 1}', '{"a": 1, "b": 2}', false],
    ['"1"', '1', false],
    ['"x"', '"x"', true],
    ['12345678901234567890', '12345678901234567890', true],
    ['12345678901234567890', '12345678901234567891', false],
  ])('%s vs %s: %s', (a, b, equal) => {
    expect(jsonValuesEqual(j(a), j(b))).toBe(equal);
    expect(jsonValuesEqual(j(b), j(a))).toBe(equal);
  });
});
