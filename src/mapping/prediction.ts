/**
 * The three settings the weights alone do not fix: the training objective (epsilon or
 * v-prediction), the image size the model was trained at, and whether attention must be upcast.
 * Each comes back with the evidence that decided it and a confidence, so a guess is never silent.
 *
 * Order of authority, highest first:
 *  1. explicit flags (--prediction-type, --image-size, --upcast-attention);
 *  2. the original YAML, read exactly as Diffusers' download_from_original_stable_diffusion_ckpt
 *     does (`parameterization: "v"` -> v_prediction at 768, except the brittle
 *     `global_step == 875000` rule for SD 2-base -> epsilon at 512; otherwise epsilon at 512);
 *  3. without a YAML: safetensors `modelspec.*` metadata (kohya / ComfyUI) and ComfyUI's `v_pred`
 *     marker tensor, then the same global_step rules Diffusers applies to its default YAMLs;
 *  4. the family default (SD 1.x epsilon/512; SD 2.x v_prediction/768 as Diffusers assumes for
 *     every SD 2 file, flagged low confidence; SDXL epsilon/1024).
 *
 * SDXL differs in two ways. Its SGM YAMLs have no `parameterization` (v models say so only in
 * `denoiser_config`, which Diffusers never reads; its SDXL branch writes `prediction_type:
 * "epsilon"` unconditionally and its loaders check no `v_pred` key: anchors.md (b)), so the
 * file's own evidence (ComfyUI's `v_pred` / `ztsnr` markers, `modelspec.*` metadata) is consulted
 * with or without a YAML; and the image size is 1024 (Diffusers sets it for any `network_config`
 * YAML). A fourth decision, zero terminal SNR, comes only from that evidence (ComfyUI
 * comfy/supported_models.py SDXL.model_type: `v_pred` -> V_PREDICTION, plus `ztsnr` -> zsnr
 * sampling); it maps to `rescale_betas_zero_snr: true` + `timestep_spacing: "trailing"`.
 */
import type { TensorInfo } from '../formats/tensor-source.js';
import type { OriginalConfig } from './original-config.js';
import type { Evidence, FamilyDetection, FamilyId } from './plan-types.js';

export type PredictionType = 'epsilon' | 'v_prediction';
export type Confidence = 'high' | 'medium' | 'low';

export interface Decided<T> {
  readonly value: T;
  readonly evidence: readonly Evidence[];
  readonly confidence: Confidence;
}

export interface PredictionOverrides {
  /** `v-prediction` is accepted and normalised, as the converter does. */
  readonly predictionType?: PredictionType | 'v-prediction';
  readonly imageSize?: number;
  readonly upcastAttention?: boolean;
  /** Force zero-terminal-SNR scheduling on or off. */
  readonly zeroTerminalSnr?: boolean;
}

export interface PredictionInput {
  readonly family: FamilyId | FamilyDetection;
  readonly originalConfig?: OriginalConfig;
  /** safetensors `__metadata__` (empty for torch files). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Top-level values next to the state dict (Lightning's `global_step`, ...). */
  readonly extras: Readonly<Record<string, unknown>>;
  readonly tensors: readonly TensorInfo[];
  readonly overrides?: PredictionOverrides;
}

export interface PredictionDecision {
  readonly predictionType: Decided<PredictionType>;
  readonly imageSize: Decided<number>;
  readonly upcastAttention: Decided<boolean>;
  /** Zero terminal SNR (rescale_betas_zero_snr + trailing spacing); decidePrediction always sets it. */
  readonly zeroTerminalSnr?: Decided<boolean>;
}

/** Stability's SD 2.0-base (512, epsilon) checkpoint was saved at this step. */
export const SD2_BASE_GLOBAL_STEP = 875000;
/** Stability's SD 2.1-768 checkpoint: Diffusers turns attention upcasting on for it. */
export const SD21_768_GLOBAL_STEP = 110000;

export function decidePrediction(input: PredictionInput): PredictionDecision {
  const family = typeof input.family === 'string' ? input.family : input.family.family;
  const step = globalStep(input.extras);
  // SGM YAMLs say nothing about the prediction type, so SDXL files are always asked.
  const hints = input.originalConfig && !isSdxl(family) ? undefined : metadataHints(input.metadata, input.tensors);
  const predictionType = decidePredictionType(family, input, step, hints);
  return {
    predictionType,
    imageSize: decideImageSize(family, input, step, hints),
    upcastAttention: decideUpcast(family, input, step),
    zeroTerminalSnr: decideZeroTerminalSnr(input, predictionType),
  };
}

/** Lightning's `global_step` as an integer, or undefined. */
export function globalStep(extras: Readonly<Record<string, unknown>>): number | undefined {
  const v = extras.global_step;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  return undefined;
}

function ev(what: string, found: string, implies: string): Evidence {
  return { what, found, implies };
}

function isSd2(family: FamilyId): boolean {
  return family.startsWith('sd2');
}

function isSdxl(family: FamilyId): boolean {
  return family.startsWith('sdxl');
}

/** Diffusers' converter works at 1024 for every SGM (`network_config`) YAML. */
export const SDXL_IMAGE_SIZE = 1024;

/** The YAML declares v-parameterisation (v2-inference-v.yaml). */
function yamlSaysV(oc: OriginalConfig): boolean {
  return oc.parameterization === 'v';
}

// ------------------------------------------------------------------------------------------------
// Metadata and marker tensors (only consulted without a YAML; Diffusers reads neither)
// ------------------------------------------------------------------------------------------------

interface Hint<T> {
  readonly value: T;
  readonly evidence: Evidence;
  readonly confidence: Confidence;
}

interface MetadataHints {
  readonly prediction: Hint<PredictionType>[];
  readonly imageSize: Hint<number>[];
}

function metadataHints(metadata: Readonly<Record<string, string>>, tensors: readonly TensorInfo[]): MetadataHints {
  const prediction: Hint<PredictionType>[] = [];
  const imageSize: Hint<number>[] = [];
  for (const key of ['modelspec.predict_key', 'modelspec.prediction_type']) {
    const p = parsePredictionWord(metadata[key]);
    if (p) prediction.push({ value: p, confidence: 'high', evidence: ev(`metadata ${key}`, metadata[key], p) });
  }
  if (tensors.some((t) => t.name === 'v_pred')) {
    prediction.push({ value: 'v_prediction', confidence: 'high', evidence: ev('marker tensor v_pred', 'present', 'v_prediction') });
  }
  const arch = metadata['modelspec.architecture'];
  const archHint = arch ? architectureHint(arch) : undefined;
  if (archHint?.prediction) prediction.push({ value: archHint.prediction, confidence: 'medium', evidence: ev('metadata modelspec.architecture', arch, archHint.prediction) });
  const res = /^(\d+)x(\d+)$/.exec(metadata['modelspec.resolution'] ?? '');
  if (res && res[1] === res[2]) {
    imageSize.push({ value: Number(res[1]), confidence: 'high', evidence: ev('metadata modelspec.resolution', res[0], `image size ${res[1]}`) });
  }
  if (archHint?.size) imageSize.push({ value: archHint.size, confidence: 'medium', evidence: ev('metadata modelspec.architecture', arch, `image size ${archHint.size}`) });
  return { prediction, imageSize };
}

/** `v`, `v-zsnr`, `v_prediction` -> v_prediction; `eps`, `epsilon` -> epsilon. */
function parsePredictionWord(word: string | undefined): PredictionType | undefined {
  if (!word) return undefined;
  const w = word.trim().toLowerCase();
  if (w === 'v' || w.startsWith('v-') || w.startsWith('v_') || w === 'v-prediction') return 'v_prediction';
  if (w === 'eps' || w === 'epsilon') return 'epsilon';
  return undefined;
}

/** SAI model-spec architecture ids: `stable-diffusion-v2-768-v`, `stable-diffusion-v2-512`, ... */
function architectureHint(arch: string): { prediction?: PredictionType; size?: number } {
  const base = arch.split('/')[0];
  // stable-diffusion-xl-v1-base / -refiner: says the size, not the prediction type (v fine-tunes keep the id).
  if (/^stable-diffusion-xl-v1-(base|refiner)$/.test(base)) return { size: SDXL_IMAGE_SIZE };
  const m = /^stable-diffusion-v(1|2)(?:-(\d+))?(-v)?$/.exec(base);
  if (!m) return {};
  if (m[1] === '1') return { prediction: 'epsilon', size: 512 };
  return { prediction: m[3] ? 'v_prediction' : 'epsilon', size: m[2] ? Number(m[2]) : undefined };
}

/** The first hint decides; disagreeing hints lower the confidence and are kept as evidence. */
function fromHints<T>(hints: readonly Hint<T>[]): Decided<T> | undefined {
  if (hints.length === 0) return undefined;
  const agree = hints.every((h) => h.value === hints[0].value);
  return {
    value: hints[0].value,
    evidence: hints.map((h) => h.evidence),
    confidence: agree ? hints[0].confidence : 'low',
  };
}

// ------------------------------------------------------------------------------------------------
// Prediction type
// ------------------------------------------------------------------------------------------------

function decidePredictionType(family: FamilyId, input: PredictionInput, step: number | undefined, hints: MetadataHints | undefined): Decided<PredictionType> {
  const flag = input.overrides?.predictionType;
  if (flag) {
    const value: PredictionType = flag === 'v-prediction' ? 'v_prediction' : flag;
    return { value, confidence: 'high', evidence: [ev('flag --prediction-type', flag, value)] };
  }
  const oc = input.originalConfig;
  if (isSdxl(family)) return sdxlPrediction(family, oc, hints);
  if (oc) return predictionFromYaml(oc, step);
  const fromMeta = hints ? fromHints(hints.prediction) : undefined;
  if (fromMeta) return fromMeta;
  return predictionDefault(family, step);
}

/** SDXL: the file's markers and metadata, else epsilon (what Diffusers writes for every SDXL file). */
function sdxlPrediction(family: FamilyId, oc: OriginalConfig | undefined, hints: MetadataHints | undefined): Decided<PredictionType> {
  const fromMeta = hints ? fromHints(hints.prediction) : undefined;
  if (fromMeta) return fromMeta;
  if (oc) {
    return {
      value: 'epsilon',
      confidence: 'high',
      evidence: [ev(`original config model.params.${oc.unetSection ?? 'unet_config'}`, 'SGM config, no v_pred marker or prediction metadata', 'epsilon (Diffusers writes epsilon for SDXL)')],
    };
  }
  return {
    value: 'epsilon',
    confidence: 'medium',
    evidence: [ev('family', family, 'epsilon (SDXL base/refiner/inpainting are epsilon models; no v_pred marker or prediction metadata). Pass --prediction-type v_prediction for v fine-tunes that carry neither')],
  };
}

/** download_from_original_stable_diffusion_ckpt: `parameterization == "v"` and global_step. */
function predictionFromYaml(oc: OriginalConfig, step: number | undefined): Decided<PredictionType> {
  const what = 'original config model.params.parameterization';
  if (!yamlSaysV(oc)) {
    return { value: 'epsilon', confidence: 'high', evidence: [ev(what, oc.parameterization ?? 'absent', 'epsilon')] };
  }
  if (step === SD2_BASE_GLOBAL_STEP) {
    return {
      value: 'epsilon',
      confidence: 'medium',
      evidence: [ev(what, 'v', 'v_prediction'), ev('checkpoint global_step', String(step), 'SD 2-base checkpoint: epsilon (Diffusers rule)')],
    };
  }
  return { value: 'v_prediction', confidence: 'high', evidence: [ev(what, 'v', 'v_prediction')] };
}

/**
 * The released x4 upscaler and SD 2.1 unCLIP models are v-parameterised (x4-upscaling.yaml,
 * v2-1-stable-unclip-{h,l}-inference.yaml: `parameterization: "v"`); their image sizes are 128
 * (the upscaler's unet_config image_size, which Diffusers uses for StableDiffusionUpscalePipeline)
 * and 768 (unCLIP latent image_size 96 x 8). ControlNets have neither (their files hold no
 * scheduler or image size).
 */
const FAMILY_DEFAULTS: Partial<Record<FamilyId, { readonly prediction: PredictionType; readonly size: number; readonly why: string }>> = {
  'sd-x4-upscaler': { prediction: 'v_prediction', size: 128, why: 'x4-upscaling.yaml: parameterization "v", unet image_size 128' },
  'sd21-unclip-h': { prediction: 'v_prediction', size: 768, why: 'v2-1-stable-unclip-h-inference.yaml: parameterization "v", image_size 96 (768 px)' },
  'sd21-unclip-l': { prediction: 'v_prediction', size: 768, why: 'v2-1-stable-unclip-l-inference.yaml: parameterization "v", image_size 96 (768 px)' },
};

/** Without YAML, Diffusers loads v1-inference.yaml (eps) or, for SD 2, v2-inference-v.yaml (v). */
function predictionDefault(family: FamilyId, step: number | undefined): Decided<PredictionType> {
  const known = FAMILY_DEFAULTS[family];
  if (known) return { value: known.prediction, confidence: 'medium', evidence: [ev('family', family, `${known.prediction} (family default: ${known.why})`)] };
  if (!isSd2(family)) {
    return { value: 'epsilon', confidence: 'medium', evidence: [ev('family', family, 'epsilon (family default; no YAML, metadata or marker said otherwise)')] };
  }
  if (step === SD2_BASE_GLOBAL_STEP) {
    return { value: 'epsilon', confidence: 'medium', evidence: [ev('checkpoint global_step', String(step), 'SD 2-base checkpoint: epsilon (Diffusers rule)')] };
  }
  if (family !== 'sd2') {
    // Stability's SD 2 inpainting and depth models are epsilon models (their YAMLs have no
    // `parameterization: "v"`); Diffusers' v-default would be wrong for them.
    return { value: 'epsilon', confidence: 'medium', evidence: [ev('family', family, 'epsilon (Stability trained SD 2 inpainting/depth as epsilon models)')] };
  }
  return {
    value: 'v_prediction',
    confidence: 'low',
    evidence: [
      ev('family', family, 'v_prediction: DEFAULT, nothing in the file says; Diffusers assumes SD 2-768-v for every SD 2 checkpoint. Pass --prediction-type epsilon for SD 2-base (512) models'),
    ],
  };
}

// ------------------------------------------------------------------------------------------------
// Image size
// ------------------------------------------------------------------------------------------------

function decideImageSize(family: FamilyId, input: PredictionInput, step: number | undefined, hints: MetadataHints | undefined): Decided<number> {
  const flag = input.overrides?.imageSize;
  if (flag !== undefined) return { value: flag, confidence: 'high', evidence: [ev('flag --image-size', String(flag), `image size ${flag}`)] };
  if (family === 'vae') {
    return { value: 512, confidence: 'medium', evidence: [ev('family', 'vae', 'image size 512 (convert_vae_pt_to_diffusers.py always uses 512)')] };
  }
  const oc = input.originalConfig;
  if (oc && isSdxl(family)) {
    return { value: SDXL_IMAGE_SIZE, confidence: 'high', evidence: [ev(`original config model.params.${oc.unetSection ?? 'unet_config'}`, 'SGM config', `image size ${SDXL_IMAGE_SIZE} (Diffusers rule for SDXL)`)] };
  }
  if (oc && family === 'sd-x4-upscaler') {
    // download_from_original_stable_diffusion_ckpt: for StableDiffusionUpscalePipeline the image
    // size is the YAML's unet_config image_size, whatever the parameterization said.
    const size = oc.unet?.imageSize ?? FAMILY_DEFAULTS['sd-x4-upscaler']!.size;
    return { value: size, confidence: 'high', evidence: [ev('original config unet_config.params.image_size', String(oc.unet?.imageSize ?? 'absent'), `image size ${size} (Diffusers rule for the x4 upscaler)`)] };
  }
  if (oc) return imageSizeFromYaml(oc, step);
  const fromMeta = hints ? fromHints(hints.imageSize) : undefined;
  if (fromMeta) return fromMeta;
  const metaPrediction = hints ? fromHints(hints.prediction) : undefined;
  if (isSd2(family) && metaPrediction) {
    const size = metaPrediction.value === 'v_prediction' ? 768 : 512;
    return { value: size, confidence: 'medium', evidence: [...metaPrediction.evidence, ev('SD 2 prediction type', metaPrediction.value, `image size ${size} (768 models are v, 512 models epsilon)`)] };
  }
  return imageSizeDefault(family, step);
}

/** Same branch as the prediction type: v -> 768 unless global_step 875000; otherwise 512. */
function imageSizeFromYaml(oc: OriginalConfig, step: number | undefined): Decided<number> {
  const what = 'original config model.params.parameterization';
  if (!yamlSaysV(oc)) return { value: 512, confidence: 'high', evidence: [ev(what, oc.parameterization ?? 'absent', 'image size 512')] };
  if (step === SD2_BASE_GLOBAL_STEP) {
    return { value: 512, confidence: 'medium', evidence: [ev(what, 'v', 'image size 768'), ev('checkpoint global_step', String(step), 'SD 2-base checkpoint: image size 512 (Diffusers rule)')] };
  }
  return { value: 768, confidence: 'high', evidence: [ev(what, 'v', 'image size 768')] };
}

function imageSizeDefault(family: FamilyId, step: number | undefined): Decided<number> {
  const known = FAMILY_DEFAULTS[family];
  if (known) return { value: known.size, confidence: 'medium', evidence: [ev('family', family, `image size ${known.size} (family default: ${known.why})`)] };
  if (isSdxl(family)) return { value: SDXL_IMAGE_SIZE, confidence: 'medium', evidence: [ev('family', family, `image size ${SDXL_IMAGE_SIZE} (SDXL default)`)] };
  if (!isSd2(family)) return { value: 512, confidence: 'medium', evidence: [ev('family', family, 'image size 512 (family default)')] };
  if (step === SD2_BASE_GLOBAL_STEP) {
    return { value: 512, confidence: 'medium', evidence: [ev('checkpoint global_step', String(step), 'SD 2-base checkpoint: image size 512 (Diffusers rule)')] };
  }
  if (family !== 'sd2') return { value: 512, confidence: 'medium', evidence: [ev('family', family, 'image size 512 (SD 2 inpainting/depth are 512 models)')] };
  return {
    value: 768,
    confidence: 'low',
    evidence: [ev('family', family, 'image size 768: DEFAULT, nothing in the file says; Diffusers assumes SD 2-768-v. Pass --image-size 512 for SD 2-base models')],
  };
}

// ------------------------------------------------------------------------------------------------
// Attention upcast
// ------------------------------------------------------------------------------------------------

/**
 * Diffusers sets upcast_attention only when it picked the SD 2 YAML itself (no YAML given) and
 * the checkpoint's global_step is 110000 (SD 2.1-768). With a YAML the flag alone decides.
 */
function decideUpcast(family: FamilyId, input: PredictionInput, step: number | undefined): Decided<boolean> {
  const flag = input.overrides?.upcastAttention;
  if (flag !== undefined) return { value: flag, confidence: 'high', evidence: [ev('flag --upcast-attention', String(flag), `upcast_attention ${flag}`)] };
  if (!isSd2(family) || step !== SD21_768_GLOBAL_STEP) {
    return { value: false, confidence: 'high', evidence: [ev('default', 'no flag', 'upcast_attention false')] };
  }
  const stepEvidence = ev('checkpoint global_step', String(step), 'SD 2.1-768 checkpoint');
  if (input.originalConfig) {
    return {
      value: false,
      confidence: 'medium',
      evidence: [stepEvidence, ev('original config', 'given', 'upcast_attention false: Diffusers upcasts only when it chose the YAML itself; pass --upcast-attention for fp16 inference of SD 2.1')],
    };
  }
  return { value: true, confidence: 'medium', evidence: [stepEvidence, ev('rule', 'global_step == 110000', 'upcast_attention true (Diffusers rule)')] };
}

// ------------------------------------------------------------------------------------------------
// Zero terminal SNR
// ------------------------------------------------------------------------------------------------

/** `v-zsnr`, `v_ztsnr`, ... : a prediction word that names zero terminal SNR. */
function saysZeroSnr(word: string | undefined): boolean {
  return word !== undefined && /z(t)?snr/i.test(word);
}

/**
 * ComfyUI writes an empty `ztsnr` tensor next to `v_pred` for zero-terminal-SNR models and reads
 * it as `zsnr` sampling; some savers put `v-zsnr` in `modelspec.prediction_type`. Zero terminal
 * SNR without v-prediction cannot be sampled (the last step has no signal), so the evidence is
 * only acted on for a v-prediction model.
 */
function decideZeroTerminalSnr(input: PredictionInput, prediction: Decided<PredictionType>): Decided<boolean> {
  const flag = input.overrides?.zeroTerminalSnr;
  if (flag !== undefined) return { value: flag, confidence: 'high', evidence: [ev('flag --zero-terminal-snr', String(flag), `rescale_betas_zero_snr ${flag}`)] };
  const found: Evidence[] = [];
  if (input.tensors.some((t) => t.name === 'ztsnr')) found.push(ev('marker tensor ztsnr', 'present', 'zero terminal SNR (ComfyUI zsnr sampling)'));
  for (const key of ['modelspec.prediction_type', 'modelspec.predict_key']) {
    if (saysZeroSnr(input.metadata[key])) found.push(ev(`metadata ${key}`, input.metadata[key], 'zero terminal SNR'));
  }
  if (found.length === 0) {
    return { value: false, confidence: 'high', evidence: [ev('marker tensor ztsnr', 'absent', 'no zero terminal SNR (rescale_betas_zero_snr false)')] };
  }
  if (prediction.value !== 'v_prediction') {
    return {
      value: false,
      confidence: 'low',
      evidence: [...found, ev('prediction type', prediction.value, 'zero terminal SNR ignored: it needs v-prediction; pass --prediction-type v_prediction if the model is v')],
    };
  }
  return {
    value: true,
    confidence: 'high',
    evidence: [...found, ev('scheduler', 'v_prediction + zero terminal SNR', 'rescale_betas_zero_snr true, timestep_spacing "trailing" (Diffusers never sets these when converting)')],
  };
}
