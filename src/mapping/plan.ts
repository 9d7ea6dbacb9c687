/**
 * TensorInfo[] + detected family -> ConversionPlan. Pure: names and shapes only, no tensor bytes.
 *
 * Every source key ends in exactly one of: mapped (to one or more targets), dropped (with a named
 * reason), unknown. Unknown keys fail with E_UNMATCHED_KEYS unless allowed (Diffusers would only
 * warn and silently lose them); two sources landing on one target fail with E_TARGET_COLLISION.
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { compileForTensors, lookupRule, type CompiledFamily, type CompiledRule } from './compile.js';
import { loadMappings } from './load.js';
import { opOutputShape } from './ops.js';
import type {
  ComponentFolder,
  ConversionPlan,
  DroppedKey,
  EmaReport,
  FamilyDetection,
  KeyAccount,
  PlannedComponent,
  PlannedTensor,
} from './plan-types.js';
import type { EmaSpec, Mappings } from './spec.js';

export interface PlanOptions {
  /** Take the UNet weights from the EMA copies (`model_ema.*`), as diffusers --extract_ema. */
  readonly extractEma?: boolean;
  /** List unknown keys in the plan instead of failing with E_UNMATCHED_KEYS. */
  readonly allowUnknownKeys?: boolean;
}

/** How many keys an error message lists before "... and N more". */
const MESSAGE_KEY_LIMIT = 20;

type MapRule = Extract<CompiledRule, { kind: 'map' }>;

/** The fate of one source key. */
type Outcome =
  | { readonly kind: 'map'; readonly tensor: TensorInfo; readonly rule: MapRule; readonly remainder: string }
  | { readonly kind: 'drop'; readonly tensor: TensorInfo; readonly reason: string }
  | { readonly kind: 'unknown'; readonly tensor: TensorInfo };

export function planConversion(
  tensors: readonly TensorInfo[],
  detection: Pick<FamilyDetection, 'family'>,
  opts: PlanOptions = {},
  mappings: Mappings = loadMappings(),
): ConversionPlan {
  const compiled = compileForTensors(tensors, detection.family, mappings);
  const outcomes = tensors.map((t) => classify(t, compiled.rules));
  const ema = compiled.family.ema;
  const substitutes = opts.extractEma ? emaSubstitutes(outcomes, tensors, ema) : new Map<string, TensorInfo>();
  const built = build(outcomes, substitutes, mappings);
  checkUnknown(built.account.unknown, opts);
  checkCollisions(built.components);
  return {
    family: compiled.family.family,
    components: orderedComponents(compiled, built.components),
    account: built.account,
    ema: emaReport(tensors, ema, opts.extractEma === true),
    standalone: compiled.family.standalone,
  };
}

function classify(tensor: TensorInfo, rules: CompiledFamily['rules']): Outcome {
  const match = lookupRule(rules, tensor.name);
  if (!match) return { kind: 'unknown', tensor };
  if (match.rule.kind === 'drop') return { kind: 'drop', tensor, reason: match.rule.reason };
  return { kind: 'map', tensor, rule: match.rule, remainder: match.remainder };
}

// --- EMA ---------------------------------------------------------------------------------------

/** `ldm-dotless`: model.diffusion_model.input_blocks.0.0.weight -> model_ema.diffusion_modelinput_blocks00weight. */
export function emaKeyOf(spec: Pick<EmaSpec, 'prefix' | 'keyRule'>, key: string): string {
  return spec.prefix + key.split('.').slice(1).join('');
}

/** For each mapped key of the EMA component: the EMA tensor that replaces it. Fails on any missing one. */
function emaSubstitutes(outcomes: readonly Outcome[], tensors: readonly TensorInfo[], ema: EmaSpec | undefined): Map<string, TensorInfo> {
  if (!ema) fail(ErrorCode.E_MISSING_TENSOR, undefined, 'EMA weights were requested but this family has no EMA copies.');
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const out = new Map<string, TensorInfo>();
  const missing: string[] = [];
  for (const o of outcomes) {
    if (o.kind !== 'map' || o.rule.component !== ema.component) continue;
    const emaTensor = byName.get(emaKeyOf(ema, o.tensor.name));
    if (!emaTensor) {
      missing.push(emaKeyOf(ema, o.tensor.name));
      continue;
    }
    checkSameShape(o.tensor, emaTensor);
    out.set(o.tensor.name, emaTensor);
  }
  if (missing.length > 0) {
    fail(ErrorCode.E_MISSING_TENSOR, undefined, `EMA weights were requested but ${missing.length} EMA tensors are missing: ${listSome(missing)}.`, {
      hint: 'Convert without EMA extraction to use the regular weights.',
      data: { missing },
    });
  }
  return out;
}

function checkSameShape(tensor: TensorInfo, emaTensor: TensorInfo): void {
  if (tensor.shape.join(',') === emaTensor.shape.join(',')) return;
  fail(
    ErrorCode.E_SHAPE_MISMATCH,
    undefined,
    `EMA tensor "${emaTensor.name}" has shape [${emaTensor.shape.join(', ')}] (expected [${tensor.shape.join(', ')}] like "${tensor.name}").`,
  );
}

function emaReport(tensors: readonly TensorInfo[], ema: EmaSpec | undefined, extracted: boolean): EmaReport {
  if (!ema) return { present: false, count: 0, extracted: false };
  const count = tensors.filter((t) => t.name.startsWith(ema.prefix) && !ema.bookkeeping.includes(t.name)).length;
  return { present: count > 0, count, extracted };
}

// --- building the plan -------------------------------------------------------------------------

interface Built {
  readonly components: Map<ComponentFolder, PlannedTensor[]>;
  readonly account: KeyAccount;
}

function build(outcomes: readonly Outcome[], substitutes: ReadonlyMap<string, TensorInfo>, mappings: Mappings): Built {
  const components = new Map<ComponentFolder, PlannedTensor[]>();
  const mapped: KeyAccount['mapped'][number][] = [];
  const dropped: DroppedKey[] = [];
  const unknown: string[] = [];
  const usedEma = new Set([...substitutes.values()].map((t) => t.name));
  const dropKey = (source: string, rule: string): void => {
    dropped.push({ source, reason: mappings.reasons.get(rule) ?? rule, rule });
  };
  for (const o of outcomes) {
    if (usedEma.has(o.tensor.name)) continue; // accounted below, at the key it replaces
    if (o.kind === 'unknown') unknown.push(o.tensor.name);
    else if (o.kind === 'drop') dropKey(o.tensor.name, o.reason);
    else {
      const source = substitutes.get(o.tensor.name) ?? o.tensor;
      if (source !== o.tensor) dropKey(o.tensor.name, 'ema-replaced');
      const planned = plannedTensors(source, o);
      const list = components.get(o.rule.component) ?? [];
      list.push(...planned);
      components.set(o.rule.component, list);
      mapped.push({ source: source.name, targets: planned.map((p) => p.target), component: o.rule.component });
    }
  }
  return { components, account: { mapped, dropped, unknown } };
}

/** The targets of one mapped key; shapes come from the ops (E_SHAPE_MISMATCH when an op does not fit). */
function plannedTensors(source: TensorInfo, o: Extract<Outcome, { kind: 'map' }>): PlannedTensor[] {
  return o.rule.targets.map((t) => ({
    target: t.target + o.remainder,
    source: source.name,
    op: t.op,
    dtype: source.dtype,
    shape: opOutputShape(t.op, source.shape, source.name),
    rule: o.rule.source,
  }));
}

/** Family component order; tensors sorted by target name; components with no tensors left out. */
function orderedComponents(compiled: CompiledFamily, built: ReadonlyMap<ComponentFolder, PlannedTensor[]>): PlannedComponent[] {
  const out: PlannedComponent[] = [];
  for (const c of compiled.components) {
    const tensors = built.get(c.spec.folder);
    if (!tensors || tensors.length === 0) continue;
    out.push({
      folder: c.spec.folder,
      className: c.spec.className,
      library: c.spec.library,
      tensors: [...tensors].sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0)),
      sourcePrefix: c.source,
      standalone: compiled.family.standalone,
      structure: c.structures,
    });
  }
  return out;
}

// --- checks ------------------------------------------------------------------------------------

function checkUnknown(unknown: readonly string[], opts: PlanOptions): void {
  if (unknown.length === 0 || opts.allowUnknownKeys) return;
  fail(ErrorCode.E_UNMATCHED_KEYS, undefined, `${unknown.length} tensors match no mapping row of this family: ${listSome(unknown)}.`, {
    hint: 'Check the detected family; allowUnknownKeys converts the rest and lists these keys as unknown.',
    data: { keys: [...unknown] },
  });
}

function checkCollisions(components: ReadonlyMap<ComponentFolder, PlannedTensor[]>): void {
  const collisions: { component: ComponentFolder; target: string; sources: string[] }[] = [];
  for (const [component, tensors] of components) {
    const byTarget = new Map<string, string[]>();
    for (const t of tensors) byTarget.set(t.target, [...(byTarget.get(t.target) ?? []), t.source]);
    for (const [target, sources] of byTarget) if (sources.length > 1) collisions.push({ component, target, sources });
  }
  if (collisions.length === 0) return;
  const text = collisions.map((c) => `${c.component}/${c.target} <- ${c.sources.join(' + ')}`);
  fail(ErrorCode.E_TARGET_COLLISION, undefined, `${collisions.length} targets have more than one source: ${listSome(text)}.`, {
    hint: 'The file holds the same weight twice under different names (e.g. old and new CLIP layouts).',
    data: { collisions },
  });
}

function listSome(items: readonly string[]): string {
  const shown = items.slice(0, MESSAGE_KEY_LIMIT).join(', ');
  return items.length > MESSAGE_KEY_LIMIT ? `${shown} ... and ${items.length - MESSAGE_KEY_LIMIT} more` : shown;
}
