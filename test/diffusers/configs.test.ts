import { describe, expect, it } from 'vitest';
import {
  type ConfigObject,
  modelIndex,
  pyNumber,
  schedulerConfig,
  SCHEDULER_KINDS,
  textEncoderConfig,
  textEncoderKind,
  unetConfig,
  vaeConfig,
  vaeScalingFactor,
} from '../../src/diffusers/configs.js';
import { clipTextShapes, openClipTextShapes, unetShapes, vaeShapes } from '../../src/diffusers/configs-shapes.js';
import { isCkptError } from '../../src/errors.js';
import { isPyFloat, parsePythonJson, pythonJsonDumps } from '../../src/formats/python-json.js';
import { type OriginalConfig, parseOriginalConfig } from '../../src/mapping/original-config.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import { decidePrediction } from '../../src/mapping/prediction.js';
import { caseExtras, caseTensors, caseYamlText, goldenText } from '../mapping/case-tensors.js';

/** The keys compare.py does not compare. */
const IGNORED = new Set(['_diffusers_version', '_name_or_path', 'transformers_version', 'torch_dtype', 'dtype']);

/** PyFloat -> number, ignored keys dropped: the value equality compare.py applies. */
function comparable(v: unknown): unknown {
  if (isPyFloat(v)) return v.value;
  if (Array.isArray(v)) return v.map(comparable);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([k]) => !IGNORED.has(k)).map(([k, x]) => [k, comparable(x)]));
  }
  return v;
}

/** How Diffusers and transformers write config files. */
function dumps(obj: unknown): string {
  return pythonJsonDumps(obj, { indent: 2, sortKeys: true }) + '\n';
}

function expectLikeGolden(obj: ConfigObject, goldenRel: string): void {
  const text = goldenText(goldenRel);
  expect(comparable(obj)).toEqual(comparable(parsePythonJson(text)));
  expect(dumps(obj)).toBe(text);
}

interface Built {
  unet: ConfigObject;
  vae: ConfigObject;
  textEncoder: ConfigObject;
  scheduler: ConfigObject;
  modelIndex: ConfigObject;
}

/** Builds every config of a pipeline case the way the converter will. */
function buildCase(name: string, family: FamilyId, withYaml = true): Built {
  const tensors = caseTensors(name);
  const originalConfig: OriginalConfig | undefined = withYaml ? parseOriginalConfig(caseYamlText(name)) : undefined;
  const decision = decidePrediction({ family, originalConfig, metadata: {}, extras: caseExtras(name), tensors });
  const vae = vaeShapes(tensors);
  const teKind = textEncoderKind(family);
  const teShapes = teKind === 'openclip-h' ? openClipTextShapes(tensors) : clipTextShapes(tensors);
  return {
    unet: unetConfig({
      family,
      shapes: unetShapes(tensors),
      originalConfig,
      imageSize: decision.imageSize.value,
      vae,
      upcastAttention: decision.upcastAttention.value,
    }),
    vae: vaeConfig({ shapes: vae, originalConfig, imageSize: decision.imageSize.value, scalingFactor: vaeScalingFactor(family, originalConfig) }),
    textEncoder: textEncoderConfig(teKind ?? 'clip-l', teShapes),
    scheduler: schedulerConfig('pndm', {
      predictionType: decision.predictionType.value,
      numTrainTimesteps: originalConfig?.timesteps,
      betaStart: originalConfig?.linearStart && pyNumber(originalConfig.linearStart),
      betaEnd: originalConfig?.linearEnd && pyNumber(originalConfig.linearEnd),
    }),
    modelIndex: modelIndex({ family, scheduler: 'pndm' }),
  };
}

describe('configs equal the Diffusers 0.31.0 goldens', () => {
  for (const [name, family] of [
    ['sd1', 'sd1'],
    ['sd1-pipe', 'sd1'],
    ['sd2', 'sd2'],
  ] as const) {
    describe(name, () => {
      const built = buildCase(name, family);
      it('unet/config.json', () => expectLikeGolden(built.unet, `${name}/diffusers/unet/config.json`));
      it('vae/config.json', () => expectLikeGolden(built.vae, `${name}/diffusers/vae/config.json`));
      it('text_encoder/config.json', () => expectLikeGolden(built.textEncoder, `${name}/diffusers/text_encoder/config.json`));
      it('scheduler/scheduler_config.json', () => expectLikeGolden(built.scheduler, `${name}/diffusers/scheduler/scheduler_config.json`));
      it('model_index.json', () => expectLikeGolden(built.modelIndex, `${name}/diffusers/model_index.json`));
    });
  }

  it('sd1 EMA unet config equals the diffusers-ema golden', () => {
    expectLikeGolden(buildCase('sd1', 'sd1').unet, 'sd1/diffusers-ema/unet/config.json');
  });

  it('standalone vae (convert_vae_pt_to_diffusers.py: image 512, default scaling factor)', () => {
    const tensors = caseTensors('vae');
    const originalConfig = parseOriginalConfig(caseYamlText('vae'));
    const decision = decidePrediction({ family: 'vae', originalConfig, metadata: {}, extras: caseExtras('vae'), tensors });
    const cfg = vaeConfig({ shapes: vaeShapes(tensors), originalConfig, imageSize: decision.imageSize.value, scalingFactor: vaeScalingFactor('vae', originalConfig) });
    expectLikeGolden(cfg, 'vae/diffusers/config.json');
  });

  it('the golden text-encoder configs hold the Hub values golden.json records', () => {
    for (const [name, hub] of [
      ['sd1', 'openai/clip-vit-large-patch14'],
      ['sd2', 'stabilityai/stable-diffusion-2'],
    ] as const) {
      const used = (JSON.parse(goldenText(`${name}/golden.json`)) as { produced_by: { hub_configs_used: Record<string, Record<string, unknown>> } })
        .produced_by.hub_configs_used[hub];
      const built = comparable(buildCase(name, name).textEncoder) as Record<string, unknown>;
      for (const [k, v] of Object.entries(used)) if (!IGNORED.has(k)) expect([k, built[k]]).toEqual([k, v]);
    }
  });
});

describe('configs without an original YAML', () => {
  it('sd1: shapes and the SD 1 head default reproduce the golden', () => {
    const built = buildCase('sd1', 'sd1', false);
    expectLikeGolden(built.unet, 'sd1/diffusers/unet/config.json');
    expectLikeGolden(built.vae, 'sd1/diffusers/vae/config.json');
    expectLikeGolden(built.scheduler, 'sd1/diffusers/scheduler/scheduler_config.json');
  });

  it('sd2: 64-channel heads per level and the low-confidence 768/v default', () => {
    const built = buildCase('sd2', 'sd2', false);
    expect(built.unet.attention_head_dim).toEqual([1, 1]);
    expect(built.unet.use_linear_projection).toBe(true);
    expect(built.unet.sample_size).toBe(384);
    expect(built.scheduler.prediction_type).toBe('v_prediction');
  });

  it('SD 2 head default for real widths is [5, 10, 20, 20]', () => {
    const shapes = unetShapes(caseTensors('sd2'));
    const wide = { ...shapes, blockOutChannels: [320, 640, 1280, 1280], downAttention: [true, true, true, false], upAttention: [false, true, true, true], transformerDepth: [1, 1, 1, 0] };
    expect(unetConfig({ family: 'sd2', shapes: wide, imageSize: 768, upcastAttention: false }).attention_head_dim).toEqual([5, 10, 20, 20]);
    expect(unetConfig({ family: 'sd1', shapes: wide, imageSize: 512, upcastAttention: false }).sample_size).toBe(64);
  });
});

describe('shape facts', () => {
  it('reads the sd2 UNet and OpenCLIP tower', () => {
    const tensors = caseTensors('sd2');
    expect(unetShapes(tensors)).toEqual({
      inChannels: 4,
      outChannels: 4,
      blockOutChannels: [32, 32],
      layersPerBlock: 1,
      downAttention: [true, true],
      upAttention: [true, true],
      transformerDepth: [1, 1],
      crossAttentionDim: 32,
      useLinearProjection: true,
      admInChannels: undefined,
    });
    expect(openClipTextShapes(tensors)).toEqual({ hiddenSize: 32, vocabSize: 256, maxPositionEmbeddings: 77, intermediateSize: 128, layers: 24 });
  });

  it('reads the sd1 attention levels (attention only on the first level)', () => {
    const s = unetShapes(caseTensors('sd1'));
    expect(s.downAttention).toEqual([true, false]);
    expect(s.upAttention).toEqual([false, true]);
    expect(s.useLinearProjection).toBe(false);
  });

  it('finds the standalone VAE at the top level', () => {
    expect(vaeShapes(caseTensors('vae'))).toEqual({ inChannels: 3, outChannels: 3, blockOutChannels: [32, 32], layersPerBlock: 1, latentChannels: 4 });
  });

  it('names a missing tensor', () => {
    const tensors = caseTensors('sd1').filter((t) => t.name !== 'model.diffusion_model.out.2.weight');
    expect(() => unetShapes(tensors)).toThrow(/out\.2\.weight/);
  });
});

describe('a YAML that contradicts the checkpoint', () => {
  function expectConflict(name: string, edit: (yaml: string) => string, field: RegExp): void {
    const tensors = caseTensors(name);
    const oc = parseOriginalConfig(edit(caseYamlText(name)));
    try {
      unetConfig({ family: 'sd1', shapes: unetShapes(tensors), originalConfig: oc, imageSize: 512, upcastAttention: false });
      vaeConfig({ shapes: vaeShapes(tensors), originalConfig: oc, imageSize: 512 });
      expect.unreachable('no conflict reported');
    } catch (e) {
      expect(isCkptError(e) && e.code).toBe('E_ORIGINAL_CONFIG');
      expect(String((e as Error).message)).toMatch(field);
    }
  }

  it('channel_mult', () => expectConflict('sd1', (y) => y.replace('channel_mult: [ 1, 1 ]', 'channel_mult: [ 1, 2 ]'), /channel_mult/));
  it('attention_resolutions', () => expectConflict('sd1', (y) => y.replace('attention_resolutions: [ 1 ]', 'attention_resolutions: [ 1, 2 ]'), /attention_resolutions/));
  it('context_dim', () => expectConflict('sd1', (y) => y.replace('context_dim: 32', 'context_dim: 768'), /context_dim/));
  it('num_res_blocks', () => expectConflict('sd1', (y) => y.replace('num_res_blocks: 1\n        channel_mult', 'num_res_blocks: 2\n        channel_mult'), /num_res_blocks/));
  it('linear projection', () => expectConflict('sd1', (y) => y.replace('transformer_depth: 1', 'transformer_depth: 1\n        use_linear_in_transformer: True\n        num_head_channels: 16'), /use_linear_in_transformer/));
  it('vae ch_mult', () => expectConflict('sd1', (y) => y.replace('          - 1\n          - 1\n          num_res_blocks', '          - 1\n          - 2\n          num_res_blocks'), /ch_mult/));

  it('in_channels comes from the checkpoint (Diffusers overrides the YAML with num_in_channels)', () => {
    const oc = parseOriginalConfig(caseYamlText('sd1').replace('in_channels: 4', 'in_channels: 9'));
    expect(unetConfig({ family: 'sd1', shapes: unetShapes(caseTensors('sd1')), originalConfig: oc, imageSize: 512, upcastAttention: false }).in_channels).toBe(4);
  });
});

describe('YAML-only UNet options (create_unet_diffusers_config)', () => {
  const shapes = unetShapes(caseTensors('sd1'));
  const base = caseYamlText('sd1');
  const build = (extra: string) =>
    unetConfig({ family: 'sd1', shapes, originalConfig: parseOriginalConfig(base.replace('legacy: False', `legacy: False\n${extra}`)), imageSize: 512, upcastAttention: true });

  it('num_classes int -> num_class_embeds; disable_self_attentions -> only_cross_attention', () => {
    const cfg = build('        num_classes: 1000\n        disable_self_attentions: [true, false]');
    expect(cfg.num_class_embeds).toBe(1000);
    expect(cfg.only_cross_attention).toEqual([true, false]);
    expect(cfg.upcast_attention).toBe(true);
  });

  it('num_classes sequential -> projection class embedding', () => {
    const cfg = build('        num_classes: sequential\n        adm_in_channels: 64');
    expect(cfg.class_embed_type).toBe('projection');
    expect(cfg.projection_class_embeddings_input_dim).toBe(64);
  });

  it('a float scale_factor stays a Python float, an int stays an int', () => {
    const tensors = caseTensors('sd1');
    const asFloat = parseOriginalConfig(base.replace('scale_factor: 0.18215', 'scale_factor: 1.0'));
    const asInt = parseOriginalConfig(base.replace('scale_factor: 0.18215', 'scale_factor: 1'));
    const text = (oc: OriginalConfig) => dumps(vaeConfig({ shapes: vaeShapes(tensors), originalConfig: oc, imageSize: 512, scalingFactor: vaeScalingFactor('sd1', oc) }));
    expect(text(asFloat)).toContain('"scaling_factor": 1.0,');
    expect(text(asInt)).toContain('"scaling_factor": 1,');
  });
});

describe('scheduler configs (DDIM config converted with from_config)', () => {
  const params = { predictionType: 'epsilon' as const };

  it('every kind carries its class keys plus the DDIM keys it does not know', () => {
    const keys = (k: (typeof SCHEDULER_KINDS)[number]) => Object.keys(schedulerConfig(k, params)).sort();
    expect(keys('ddim')).toEqual(
      [
        '_class_name', '_diffusers_version', 'beta_end', 'beta_schedule', 'beta_start', 'clip_sample', 'clip_sample_range',
        'dynamic_thresholding_ratio', 'num_train_timesteps', 'prediction_type', 'rescale_betas_zero_snr', 'sample_max_value',
        'set_alpha_to_one', 'steps_offset', 'thresholding', 'timestep_spacing', 'trained_betas',
      ].sort(),
    );
    expect(keys('euler-ancestral')).toEqual(
      [
        '_class_name', '_diffusers_version', 'beta_end', 'beta_schedule', 'beta_start', 'clip_sample', 'num_train_timesteps',
        'prediction_type', 'rescale_betas_zero_snr', 'set_alpha_to_one', 'steps_offset', 'timestep_spacing', 'trained_betas',
      ].sort(),
    );
    for (const k of SCHEDULER_KINDS) {
      const cfg = schedulerConfig(k, params);
      expect(cfg.beta_schedule).toBe('scaled_linear');
      expect(cfg.steps_offset).toBe(1);
      expect(cfg.clip_sample).toBe(false);
      expect(cfg.set_alpha_to_one).toBe(false);
      expect(comparable(cfg.beta_start)).toBe(0.00085);
      expect(cfg.skip_prk_steps).toBe(k === 'pndm' ? true : undefined);
    }
  });

  it('defaults DDIM did not pass stay the target class defaults', () => {
    expect(schedulerConfig('euler', params).timestep_spacing).toBe('linspace');
    expect(schedulerConfig('ddim', params).timestep_spacing).toBe('leading');
    expect(schedulerConfig('heun', params).clip_sample).toBe(false);
    expect(schedulerConfig('dpm', params).algorithm_type).toBe('dpmsolver++');
  });

  it('writes Python float forms (1.0, -Infinity)', () => {
    const dpm = dumps(schedulerConfig('dpm', { predictionType: 'v_prediction' }));
    expect(dpm).toContain('"lambda_min_clipped": -Infinity,');
    expect(dpm).toContain('"sample_max_value": 1.0,');
    expect(dpm).toContain('"_class_name": "DPMSolverMultistepScheduler",');
    expect(dumps(schedulerConfig('ddim', params))).toContain('"clip_sample_range": 1.0,');
  });

  it('rejects an unknown kind', () => {
    expect(() => schedulerConfig('karras' as never, params)).toThrow(/unknown scheduler/);
  });
});

describe('model_index.json', () => {
  it('names the pipeline class by family, or the override', () => {
    expect(modelIndex({ family: 'sd1-inpaint', scheduler: 'ddim' })).toMatchObject({
      _class_name: 'StableDiffusionInpaintPipeline',
      scheduler: ['diffusers', 'DDIMScheduler'],
      requires_safety_checker: true,
    });
    expect(modelIndex({ family: 'sd1-pix2pix', scheduler: 'pndm' })._class_name).toBe('StableDiffusionInstructPix2PixPipeline');
    expect(modelIndex({ family: 'sd2', scheduler: 'euler', pipelineClass: 'StableDiffusionImg2ImgPipeline' })._class_name).toBe('StableDiffusionImg2ImgPipeline');
  });

  it('depth2img registers a depth estimator and no safety checker', () => {
    const mi = modelIndex({ family: 'sd2-depth', scheduler: 'pndm' });
    expect(mi.depth_estimator).toEqual([null, null]);
    expect(mi).not.toHaveProperty('safety_checker');
  });

  it('a standalone VAE has none', () => {
    expect(() => modelIndex({ family: 'vae', scheduler: 'pndm' })).toThrow(/model_index/);
  });
});

describe('text encoder configs', () => {
  it('openclip-h drops the last layer (penultimate-layer conditioning) and uses gelu', () => {
    const cfg = textEncoderConfig('openclip-h', { hiddenSize: 1024, intermediateSize: 4096, layers: 24, vocabSize: 49408, maxPositionEmbeddings: 77 });
    expect(cfg).toMatchObject({ num_hidden_layers: 23, num_attention_heads: 16, hidden_act: 'gelu', projection_dim: 512 });
  });

  it('clip-l keeps every layer, quick_gelu, 12 heads for width 768, records the dtype', () => {
    const cfg = textEncoderConfig('clip-l', { hiddenSize: 768, intermediateSize: 3072, layers: 12, vocabSize: 49408, maxPositionEmbeddings: 77 }, { torchDtype: 'float16' });
    expect(cfg).toMatchObject({ num_hidden_layers: 12, num_attention_heads: 12, hidden_act: 'quick_gelu', projection_dim: 768, torch_dtype: 'float16' });
  });
});
