import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prepareOutputFolder, writeTextFile } from '../../src/diffusers/output-folder.js';
import { writeComponentWeights } from '../../src/diffusers/write-component.js';
import { iotaF32, MemorySource } from './memory-source.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'output-folder-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('prepareOutputFolder', () => {
  it('writes into a sibling temp folder and renames it into place on commit', async () => {
    const outDir = join(root, 'nested', 'model');
    const out = await prepareOutputFolder(outDir);
    expect(dirname(out.tempDir)).toBe(dirname(outDir));
    expect(out.tempDir.startsWith(`${outDir}.partial-`)).toBe(true);
    await writeTextFile(out.tempDir, 'model_index.json', '{}\n');
    await writeTextFile(out.tempDir, 'unet/config.json', '{"a": 1}\n');
    expect(existsSync(outDir)).toBe(false);
    await out.commit();
    expect(await readFile(join(outDir, 'unet', 'config.json'), 'utf8')).toBe('{"a": 1}\n');
    expect(await readdir(join(root, 'nested'))).toEqual(['model']);
    await out.abort(); // no-op after commit
    expect(existsSync(outDir)).toBe(true);
  });

  it('refuses an existing non-empty folder with E_OUTPUT_EXISTS and the --force hint', async () => {
    const outDir = join(root, 'model');
    await mkdir(outDir);
    await writeFile(join(outDir, 'keep.txt'), 'old');
    const err = await prepareOutputFolder(outDir).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_OUTPUT_EXISTS', hint: expect.stringContaining('--force') });
    expect(await readdir(root)).toEqual(['model']);
  });

  it('refuses a file at the output path, even with force', async () => {
    const outPath = join(root, 'model.ckpt');
    await writeFile(outPath, 'weights');
    await expect(prepareOutputFolder(outPath, { force: true })).rejects.toMatchObject({ code: 'E_OUTPUT_EXISTS' });
    expect(await readFile(outPath, 'utf8')).toBe('weights');
  });

  it('accepts an existing empty folder', async () => {
    const outDir = join(root, 'model');
    await mkdir(outDir);
    const out = await prepareOutputFolder(outDir);
    await writeTextFile(out.tempDir, 'a.txt', 'new');
    await out.commit();
    expect(await readdir(outDir)).toEqual(['a.txt']);
    expect(await readdir(root)).toEqual(['model']);
  });

  it('replaces an existing folder with force, removing the old one only afterwards', async () => {
    const outDir = join(root, 'model');
    await mkdir(join(outDir, 'unet'), { recursive: true });
    await writeFile(join(outDir, 'unet', 'old.bin'), 'old');
    const out = await prepareOutputFolder(outDir, { force: true });
    expect(existsSync(join(outDir, 'unet', 'old.bin'))).toBe(true);
    await writeTextFile(out.tempDir, 'model_index.json', '{}');
    await out.commit();
    expect(await readdir(outDir)).toEqual(['model_index.json']);
    expect(await readdir(root)).toEqual(['model']);
  });

  it('refuses to force-replace a folder that holds the input', async () => {
    const outDir = join(root, 'models');
    await mkdir(outDir);
    await writeFile(join(outDir, 'in.ckpt'), 'x');
    await expect(prepareOutputFolder(outDir, { force: true, keep: [join(outDir, 'in.ckpt')] })).rejects.toMatchObject({ code: 'E_OUTPUT_EXISTS' });
    expect(await readdir(root)).toEqual(['models']);
  });

  it('a failure mid-write leaves neither the output folder nor the temp folder after abort', async () => {
    const outDir = join(root, 'model');
    const out = await prepareOutputFolder(outDir);
    const source = new MemorySource([iotaF32('w', [4, 4])]);
    const plan = {
      folder: 'unet' as const,
      className: 'UNet2DConditionModel',
      library: 'diffusers' as const,
      tensors: [
        { source: 'w', target: 'a', op: { op: 'copy' as const }, dtype: 'F32' as const, shape: [4, 4] },
        { source: 'missing', target: 'b', op: { op: 'copy' as const }, dtype: 'F32' as const, shape: [4] },
      ],
    };
    await writeTextFile(out.tempDir, 'model_index.json', '{}');
    await expect(writeComponentWeights(source, plan, join(out.tempDir, 'unet'))).rejects.toMatchObject({ code: 'E_MISSING_TENSOR' });
    await out.abort();
    expect(await readdir(root)).toEqual([]);
    await expect(out.commit()).rejects.toMatchObject({ code: 'E_IO' });
  });

  it('commit refuses a folder that appeared meanwhile unless forced', async () => {
    const outDir = join(root, 'model');
    const out = await prepareOutputFolder(outDir);
    await mkdir(outDir);
    await writeFile(join(outDir, 'other.txt'), 'someone else');
    await expect(out.commit()).rejects.toMatchObject({ code: 'E_OUTPUT_EXISTS' });
    await out.abort();
    expect(await readdir(root)).toEqual(['model']);
    expect(await readFile(join(outDir, 'other.txt'), 'utf8')).toBe('someone else');
  });
});

describe('writeTextFile', () => {
  it('refuses paths that leave the folder', async () => {
    await expect(writeTextFile(root, '../x.json', '{}')).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(writeTextFile(root, '/etc/x.json', '{}')).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(writeTextFile(root, 'a/../../x.json', '{}')).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  it('returns the path it wrote', async () => {
    const path = await writeTextFile(root, 'scheduler/scheduler_config.json', 'text');
    expect(path).toBe(join(root, 'scheduler', 'scheduler_config.json'));
    expect(await readFile(path, 'utf8')).toBe('text');
  });
});
