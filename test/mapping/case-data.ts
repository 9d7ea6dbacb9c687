/**
 * Builds mapping-test inputs from the shared fixtures: TensorInfo[] from a case's
 * `state_dict_keys` (names, dtypes, shapes) and target names/shapes from golden safetensors
 * headers. No tensor bytes are read.
 */
import { readFileSync, openSync, readSync, closeSync } from 'node:fs';
import { DTYPES, numelOf, dtypeBytes, type DType } from '../../src/dtypes.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { sharedFixture } from '../helpers/paths.js';

interface CaseJson {
  readonly family: string;
  readonly state_dict_keys: Record<string, [string, number[]]>;
}

export function readCase(name: string): CaseJson {
  return JSON.parse(readFileSync(sharedFixture(`cases/${name}/case.json`), 'utf8')) as CaseJson;
}

function dtypeFromTorch(torch: string): DType {
  const hit = (Object.keys(DTYPES) as DType[]).find((d) => DTYPES[d].torch === torch);
  if (!hit) throw new Error(`unknown torch dtype ${torch}`);
  return hit;
}

export function tensorInfo(name: string, dtype: DType, shape: readonly number[]): TensorInfo {
  return { name, dtype, shape, byteLength: numelOf(shape) * dtypeBytes(dtype) };
}

/** The case's state dict as the readers would list it. */
export function caseTensors(name: string): TensorInfo[] {
  return Object.entries(readCase(name).state_dict_keys).map(([key, [dtype, shape]]) => tensorInfo(key, dtypeFromTorch(dtype), shape));
}

/** name -> shape of a golden safetensors file (its header only). */
export function goldenShapes(rel: string): Map<string, readonly number[]> {
  const fd = openSync(sharedFixture(rel), 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, 8);
    const header = JSON.parse(buf.toString('utf8')) as Record<string, { shape: number[] }>;
    delete header.__metadata__;
    return new Map(Object.entries(header).map(([k, v]) => [k, v.shape]));
  } finally {
    closeSync(fd);
  }
}
