/**
 * The contract between mapping (tables -> plan, family detection) and the Diffusers writer.
 * A plan is pure data: computed from tensor names and shapes alone, no tensor bytes read.
 */
import type { DType } from '../dtypes.js';
import type { ComponentStructures } from './structure.js';

/** Model families the converter knows. */
export type FamilyId =
  | 'sd1'
  | 'sd1-inpaint'
  | 'sd1-pix2pix'
  | 'sd2'
  | 'sd2-inpaint'
  | 'sd2-depth'
  | 'sdxl-base'
  | 'sdxl-refiner'
  | 'sdxl-inpaint'
  | 'controlnet-sd15'
  | 'controlnet-sdxl'
  | 'sd-x4-upscaler'
  | 'sd21-unclip-h'
  | 'sd21-unclip-l'
  | 'vae';

export interface Evidence {
  /** What was looked at, e.g. a key name or `metadata modelspec.architecture`. */
  readonly what: string;
  /** What was found there. */
  readonly found: string;
  /** What it implies. */
  readonly implies: string;
}

export interface FamilyDetection {
  readonly family: FamilyId;
  readonly evidence: readonly Evidence[];
  /** 'high' when decided by shapes/keys that only this family has. */
  readonly confidence: 'high' | 'medium' | 'low';
}

/**
 * The closed set of tensor ops. Everything a table row can ask for; the writer implements each.
 * `squeeze` and `split` are byte-preserving (a reshape / a byte sub-range); `transpose` needs the
 * whole 2-D tensor; a global dtype cast is applied by the writer after the op.
 */
export type TensorOp =
  | { readonly op: 'copy' }
  /** Drop the trailing size-1 dims ([C, C, 1, 1] -> [C, C]); bytes unchanged. */
  | { readonly op: 'squeeze' }
  /** Part `index` of `parts` equal blocks along axis 0 (OpenCLIP in_proj -> q/k/v). */
  | { readonly op: 'split'; readonly axis: 0; readonly index: number; readonly parts: number }
  /** 2-D transpose (OpenCLIP text_projection). */
  | { readonly op: 'transpose' };

export interface PlannedTensor {
  /** Key in the Diffusers component's state dict, e.g. `down_blocks.0.resnets.0.conv1.weight`. */
  readonly target: string;
  /** Key in the source file. */
  readonly source: string;
  readonly op: TensorOp;
  /** Source dtype. */
  readonly dtype: DType;
  /** Shape after the op. */
  readonly shape: readonly number[];
  /** The compiled mapping row that produced it (its source key or prefix), for explanations. */
  readonly rule?: string;
}

export type ComponentFolder = 'unet' | 'vae' | 'text_encoder' | 'text_encoder_2' | 'controlnet' | 'image_encoder' | 'image_normalizer';

export interface PlannedComponent {
  readonly folder: ComponentFolder;
  /** Diffusers/transformers class, e.g. `UNet2DConditionModel`, `CLIPTextModel`. */
  readonly className: string;
  readonly library: 'diffusers' | 'transformers';
  /** Target tensors in the order the writer should lay them out. */
  readonly tensors: readonly PlannedTensor[];
  /** Source prefix the component was read from, e.g. `model.diffusion_model.` ('' at the top level). */
  readonly sourcePrefix?: string;
  /** True for a component that is the whole file (a standalone VAE): the writer picks the folder. */
  readonly standalone?: boolean;
  /** Block structure read from the checkpoint (levels, layers per block, ...), for the config writer. */
  readonly structure?: ComponentStructures;
}

/** Why a source key was deliberately not converted. */
export interface DroppedKey {
  readonly source: string;
  readonly reason: string;
  /** Stable id of the reason (mappings/drop-reasons.json), e.g. `ldm-schedule-buffer`. */
  readonly rule?: string;
}

/** Every source key ends in exactly one of: mapped, dropped (with a reason), unknown. */
export interface KeyAccount {
  readonly mapped: readonly { readonly source: string; readonly targets: readonly string[]; readonly component: ComponentFolder }[];
  readonly dropped: readonly DroppedKey[];
  readonly unknown: readonly string[];
}

/** EMA copies found in the file, and whether the UNet was taken from them. */
export interface EmaReport {
  readonly present: boolean;
  /** EMA weight tensors (bookkeeping values such as `model_ema.decay` not counted). */
  readonly count: number;
  readonly extracted: boolean;
}

export interface ConversionPlan {
  readonly family: FamilyId;
  readonly components: readonly PlannedComponent[];
  readonly account: KeyAccount;
  readonly ema?: EmaReport;
  /** True when the file holds a single component on its own (a standalone VAE). */
  readonly standalone?: boolean;
}
