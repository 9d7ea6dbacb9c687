/**
 * The `scaling_factor` of a standalone VAE. SD 1.x/2.x and SDXL VAEs have the same tensor names
 * and shapes but latents scaled differently (0.18215 / 0.13025), so the weights cannot say which
 * one a file is. The decision is taken from evidence, highest authority first, and comes back
 * with that evidence and a confidence (like the prediction decisions in mapping/prediction.ts):
 *
 *  1. flags: `--scaling-factor X` (any value), else `--family sd|sdxl`;
 *  2. safetensors metadata: `modelspec.architecture` (SAI model spec; "xl" in it means SDXL,
 *     `stable-diffusion-v1` / `-v2` means SD), then kohya's `ss_base_model_version`;
 *  3. the file name: `sdxl` / `xl` as a word means SDXL; `sd-vae-ft-mse`, `vae-ft-ema`, `kl-f8`,
 *     `sd15`, `sd21`, ... mean SD;
 *  4. the original yaml's `scale_factor` (Diffusers' own VAE converter ignores it and always
 *     writes AutoencoderKL's default, so this ranks below what the file says about itself);
 *  5. the default 0.18215 (SD), LOW confidence, with a warning saying how to override it.
 */
import { basename } from 'node:path';
import type { OriginalConfig } from '../mapping/original-config.js';
import type { Evidence } from '../mapping/plan-types.js';
import type { Confidence } from '../mapping/prediction.js';
import { DEFAULT_VAE_SCALING_FACTOR, SDXL_VAE_SCALING_FACTOR } from './configs.js';

export type VaeFamily = 'sd' | 'sdxl';

export const VAE_FAMILIES: readonly VaeFamily[] = ['sd', 'sdxl'];

export interface VaeScalingInput {
  /** `--scaling-factor`: used as given. */
  readonly scalingFactor?: number;
  /** `--family sd|sdxl`. */
  readonly family?: VaeFamily;
  /** safetensors `__metadata__` (empty for torch files). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Path or name of the VAE file. */
  readonly fileName?: string;
  readonly originalConfig?: OriginalConfig;
}

export interface VaeScalingDecision {
  readonly value: number;
  /** The family the value belongs to; `custom` for a flag value that is neither. */
  readonly family: VaeFamily | 'custom';
  /** What decided (first) and what else was seen. */
  readonly evidence: readonly Evidence[];
  readonly confidence: Confidence;
  /** Set when nothing decided and the default was taken. */
  readonly warning?: string;
}

export const VAE_SCALING_FACTORS: Readonly<Record<VaeFamily, number>> = { sd: DEFAULT_VAE_SCALING_FACTOR, sdxl: SDXL_VAE_SCALING_FACTOR };

const ev = (what: string, found: string, implies: string): Evidence => ({ what, found, implies });

function implied(family: VaeFamily): string {
  return `${family === 'sdxl' ? 'SDXL' : 'SD 1.x/2.x'} VAE: scaling_factor ${VAE_SCALING_FACTORS[family]}`;
}

function decided(family: VaeFamily, confidence: Confidence, evidence: Evidence): VaeScalingDecision {
  return { value: VAE_SCALING_FACTORS[family], family, confidence, evidence: [evidence] };
}

/** Decides the scaling factor of a standalone VAE from the evidence above. */
export function decideVaeScaling(input: VaeScalingInput): VaeScalingDecision {
  return fromFlags(input) ?? fromMetadata(input.metadata ?? {}) ?? fromFileName(input.fileName) ?? fromYaml(input.originalConfig) ?? fallback();
}

function fromFlags(input: VaeScalingInput): VaeScalingDecision | undefined {
  const x = input.scalingFactor;
  if (x !== undefined) {
    const family = (Object.keys(VAE_SCALING_FACTORS) as VaeFamily[]).find((f) => VAE_SCALING_FACTORS[f] === x) ?? 'custom';
    const evidence = [ev('flag --scaling-factor', String(x), `scaling_factor ${x}`)];
    if (input.family) evidence.push(ev('flag --family', input.family, `ignored: --scaling-factor takes precedence`));
    return { value: x, family, confidence: 'high', evidence };
  }
  if (input.family) return decided(input.family, 'high', ev('flag --family', input.family, implied(input.family)));
  return undefined;
}

/** What a metadata value says, if anything. */
function familyFromWord(value: string): VaeFamily | undefined {
  const v = value.toLowerCase();
  if (/xl/.test(v)) return 'sdxl';
  if (/(^|[^a-z])(stable-diffusion-v[12]|sd_?v?[12]|sd-?1[._-]?5|sd-?2[._-]?[01]?)/.test(v)) return 'sd';
  return undefined;
}

function fromMetadata(metadata: Readonly<Record<string, string>>): VaeScalingDecision | undefined {
  const keys: [string, Confidence][] = [
    ['modelspec.architecture', 'high'],
    ['ss_base_model_version', 'medium'],
  ];
  for (const [key, confidence] of keys) {
    const value = metadata[key];
    if (typeof value !== 'string' || value === '') continue;
    const family = familyFromWord(value);
    if (family) return decided(family, confidence, ev(`metadata ${key}`, value, implied(family)));
  }
  return undefined;
}

const SDXL_NAME = /sdxl|(^|[^a-z0-9])xl([^a-z]|$)/;
const SD_NAME = /sd-vae|vae-ft-(mse|ema)|kl-f8|(^|[^a-z0-9])sd-?(1[._-]?[45x]|15|14|2[._-]?[01x]?|21|20|v1|v2)([^0-9]|$)|stable-diffusion-v?[12]/;

function fromFileName(fileName: string | undefined): VaeScalingDecision | undefined {
  if (!fileName) return undefined;
  const name = basename(fileName).toLowerCase();
  if (SDXL_NAME.test(name)) return decided('sdxl', 'medium', ev('file name', basename(fileName), implied('sdxl')));
  if (SD_NAME.test(name)) return decided('sd', 'medium', ev('file name', basename(fileName), implied('sd')));
  return undefined;
}

function fromYaml(oc: OriginalConfig | undefined): VaeScalingDecision | undefined {
  const sf = oc?.scaleFactor;
  if (!oc || !sf) return undefined;
  const family = (Object.keys(VAE_SCALING_FACTORS) as VaeFamily[]).find((f) => VAE_SCALING_FACTORS[f] === sf.value) ?? 'custom';
  return {
    value: sf.value,
    family,
    confidence: 'medium',
    evidence: [ev('original config model.params.scale_factor', String(sf.value), `scaling_factor ${sf.value}`)],
  };
}

function fallback(): VaeScalingDecision {
  const warning =
    `nothing in the file, its name or the flags says whether this VAE is for SD 1.x/2.x or SDXL; ` +
    `scaling_factor ${DEFAULT_VAE_SCALING_FACTOR} (SD) was assumed. Pass --family sdxl (${SDXL_VAE_SCALING_FACTOR}) for an SDXL VAE, ` +
    `or --scaling-factor X.`;
  return {
    value: DEFAULT_VAE_SCALING_FACTOR,
    family: 'sd',
    confidence: 'low',
    evidence: [ev('default', 'no flag, metadata, file name or yaml scale_factor', `${implied('sd')} (DEFAULT)`)],
    warning,
  };
}
