/**
 * Standalone VAE scaling_factor: each evidence path in its order of authority (flags, metadata,
 * file name, yaml, default), the low-confidence default with its warning, and the decision in
 * convert's result and --json output.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { convert } from '../../src/convert.js';
import { decideVaeScaling } from '../../src/diffusers/vae-scaling.js';
import { readOriginalConfig } from '../../src/mapping/original-config.js';
import { sharedFixture } from '../helpers/paths.js';

const VAE = sharedFixture('cases/vae/vae.safetensors');
const VAE_YAML = sharedFixture('cases/vae/original_config.yaml');

describe('decideVaeScaling', () => {
  it('--scaling-factor wins over everything, --family is noted as ignored', () => {
    const d = decideVaeScaling({ scalingFactor: 0.5, family: 'sdxl', metadata: { 'modelspec.architecture': 'stable-diffusion-xl-v1-base' }, fileName: 'sdxl_vae.safetensors' });
    expect(d).toMatchObject({ value: 0.5, family: 'custom', confidence: 'high' });
    expect(d.evidence.map((e) => e.what)).toEqual(['flag --scaling-factor', 'flag --family']);
    expect(decideVaeScaling({ scalingFactor: 0.13025 }).family).toBe('sdxl');
  });

  it('--family sd|sdxl wins over metadata and name', () => {
    expect(decideVaeScaling({ family: 'sdxl', fileName: 'vae-ft-mse-840000-ema-pruned.safetensors' })).toMatchObject({ value: 0.13025, family: 'sdxl', confidence: 'high' });
    expect(decideVaeScaling({ family: 'sd', metadata: { 'modelspec.architecture': 'stable-diffusion-xl-v1-base/vae' } })).toMatchObject({ value: 0.18215, confidence: 'high' });
  });

  it('metadata: modelspec.architecture, then ss_base_model_version', () => {
    const xl = decideVaeScaling({ metadata: { 'modelspec.architecture': 'stable-diffusion-xl-v1-base/vae' }, fileName: 'sd15-vae.safetensors' });
    expect(xl).toMatchObject({ value: 0.13025, family: 'sdxl', confidence: 'high' });
    expect(xl.evidence[0].what).toBe('metadata modelspec.architecture');
    expect(decideVaeScaling({ metadata: { 'modelspec.architecture': 'stable-diffusion-v1/vae' } })).toMatchObject({ value: 0.18215, confidence: 'high' });
    expect(decideVaeScaling({ metadata: { ss_base_model_version: 'sdxl_base_v1-0' } })).toMatchObject({ value: 0.13025, confidence: 'medium' });
    // A metadata value that says nothing falls through to the next evidence.
    expect(decideVaeScaling({ metadata: { format: 'pt', 'modelspec.architecture': 'custom' }, fileName: 'sdxl.vae.safetensors' }).evidence[0].what).toBe('file name');
  });

  it.each([
    ['sdxl_vae.safetensors', 0.13025],
    ['sdxl-vae-fp16-fix.safetensors', 0.13025],
    ['my-xl-vae.safetensors', 0.13025],
    ['vae-ft-mse-840000-ema-pruned.safetensors', 0.18215],
    ['sd-vae-ft-ema.ckpt', 0.18215],
    ['kl-f8-anime2.ckpt', 0.18215],
    ['sd15_vae.safetensors', 0.18215],
  ])('file name %s -> %s (medium)', (name, value) => {
    const d = decideVaeScaling({ fileName: `/models/${name}` });
    expect(d).toMatchObject({ value, confidence: 'medium' });
    expect(d.evidence[0]).toMatchObject({ what: 'file name', found: name });
  });

  it('the yaml scale_factor decides when the file says nothing', async () => {
    const oc = await readOriginalConfig(VAE_YAML);
    const d = decideVaeScaling({ fileName: 'vae.safetensors', originalConfig: oc });
    expect(d).toMatchObject({ value: 0.18215, confidence: 'medium' });
    expect(d.evidence[0].what).toBe('original config model.params.scale_factor');
  });

  it('the default is SD with LOW confidence and a warning saying how to override', () => {
    const d = decideVaeScaling({ fileName: 'vae.safetensors', metadata: { format: 'pt' } });
    expect(d).toMatchObject({ value: 0.18215, family: 'sd', confidence: 'low' });
    expect(d.warning).toMatch(/--family sdxl/);
    expect(d.warning).toMatch(/--scaling-factor/);
  });
});

describe('convert reports the decision', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-vae-scaling-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('the default warns and writes 0.18215', async () => {
    const r = await convert(VAE, join(work, 'default'));
    expect(r.vaeScaling).toMatchObject({ value: 0.18215, confidence: 'low' });
    expect(r.warnings.some((w) => w.includes('--family sdxl'))).toBe(true);
    expect(JSON.parse(await readFile(join(work, 'default', 'config.json'), 'utf8')).scaling_factor).toBe(0.18215);
  });

  it('--family sdxl through the CLI: config and --json vaeScaling', async () => {
    const io = memoryIO();
    const out = join(work, 'xl');
    expect(await main([VAE, out, '--family', 'sdxl', '--json'], io)).toBe(0);
    const json = JSON.parse(io.out);
    expect(json.vaeScaling).toMatchObject({ value: 0.13025, family: 'sdxl', confidence: 'high' });
    expect(json.vaeScaling.evidence[0].what).toBe('flag --family');
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).scaling_factor).toBe(0.13025);
  });

  it('--scaling-factor through the CLI; a bad value is a usage error', async () => {
    const io = memoryIO();
    const out = join(work, 'custom');
    expect(await main([VAE, out, '--scaling-factor', '0.25', '--json'], io)).toBe(0);
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).scaling_factor).toBe(0.25);
    expect(await main([VAE, join(work, 'bad'), '--scaling-factor', '-1'], memoryIO())).toBe(2);
  });

  it('a pipeline checkpoint has no vaeScaling field', async () => {
    const r = await convert(sharedFixture('cases/sd1/model.ckpt'), join(work, 'sd1'));
    expect(r.vaeScaling).toBeUndefined();
  });
});
