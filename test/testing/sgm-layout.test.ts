/**
 * The SGM (SDXL) state-dict layout generator: with the sdxl-base fixture's parameters it must give
 * that file's key list exactly (names, shapes, order), which is what makes the synthetic refiner /
 * inpainting lists and the real-size SDXL_BASE_LAYOUT trustworthy.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  SDXL_BASE_LAYOUT,
  SDXL_REFINER_LAYOUT,
  sgmCheckpointTensors,
  sgmLayout,
  type LayoutTensor,
  type SgmParams,
} from '../../src/testing/ldm-layout.js';
import { sharedFixture } from '../helpers/paths.js';

interface SgmCaseJson extends SgmParams {
  readonly state_dict_keys: Record<string, [string, number[]]>;
}

function readSdxlCase(): SgmCaseJson {
  return JSON.parse(readFileSync(sharedFixture('cases/sdxl-base/case.json'), 'utf8')) as SgmCaseJson;
}

function count(tensors: readonly LayoutTensor[], prefix: string): number {
  return tensors.filter((t) => t.name.startsWith(prefix) && t.dtype !== 'I64').reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

describe('SGM checkpoint layout', () => {
  it('reproduces the key list of the real sdxl-base fixture (names, shapes, order)', () => {
    const c = readSdxlCase();
    const expected = Object.entries(c.state_dict_keys).map(([k, [, shape]]) => `${k} ${JSON.stringify(shape)}`);
    const got = sgmCheckpointTensors(sgmLayout(c)).map((t) => `${t.name} ${JSON.stringify(t.shape)}`);
    expect(got).toEqual(expected);
  });

  it('marks only position_ids as int64, like the fixture', () => {
    const c = readSdxlCase();
    const ints = Object.entries(c.state_dict_keys).filter(([, [dtype]]) => dtype === 'int64').map(([k]) => k);
    expect(sgmCheckpointTensors(sgmLayout(c)).filter((t) => t.dtype === 'I64').map((t) => t.name)).toEqual(ints);
  });

  it('gives the SDXL base 1.0 parameter counts (UNet 2.567B, bigG + projection 694.7M, CLIP-L 123.1M, VAE 83.7M)', () => {
    const t = sgmCheckpointTensors(SDXL_BASE_LAYOUT);
    expect(count(t, 'model.diffusion_model.')).toBe(2_567_463_684);
    // logit_scale (one scalar) is not part of CLIPTextModelWithProjection; position_ids are a buffer.
    expect(count(t, 'conditioner.embedders.1.model.') - 1).toBe(694_659_840);
    expect(count(t, 'conditioner.embedders.0.transformer.')).toBe(123_060_480);
    expect(count(t, 'first_stage_model.')).toBe(83_653_863);
    expect(t.find((x) => x.name === 'conditioner.embedders.1.model.text_projection')?.shape).toEqual([1280, 1280]);
    expect(t.some((x) => x.name.startsWith('model.diffusion_model.input_blocks.1.1.'))).toBe(false);
    expect(t.filter((x) => /^model\.diffusion_model\.middle_block\.1\.transformer_blocks\.\d+\.norm1\.weight$/.test(x.name))).toHaveLength(10);
  });

  it('gives the SDXL refiner 1.0 UNet with 2560-wide label_emb and bigG as embedder 0', () => {
    const t = sgmCheckpointTensors(SDXL_REFINER_LAYOUT);
    expect(t.find((x) => x.name === 'model.diffusion_model.label_emb.0.0.weight')?.shape).toEqual([1536, 2560]);
    expect(t.some((x) => x.name.startsWith('conditioner.embedders.1.'))).toBe(false);
    expect(count(t, 'conditioner.embedders.0.model.') - 1).toBe(694_659_840);
    // Levels 1 and 2 carry 4-deep transformers, the 1536-wide levels 2 and 3 share a width.
    expect(t.find((x) => x.name === 'model.diffusion_model.input_blocks.10.0.out_layers.3.weight')?.shape).toEqual([1536, 1536, 3, 3]);
    expect(t.some((x) => x.name.startsWith('model.diffusion_model.input_blocks.10.1.'))).toBe(false);
    expect(t.filter((x) => /^model\.diffusion_model\.input_blocks\.4\.1\.transformer_blocks\.\d+\.norm1\.weight$/.test(x.name))).toHaveLength(4);
  });
});
