/**
 * The closed op set of the mapping tables (see TensorOp in plan-types.ts): parsing from table
 * data, output shapes, and the shape checks that make an op valid for a given source tensor.
 * Shapes only; the writer applies the ops to bytes.
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorOp } from './plan-types.js';

/** Op names a table row may use. */
export const OP_NAMES = ['copy', 'squeeze', 'split', 'transpose'] as const;
export type OpName = (typeof OP_NAMES)[number];

export const COPY: TensorOp = { op: 'copy' };

/**
 * Reads an op as written in a table: a bare name (`"squeeze"`) or an object
 * (`{"op": "split", "axis": 0, "index": 1, "parts": 3}`). Returns a message on a bad op.
 */
export function parseOp(raw: unknown): TensorOp | string {
  if (raw === undefined) return COPY;
  if (typeof raw === 'string') return raw === 'split' ? 'split needs {"axis": 0, "index", "parts"}' : parseOp({ op: raw });
  if (typeof raw !== 'object' || raw === null) return `op must be a name or an object, got ${JSON.stringify(raw)}`;
  const o = raw as Record<string, unknown>;
  switch (o.op) {
    case 'copy':
    case 'squeeze':
    case 'transpose':
      return { op: o.op };
    case 'split':
      return parseSplit(o);
    default:
      return `unknown op ${JSON.stringify(o.op)} (expected one of ${OP_NAMES.join(', ')})`;
  }
}

function parseSplit(o: Record<string, unknown>): TensorOp | string {
  const { axis, index, parts } = o;
  if (axis !== 0) return `split axis must be 0, got ${JSON.stringify(axis)}`;
  if (!Number.isInteger(parts) || (parts as number) < 2) return `split parts must be an integer >= 2, got ${JSON.stringify(parts)}`;
  if (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= (parts as number)) {
    return `split index must be an integer in [0, ${String(parts)}), got ${JSON.stringify(index)}`;
  }
  return { op: 'split', axis: 0, index: index as number, parts: parts as number };
}

/** Short text form for dumps and messages: `copy`, `squeeze`, `split:1/3`, `transpose`. */
export function formatOp(op: TensorOp): string {
  return op.op === 'split' ? `split:${op.index}/${op.parts}` : op.op;
}

/**
 * The shape a tensor has after `op`. Throws E_SHAPE_MISMATCH when the op does not fit the source
 * shape (the table row is wrong for this file, or the file is not what the family says).
 */
export function opOutputShape(op: TensorOp, shape: readonly number[], source: string): number[] {
  switch (op.op) {
    case 'copy':
      return [...shape];
    case 'squeeze':
      return squeezeShape(shape, source);
    case 'split':
      return splitShape(shape, op.parts, source);
    case 'transpose':
      return transposeShape(shape, source);
  }
}

/**
 * Drops trailing size-1 dims down to rank 2, as Diffusers' conv_attn_to_linear does with
 * `[:, :, 0, 0]` (4-D) or `[:, :, 0]` (3-D); a 2-D tensor is already linear and stays as it is.
 */
function squeezeShape(shape: readonly number[], source: string): number[] {
  const out = [...shape];
  while (out.length > 2 && out[out.length - 1] === 1) out.pop();
  if (out.length !== 2) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `tensor "${source}" has shape [${shape.join(', ')}] (expected [A, B] followed by size-1 dims for squeeze).`);
  }
  return out;
}

function splitShape(shape: readonly number[], parts: number, source: string): number[] {
  if (shape.length < 1 || shape[0] % parts !== 0) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `tensor "${source}" has shape [${shape.join(', ')}] (expected axis 0 divisible by ${parts} for split).`);
  }
  return [shape[0] / parts, ...shape.slice(1)];
}

function transposeShape(shape: readonly number[], source: string): number[] {
  if (shape.length !== 2) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `tensor "${source}" has shape [${shape.join(', ')}] (expected a 2-D tensor for transpose).`);
  }
  return [shape[1], shape[0]];
}
