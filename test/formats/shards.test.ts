/**
 * Shard splitting, file names and index text (docs/formats.md §6), following huggingface_hub
 * `split_state_dict_into_shards_factory` / `parse_size_to_int` and diffusers `_add_variant`.
 */
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import {
  addVariant,
  buildShardIndex,
  indexFileName,
  parseSizeString,
  planShards,
  shardFileName,
  splitIntoShards,
  weightsFileName,
} from '../../src/formats/shards.js';

const GB = 1e9;
const entries = (sizes: number[]) => sizes.map((byteLength, i) => ({ name: `t${i}`, byteLength }));
const names = (shards: { name: string }[][]) => shards.map((s) => s.map((e) => e.name));

describe('splitIntoShards', () => {
  test('huggingface_hub docstring example: [6, 6, 2, 6, 2, 2] GB at 10 GB -> [6], [6+2], [6+2+2]', () => {
    expect(names(splitIntoShards(entries([6, 6, 2, 6, 2, 2].map((g) => g * GB)), 10 * GB))).toEqual([['t0'], ['t1', 't2'], ['t3', 't4', 't5']]);
  });

  test('a shard may reach the limit exactly', () => {
    expect(names(splitIntoShards(entries([5, 5, 1]), 10))).toEqual([['t0', 't1'], ['t2']]);
  });

  test('a tensor above the limit gets its own shard at once, before the shard still filling', () => {
    expect(names(splitIntoShards(entries([2, 12, 3, 9]), 10))).toEqual([['t1'], ['t0', 't2'], ['t3']]);
  });

  test('zero-byte tensors and an empty state dict', () => {
    expect(names(splitIntoShards(entries([0, 10, 0]), 10))).toEqual([['t0', 't1', 't2']]);
    expect(splitIntoShards([], 10)).toEqual([]);
  });
});

describe('file names', () => {
  test.each([
    ['diffusion_pytorch_model', 1, 2, undefined, 'diffusion_pytorch_model-00001-of-00002.safetensors'],
    ['diffusion_pytorch_model', 2, 2, 'fp16', 'diffusion_pytorch_model.fp16-00002-of-00002.safetensors'],
    ['model', 3, 12, undefined, 'model-00003-of-00012.safetensors'],
    ['model', 1, 1, undefined, 'model.safetensors'],
    ['diffusion_pytorch_model', 1, 1, 'fp16', 'diffusion_pytorch_model.fp16.safetensors'],
  ] as const)('shardFileName(%s, %d, %d, %s) = %s', (base, n, count, variant, expected) => {
    expect(shardFileName(base, n, count, variant)).toBe(expected);
  });

  test('index and single-file names with and without a variant', () => {
    expect(indexFileName('diffusion_pytorch_model')).toBe('diffusion_pytorch_model.safetensors.index.json');
    expect(indexFileName('diffusion_pytorch_model', 'fp16')).toBe('diffusion_pytorch_model.safetensors.index.fp16.json');
    expect(indexFileName('model', 'non_ema')).toBe('model.safetensors.index.non_ema.json');
    expect(weightsFileName('model', 'fp16')).toBe('model.fp16.safetensors');
    expect(addVariant('pytorch_model.bin', 'fp16')).toBe('pytorch_model.fp16.bin');
    expect(addVariant('model.safetensors')).toBe('model.safetensors');
  });

  test.each([
    () => shardFileName('model', 0, 2),
    () => shardFileName('model', 3, 2),
    () => shardFileName('model', 1.5, 2),
    () => addVariant('model.safetensors', '../x'),
    () => addVariant('model.safetensors', ''),
  ])('misuse %# -> E_USAGE', (call) => {
    expect(call).toThrow(expect.objectContaining({ code: ErrorCode.E_USAGE }));
  });
});

describe('buildShardIndex', () => {
  test('json.dumps(index, indent=2, sort_keys=True) + "\\n" text', () => {
    const text = buildShardIndex(
      [
        ['conv_in.weight', 'diffusion_pytorch_model-00001-of-00002.safetensors'],
        ['up.0', 'diffusion_pytorch_model-00002-of-00002.safetensors'],
        ['conv_in.bias', 'diffusion_pytorch_model-00001-of-00002.safetensors'],
      ],
      3438167536,
    );
    expect(text).toBe(
      [
        '{',
        '  "metadata": {',
        '    "total_size": 3438167536',
        '  },',
        '  "weight_map": {',
        '    "conv_in.bias": "diffusion_pytorch_model-00001-of-00002.safetensors",',
        '    "conv_in.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",',
        '    "up.0": "diffusion_pytorch_model-00002-of-00002.safetensors"',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    expect(buildShardIndex({ b: 'f', a: 'f' }, 0)).toContain('"a": "f",\n    "b": "f"');
  });
});

describe('planShards', () => {
  test('sharded: names, index and total size', () => {
    const plan = planShards(entries([6, 6, 2]), 'diffusion_pytorch_model', { maxShardBytes: 10, variant: 'fp16' });
    expect(plan.files.map((f) => [f.fileName, f.entries.map((e) => e.name), f.byteLength])).toEqual([
      ['diffusion_pytorch_model.fp16-00001-of-00002.safetensors', ['t0'], 6],
      ['diffusion_pytorch_model.fp16-00002-of-00002.safetensors', ['t1', 't2'], 8],
    ]);
    expect(plan.totalSize).toBe(14);
    expect(plan.index?.fileName).toBe('diffusion_pytorch_model.safetensors.index.fp16.json');
    expect(JSON.parse(plan.index!.json)).toEqual({
      metadata: { total_size: 14 },
      weight_map: {
        t0: 'diffusion_pytorch_model.fp16-00001-of-00002.safetensors',
        t1: 'diffusion_pytorch_model.fp16-00002-of-00002.safetensors',
        t2: 'diffusion_pytorch_model.fp16-00002-of-00002.safetensors',
      },
    });
  });

  test('one shard: plain name, no index; an empty state dict still gets one file', () => {
    const plan = planShards(entries([1, 2]), 'model', { maxShardBytes: 10 });
    expect(plan.files.map((f) => f.fileName)).toEqual(['model.safetensors']);
    expect(plan.index).toBeNull();
    expect(planShards([], 'model', { maxShardBytes: 10 }).files).toEqual([{ fileName: 'model.safetensors', entries: [], byteLength: 0 }]);
  });
});

describe('parseSizeString', () => {
  test.each([
    ['10GB', 10_000_000_000],
    ['5GB', 5_000_000_000],
    ['500MB', 500_000_000],
    ['2GiB', 2_147_483_648],
    ['512MiB', 536_870_912],
    ['1.5GB', 1_500_000_000],
    ['0.1GB', 100_000_000],
    [' 10gb ', 10_000_000_000],
    ['1 TB', 1e12],
    ['100KB', 100_000],
    ['1234', 1234],
    [4096, 4096],
  ] as const)('%s -> %d bytes', (input, bytes) => {
    expect(parseSizeString(input)).toBe(bytes);
  });

  test.each(['ten GB', '10XB', '-1GB', '0GB', 'GB', '', 0, -5, 1.5])('%s -> E_USAGE', (input) => {
    expect(() => parseSizeString(input)).toThrow(expect.objectContaining({ code: ErrorCode.E_USAGE }));
  });
});
