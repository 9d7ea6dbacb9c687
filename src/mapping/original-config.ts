/**
 * The original LDM / SGM YAML (`v1-inference.yaml`, `v2-inference-v.yaml`, ...) read into the few
 * values the Diffusers configs are derived from. Field names follow the YAML; every field that
 * Diffusers' converter reads with `original_config["model"]["params"][...]` (and would fail on
 * when missing) is required here and reported by its YAML path when absent or mistyped.
 */
import { readFile, stat } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { ErrorCode, fail } from '../errors.js';
import { MAX_CONFIG_FILE_BYTES } from '../limits.js';

/** Whether a YAML number was written as an integer or a float: Python keeps the difference. */
export type NumberKind = 'int' | 'float';

/** A number as PyYAML would load it, so a float prints as `1.0` and an int as `1` in JSON. */
export interface YamlNumber {
  readonly value: number;
  readonly kind: NumberKind;
}

/** `model.params.unet_config.params` (or SGM's `network_config.params`). */
export interface OriginalUnetParams {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly modelChannels: number;
  readonly channelMult: readonly number[];
  readonly attentionResolutions: readonly number[];
  readonly numResBlocks: number;
  /** `num_heads`; undefined when absent or -1 (the openaimodel "unset" value). */
  readonly numHeads?: number;
  readonly numHeadChannels?: number;
  readonly useLinearInTransformer: boolean;
  /** `transformer_depth`: an int, a per-level list, or null. */
  readonly transformerDepth: number | readonly number[] | null;
  /** `context_dim` (first entry when the YAML gives a list), or null. */
  readonly contextDim: number | null;
  /** `num_classes`: an int (class embeddings) or `"sequential"` (projection / SDXL text_time). */
  readonly numClasses?: number | 'sequential';
  readonly admInChannels?: number;
  readonly disableSelfAttentions?: readonly boolean[];
  /** `image_size` of the UNet params (used by the x4 upscaler only). */
  readonly imageSize?: number;
}

/** `model.params.first_stage_config.params` with its `ddconfig`. */
export interface OriginalVaeParams {
  readonly embedDim: number;
  readonly zChannels: number;
  readonly ch: number;
  readonly chMult: readonly number[];
  readonly numResBlocks: number;
  readonly inChannels: number;
  readonly outCh: number;
}

export interface OriginalConfig {
  /** The file it was read from, for messages. */
  readonly file?: string;
  /** `model.target`, e.g. `ldm.models.diffusion.ddpm.LatentDiffusion`. */
  readonly target?: string;
  /** `parameterization`: `"v"` for v-prediction models, `"eps"` or absent otherwise. */
  readonly parameterization?: string;
  readonly linearStart?: YamlNumber;
  readonly linearEnd?: YamlNumber;
  readonly timesteps?: number;
  readonly imageSize?: number;
  readonly channels?: number;
  readonly scaleFactor?: YamlNumber;
  /** `cond_stage_config.target`. */
  readonly condStageTarget?: string;
  /** Last dotted segment of condStageTarget, e.g. `FrozenCLIPEmbedder`, `FrozenOpenCLIPEmbedder`. */
  readonly condStageKind?: string;
  /** SGM configs (SDXL) carry the UNet as `network_config` instead of `unet_config`. */
  readonly unetSection?: 'unet_config' | 'network_config';
  readonly unet?: OriginalUnetParams;
  readonly vae: OriginalVaeParams;
}

/** PyYAML-like loading: YAML 1.1 scalars, duplicate keys allowed (last wins), ints kept apart. */
const YAML_OPTIONS = { version: '1.1', intAsBigInt: true, uniqueKeys: false, prettyErrors: false } as const;

/** Bounds alias expansion ("billion laughs") when the document is turned into plain values. */
const MAX_YAML_ALIASES = 100;

/** Reads and parses an original config file (size-checked before it is read). */
export async function readOriginalConfig(path: string): Promise<OriginalConfig> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    fail(ErrorCode.E_IO, path, 'cannot open the original config file.', { cause });
  }
  if (size > MAX_CONFIG_FILE_BYTES) {
    fail(ErrorCode.E_LIMIT, path, `original config size ${size} bytes (expected <= ${MAX_CONFIG_FILE_BYTES}).`, {
      data: { found: size, limit: MAX_CONFIG_FILE_BYTES },
    });
  }
  return parseOriginalConfig(await readFile(path, 'utf8'), path);
}

/** Parses original-config YAML text. Throws E_ORIGINAL_CONFIG naming the offending field. */
export function parseOriginalConfig(text: string, file?: string): OriginalConfig {
  if (text.length > MAX_CONFIG_FILE_BYTES) {
    fail(ErrorCode.E_LIMIT, file, `original config length ${text.length} (expected <= ${MAX_CONFIG_FILE_BYTES}).`);
  }
  const root = loadYaml(text, file);
  const r = new FieldReader(file);
  const params = r.object(r.object(root, 'model'), 'params', 'model');
  const at = 'model.params';
  const unetSection = pickUnetSection(params);
  return {
    file,
    target: r.optString(r.object(root, 'model'), 'target', 'model'),
    parameterization: r.optString(params, 'parameterization', at),
    linearStart: r.optNumber(params, 'linear_start', at),
    linearEnd: r.optNumber(params, 'linear_end', at),
    timesteps: r.optInt(params, 'timesteps', at),
    imageSize: r.optInt(params, 'image_size', at),
    channels: r.optInt(params, 'channels', at),
    scaleFactor: r.optNumber(params, 'scale_factor', at),
    ...condStage(r, params),
    unetSection,
    unet: unetSection ? readUnet(r, r.object(r.object(params, unetSection, at), 'params', `${at}.${unetSection}`), `${at}.${unetSection}.params`) : undefined,
    vae: readVae(r, params),
  };
}

function loadYaml(text: string, file: string | undefined): Record<string, unknown> {
  const doc = parseDocument(text, YAML_OPTIONS);
  if (doc.errors.length > 0) {
    fail(ErrorCode.E_ORIGINAL_CONFIG, file, `not valid YAML: ${doc.errors[0].message.split('\n')[0]}`, {
      data: { errors: doc.errors.map((e) => e.message.split('\n')[0]) },
    });
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (cause) {
    fail(ErrorCode.E_ORIGINAL_CONFIG, file, `YAML cannot be loaded: ${(cause as Error).message}`, { cause });
  }
  if (!isPlainObject(value)) {
    fail(ErrorCode.E_ORIGINAL_CONFIG, file, `top level is ${describe(value)} (expected a mapping with a "model" key).`, {
      data: { field: '' },
    });
  }
  return value;
}

/** Diffusers reads `unet_config` when present and not null, else `network_config` (SGM). */
function pickUnetSection(params: Record<string, unknown>): OriginalConfig['unetSection'] {
  if (params.unet_config !== undefined && params.unet_config !== null) return 'unet_config';
  if (params.network_config !== undefined && params.network_config !== null) return 'network_config';
  return undefined;
}

function condStage(r: FieldReader, params: Record<string, unknown>): Pick<OriginalConfig, 'condStageTarget' | 'condStageKind'> {
  const section = params.cond_stage_config;
  if (section === undefined || section === null) return {};
  const target = r.string(r.objectValue(section, 'model.params.cond_stage_config'), 'target', 'model.params.cond_stage_config');
  return { condStageTarget: target, condStageKind: target.split('.').pop() };
}

/** The fields create_unet_diffusers_config (convert_from_ckpt.py) reads. */
function readUnet(r: FieldReader, u: Record<string, unknown>, at: string): OriginalUnetParams {
  const numHeads = r.optInt(u, 'num_heads', at);
  const useLinear = r.optBool(u, 'use_linear_in_transformer', at) ?? false;
  const numHeadChannels = r.optInt(u, 'num_head_channels', at);
  // Linear-transformer models without num_heads derive heads from num_head_channels.
  if (useLinear && (numHeads === undefined || numHeads === -1) && numHeadChannels === undefined) {
    r.missing(`${at}.num_head_channels`, 'an integer (needed when num_heads is absent)');
  }
  if (numHeadChannels !== undefined && numHeadChannels <= 0 && useLinear && (numHeads === undefined || numHeads === -1)) {
    r.bad(`${at}.num_head_channels`, numHeadChannels, 'a positive integer');
  }
  return {
    inChannels: r.int(u, 'in_channels', at),
    outChannels: r.int(u, 'out_channels', at),
    modelChannels: r.positiveInt(u, 'model_channels', at),
    channelMult: r.intList(u, 'channel_mult', at, 1),
    attentionResolutions: r.intList(u, 'attention_resolutions', at, 0),
    numResBlocks: r.positiveInt(u, 'num_res_blocks', at),
    numHeads: numHeads === -1 ? undefined : numHeads,
    numHeadChannels,
    useLinearInTransformer: useLinear,
    transformerDepth: r.intOrIntList(u, 'transformer_depth', at),
    contextDim: r.contextDim(u, at),
    numClasses: r.numClasses(u, at),
    admInChannels: r.optInt(u, 'adm_in_channels', at),
    disableSelfAttentions: r.optBoolList(u, 'disable_self_attentions', at),
    imageSize: r.optInt(u, 'image_size', at),
  };
}

/** The fields create_vae_diffusers_config (convert_from_ckpt.py) reads. */
function readVae(r: FieldReader, params: Record<string, unknown>): OriginalVaeParams {
  const at = 'model.params.first_stage_config';
  const first = r.object(params, 'first_stage_config', 'model.params');
  const fp = r.object(first, 'params', at);
  const dd = r.object(fp, 'ddconfig', `${at}.params`);
  const ddAt = `${at}.params.ddconfig`;
  return {
    embedDim: r.positiveInt(fp, 'embed_dim', `${at}.params`),
    zChannels: r.positiveInt(dd, 'z_channels', ddAt),
    ch: r.positiveInt(dd, 'ch', ddAt),
    chMult: r.intList(dd, 'ch_mult', ddAt, 1),
    numResBlocks: r.positiveInt(dd, 'num_res_blocks', ddAt),
    inChannels: r.positiveInt(dd, 'in_channels', ddAt),
    outCh: r.positiveInt(dd, 'out_ch', ddAt),
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Set);
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'bigint') return `the integer ${v}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)}`;
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number') return `the float ${String(v)}`;
  return `${typeof v} ${String(v)}`;
}

/** Typed access to YAML values; every failure names the full YAML path of the field. */
class FieldReader {
  constructor(private readonly file: string | undefined) {}

  missing(path: string, expected: string): never {
    fail(ErrorCode.E_ORIGINAL_CONFIG, this.file, `original config field ${path} is missing (expected ${expected}).`, {
      data: { field: path, expected },
    });
  }

  bad(path: string, value: unknown, expected: string): never {
    fail(ErrorCode.E_ORIGINAL_CONFIG, this.file, `original config field ${path} is ${describe(value)} (expected ${expected}).`, {
      data: { field: path, expected },
    });
  }

  objectValue(v: unknown, path: string): Record<string, unknown> {
    if (v === undefined) this.missing(path, 'a mapping');
    if (!isPlainObject(v)) this.bad(path, v, 'a mapping');
    return v;
  }

  object(o: Record<string, unknown>, key: string, at = ''): Record<string, unknown> {
    return this.objectValue(o[key], join(at, key));
  }

  string(o: Record<string, unknown>, key: string, at: string): string {
    const v = o[key];
    if (v === undefined || v === null) this.missing(join(at, key), 'a string');
    if (typeof v !== 'string') this.bad(join(at, key), v, 'a string');
    return v;
  }

  optString(o: Record<string, unknown>, key: string, at: string): string | undefined {
    return o[key] === undefined || o[key] === null ? undefined : this.string(o, key, at);
  }

  int(o: Record<string, unknown>, key: string, at: string): number {
    const v = o[key];
    if (v === undefined || v === null) this.missing(join(at, key), 'an integer');
    return this.toInt(v, join(at, key));
  }

  positiveInt(o: Record<string, unknown>, key: string, at: string): number {
    const n = this.int(o, key, at);
    if (n <= 0) this.bad(join(at, key), BigInt(n), 'a positive integer');
    return n;
  }

  optInt(o: Record<string, unknown>, key: string, at: string): number | undefined {
    return o[key] === undefined || o[key] === null ? undefined : this.int(o, key, at);
  }

  optNumber(o: Record<string, unknown>, key: string, at: string): YamlNumber | undefined {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'bigint') return { value: this.toInt(v, join(at, key)), kind: 'int' };
    if (typeof v === 'number' && Number.isFinite(v)) return { value: v, kind: 'float' };
    this.bad(join(at, key), v, 'a finite number');
  }

  optBool(o: Record<string, unknown>, key: string, at: string): boolean | undefined {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.bad(join(at, key), v, 'true or false');
    return v;
  }

  intList(o: Record<string, unknown>, key: string, at: string, min: number): number[] {
    const path = join(at, key);
    const v = o[key];
    if (v === undefined || v === null) this.missing(path, 'a list of integers');
    if (!Array.isArray(v) || v.length === 0) this.bad(path, v, 'a non-empty list of integers');
    return v.map((x, i) => {
      const n = this.toInt(x, `${path}[${i}]`);
      if (n < min) this.bad(`${path}[${i}]`, x, `an integer >= ${min}`);
      return n;
    });
  }

  optBoolList(o: Record<string, unknown>, key: string, at: string): boolean[] | undefined {
    const path = join(at, key);
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'boolean')) this.bad(path, v, 'a list of true/false');
    return v as boolean[];
  }

  /** `transformer_depth`: required key (Diffusers indexes it), int, list of ints or null. */
  intOrIntList(o: Record<string, unknown>, key: string, at: string): number | number[] | null {
    const v = o[key];
    if (v === undefined) this.missing(join(at, key), 'an integer or a list of integers');
    if (v === null) return null;
    if (Array.isArray(v)) return this.intList(o, key, at, 0);
    return this.toInt(v, join(at, key));
  }

  /** `context_dim`: required key; an int, a list whose first entry is used, or null. */
  contextDim(o: Record<string, unknown>, at: string): number | null {
    const v = o.context_dim;
    if (v === undefined) this.missing(join(at, 'context_dim'), 'an integer');
    if (v === null) return null;
    if (Array.isArray(v)) return this.intList(o, 'context_dim', at, 1)[0];
    return this.toInt(v, join(at, 'context_dim'));
  }

  numClasses(o: Record<string, unknown>, at: string): number | 'sequential' | undefined {
    const v = o.num_classes;
    if (v === undefined || v === null) return undefined;
    if (v === 'sequential') return v;
    return this.toInt(v, join(at, 'num_classes'));
  }

  private toInt(v: unknown, path: string): number {
    if (typeof v !== 'bigint') this.bad(path, v, 'an integer');
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) this.bad(path, v, 'a safe integer');
    return Number(v);
  }
}

function join(at: string, key: string): string {
  return at ? `${at}.${key}` : key;
}
