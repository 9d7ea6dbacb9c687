/**
 * Writes one Diffusers component's weights (`unet/`, `vae/`, `text_encoder/`, ...) from a source
 * checkpoint: per target tensor, source chunks -> op -> dtype cast -> safetensors writer, with
 * memory bounded by a chunk (transpose aside, see tensor-ops.ts).
 *
 * Files and their contents follow Diffusers' `save_pretrained` (docs/formats.md §5.4, §6):
 * shards split in the component's tensor order, tensors inside each file in the reference
 * writer's order, `__metadata__ {"format":"pt"}`, an index JSON only when there are several shards.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type DType, isFloatDType } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import { planSafetensorsLayout, SafetensorsWriter } from '../formats/safetensors.js';
import { planShards, type ShardFile, type WeightsBase } from '../formats/shards.js';
import type { TensorSource } from '../formats/tensor-source.js';
import type { PlannedComponent, PlannedTensor } from '../mapping/plan-types.js';
import type { ProgressCallback } from '../progress.js';
import { writeError, writeStep } from '../io/write-errors.js';
import { readAhead } from '../io/read-ahead.js';
import { plannedByteLength, plannedTensorChunks } from './tensor-ops.js';

/**
 * Output dtype of float tensors. `fp32` (the default) is what Diffusers' converter writes: it
 * loads every float weight into float32 modules, so float16/bfloat16 inputs come out widened.
 * `fp16`/`bf16` cast floats like `--half`; `keep` keeps each tensor's source dtype.
 * Integer and bool tensors always keep their dtype.
 */
export type OutputDTypeMode = 'fp32' | 'fp16' | 'bf16' | 'keep';

/** Diffusers' default `max_shard_size="10GB"` (decimal GB). */
export const DEFAULT_MAX_SHARD_BYTES = 10_000_000_000;

export interface WriteComponentOptions {
  dtype?: OutputDTypeMode;
  /** Largest shard (tensor bytes); defaults to DEFAULT_MAX_SHARD_BYTES. */
  maxShardBytes?: number;
  /** File name variant, e.g. `fp16` -> `diffusion_pytorch_model.fp16.safetensors`. */
  variant?: string;
  onProgress?: ProgressCallback;
  /** Fail with E_FP16_OVERFLOW (naming every tensor) when a finite value became Inf in the cast. */
  checkFp16Overflow?: boolean;
  /** Largest chunk read and written at once; defaults to limits.CHUNK_BYTES. */
  chunkBytes?: number;
}

export interface WriteComponentResult {
  /** Paths of the files written (weights files, then the index when sharded). */
  files: string[];
  /** Sum of the tensors' bytes (headers excluded), as the index's `total_size`. */
  totalBytes: number;
  /** Targets in which a finite value became ±Inf in the cast to float16/bfloat16. */
  overflowTensors: string[];
}

const MODE_DTYPES: Readonly<Record<Exclude<OutputDTypeMode, 'keep'>, DType>> = { fp32: 'F32', fp16: 'F16', bf16: 'BF16' };

/** The dtype a source tensor is written in under `mode`. */
export function outputDTypeFor(source: DType, mode: OutputDTypeMode = 'fp32'): DType {
  if (!isFloatDType(source) || mode === 'keep') return source;
  const dtype = MODE_DTYPES[mode];
  if (dtype === undefined) fail(ErrorCode.E_USAGE, undefined, `dtype "${String(mode)}" (expected fp32, fp16, bf16 or keep)`);
  return dtype;
}

/** Weight file stem: `diffusion_pytorch_model` for Diffusers models, `model` for transformers. */
export function weightsBaseFor(library: PlannedComponent['library']): WeightsBase {
  return library === 'transformers' ? 'model' : 'diffusion_pytorch_model';
}

/** A planned tensor with its output dtype and byte size: what sharding and the layout need. */
interface OutputEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly byteLength: number;
  readonly planned: PlannedTensor;
}

/** Per-call state shared by the file writers. */
interface WriteContext {
  readonly source: TensorSource;
  readonly component: PlannedComponent;
  readonly opts: WriteComponentOptions;
  readonly overflow: Map<string, number>;
}

/**
 * Writes the component's weights into `dir` (created when missing) and returns what was written.
 * On failure the file being written is removed; the caller owns `dir` (an output folder's temp dir).
 */
export async function writeComponentWeights(
  source: TensorSource,
  component: PlannedComponent,
  dir: string,
  opts: WriteComponentOptions = {},
): Promise<WriteComponentResult> {
  const entries = outputEntries(component, opts.dtype ?? 'fp32');
  const plan = planShards(entries, weightsBaseFor(component.library), {
    maxShardBytes: checkedMaxShardBytes(opts.maxShardBytes),
    variant: opts.variant,
  });
  await writeStep(dir, 'cannot create the component folder', () => mkdir(dir, { recursive: true }));
  const ctx: WriteContext = { source, component, opts, overflow: new Map() };
  const files: string[] = [];
  for (const file of plan.files) files.push(await writeWeightsFile(ctx, dir, file));
  if (plan.index) files.push(await writeIndex(dir, plan.index.fileName, plan.index.json, opts.onProgress));
  const overflowTensors = [...ctx.overflow.keys()];
  if (opts.checkFp16Overflow && overflowTensors.length > 0) failOverflow(component, ctx.overflow);
  return { files, totalBytes: plan.totalSize, overflowTensors };
}

function outputEntries(component: PlannedComponent, mode: OutputDTypeMode): OutputEntry[] {
  const seen = new Set<string>();
  return component.tensors.map((planned) => {
    if (seen.has(planned.target)) {
      fail(ErrorCode.E_TARGET_COLLISION, undefined, `${component.folder}: target tensor ${planned.target} is planned twice`);
    }
    seen.add(planned.target);
    const dtype = outputDTypeFor(planned.dtype, mode);
    return { name: planned.target, dtype, shape: planned.shape, byteLength: plannedByteLength(planned, dtype), planned };
  });
}

function checkedMaxShardBytes(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_SHARD_BYTES;
  if (!Number.isSafeInteger(value) || value <= 0) fail(ErrorCode.E_USAGE, undefined, `max shard size ${value} (expected a positive number of bytes)`);
  return value;
}

/** Writes one safetensors file; the partial file is removed when anything fails. */
async function writeWeightsFile(ctx: WriteContext, dir: string, file: ShardFile<OutputEntry>): Promise<string> {
  const path = join(dir, file.fileName);
  const layout = planSafetensorsLayout(file.entries, { format: 'pt' });
  const byName = new Map(file.entries.map((e) => [e.name, e]));
  // Write failures of this file (disk full, read-only) get their own codes; read errors pass through.
  const writer = await writeStep(path, 'cannot write', () => SafetensorsWriter.create(path, layout));
  try {
    const entries = layout.tensors.map((t) => byName.get(t.name) as OutputEntry);
    for await (const item of readAhead(fileChunks(ctx, entries), READ_AHEAD_CHUNKS)) {
      if (item.bytes) await writer.writeChunk(item.entry.name, item.bytes);
      else ctx.opts.onProgress?.({ type: 'tensor', component: ctx.component.folder, name: item.entry.name, bytes: item.entry.byteLength });
    }
    await writer.finish();
  } catch (e) {
    await writer.abort().catch(() => undefined);
    throw (e as { file?: string })?.file === path ? writeError(path, 'cannot write', e) : e;
  }
  ctx.opts.onProgress?.({ type: 'file', path });
  return path;
}

/** Chunks read ahead of the writer: the next ones are read and cast while one is written. */
const READ_AHEAD_CHUNKS = 2;

/**
 * Every output byte of one file, in layout order, as (tensor, chunk) items; an item without bytes
 * marks the end of a tensor. Read, op and cast happen here, ahead of the writes.
 */
async function* fileChunks(ctx: WriteContext, entries: readonly OutputEntry[]): AsyncGenerator<{ entry: OutputEntry; bytes?: Uint8Array }> {
  for (const entry of entries) {
    const stats = { overflowCount: 0 };
    for await (const bytes of plannedTensorChunks(ctx.source, entry.planned, entry.dtype, stats, { chunkBytes: ctx.opts.chunkBytes })) {
      yield { entry, bytes };
    }
    if (stats.overflowCount > 0) reportOverflow(ctx, entry, stats.overflowCount);
    yield { entry };
  }
}

function reportOverflow(ctx: WriteContext, entry: OutputEntry, count: number): void {
  ctx.overflow.set(entry.name, count);
  ctx.opts.onProgress?.({
    type: 'warning',
    code: ErrorCode.E_FP16_OVERFLOW,
    message: `${ctx.component.folder}/${entry.name}: ${count} finite value(s) became Inf in the cast to ${entry.dtype}`,
    data: { component: ctx.component.folder, tensor: entry.name, count, dtype: entry.dtype },
  });
}

async function writeIndex(dir: string, fileName: string, json: string, onProgress: ProgressCallback | undefined): Promise<string> {
  const path = join(dir, fileName);
  await writeStep(path, 'cannot write', () => writeFile(path, json, 'utf8'));
  onProgress?.({ type: 'file', path });
  return path;
}

function failOverflow(component: PlannedComponent, overflow: ReadonlyMap<string, number>): never {
  const names = [...overflow.keys()];
  return fail(
    ErrorCode.E_FP16_OVERFLOW,
    undefined,
    `${component.folder}: ${names.length} tensor(s) hold values beyond the half-precision range (${names.join(', ')}).`,
    { hint: 'Write float32 weights (the default) or accept Inf values in these tensors.', data: { component: component.folder, tensors: Object.fromEntries(overflow) } },
  );
}
