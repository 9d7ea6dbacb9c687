/**
 * scheduler/scheduler_config.json as Diffusers 0.31.0's legacy converter writes it.
 *
 * download_from_original_stable_diffusion_ckpt (convert_from_ckpt.py) first builds a
 * DDIMScheduler from the YAML's betas (scaled_linear, steps_offset=1, clip_sample=False,
 * set_alpha_to_one=False, prediction_type), then converts it with `<Target>.from_config(config)`
 * (PNDM additionally gets skip_prk_steps=True). ConfigMixin.from_config gives the target its own
 * `__init__` keys — taken from the DDIM config where the DDIM scheduler was *passed* them, else
 * the target's defaults (keys DDIM only defaulted are listed in `_use_default_values` and
 * dropped) — and then re-registers the passed keys the target does not know ("hidden" keys kept
 * for compatible classes), so they are saved too. That is why a PNDM config carries
 * `clip_sample: false`.
 */
import { ErrorCode, fail } from '../errors.js';
import { type PyFloat, pyFloat } from '../formats/python-json.js';
import { DIFFUSERS_VERSION } from './configs-common.js';

export const SCHEDULER_KINDS = ['pndm', 'ddim', 'euler', 'euler-ancestral', 'lms', 'heun', 'dpm'] as const;
export type SchedulerKind = (typeof SCHEDULER_KINDS)[number];

export interface SchedulerParams {
  readonly predictionType: 'epsilon' | 'v_prediction';
  /** YAML `timesteps` (1000 when absent, as the converter does). */
  readonly numTrainTimesteps?: number;
  /** YAML `linear_start` / `linear_end`; SD's 0.00085 / 0.012 when absent. */
  readonly betaStart?: number | PyFloat;
  readonly betaEnd?: number | PyFloat;
  /**
   * Zero-terminal-SNR training (ComfyUI's `ztsnr` marker): `rescale_betas_zero_snr: true` with
   * `timestep_spacing: "trailing"`, what Diffusers' docs prescribe for such models and what users
   * otherwise set by hand; Diffusers' converters never set it.
   */
  readonly zeroTerminalSnr?: boolean;
}

type Value = string | number | boolean | null | PyFloat;
type SchedulerDefaults = Readonly<Record<string, Value>>;

/** SD's betas (SCHEDULER_DEFAULT_CONFIG in single_file_utils.py). The legacy script's own
 * fallback (0.02 / 0.085) is not SD's schedule, so it is not copied. */
export const SD_BETA_START = 0.00085;
export const SD_BETA_END = 0.012;

const CLASS_NAMES: Readonly<Record<SchedulerKind, string>> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  'euler-ancestral': 'EulerAncestralDiscreteScheduler',
  lms: 'LMSDiscreteScheduler',
  heun: 'HeunDiscreteScheduler',
  dpm: 'DPMSolverMultistepScheduler',
};

/** The betas/step keys every scheduler below shares, with their Diffusers defaults. */
const COMMON: SchedulerDefaults = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  steps_offset: 0,
};

const KARRAS_FLAGS: SchedulerDefaults = { use_karras_sigmas: false, use_exponential_sigmas: false, use_beta_sigmas: false };

/** `__init__` signatures of the diffusers 0.31.0 scheduler classes (schedulers/scheduling_*.py). */
const INIT_DEFAULTS: Readonly<Record<SchedulerKind, SchedulerDefaults>> = {
  pndm: { ...COMMON, skip_prk_steps: false, set_alpha_to_one: false, timestep_spacing: 'leading' },
  ddim: {
    ...COMMON,
    clip_sample: true,
    set_alpha_to_one: true,
    thresholding: false,
    dynamic_thresholding_ratio: 0.995,
    clip_sample_range: pyFloat(1),
    sample_max_value: pyFloat(1),
    timestep_spacing: 'leading',
    rescale_betas_zero_snr: false,
  },
  euler: {
    ...COMMON,
    interpolation_type: 'linear',
    ...KARRAS_FLAGS,
    sigma_min: null,
    sigma_max: null,
    timestep_spacing: 'linspace',
    timestep_type: 'discrete',
    rescale_betas_zero_snr: false,
    final_sigmas_type: 'zero',
  },
  'euler-ancestral': { ...COMMON, timestep_spacing: 'linspace', rescale_betas_zero_snr: false },
  lms: { ...COMMON, ...KARRAS_FLAGS, timestep_spacing: 'linspace' },
  heun: {
    ...COMMON,
    beta_start: 0.00085,
    beta_end: 0.012,
    ...KARRAS_FLAGS,
    clip_sample: false,
    clip_sample_range: pyFloat(1),
    timestep_spacing: 'linspace',
  },
  dpm: {
    ...COMMON,
    solver_order: 2,
    thresholding: false,
    dynamic_thresholding_ratio: 0.995,
    sample_max_value: pyFloat(1),
    algorithm_type: 'dpmsolver++',
    solver_type: 'midpoint',
    lower_order_final: true,
    euler_at_final: false,
    ...KARRAS_FLAGS,
    use_lu_lambdas: false,
    final_sigmas_type: 'zero',
    lambda_min_clipped: pyFloat(-Infinity),
    variance_type: null,
    timestep_spacing: 'linspace',
    rescale_betas_zero_snr: false,
  },
};

export function schedulerClassName(kind: SchedulerKind): string {
  const name = CLASS_NAMES[kind];
  if (!name) fail(ErrorCode.E_USAGE, undefined, `unknown scheduler "${String(kind)}" (expected one of ${SCHEDULER_KINDS.join(', ')}).`);
  return name;
}

/** The keys the converter passes to its DDIMScheduler (plus PNDM's skip_prk_steps). */
function passedKeys(kind: SchedulerKind, params: SchedulerParams): Record<string, Value> {
  const passed: Record<string, Value> = {
    num_train_timesteps: params.numTrainTimesteps ?? 1000,
    beta_start: params.betaStart ?? SD_BETA_START,
    beta_end: params.betaEnd ?? SD_BETA_END,
    beta_schedule: 'scaled_linear',
    steps_offset: 1,
    clip_sample: false,
    set_alpha_to_one: false,
    prediction_type: params.predictionType,
  };
  if (kind === 'pndm') passed.skip_prk_steps = true;
  return passed;
}

/** scheduler_config.json for `--scheduler kind` (default pndm, as the converter). */
export function schedulerConfig(kind: SchedulerKind, params: SchedulerParams): Record<string, Value> {
  return fromConfig(kind, passedKeys(kind, params), params);
}

/**
 * The SDXL branch of download_from_original_stable_diffusion_ckpt: `EulerDiscreteScheduler.from_config`
 * of a fixed dict (SD's betas, `timestep_spacing: "leading"`, plus DDIM/PNDM keys Euler keeps as
 * hidden keys), then `register_to_config(clip_sample=False)`. Diffusers always writes Euler there
 * and always `prediction_type: "epsilon"`; here the prediction type is the decided one (epsilon
 * unless the file says v) and another scheduler kind gets the same dict through from_config.
 */
export function sdxlSchedulerConfig(kind: SchedulerKind, params: SchedulerParams): Record<string, Value> {
  const passed: Record<string, Value> = {
    beta_schedule: 'scaled_linear',
    beta_start: SD_BETA_START,
    beta_end: SD_BETA_END,
    interpolation_type: 'linear',
    num_train_timesteps: params.numTrainTimesteps ?? 1000,
    prediction_type: params.predictionType,
    sample_max_value: pyFloat(1),
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    timestep_spacing: 'leading',
    clip_sample: false,
  };
  return fromConfig(kind, passed, params);
}

/** ConfigMixin.from_config: the target's `__init__` defaults, overridden and extended by the passed keys. */
function fromConfig(kind: SchedulerKind, passed: Readonly<Record<string, Value>>, params: SchedulerParams): Record<string, Value> {
  return {
    ...INIT_DEFAULTS[kind],
    ...passed,
    ...(params.zeroTerminalSnr ? { rescale_betas_zero_snr: true, timestep_spacing: 'trailing' } : {}),
    _class_name: schedulerClassName(kind),
    _diffusers_version: DIFFUSERS_VERSION,
  };
}

/** DDPMScheduler `__init__` defaults (diffusers 0.31.0 schedulers/scheduling_ddpm.py). */
const DDPM_DEFAULTS: SchedulerDefaults = {
  ...COMMON,
  variance_type: 'fixed_small',
  clip_sample: true,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: pyFloat(1),
  sample_max_value: pyFloat(1),
  timestep_spacing: 'leading',
  rescale_betas_zero_snr: false,
};

/**
 * A DDPMScheduler config built with `DDPMScheduler(**passed)` and saved: every `__init__` key,
 * the passed ones overriding the defaults. Used for the x4 upscaler's `low_res_scheduler` and
 * unCLIP's `image_noising_scheduler` (convert_from_ckpt.py stable_unclip_image_noising_components:
 * `DDPMScheduler(num_train_timesteps=..., beta_schedule=...)`).
 */
export function ddpmSchedulerConfig(passed: Readonly<Record<string, Value>>): Record<string, Value> {
  return { ...DDPM_DEFAULTS, ...passed, _class_name: 'DDPMScheduler', _diffusers_version: DIFFUSERS_VERSION };
}
