/**
 * Applies a planned tensor's op to the source tensor's byte stream, then the dtype cast, and
 * checks that exactly the target's bytes come out.
 *
 * copy / squeeze / split stream with memory bounded by a chunk; transpose is the only op that
 * holds a whole tensor (a 2-D projection matrix, a few MB in SD/SDXL).
 */
import { type DType, dtypeBytes, numelOf } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo, TensorSource } from '../formats/tensor-source.js';
import { CHUNK_BYTES } from '../limits.js';
import { opOutputShape } from '../mapping/ops.js';
import type { PlannedTensor, TensorOp } from '../mapping/plan-types.js';
import { type CastStats, castChunks } from './cast.js';

export interface TensorStreamOptions {
  /** Largest chunk read from the source (and yielded by transpose); defaults to CHUNK_BYTES. */
  chunkBytes?: number;
}

/** Bytes the planned tensor occupies once written in `outDtype`. */
export function plannedByteLength(planned: PlannedTensor, outDtype: DType): number {
  return numelOf(planned.shape) * dtypeBytes(outDtype);
}

/**
 * Yields the planned tensor's bytes: source chunks -> op -> cast to `outDtype`. Adds the number of
 * finite values that overflowed to Inf to `stats`. Throws E_MISSING_TENSOR when the source lacks
 * the tensor, E_TENSOR_DTYPE when its dtype differs from the plan, E_SHAPE_MISMATCH when the op
 * does not fit the shapes or the produced byte count differs from numel(target) * itemsize.
 */
export async function* plannedTensorChunks(
  source: TensorSource,
  planned: PlannedTensor,
  outDtype: DType,
  stats?: CastStats,
  options: TensorStreamOptions = {},
): AsyncGenerator<Uint8Array> {
  const info = sourceInfo(source, planned);
  checkOpShapes(planned.op, info.shape, planned.shape, describe(planned));
  const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
  const opBytes = applyOp(source.readChunks(info.name, { chunkBytes }), planned.op, info.shape, dtypeBytes(info.dtype), chunkBytes);
  const cast = castChunks(opBytes, info.dtype, outDtype, stats);
  yield* checkByteCount(cast, plannedByteLength(planned, outDtype), describe(planned));
}

function sourceInfo(source: TensorSource, planned: PlannedTensor): TensorInfo {
  const info = source.get(planned.source);
  if (!info) return fail(ErrorCode.E_MISSING_TENSOR, source.path, `tensor ${planned.source} not found (needed for ${planned.target})`);
  if (info.dtype !== planned.dtype) {
    fail(ErrorCode.E_TENSOR_DTYPE, source.path, `tensor ${planned.source} has dtype ${info.dtype} (expected ${planned.dtype} from the plan)`);
  }
  return info;
}

function describe(planned: PlannedTensor): string {
  return `${planned.source} -> ${planned.target} (${planned.op.op})`;
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Throws E_SHAPE_MISMATCH unless `op` turns a tensor of `sourceShape` into one of `targetShape`.
 * The shape rules are the mapping's own (opOutputShape), so plan and writer cannot disagree; the
 * split part is checked again here because it decides which bytes are read.
 */
export function checkOpShapes(op: TensorOp, sourceShape: readonly number[], targetShape: readonly number[], what: string): void {
  if (op.op === 'split') checkSplitPart(op, what);
  const expected = opOutputShape(op, sourceShape, what);
  if (!sameShape(expected, targetShape)) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${what}: target shape ${shapeText(targetShape)} (expected ${shapeText(expected)} from source ${shapeText(sourceShape)})`, {
      data: { source: sourceShape, target: targetShape, op },
    });
  }
}

function checkSplitPart(op: Extract<TensorOp, { op: 'split' }>, what: string): void {
  const valid = Number.isSafeInteger(op.parts) && op.parts > 0 && Number.isSafeInteger(op.index) && op.index >= 0 && op.index < op.parts;
  if (!valid) fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${what}: split part ${op.index} of ${op.parts} (expected 0 <= part < parts)`);
}

/** The op's byte transform, in the source dtype. Shapes must already be checked (checkOpShapes). */
export function applyOp(
  chunks: AsyncIterable<Uint8Array>,
  op: TensorOp,
  sourceShape: readonly number[],
  itemsize: number,
  chunkBytes: number = CHUNK_BYTES,
): AsyncIterable<Uint8Array> {
  switch (op.op) {
    case 'copy':
    case 'squeeze':
      return chunks;
    case 'split': {
      const partBytes = (sourceShape[0] / op.parts) * numelOf(sourceShape.slice(1)) * itemsize;
      return byteRange(chunks, op.index * partBytes, (op.index + 1) * partBytes);
    }
    case 'transpose':
      return transposeStream(chunks, sourceShape[0], sourceShape[1], itemsize, chunkBytes);
  }
}

/** Yields the bytes [start, end) of the stream and stops reading once past `end`. */
export async function* byteRange(chunks: AsyncIterable<Uint8Array>, start: number, end: number): AsyncGenerator<Uint8Array> {
  let position = 0;
  for await (const chunk of chunks) {
    const chunkEnd = position + chunk.length;
    const from = Math.max(start, position);
    const to = Math.min(end, chunkEnd);
    if (to > from) yield chunk.subarray(from - position, to - position);
    position = chunkEnd;
    if (position >= end) return;
  }
}

async function* transposeStream(
  chunks: AsyncIterable<Uint8Array>,
  rows: number,
  cols: number,
  itemsize: number,
  chunkBytes: number,
): AsyncGenerator<Uint8Array> {
  const whole = await collect(chunks, rows * cols * itemsize);
  const transposed = transpose2d(whole, rows, cols, itemsize);
  for (let offset = 0; offset < transposed.length; offset += chunkBytes) {
    yield transposed.subarray(offset, Math.min(offset + chunkBytes, transposed.length));
  }
}

/** Reads a stream whole into one buffer of `expectedBytes` (E_SHAPE_MISMATCH when the count differs). */
async function collect(chunks: AsyncIterable<Uint8Array>, expectedBytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(expectedBytes);
  let position = 0;
  for await (const chunk of chunks) {
    if (position + chunk.length > expectedBytes) break;
    out.set(chunk, position);
    position += chunk.length;
  }
  if (position !== expectedBytes) fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `transpose input has a byte count other than ${expectedBytes}`);
  return out;
}

/** Transposes a row-major [rows, cols] matrix of `itemsize`-byte elements. */
export function transpose2d(bytes: Uint8Array, rows: number, cols: number, itemsize: number): Uint8Array {
  // Move whole elements as integers: 1, 2 or 4 bytes per word; 8-byte elements as two 4-byte words.
  const wordBytes = Math.min(itemsize, 4);
  const wordsPerElement = itemsize / wordBytes;
  const aligned = bytes.byteOffset % wordBytes === 0 ? bytes : bytes.slice();
  const src = wordView(aligned, wordBytes);
  const out = new Uint8Array(bytes.length);
  const dst = wordView(out, wordBytes);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const from = (r * cols + c) * wordsPerElement;
      const to = (c * rows + r) * wordsPerElement;
      for (let w = 0; w < wordsPerElement; w++) dst[to + w] = src[from + w];
    }
  }
  return out;
}

function wordView(bytes: Uint8Array, wordBytes: number): Uint8Array | Uint16Array | Uint32Array {
  const count = bytes.byteLength / wordBytes;
  if (wordBytes === 1) return bytes;
  if (wordBytes === 2) return new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  return new Uint32Array(bytes.buffer, bytes.byteOffset, count);
}

/** Passes the stream through, failing as soon as it runs past `expected` bytes or ends short. */
async function* checkByteCount(chunks: AsyncIterable<Uint8Array>, expected: number, what: string): AsyncGenerator<Uint8Array> {
  let produced = 0;
  for await (const chunk of chunks) {
    produced += chunk.length;
    if (produced > expected) break;
    yield chunk;
  }
  if (produced !== expected) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${what}: produced ${produced > expected ? 'more than ' : ''}${produced} bytes (expected ${expected})`, {
      data: { produced, expected },
    });
  }
}
