import { describe, expect, it } from 'vitest';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { parseOriginalConfig } from '../../src/mapping/original-config.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import { decidePrediction, globalStep, type PredictionInput } from '../../src/mapping/prediction.js';
import { caseExtras, caseTensors, caseYamlText } from './case-tensors.js';

const marker = (name: string): TensorInfo => ({ name, dtype: 'F32', shape: [0], byteLength: 0 });

function decide(family: FamilyId, rest: Partial<PredictionInput> = {}) {
  return decidePrediction({ family, metadata: {}, extras: {}, tensors: [], ...rest });
}

function summary(d: ReturnType<typeof decidePrediction>) {
  return [d.predictionType.value, d.imageSize.value, d.upcastAttention.value, d.predictionType.confidence];
}

describe('the fixture cases decide as Diffusers did', () => {
  for (const [name, family, expected] of [
    ['sd1', 'sd1', ['epsilon', 512, false]],
    ['sd1-pipe', 'sd1', ['epsilon', 512, false]],
    ['sd2', 'sd2', ['v_prediction', 768, false]],
  ] as const) {
    it(name, () => {
      const d = decidePrediction({
        family,
        originalConfig: parseOriginalConfig(caseYamlText(name)),
        metadata: {},
        extras: caseExtras(name),
        tensors: caseTensors(name),
      });
      expect([d.predictionType.value, d.imageSize.value, d.upcastAttention.value]).toEqual(expected);
      expect(d.predictionType.confidence).toBe('high');
      expect(d.predictionType.evidence[0].what).toBe('original config model.params.parameterization');
      expect(d.predictionType.evidence[0].found).toBe(family === 'sd2' ? 'v' : 'absent');
    });
  }

  it('sd2 records global_step 140000 as no special step', () => {
    expect(globalStep(caseExtras('sd2'))).toBe(140000);
  });

  it('the standalone VAE converter always uses 512', () => {
    expect(decide('vae', { originalConfig: parseOriginalConfig(caseYamlText('vae')) }).imageSize.value).toBe(512);
  });
});

describe('global_step rules', () => {
  const vYaml = parseOriginalConfig(caseYamlText('sd2'));

  it('875000 with a v YAML -> SD 2-base: epsilon at 512', () => {
    const d = decide('sd2', { originalConfig: vYaml, extras: { global_step: 875000 } });
    expect(summary(d)).toEqual(['epsilon', 512, false, 'medium']);
    expect(d.predictionType.evidence.map((e) => e.what)).toContain('checkpoint global_step');
  });

  it('875000 without a YAML -> SD 2-base too', () => {
    expect(summary(decide('sd2', { extras: { global_step: 875000 } }))).toEqual(['epsilon', 512, false, 'medium']);
  });

  it('110000 without a YAML -> upcast attention (SD 2.1-768)', () => {
    const d = decide('sd2', { extras: { global_step: 110000 } });
    expect(d.upcastAttention.value).toBe(true);
    expect(d.upcastAttention.evidence[0].found).toBe('110000');
  });

  it('110000 with a YAML -> no upcast, but the evidence says why', () => {
    const d = decide('sd2', { originalConfig: vYaml, extras: { global_step: 110000 } });
    expect(d.upcastAttention.value).toBe(false);
    expect(d.upcastAttention.confidence).toBe('medium');
    expect(d.upcastAttention.evidence.map((e) => e.implies).join(' ')).toMatch(/--upcast-attention/);
  });

  it('110000 on SD 1 means nothing', () => {
    expect(decide('sd1', { extras: { global_step: 110000 } }).upcastAttention.value).toBe(false);
  });

  it('accepts bigint and digit-string steps, ignores others', () => {
    expect(globalStep({ global_step: 875000n })).toBe(875000);
    expect(globalStep({ global_step: '875000' })).toBe(875000);
    expect(globalStep({ global_step: 1.5 })).toBeUndefined();
    expect(globalStep({})).toBeUndefined();
  });
});

describe('family defaults are never silent', () => {
  it('SD 2 without evidence -> v_prediction/768 with low confidence and a DEFAULT note', () => {
    const d = decide('sd2');
    expect(summary(d)).toEqual(['v_prediction', 768, false, 'low']);
    expect(d.imageSize.confidence).toBe('low');
    expect(d.predictionType.evidence[0].implies).toMatch(/DEFAULT/);
  });

  it('SD 1 -> epsilon/512 (medium: a family default)', () => {
    expect(summary(decide('sd1'))).toEqual(['epsilon', 512, false, 'medium']);
  });

  it('SD 2 inpainting / depth -> epsilon/512', () => {
    expect(summary(decide('sd2-inpaint'))).toEqual(['epsilon', 512, false, 'medium']);
    expect(summary(decide('sd2-depth'))).toEqual(['epsilon', 512, false, 'medium']);
  });

  it('takes a FamilyDetection as well', () => {
    expect(decide('sd1', { family: { family: 'sd2', evidence: [], confidence: 'high' } }).predictionType.value).toBe('v_prediction');
  });
});

describe('metadata and marker tensors (no YAML)', () => {
  it('modelspec.predict_key', () => {
    const d = decide('sd2', { metadata: { 'modelspec.predict_key': 'epsilon' } });
    expect(summary(d)).toEqual(['epsilon', 512, false, 'high']);
    expect(d.predictionType.evidence[0]).toEqual({ what: 'metadata modelspec.predict_key', found: 'epsilon', implies: 'epsilon' });
  });

  it('modelspec.prediction_type v-zsnr', () => {
    expect(decide('sd1', { metadata: { 'modelspec.prediction_type': 'v-zsnr' } }).predictionType.value).toBe('v_prediction');
  });

  it('modelspec.architecture gives type and size', () => {
    expect(summary(decide('sd2', { metadata: { 'modelspec.architecture': 'stable-diffusion-v2-512' } }))).toEqual(['epsilon', 512, false, 'medium']);
    expect(summary(decide('sd2', { metadata: { 'modelspec.architecture': 'stable-diffusion-v2-768-v' } }))).toEqual(['v_prediction', 768, false, 'medium']);
  });

  it('modelspec.resolution decides the size', () => {
    expect(decide('sd1', { metadata: { 'modelspec.resolution': '768x768' } }).imageSize.value).toBe(768);
  });

  it('the v_pred marker tensor', () => {
    const d = decide('sd1', { tensors: [marker('v_pred'), marker('ztsnr')] });
    expect(d.predictionType.value).toBe('v_prediction');
    expect(d.predictionType.evidence[0].what).toBe('marker tensor v_pred');
  });

  it('disagreeing hints -> low confidence with all evidence', () => {
    const d = decide('sd2', { metadata: { 'modelspec.predict_key': 'v', 'modelspec.architecture': 'stable-diffusion-v2-512' } });
    expect(d.predictionType.value).toBe('v_prediction');
    expect(d.predictionType.confidence).toBe('low');
    expect(d.predictionType.evidence).toHaveLength(2);
  });

  it('a YAML outranks metadata (Diffusers reads no metadata)', () => {
    const d = decide('sd2', { originalConfig: parseOriginalConfig(caseYamlText('sd2')), metadata: { 'modelspec.predict_key': 'epsilon' } });
    expect(d.predictionType.value).toBe('v_prediction');
  });
});

describe('flags win', () => {
  it('over the YAML and the defaults', () => {
    const d = decide('sd2', {
      originalConfig: parseOriginalConfig(caseYamlText('sd2')),
      overrides: { predictionType: 'epsilon', imageSize: 640, upcastAttention: true },
    });
    expect(summary(d)).toEqual(['epsilon', 640, true, 'high']);
    expect(d.predictionType.evidence[0].what).toBe('flag --prediction-type');
  });

  it('normalises v-prediction', () => {
    expect(decide('sd1', { overrides: { predictionType: 'v-prediction' } }).predictionType.value).toBe('v_prediction');
  });

  it('a prediction flag alone leaves the SD 2 size where Diffusers leaves it', () => {
    expect(decide('sd2', { originalConfig: parseOriginalConfig(caseYamlText('sd2')), overrides: { predictionType: 'epsilon' } }).imageSize.value).toBe(768);
  });
});
