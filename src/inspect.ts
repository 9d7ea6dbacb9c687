/**
 * `inspect`: for any path, can Diffusers load it (a Diffusers folder), or can it be converted (a
 * checkpoint file), and if not, what is wrong and which command fixes it. Headers only: no tensor
 * bytes are read, so inspecting a multi-GB file or folder takes milliseconds.
 *
 *   file                      -> FileInspection (format, safety, family, prediction, EMA, command)
 *   Diffusers folder          -> FolderInspection (inspect-folder.ts)
 *   folder of other things    -> CollectionInspection: one entry per checkpoint / Diffusers folder
 */
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import type { DType } from './dtypes.js';
import { numelOf } from './dtypes.js';
import { CkptError, ErrorCode, isCkptError } from './errors.js';
import { openCheckpoint } from './formats/open.js';
import type { InputFormat, SafetyReport, TensorInfo, TensorSource } from './formats/tensor-source.js';
import { inspectFolder, type FolderInspection } from './inspect-folder.js';
import { loadDiffusersClasses } from './inspect/classes.js';
import { shellCommand } from './inspect/shell.js';
import { hasErrors, problem, type Problem, type Verdict } from './inspect/types.js';
import { detectFamily } from './mapping/detect-family.js';
import type { ConversionPlan, Evidence, FamilyDetection } from './mapping/plan-types.js';
import { planConversion } from './mapping/plan.js';
import { decidePrediction, type Decided, type PredictionType } from './mapping/prediction.js';

export type { FolderInspection, ComponentReport, HfCacheInfo, VariantAvailability } from './inspect-folder.js';
export type { Problem, ProblemCode, Severity, Verdict, VerdictStatus } from './inspect/types.js';
export { PROBLEM_CODES } from './inspect/types.js';

/** Prefixes SD checkpoints group their tensors under, longest first. */
const KNOWN_PREFIXES = [
  'model.diffusion_model.',
  'first_stage_model.',
  'cond_stage_model.transformer.',
  'cond_stage_model.model.',
  'cond_stage_model.',
  'conditioner.embedders.0.',
  'conditioner.embedders.1.',
  'conditioner.embedders.2.',
  'control_model.',
  'model_ema.',
  'embedder.',
  'depth_model.',
  'loss.',
  'encoder.',
  'decoder.',
] as const;

export interface PrefixCount {
  prefix: string;
  tensors: number;
  parameters: number;
}

/** What the headers of a checkpoint say (the schema-1 fields of the first `inspect`). */
export interface FileDescription {
  /** JSON schema version of this report; bumped on incompatible changes. */
  schema: 1;
  path: string;
  format: InputFormat;
  fileSize: number;
  container: Record<string, unknown>;
  wrapperPath: string[];
  tensorCount: number;
  parameters: number;
  bytesByDtype: Partial<Record<DType, number>>;
  tensorsByDtype: Partial<Record<DType, number>>;
  prefixes: PrefixCount[];
  extras: Record<string, unknown>;
  metadata: Record<string, string>;
  safety: SafetyReport;
}

export interface FileComponent {
  folder: string;
  className: string;
  library: string;
  tensors: number;
  parameters: number;
  /** Parameters per dtype. */
  dtypes: Partial<Record<DType, number>>;
}

export interface ConvertSuggestion {
  /** The command line, shell-quoted. */
  command: string;
  argv: string[];
  /** Each flag beyond input and output, and why it is there. */
  flags: { flag: string; value?: string; why: string }[];
  output: string;
  /** `pipeline`: a folder with model_index.json; `model`: one model folder (a standalone VAE). */
  writes: 'pipeline' | 'model';
}

export interface FileInspection extends FileDescription {
  kind: 'file';
  family: { id: string; confidence: FamilyDetection['confidence']; evidence: readonly Evidence[] } | null;
  prediction: { predictionType: Decided<PredictionType>; imageSize: Decided<number>; upcastAttention: Decided<boolean> } | null;
  ema: { present: boolean; count: number };
  components: FileComponent[];
  keys: { mapped: number; dropped: number; unknown: string[] } | null;
  convert: ConvertSuggestion | null;
  verdict: Verdict;
  problems: Problem[];
}

export interface UnreadableInspection {
  schema: 1;
  kind: 'unreadable';
  path: string;
  error: { code: string; message: string };
  verdict: Verdict;
  problems: Problem[];
}

export interface CollectionInspection {
  schema: 1;
  kind: 'collection';
  path: string;
  entries: (FileInspection | FolderInspection | CollectionInspection | UnreadableInspection)[];
  verdict: Verdict;
  problems: Problem[];
}

export type Inspection = FileInspection | FolderInspection | CollectionInspection | UnreadableInspection;

export interface InspectOptions {
  allowUnsafePickle?: boolean;
}

/** Inspects a file or a folder; throws a CkptError (exit 2) when the path cannot be read at all. */
export async function inspectPath(path: string, options: InspectOptions = {}): Promise<Inspection> {
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CkptError(ErrorCode.E_IO, `cannot open (${err.code ?? err.message})`, { file: path, cause: e });
  }
  if (!isDir) return inspectFile(path, options);
  return (await inspectFolder(path)) ?? inspectCollection(path, options);
}

export async function inspectFile(path: string, options: InspectOptions = {}): Promise<FileInspection> {
  // Inspecting reads no tensor bytes and executes nothing, so an unsafe pickle can still be described.
  const source = await openCheckpoint(path, { allowUnsafePickle: options.allowUnsafePickle ?? true });
  try {
    return analyseFile(source, describeSource(source));
  } finally {
    await source.close();
  }
}

export function describeSource(source: TensorSource): FileDescription {
  const bytesByDtype: Partial<Record<DType, number>> = {};
  const tensorsByDtype: Partial<Record<DType, number>> = {};
  let parameters = 0;
  for (const t of source.tensors) {
    bytesByDtype[t.dtype] = (bytesByDtype[t.dtype] ?? 0) + t.byteLength;
    tensorsByDtype[t.dtype] = (tensorsByDtype[t.dtype] ?? 0) + 1;
    parameters += numelOf(t.shape);
  }
  return {
    schema: 1,
    path: source.path,
    format: source.format,
    fileSize: source.fileSize,
    container: { ...source.container },
    wrapperPath: [...source.wrapperPath],
    tensorCount: source.tensors.length,
    parameters,
    bytesByDtype,
    tensorsByDtype,
    prefixes: countPrefixes(source),
    extras: { ...source.extras },
    metadata: { ...source.metadata },
    safety: source.safety,
  };
}

// ------------------------------------------------------------------------------------------------
// One checkpoint: family, plan, prediction, the convert command
// ------------------------------------------------------------------------------------------------

function analyseFile(source: TensorSource, d: FileDescription): FileInspection {
  const problems: Problem[] = [];
  const report: FileInspection = {
    ...d,
    kind: 'file',
    family: null,
    prediction: null,
    ema: { present: false, count: 0 },
    components: [],
    keys: null,
    convert: null,
    verdict: { status: 'not-convertible', exitCode: 1, summary: '' },
    problems,
  };
  if (source.safety.dangerous) {
    const names = source.safety.globals.filter((g) => g.safety === 'dangerous').map((g) => `${g.module}.${g.name}`);
    problems.push(
      problem('unsafe-pickle', 'error', null, `the pickle imports dangerous globals (${names.join(', ')}): torch.load would run code. Nothing was executed here.`, 'do not load this file; get a safetensors copy from a source you trust'),
    );
  }
  let detection: FamilyDetection | undefined;
  try {
    detection = detectFamily(source.tensors, source.metadata);
  } catch (e) {
    if (!isCkptError(e)) throw e;
    problems.push(familyProblem(source.tensors, e));
  }
  let plan: ConversionPlan | undefined;
  const flags: ConvertSuggestion['flags'] = [];
  if (detection) {
    report.family = { id: detection.family, confidence: detection.confidence, evidence: detection.evidence };
    try {
      plan = planConversion(source.tensors, detection);
    } catch (e) {
      if (!isCkptError(e)) throw e;
      if (e.code === ErrorCode.E_UNMATCHED_KEYS) {
        plan = planConversion(source.tensors, detection, { allowUnknownKeys: true });
        flags.push({ flag: '--allow-unknown-keys', why: `${plan.account.unknown.length} tensors match no mapping row; they would be left out` });
        problems.push(
          problem('unmatched-keys', 'error', null, `${plan.account.unknown.length} tensors match no mapping row of ${detection.family}: ${plan.account.unknown.slice(0, 5).join(', ')}${plan.account.unknown.length > 5 ? ', ...' : ''}.`, 'check the family; to convert the rest anyway, add --allow-unknown-keys (the command below has it)'),
        );
      } else {
        problems.push(problem('plan-failed', 'error', null, `[${e.code}] ${e.message}`, null));
      }
    }
  }
  if (plan && detection) {
    const ema = plan.ema ?? { present: false, count: 0 };
    report.ema = { present: ema.present, count: ema.count };
    report.keys = { mapped: plan.account.mapped.length, dropped: plan.account.dropped.length, unknown: [...plan.account.unknown] };
    report.components = plan.components.map((c) => componentSummary(c.folder, c.className, c.library, c.tensors.map((t) => t.source), source));
    if (ema.present) {
      flags.push({ flag: '--extract-ema', why: `${ema.count} EMA weights (model_ema.*) are in the file; the EMA UNet is usually the better one for inference` });
      problems.push(problem('ema-present', 'info', null, `${ema.count} EMA tensors (model_ema.*): the UNet can be taken from them.`, 'convert with --extract-ema to use the EMA weights (the command below has it); without it the regular weights are used'));
    }
    if (plan.family !== 'vae' && !plan.standalone) {
      const prediction = decidePrediction({ family: detection, metadata: source.metadata, extras: source.extras, tensors: source.tensors });
      report.prediction = { predictionType: prediction.predictionType, imageSize: prediction.imageSize, upcastAttention: prediction.upcastAttention };
      if (prediction.predictionType.confidence === 'low') {
        const other = prediction.predictionType.value === 'v_prediction' ? 'epsilon' : 'v_prediction';
        problems.push(
          problem(
            'prediction-guessed',
            'warning',
            null,
            `prediction type ${prediction.predictionType.value} is a default, not read from the file (${prediction.predictionType.evidence.map((e) => e.implies).join('; ')}).`,
            `if the model was trained with ${other}, add --prediction-type ${other}${other === 'epsilon' ? ' --image-size 512' : ''} (or --original-config with its YAML)`,
          ),
        );
      }
    }
    const writes = plan.standalone || plan.family === 'vae' ? 'model' : 'pipeline';
    const output = suggestedOutput(source.path);
    const yaml = siblingYaml(source.path);
    if (yaml) flags.push({ flag: '--original-config', value: yaml, why: 'the YAML saved next to the checkpoint under the same name' });
    const argv = ['ckpt2diffusers', source.path, output, ...flags.flatMap((f) => (f.value === undefined ? [f.flag] : [f.flag, f.value]))];
    report.convert = { command: shellCommand(argv), argv, flags, output, writes };
  }
  const convertible = report.convert !== null && !hasErrors(problems);
  const fam = report.family ? `${report.family.id}, ${report.family.confidence} confidence` : 'no known family';
  report.verdict = convertible
    ? {
        status: 'convertible',
        exitCode: 0,
        summary: `convertible (${fam}) to ${report.convert?.writes === 'model' ? `a single ${report.components[0]?.className ?? 'model'} folder` : 'a Diffusers pipeline folder'}: ${report.convert?.command}`,
      }
    : { status: 'not-convertible', exitCode: 1, summary: `not convertible (${fam}): ${[...new Set(problems.filter((p) => p.severity === 'error').map((p) => p.code))].join(', ')}` };
  return report;
}

function familyProblem(tensors: readonly TensorInfo[], e: CkptError): Problem {
  const known = loadDiffusersClasses().unsupportedCheckpoints.find((u) => tensors.some((t) => t.name.startsWith(u.prefix)));
  if (known) return problem('unsupported-family', 'error', null, `this looks like ${known.hint}`, null);
  if (tensors.length === 0) return problem('unknown-family', 'error', null, 'the file holds no tensors.', null);
  return problem('unknown-family', 'error', null, e.message, 'if it is a Stable Diffusion checkpoint of a family not listed in mappings/families/, it cannot be converted yet');
}

function componentSummary(folder: string, className: string, library: string, sources: readonly string[], source: TensorSource): FileComponent {
  const dtypes: Partial<Record<DType, number>> = {};
  let parameters = 0;
  const seen = new Set<string>();
  for (const name of sources) {
    if (seen.has(name)) continue;
    seen.add(name);
    const t = source.get(name);
    if (!t) continue;
    const n = numelOf(t.shape);
    parameters += n;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + n;
  }
  return { folder, className, library, tensors: seen.size, parameters, dtypes };
}

/** `models/sd15.ckpt` -> `models/sd15-diffusers`. */
function suggestedOutput(path: string): string {
  const stem = basename(path, extname(path));
  const dir = dirname(path);
  return dir === '.' && !path.startsWith('./') ? `${stem}-diffusers` : join(dir, `${stem}-diffusers`);
}

/** A1111 keeps a model's YAML next to it under the same stem (`sd21.ckpt` + `sd21.yaml`). */
function siblingYaml(path: string): string | null {
  const stem = join(dirname(path), basename(path, extname(path)));
  for (const ext of ['.yaml', '.yml']) if (existsSync(stem + ext)) return stem + ext;
  return null;
}

// ------------------------------------------------------------------------------------------------
// A folder of other things: checkpoints, Diffusers folders, Hugging Face cache folders
// ------------------------------------------------------------------------------------------------

const CHECKPOINT_EXT = /\.(ckpt|pt|pth|bin|safetensors|sft)$/i;

async function inspectCollection(path: string, options: InspectOptions, depth = 0): Promise<CollectionInspection> {
  let names: string[];
  try {
    names = (await readdir(path)).sort();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CkptError(ErrorCode.E_IO, `cannot list the folder (${err.code ?? err.message})`, { file: path, cause: e });
  }
  const entries: Inspection[] = [];
  for (const name of names) {
    const full = join(path, name);
    let isDir: boolean;
    try {
      isDir = (await stat(full)).isDirectory();
    } catch {
      if (CHECKPOINT_EXT.test(name)) entries.push(unreadable(full, new CkptError(ErrorCode.E_IO, 'is a link to a file that does not exist', { file: full })));
      continue;
    }
    if (isDir) {
      const folder = await inspectFolder(full).catch((e: unknown) => (isCkptError(e) ? unreadable(full, e) : Promise.reject(e)));
      if (folder) entries.push(folder);
      else if (depth === 0 && (name.startsWith('models--') || name === 'hub')) {
        const inner = await inspectCollection(full, options, depth + 1);
        if (inner.entries.length) entries.push(inner);
      }
      continue;
    }
    if (!CHECKPOINT_EXT.test(name)) continue;
    try {
      entries.push(await inspectFile(full, options));
    } catch (e) {
      if (!isCkptError(e)) throw e;
      entries.push(unreadable(full, e));
    }
  }
  const problems: Problem[] = [];
  if (entries.length === 0) {
    problems.push(problem('nothing-found', 'error', null, 'no model_index.json, no config.json, no component folders and no checkpoint files (.ckpt, .pt, .pth, .bin, .safetensors) here.', 'point inspect at a Diffusers folder or a checkpoint file'));
    return { schema: 1, kind: 'collection', path, entries, verdict: { status: 'not-loadable', exitCode: 1, summary: 'nothing to inspect' }, problems };
  }
  const files = entries.filter((e): e is FileInspection => e.kind === 'file');
  if (depth === 0 && entries.every((e) => e.kind === 'file' || e.kind === 'unreadable')) {
    const convertible = files.filter((f) => f.convert && f.verdict.exitCode === 0);
    problems.push(
      problem(
        'not-diffusers-folder',
        'info',
        null,
        `not a Diffusers folder (no model_index.json or config.json): ${entries.length} checkpoint file${entries.length === 1 ? '' : 's'}, ${convertible.length} convertible.`,
        convertible.length ? convertible.map((f) => f.convert?.command).join('\n') : null,
      ),
    );
  }
  return { schema: 1, kind: 'collection', path, entries, verdict: collectionVerdict(entries), problems };
}

function unreadable(path: string, e: CkptError): UnreadableInspection {
  return {
    schema: 1,
    kind: 'unreadable',
    path,
    error: { code: e.code, message: e.message },
    verdict: { status: 'unreadable', exitCode: 2, summary: `could not read: [${e.code}] ${e.message}` },
    problems: [problem('unreadable', 'error', null, `[${e.code}] ${e.message}`, null)],
  };
}

function collectionVerdict(entries: readonly Inspection[]): Verdict {
  const counts = new Map<string, number>();
  for (const e of entries) counts.set(e.verdict.status, (counts.get(e.verdict.status) ?? 0) + 1);
  const ok = entries.every((e) => e.verdict.exitCode === 0);
  const statuses = [...counts.keys()];
  const summary = `${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}: ${[...counts].map(([s, n]) => `${n} ${s}`).join(', ')}`;
  if (statuses.length === 1) return { status: entries[0].verdict.status, exitCode: ok ? 0 : 1, summary };
  return { status: 'mixed', exitCode: ok ? 0 : 1, summary };
}

function prefixOf(name: string): string {
  for (const p of KNOWN_PREFIXES) if (name.startsWith(p)) return p;
  const dot = name.indexOf('.');
  return dot < 0 ? '(top level)' : name.slice(0, dot + 1);
}

function countPrefixes(source: TensorSource): PrefixCount[] {
  const counts = new Map<string, PrefixCount>();
  for (const t of source.tensors) {
    const prefix = prefixOf(t.name);
    const entry = counts.get(prefix) ?? { prefix, tensors: 0, parameters: 0 };
    entry.tensors += 1;
    entry.parameters += numelOf(t.shape);
    counts.set(prefix, entry);
  }
  return [...counts.values()];
}
