/**
 * The Diffusers pipelines and component classes `inspect` knows, read from the data table
 * mappings/diffusers-classes.json (pipeline -> components with allowed [library, class] pairs;
 * class -> kind, weight file base names, config checks).
 */
import { readFileSync } from 'node:fs';
import { ErrorCode, fail } from '../errors.js';
import { MAPPINGS_ROOT } from '../mapping/load.js';

export type ClassKind = 'model' | 'tokenizer' | 'processor' | 'scheduler' | 'onnx' | 'multi';

export interface ComponentSpec {
  readonly name: string;
  /** Allowed `[library, class]` pairs. */
  readonly allowed: readonly (readonly [string, string])[];
  readonly optional: boolean;
  readonly note?: string;
}

export interface PipelineSpec {
  readonly name: string;
  readonly components: readonly ComponentSpec[];
  /** Components whose hidden sizes add up to the UNet's cross_attention_dim. */
  readonly textEncoders: readonly string[];
  /** UNet in_channels as a * latent_channels + b, any of these pairs. */
  readonly unetInChannels: readonly (readonly [number, number])[];
}

export interface ConfigCheck {
  readonly config: string;
  readonly default?: number | boolean;
  readonly tensor?: string;
  readonly tensorPattern?: string;
  readonly dim?: number;
  readonly factor?: number;
  readonly countOf?: string;
  readonly rank?: Readonly<Record<string, number>>;
}

export interface ClassSpec {
  readonly name: string;
  readonly kind: ClassKind;
  /** safetensors weight base name: `diffusion_pytorch_model` (diffusers) or `model` (transformers). */
  readonly weights?: string;
  /** pickle weight base name: `diffusion_pytorch_model` or `pytorch_model`. */
  readonly bin?: string;
  readonly checks: readonly ConfigCheck[];
  readonly note?: string;
}

export interface UnsupportedCheckpoint {
  readonly name: string;
  readonly prefix: string;
  readonly hint: string;
}

export interface DiffusersClasses {
  readonly pipelines: ReadonlyMap<string, PipelineSpec>;
  readonly classes: ReadonlyMap<string, ClassSpec>;
  readonly configFiles: Readonly<Record<string, string>>;
  readonly unsupportedCheckpoints: readonly UnsupportedCheckpoint[];
}

const FILE = 'diffusers-classes.json';

let cached: DiffusersClasses | undefined;

export function loadDiffusersClasses(): DiffusersClasses {
  cached ??= parseDiffusersClasses(JSON.parse(readFileSync(new URL(FILE, MAPPINGS_ROOT), 'utf8')));
  return cached;
}

interface RawComponent {
  allowed: (string | [string, string])[];
  optional?: boolean;
  note?: string;
}
interface RawPipeline {
  like?: string;
  components?: Record<string, RawComponent>;
  textEncoders?: string[];
  unetInChannels?: [number, number][];
}
interface RawTable {
  groups: Record<string, [string, string][]>;
  pipelines: Record<string, RawPipeline>;
  classes: Record<string, { kind: ClassKind; weights?: string; bin?: string; checks?: string; note?: string }>;
  configFiles: Record<string, string>;
  checks: Record<string, ConfigCheck[]>;
  unsupportedCheckpoints: UnsupportedCheckpoint[];
}

export function parseDiffusersClasses(json: unknown): DiffusersClasses {
  const raw = json as RawTable;
  if (typeof raw !== 'object' || raw === null || typeof raw.pipelines !== 'object' || typeof raw.classes !== 'object') {
    fail(ErrorCode.E_MAPPING_TABLE, FILE, 'expected an object with "pipelines" and "classes".');
  }
  const classes = new Map<string, ClassSpec>();
  for (const [name, c] of Object.entries(raw.classes)) {
    const checks = c.checks ? raw.checks[c.checks] : [];
    if (!checks) fail(ErrorCode.E_MAPPING_TABLE, FILE, `class ${name} names checks "${c.checks}" (not in "checks").`);
    classes.set(name, { name, kind: c.kind, weights: c.weights, bin: c.bin, checks, note: c.note });
  }
  for (const group of Object.values(raw.groups)) {
    for (const [library, cls] of group) {
      if (library === 'diffusers' && cls.endsWith('Scheduler') && !classes.has(cls)) classes.set(cls, { name: cls, kind: 'scheduler', checks: [] });
    }
  }
  const resolveAllowed = (where: string, list: (string | [string, string])[]): [string, string][] =>
    list.flatMap((entry) => {
      if (Array.isArray(entry)) return [entry];
      const group = entry.startsWith('@') ? raw.groups[entry.slice(1)] : undefined;
      if (!group) fail(ErrorCode.E_MAPPING_TABLE, FILE, `${where}: unknown group "${entry}".`);
      return group;
    });
  const pipelines = new Map<string, PipelineSpec>();
  const resolve = (name: string, seen: string[] = []): PipelineSpec => {
    const done = pipelines.get(name);
    if (done) return done;
    const p = raw.pipelines[name];
    if (!p || seen.includes(name)) fail(ErrorCode.E_MAPPING_TABLE, FILE, `pipeline "${name}" is missing or defined in a loop.`);
    const base = p.like ? resolve(p.like, [...seen, name]) : undefined;
    const components = p.components
      ? Object.entries(p.components).map(([cname, c]) => ({ name: cname, allowed: resolveAllowed(`${name}.${cname}`, c.allowed), optional: c.optional === true, note: c.note }))
      : base?.components;
    if (!components) fail(ErrorCode.E_MAPPING_TABLE, FILE, `pipeline "${name}" has no components.`);
    for (const c of components) {
      for (const [, cls] of c.allowed) if (!classes.has(cls)) fail(ErrorCode.E_MAPPING_TABLE, FILE, `${name}.${c.name} allows ${cls}, which "classes" does not describe.`);
    }
    const spec: PipelineSpec = {
      name,
      components,
      textEncoders: p.textEncoders ?? base?.textEncoders ?? [],
      unetInChannels: p.unetInChannels ?? base?.unetInChannels ?? [],
    };
    pipelines.set(name, spec);
    return spec;
  };
  for (const name of Object.keys(raw.pipelines)) resolve(name);
  return { pipelines, classes, configFiles: raw.configFiles, unsupportedCheckpoints: raw.unsupportedCheckpoints ?? [] };
}
