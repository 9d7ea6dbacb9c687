/**
 * The reverse plan (Diffusers folder -> original single file), built by inverting the compiled
 * forward rows of src/mapping/compile.ts: no second table. Each forward target (exact key or
 * prefix, in a component) points back at its source; the inverse ops are
 *
 *   copy      -> copy
 *   squeeze   -> unsqueeze: trailing 1s back ([C, C] -> [C, C, 1, 1], the LDM VAE's 1x1 convs)
 *   split i/n -> concatenate: the n parts, in index order, along axis 0 (OpenCLIP in_proj)
 *   transpose -> transpose
 *
 * When several forward rows produce the same target (a legacy spelling next to the canonical one,
 * e.g. CLIP `embeddings.` next to `text_model.`), the row that comes first in data order is the
 * canonical source. Pure: names and shapes only.
 */
import type { DType } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { lookupRule, type CompiledFamily, type CompiledRule } from '../mapping/compile.js';
import type { ComponentFolder, TensorOp } from '../mapping/plan-types.js';

/** The inverse of one forward op, as applied to a Diffusers tensor. */
export type InverseOp = 'copy' | 'unsqueeze' | 'transpose';

/** One Diffusers tensor feeding (part of) an original tensor. */
export interface ReversePart {
  readonly component: ComponentFolder;
  /** Key inside the component's state dict. */
  readonly key: string;
  readonly op: InverseOp;
  readonly dtype: DType;
  /** Shape of the Diffusers tensor. */
  readonly shape: readonly number[];
}

export interface ReverseTensor {
  /** Name in the single file (the original layout). */
  readonly name: string;
  /** dtype of the parts (before any output cast). */
  readonly dtype: DType;
  /** Shape in the single file. */
  readonly shape: readonly number[];
  /** Concatenated along axis 0 in order (one part unless the forward op was a split). */
  readonly parts: readonly ReversePart[];
  /** The forward rule (source key or prefix) it inverts. */
  readonly rule: string;
}

type MapRule = Extract<CompiledRule, { kind: 'map' }>;

interface InverseEntry {
  /** Position of the forward rule in data order: the lowest wins when several match. */
  readonly order: number;
  readonly rule: MapRule;
  readonly target: string;
  readonly op: TensorOp;
  /** The forward rule maps a prefix (target is a prefix too). */
  readonly prefix: boolean;
}

/** Target key/prefix -> forward rows producing it, per component. */
export type InverseIndex = ReadonlyMap<ComponentFolder, ReadonlyMap<string, readonly InverseEntry[]>>;

/** Indexes every target of every forward map row by component and target. */
export function buildInverseIndex(compiled: CompiledFamily): InverseIndex {
  const index = new Map<ComponentFolder, Map<string, InverseEntry[]>>();
  let order = 0;
  for (const rule of compiled.rules.values()) {
    order++;
    if (rule.kind !== 'map') continue;
    const byTarget = index.get(rule.component) ?? new Map<string, InverseEntry[]>();
    index.set(rule.component, byTarget);
    for (const t of rule.targets) {
      const list = byTarget.get(t.target) ?? [];
      list.push({ order, rule, target: t.target, op: t.op, prefix: rule.source.endsWith('.') });
      byTarget.set(t.target, list);
    }
  }
  return index;
}

export interface InverseMatch {
  /** Original key (rule source + remainder). */
  readonly source: string;
  readonly op: TensorOp;
  readonly rule: MapRule;
}

/**
 * Where a Diffusers key came from: the exact target and every target prefix of the key are
 * candidates, and the earliest forward row in data order among them wins, so a legacy alias row
 * never shadows the canonical one. Undefined when no row produces the key.
 */
export function lookupInverse(index: InverseIndex, component: ComponentFolder, key: string, rules?: CompiledFamily['rules']): InverseMatch | undefined {
  const byTarget = index.get(component);
  if (!byTarget) return undefined;
  const candidates: { entry: InverseEntry; remainder: string }[] = [];
  const consider = (candidate: string, remainder: string, wantPrefix: boolean): void => {
    for (const entry of byTarget.get(candidate) ?? []) if (entry.prefix === wantPrefix) candidates.push({ entry, remainder });
  };
  consider(key, '', false);
  for (let i = key.lastIndexOf('.'); i > 0; i = key.lastIndexOf('.', i - 1)) consider(key.slice(0, i + 1), key.slice(i + 1), true);
  candidates.sort((a, b) => a.entry.order - b.entry.order);
  for (const { entry, remainder } of candidates) {
    const source = entry.rule.source + remainder;
    // The forward lookup of the original key must come back to this key (a more specific forward
    // row, a drop for instance, may claim that source name).
    if (rules && !forwardProduces(rules, source, component, key)) continue;
    return { source, op: entry.op, rule: entry.rule };
  }
  return undefined;
}

/** Whether the forward rows map original key `source` to `key` in `component`. */
export function forwardProduces(rules: CompiledFamily['rules'], source: string, component: ComponentFolder, key: string): boolean {
  const m = lookupRule(rules, source);
  if (!m || m.rule.kind !== 'map' || m.rule.component !== component) return false;
  return m.rule.targets.some((t) => t.target + m.remainder === key);
}

/** The Diffusers tensors of one component (names relative to the component). */
export interface ComponentTensors {
  readonly component: ComponentFolder;
  readonly tensors: readonly TensorInfo[];
}

export interface ReversePlan {
  readonly tensors: readonly ReverseTensor[];
}

/**
 * Inverts the forward rows over the folder's tensors. Fails with E_UNMATCHED_KEYS when a Diffusers
 * tensor comes from no forward row, E_MISSING_TENSOR when a split loses a part,
 * E_TARGET_COLLISION when two Diffusers tensors land on one original key, E_SHAPE_MISMATCH when
 * split parts disagree in shape.
 */
export function planReverse(compiled: CompiledFamily, components: readonly ComponentTensors[]): ReversePlan {
  const index = buildInverseIndex(compiled);
  const unknown: string[] = [];
  const groups = new Map<string, { rule: MapRule; parts: (ReversePart | undefined)[]; split: boolean }>();
  const collisions: string[] = [];
  for (const { component, tensors } of components) {
    for (const t of tensors) {
      const match = lookupInverse(index, component, t.name, compiled.rules);
      if (!match) {
        unknown.push(`${component}/${t.name}`);
        continue;
      }
      const split = match.op.op === 'split';
      const parts = split ? (match.op as Extract<TensorOp, { op: 'split' }>).parts : 1;
      const at = split ? (match.op as Extract<TensorOp, { op: 'split' }>).index : 0;
      const group = groups.get(match.source) ?? { rule: match.rule, parts: new Array<ReversePart | undefined>(parts).fill(undefined), split };
      groups.set(match.source, group);
      if (group.parts.length !== parts || group.split !== split || group.parts[at]) {
        collisions.push(`${match.source} <- ${component}/${t.name}`);
        continue;
      }
      group.parts[at] = { component, key: t.name, op: inverseOf(match.op), dtype: t.dtype, shape: t.shape };
    }
  }
  if (unknown.length) {
    fail(ErrorCode.E_UNMATCHED_KEYS, undefined, `${unknown.length} Diffusers tensors come from no mapping row of family ${compiled.family.family}: ${listSome(unknown)}.`, {
      hint: 'Check the detected family (--family); the folder may hold a model this family does not describe.',
      data: { keys: unknown },
    });
  }
  if (collisions.length) {
    fail(ErrorCode.E_TARGET_COLLISION, undefined, `${collisions.length} original keys have more than one Diffusers source: ${listSome(collisions)}.`, { data: { collisions } });
  }
  const out: ReverseTensor[] = [];
  for (const [name, g] of groups) {
    const missing = g.parts.findIndex((p) => p === undefined);
    if (missing >= 0) {
      fail(ErrorCode.E_MISSING_TENSOR, undefined, `${name} is split into ${g.parts.length} Diffusers tensors but part ${missing} is missing.`, {
        data: { tensor: name, part: missing },
      });
    }
    const parts = g.parts as ReversePart[];
    out.push({ name, dtype: partsDtype(name, parts), shape: originalShape(name, parts), parts, rule: g.rule.source });
  }
  return { tensors: out };
}

function inverseOf(op: TensorOp): InverseOp {
  switch (op.op) {
    case 'copy':
    case 'split':
      return 'copy';
    case 'squeeze':
      return 'unsqueeze';
    case 'transpose':
      return 'transpose';
  }
}

/** Shape of one part after its inverse op. */
export function invertedShape(part: Pick<ReversePart, 'op' | 'shape' | 'key'>): number[] {
  const s = [...part.shape];
  switch (part.op) {
    case 'copy':
      return s;
    case 'unsqueeze':
      // The LDM VAE stores its attention q/k/v/proj_out as Conv2d 1x1 weights.
      return s.length === 2 ? [...s, 1, 1] : s;
    case 'transpose':
      if (s.length !== 2) fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${part.key} has shape [${s.join(', ')}] (expected a 2-D tensor to transpose back).`);
      return [s[1], s[0]];
  }
}

function originalShape(name: string, parts: readonly ReversePart[]): number[] {
  const shapes = parts.map(invertedShape);
  if (shapes.length === 1) return shapes[0];
  const rest = shapes[0].slice(1).join(',');
  if (shapes.some((s) => s.length === 0 || s.slice(1).join(',') !== rest || s[0] !== shapes[0][0])) {
    fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `${name}: its parts have shapes ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')} (expected equal shapes to concatenate).`);
  }
  return [shapes.reduce((n, s) => n + s[0], 0), ...shapes[0].slice(1)];
}

function partsDtype(name: string, parts: readonly ReversePart[]): DType {
  const d = parts[0].dtype;
  if (parts.some((p) => p.dtype !== d)) {
    fail(ErrorCode.E_TENSOR_DTYPE, undefined, `${name}: its parts have dtypes ${parts.map((p) => p.dtype).join(', ')} (expected one dtype to concatenate).`);
  }
  return d;
}

function listSome(items: readonly string[], limit = 20): string {
  const shown = items.slice(0, limit).join(', ');
  return items.length > limit ? `${shown} ... and ${items.length - limit} more` : shown;
}
