/**
 * Weight files of one Diffusers component folder: which sets exist (safetensors / pickle, plain /
 * sharded, each variant), which one a loader picks, and whether each set is whole — every shard
 * present, the index's weight_map equal to the tensors the shard headers hold, total_size right.
 * Headers only: safetensors headers and pickle opcodes, never tensor bytes.
 *
 * Spec: docs/formats.md §6.1 (names), §6.2 (index), §6.4 (variants), §6.5 (how loaders pick).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DType } from '../dtypes.js';
import { numelOf } from '../dtypes.js';
import { isCkptError } from '../errors.js';
import { openCheckpoint } from '../formats/open.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { problem, type Problem } from './types.js';

export type WeightFormat = 'safetensors' | 'bin';

export interface WeightSet {
  format: WeightFormat;
  /** `fp16`, `non_ema`, ... or null for the plain names. */
  variant: string | null;
  /** The index JSON file name when sharded. */
  index: string | null;
  /** Weight files, in shard order. */
  files: string[];
}

export interface WeightSetReport extends WeightSet {
  tensors: number;
  parameters: number;
  bytes: number;
  dtypes: Partial<Record<DType, number>>;
  /** False when a file is missing or unreadable. */
  complete: boolean;
}

/** A name in a component folder: a regular file, a folder, or a link whose target is gone. */
export interface Entry {
  readonly name: string;
  readonly type: 'file' | 'dir' | 'broken';
  readonly size: number;
}

const VARIANT = '([A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*?)';

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Groups the folder's weight files into sets (formats.md §6.1, §6.4). */
export function findWeightSets(entries: readonly Entry[], base: string, binBase: string): WeightSet[] {
  interface Found {
    set: WeightSet;
    single: string | null;
    shards: string[];
  }
  const sets = new Map<string, Found>();
  const get = (format: WeightFormat, variant: string | null): Found => {
    const key = `${format}\n${variant ?? ''}`;
    let s = sets.get(key);
    if (!s) sets.set(key, (s = { set: { format, variant, index: null, files: [] }, single: null, shards: [] }));
    return s;
  };
  const forms: [WeightFormat, string, string][] = [
    ['safetensors', base, 'safetensors'],
    ['bin', binBase, 'bin'],
  ];
  for (const e of entries) {
    if (e.type === 'dir') continue;
    for (const [format, b, ext] of forms) {
      const shard = new RegExp(`^${esc(b)}(?:\\.${VARIANT})?-(\\d{5})-of-(\\d{5})\\.${ext}$`).exec(e.name);
      const single = new RegExp(`^${esc(b)}(?:\\.${VARIANT})?\\.${ext}$`).exec(e.name);
      const index = new RegExp(`^${esc(b)}\\.${ext}\\.index(?:\\.${VARIANT})?\\.json$`).exec(e.name);
      const legacyIndex = new RegExp(`^${esc(b)}\\.${ext}\\.${VARIANT}\\.index\\.json$`).exec(e.name);
      if (shard) get(format, shard[1] ?? null).shards.push(e.name);
      else if (single) get(format, single[1] ?? null).single = e.name;
      else if (index) get(format, index[1] ?? null).set.index = e.name;
      else if (legacyIndex) get(format, legacyIndex[1]).set.index ??= e.name;
    }
  }
  // With an index (or shards) a loader reads the shards; a plain file next to them is not used.
  for (const f of sets.values()) f.set.files = f.set.index || f.shards.length ? f.shards.sort() : f.single ? [f.single] : [];
  return [...sets.values()]
    .map((f) => f.set)
    .sort((a, b) => (a.format === b.format ? (a.variant ?? '').localeCompare(b.variant ?? '') : a.format === 'safetensors' ? -1 : 1));
}

/** The set a loader uses without `variant=`: safetensors before pickle, index before single file. */
export function defaultSet(sets: readonly WeightSet[]): WeightSet | undefined {
  return sets.find((s) => s.variant === null && s.format === 'safetensors') ?? sets.find((s) => s.variant === null && s.format === 'bin');
}

export interface ReadSet {
  report: WeightSetReport;
  /** Tensors of the whole set (all shards), for config checks. */
  tensors: TensorInfo[];
  problems: Problem[];
}

/** Reads the headers of every file of a set and checks the index against them. */
export async function readWeightSet(dir: string, set: WeightSet, entries: ReadonlyMap<string, Entry>, component: string | null): Promise<ReadSet> {
  const problems: Problem[] = [];
  const label = component ?? 'model';
  const where = (name: string) => (component ? `${component}/${name}` : name);
  let complete = true;
  let weightMap: Map<string, string> | undefined;
  let totalSize: number | undefined;
  const files = [...set.files];
  if (set.index) {
    const parsed = await readIndex(join(dir, set.index));
    if ('error' in parsed) {
      problems.push(problem('shard-index-invalid', 'error', component, `${where(set.index)}: ${parsed.error}`, `rewrite the index from the shard headers, or remove it and keep a single weight file`));
      complete = false;
    } else {
      weightMap = parsed.weightMap;
      totalSize = parsed.totalSize;
      for (const f of new Set(weightMap.values())) if (!files.includes(f)) files.push(f);
      files.sort();
    }
  }
  const tensors: TensorInfo[] = [];
  const byFile = new Map<string, TensorInfo[]>();
  for (const f of files) {
    const e = entries.get(f);
    if (!e || e.type !== 'file') {
      complete = false;
      if (e?.type === 'broken') {
        problems.push(problem('broken-link', 'error', component, `${where(f)} is a link to a file that does not exist (an interrupted download?).`, `download ${where(f)} again`));
      } else {
        problems.push(problem('shard-missing', 'error', component, `${where(f)} is missing: ${set.index ? `${where(set.index)} maps tensors to it` : 'expected by the shard naming'}.`, `download or copy ${where(f)} into ${label}/`));
      }
      continue;
    }
    try {
      const source = await openCheckpoint(join(dir, f), { allowUnsafePickle: true });
      try {
        if (source.safety.dangerous) {
          const names = source.safety.globals.filter((g) => g.safety === 'dangerous').map((g) => `${g.module}.${g.name}`);
          problems.push(problem('unsafe-pickle', 'error', component, `${where(f)} imports dangerous pickle globals (${names.join(', ')}): loading it with torch runs code.`, 'do not load it; get a safetensors copy from a source you trust'));
          complete = false;
        }
        byFile.set(f, [...source.tensors]);
        tensors.push(...source.tensors);
      } finally {
        await source.close();
      }
    } catch (e) {
      if (!isCkptError(e)) throw e;
      complete = false;
      problems.push(problem('weights-unreadable', 'error', component, `${where(f)}: [${e.code}] ${e.message}`, `download or copy ${where(f)} again`));
    }
  }
  if (set.index && weightMap) problems.push(...compareIndex(set, weightMap, totalSize, byFile, component, where));
  if (!set.index && files.length > 1) {
    problems.push(problem('shard-index-invalid', 'error', component, `${files.length} shards of ${set.format}${set.variant ? ` variant ${set.variant}` : ''} weights but no index JSON.`, `restore the .index.json file of ${label}/`));
  }
  if (set.index && weightMap) {
    const referenced = new Set(weightMap.values());
    for (const f of set.files) {
      if (!referenced.has(f)) problems.push(problem('shard-unreferenced', 'info', component, `${where(f)} is not named in ${where(set.index)}; loaders ignore it.`, `remove ${where(f)}`));
    }
  }
  return { report: summarize(set, files, tensors, complete), tensors, problems };
}

function summarize(set: WeightSet, files: string[], tensors: readonly TensorInfo[], complete: boolean): WeightSetReport {
  const dtypes: Partial<Record<DType, number>> = {};
  let parameters = 0;
  let bytes = 0;
  for (const t of tensors) {
    const n = numelOf(t.shape);
    parameters += n;
    bytes += t.byteLength;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + n;
  }
  return { ...set, files, tensors: tensors.length, parameters, bytes, dtypes, complete };
}

async function readIndex(path: string): Promise<{ weightMap: Map<string, string>; totalSize?: number } | { error: string }> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    return { error: `not valid JSON (${(e as Error).message})` };
  }
  const obj = json as { weight_map?: unknown; metadata?: { total_size?: unknown } };
  if (typeof obj !== 'object' || obj === null || typeof obj.weight_map !== 'object' || obj.weight_map === null || Array.isArray(obj.weight_map)) {
    return { error: 'has no "weight_map" object' };
  }
  const weightMap = new Map<string, string>();
  for (const [tensor, file] of Object.entries(obj.weight_map as Record<string, unknown>)) {
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) return { error: `weight_map["${tensor}"] is ${JSON.stringify(file)} (expected a file name in the same folder)` };
    weightMap.set(tensor, file);
  }
  const ts = obj.metadata?.total_size;
  return { weightMap, totalSize: typeof ts === 'number' ? ts : typeof ts === 'string' && /^\d+$/.test(ts) ? Number(ts) : undefined };
}

const LIST = 5;

function some(items: readonly string[]): string {
  return items.length > LIST ? `${items.slice(0, LIST).join(', ')} ... and ${items.length - LIST} more` : items.join(', ');
}

function compareIndex(
  set: WeightSet,
  weightMap: ReadonlyMap<string, string>,
  totalSize: number | undefined,
  byFile: ReadonlyMap<string, TensorInfo[]>,
  component: string | null,
  where: (name: string) => string,
): Problem[] {
  const out: Problem[] = [];
  const index = set.index as string;
  const held = new Map<string, string>();
  for (const [file, tensors] of byFile) for (const t of tensors) held.set(t.name, file);
  const wrongFile: string[] = [];
  const notHeld: string[] = [];
  for (const [tensor, file] of weightMap) {
    if (!byFile.has(file)) continue; // reported as a missing or unreadable shard
    const actual = held.get(tensor);
    if (actual === undefined) notHeld.push(`${tensor} (${file})`);
    else if (actual !== file) wrongFile.push(`${tensor} (index: ${file}, header: ${actual})`);
  }
  const unlisted = [...held].filter(([t]) => !weightMap.has(t)).map(([t, f]) => `${t} (${f})`);
  const parts: string[] = [];
  if (notHeld.length) parts.push(`${notHeld.length} tensors in the index are in no shard header: ${some(notHeld)}`);
  if (wrongFile.length) parts.push(`${wrongFile.length} tensors are in another shard than the index says: ${some(wrongFile)}`);
  if (unlisted.length) parts.push(`${unlisted.length} tensors in the shard headers are not in the index: ${some(unlisted)}`);
  if (parts.length) {
    out.push(problem('shard-index-mismatch', 'error', component, `${where(index)} does not match the shard headers: ${parts.join('; ')}.`, `rebuild ${where(index)} from the shard headers (or restore the original shards)`));
  }
  if (totalSize !== undefined && byFile.size === new Set(weightMap.values()).size) {
    const actual = [...byFile.values()].flat().reduce((s, t) => s + t.byteLength, 0);
    if (actual !== totalSize) {
      out.push(problem('shard-total-size', 'warning', component, `${where(index)}: metadata.total_size is ${totalSize} but the shards hold ${actual} bytes of tensors (loaders read only weight_map).`, `set metadata.total_size to ${actual}`));
    }
  }
  return out;
}
