/**
 * Synthetic checkpoints: every real key and shape of a model family (ldm-layout.ts) with
 * deterministic pseudo-random weights, written in bounded memory. For tests and `npm run bench`.
 */
import type { DType } from '../dtypes.js';
import { checkpointTensors, sgmCheckpointTensors, type CheckpointLayout, type SgmCheckpointLayout } from './ldm-layout.js';
import { planSafetensorsLayout, SafetensorsWriter } from '../formats/safetensors.js';
import { writeTorchZip, type ZipTensorSpec } from './torch-zip-writer.js';

const PATTERN_BYTES = 1 << 20;
const CHUNK_BYTES = 8 << 20;

/** 1 MiB of small finite values of `dtype` from a xorshift generator: cheap and reproducible. */
function patternFor(dtype: DType, seed: number): Uint8Array {
  const buf = new Uint8Array(PATTERN_BYTES + 8);
  const view = new DataView(buf.buffer);
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
  if (dtype === 'F32') for (let i = 0; i < buf.length; i += 4) view.setFloat32(i, (next() - 0.5) * 0.2, true);
  else if (dtype === 'F16') for (let i = 0; i < buf.length; i += 2) view.setUint16(i, 0x2000 + Math.floor(next() * 0x1000) + (next() < 0.5 ? 0x8000 : 0), true);
  else for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(next() * 4);
  return buf;
}

function nameHash(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The bytes of one synthetic tensor, yielded in chunks of at most 8 MiB. */
export async function* syntheticBytes(spec: ZipTensorSpec, byteLength: number, patterns: Map<DType, Uint8Array>): AsyncIterable<Uint8Array> {
  let pattern = patterns.get(spec.dtype);
  if (!pattern) patterns.set(spec.dtype, (pattern = patternFor(spec.dtype, 12345)));
  // Start each tensor at a name-dependent, element-aligned place in the pattern so tensors differ.
  let at = (nameHash(spec.name) % (PATTERN_BYTES / 8)) * 8;
  let left = byteLength;
  while (left > 0) {
    const chunk = new Uint8Array(Math.min(left, CHUNK_BYTES));
    for (let p = 0; p < chunk.length; ) {
      const n = Math.min(chunk.length - p, PATTERN_BYTES - at);
      chunk.set(pattern.subarray(at, at + n), p);
      p += n;
      at = (at + n) % PATTERN_BYTES;
    }
    left -= chunk.length;
    yield chunk;
  }
}

/** The layout's tensors with their dtypes: floats in `floatDType`, buffers as torch keeps them. */
export function layoutSpecs(layout: CheckpointLayout | SgmCheckpointLayout, floatDType: 'F32' | 'F16'): ZipTensorSpec[] {
  const tensors = 'embedders' in layout ? sgmCheckpointTensors(layout) : checkpointTensors(layout);
  return tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype ?? floatDType }));
}

/** Writes a synthetic torch.save (Lightning-wrapped) checkpoint; returns its size in bytes. */
export async function writeSyntheticCkpt(path: string, layout: CheckpointLayout, floatDType: 'F32' | 'F16', globalStep = 470000): Promise<number> {
  const patterns = new Map<DType, Uint8Array>();
  return writeTorchZip(path, layoutSpecs(layout, floatDType), {
    lightningWrapper: { globalStep },
    data: (spec, n) => syntheticBytes(spec, n, patterns),
  });
}

/** Writes a synthetic original-layout .safetensors (no wrapper, as A1111/Civitai files are). */
export async function writeSyntheticSafetensors(path: string, layout: CheckpointLayout | SgmCheckpointLayout, floatDType: 'F32' | 'F16'): Promise<number> {
  const patterns = new Map<DType, Uint8Array>();
  const specs = layoutSpecs(layout, floatDType);
  const plan = planSafetensorsLayout(specs, { format: 'pt' });
  const writer = await SafetensorsWriter.create(path, plan);
  try {
    for (const t of plan.tensors) await writer.writeTensor(t.name, syntheticBytes(t, t.byteLength, patterns));
    await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return plan.totalBytes;
}
