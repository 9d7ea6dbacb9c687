/**
 * `ckpt2diffusers to-single-file DIR OUT` through main(argv, memoryIO()): the written file, the
 * --json result, exit codes, refusal to overwrite without --force, atomic writing (nothing but
 * OUT appears; a failure leaves no temp file), flags.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { sharedFixture } from '../helpers/paths.js';

async function run(...argv: string[]) {
  const io = memoryIO();
  const status = await main(argv, io);
  return { status, out: io.out, err: io.err };
}

let work: string;
let sd1: string;
let vae: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-cli-single-'));
  sd1 = join(work, 'sd1');
  vae = join(work, 'vae');
  await convert(sharedFixture('cases/sd1/model.ckpt'), sd1);
  await convert(sharedFixture('cases/vae/vae.safetensors'), vae, { vaeFamily: 'sdxl' });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

let serial = 0;
async function fresh(): Promise<string> {
  const dir = join(work, `t${++serial}`);
  await mkdir(dir);
  return dir;
}

describe('to-single-file', () => {
  it('writes the file atomically and prints a summary', async () => {
    const dir = await fresh();
    const out = join(dir, 'model.safetensors');
    const r = await run('to-single-file', sd1, out, '-q');
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/sd1 single file/);
    expect(r.out).toMatch(/not restored/);
    expect(await readdir(dir)).toEqual(['model.safetensors']);
    const s = await openCheckpoint(out);
    try {
      expect(s.metadata['modelspec.architecture']).toBe('stable-diffusion-v1');
      expect(s.get('model.diffusion_model.input_blocks.0.0.weight')).toBeDefined();
      expect(s.get('cond_stage_model.transformer.text_model.embeddings.position_ids')?.dtype).toBe('I64');
    } finally {
      await s.close();
    }
  });

  it('--json: schema, family, counts, added and notRestored', async () => {
    const out = join(await fresh(), 'model.safetensors');
    const r = await run('to-single-file', sd1, out, '--json', '--half');
    expect(r.status).toBe(0);
    const json = JSON.parse(r.out);
    expect(json).toMatchObject({ schema: 1, family: 'sd1', output: out, predictionType: 'epsilon' });
    expect(json.tensors).toBeGreaterThan(300);
    expect(json.notRestored.map((n: { source: string }) => n.source)).toContain('betas');
    const s = await openCheckpoint(out);
    try {
      expect(s.get('model.diffusion_model.out.2.weight')?.dtype).toBe('F16');
    } finally {
      await s.close();
    }
  });

  it('refuses to overwrite an existing OUT without --force (exit 1), replaces it with --force', async () => {
    const dir = await fresh();
    const out = join(dir, 'model.safetensors');
    await writeFile(out, 'keep me');
    const r = await run('to-single-file', sd1, out, '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/error\[E_OUTPUT_EXISTS\]/);
    expect(await readFile(out, 'utf8')).toBe('keep me');
    expect((await run('to-single-file', sd1, out, '-q', '--force')).status).toBe(0);
    expect((await readFile(out)).length).toBeGreaterThan(1000);
    expect(await readdir(dir)).toEqual(['model.safetensors']);
  });

  it('a folder that is no Diffusers folder fails with a code and leaves nothing behind', async () => {
    const dir = await fresh();
    const empty = join(dir, 'empty');
    await mkdir(empty);
    const r = await run('to-single-file', empty, join(dir, 'x.safetensors'), '-q');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/error\[E_UNKNOWN_FAMILY\]/);
    expect(await readdir(dir)).toEqual(['empty']);
  });

  it('a folder that lacks a component of the family fails (wrong --family) without a temp file', async () => {
    const dir = await fresh();
    const r = await run('to-single-file', sd1, join(dir, 'x.safetensors'), '-q', '--family', 'sdxl-base');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/error\[E_MISSING_TENSOR\].*text_encoder_2/);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a standalone VAE folder: top-level names, SDXL scaling in the metadata', async () => {
    const out = join(await fresh(), 'vae.safetensors');
    const r = await run('to-single-file', vae, out, '--json');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.out).metadata['modelspec.architecture']).toBe('stable-diffusion-xl-v1-base/vae');
    // Converting it forward again decides SDXL from that metadata.
    const again = await convert(out, join(work, 'vae-again'));
    expect(again.vaeScaling).toMatchObject({ value: 0.13025, confidence: 'high' });
    expect(again.vaeScaling?.evidence[0].what).toBe('metadata modelspec.architecture');
  });

  it('usage errors exit 2', async () => {
    expect((await run('to-single-file', sd1)).status).toBe(2);
    expect((await run('to-single-file', sd1, join(work, 'y.safetensors'), '--dtype', 'fp8')).status).toBe(2);
    expect((await run('to-single-file', sd1, join(work, 'y.safetensors'), '--family', 'nope')).status).toBe(2);
  });
});
