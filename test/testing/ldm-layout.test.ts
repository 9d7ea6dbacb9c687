import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkpointTensors, SD15_LAYOUT, type CheckpointLayout, type TextEncoderLayout } from '../../src/testing/ldm-layout.js';
import { sharedFixture } from '../helpers/paths.js';

interface CaseJson {
  unet: { model_channels: number; channel_mult: number[]; attention_resolutions: number[]; num_res_blocks: number; context_dim: number; use_linear_in_transformer?: boolean };
  vae: { ch: number; ch_mult: number[]; num_res_blocks: number; z_channels: number; embed_dim: number };
  text_encoders: { te: { width: number; layers: number; vocab_size: number; embed_dim?: number } };
  ema_copies?: boolean;
  state_dict_keys: Record<string, [string, number[]]>;
}

function layoutOf(c: CaseJson, textKind: TextEncoderLayout['kind']): CheckpointLayout {
  const te = c.text_encoders.te;
  // attention_resolutions are downsampling factors 1, 2, 4, ...: level l has factor 2^l.
  const attentionLevels = c.unet.channel_mult.map((_, l) => l).filter((l) => c.unet.attention_resolutions.includes(2 ** l));
  return {
    unet: {
      modelChannels: c.unet.model_channels,
      channelMult: c.unet.channel_mult,
      numResBlocks: c.unet.num_res_blocks,
      attentionLevels,
      contextDim: c.unet.context_dim,
      transformerDepth: 1,
      linearProjection: Boolean(c.unet.use_linear_in_transformer),
      inChannels: 4,
      outChannels: 4,
    },
    vae: { ch: c.vae.ch, chMult: c.vae.ch_mult, numResBlocks: c.vae.num_res_blocks, zChannels: c.vae.z_channels, embedDim: c.vae.embed_dim },
    textEncoder:
      textKind === 'clip-l'
        ? { kind: 'clip-l', width: te.width, layers: te.layers, vocab: te.vocab_size, positions: 77, positionIds: true }
        : { kind: 'openclip', width: te.width, layers: te.layers, vocab: te.vocab_size, positions: 77, projectionDim: te.embed_dim ?? te.width },
    scheduleBuffers: true,
    ema: Boolean(c.ema_copies),
  };
}

describe('LDM checkpoint layout', () => {
  it.each([
    ['sd1', 'clip-l'],
    ['sd1-pipe', 'clip-l'],
    ['sd2', 'openclip'],
  ] as const)('reproduces the key list of the real %s fixture (names, shapes, order)', (name, kind) => {
    const c = JSON.parse(readFileSync(sharedFixture(`cases/${name}/case.json`), 'utf8')) as CaseJson;
    const expected = Object.entries(c.state_dict_keys).map(([k, [, shape]]) => `${k} ${JSON.stringify(shape)}`);
    const got = checkpointTensors(layoutOf(c, kind)).map((t) => `${t.name} ${JSON.stringify(t.shape)}`);
    expect(got).toEqual(expected);
  });

  it('gives the SD 1.5 parameter count (UNet 859.5M, VAE 83.7M, CLIP-L 123.1M)', () => {
    const count = (prefix: string) =>
      checkpointTensors(SD15_LAYOUT)
        .filter((t) => t.name.startsWith(prefix) && t.dtype !== 'I64')
        .reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    expect(count('model.diffusion_model.')).toBe(859_520_964);
    expect(count('first_stage_model.')).toBe(83_653_863);
    expect(count('cond_stage_model.')).toBe(123_060_480);
  });
});
