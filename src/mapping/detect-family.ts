/**
 * Decides the model family from key names, shapes and metadata by evaluating each family's probes
 * (mappings/families/*.json, `detect`), a data table in the spirit of diffusers' CHECKPOINT_KEY_NAMES
 * rather than an if/elif chain. Families are written to be mutually exclusive; exactly one must
 * match. Widths such as 768/1024 are only one way in: the text-encoder kind (CLIP-L vs OpenCLIP)
 * and linear vs conv proj_in decide as well, so tiny test models are detected like real ones.
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { loadMappings } from './load.js';
import type { Evidence, FamilyDetection, FamilyId } from './plan-types.js';
import type { FamilySpec, Mappings, Probe } from './spec.js';

/** What probes look at. */
interface ProbeContext {
  readonly byName: ReadonlyMap<string, TensorInfo>;
  readonly names: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
}

interface ProbeResult {
  readonly holds: boolean;
  readonly evidence: Evidence;
}

/** A family's probes evaluated against one file. */
interface FamilyVerdict {
  readonly family: FamilySpec;
  readonly matches: boolean;
  /** Conditions that failed (for near misses in the error message). */
  readonly failed: readonly string[];
  readonly evidence: readonly Evidence[];
  readonly confidence: FamilyDetection['confidence'];
}

export function detectFamily(
  tensors: readonly TensorInfo[],
  metadata: Readonly<Record<string, string>> = {},
  mappings: Mappings = loadMappings(),
): FamilyDetection {
  const ctx: ProbeContext = { byName: new Map(tensors.map((t) => [t.name, t])), names: tensors.map((t) => t.name), metadata };
  const verdicts = [...mappings.families.values()].map((f) => judge(f, ctx));
  const matches = verdicts.filter((v) => v.matches);
  if (matches.length === 1) {
    const [v] = matches;
    return { family: v.family.family, evidence: v.evidence, confidence: v.confidence };
  }
  if (matches.length > 1) return ambiguous(matches, ctx);
  return unknownFamily(verdicts, ctx);
}

function judge(family: FamilySpec, ctx: ProbeContext): FamilyVerdict {
  const d = family.detect;
  const evidence: Evidence[] = [];
  const failed: string[] = [];
  for (const p of d.require) {
    const r = evaluate(p, ctx);
    if (r.holds) evidence.push(r.evidence);
    else failed.push(`needs ${describe(r.evidence)}`);
  }
  for (const p of d.exclude) {
    const r = evaluate(p, ctx);
    if (r.holds) failed.push(`rules out ${describe(r.evidence)}`);
    else evidence.push({ ...r.evidence, implies: `not ${r.evidence.implies}` });
  }
  let confidence = d.confidence;
  for (const p of d.support) {
    const r = evaluate(p, ctx);
    evidence.push(r.holds ? r.evidence : { ...r.evidence, implies: `expected ${r.evidence.implies}; lowers confidence` });
    if (!r.holds) confidence = lower(confidence, 'medium');
  }
  for (const p of d.metadata) {
    if (p.kind !== 'metadata' || ctx.metadata[p.name] === undefined) continue;
    const r = evaluate(p, ctx);
    evidence.push(r.holds ? r.evidence : { ...r.evidence, implies: `conflicts with ${r.evidence.implies}; lowers confidence` });
    if (!r.holds) confidence = lower(confidence, 'low');
  }
  return { family, matches: failed.length === 0, failed, evidence, confidence };
}

const RANK = { high: 2, medium: 1, low: 0 } as const;

function lower(a: FamilyDetection['confidence'], b: FamilyDetection['confidence']): FamilyDetection['confidence'] {
  return RANK[a] <= RANK[b] ? a : b;
}

function describe(e: Evidence): string {
  return `${e.implies} (${e.what}: ${e.found})`;
}

// --- probes ------------------------------------------------------------------------------------

function evaluate(p: Probe, ctx: ProbeContext): ProbeResult {
  switch (p.kind) {
    case 'key': {
      const present = ctx.byName.has(p.key);
      return result(present === p.present, `key ${p.key}`, present ? 'present' : 'absent', p.implies ?? `${p.key} ${p.present ? 'present' : 'absent'}`);
    }
    case 'prefix': {
      const count = ctx.names.filter((n) => n.startsWith(p.prefix)).length;
      return result(count > 0 === p.present, `keys ${p.prefix}*`, count > 0 ? `${count} keys` : 'none', p.implies ?? `keys under ${p.prefix}`);
    }
    case 'dim': {
      const shape = ctx.byName.get(p.key)?.shape;
      const value = shape ? shape[p.dim < 0 ? shape.length + p.dim : p.dim] : undefined;
      const found = shape ? (value === undefined ? `shape [${shape.join(', ')}]` : String(value)) : 'key absent';
      return result(value === p.equals, `${p.key} shape[${p.dim}]`, found, p.implies ?? `shape[${p.dim}] == ${p.equals}`);
    }
    case 'ndim': {
      const shape = ctx.byName.get(p.key)?.shape;
      return result(shape?.length === p.equals, `${p.key} rank`, shape ? `${shape.length}-D` : 'key absent', p.implies ?? `rank ${p.equals}`);
    }
    case 'metadata': {
      const value = ctx.metadata[p.name];
      return result(value?.startsWith(p.startsWith) === true, `metadata ${p.name}`, value ?? 'absent', p.implies ?? `${p.name} starts with ${p.startsWith}`);
    }
    case 'anyOf':
      return anyOf(p, ctx);
  }
}

function result(holds: boolean, what: string, found: string, implies: string): ProbeResult {
  return { holds, evidence: { what, found, implies } };
}

/** Holds when one alternative holds; its evidence is that alternative's (the first that holds). */
function anyOf(p: Extract<Probe, { kind: 'anyOf' }>, ctx: ProbeContext): ProbeResult {
  const results = p.probes.map((q) => evaluate(q, ctx));
  const hit = results.find((r) => r.holds);
  if (hit) return { holds: true, evidence: p.implies ? { ...hit.evidence, implies: p.implies } : hit.evidence };
  return {
    holds: false,
    evidence: {
      what: results.map((r) => r.evidence.what).join(' | '),
      found: results.map((r) => r.evidence.found).join(' | '),
      implies: p.implies ?? `one of: ${results.map((r) => r.evidence.implies).join('; ')}`,
    },
  };
}

// --- failures ----------------------------------------------------------------------------------

/** Key groups by their first two segments, with counts: what the file holds, at a glance. */
export function summarizeKeys(names: readonly string[], limit = 12): string[] {
  const counts = new Map<string, number>();
  for (const n of names) {
    const parts = n.split('.');
    const group = parts.length > 2 ? `${parts[0]}.${parts[1]}.*` : n;
    counts.set(group, (counts.get(group) ?? 0) + 1);
  }
  return [...counts].slice(0, limit).map(([g, c]) => (c > 1 ? `${g} (${c})` : g));
}

function unknownFamily(verdicts: readonly FamilyVerdict[], ctx: ProbeContext): never {
  const seen = summarizeKeys(ctx.names);
  const nearest = [...verdicts].sort((a, b) => a.failed.length - b.failed.length).slice(0, 3);
  const near = nearest.map((v) => `${v.family.family}: ${v.failed.join('; ')}`);
  return fail(ErrorCode.E_UNKNOWN_FAMILY, undefined, `no known model family matches these ${ctx.names.length} tensors. Seen: ${seen.join(', ') || 'nothing'}. Closest: ${near.join(' | ')}.`, {
    hint: 'The file may be a family not supported yet (ControlNet, upscaler, unCLIP, ...) or not a Stable Diffusion checkpoint.',
    data: { seen, nearMisses: nearest.map((v) => ({ family: v.family.family, failed: v.failed })) },
  });
}

function ambiguous(matches: readonly FamilyVerdict[], ctx: ProbeContext): never {
  const ids: FamilyId[] = matches.map((v) => v.family.family);
  return fail(ErrorCode.E_UNKNOWN_FAMILY, undefined, `${ids.length} families match these ${ctx.names.length} tensors: ${ids.join(', ')} (the family probes overlap).`, {
    hint: 'Make the families\' detect probes mutually exclusive in mappings/families/.',
    data: { matches: ids },
  });
}
