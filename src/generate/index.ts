/** The test-generation engine: everything of a Stable Diffusion generation except the networks. */
export { TorchGenerator, torchRandn, torchRand, normalizeSeed, MAX_TORCH_SEED } from './torch-random.js';
export { ClipTokenizer, basicClean } from './tokenizer.js';
export type { ClipTokenizerOptions, Encoding } from './tokenizer.js';
export { generate, preprocessImage, postprocessImage, sampleLatents } from './pipeline.js';
export type { PipelineModels, GenerateOptions, GenerateResult, GenerateTimings, StepEvent, RgbImage } from './pipeline.js';
export {
  createScheduler,
  resolveSchedulerName,
  SCHEDULER_CLASSES,
  PndmScheduler,
  DdimScheduler,
  EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler,
} from './schedulers/index.js';
export type { Scheduler, SchedulerClassName, SchedulerConfigJson, StepContext, PredictionType, TimestepSpacing } from './schedulers/index.js';
export type { NoiseSource } from './schedulers/common.js';
export { encodePng, decodePng, imageToRgb8, writePng, readPng } from './png.js';
export type { Tensor } from './tensor.js';
export { generateSdxl, generateSdxlImg2Img, generateSdxlInpaint, SDXL_INPAINT_DEFAULT_STRENGTH, sdxlConditioning, sdxlTimeIds, sdxlImg2ImgTimeIds } from './sdxl.js';
export type { SdxlModels, SdxlGenerateOptions, SdxlImg2ImgOptions, SdxlInpaintOptions, SdxlConditioningOptions, SdxlTextEncoderOutput } from './sdxl.js';
export { generateInpaint, preprocessMask, blendLatents } from './inpaint.js';
export type { InpaintOptions } from './inpaint.js';
export { generatePix2Pix, pix2pixGuidance, posteriorMode, PIX2PIX_DEFAULT_IMAGE_GUIDANCE } from './pix2pix.js';
export type { Pix2PixOptions } from './pix2pix.js';
export { generateUpscale, lowResAlphasCumprod, checkNoiseLevel, UPSCALE_DEFAULT_NOISE_LEVEL, UPSCALE_DEFAULT_MAX_NOISE_LEVEL } from './upscale.js';
export type { UpscaleOptions } from './upscale.js';
export { generateDepth, depthPrepare, depthFromImage, prepareDepthMap, resizeBicubic, DEPTH_DEFAULT_STRENGTH } from './depth.js';
export type { DepthOptions } from './depth.js';
