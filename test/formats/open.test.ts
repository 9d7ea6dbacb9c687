import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openCheckpoint } from '../../src/formats/open.js';
import { sharedFixture } from '../helpers/paths.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-open-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('openCheckpoint', () => {
  test.each([
    ['cases/vae/vae.ckpt', 'torch-zip'],
    ['cases/vae/vae-legacy.ckpt', 'torch-legacy'],
    ['cases/vae/vae.safetensors', 'safetensors'],
  ])('opens %s with the %s reader', async (rel, format) => {
    const src = await openCheckpoint(sharedFixture(rel));
    try {
      expect(src.format).toBe(format);
      expect(src.get('encoder.conv_in.weight')).toMatchObject({ dtype: 'F32', shape: [32, 3, 3, 3] });
    } finally {
      await src.close();
    }
  });

  test('the three readers agree on the bytes of a tensor', async () => {
    const read = async (rel: string) => {
      const src = await openCheckpoint(sharedFixture(rel));
      try {
        return Buffer.from(await src.readTensor('decoder.conv_out.weight'));
      } finally {
        await src.close();
      }
    };
    const zip = await read('cases/vae/vae.ckpt');
    expect(zip.equals(await read('cases/vae/vae-legacy.ckpt'))).toBe(true);
    expect(zip.equals(await read('cases/vae/vae.safetensors'))).toBe(true);
  });

  test('a missing path is E_IO', async () => {
    await expect(openCheckpoint(join(dir, 'nope.ckpt'))).rejects.toMatchObject({ code: 'E_IO' });
  });

  test('an unrecognised file is E_UNKNOWN_FORMAT', async () => {
    const path = join(dir, 'page.ckpt');
    await writeFile(path, '<!DOCTYPE html><html></html>');
    await expect(openCheckpoint(path)).rejects.toMatchObject({ code: 'E_UNKNOWN_FORMAT' });
  });

  test('a broken torch zip is reported with its zip error', async () => {
    const path = join(dir, 'cut.ckpt');
    await writeFile(path, Uint8Array.from([0x50, 0x4b, 3, 4, ...new Array(100).fill(0)]));
    await expect(openCheckpoint(path)).rejects.toMatchObject({ code: 'E_ZIP_EOCD' });
  });
});
