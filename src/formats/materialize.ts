/**
 * Turns a pickled tensor descriptor (storage, offset, size, stride) into its bytes, contiguous in
 * C order. Shared by the zip and the legacy torch readers, which differ only in where a storage's
 * bytes live (the `readStorage` callback).
 *
 * Spec: docs/formats.md §2.8 "Views, offsets, strides — materialising a tensor".
 * Reference: PyTorch `torch/_utils.py` `_rebuild_tensor` (`storage[offset:]` viewed with `size`/`stride`).
 */
import { dtypeBytes, numelOf } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import { MAX_STRIDED_SPAN_BYTES } from '../limits.js';
import type { PickledTensor } from './torch-types.js';

/** Reads `length` bytes at `byteOffset` within one storage. */
export type StorageReader = (byteOffset: number, length: number) => Promise<Uint8Array>;

/**
 * Yields the tensor's bytes, contiguous in C order, in chunks of at most `chunkBytes`.
 *
 * - Every chunk length is a multiple of the element size (so callers may byte-swap chunk by chunk).
 * - A tensor with zero elements yields nothing.
 * - C-contiguous tensors are read straight from the storage in chunks; any other stride pattern is
 *   gathered from the storage span it touches, which is read whole (capped by MAX_STRIDED_SPAN_BYTES).
 *
 * Throws E_TENSOR_SHAPE for malformed shape/stride, E_TENSOR_BOUNDS when the tensor reaches past the
 * storage, E_LIMIT when a strided span is too large to hold in memory.
 */
export async function* materializeChunks(
  readStorage: StorageReader,
  t: PickledTensor,
  storageBytes: number,
  chunkBytes: number,
  file: string,
): AsyncIterable<Uint8Array> {
  const itemsize = dtypeBytes(t.dtype);
  checkGeometry(t, file);
  const numel = safeNumel(t, file);
  if (numel === 0) return;
  const elementsPerChunk = Math.max(1, Math.floor(chunkBytes / itemsize));

  if (isCContiguous(t.shape, t.stride)) {
    const start = t.storageOffset * itemsize;
    const length = numel * itemsize;
    checkInStorage(t, start, start + length, storageBytes, file);
    yield* readContiguous(readStorage, start, length, elementsPerChunk * itemsize);
    return;
  }

  const spanElements = usedSpanElements(t);
  const start = t.storageOffset * itemsize;
  const end = (t.storageOffset + spanElements) * itemsize;
  checkInStorage(t, start, end, storageBytes, file);
  if (end - start > MAX_STRIDED_SPAN_BYTES) {
    fail(
      ErrorCode.E_LIMIT,
      file,
      `tensor "${t.name}" is non-contiguous and spans ${end - start} bytes of its storage (expected at most MAX_STRIDED_SPAN_BYTES = ${MAX_STRIDED_SPAN_BYTES}).`,
      { data: { tensor: t.name, span: end - start, limit: MAX_STRIDED_SPAN_BYTES } },
    );
  }
  const span = await readStorage(start, end - start);
  yield* gatherStrided(span, t.shape, t.stride, itemsize, elementsPerChunk);
}

/**
 * Checks a tensor descriptor against its storage without reading bytes: shape/stride well formed
 * (E_TENSOR_SHAPE) and every element inside the storage (E_TENSOR_BOUNDS). Readers call this when
 * opening a file so that a bad descriptor fails early; materializeChunks checks again anyway.
 */
export function validateTensorGeometry(t: PickledTensor, storageBytes: number, file: string): void {
  checkGeometry(t, file);
  if (safeNumel(t, file) === 0) return;
  const itemsize = dtypeBytes(t.dtype);
  const start = t.storageOffset * itemsize;
  checkInStorage(t, start, (t.storageOffset + usedSpanElements(t)) * itemsize, storageBytes, file);
}

/** Swaps the bytes of every `itemsize`-byte element in place (big-endian files → little-endian). */
export function byteSwapInPlace(buf: Uint8Array, itemsize: number): void {
  if (itemsize <= 1) return;
  if (buf.length % itemsize !== 0) {
    throw new RangeError(`byteSwapInPlace: ${buf.length} bytes is not a multiple of the element size ${itemsize}`);
  }
  for (let i = 0; i < buf.length; i += itemsize) {
    for (let lo = i, hi = i + itemsize - 1; lo < hi; lo++, hi--) {
      const b = buf[lo];
      buf[lo] = buf[hi];
      buf[hi] = b;
    }
  }
}

/** True when the strides are the C-contiguous strides of `shape` (dimensions of size 1 are free). */
export function isCContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    if (shape[k] !== 1 && stride[k] !== expected) return false;
    expected *= shape[k];
  }
  return true;
}

function checkGeometry(t: PickledTensor, file: string): void {
  const bad = (what: string): never =>
    fail(ErrorCode.E_TENSOR_SHAPE, file, `tensor "${t.name}": ${what}.`, {
      data: { tensor: t.name, shape: t.shape, stride: t.stride, storageOffset: t.storageOffset },
    });
  if (t.shape.length !== t.stride.length) {
    bad(`shape has ${t.shape.length} dimensions but stride has ${t.stride.length} (expected equal)`);
  }
  if (!Number.isSafeInteger(t.storageOffset) || t.storageOffset < 0) {
    bad(`storage offset ${t.storageOffset} (expected a non-negative integer)`);
  }
  for (let k = 0; k < t.shape.length; k++) {
    if (!Number.isSafeInteger(t.shape[k]) || t.shape[k] < 0) bad(`size ${t.shape[k]} in dimension ${k} (expected a non-negative integer)`);
    if (!Number.isSafeInteger(t.stride[k]) || t.stride[k] < 0) bad(`stride ${t.stride[k]} in dimension ${k} (expected a non-negative integer)`);
  }
}

function safeNumel(t: PickledTensor, file: string): number {
  try {
    const n = numelOf(t.shape);
    if (!Number.isSafeInteger(n * dtypeBytes(t.dtype))) throw new RangeError('byte length overflows');
    return n;
  } catch {
    return fail(ErrorCode.E_TENSOR_SHAPE, file, `tensor "${t.name}": shape [${t.shape.join(', ')}] is too large (expected a byte length below 2^53).`);
  }
}

/** Elements from the storage offset to the last element the view touches, inclusive. */
function usedSpanElements(t: PickledTensor): number {
  let last = 0;
  for (let k = 0; k < t.shape.length; k++) last += (t.shape[k] - 1) * t.stride[k];
  return last + 1;
}

function checkInStorage(t: PickledTensor, start: number, end: number, storageBytes: number, file: string): void {
  if (!Number.isSafeInteger(end) || end > storageBytes) {
    fail(
      ErrorCode.E_TENSOR_BOUNDS,
      file,
      `tensor "${t.name}" spans storage bytes ${start}..${end}, past the end of storage "${t.storage.key}" (${storageBytes} bytes).`,
      { data: { tensor: t.name, storage: t.storage.key, start, end, storageBytes } },
    );
  }
}

async function* readContiguous(readStorage: StorageReader, start: number, length: number, chunkBytes: number): AsyncIterable<Uint8Array> {
  for (let done = 0; done < length; done += chunkBytes) {
    yield await readStorage(start + done, Math.min(chunkBytes, length - done));
  }
}

/**
 * Walks index tuples in C order with an odometer over all but the last dimension; the last
 * dimension is copied element by element with its stride.
 */
function* gatherStrided(
  span: Uint8Array,
  shape: readonly number[],
  stride: readonly number[],
  itemsize: number,
  elementsPerChunk: number,
): Iterable<Uint8Array> {
  const rank = shape.length;
  const numel = numelOf(shape);
  const innerSize = rank === 0 ? 1 : shape[rank - 1];
  const innerStrideBytes = rank === 0 ? 0 : stride[rank - 1] * itemsize;
  const index = new Array<number>(Math.max(0, rank - 1)).fill(0);
  let rowBase = 0;
  let chunk = new Uint8Array(Math.min(elementsPerChunk, numel) * itemsize);
  let filled = 0;
  let emitted = 0;

  for (;;) {
    for (let i = 0, src = rowBase; i < innerSize; i++, src += innerStrideBytes) {
      chunk.set(span.subarray(src, src + itemsize), filled);
      filled += itemsize;
      if (filled === chunk.length) {
        yield chunk;
        emitted += filled / itemsize;
        filled = 0;
        if (emitted < numel) chunk = new Uint8Array(Math.min(elementsPerChunk, numel - emitted) * itemsize);
      }
    }
    // Advance the odometer over the outer dimensions; done when it wraps around.
    let k = rank - 2;
    for (; k >= 0; k--) {
      index[k]++;
      rowBase += stride[k] * itemsize;
      if (index[k] < shape[k]) break;
      rowBase -= index[k] * stride[k] * itemsize;
      index[k] = 0;
    }
    if (k < 0) return;
  }
}
