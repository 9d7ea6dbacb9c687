/**
 * `verifyWeights`: converted folders re-read tensor by tensor against their source checkpoints:
 * float32 and float16 outputs, shards, EMA inferred either way, the Diffusers-written golden
 * folder, and tampered folders (one flipped byte, an edited config key, a missing shard, an
 * unplanned tensor), each reported by name.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { readSafetensorsHeader } from '../../src/formats/safetensors.js';
import { FileSource } from '../../src/io/file-source.js';
import { compareStreams } from '../../src/verify/streams.js';
import { jsonDifferences, verifyWeights } from '../../src/verify/weights.js';
import { sharedFixture } from '../helpers/paths.js';

const SD1_PIPE = sharedFixture('cases/sd1-pipe/model-fp16.ckpt');
const SD1_EMA = sharedFixture('cases/sd1/model-fp16-ema.ckpt');
const SD2 = sharedFixture('cases/sd2/model-fp16.safetensors');

const tmp = mkdtempSync(join(tmpdir(), 'c2d-verify-w-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let pipe: string;
beforeAll(async () => {
  pipe = join(tmp, 'sd1-pipe');
  await convert(SD1_PIPE, pipe);
});

async function* chunked(bytes: Uint8Array, sizes: number[]): AsyncIterable<Uint8Array> {
  let at = 0;
  let i = 0;
  while (at < bytes.length) {
    const n = sizes[i++ % sizes.length];
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

describe('compareStreams', () => {
  const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
  it('matches whatever the chunk boundaries', async () => {
    expect(await compareStreams(chunked(data, [3, 100]), chunked(data, [64]), 4)).toEqual({ equal: true, bytes: 1000 });
  });
  it('finds the first differing byte and the element holding it', async () => {
    const other = data.slice();
    other[517] ^= 1;
    const r = await compareStreams(chunked(data, [10]), chunked(other, [33]), 4);
    expect(r).toMatchObject({ equal: false, offset: 517, reason: 'bytes' });
  });
  it('reports a length difference', async () => {
    expect(await compareStreams(chunked(data, [10]), chunked(data.subarray(0, 990), [10]))).toMatchObject({ equal: false, offset: 990, reason: 'length' });
  });
});

describe('verifyWeights', () => {
  it('accepts a fresh conversion: every tensor, key and config', async () => {
    const r = await verifyWeights(pipe, SD1_PIPE);
    expect(r.ok).toBe(true);
    expect(r.problems).toBe(0);
    expect(r.components.map((c) => [c.folder, c.matched, c.tensors])).toEqual([
      ['unet', 284, 284],
      ['vae', 176, 176],
      ['text_encoder', 36, 36],
    ]);
    expect(r.account.mapped + r.account.dropped).toBe(r.account.sourceKeys);
    expect(r.account.unknown).toEqual([]);
    expect(r.configs.files).toBeGreaterThanOrEqual(9);
    expect(r.configs.differences).toEqual([]);
    expect(r.dtype).toBe('fp32');
    expect(r.scheduler).toBe('pndm');
  });

  it('accepts the folder Diffusers wrote from the same checkpoint (only the stripped tokenizer files differ)', async () => {
    const r = await verifyWeights(sharedFixture('golden/sd1-pipe/diffusers'), SD1_PIPE);
    expect(r.components.every((c) => c.ok)).toBe(true);
    expect(r.configs.differences.map((d) => d.file).sort()).toEqual(['tokenizer/merges.txt', 'tokenizer/vocab.json']);
  });

  it('checks float16 variants written in shards, inferring the dtype', async () => {
    const out = join(tmp, 'sd2-fp16');
    await convert(SD2, out, { dtype: 'fp16', variant: 'fp16', maxShardSize: 400_000 });
    const shards = (await readdir(join(out, 'unet'))).filter((f) => f.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(1);
    const r = await verifyWeights(out, SD2);
    expect(r.problems).toBe(0);
    expect(r.dtype).toBe('fp16');
    expect(r.components.find((c) => c.folder === 'unet')?.variants).toEqual(['fp16']);
    expect(r.components.find((c) => c.folder === 'unet')?.files.length).toBe(shards.length);

    // A missing shard is named, with each tensor it held.
    await rm(join(out, 'unet', shards[1]));
    const broken = await verifyWeights(out, SD2);
    expect(broken.ok).toBe(false);
    expect(broken.components.find((c) => c.folder === 'unet')?.problems[0]).toContain(`${shards[1]}: listed by`);
  });

  it('infers whether the UNet came from the EMA weights', async () => {
    const plain = join(tmp, 'ema-no');
    const ema = join(tmp, 'ema-yes');
    await convert(SD1_EMA, plain);
    await convert(SD1_EMA, ema, { extractEma: true });
    const a = await verifyWeights(plain, SD1_EMA);
    const b = await verifyWeights(ema, SD1_EMA);
    expect([a.ok, a.extractEma, b.ok, b.extractEma]).toEqual([true, false, true, true]);
    expect(b.inferred).toContain('EMA extracted (UNet bytes)');
    // Told the wrong thing, it names the differing tensors.
    const wrong = await verifyWeights(ema, SD1_EMA, { extractEma: false });
    expect(wrong.ok).toBe(false);
    expect(wrong.components.find((c) => c.folder === 'unet')?.problems[0]).toMatch(/^\S+: element \d+ is .* \(expected .* from model\.diffusion_model\./);
  });

  it('names a tensor whose bytes changed, and a config key that changed', async () => {
    const out = join(tmp, 'tampered');
    await convert(SD1_PIPE, out);
    const file = join(out, 'vae', 'diffusion_pytorch_model.safetensors');
    const src = await FileSource.open(file);
    const header = await readSafetensorsHeader(src);
    await src.close();
    const victim = header.tensors.find((t) => t.name === 'decoder.conv_in.weight');
    expect(victim).toBeDefined();
    const bytes = await readFile(file);
    const at = header.dataStart + (victim?.dataOffsets[0] ?? 0) + 4 * 10;
    bytes[at + 3] ^= 0x40;
    await writeFile(file, bytes);
    const cfgPath = join(out, 'unet', 'config.json');
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>;
    cfg.cross_attention_dim = 768;
    await writeFile(cfgPath, JSON.stringify(cfg, null, 2));

    const r = await verifyWeights(out, SD1_PIPE);
    expect(r.ok).toBe(false);
    const vae = r.components.find((c) => c.folder === 'vae');
    expect(vae?.problemCount).toBe(1);
    expect(vae?.problems[0]).toMatch(/^decoder\.conv_in\.weight: element 10 is .* \(expected .* from first_stage_model\.decoder\.conv_in\.weight cast to F32, copy\)$/);
    expect(r.configs.differences).toEqual([{ file: 'unet/config.json', key: 'cross_attention_dim', expected: 32, found: 768 }]);
  });

  it('reports JSON differences by dotted key', () => {
    expect(jsonDifferences({ a: 1, b: { c: [1, 2], d: 'x' } }, { a: 1, b: { c: [1, 3] }, e: null }, 'f.json')).toEqual([
      { file: 'f.json', key: 'b.c', expected: [1, 2], found: [1, 3] },
      { file: 'f.json', key: 'b.d', expected: 'x' },
      { file: 'f.json', key: 'e', found: null },
    ]);
  });
});
