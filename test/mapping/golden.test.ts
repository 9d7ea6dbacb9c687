/**
 * Plans made from each shared case's key list (names, dtypes, shapes) must give exactly the
 * target names and shapes Diffusers' own converter wrote (golden safetensors headers), with every
 * source key accounted for once and no unknown keys.
 */
import { describe, expect, test } from 'vitest';
import { detectFamily } from '../../src/mapping/detect-family.js';
import { planConversion, type PlanOptions } from '../../src/mapping/plan.js';
import type { ComponentFolder, ConversionPlan } from '../../src/mapping/plan-types.js';
import { caseTensors, goldenShapes } from './case-data.js';

interface GoldenCase {
  readonly label: string;
  readonly input: string;
  readonly opts?: PlanOptions;
  /** Component -> golden safetensors (relative to the shared fixtures). */
  readonly golden: Partial<Record<ComponentFolder, string>>;
  /** Whether the plan has exactly these components (false: the golden covers only some). */
  readonly allComponents: boolean;
}

const pipeline = (dir: string): GoldenCase['golden'] => ({
  unet: `golden/${dir}/unet/diffusion_pytorch_model.safetensors`,
  vae: `golden/${dir}/vae/diffusion_pytorch_model.safetensors`,
  text_encoder: `golden/${dir}/text_encoder/model.safetensors`,
});

const CASES: readonly GoldenCase[] = [
  { label: 'sd1', input: 'sd1', golden: pipeline('sd1/diffusers'), allComponents: true },
  {
    label: 'sd1 extractEma',
    input: 'sd1',
    opts: { extractEma: true },
    golden: { unet: 'golden/sd1/diffusers-ema/unet/diffusion_pytorch_model.safetensors' },
    allComponents: false,
  },
  { label: 'sd1-pipe', input: 'sd1-pipe', golden: pipeline('sd1-pipe/diffusers'), allComponents: true },
  { label: 'sd2', input: 'sd2', golden: pipeline('sd2/diffusers'), allComponents: true },
  { label: 'vae', input: 'vae', golden: { vae: 'golden/vae/diffusers/diffusion_pytorch_model.safetensors' }, allComponents: true },
];

function planFor(c: GoldenCase): ConversionPlan {
  const tensors = caseTensors(c.input);
  return planConversion(tensors, detectFamily(tensors), c.opts);
}

/** Sorted [target, shape] pairs, for a readable diff on failure. */
function pairs(entries: Iterable<readonly [string, readonly number[]]>): [string, string][] {
  return [...entries].map(([k, s]): [string, string] => [k, `[${s.join(', ')}]`]).sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

describe.each(CASES)('golden $label', (c) => {
  const plan = planFor(c);

  test('components', () => {
    const folders = plan.components.map((p) => p.folder);
    if (c.allComponents) expect(new Set(folders)).toEqual(new Set(Object.keys(c.golden)));
    else for (const f of Object.keys(c.golden)) expect(folders).toContain(f);
  });

  test.each(Object.entries(c.golden))('%s: target names and shapes equal the golden', (folder, rel) => {
    const component = plan.components.find((p) => p.folder === folder);
    expect(component).toBeDefined();
    const planned = pairs(component!.tensors.map((t) => [t.target, t.shape] as const));
    expect(planned).toEqual(pairs(goldenShapes(rel)));
  });

  test('every source key is accounted for exactly once, none unknown', () => {
    const names = caseTensors(c.input).map((t) => t.name);
    const accounted = [...plan.account.mapped.map((m) => m.source), ...plan.account.dropped.map((d) => d.source), ...plan.account.unknown];
    expect(plan.account.unknown).toEqual([]);
    expect([...accounted].sort()).toEqual([...names].sort());
  });

  test('every dropped key has a named reason', () => {
    for (const d of plan.account.dropped) {
      expect(d.rule).toMatch(/^[a-z0-9-]+$/);
      expect(d.reason.length).toBeGreaterThan(10);
    }
  });
});

describe('golden details', () => {
  test('sd1: EMA copies are reported and dropped by default', () => {
    const plan = planFor(CASES[0]);
    expect(plan.ema).toEqual({ present: true, count: 206, extracted: false });
    const rules = new Map(plan.account.dropped.map((d) => [d.source, d.rule]));
    expect(rules.get('model_ema.diffusion_modelinput_blocks00weight')).toBe('ema-copy');
    expect(rules.get('model_ema.decay')).toBe('ema-bookkeeping');
    expect(rules.get('model_ema.num_updates')).toBe('ema-bookkeeping');
    expect(rules.get('betas')).toBe('ldm-schedule-buffer');
    expect(rules.get('posterior_mean_coef2')).toBe('ldm-schedule-buffer');
    expect(rules.get('cond_stage_model.transformer.text_model.embeddings.position_ids')).toBe('clip-position-ids');
  });

  test('sd1 extractEma: UNet bytes come from model_ema.*, the regular UNet keys are dropped as replaced', () => {
    const plan = planFor(CASES[1]);
    expect(plan.ema).toEqual({ present: true, count: 206, extracted: true });
    const unet = plan.components.find((p) => p.folder === 'unet')!;
    expect(unet.tensors.every((t) => t.source.startsWith('model_ema.'))).toBe(true);
    const convIn = unet.tensors.find((t) => t.target === 'conv_in.weight')!;
    expect(convIn.source).toBe('model_ema.diffusion_modelinput_blocks00weight');
    const replaced = plan.account.dropped.filter((d) => d.rule === 'ema-replaced');
    expect(replaced).toHaveLength(206);
    expect(replaced.every((d) => d.source.startsWith('model.diffusion_model.'))).toBe(true);
    // the other components are unchanged
    const vae = plan.components.find((p) => p.folder === 'vae')!;
    expect(vae.tensors.every((t) => t.source.startsWith('first_stage_model.'))).toBe(true);
  });

  test('sd2: OpenCLIP in_proj split into q/k/v, last layer and text_projection dropped', () => {
    const plan = planFor(CASES[3]);
    const te = plan.components.find((p) => p.folder === 'text_encoder')!;
    const byTarget = new Map(te.tensors.map((t) => [t.target, t]));
    const q = byTarget.get('text_model.encoder.layers.0.self_attn.q_proj.weight')!;
    const v = byTarget.get('text_model.encoder.layers.0.self_attn.v_proj.bias')!;
    expect(q.source).toBe('cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight');
    expect(q.op).toEqual({ op: 'split', axis: 0, index: 0, parts: 3 });
    expect(v.op).toEqual({ op: 'split', axis: 0, index: 2, parts: 3 });
    expect(byTarget.has('text_model.encoder.layers.23.mlp.fc1.weight')).toBe(false);
    const rules = new Map(plan.account.dropped.map((d) => [d.source, d.rule]));
    expect(rules.get('cond_stage_model.model.transformer.resblocks.23.ln_1.weight')).toBe('sd2-penultimate-layer');
    expect(rules.get('cond_stage_model.model.text_projection')).toBe('sd2-text-projection');
    expect(rules.get('cond_stage_model.model.logit_scale')).toBe('openclip-logit-scale');
    const mapped = plan.account.mapped.find((m) => m.source === 'cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias')!;
    expect(mapped.targets).toEqual([
      'text_model.encoder.layers.0.self_attn.q_proj.bias',
      'text_model.encoder.layers.0.self_attn.k_proj.bias',
      'text_model.encoder.layers.0.self_attn.v_proj.bias',
    ]);
  });

  test('vae: a standalone VAE is one component marked standalone, attention squeezed', () => {
    const plan = planFor(CASES[4]);
    expect(plan.family).toBe('vae');
    expect(plan.standalone).toBe(true);
    expect(plan.components).toHaveLength(1);
    const [vae] = plan.components;
    expect(vae).toMatchObject({ folder: 'vae', className: 'AutoencoderKL', library: 'diffusers', standalone: true, sourcePrefix: '' });
    const q = vae.tensors.find((t) => t.target === 'encoder.mid_block.attentions.0.to_q.weight')!;
    expect(q).toMatchObject({ source: 'encoder.mid.attn_1.q.weight', op: { op: 'squeeze' }, shape: [32, 32] });
  });

  test('components carry class, library and the structure read from the file', () => {
    const plan = planFor(CASES[3]);
    const unet = plan.components.find((p) => p.folder === 'unet')!;
    expect(unet).toMatchObject({ className: 'UNet2DConditionModel', library: 'diffusers', sourcePrefix: 'model.diffusion_model.', standalone: false });
    expect(unet.structure?.['ldm-unet']).toMatchObject({ levels: 2, layersPerBlock: 1, attentionLevels: [true, true], linearProjection: true, inChannels: 4 });
    const te = plan.components.find((p) => p.folder === 'text_encoder')!;
    expect(te).toMatchObject({ className: 'CLIPTextModel', library: 'transformers' });
    expect(te.structure?.openclip).toEqual({ kind: 'openclip', layers: 24, width: 32 });
  });

  test('tensors are ordered by target name and carry the source dtype', () => {
    const plan = planFor(CASES[0]);
    for (const c of plan.components) {
      const targets = c.tensors.map((t) => t.target);
      expect(targets).toEqual([...targets].sort());
      expect(c.tensors.every((t) => t.dtype === 'F32')).toBe(true);
    }
  });
});
