/** Test helper: copy a checkpoint to safetensors with some tensors replaced (fixtures derived from the shared cases). */
import type { DType } from '../../src/dtypes.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { writeSafetensorsFile, type SafetensorsTensorData } from '../../src/formats/safetensors.js';

export interface EditedTensor {
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** `edit(name, dtype, shape, bytes)` returns a replacement, or undefined to keep the tensor. */
export async function rewriteCheckpoint(src: string, dst: string, edit: (name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array) => EditedTensor | undefined): Promise<void> {
  const source = await openCheckpoint(src);
  const out: SafetensorsTensorData[] = [];
  try {
    for (const t of source.tensors) {
      const bytes = await source.readTensor(t.name);
      const e = edit(t.name, t.dtype, t.shape, bytes);
      out.push({ name: t.name, dtype: t.dtype, shape: e ? e.shape : t.shape, data: e ? e.data : bytes });
    }
  } finally {
    await source.close();
  }
  await writeSafetensorsFile(dst, out);
}

/** Bytes per element of a float dtype. */
export function elementBytes(dtype: DType): number {
  return dtype === 'F32' ? 4 : dtype === 'F16' || dtype === 'BF16' ? 2 : 8;
}

/** Rows of a [rows, cols] tensor repeated cyclically to `newRows` rows. */
export function tileRows(bytes: Uint8Array, rows: number, cols: number, newRows: number, eb: number): Uint8Array {
  const rowBytes = cols * eb;
  const out = new Uint8Array(newRows * rowBytes);
  for (let r = 0; r < newRows; r++) out.set(bytes.subarray((r % rows) * rowBytes, ((r % rows) + 1) * rowBytes), r * rowBytes);
  return out;
}

/** The first `newCols` columns of a [rows, cols] tensor. */
export function sliceCols(bytes: Uint8Array, rows: number, cols: number, newCols: number, eb: number): Uint8Array {
  const out = new Uint8Array(rows * newCols * eb);
  for (let r = 0; r < rows; r++) out.set(bytes.subarray(r * cols * eb, (r * cols + newCols) * eb), r * newCols * eb);
  return out;
}
