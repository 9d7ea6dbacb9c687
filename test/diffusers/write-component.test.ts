import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { castBytes, f32BitsToF16Bits } from '../../src/diffusers/cast.js';
import { outputDTypeFor, writeComponentWeights } from '../../src/diffusers/write-component.js';
import { openSafetensors } from '../../src/formats/safetensors.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { FileSource } from '../../src/io/file-source.js';
import type { PlannedComponent, PlannedTensor } from '../../src/mapping/plan-types.js';
import type { ProgressEvent } from '../../src/progress.js';
import { sharedFixture } from '../helpers/paths.js';
import { asF32, asU16, f16, f32, i64, iotaF32, MemorySource } from './memory-source.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'write-component-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openOutput(path: string): Promise<TensorSource> {
  return openSafetensors(await FileSource.open(path));
}

/** Reads every tensor of a file: name -> { dtype, shape, bytes }. */
async function readAll(path: string): Promise<Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>> {
  const src = await openOutput(path);
  try {
    const out = new Map<string, { dtype: string; shape: readonly number[]; bytes: Uint8Array }>();
    for (const t of src.tensors) out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes: await src.readTensor(t.name) });
    return out;
  } finally {
    await src.close();
  }
}

// A source with one tensor for every op, a float16 tensor and an int64 tensor.
function everyOpSource(chunkBytes = 5): MemorySource {
  return new MemorySource(
    [
      iotaF32('a', [4]),
      iotaF32('b', [2, 2]),
      iotaF32('conv', [2, 2, 1, 1]),
      iotaF32('in_proj', [6, 2]),
      iotaF32('proj', [2, 3]),
      { name: 'pos', dtype: 'I64', shape: [3], data: i64([0, 1, 2]) },
      { name: 'half', dtype: 'F16', shape: [4], data: f16([0x3c00, 0x3555, 0x7bff, 0x0001]) },
    ],
    chunkBytes,
  );
}

function t(source: string, target: string, op: PlannedTensor['op'], shape: number[], dtype: PlannedTensor['dtype'] = 'F32'): PlannedTensor {
  return { source, target, op, shape, dtype };
}

// Component order chosen so that 64-byte shards split it 4 + 3 + 2 (see the sharding test).
const EVERY_OP: PlannedTensor[] = [
  t('a', 'z.a', { op: 'copy' }, [4]),
  t('b', 'b.copy', { op: 'copy' }, [2, 2]),
  t('conv', 'c.squeezed', { op: 'squeeze' }, [2, 2]),
  t('in_proj', 'q', { op: 'split', axis: 0, index: 0, parts: 3 }, [2, 2]),
  t('in_proj', 'k', { op: 'split', axis: 0, index: 1, parts: 3 }, [2, 2]),
  t('in_proj', 'v', { op: 'split', axis: 0, index: 2, parts: 3 }, [2, 2]),
  t('proj', 'proj.T', { op: 'transpose' }, [3, 2]),
  t('pos', 'position_ids', { op: 'copy' }, [3], 'I64'),
  t('half', 'from.half', { op: 'copy' }, [4], 'F16'),
];

function component(tensors: PlannedTensor[] = EVERY_OP, library: PlannedComponent['library'] = 'diffusers'): PlannedComponent {
  return { folder: library === 'diffusers' ? 'unet' : 'text_encoder', className: 'X', library, tensors };
}

const HALF_AS_F32 = [1, 0.333251953125, 65504, 2 ** -24];

describe('writeComponentWeights', () => {
  it('writes every op into one file, float32 by default, in the reference writer order', async () => {
    const result = await writeComponentWeights(everyOpSource(), component(), dir);
    const file = join(dir, 'diffusion_pytorch_model.safetensors');
    expect(result.files).toEqual([file]);
    expect(result.totalBytes).toBe(16 * 7 + 24 + 24);
    expect(result.overflowTensors).toEqual([]);
    expect(await readdir(dir)).toEqual(['diffusion_pytorch_model.safetensors']);

    const header = (await readFile(file)).subarray(8).toString('utf8');
    expect(header.startsWith('{"__metadata__":{"format":"pt"},"position_ids":{"dtype":"I64"')).toBe(true);
    const tensors = await readAll(file);
    expect([...tensors.keys()]).toEqual(['position_ids', 'b.copy', 'c.squeezed', 'from.half', 'k', 'proj.T', 'q', 'v', 'z.a']);
    expect(asF32(tensors.get('z.a')!.bytes)).toEqual([0, 1, 2, 3]);
    expect(asF32(tensors.get('c.squeezed')!.bytes)).toEqual([0, 1, 2, 3]);
    expect(tensors.get('c.squeezed')!.shape).toEqual([2, 2]);
    expect(asF32(tensors.get('q')!.bytes)).toEqual([0, 1, 2, 3]);
    expect(asF32(tensors.get('k')!.bytes)).toEqual([4, 5, 6, 7]);
    expect(asF32(tensors.get('v')!.bytes)).toEqual([8, 9, 10, 11]);
    expect(asF32(tensors.get('proj.T')!.bytes)).toEqual([0, 3, 1, 4, 2, 5]);
    expect(tensors.get('position_ids')!.dtype).toBe('I64');
    expect(Array.from(new BigInt64Array(tensors.get('position_ids')!.bytes.slice().buffer))).toEqual([0n, 1n, 2n]);
    expect(tensors.get('from.half')!.dtype).toBe('F32');
    expect(asF32(tensors.get('from.half')!.bytes)).toEqual(HALF_AS_F32);
  });

  it('casts floats to float16 with fp16, keeps integers, and keeps dtypes with keep', async () => {
    await writeComponentWeights(everyOpSource(), component(), join(dir, 'half'), { dtype: 'fp16', variant: 'fp16' });
    const half = await readAll(join(dir, 'half', 'diffusion_pytorch_model.fp16.safetensors'));
    expect(half.get('position_ids')!.dtype).toBe('I64');
    expect(half.get('proj.T')!.dtype).toBe('F16');
    expect(asU16(half.get('proj.T')!.bytes)).toEqual([0, 3, 1, 4, 2, 5].map((v) => f32BitsToF16Bits(new Uint32Array(new Float32Array([v]).buffer)[0])));
    // float16 input through float32 and back is the identity.
    expect(asU16(half.get('from.half')!.bytes)).toEqual([0x3c00, 0x3555, 0x7bff, 0x0001]);

    await writeComponentWeights(everyOpSource(), component(), join(dir, 'keep'), { dtype: 'keep' });
    const kept = await readAll(join(dir, 'keep', 'diffusion_pytorch_model.safetensors'));
    expect(kept.get('from.half')!.dtype).toBe('F16');
    expect(kept.get('z.a')!.dtype).toBe('F32');

    await writeComponentWeights(everyOpSource(), component(), join(dir, 'bf16'), { dtype: 'bf16' });
    const bf16 = await readAll(join(dir, 'bf16', 'diffusion_pytorch_model.safetensors'));
    expect(asU16(bf16.get('z.a')!.bytes)).toEqual([0, 0x3f80, 0x4000, 0x4040]);
  });

  it('names the weights file model.safetensors for transformers components', async () => {
    const result = await writeComponentWeights(everyOpSource(), component(EVERY_OP, 'transformers'), dir);
    expect(result.files).toEqual([join(dir, 'model.safetensors')]);
  });

  it('shards in component order with an index, and the shards hold the same bytes', async () => {
    await writeComponentWeights(everyOpSource(), component(), join(dir, 'single'));
    const single = await readAll(join(dir, 'single', 'diffusion_pytorch_model.safetensors'));

    const events: ProgressEvent[] = [];
    const out = join(dir, 'sharded');
    const result = await writeComponentWeights(everyOpSource(3), component(), out, { maxShardBytes: 64, onProgress: (e) => events.push(e) });
    const names = ['diffusion_pytorch_model-00001-of-00003.safetensors', 'diffusion_pytorch_model-00002-of-00003.safetensors', 'diffusion_pytorch_model-00003-of-00003.safetensors'];
    const indexName = 'diffusion_pytorch_model.safetensors.index.json';
    expect(result.files).toEqual([...names, indexName].map((n) => join(out, n)));
    expect((await readdir(out)).sort()).toEqual([...names, indexName].sort());

    const expectedMembers = [
      ['b.copy', 'c.squeezed', 'q', 'z.a'],
      ['k', 'proj.T', 'v'],
      ['position_ids', 'from.half'],
    ];
    for (let i = 0; i < 3; i++) {
      const shard = await readAll(join(out, names[i]));
      expect([...shard.keys()]).toEqual(expectedMembers[i]);
      for (const [name, tensor] of shard) expect(Buffer.from(tensor.bytes).equals(Buffer.from(single.get(name)!.bytes))).toBe(true);
    }

    const indexText = await readFile(join(out, indexName), 'utf8');
    const index = JSON.parse(indexText) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.metadata.total_size).toBe(160);
    expect(Object.keys(index.weight_map)).toEqual([...Object.keys(index.weight_map)].sort());
    expect(index.weight_map['position_ids']).toBe(names[2]);
    expect(index.weight_map['proj.T']).toBe(names[1]);
    expect(indexText.endsWith('}\n')).toBe(true);

    expect(events.filter((e) => e.type === 'tensor').map((e) => (e.type === 'tensor' ? e.name : ''))).toHaveLength(9);
    expect(events.filter((e) => e.type === 'file').map((e) => (e.type === 'file' ? e.path : ''))).toEqual(result.files);
    expect(events).toContainEqual({ type: 'tensor', component: 'unet', name: 'proj.T', bytes: 24 });
  });

  it('names the tensors that overflow float16, and fails on request', async () => {
    const src = new MemorySource([
      { name: 'big', dtype: 'F32', shape: [3], data: f32([1, 70000, -1e6]) },
      { name: 'ok', dtype: 'F32', shape: [2], data: f32([65504, -65504]) },
    ]);
    const plan = component([t('big', 'mid.attn.weight', { op: 'copy' }, [3]), t('ok', 'fine', { op: 'copy' }, [2])]);
    const events: ProgressEvent[] = [];
    const result = await writeComponentWeights(src, plan, join(dir, 'warn'), { dtype: 'fp16', onProgress: (e) => events.push(e) });
    expect(result.overflowTensors).toEqual(['mid.attn.weight']);
    expect(events).toContainEqual(expect.objectContaining({ type: 'warning', code: 'E_FP16_OVERFLOW', data: expect.objectContaining({ tensor: 'mid.attn.weight', count: 2 }) }));

    await expect(writeComponentWeights(src, plan, join(dir, 'strict'), { dtype: 'fp16', checkFp16Overflow: true })).rejects.toMatchObject({
      code: 'E_FP16_OVERFLOW',
      message: expect.stringContaining('mid.attn.weight'),
    });
    // float32 output never overflows.
    expect((await writeComponentWeights(src, plan, join(dir, 'fp32'), { checkFp16Overflow: true })).overflowTensors).toEqual([]);
  });

  it('removes the file being written when a tensor fails', async () => {
    const src = everyOpSource();
    const plan = component([...EVERY_OP, t('missing', 'gone', { op: 'copy' }, [1])]);
    await expect(writeComponentWeights(src, plan, dir)).rejects.toMatchObject({ code: 'E_MISSING_TENSOR' });
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses a target planned twice and a bad shard size', async () => {
    const plan = component([t('a', 'x', { op: 'copy' }, [4]), t('b', 'x', { op: 'copy' }, [2, 2])]);
    await expect(writeComponentWeights(everyOpSource(), plan, dir)).rejects.toMatchObject({ code: 'E_TARGET_COLLISION' });
    await expect(writeComponentWeights(everyOpSource(), component(), dir, { maxShardBytes: 0 })).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  it('outputDTypeFor follows the Diffusers rules', () => {
    expect(outputDTypeFor('F16')).toBe('F32');
    expect(outputDTypeFor('BF16', 'fp32')).toBe('F32');
    expect(outputDTypeFor('F64', 'fp16')).toBe('F16');
    expect(outputDTypeFor('F16', 'keep')).toBe('F16');
    expect(outputDTypeFor('I64', 'fp16')).toBe('I64');
    expect(outputDTypeFor('BOOL', 'bf16')).toBe('BOOL');
  });
});

// ---- real fixture: the tiny VAE, against Diffusers' own output ------------------------------------

const VAE_INPUT = sharedFixture('cases/vae/vae.safetensors');
const VAE_GOLDEN = sharedFixture('golden/vae/diffusers/diffusion_pytorch_model.safetensors');
const haveVae = existsSync(VAE_INPUT) && existsSync(VAE_GOLDEN);

const ATTENTION_NAMES: Record<string, string> = { q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0', norm: 'group_norm' };

/** Enough of the LDM -> Diffusers VAE renames for this two-level fixture (the real tables live in mappings/). */
function vaeTarget(key: string, levels: number): string {
  return key
    .replace(/^(encoder|decoder)\.norm_out\./, '$1.conv_norm_out.')
    .replace(/\.mid\.block_(\d)\./, (_m, i: string) => `.mid_block.resnets.${Number(i) - 1}.`)
    .replace(/\.mid\.attn_1\.(q|k|v|proj_out|norm)\./, (_m, n: string) => `.mid_block.attentions.0.${ATTENTION_NAMES[n]}.`)
    .replace(/^encoder\.down\.(\d+)\.block\./, 'encoder.down_blocks.$1.resnets.')
    .replace(/^encoder\.down\.(\d+)\.downsample\./, 'encoder.down_blocks.$1.downsamplers.0.')
    .replace(/^decoder\.up\.(\d+)\.block\./, (_m, i: string) => `decoder.up_blocks.${levels - 1 - Number(i)}.resnets.`)
    .replace(/^decoder\.up\.(\d+)\.upsample\./, (_m, i: string) => `decoder.up_blocks.${levels - 1 - Number(i)}.upsamplers.0.`)
    .replace('.nin_shortcut.', '.conv_shortcut.');
}

function vaePlan(source: TensorSource): PlannedComponent {
  const tensors = source.tensors.map((info): PlannedTensor => {
    const squeeze = /\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(info.name) && info.shape.length === 4;
    return {
      source: info.name,
      target: vaeTarget(info.name, 2),
      op: squeeze ? { op: 'squeeze' } : { op: 'copy' },
      dtype: info.dtype,
      shape: squeeze ? info.shape.slice(0, 2) : [...info.shape],
    };
  });
  return { folder: 'vae', className: 'AutoencoderKL', library: 'diffusers', tensors };
}

describe.skipIf(!haveVae)('tiny VAE fixture against the Diffusers golden', () => {
  it('writes a file byte-identical to the golden', async () => {
    const source = await openOutput(VAE_INPUT);
    try {
      const result = await writeComponentWeights(source, vaePlan(source), dir, { chunkBytes: 1000 });
      const written = await readFile(result.files[0]);
      const golden = await readFile(VAE_GOLDEN);
      expect(written.length).toBe(golden.length);
      expect(written.equals(golden)).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('with fp16, every tensor equals the golden cast to float16', async () => {
    const source = await openOutput(VAE_INPUT);
    try {
      const result = await writeComponentWeights(source, vaePlan(source), dir, { dtype: 'fp16' });
      const written = await readAll(result.files[0]);
      const golden = await readAll(VAE_GOLDEN);
      expect([...written.keys()].sort()).toEqual([...golden.keys()].sort());
      for (const [name, g] of golden) {
        const w = written.get(name)!;
        expect(w.dtype).toBe('F16');
        expect(w.shape).toEqual(g.shape);
        expect(Buffer.from(w.bytes).equals(Buffer.from(castBytes(g.bytes, 'F32', 'F16').bytes))).toBe(true);
      }
    } finally {
      await source.close();
    }
  });
});
