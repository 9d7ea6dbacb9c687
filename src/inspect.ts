/**
 * `inspect` for a single checkpoint file: what is inside, read from headers only.
 * No tensor bytes are read, so inspecting a multi-GB file takes milliseconds.
 */
import type { DType } from './dtypes.js';
import { numelOf } from './dtypes.js';
import { openCheckpoint } from './formats/open.js';
import type { InputFormat, SafetyReport, TensorSource } from './formats/tensor-source.js';

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

export interface FileInspection {
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

export interface InspectOptions {
  allowUnsafePickle?: boolean;
}

export async function inspectFile(path: string, options: InspectOptions = {}): Promise<FileInspection> {
  // Inspecting reads no tensor bytes and executes nothing, so an unsafe pickle can still be described.
  const source = await openCheckpoint(path, { allowUnsafePickle: options.allowUnsafePickle ?? true });
  try {
    return describeSource(source);
  } finally {
    await source.close();
  }
}

export function describeSource(source: TensorSource): FileInspection {
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
