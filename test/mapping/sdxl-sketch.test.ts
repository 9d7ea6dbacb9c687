/**
 * Design check, not a supported family: SDXL base expressed as data only (one extra table row
 * pair for label_emb, a family built from the existing tables) reproduces Diffusers' golden
 * names and shapes for the sdxl-base case, with the code unchanged.
 */
import { expect, test } from 'vitest';
import { loadMappings, parseTable } from '../../src/mapping/load.js';
import { planConversion } from '../../src/mapping/plan.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import type { FamilySpec, Mappings } from '../../src/mapping/spec.js';
import { caseTensors, goldenShapes } from './case-data.js';

function sdxlMappings(): Mappings {
  const real = loadMappings();
  const unet = real.tables.get('unet-ldm')!;
  // SDXL's text_time embedding (diffusers convert_ldm_unet_checkpoint: label_emb -> add_embedding)
  const extra = parseTable(
    { table: 'unet-sgm', rows: [['label_emb.0.0.', 'add_embedding.linear_1.'], ['label_emb.0.2.', 'add_embedding.linear_2.']] },
    'tables/unet-sgm.json',
    real.reasons,
  );
  const unetSgm = { ...unet, name: 'unet-sgm', rows: [...unet.rows, ...extra.rows] };
  const family: FamilySpec = {
    family: 'sdxl-base' as FamilyId,
    file: 'families/sdxl-base.json',
    standalone: false,
    components: [
      { folder: 'unet', sources: ['model.diffusion_model.'], table: 'unet-sgm', className: 'UNet2DConditionModel', library: 'diffusers', options: {} },
      { folder: 'vae', sources: ['first_stage_model.'], table: 'vae-ldm', className: 'AutoencoderKL', library: 'diffusers', options: {} },
      { folder: 'text_encoder', sources: ['conditioner.embedders.0.transformer.'], table: 'clip-hf', className: 'CLIPTextModel', library: 'transformers', options: {} },
      { folder: 'text_encoder_2', sources: ['conditioner.embedders.1.model.'], table: 'openclip', className: 'CLIPTextModelWithProjection', library: 'transformers', options: {} },
    ],
    drop: [{ source: 'denoiser.sigmas', reason: 'ldm-schedule-buffer', where: 'families/sdxl-base.json drop[0]' }],
    detect: { require: [{ kind: 'prefix', prefix: 'conditioner.embedders.1.model.', present: true }], exclude: [], support: [], metadata: [], confidence: 'high' },
  };
  return { ...real, tables: new Map([...real.tables, ['unet-sgm', unetSgm]]), families: new Map([[family.family, family]]) };
}

test('sdxl-base as data reproduces the golden names and shapes', () => {
  const tensors = caseTensors('sdxl-base');
  const plan = planConversion(tensors, { family: 'sdxl-base' as FamilyId }, {}, sdxlMappings());
  expect(plan.account.unknown).toEqual([]);
  const golden = {
    unet: 'golden/sdxl-base/diffusers/unet/diffusion_pytorch_model.safetensors',
    vae: 'golden/sdxl-base/diffusers/vae/diffusion_pytorch_model.safetensors',
    text_encoder: 'golden/sdxl-base/diffusers/text_encoder/model.safetensors',
    text_encoder_2: 'golden/sdxl-base/diffusers/text_encoder_2/model.safetensors',
  };
  for (const [folder, rel] of Object.entries(golden)) {
    const component = plan.components.find((c) => c.folder === folder)!;
    const planned = Object.fromEntries(component.tensors.map((t) => [t.target, t.shape]));
    expect(planned).toEqual(Object.fromEntries(goldenShapes(rel)));
  }
  const proj = plan.components.find((c) => c.folder === 'text_encoder_2')!.tensors.find((t) => t.target === 'text_projection.weight')!;
  expect(proj).toMatchObject({ op: { op: 'transpose' }, shape: [1280, 32] });
});
