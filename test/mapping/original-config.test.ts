import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isCkptError } from '../../src/errors.js';
import { MAX_CONFIG_FILE_BYTES } from '../../src/limits.js';
import { parseOriginalConfig, readOriginalConfig } from '../../src/mapping/original-config.js';
import { sharedFixture } from '../helpers/paths.js';
import { caseYamlText } from './case-tensors.js';

function codeOf(f: () => unknown): { code?: string; field?: unknown; message: string } {
  try {
    f();
  } catch (e) {
    if (isCkptError(e)) return { code: e.code, field: e.data?.field, message: e.message };
    throw e;
  }
  throw new Error('no error thrown');
}

describe('the fixture YAMLs', () => {
  it('sd1 (v1-inference style)', () => {
    const oc = parseOriginalConfig(caseYamlText('sd1'), 'original_config.yaml');
    expect(oc).toMatchObject({
      file: 'original_config.yaml',
      target: 'ldm.models.diffusion.ddpm.LatentDiffusion',
      parameterization: undefined,
      linearStart: { value: 0.00085, kind: 'float' },
      linearEnd: { value: 0.012, kind: 'float' },
      timesteps: 1000,
      imageSize: 64,
      channels: 4,
      scaleFactor: { value: 0.18215, kind: 'float' },
      condStageTarget: 'ldm.modules.encoders.modules.FrozenCLIPEmbedder',
      condStageKind: 'FrozenCLIPEmbedder',
      unetSection: 'unet_config',
      vae: { embedDim: 4, zChannels: 4, ch: 32, chMult: [1, 1], numResBlocks: 1, inChannels: 3, outCh: 3 },
    });
    expect(oc.unet).toMatchObject({
      inChannels: 4,
      outChannels: 4,
      modelChannels: 32,
      channelMult: [1, 1],
      attentionResolutions: [1],
      numResBlocks: 1,
      numHeads: 8,
      numHeadChannels: undefined,
      useLinearInTransformer: false,
      transformerDepth: 1,
      contextDim: 32,
    });
  });

  it('sd2 (v2-inference-v style)', () => {
    const oc = parseOriginalConfig(caseYamlText('sd2'));
    expect(oc.parameterization).toBe('v');
    expect(oc.condStageKind).toBe('FrozenOpenCLIPEmbedder');
    expect(oc.unet).toMatchObject({ numHeads: undefined, numHeadChannels: 16, useLinearInTransformer: true, attentionResolutions: [2, 1] });
  });

  it('sdxl (SGM network_config, list context_dim and transformer_depth)', () => {
    const oc = parseOriginalConfig(caseYamlText('sdxl-base'));
    expect(oc.unetSection).toBe('network_config');
    expect(oc.condStageKind).toBeUndefined();
    expect(typeof oc.unet?.contextDim).toBe('number');
  });

  it('reads a file', async () => {
    const oc = await readOriginalConfig(sharedFixture('cases/sd1/original_config.yaml'));
    expect(oc.file).toMatch(/original_config\.yaml$/);
  });
});

describe('PyYAML-like values', () => {
  const base = caseYamlText('sd1');
  it('keeps ints and floats apart', () => {
    expect(parseOriginalConfig(base.replace('linear_start: 0.00085', 'linear_start: 1')).linearStart).toEqual({ value: 1, kind: 'int' });
    expect(parseOriginalConfig(base.replace('linear_start: 0.00085', 'linear_start: 1.e-3')).linearStart).toEqual({ value: 0.001, kind: 'float' });
  });
  it('takes the last of duplicate keys, as PyYAML does', () => {
    expect(parseOriginalConfig(base.replace('timesteps: 1000', 'timesteps: 1000\n    timesteps: 500')).timesteps).toBe(500);
  });
  it('treats num_heads -1 as unset', () => {
    const y = caseYamlText('sd2').replace('num_head_channels: 16', 'num_head_channels: 16\n        num_heads: -1');
    expect(parseOriginalConfig(y).unet?.numHeads).toBeUndefined();
  });
  it('takes the first context_dim of a list', () => {
    expect(parseOriginalConfig(base.replace('context_dim: 32', 'context_dim: [32, 64]')).unet?.contextDim).toBe(32);
  });
});

describe('bad YAML inputs', () => {
  const base = caseYamlText('sd1');
  const sd2 = caseYamlText('sd2');
  const cases: [string, string, string, string?][] = [
    ['unparsable', 'model: [1, 2\n', 'E_ORIGINAL_CONFIG'],
    ['tab-indented garbage', 'model:\n\t- x: [\n', 'E_ORIGINAL_CONFIG'],
    ['empty document', '', 'E_ORIGINAL_CONFIG', ''],
    ['top level is a list', '- 1\n- 2\n', 'E_ORIGINAL_CONFIG', ''],
    ['no model', 'foo: 1\n', 'E_ORIGINAL_CONFIG', 'model'],
    ['model is a string', 'model: hello\n', 'E_ORIGINAL_CONFIG', 'model'],
    ['no model.params', 'model:\n  target: x\n', 'E_ORIGINAL_CONFIG', 'model.params'],
    ['no first_stage_config', base.replace('first_stage_config:', 'first_stage_configX:'), 'E_ORIGINAL_CONFIG', 'model.params.first_stage_config'],
    ['no ddconfig', base.replace('ddconfig:', 'ddconfigX:'), 'E_ORIGINAL_CONFIG', 'model.params.first_stage_config.params.ddconfig'],
    ['no embed_dim', base.replace('embed_dim: 4', 'embed_dimX: 4'), 'E_ORIGINAL_CONFIG', 'model.params.first_stage_config.params.embed_dim'],
    ['ch_mult not a list', base.replace('ch_mult:\n          - 1\n          - 1', 'ch_mult: 2'), 'E_ORIGINAL_CONFIG', 'model.params.first_stage_config.params.ddconfig.ch_mult'],
    ['empty ch_mult', base.replace('ch_mult:\n          - 1\n          - 1', 'ch_mult: []'), 'E_ORIGINAL_CONFIG', 'model.params.first_stage_config.params.ddconfig.ch_mult'],
    ['model_channels a string', base.replace('model_channels: 32', 'model_channels: "32"'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.model_channels'],
    ['model_channels a float', base.replace('model_channels: 32', 'model_channels: 32.0'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.model_channels'],
    ['model_channels zero', base.replace('model_channels: 32', 'model_channels: 0'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.model_channels'],
    ['channel_mult entry bad', base.replace('channel_mult: [ 1, 1 ]', 'channel_mult: [ 1, x ]'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.channel_mult[1]'],
    ['no attention_resolutions', base.replace('attention_resolutions: [ 1 ]', ''), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.attention_resolutions'],
    ['no transformer_depth', base.replace('transformer_depth: 1', ''), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.transformer_depth'],
    ['no context_dim', base.replace('context_dim: 32', ''), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.context_dim'],
    ['unet_config without params', base.replace(/unet_config:\n      target: [^\n]*\n      params:/, 'unet_config:\n      target: x\n      paramsX:'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params'],
    ['linear without heads', sd2.replace('num_head_channels: 16 # need to fix for flash-attn', ''), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.num_head_channels'],
    ['num_head_channels zero', sd2.replace('num_head_channels: 16', 'num_head_channels: 0'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.num_head_channels'],
    ['use_linear_in_transformer a string', sd2.replace('use_linear_in_transformer: True', 'use_linear_in_transformer: maybe'), 'E_ORIGINAL_CONFIG', 'model.params.unet_config.params.use_linear_in_transformer'],
    ['cond_stage_config without target', base.replace('target: ldm.modules.encoders.modules.FrozenCLIPEmbedder', 'params: {}'), 'E_ORIGINAL_CONFIG', 'model.params.cond_stage_config.target'],
    ['parameterization not a string', sd2.replace('parameterization: "v"', 'parameterization: [v]'), 'E_ORIGINAL_CONFIG', 'model.params.parameterization'],
    ['linear_start a string', base.replace('linear_start: 0.00085', 'linear_start: low'), 'E_ORIGINAL_CONFIG', 'model.params.linear_start'],
    ['linear_start infinite', base.replace('linear_start: 0.00085', 'linear_start: .inf'), 'E_ORIGINAL_CONFIG', 'model.params.linear_start'],
    ['huge integer', base.replace('timesteps: 1000', 'timesteps: 100000000000000000000'), 'E_ORIGINAL_CONFIG', 'model.params.timesteps'],
    ['alias bomb', 'a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\nmodel: {}\n', 'E_ORIGINAL_CONFIG'],
  ];
  for (const [name, text, code, field] of cases) {
    it(name, () => {
      const got = codeOf(() => parseOriginalConfig(text, 'x.yaml'));
      expect(got.code).toBe(code);
      expect(got.message.startsWith('x.yaml: ')).toBe(true);
      if (field !== undefined) {
        expect(got.field).toBe(field);
        if (field) expect(got.message).toContain(field);
      }
    });
  }
});

describe('reading files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'oc-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing file is E_IO', async () => {
    await expect(readOriginalConfig(join(dir, 'none.yaml'))).rejects.toMatchObject({ code: 'E_IO' });
  });

  it('a file over MAX_CONFIG_FILE_BYTES is E_LIMIT, before it is read', async () => {
    const big = join(dir, 'big.yaml');
    writeFileSync(big, '');
    truncateSync(big, MAX_CONFIG_FILE_BYTES + 1);
    await expect(readOriginalConfig(big)).rejects.toMatchObject({ code: 'E_LIMIT' });
  });
});
