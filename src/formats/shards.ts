/**
 * Sharded weights: how a state dict is split, what the files are called, and the index JSON.
 *
 * Spec: docs/formats.md §6.1 (names), §6.2 (index JSON), §6.3 (split algorithm, decimal sizes),
 * §6.4 (variants). Behaviour follows huggingface_hub `serialization/_base.py`
 * (`split_state_dict_into_shards_factory`, `parse_size_to_int`), diffusers `_add_variant` and
 * `ModelMixin.save_pretrained` (index written with `json.dumps(index, indent=2, sort_keys=True) + "\n"`).
 */
import { ErrorCode, fail } from '../errors.js';
import { pythonJsonDumps } from './python-json.js';

/** Weight file stems: Diffusers models and transformers text encoders. */
export type WeightsBase = 'diffusion_pytorch_model' | 'model';

export interface ShardEntry {
  readonly name: string;
  readonly byteLength: number;
}

/**
 * Splits tensors, in state-dict order, into shards of at most `maxShardBytes`, exactly as
 * huggingface_hub does: a new shard starts when adding the next tensor would exceed the limit,
 * and a tensor larger than the limit is put in a shard of its own *at once*, so it comes before
 * the shard that is still filling. No bin packing.
 */
export function splitIntoShards<T extends ShardEntry>(entries: readonly T[], maxShardBytes: number): T[][] {
  const shards: T[][] = [];
  let current: T[] = [];
  let currentBytes = 0;
  for (const entry of entries) {
    if (entry.byteLength > maxShardBytes) {
      shards.push([entry]);
      continue;
    }
    if (currentBytes + entry.byteLength > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(entry);
    currentBytes += entry.byteLength;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/**
 * diffusers/transformers `_add_variant`: inserts `.variant` before the last extension
 * (`model.safetensors` -> `model.fp16.safetensors`).
 */
export function addVariant(fileName: string, variant?: string): string {
  if (variant === undefined) return fileName;
  checkVariant(variant);
  const parts = fileName.split('.');
  return [...parts.slice(0, -1), variant, ...parts.slice(-1)].join('.');
}

/** `diffusion_pytorch_model[.variant].safetensors`: the name of an unsharded weights file. */
export function weightsFileName(base: WeightsBase, variant?: string): string {
  return addVariant(`${base}.safetensors`, variant);
}

/**
 * Name of shard `shardNumber` (1-based) of `shardCount`: `model-00001-of-00002.safetensors`,
 * with a variant `diffusion_pytorch_model.fp16-00001-of-00002.safetensors` (diffusers builds the
 * pattern `_add_variant(name, variant).replace(".safetensors", "{suffix}.safetensors")`). A
 * single shard keeps the plain name, as huggingface_hub does.
 */
export function shardFileName(base: WeightsBase, shardNumber: number, shardCount: number, variant?: string): string {
  if (!Number.isInteger(shardCount) || shardCount < 1 || !Number.isInteger(shardNumber) || shardNumber < 1 || shardNumber > shardCount) {
    fail(ErrorCode.E_USAGE, undefined, `shard ${shardNumber} of ${shardCount} (expected 1 <= shard <= count).`);
  }
  const plain = weightsFileName(base, variant);
  if (shardCount === 1) return plain;
  const suffix = `-${pad5(shardNumber)}-of-${pad5(shardCount)}`;
  return plain.replace(/\.safetensors$/, `${suffix}.safetensors`);
}

/** `diffusion_pytorch_model.safetensors.index.json`; with a variant `....safetensors.index.fp16.json`. */
export function indexFileName(base: WeightsBase, variant?: string): string {
  return addVariant(`${base}.safetensors.index.json`, variant);
}

/**
 * The index JSON text exactly as diffusers/transformers write it:
 * `{"metadata": {"total_size": N}, "weight_map": {tensor: file}}` through
 * `json.dumps(index, indent=2, sort_keys=True) + "\n"`. `totalSize` is the sum of tensor bytes
 * (headers excluded).
 */
export function buildShardIndex(weightMap: Iterable<readonly [string, string]> | Readonly<Record<string, string>>, totalSize: number): string {
  const pairs = isIterable(weightMap) ? [...weightMap] : Object.entries(weightMap);
  const map: Record<string, string> = {};
  for (const [tensor, file] of pairs) {
    Object.defineProperty(map, tensor, { value: file, enumerable: true, writable: true, configurable: true });
  }
  const index = { metadata: { total_size: totalSize }, weight_map: map };
  return pythonJsonDumps(index, { indent: 2, sortKeys: true }) + '\n';
}

export interface ShardFile<T extends ShardEntry> {
  readonly fileName: string;
  readonly entries: readonly T[];
  /** Sum of the tensors' bytes in this file. */
  readonly byteLength: number;
}

export interface ShardPlan<T extends ShardEntry> {
  readonly files: readonly ShardFile<T>[];
  /** Present only when there is more than one file (an index is never written for one). */
  readonly index: { readonly fileName: string; readonly json: string } | null;
  readonly totalSize: number;
}

/** Splits, names the files and builds the index (when sharded) in one step. */
export function planShards<T extends ShardEntry>(
  entries: readonly T[],
  base: WeightsBase,
  options: { maxShardBytes: number; variant?: string },
): ShardPlan<T> {
  const groups = splitIntoShards(entries, options.maxShardBytes);
  if (groups.length === 0) groups.push([]);
  const files = groups.map((group, i) => ({
    fileName: shardFileName(base, i + 1, groups.length, options.variant),
    entries: group,
    byteLength: sumBytes(group),
  }));
  const totalSize = sumBytes(entries);
  if (files.length === 1) return { files, index: null, totalSize };
  const weightMap = files.flatMap((f) => f.entries.map((e) => [e.name, f.fileName] as const));
  return { files, index: { fileName: indexFileName(base, options.variant), json: buildShardIndex(weightMap, totalSize) }, totalSize };
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/**
 * `"10GB"` -> 10_000_000_000 as huggingface_hub `parse_size_to_int` (decimal KB/MB/GB/TB,
 * `int(float(value) * multiplier)`), plus binary KiB/MiB/GiB/TiB; a number or a plain digit
 * string is a byte count. Units are case-insensitive.
 */
export function parseSizeString(size: string | number): number {
  if (typeof size === 'number') return checkSize(size, String(size));
  const text = size.trim();
  if (/^[0-9]+$/.test(text)) return checkSize(Number(text), size);
  const m = /^([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)$/.exec(text);
  const multiplier = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined;
  if (!m || multiplier === undefined) {
    return fail(ErrorCode.E_USAGE, undefined, `cannot parse size "${size}" (expected e.g. 10GB, 500MB, 2GiB or a byte count).`);
  }
  return checkSize(Math.trunc(Number(m[1]) * multiplier), size);
}

function checkSize(bytes: number, original: string): number {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    fail(ErrorCode.E_USAGE, undefined, `size "${original}" is ${bytes} bytes (expected a positive whole number of bytes).`);
  }
  return bytes;
}

/** A variant becomes part of a file name: refuse path separators and empty parts. */
function checkVariant(variant: string): void {
  if (!/^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/.test(variant)) {
    fail(ErrorCode.E_USAGE, undefined, `invalid variant "${variant}" (expected letters, digits, '_', '-', e.g. fp16).`);
  }
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}

function sumBytes(entries: readonly ShardEntry[]): number {
  return entries.reduce((sum, e) => sum + e.byteLength, 0);
}

function isIterable(v: unknown): v is Iterable<readonly [string, string]> {
  return typeof v === 'object' && v !== null && Symbol.iterator in v;
}
