/**
 * The tiny fixtures of the ControlNet, x4 upscaler and SD 2.1 unCLIP families: architecture
 * parameters and container of each file under fixtures/families/ (made by
 * fixtures/generate_families.py with real PyTorch from the key lists these give).
 */
import type { FamilyId } from '../mapping/plan-types.js';
import {
  controlNetTensors,
  unclipCheckpointTensors,
  upscalerCheckpointTensors,
  type LayoutDType,
  type LayoutTensor,
  type UnetLayout,
} from './ldm-layout.js';

export interface FamilyFixture {
  /** File name under fixtures/families/. */
  readonly file: string;
  readonly family: FamilyId;
  /** `lightning`: torch.save({'state_dict': ..., 'global_step': ...}); `torch`: torch.save(state_dict); `safetensors`. */
  readonly container: 'lightning' | 'torch' | 'safetensors';
  readonly floatDType: Extract<LayoutDType, 'F32' | 'F16'>;
  readonly seed: number;
  readonly globalStep?: number;
  readonly tensors: () => LayoutTensor[];
}

const TINY_SD15_UNET: UnetLayout = {
  modelChannels: 16,
  channelMult: [1, 2],
  numResBlocks: 1,
  attentionLevels: [0, 1],
  contextDim: 24,
  transformerDepth: 1,
  linearProjection: false,
  inChannels: 4,
  outChannels: 4,
};

const TINY_SDXL_UNET: UnetLayout = {
  modelChannels: 16,
  channelMult: [1, 2, 2],
  numResBlocks: 1,
  attentionLevels: [1, 2],
  contextDim: 24,
  transformerDepth: [0, 1, 2],
  linearProjection: true,
  inChannels: 4,
  outChannels: 4,
  admInChannels: 48,
};

const TINY_SD2_UNET: UnetLayout = { ...TINY_SD15_UNET, contextDim: 32, linearProjection: true };
const TINY_OPENCLIP = { kind: 'openclip', width: 32, layers: 2, vocab: 64, positions: 77, projectionDim: 32 } as const;
const TINY_VAE = { ch: 8, chMult: [1, 2], numResBlocks: 1, zChannels: 4, embedDim: 4 };

export const FAMILY_FIXTURES: readonly FamilyFixture[] = [
  {
    file: 'controlnet-sd15.pth',
    family: 'controlnet-sd15',
    container: 'torch',
    floatDType: 'F16',
    seed: 1501,
    tensors: () => controlNetTensors({ unet: TINY_SD15_UNET, hintChannels: 3, hintWidths: [4, 8, 12, 16], prefix: 'control_model.' }),
  },
  {
    file: 'controlnet-sd15-bare.safetensors',
    family: 'controlnet-sd15',
    container: 'safetensors',
    floatDType: 'F32',
    seed: 1502,
    tensors: () => controlNetTensors({ unet: TINY_SD15_UNET, hintChannels: 3, hintWidths: [4, 8, 12, 16], prefix: '' }),
  },
  {
    file: 'controlnet-sdxl.safetensors',
    family: 'controlnet-sdxl',
    container: 'safetensors',
    floatDType: 'F16',
    seed: 1503,
    tensors: () => controlNetTensors({ unet: TINY_SDXL_UNET, hintChannels: 3, hintWidths: [4, 8, 12, 16], prefix: '' }),
  },
  {
    file: 'sd-x4-upscaler.ckpt',
    family: 'sd-x4-upscaler',
    container: 'lightning',
    floatDType: 'F16',
    seed: 1504,
    globalStep: 1250000,
    tensors: () =>
      upscalerCheckpointTensors({
        unet: {
          modelChannels: 8,
          channelMult: [1, 2, 2, 4],
          numResBlocks: 1,
          attentionLevels: [1, 2, 3],
          contextDim: 32,
          transformerDepth: 1,
          linearProjection: true,
          inChannels: 7,
          outChannels: 4,
          numClasses: 1000,
          disableSelfAttention: [true, true, true, false],
        },
        vae: { ch: 4, chMult: [1, 2, 4], numResBlocks: 1, zChannels: 4, embedDim: 4 },
        textEncoder: TINY_OPENCLIP,
      }),
  },
  {
    file: 'sd21-unclip-h.ckpt',
    family: 'sd21-unclip-h',
    container: 'lightning',
    floatDType: 'F16',
    seed: 1505,
    globalStep: 1000,
    tensors: () =>
      unclipCheckpointTensors({
        unet: { ...TINY_SD2_UNET, admInChannels: 48 },
        vae: TINY_VAE,
        textEncoder: TINY_OPENCLIP,
        embedder: { visual: { width: 32, layers: 2, patch: 4, imageSize: 8, embedDim: 24 }, textWidth: 32, textVocab: 100 },
      }),
  },
  {
    file: 'sd21-unclip-l.safetensors',
    family: 'sd21-unclip-l',
    container: 'safetensors',
    floatDType: 'F16',
    seed: 1506,
    tensors: () =>
      unclipCheckpointTensors({
        unet: { ...TINY_SD2_UNET, admInChannels: 32 },
        vae: TINY_VAE,
        textEncoder: TINY_OPENCLIP,
        embedder: { visual: { width: 40, layers: 1, patch: 4, imageSize: 8, embedDim: 16 }, textWidth: 24, textVocab: 100, textLayers: 1 },
        normalizerStats: true,
      }),
  },
];
