/**
 * An SDXL refiner folder (text_encoder_2 only, pooled text embeddings as wide as its projection):
 * its UNet exports with that width, and the ONNX cache is reused on the next run instead of being
 * exported again because a text_encoder it never had is "missing".
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { ensureOnnxFolder } from '../../src/verify/onnx-cache.js';
import { repoRoot } from '../helpers/paths.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'c2d-refiner-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('SDXL refiner ONNX cache', () => {
  it('exports the refiner as it is, then reuses the cache', async () => {
    const out = join(dir, 'refiner');
    await convert(join(repoRoot, 'fixtures', 'families', 'sdxl-refiner.safetensors'), out);
    const first = await ensureOnnxFolder(out);
    expect(first.origin).toBe('exported');
    const second = await ensureOnnxFolder(out);
    expect(second.origin).toBe('cache');
    expect(second.dir).toBe(first.dir);
  }, 120_000);
});
