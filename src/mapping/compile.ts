/**
 * Turns a family's data into FLAT literal prefix rows: table rows and layout rows (filled in from
 * the structure read from the checkpoint) crossed with their inner tables, the component source
 * prefix put in front, and the family's drop rows on top. The result is a Map from source
 * key/prefix to rule, looked up by longest prefix (gguf-py TensorNameMap style).
 *
 * Precedence: a family drop row replaces a table row with the same source (SD2 drops the
 * `text_projection` that the OpenCLIP table maps for SDXL). Any other duplicate source is a data
 * error (E_MAPPING_TABLE).
 */
import { ErrorCode, fail } from '../errors.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { familySpec, loadMappings } from './load.js';
import { fillTemplate, GENERATORS } from './layouts.js';
import { formatOp } from './ops.js';
import type { ComponentFolder, FamilyId, TensorOp } from './plan-types.js';
import type { ComponentSpec, FamilySpec, Mappings, RowSpec, TableSpec } from './spec.js';
import { readStructure, relativeTensors, type ComponentStructures, type StructureKind } from './structure.js';

export interface CompiledTarget {
  /** Target key or prefix inside the component (a prefix when the rule's source is one). */
  readonly target: string;
  readonly op: TensorOp;
}

export type CompiledRule =
  | {
      readonly kind: 'map';
      /** Absolute source key (exact) or prefix (ends in '.'). */
      readonly source: string;
      readonly component: ComponentFolder;
      readonly targets: readonly CompiledTarget[];
      /** The data row(s) it came from. */
      readonly where: string;
    }
  | { readonly kind: 'drop'; readonly source: string; readonly reason: string; readonly where: string };

/** A family component bound to one checkpoint: the source prefix it uses and its structure. */
export interface ResolvedComponent {
  readonly spec: ComponentSpec;
  readonly source: string;
  readonly structures: ComponentStructures;
}

export interface CompiledFamily {
  readonly family: FamilySpec;
  readonly components: readonly ResolvedComponent[];
  /** Source key/prefix -> rule, in data order. */
  readonly rules: ReadonlyMap<string, CompiledRule>;
}

export interface RuleMatch {
  readonly rule: CompiledRule;
  /** What follows the matched prefix ('' for an exact match). */
  readonly remainder: string;
}

/** Compiles a family for a checkpoint: source prefixes and structures are read from its tensors. */
export function compileForTensors(tensors: readonly TensorInfo[], family: FamilyId, mappings: Mappings = loadMappings()): CompiledFamily {
  const spec = familySpec(family, mappings);
  const components = spec.components.map((c) => resolveComponent(c, tensors, mappings));
  return compileFamily(spec, components, mappings);
}

/**
 * Compiles a family for a given structure, without a checkpoint (the first source prefix of each
 * component is used): the generated dumps in mappings/generated/ and `--print-rows` use this.
 */
export function compileForStructures(
  family: FamilyId,
  structures: Readonly<Partial<Record<ComponentFolder, ComponentStructures>>>,
  mappings: Mappings = loadMappings(),
): CompiledFamily {
  const spec = familySpec(family, mappings);
  const components = spec.components.map((c) => ({ spec: c, source: c.sources[0], structures: structures[c.folder] ?? {} }));
  return compileFamily(spec, components, mappings);
}

/** Picks the first source prefix the file uses and reads the structures the component's table needs. */
export function resolveComponent(spec: ComponentSpec, tensors: readonly TensorInfo[], mappings: Mappings = loadMappings()): ResolvedComponent {
  const source = spec.sources.find((p) => p !== '' && tensors.some((t) => t.name.startsWith(p))) ?? (spec.sources.includes('') ? '' : spec.sources[0]);
  const rel = relativeTensors(tensors, source);
  const structures: Partial<Record<StructureKind, unknown>> = {};
  for (const kind of structureKindsOf(tableOf(spec, mappings))) {
    const s = readStructure(kind, rel, spec.folder);
    if (s) structures[kind] = s;
  }
  return { spec, source, structures: structures as ComponentStructures };
}

function structureKindsOf(table: TableSpec): StructureKind[] {
  return [...new Set(table.layouts.map((l) => GENERATORS[l.generator].structure))];
}

function tableOf(spec: ComponentSpec, mappings: Mappings): TableSpec {
  const t = mappings.tables.get(spec.table);
  if (!t) fail(ErrorCode.E_MAPPING_TABLE, undefined, `component ${spec.folder} names unknown table "${spec.table}".`);
  return t;
}

/** Expands every component's table and the family drops into one rule map. */
export function compileFamily(family: FamilySpec, components: readonly ResolvedComponent[], mappings: Mappings = loadMappings()): CompiledFamily {
  const rules = new Map<string, CompiledRule>();
  for (const c of components) {
    const table = tableOf(c.spec, mappings);
    for (const row of expandTable(table, c)) addRule(rules, toRule(row, c));
  }
  const familyDrops = new Set<string>();
  for (const d of family.drop) {
    if (familyDrops.has(d.source)) dataError(d.where, `drop source "${d.source}" appears twice`);
    familyDrops.add(d.source);
    rules.set(d.source, { kind: 'drop', source: d.source, reason: d.reason, where: d.where });
  }
  return { family, components, rules };
}

/** A table row with templates filled and inner tables crossed in; source relative to the component. */
interface ExpandedRow {
  readonly source: string;
  readonly targets: readonly CompiledTarget[];
  readonly drop?: string;
  readonly where: string;
}

function expandTable(table: TableSpec, c: ResolvedComponent): ExpandedRow[] {
  const out: ExpandedRow[] = [];
  for (const row of table.rows) out.push(...expandRow(row, table, {}));
  for (const layout of table.layouts) {
    const def = GENERATORS[layout.generator];
    const structure = c.structures[def.structure];
    if (!structure) continue; // the file has no blocks of this kind: nothing to map
    for (const slot of def.generate(structure, c.spec.options)) {
      for (const row of layout.rows) if (row.slot === slot.slot) out.push(...expandRow(row, table, slot.vars));
    }
  }
  return out;
}

function expandRow(row: RowSpec, table: TableSpec, vars: Readonly<Record<string, number>>): ExpandedRow[] {
  const where = `${table.file} ${row.where}`;
  const source = fillTemplate(row.source, vars);
  if (row.drop !== undefined) return [{ source, targets: [], drop: row.drop, where }];
  const targets = row.targets.map((t) => ({ target: fillTemplate(t.target, vars), op: t.op }));
  if (row.inner === undefined) return [{ source, targets, where }];
  const block = targets[0].target;
  return (table.inner.get(row.inner) ?? []).map((inner) => ({
    source: source + inner.source,
    targets: inner.targets.map((t) => ({ target: block + t.target, op: t.op })),
    drop: inner.drop,
    where: `${where} x inner ${row.inner} ${inner.where}`,
  }));
}

function toRule(row: ExpandedRow, c: ResolvedComponent): CompiledRule {
  const source = c.source + row.source;
  if (row.drop !== undefined) return { kind: 'drop', source, reason: row.drop, where: row.where };
  return { kind: 'map', source, component: c.spec.folder, targets: row.targets, where: row.where };
}

function addRule(rules: Map<string, CompiledRule>, rule: CompiledRule): void {
  const prev = rules.get(rule.source);
  if (prev) dataError(rule.where, `source "${rule.source}" is already mapped by ${prev.where}`);
  rules.set(rule.source, rule);
}

function dataError(where: string, problem: string): never {
  const file = `mappings/${where.split(' ')[0]}`;
  return fail(ErrorCode.E_MAPPING_TABLE, file, `${where}: ${problem}.`, { data: { file, row: where } });
}

/**
 * Longest-prefix lookup: the exact key first, then the key cut after each '.' from the right.
 * Undefined when nothing matches (an unknown key).
 */
export function lookupRule(rules: ReadonlyMap<string, CompiledRule>, key: string): RuleMatch | undefined {
  const exact = rules.get(key);
  if (exact) return { rule: exact, remainder: '' };
  for (let i = key.lastIndexOf('.'); i > 0; i = key.lastIndexOf('.', i - 1)) {
    const rule = rules.get(key.slice(0, i + 1));
    if (rule) return { rule, remainder: key.slice(i + 1) };
  }
  return undefined;
}

/** One flat row: `[source, component, target]`, `[source, component, target, op]` or `[source, "drop", reason]`. */
export type RowDump = readonly string[];

/** The compiled rows, one per target, in data order (what `ckpt2diffusers` prints). */
export function dumpCompiledRows(compiled: CompiledFamily): RowDump[] {
  const out: RowDump[] = [];
  for (const rule of compiled.rules.values()) {
    if (rule.kind === 'drop') {
      out.push([rule.source, 'drop', rule.reason]);
      continue;
    }
    for (const t of rule.targets) out.push(t.op.op === 'copy' ? [rule.source, rule.component, t.target] : [rule.source, rule.component, t.target, formatOp(t.op)]);
  }
  return out;
}

/** The structures the rows were compiled for, by component. */
export function structuresOf(compiled: CompiledFamily): Partial<Record<ComponentFolder, ComponentStructures>> {
  return Object.fromEntries(compiled.components.map((c) => [c.spec.folder, c.structures]));
}

/** JSON text with one row per line, so the dump stays greppable and diffs stay small. */
export function formatRowDump(compiled: CompiledFamily, note?: string): string {
  const head = [`  "family": ${JSON.stringify(compiled.family.family)}`];
  if (note !== undefined) head.push(`  "note": ${JSON.stringify(note)}`);
  head.push(`  "structures": ${JSON.stringify(structuresOf(compiled))}`);
  const rows = dumpCompiledRows(compiled).map((r) => `    [${r.map((x) => JSON.stringify(x)).join(', ')}]`);
  return `{\n${head.join(',\n')},\n  "rows": [\n${rows.join(',\n')}\n  ]\n}\n`;
}
