/**
 * Family detection from the probe data: each shared case, the in-channel variants (built by
 * changing conv_in's shape), a UNet-only file decided by width alone, metadata conflicts, and
 * files no family describes.
 */
import { describe, expect, test } from 'vitest';
import { isCkptError, type CkptError } from '../../src/errors.js';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { loadMappings } from '../../src/mapping/load.js';
import { planConversion } from '../../src/mapping/plan.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import type { Mappings } from '../../src/mapping/spec.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { caseTensors, tensorInfo } from './case-data.js';

const CONV_IN = 'model.diffusion_model.input_blocks.0.0.weight';
const MID_TO_K = 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight';

function withShape(tensors: readonly TensorInfo[], name: string, shape: number[]): TensorInfo[] {
  return tensors.map((t) => (t.name === name ? tensorInfo(name, t.dtype, shape) : t));
}

function without(tensors: readonly TensorInfo[], prefix: string): TensorInfo[] {
  return tensors.filter((t) => !t.name.startsWith(prefix));
}

function caught(fn: () => unknown): CkptError {
  try {
    fn();
  } catch (e) {
    if (isCkptError(e)) return e;
    throw e;
  }
  throw new Error('expected a CkptError');
}

describe('shared cases', () => {
  test.each([
    ['sd1', 'sd1', 'cond_stage_model.transformer.'],
    ['sd1-pipe', 'sd1', 'cond_stage_model.transformer.'],
    ['sd2', 'sd2', 'cond_stage_model.model.'],
    ['vae', 'vae', 'encoder.conv_in.'],
  ])('%s is %s, with evidence', (name, family, decisive) => {
    const d = detectFamily(caseTensors(name));
    expect(d.family).toBe(family);
    expect(d.evidence.length).toBeGreaterThan(2);
    expect(d.evidence.some((e) => e.what.includes(decisive))).toBe(true);
    for (const e of d.evidence) expect(e.what && e.found && e.implies).toBeTruthy();
    expect(d.confidence).toBe(family === 'vae' ? 'medium' : 'high');
  });

  test('sd1 evidence names the input channels, the text encoder and the conv proj_in', () => {
    const d = detectFamily(caseTensors('sd1'));
    expect(d.evidence).toContainEqual({ what: `${CONV_IN} shape[1]`, found: '4', implies: '4 UNet input channels: text-to-image' });
    expect(d.evidence.find((e) => e.what === 'keys cond_stage_model.transformer.*')?.implies).toMatch(/CLIP ViT-L/);
    expect(d.evidence.find((e) => e.what.endsWith('proj_in.weight rank'))).toMatchObject({ found: '4-D' });
  });

  test('sdxl-base is told from SD1/SD2 by its SGM conditioner (more in sdxl.test.ts)', () => {
    const d = detectFamily(caseTensors('sdxl-base'));
    expect(d.family).toBe('sdxl-base');
    expect(d.evidence.find((e) => e.what === 'keys conditioner.embedders.1.model.*')?.found).toBe('30 keys');
  });
});

describe('variants by UNet input channels', () => {
  test.each<[string, number, FamilyId]>([
    ['sd1', 9, 'sd1-inpaint'],
    ['sd1', 8, 'sd1-pix2pix'],
    ['sd2', 9, 'sd2-inpaint'],
    ['sd2', 5, 'sd2-depth'],
  ])('%s with %i input channels is %s', (name, channels, family) => {
    const tensors = withShape(caseTensors(name), CONV_IN, [32, channels, 3, 3]);
    const d = detectFamily(tensors);
    expect(d.family).toBe(family);
    expect(d.evidence[0]).toMatchObject({ found: String(channels) });
    const plan = planConversion(tensors, d);
    const convIn = plan.components.find((c) => c.folder === 'unet')!.tensors.find((t) => t.target === 'conv_in.weight')!;
    expect(convIn.shape).toEqual([32, channels, 3, 3]);
  });

  test('sd2-depth drops the bundled depth estimator', () => {
    const tensors = [...withShape(caseTensors('sd2'), CONV_IN, [32, 5, 3, 3]), tensorInfo('depth_model.model.pretrained.act_postprocess3.0.project.0.bias', 'F32', [256])];
    const d = detectFamily(tensors);
    expect(d).toMatchObject({ family: 'sd2-depth', confidence: 'high' });
    const plan = planConversion(tensors, d);
    expect(plan.account.dropped.find((x) => x.source.startsWith('depth_model.'))?.rule).toBe('depth-estimator');
  });

  test('an unsupported channel count matches no family', () => {
    const e = caught(() => detectFamily(withShape(caseTensors('sd1'), CONV_IN, [32, 7, 3, 3])));
    expect(e.code).toBe('E_UNKNOWN_FAMILY');
    expect(e.message).toMatch(/shape\[1\]: 7/);
  });
});

describe('other layouts', () => {
  test('a UNet-only file with cross-attention width 1024 is sd2', () => {
    const tensors = withShape(without(caseTensors('sd2'), 'cond_stage_model.'), MID_TO_K, [32, 1024]);
    const d = detectFamily(tensors);
    expect(d).toMatchObject({ family: 'sd2', confidence: 'high' });
    expect(d.evidence).toContainEqual(expect.objectContaining({ found: '1024' }));
  });

  test('a UNet-only file with width 768 is sd1', () => {
    const tensors = withShape(without(caseTensors('sd1'), 'cond_stage_model.'), MID_TO_K, [32, 768]);
    expect(detectFamily(tensors).family).toBe('sd1');
  });

  test('SD1 text encoder with a linear proj_in is sd1 with medium confidence', () => {
    const tensors = withShape(caseTensors('sd1'), 'model.diffusion_model.middle_block.1.proj_in.weight', [32, 32]);
    expect(detectFamily(tensors)).toMatchObject({ family: 'sd1', confidence: 'medium' });
  });

  test('a VAE extracted from a full checkpoint (first_stage_model.* only) is a standalone vae', () => {
    const tensors = caseTensors('sd1').filter((t) => t.name.startsWith('first_stage_model.'));
    const d = detectFamily(tensors);
    expect(d.family).toBe('vae');
    const plan = planConversion(tensors, d);
    expect(plan.components.map((c) => [c.folder, c.sourcePrefix, c.tensors.length])).toEqual([['vae', 'first_stage_model.', 120]]);
  });

  test('a VAE training checkpoint drops its loss modules', () => {
    const tensors = [...caseTensors('vae'), tensorInfo('loss.discriminator.main.0.weight', 'F32', [64, 3, 4, 4]), tensorInfo('loss.logvar', 'F32', [])];
    const plan = planConversion(tensors, detectFamily(tensors));
    expect(plan.account.dropped.map((d) => d.rule)).toEqual(['vae-training-loss', 'vae-training-loss']);
  });
});

describe('metadata', () => {
  test('a matching modelspec.architecture is recorded as evidence', () => {
    const d = detectFamily(caseTensors('sd1'), { 'modelspec.architecture': 'stable-diffusion-v1' });
    expect(d.confidence).toBe('high');
    expect(d.evidence).toContainEqual({ what: 'metadata modelspec.architecture', found: 'stable-diffusion-v1', implies: 'SAI model spec says SD1' });
  });

  test('a conflicting modelspec.architecture lowers the confidence', () => {
    const d = detectFamily(caseTensors('sd1'), { 'modelspec.architecture': 'stable-diffusion-v2-768-v' });
    expect(d).toMatchObject({ family: 'sd1', confidence: 'low' });
    expect(d.evidence.at(-1)?.implies).toMatch(/^conflicts with/);
  });
});

describe('no family', () => {
  test('unrelated keys: the message shows what was seen', () => {
    const tensors = [tensorInfo('layers.0.weight', 'F32', [4, 4]), tensorInfo('layers.0.bias', 'F32', [4]), tensorInfo('head.weight', 'F32', [2, 4])];
    const e = caught(() => detectFamily(tensors));
    expect(e.code).toBe('E_UNKNOWN_FAMILY');
    expect(e.message).toContain('layers.0.* (2)');
    expect(e.message).toContain('head.weight');
    expect((e.data?.nearMisses as unknown[]).length).toBe(3);
  });

  test('an empty file', () => {
    expect(caught(() => detectFamily([])).code).toBe('E_UNKNOWN_FAMILY');
  });

  test('overlapping family data is reported, not resolved by order', () => {
    const real = loadMappings();
    const sd1 = real.families.get('sd1')!;
    const overlapping: Mappings = { ...real, families: new Map([...real.families, ['sd1-pix2pix', { ...sd1, family: 'sd1-pix2pix' }]]) };
    const e = caught(() => detectFamily(caseTensors('sd1'), {}, overlapping));
    expect(e.code).toBe('E_UNKNOWN_FAMILY');
    expect([...(e.data?.matches as string[])].sort()).toEqual(['sd1', 'sd1-pix2pix']);
  });
});
