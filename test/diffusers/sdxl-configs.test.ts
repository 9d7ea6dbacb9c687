/**
 * SDXL configs, tokenizers, scheduler and model_index: byte-equal to Diffusers 0.31.0's golden for
 * the sdxl-base fixture (converted with its sd_xl_base.yaml-style YAML, as the golden was), the
 * Hub-config values for the real-size layouts without a YAML, and the prediction-type / zero
 * terminal SNR evidence Diffusers does not read (v_pred / ztsnr markers, modelspec metadata).
 */
import { describe, expect, it } from 'vitest';
import {
  type ConfigObject,
  modelIndex,
  sdxlSchedulerConfig,
  textEncoder2Kind,
  textEncoderConfig,
  textEncoderKind,
  unetConfig,
  vaeConfig,
  vaeScalingFactor,
} from '../../src/diffusers/configs.js';
import {
  clipTextShapes,
  openClipProjectedTextShapes,
  SGM_CLIP_L_PREFIX,
  SGM_OPENCLIP_PREFIX,
  SGM_REFINER_OPENCLIP_PREFIX,
  unetShapes,
  vaeShapes,
} from '../../src/diffusers/configs-shapes.js';
import { specialTokensMap, tokenizerConfig } from '../../src/diffusers/tokenizer.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { pythonJsonDumps } from '../../src/formats/python-json.js';
import { parseOriginalConfig } from '../../src/mapping/original-config.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import { decidePrediction, type PredictionDecision } from '../../src/mapping/prediction.js';
import { SDXL_BASE_LAYOUT, SDXL_REFINER_LAYOUT, sgmCheckpointTensors, type SgmCheckpointLayout } from '../../src/testing/ldm-layout.js';
import { tensorInfo } from '../mapping/case-data.js';
import { caseExtras, caseTensors, caseYamlText, goldenText } from '../mapping/case-tensors.js';

function dumps(obj: unknown): string {
  return pythonJsonDumps(obj, { indent: 2, sortKeys: true }) + '\n';
}

/** transformers writes tokenizer files with ensure_ascii=False. */
function tokenizerDumps(obj: unknown): string {
  return pythonJsonDumps(obj, { indent: 2, sortKeys: true, ensureAscii: false }) + '\n';
}

const golden = (rel: string) => goldenText(`sdxl-base/diffusers/${rel}`);

function infos(layout: SgmCheckpointLayout): TensorInfo[] {
  return sgmCheckpointTensors(layout).map((t) => tensorInfo(t.name, t.dtype ?? 'F16', t.shape));
}

function scheduler(decision: PredictionDecision): ConfigObject {
  return sdxlSchedulerConfig('euler', { predictionType: decision.predictionType.value, zeroTerminalSnr: decision.zeroTerminalSnr?.value });
}

describe('sdxl-base with its YAML equals the Diffusers golden byte for byte', () => {
  const tensors = caseTensors('sdxl-base');
  const originalConfig = parseOriginalConfig(caseYamlText('sdxl-base'));
  const family: FamilyId = 'sdxl-base';
  const decision = decidePrediction({ family, originalConfig, metadata: {}, extras: caseExtras('sdxl-base'), tensors });
  const vae = vaeShapes(tensors);

  it('decides epsilon at 1024 from the SGM YAML', () => {
    expect(decision.predictionType).toMatchObject({ value: 'epsilon', confidence: 'high' });
    expect(decision.imageSize).toMatchObject({ value: 1024, confidence: 'high' });
    expect(decision.imageSize.evidence[0].what).toBe('original config model.params.network_config');
    expect(decision.zeroTerminalSnr?.value).toBe(false);
  });

  it('unet/config.json (text_time, per-level heads and depths from the YAML)', () => {
    const cfg = unetConfig({ family, shapes: unetShapes(tensors), originalConfig, imageSize: decision.imageSize.value, vae, upcastAttention: false });
    expect(dumps(cfg)).toBe(golden('unet/config.json'));
  });

  it('vae/config.json (scaling_factor 0.13025 from the YAML, sample_size 1024)', () => {
    const cfg = vaeConfig({ shapes: vae, originalConfig, imageSize: decision.imageSize.value, scalingFactor: vaeScalingFactor(family, originalConfig) });
    expect(dumps(cfg)).toBe(golden('vae/config.json'));
  });

  it('text_encoder/config.json (CLIP-L from conditioner.embedders.0.transformer.)', () => {
    expect(textEncoderKind(family)).toBe('clip-l');
    expect(dumps(textEncoderConfig('clip-l', clipTextShapes(tensors, SGM_CLIP_L_PREFIX)))).toBe(golden('text_encoder/config.json'));
  });

  it('text_encoder_2/config.json (bigG with projection: every layer, projection_dim from text_projection)', () => {
    expect(textEncoder2Kind(family)).toBe('openclip-bigg');
    const shapes = openClipProjectedTextShapes(tensors, SGM_OPENCLIP_PREFIX);
    expect(shapes).toMatchObject({ layers: 2, projectionDim: 1280 });
    expect(dumps(textEncoderConfig('openclip-bigg', shapes))).toBe(golden('text_encoder_2/config.json'));
  });

  it('tokenizer (pad <|endoftext|>) and tokenizer_2 (pad "!")', () => {
    expect(tokenizerDumps(specialTokensMap('clip-l'))).toBe(golden('tokenizer/special_tokens_map.json'));
    expect(tokenizerDumps(tokenizerConfig('clip-l'))).toBe(golden('tokenizer/tokenizer_config.json'));
    expect(tokenizerDumps(specialTokensMap('openclip'))).toBe(golden('tokenizer_2/special_tokens_map.json'));
    expect(tokenizerDumps(tokenizerConfig('openclip'))).toBe(golden('tokenizer_2/tokenizer_config.json'));
  });

  it('scheduler/scheduler_config.json (Euler from the SDXL dict, hidden DDIM/PNDM keys kept)', () => {
    expect(dumps(scheduler(decision))).toBe(golden('scheduler/scheduler_config.json'));
  });

  it('model_index.json (StableDiffusionXLPipeline, force_zeros_for_empty_prompt)', () => {
    expect(dumps(modelIndex({ family, scheduler: 'euler' }))).toBe(golden('model_index.json'));
  });
});

describe('real-size SDXL without a YAML: the Hub configs', () => {
  it('SDXL base 1.0 unet: heads [5, 10, 20], depths [1, 2, 10], text_time 2816, sample 128', () => {
    const tensors = infos(SDXL_BASE_LAYOUT);
    const decision = decidePrediction({ family: 'sdxl-base', metadata: {}, extras: {}, tensors });
    expect(decision.imageSize).toMatchObject({ value: 1024, confidence: 'medium' });
    expect(decision.predictionType).toMatchObject({ value: 'epsilon', confidence: 'medium' });
    const cfg = unetConfig({ family: 'sdxl-base', shapes: unetShapes(tensors), imageSize: 1024, vae: vaeShapes(tensors), upcastAttention: false });
    expect(cfg).toMatchObject({
      attention_head_dim: [5, 10, 20],
      transformer_layers_per_block: [1, 2, 10],
      block_out_channels: [320, 640, 1280],
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
      up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
      cross_attention_dim: 2048,
      use_linear_projection: true,
      addition_embed_type: 'text_time',
      addition_time_embed_dim: 256,
      projection_class_embeddings_input_dim: 2816,
      sample_size: 128,
      layers_per_block: 2,
    });
    const vae = vaeConfig({ shapes: vaeShapes(tensors), imageSize: 1024, scalingFactor: vaeScalingFactor('sdxl-base') });
    expect(dumps(vae)).toContain('"scaling_factor": 0.13025');
    const te2 = textEncoderConfig('openclip-bigg', openClipProjectedTextShapes(tensors, SGM_OPENCLIP_PREFIX));
    expect(te2).toMatchObject({ hidden_size: 1280, intermediate_size: 5120, num_attention_heads: 20, num_hidden_layers: 32, projection_dim: 1280, hidden_act: 'gelu' });
    const te = textEncoderConfig('clip-l', clipTextShapes(tensors, SGM_CLIP_L_PREFIX));
    expect(te).toMatchObject({ hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12, num_hidden_layers: 12, projection_dim: 768, hidden_act: 'quick_gelu' });
  });

  it('SDXL refiner 1.0 unet: heads [6, 12, 24, 24], depth 4, text_time 2560, cross attention 1280', () => {
    const tensors = infos(SDXL_REFINER_LAYOUT);
    const cfg = unetConfig({ family: 'sdxl-refiner', shapes: unetShapes(tensors), imageSize: 1024, vae: vaeShapes(tensors), upcastAttention: false });
    expect(cfg).toMatchObject({
      attention_head_dim: [6, 12, 24, 24],
      transformer_layers_per_block: 4,
      block_out_channels: [384, 768, 1536, 1536],
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
      cross_attention_dim: 1280,
      projection_class_embeddings_input_dim: 2560,
      addition_embed_type: 'text_time',
    });
    expect(textEncoderKind('sdxl-refiner')).toBeUndefined();
    expect(openClipProjectedTextShapes(tensors, SGM_REFINER_OPENCLIP_PREFIX)).toMatchObject({ hiddenSize: 1280, layers: 32, projectionDim: 1280 });
  });
});

describe('SDXL model_index.json', () => {
  it('refiner: StableDiffusionXLImg2ImgPipeline without text_encoder/tokenizer, aesthetics score on, zeros off', () => {
    const mi = modelIndex({ family: 'sdxl-refiner', scheduler: 'euler' });
    expect(mi).toMatchObject({
      _class_name: 'StableDiffusionXLImg2ImgPipeline',
      text_encoder: [null, null],
      tokenizer: [null, null],
      text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
      tokenizer_2: ['transformers', 'CLIPTokenizer'],
      requires_aesthetics_score: true,
      force_zeros_for_empty_prompt: false,
    });
  });

  it('inpainting: StableDiffusionXLInpaintPipeline, aesthetics score off', () => {
    const mi = modelIndex({ family: 'sdxl-inpaint', scheduler: 'euler' });
    expect(mi).toMatchObject({ _class_name: 'StableDiffusionXLInpaintPipeline', requires_aesthetics_score: false, force_zeros_for_empty_prompt: true });
    expect(mi.text_encoder).toEqual(['transformers', 'CLIPTextModel']);
  });

  it('base as Img2Img (a --pipeline-class override) registers requires_aesthetics_score false', () => {
    const mi = modelIndex({ family: 'sdxl-base', scheduler: 'euler', pipelineClass: 'StableDiffusionXLImg2ImgPipeline' });
    expect(mi).toMatchObject({ requires_aesthetics_score: false, force_zeros_for_empty_prompt: true });
    expect(modelIndex({ family: 'sdxl-base', scheduler: 'euler' })).not.toHaveProperty('requires_aesthetics_score');
  });
});

describe('SDXL v-prediction and zero terminal SNR evidence', () => {
  const base = infos(SDXL_BASE_LAYOUT);
  const withMarkers = (...names: string[]) => [...base, ...names.map((n) => tensorInfo(n, 'F32', [0]))];
  const yaml = parseOriginalConfig(caseYamlText('sdxl-base'));

  it('the v_pred marker -> v_prediction, even with an SGM YAML (which has no parameterization)', () => {
    for (const originalConfig of [undefined, yaml]) {
      const d = decidePrediction({ family: 'sdxl-base', originalConfig, metadata: {}, extras: {}, tensors: withMarkers('v_pred') });
      expect(d.predictionType).toMatchObject({ value: 'v_prediction', confidence: 'high' });
      expect(d.predictionType.evidence[0]).toMatchObject({ what: 'marker tensor v_pred' });
      expect(d.zeroTerminalSnr?.value).toBe(false);
      expect(scheduler(d)).toMatchObject({ prediction_type: 'v_prediction', rescale_betas_zero_snr: false, timestep_spacing: 'leading' });
    }
  });

  it('v_pred + ztsnr markers -> v_prediction, rescale_betas_zero_snr, trailing spacing', () => {
    const d = decidePrediction({ family: 'sdxl-base', metadata: {}, extras: {}, tensors: withMarkers('v_pred', 'ztsnr') });
    expect(d.predictionType.value).toBe('v_prediction');
    expect(d.zeroTerminalSnr).toMatchObject({ value: true, confidence: 'high' });
    expect(d.zeroTerminalSnr?.evidence.map((e) => e.what)).toEqual(['marker tensor ztsnr', 'scheduler']);
    const cfg = scheduler(d);
    expect(cfg).toMatchObject({ _class_name: 'EulerDiscreteScheduler', prediction_type: 'v_prediction', rescale_betas_zero_snr: true, timestep_spacing: 'trailing' });
  });

  it('modelspec metadata: predict_key v, prediction_type v-zsnr', () => {
    const v = decidePrediction({ family: 'sdxl-base', metadata: { 'modelspec.predict_key': 'v' }, extras: {}, tensors: base });
    expect(v.predictionType.value).toBe('v_prediction');
    expect(v.zeroTerminalSnr?.value).toBe(false);
    const z = decidePrediction({ family: 'sdxl-refiner', originalConfig: yaml, metadata: { 'modelspec.prediction_type': 'v-zsnr' }, extras: {}, tensors: base });
    expect(z.predictionType).toMatchObject({ value: 'v_prediction' });
    expect(z.zeroTerminalSnr).toMatchObject({ value: true });
    expect(z.zeroTerminalSnr?.evidence[0]).toMatchObject({ what: 'metadata modelspec.prediction_type', found: 'v-zsnr' });
  });

  it('ztsnr without v-prediction is reported and not applied', () => {
    const d = decidePrediction({ family: 'sdxl-base', metadata: {}, extras: {}, tensors: withMarkers('ztsnr') });
    expect(d.predictionType.value).toBe('epsilon');
    expect(d.zeroTerminalSnr).toMatchObject({ value: false, confidence: 'low' });
    expect(d.zeroTerminalSnr?.evidence.at(-1)?.implies).toMatch(/needs v-prediction/);
  });

  it('flags decide over markers', () => {
    const d = decidePrediction({
      family: 'sdxl-base',
      metadata: {},
      extras: {},
      tensors: withMarkers('v_pred', 'ztsnr'),
      overrides: { predictionType: 'epsilon', zeroTerminalSnr: false },
    });
    expect(d.predictionType.value).toBe('epsilon');
    expect(d.zeroTerminalSnr?.value).toBe(false);
  });

  it('modelspec.architecture stable-diffusion-xl-v1-base gives the size but not the prediction type', () => {
    const d = decidePrediction({ family: 'sdxl-base', metadata: { 'modelspec.architecture': 'stable-diffusion-xl-v1-base' }, extras: {}, tensors: base });
    expect(d.imageSize).toMatchObject({ value: 1024, confidence: 'medium' });
    expect(d.imageSize.evidence[0].what).toBe('metadata modelspec.architecture');
    expect(d.predictionType).toMatchObject({ value: 'epsilon', confidence: 'medium' });
  });
});

describe('SDXL scheduler with another --scheduler kind', () => {
  it('goes through from_config like Euler: the SDXL keys on top of the class defaults', () => {
    const cfg = sdxlSchedulerConfig('dpm', { predictionType: 'epsilon' });
    expect(cfg).toMatchObject({ _class_name: 'DPMSolverMultistepScheduler', timestep_spacing: 'leading', steps_offset: 1, beta_schedule: 'scaled_linear', algorithm_type: 'dpmsolver++' });
  });
});
