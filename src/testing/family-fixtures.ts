/**
 * The tiny fixtures of the families without a shared golden case (ControlNet, x4 upscaler, SD 2.1
 * unCLIP, the SDXL refiner and inpainting model, SD 1.x inpainting and instruct-pix2pix, SD 2.x
 * inpainting, standalone SD and SDXL VAEs): architecture parameters and container of each file
 * under fixtures/families/ (made by fixtures/generate_families.py with real PyTorch from the key
 * lists these give).
 */
import type { FamilyId } from '../mapping/plan-types.js';
import {
  checkpointTensors,
  controlNetTensors,
  sgmCheckpointTensors,
  unclipCheckpointTensors,
  upscalerCheckpointTensors,
  vaeTensors,
  X4_UPSCALER_LAYOUT,
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
  /** safetensors `__metadata__` entries besides `format: pt`. */
  readonly metadata?: Readonly<Record<string, string>>;
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
const TINY_CLIP_L = { kind: 'clip-l', width: 24, layers: 1, vocab: 64, positions: 77, positionIds: true } as const;
/** SGM's OpenCLIP bigG stand-in: text_projection to 32 (the pooled text embedding width). */
const TINY_BIGG = { kind: 'openclip', width: 32, layers: 2, vocab: 64, positions: 77, projectionDim: 32 } as const;
/**
 * SDXL's label_emb input: the pooled bigG embedding plus 256-wide Fourier features of the size and
 * crop conditionings (6 for the base and inpainting model, 5 with the aesthetic score for the
 * refiner): 2816 and 2560 at full size.
 */
const sgmAdm = (features: number): number => TINY_BIGG.projectionDim + 256 * features;
/** Half the channels of TINY_SDXL_UNET (8 / 16 / 16), to keep the whole SGM files small. */
const SMALL_SGM_UNET: UnetLayout = { ...TINY_SDXL_UNET, modelChannels: 8 };

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
        // The released architecture, narrowed: same levels, classes and attention pattern.
        unet: { ...X4_UPSCALER_LAYOUT.unet, modelChannels: 8, numResBlocks: 1, contextDim: 32 },
        vae: { ...X4_UPSCALER_LAYOUT.vae, ch: 4, numResBlocks: 1 },
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
  {
    file: 'sdxl-refiner.safetensors',
    family: 'sdxl-refiner',
    container: 'safetensors',
    floatDType: 'F16',
    seed: 1507,
    tensors: () =>
      sgmCheckpointTensors({
        unet: { ...SMALL_SGM_UNET, contextDim: TINY_BIGG.width, transformerDepth: 1, admInChannels: sgmAdm(5) },
        vae: TINY_VAE,
        embedders: [TINY_BIGG],
        denoiserSigmas: true,
        ema: false,
      }),
  },
  {
    file: 'sdxl-inpaint.safetensors',
    family: 'sdxl-inpaint',
    container: 'safetensors',
    floatDType: 'F16',
    seed: 1508,
    tensors: () =>
      sgmCheckpointTensors({
        unet: { ...SMALL_SGM_UNET, inChannels: 9, contextDim: TINY_CLIP_L.width + TINY_BIGG.width, admInChannels: sgmAdm(6) },
        vae: TINY_VAE,
        embedders: [TINY_CLIP_L, TINY_BIGG],
        denoiserSigmas: true,
        ema: false,
      }),
  },
  {
    file: 'sd1-inpaint.ckpt',
    family: 'sd1-inpaint',
    container: 'lightning',
    floatDType: 'F16',
    seed: 1509,
    globalStep: 440000,
    tensors: () => checkpointTensors({ unet: { ...TINY_SD15_UNET, inChannels: 9 }, vae: TINY_VAE, textEncoder: TINY_CLIP_L, scheduleBuffers: true, ema: false }),
  },
  {
    file: 'sd1-pix2pix.safetensors',
    family: 'sd1-pix2pix',
    container: 'safetensors',
    floatDType: 'F16',
    seed: 1510,
    // 8 base channels: the LitEma copies double the UNet.
    tensors: () => checkpointTensors({ unet: { ...TINY_SD15_UNET, modelChannels: 8, inChannels: 8 }, vae: TINY_VAE, textEncoder: TINY_CLIP_L, scheduleBuffers: true, ema: true }),
  },
  {
    file: 'sd2-inpaint.ckpt',
    family: 'sd2-inpaint',
    container: 'lightning',
    floatDType: 'F16',
    seed: 1511,
    globalStep: 200000,
    tensors: () => checkpointTensors({ unet: { ...TINY_SD2_UNET, inChannels: 9 }, vae: TINY_VAE, textEncoder: TINY_OPENCLIP, scheduleBuffers: true, ema: false }),
  },
  {
    // No hint in the name: only the SAI model spec says this VAE belongs to SDXL.
    file: 'vae-modelspec.safetensors',
    family: 'vae',
    container: 'safetensors',
    floatDType: 'F32',
    seed: 1512,
    metadata: {
      'modelspec.sai_model_spec': '1.0.0',
      'modelspec.architecture': 'stable-diffusion-xl-v1-base/vae',
      'modelspec.implementation': 'https://github.com/Stability-AI/generative-models',
      'modelspec.title': 'tiny SDXL VAE',
    },
    tensors: () => vaeTensors(TINY_VAE, ''),
  },
  {
    // torch.save(state_dict) with top-level names, named like Stability's fine-tuned SD VAEs.
    file: 'vae-ft-mse-tiny.pt',
    family: 'vae',
    container: 'torch',
    floatDType: 'F32',
    seed: 1513,
    tensors: () => vaeTensors(TINY_VAE, ''),
  },
];
