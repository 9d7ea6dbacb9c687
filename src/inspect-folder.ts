/**
 * `inspect` for folders: can Diffusers load this Diffusers folder (a pipeline with
 * model_index.json, or a single model with config.json), as which pipeline, and if not, what is
 * missing or wrong and how to fix it. Reads JSON files and weight headers only, never tensor
 * bytes. Hugging Face cache folders (`models--org--name/` or one of its `snapshots/<hash>/`) are
 * followed through their links into `blobs/`.
 *
 * What a loader expects comes from the data table mappings/diffusers-classes.json; file names
 * and loader order from docs/formats.md §6 and §7.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { DType } from './dtypes.js';
import { CkptError, ErrorCode } from './errors.js';
import type { TensorInfo } from './formats/tensor-source.js';
import { loadDiffusersClasses, type ClassSpec, type DiffusersClasses, type PipelineSpec } from './inspect/classes.js';
import { runConfigChecks, weightsOrConfig } from './inspect/checks.js';
import { hasErrors, problem, type Problem, type Verdict } from './inspect/types.js';
import { defaultSet, findWeightSets, readWeightSet, type Entry, type WeightSetReport } from './inspect/weights.js';

export interface HfCacheInfo {
  /** `org/name` from `models--org--name`. */
  repo: string;
  /** The `models--*` folder. */
  root: string;
  /** The ref that chose the snapshot (`main`), or null when it was picked otherwise. */
  ref: string | null;
  snapshot: string;
}

export interface ComponentReport {
  /** Folder name (`unet`, ...); `.` for a single-model folder. */
  name: string;
  library: string | null;
  className: string | null;
  kind: string | null;
  /** Whether the pipeline lists it as optional. */
  optional: boolean;
  /** Whether the pipeline class expects this component at all. */
  expected: boolean;
  /** Whether its folder exists (false for `[null, null]` entries). */
  present: boolean;
  /** Config file read (`config.json`, `scheduler_config.json`, ...), or null. */
  config: string | null;
  /** Every weight set found: safetensors / bin, plain or variant, single or sharded. */
  weights: WeightSetReport[];
  /** What `from_pretrained` reads without `variant=`: format, files (null when nothing loads). */
  loads: { format: 'safetensors' | 'bin' | 'onnx'; variant: string | null; files: string[] } | null;
  variants: string[];
  tensors: number;
  parameters: number;
  /** Parameters per dtype of the set that loads. */
  dtypes: Partial<Record<DType, number>>;
  status: 'ok' | 'warning' | 'error' | 'absent';
}

export interface VariantAvailability {
  name: string;
  /** Weight-bearing components that have it. */
  components: string[];
  /** True when every weight-bearing component has it. */
  complete: boolean;
}

export interface FolderInspection {
  schema: 1;
  kind: 'pipeline' | 'model';
  path: string;
  /** The folder actually read (the snapshot for a Hugging Face cache root). */
  resolvedPath: string;
  hfCache: HfCacheInfo | null;
  /** Pipeline class (`_class_name` of model_index.json), or the model class for a model folder. */
  className: string | null;
  diffusersVersion: string | null;
  components: ComponentReport[];
  variants: VariantAvailability[];
  /** Checkpoint files lying at the top of the folder (not read by Diffusers loaders). */
  otherFiles: string[];
  verdict: Verdict;
  problems: Problem[];
}

const CHECKPOINT_EXT = /\.(ckpt|pt|pth|bin|safetensors|sft)$/i;

// ------------------------------------------------------------------------------------------------
// Listing (links followed)
// ------------------------------------------------------------------------------------------------

export async function listEntries(dir: string): Promise<Map<string, Entry>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CkptError(ErrorCode.E_IO, `cannot list the folder (${err.code ?? err.message})`, { file: dir, cause: e });
  }
  const out = new Map<string, Entry>();
  await Promise.all(
    names.map(async (name) => {
      try {
        const st = await stat(join(dir, name));
        out.set(name, { name, type: st.isDirectory() ? 'dir' : 'file', size: st.size });
      } catch {
        out.set(name, { name, type: 'broken', size: 0 });
      }
    }),
  );
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

async function readJson(path: string): Promise<{ value: Record<string, unknown> } | { error: string }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    return { error: `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return { error: 'is not a JSON object' };
    return { value: value as Record<string, unknown> };
  } catch (e) {
    return { error: `is not valid JSON (${(e as Error).message})` };
  }
}

// ------------------------------------------------------------------------------------------------
// Hugging Face cache
// ------------------------------------------------------------------------------------------------

/** `models--org--name` → `org/name`. */
function repoOf(folder: string): string {
  return basename(folder).replace(/^models--/, '').split('--').join('/');
}

/**
 * For a `models--*` root: the snapshot `refs/main` names (or the only / newest snapshot). For a
 * `snapshots/<hash>` folder: its cache facts. Otherwise null.
 */
export async function resolveHfCache(path: string): Promise<{ dir: string; info: HfCacheInfo; problems: Problem[] } | null> {
  const abs = resolve(path);
  if (basename(dirname(abs)) === 'snapshots' && basename(dirname(dirname(abs))).startsWith('models--')) {
    const root = dirname(dirname(abs));
    let ref: string | null = null;
    try {
      if ((await readFile(join(root, 'refs', 'main'), 'utf8')).trim() === basename(abs)) ref = 'main';
    } catch {
      // no refs/main: fine, the snapshot was named directly
    }
    return { dir: abs, info: { repo: repoOf(root), root, ref, snapshot: basename(abs) }, problems: [] };
  }
  if (!basename(abs).startsWith('models--')) return null;
  const snapshots = join(abs, 'snapshots');
  let hashes: string[];
  try {
    hashes = (await readdir(snapshots)).sort();
  } catch {
    return null;
  }
  const problems: Problem[] = [];
  let ref: string | null = null;
  let hash: string | undefined;
  try {
    const named = (await readFile(join(abs, 'refs', 'main'), 'utf8')).trim();
    if (hashes.includes(named)) {
      hash = named;
      ref = 'main';
    } else {
      problems.push(problem('hf-cache-ref', 'warning', null, `refs/main names snapshot ${named}, which is not in snapshots/.`, 'download the repository again (huggingface-cli download REPO)'));
    }
  } catch {
    problems.push(problem('hf-cache-ref', hashes.length > 1 ? 'warning' : 'info', null, 'no refs/main in the cache folder.', hashes.length > 1 ? 'name the snapshot folder to inspect' : null));
  }
  if (!hash) {
    const dated = await Promise.all(hashes.map(async (h) => ({ h, t: (await stat(join(snapshots, h))).mtimeMs })));
    hash = dated.sort((a, b) => b.t - a.t)[0]?.h;
  }
  if (!hash) return null;
  if (!ref && problems.length) problems[problems.length - 1].message += ` Read the newest snapshot, ${hash}.`;
  return { dir: join(snapshots, hash), info: { repo: repoOf(abs), root: abs, ref, snapshot: hash }, problems };
}

// ------------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------------

/**
 * Inspects `path` as a Diffusers folder. Returns null when it is none (no model_index.json, no
 * config.json, no component folders): the caller then treats it as a folder of other things.
 */
export async function inspectFolder(path: string, classes: DiffusersClasses = loadDiffusersClasses()): Promise<FolderInspection | null> {
  const cache = await resolveHfCache(path);
  const dir = cache?.dir ?? path;
  const entries = await listEntries(dir);
  const base = { path, resolvedPath: dir, hfCache: cache?.info ?? null, cacheProblems: cache?.problems ?? [] };
  if (entries.has('model_index.json')) return inspectPipeline(dir, entries, classes, base, true);
  if (entries.has('config.json')) return inspectModelFolder(dir, entries, classes, base);
  const guessed = await guessComponents(dir, entries);
  if (guessed.length > 0) return inspectPipeline(dir, entries, classes, base, false, guessed);
  return null;
}

interface Base {
  path: string;
  resolvedPath: string;
  hfCache: HfCacheInfo | null;
  cacheProblems: Problem[];
}

// ------------------------------------------------------------------------------------------------
// Pipelines
// ------------------------------------------------------------------------------------------------

interface Listed {
  name: string;
  library: string | null;
  className: string | null;
}

async function inspectPipeline(
  dir: string,
  entries: ReadonlyMap<string, Entry>,
  classes: DiffusersClasses,
  base: Base,
  hasIndex: boolean,
  guessed: Listed[] = [],
): Promise<FolderInspection> {
  const problems: Problem[] = [...base.cacheProblems];
  let listed: Listed[] = guessed;
  let className: string | null = null;
  let diffusersVersion: string | null = null;
  if (hasIndex) {
    const index = await readJson(join(dir, 'model_index.json'));
    if ('error' in index) {
      problems.push(problem('model-index-invalid', 'error', null, `model_index.json ${index.error}.`, 'restore model_index.json (a JSON object with _class_name and one [library, class] pair per component)'));
      listed = await guessComponents(dir, entries);
    } else {
      const v = index.value;
      className = typeof v._class_name === 'string' ? v._class_name : null;
      diffusersVersion = typeof v._diffusers_version === 'string' ? v._diffusers_version : null;
      if (!className) problems.push(problem('model-index-invalid', 'error', null, 'model_index.json has no "_class_name" string.', 'add "_class_name": the pipeline class, e.g. "StableDiffusionPipeline"'));
      listed = [];
      for (const [key, value] of Object.entries(v)) {
        if (key.startsWith('_') || !Array.isArray(value)) continue;
        if (value.length !== 2 || !value.every((x) => x === null || typeof x === 'string')) {
          problems.push(problem('model-index-invalid', 'error', key, `model_index.json "${key}" is ${JSON.stringify(value)} (expected [library, class] or [null, null]).`, `set "${key}" to its [library, class] pair`));
          continue;
        }
        listed.push({ name: key, library: value[0] as string | null, className: value[1] as string | null });
      }
    }
  } else {
    const pipelineGuess = guessPipeline(guessed, classes);
    const suggestion: Record<string, unknown> = { _class_name: pipelineGuess ?? 'StableDiffusionPipeline' };
    for (const c of guessed) suggestion[c.name] = [c.library, c.className];
    className = null;
    problems.push(
      problem(
        'model-index-missing',
        'error',
        null,
        `no model_index.json, but component folders ${guessed.map((c) => c.name).join(', ')}: DiffusionPipeline.from_pretrained needs model_index.json.`,
        `create model_index.json with ${JSON.stringify(suggestion)}`,
      ),
    );
    if (pipelineGuess) className = pipelineGuess;
  }

  const pipeline = className ? classes.pipelines.get(className) : undefined;
  if (hasIndex && className && !pipeline) {
    problems.push(
      problem(
        'unknown-pipeline',
        'error',
        null,
        `model_index.json names pipeline ${className}, which is not a Diffusers pipeline this tool knows.`,
        `use one of ${[...classes.pipelines.keys()].filter((n) => !n.startsWith('StableDiffusionOnnx')).slice(0, 6).join(', ')}, ... (see mappings/diffusers-classes.json); a community pipeline needs custom_pipeline=`,
      ),
    );
  }

  const components: ComponentReport[] = [];
  const tensorsOf = new Map<string, { tensors: TensorInfo[]; config?: Record<string, unknown>; spec?: ClassSpec }>();
  for (const c of listed) {
    const slot = pipeline?.components.find((s) => s.name === c.name);
    const optional = slot?.optional ?? false;
    const report = emptyComponent(c, optional, slot !== undefined || !pipeline);
    components.push(report);
    if (c.className === null || c.library === null) {
      if (slot && !slot.optional) {
        problems.push(problem('component-null', 'error', c.name, `${c.name} is [null, null] but ${pipeline?.name} needs it.`, `add the ${c.name}/ folder and set "${c.name}" to ${JSON.stringify(slot.allowed[0])}`));
      }
      report.status = 'absent';
      continue;
    }
    const spec = classes.classes.get(c.className);
    if (!spec) {
      problems.push(problem('unknown-component-class', 'error', c.name, `${c.name} is [${c.library}, ${c.className}], a class this tool does not know.`, slot ? `use ${slot.allowed.map((a) => `[${a.join(', ')}]`).join(' or ')}` : null));
    } else if (slot && !slot.allowed.some(([lib, cls]) => lib === c.library && cls === c.className)) {
      problems.push(
        problem('component-class-not-allowed', 'error', c.name, `${c.name} is [${c.library}, ${c.className}]; ${pipeline?.name} takes ${slot.allowed.map((a) => `[${a.join(', ')}]`).join(' or ')}.`, `set "${c.name}" in model_index.json to ${JSON.stringify(slot.allowed[0])}`),
      );
    }
    const sub = entries.get(c.name);
    if (!sub || sub.type !== 'dir') {
      if (spec?.kind === 'multi') continue;
      problems.push(
        problem(
          sub?.type === 'broken' ? 'broken-link' : 'component-missing',
          'error',
          c.name,
          `model_index.json lists ${c.name} as [${c.library}, ${c.className}] but there is no ${c.name}/ folder.`,
          optional ? `restore ${c.name}/, or set "${c.name}" to [null, null] in model_index.json (it is optional)` : `restore the ${c.name}/ folder (copy it from the model's original repository)`,
        ),
      );
      continue;
    }
    report.present = true;
    if (!spec) continue;
    const analysed = await analyseComponent(join(dir, c.name), c.name, spec, classes);
    Object.assign(report, analysed.report);
    problems.push(...analysed.problems);
    tensorsOf.set(c.name, { tensors: analysed.tensors, config: analysed.config, spec });
  }
  if (pipeline) {
    for (const slot of pipeline.components) {
      if (slot.optional || listed.some((c) => c.name === slot.name)) continue;
      problems.push(problem('component-not-listed', 'error', slot.name, `${pipeline.name} needs ${slot.name}, which model_index.json does not list.`, `add "${slot.name}": ${JSON.stringify(slot.allowed[0])} to model_index.json and the ${slot.name}/ folder`));
    }
    problems.push(...pipelineChecks(pipeline, tensorsOf, classes));
  }
  for (const c of components) if (c.status !== 'absent') c.status = componentStatus(c.name, problems);
  const otherFiles = [...entries.values()].filter((e) => e.type === 'file' && CHECKPOINT_EXT.test(e.name)).map((e) => e.name);
  const variants = variantAvailability(components);
  const verdict = pipelineVerdict(className, pipeline !== undefined, components, variants, problems);
  return { schema: 1, kind: 'pipeline', path: base.path, resolvedPath: base.resolvedPath, hfCache: base.hfCache, className, diffusersVersion, components, variants, otherFiles, verdict, problems };
}

function emptyComponent(c: Listed, optional: boolean, expected: boolean): ComponentReport {
  return {
    name: c.name,
    library: c.library,
    className: c.className,
    kind: null,
    optional,
    expected,
    present: false,
    config: null,
    weights: [],
    loads: null,
    variants: [],
    tensors: 0,
    parameters: 0,
    dtypes: {},
    status: 'ok',
  };
}

function componentStatus(name: string, problems: readonly Problem[]): ComponentReport['status'] {
  const mine = problems.filter((p) => p.component === name);
  if (mine.some((p) => p.severity === 'error')) return 'error';
  if (mine.some((p) => p.severity === 'warning')) return 'warning';
  return 'ok';
}

/** Component folders recognised by their files, for a folder without (or with a broken) model_index.json. */
async function guessComponents(dir: string, entries: ReadonlyMap<string, Entry>): Promise<Listed[]> {
  const out: Listed[] = [];
  for (const e of entries.values()) {
    if (e.type !== 'dir') continue;
    const sub = join(dir, e.name);
    const files = await listEntries(sub).catch(() => new Map<string, Entry>());
    if (files.has('config.json')) {
      const cfg = await readJson(join(sub, 'config.json'));
      if ('value' in cfg) {
        const v = cfg.value;
        if (typeof v._class_name === 'string') out.push({ name: e.name, library: 'diffusers', className: v._class_name });
        else if (Array.isArray(v.architectures) && typeof v.architectures[0] === 'string') out.push({ name: e.name, library: 'transformers', className: v.architectures[0] });
      }
    } else if (files.has('scheduler_config.json')) {
      const cfg = await readJson(join(sub, 'scheduler_config.json'));
      if ('value' in cfg && typeof cfg.value._class_name === 'string') out.push({ name: e.name, library: 'diffusers', className: cfg.value._class_name });
    } else if (files.has('tokenizer_config.json') || files.has('vocab.json') || files.has('tokenizer.json')) {
      out.push({ name: e.name, library: 'transformers', className: 'CLIPTokenizer' });
    } else if (files.has('preprocessor_config.json')) {
      out.push({ name: e.name, library: 'transformers', className: 'CLIPImageProcessor' });
    }
  }
  return out;
}

/** The first pipeline whose required components are all present and whose slots take the classes found. */
function guessPipeline(found: readonly Listed[], classes: DiffusersClasses): string | null {
  for (const p of classes.pipelines.values()) {
    const required = p.components.filter((s) => !s.optional);
    const fits = (s: PipelineSpec['components'][number]) => {
      const c = found.find((f) => f.name === s.name);
      return c !== undefined && s.allowed.some(([, cls]) => cls === c.className);
    };
    if (!required.every(fits)) continue;
    if (!found.every((f) => p.components.some((s) => s.name === f.name))) continue;
    return p.name;
  }
  return null;
}

// ------------------------------------------------------------------------------------------------
// One component
// ------------------------------------------------------------------------------------------------

interface Analysed {
  report: Partial<ComponentReport>;
  problems: Problem[];
  tensors: TensorInfo[];
  config?: Record<string, unknown>;
}

async function analyseComponent(dir: string, name: string | null, spec: ClassSpec, classes: DiffusersClasses): Promise<Analysed> {
  const entries = await listEntries(dir);
  const label = name ?? '.';
  const rel = (f: string) => (name ? `${name}/${f}` : f);
  const problems: Problem[] = [];
  const report: Partial<ComponentReport> = { kind: spec.kind };
  const configFile = spec.kind === 'model' || spec.kind === 'scheduler' || spec.kind === 'processor' ? classes.configFiles[spec.kind] : undefined;
  let config: Record<string, unknown> | undefined;
  if (configFile) {
    const e = entries.get(configFile);
    if (!e) {
      problems.push(problem('config-missing', 'error', name, `${rel(configFile)} is missing.`, `restore ${rel(configFile)} (written by ${spec.name}.save_pretrained)`));
    } else {
      const parsed = await readJson(join(dir, configFile));
      if ('error' in parsed) {
        problems.push(problem(e.type === 'broken' ? 'broken-link' : 'config-invalid', 'error', name, `${rel(configFile)} ${parsed.error}.`, `restore ${rel(configFile)}`));
      } else {
        config = parsed.value;
        report.config = configFile;
        const declared = typeof config._class_name === 'string' ? config._class_name : Array.isArray(config.architectures) ? String(config.architectures[0]) : undefined;
        if (spec.kind !== 'processor' && declared !== undefined && declared !== spec.name) {
          problems.push(problem('class-mismatch', 'warning', name, `${rel(configFile)} says ${declared} but the component is loaded as ${spec.name}.`, `check which class ${label} really is; make model_index.json and ${rel(configFile)} agree`));
        }
      }
    }
  }
  if (spec.kind === 'tokenizer') problems.push(...(await checkTokenizer(dir, entries, name)));
  if (spec.kind === 'onnx') {
    const onnx = entries.get('model.onnx');
    if (!onnx || onnx.type !== 'file' || onnx.size === 0) {
      problems.push(problem(onnx?.type === 'broken' ? 'broken-link' : 'weights-missing', 'error', name, `${rel('model.onnx')} is missing${onnx?.type === 'file' ? ' (empty)' : ''}.`, `export the ONNX model again (model.onnx, external data in weights.pb)`));
    } else {
      report.loads = { format: 'onnx', variant: null, files: ['model.onnx', ...(entries.has('weights.pb') ? ['weights.pb'] : [])] };
    }
  }
  let tensors: TensorInfo[] = [];
  if (spec.kind === 'model' && spec.weights && spec.bin) {
    const sets = findWeightSets([...entries.values()], spec.weights, spec.bin);
    const read = [];
    for (const s of sets) read.push(await readWeightSet(dir, s, entries, name));
    report.weights = read.map((r) => r.report);
    report.variants = [...new Set(sets.filter((s) => s.variant !== null).map((s) => s.variant as string))];
    for (const r of read) problems.push(...r.problems);
    const chosen = defaultSet(sets);
    const usable = chosen ?? sets.find((s) => s.format === 'safetensors') ?? sets[0];
    if (sets.length === 0) {
      const loose = [...entries.values()].filter((e) => e.type === 'file' && CHECKPOINT_EXT.test(e.name)).map((e) => e.name);
      problems.push(
        problem(
          'weights-missing',
          'error',
          name,
          `no weights in ${label}/: expected ${spec.weights}.safetensors (or ${spec.bin}.bin, or shards with an index)${loose.length ? `; found ${loose.join(', ')} under other names` : ''}.`,
          loose.length ? `rename ${rel(loose[0])} to ${rel(`${spec.weights}.safetensors`)} if it holds this component in Diffusers layout` : `restore ${rel(`${spec.weights}.safetensors`)}`,
        ),
      );
    } else if (!chosen) {
      problems.push(
        problem('variant-only', 'warning', name, `${label}/ has only variant weights (${report.variants.join(', ')}): from_pretrained needs variant="${report.variants[0]}".`, `load with variant="${report.variants[0]}", or add ${rel(`${spec.weights}.safetensors`)}`),
      );
    } else if (chosen.format === 'bin') {
      problems.push(
        problem(
          'pickle-weights',
          'warning',
          name,
          `${label}/ has pickle weights only (${chosen.files.join(', ')}): loadable, but torch.load runs pickle code and is slower.`,
          `re-save as safetensors: from_pretrained(...).save_pretrained(..., safe_serialization=True) writes ${rel(`${spec.weights}.safetensors`)}`,
        ),
      );
    }
    const usableRead = read[sets.indexOf(usable)];
    if (usableRead) {
      tensors = usableRead.tensors;
      report.loads = { format: usable.format, variant: usable.variant, files: usable.files };
      report.tensors = usableRead.report.tensors;
      report.parameters = usableRead.report.parameters;
      report.dtypes = usableRead.report.dtypes;
      if (config && usableRead.report.complete) {
        for (const f of runConfigChecks(spec.checks, config, tensors)) {
          problems.push(
            problem(
              'config-weights-mismatch',
              'error',
              name,
              `${rel(configFile ?? 'config.json')} ${f.config} = ${JSON.stringify(f.configValue)} but the weights say ${JSON.stringify(f.weightsValue)} (${f.evidence}).`,
              fixFor(f.config, f.weightsValue, rel(configFile ?? 'config.json')),
            ),
          );
        }
      }
      for (let i = 0; i < sets.length; i++) {
        if (sets[i] === usable || !read[i].report.complete || !usableRead.report.complete) continue;
        const diff = compareSets(usableRead.tensors, read[i].tensors);
        if (diff) problems.push(problem('variant-mismatch', 'warning', name, `${label}/ ${describeSet(sets[i])} differs from ${describeSet(usable)}: ${diff}.`, `re-save the ${describeSet(sets[i])} from the same model`));
      }
    }
  }
  return { report, problems, tensors, config };
}

function fixFor(key: string, value: number | boolean, file: string): string {
  const m = /^([A-Za-z0-9_]+)(?:\[(\d+)\]|\.(length))?$/.exec(key);
  if (m && m[3]) return `${file}: make ${m[1]} a list of ${value} entries matching the weights (or use the config saved with these weights)`;
  if (m && m[2]) return `${file}: set ${m[1]}[${m[2]}] to ${value} (or use the config saved with these weights)`;
  return `${file}: set "${key}" to ${JSON.stringify(value)} (or use the config saved with these weights)`;
}

function describeSet(s: { format: string; variant: string | null }): string {
  return `${s.format}${s.variant ? ` variant ${s.variant}` : ''} weights`;
}

function compareSets(a: readonly TensorInfo[], b: readonly TensorInfo[]): string | null {
  const bm = new Map(b.map((t) => [t.name, t]));
  const missing = a.filter((t) => !bm.has(t.name)).map((t) => t.name);
  const am = new Set(a.map((t) => t.name));
  const extra = b.filter((t) => !am.has(t.name)).map((t) => t.name);
  const shape = a.filter((t) => bm.has(t.name) && bm.get(t.name)?.shape.join(',') !== t.shape.join(',')).map((t) => t.name);
  const parts: string[] = [];
  if (missing.length) parts.push(`${missing.length} tensors missing (${missing.slice(0, 3).join(', ')})`);
  if (extra.length) parts.push(`${extra.length} extra tensors (${extra.slice(0, 3).join(', ')})`);
  if (shape.length) parts.push(`${shape.length} shapes differ (${shape.slice(0, 3).join(', ')})`);
  return parts.length ? parts.join(', ') : null;
}

async function checkTokenizer(dir: string, entries: ReadonlyMap<string, Entry>, name: string | null): Promise<Problem[]> {
  const rel = (f: string) => (name ? `${name}/${f}` : f);
  const out: Problem[] = [];
  const fast = entries.get('tokenizer.json');
  const vocab = entries.get('vocab.json');
  const merges = entries.get('merges.txt');
  const broken = [fast, vocab, merges].find((e) => e?.type === 'broken');
  if (broken) out.push(problem('broken-link', 'error', name, `${rel(broken.name)} is a link to a file that does not exist.`, `download ${rel(broken.name)} again`));
  if (fast?.type === 'file') {
    const t = await readJson(join(dir, 'tokenizer.json'));
    if ('error' in t) out.push(problem('tokenizer-invalid', 'error', name, `${rel('tokenizer.json')} ${t.error}.`, `restore ${rel('tokenizer.json')}`));
  } else if (vocab?.type === 'file' && merges?.type === 'file') {
    const v = await readJson(join(dir, 'vocab.json'));
    if ('error' in v) out.push(problem('tokenizer-invalid', 'error', name, `${rel('vocab.json')} ${v.error}.`, `restore ${rel('vocab.json')} (the CLIP BPE vocabulary)`));
    else if (Object.keys(v.value).length === 0) out.push(problem('tokenizer-invalid', 'error', name, `${rel('vocab.json')} is empty.`, `restore ${rel('vocab.json')} (the CLIP BPE vocabulary)`));
    if (merges.size === 0) out.push(problem('tokenizer-invalid', 'error', name, `${rel('merges.txt')} is empty.`, `restore ${rel('merges.txt')} (the CLIP BPE merges)`));
  } else if (!broken) {
    const have = ['vocab.json', 'merges.txt'].filter((f) => entries.get(f)?.type === 'file');
    const lack = ['vocab.json', 'merges.txt'].filter((f) => !have.includes(f));
    out.push(
      problem(
        'tokenizer-missing',
        'error',
        name,
        `${name ?? 'the tokenizer'}/ has no tokenizer.json and lacks ${lack.join(' and ')}${have.length ? ` (has ${have.join(', ')})` : ''}.`,
        `copy vocab.json and merges.txt of the CLIP BPE tokenizer (e.g. from openai/clip-vit-large-patch14) into ${name ?? 'the folder'}/`,
      ),
    );
  }
  for (const f of ['tokenizer_config.json', 'special_tokens_map.json']) {
    if (entries.get(f)?.type !== 'file') continue;
    const j = await readJson(join(dir, f));
    if ('error' in j) out.push(problem('tokenizer-invalid', 'error', name, `${rel(f)} ${j.error}.`, `restore ${rel(f)}`));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Across components
// ------------------------------------------------------------------------------------------------

function pipelineChecks(
  pipeline: PipelineSpec,
  parts: ReadonlyMap<string, { tensors: TensorInfo[]; config?: Record<string, unknown>; spec?: ClassSpec }>,
  classes: DiffusersClasses,
): Problem[] {
  const out: Problem[] = [];
  const unet = parts.get('unet');
  const vae = parts.get('vae');
  if (!unet?.spec || unet.spec.kind !== 'model') return out;
  const value = (p: { tensors: TensorInfo[]; config?: Record<string, unknown>; spec?: ClassSpec } | undefined, key: string) =>
    p?.spec ? weightsOrConfig(p.spec.checks, key, p.config, p.tensors) : undefined;
  const inCh = value(unet, 'in_channels');
  const latent = value(vae, 'latent_channels');
  if (inCh !== undefined && latent !== undefined && pipeline.unetInChannels.length > 0 && !pipeline.unetInChannels.some(([a, b]) => a * latent + b === inCh)) {
    const fitting = [...classes.pipelines.values()]
      .filter((p) => p.components === pipeline.components && p.unetInChannels.some(([a, b]) => a * latent + b === inCh))
      .map((p) => p.name);
    const wanted = pipeline.unetInChannels.map(([a, b]) => a * latent + b).join(' or ');
    out.push(
      problem(
        'pipeline-mismatch',
        'warning',
        'unet',
        `the UNet takes ${inCh} input channels; ${pipeline.name} feeds it ${wanted} (VAE latent_channels ${latent}): it loads but fails when called.`,
        fitting.length ? `set "_class_name" in model_index.json to ${fitting.join(' or ')}` : 'use the pipeline class this UNet was trained for',
      ),
    );
  }
  const cross = value(unet, 'cross_attention_dim');
  const encoders = pipeline.textEncoders.map((n) => parts.get(n)).filter((p) => p?.spec !== undefined);
  if (cross !== undefined && encoders.length > 0) {
    const widths = encoders.map((p) => value(p, 'hidden_size'));
    if (widths.every((w) => w !== undefined)) {
      const sum = (widths as number[]).reduce((s, w) => s + w, 0);
      if (sum !== cross) {
        out.push(
          problem(
            'pipeline-mismatch',
            'warning',
            'unet',
            `the UNet's cross_attention_dim is ${cross} but the text encoders give ${widths.join(' + ')} = ${sum} features per token: it loads but fails when called.`,
            'use the text encoders this UNet was trained with',
          ),
        );
      }
    }
  }
  return out;
}

function variantAvailability(components: readonly ComponentReport[]): VariantAvailability[] {
  const bearing = components.filter((c) => c.present && c.kind === 'model' && c.weights.length > 0);
  const names = [...new Set(bearing.flatMap((c) => c.variants))].sort();
  return names.map((name) => {
    const have = bearing.filter((c) => c.variants.includes(name)).map((c) => c.name);
    return { name, components: have, complete: have.length === bearing.length };
  });
}

function variantText(variants: readonly VariantAvailability[]): string {
  if (variants.length === 0) return '';
  const parts = variants.map((v) => (v.complete ? `${v.name} variant available` : `${v.name} variant in ${v.components.join(', ')} only`));
  return ` (${parts.join('; ')})`;
}

function pipelineVerdict(className: string | null, known: boolean, components: readonly ComponentReport[], variants: readonly VariantAvailability[], problems: readonly Problem[]): Verdict {
  const errors = problems.filter((p) => p.severity === 'error');
  if (errors.length > 0 || !known) {
    const what = className ? `as ${className}` : 'as a pipeline';
    return { status: 'not-loadable', exitCode: 1, summary: `not loadable ${what}: ${errors.length} problem${errors.length === 1 ? '' : 's'} (${[...new Set(errors.map((p) => p.code))].join(', ')})` };
  }
  const notes: string[] = [];
  const pickle = components.filter((c) => c.loads?.format === 'bin').map((c) => c.name);
  if (pickle.length) notes.push(`pickle weights in ${pickle.join(', ')}; safetensors preferred`);
  const variantOnly = problems.filter((p) => p.code === 'variant-only').map((p) => p.component);
  if (variantOnly.length) notes.push(`${variantOnly.join(', ')} only with variant=`);
  return { status: 'loadable', exitCode: 0, summary: `loadable as ${className}${variantText(variants)}${notes.length ? `; ${notes.join('; ')}` : ''}` };
}

// ------------------------------------------------------------------------------------------------
// A single model folder (config.json + weights: a VAE, a ControlNet, a UNet, a text encoder)
// ------------------------------------------------------------------------------------------------

async function inspectModelFolder(dir: string, entries: ReadonlyMap<string, Entry>, classes: DiffusersClasses, base: Base): Promise<FolderInspection> {
  const problems: Problem[] = [...base.cacheProblems];
  const cfg = await readJson(join(dir, 'config.json'));
  let className: string | null = null;
  let library: string | null = null;
  if ('error' in cfg) {
    problems.push(problem('config-invalid', 'error', null, `config.json ${cfg.error}.`, 'restore config.json'));
  } else if (typeof cfg.value._class_name === 'string') {
    className = cfg.value._class_name;
    library = 'diffusers';
  } else if (Array.isArray(cfg.value.architectures) && typeof cfg.value.architectures[0] === 'string') {
    className = cfg.value.architectures[0];
    library = 'transformers';
  } else {
    problems.push(problem('config-invalid', 'error', null, 'config.json has neither "_class_name" (diffusers) nor "architectures" (transformers).', 'restore config.json as save_pretrained writes it'));
  }
  const component = emptyComponent({ name: '.', library, className }, false, true);
  component.present = true;
  const spec = className ? classes.classes.get(className) : undefined;
  if (className && (!spec || spec.kind !== 'model')) {
    problems.push(problem('unknown-component-class', 'error', null, `config.json names ${className}, a model class this tool does not know.`, null));
  }
  if (spec && spec.kind === 'model') {
    const analysed = await analyseComponent(dir, null, spec, classes);
    Object.assign(component, analysed.report);
    problems.push(...analysed.problems);
  }
  component.status = componentStatus('.', problems.map((p) => ({ ...p, component: p.component ?? '.' })));
  const variants = variantAvailability([component]).map((v) => ({ ...v, components: ['.'] }));
  const otherFiles = [...entries.values()]
    .filter((e) => e.type === 'file' && CHECKPOINT_EXT.test(e.name) && !component.weights.some((w) => w.files.includes(e.name)))
    .map((e) => e.name);
  const errors = problems.filter((p) => p.severity === 'error');
  const verdict: Verdict = hasErrors(problems)
    ? { status: 'not-loadable', exitCode: 1, summary: `not loadable${className ? ` as ${className}` : ''}: ${errors.length} problem${errors.length === 1 ? '' : 's'} (${[...new Set(errors.map((p) => p.code))].join(', ')})` }
    : {
        status: 'loadable',
        exitCode: 0,
        summary: `loadable as ${className} (${className}.from_pretrained)${variantText(variants)}${component.loads?.format === 'bin' ? '; pickle weights, safetensors preferred' : ''}`,
      };
  return { schema: 1, kind: 'model', path: base.path, resolvedPath: base.resolvedPath, hfCache: base.hfCache, className, diffusersVersion: null, components: [component], variants, otherFiles, verdict, problems };
}
