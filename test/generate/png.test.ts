import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';
import { decodePng, encodePng, imageToRgb8, readPng, writePng } from '../../src/generate/png.js';
import { goldenIndex, readGoldenRun } from './golden-run.js';

const dir = mkdtempSync(join(tmpdir(), 'c2d-png-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('PNG output', () => {
  it('rounds like numpy_to_pil: float32 x * 255, half to even', () => {
    const img = imageToRgb8({ data: Float32Array.from([0, 1, 0.5, 0.2, 1 / 255, 0.998]), shape: [1, 1, 2, 3] });
    // 0.5 * 255 = 127.5 -> 128 (even); 0.2 * 255 = 51.000001 -> 51; 0.998 * 255 = 254.49 -> 254
    expect(Array.from(img.data)).toEqual([0, 255, 128, 51, 1, 254]);
  });

  it('round-trips a golden image through a PNG file pixel for pixel', async () => {
    const run = goldenIndex().runs[0];
    const g = await readGoldenRun(run);
    const t = g.get('image');
    const image = { data: t?.data as Float32Array, shape: t?.shape as number[] };
    const path = join(dir, 'out.png');
    await writePng(path, image);
    const back = await readPng(path);
    expect([back.width, back.height]).toEqual([64, 64]);
    const f = image.data;
    let off = 0;
    for (let i = 0; i < f.length; i++) {
      const x = Math.fround(f[i] * 255);
      const r = Math.round(x);
      const want = Math.abs(x % 1) === 0.5 && r % 2 ? r - 1 : r;
      if (back.data[i] !== want) off++;
    }
    expect(off).toBe(0);
    // 8-bit RGB without alpha
    const png = PNG.sync.read(encodePng(back));
    expect(png.width).toBe(64);
  });

  it('decodes RGBA PNGs to RGB and refuses non-PNG bytes', () => {
    const rgba = new PNG({ width: 2, height: 1 });
    rgba.data = Buffer.from([10, 20, 30, 40, 50, 60, 70, 0]);
    const img = decodePng(PNG.sync.write(rgba));
    expect(Array.from(img.data)).toEqual([10, 20, 30, 50, 60, 70]);
    expect(() => decodePng(new Uint8Array([1, 2, 3]))).toThrow(/PNG/);
  });
});
