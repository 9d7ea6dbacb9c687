/**
 * Reads mappings/ (tables, families, drop reasons) and checks every row, so a mistake in the data
 * fails at load with E_MAPPING_TABLE naming the file and the row, never later as a wrong tensor.
 *
 * The JSON is read at run time relative to the package root: this file sits two levels below it
 * both as src/mapping/load.ts (tests) and as dist/mapping/load.js (the built package).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { ErrorCode, fail } from '../errors.js';
import { GENERATORS, isGeneratorName, OPTION_NAMES, placeholdersOf, type LayoutOptions } from './layouts.js';
import { parseOp } from './ops.js';
import type { ComponentFolder, FamilyId } from './plan-types.js';
import type {
  ComponentSpec,
  DetectSpec,
  DropSpec,
  EmaSpec,
  FamilySpec,
  LayoutRowSpec,
  LayoutSpec,
  Mappings,
  Probe,
  RowSpec,
  RowTarget,
  TableSpec,
} from './spec.js';

/** The mappings/ folder of this package. */
export const MAPPINGS_ROOT: URL = new URL('../../mappings/', import.meta.url);

/** Every FamilyId, checked against the union by the Record type. */
const FAMILY_ID_SET: Record<FamilyId, true> = {
  sd1: true,
  'sd1-inpaint': true,
  'sd1-pix2pix': true,
  sd2: true,
  'sd2-inpaint': true,
  'sd2-depth': true,
  'sdxl-base': true,
  'sdxl-refiner': true,
  'sdxl-inpaint': true,
  'controlnet-sd15': true,
  'controlnet-sdxl': true,
  'sd-x4-upscaler': true,
  'sd21-unclip-h': true,
  'sd21-unclip-l': true,
  vae: true,
};
const FOLDER_SET: Record<ComponentFolder, true> = {
  unet: true,
  vae: true,
  text_encoder: true,
  text_encoder_2: true,
  controlnet: true,
  image_encoder: true,
  image_normalizer: true,
};

let cached: Mappings | undefined;

/** The package's mappings, read and checked once. */
export function loadMappings(): Mappings {
  cached ??= readMappings(MAPPINGS_ROOT);
  return cached;
}

/** Reads and checks a mappings folder (tests point this at broken copies). */
export function readMappings(root: URL): Mappings {
  const reasons = parseReasons(readJson(root, 'drop-reasons.json'), 'drop-reasons.json');
  const raw = new Map<string, TableSpec & { readonly extends?: string }>();
  for (const file of jsonFiles(root, 'tables/')) {
    const table = parseTable(readJson(root, file), file, reasons);
    raw.set(table.name, table);
  }
  const tables = new Map<string, TableSpec>();
  for (const name of raw.keys()) tables.set(name, resolveTable(name, raw, []));
  const families = jsonFiles(root, 'families/').map((file) => parseFamily(readJson(root, file), file, reasons));
  return { tables, families: resolveFamilies(families, tables), reasons };
}

function jsonFiles(root: URL, dir: string): string[] {
  return readdirSync(new URL(dir, root))
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => dir + f);
}

function readJson(root: URL, file: string): unknown {
  const text = readFileSync(new URL(file, root), 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    return bad(file, 'file', `is not valid JSON (${(e as Error).message})`);
  }
}

/** Throws E_MAPPING_TABLE: `mappings/<file>: <where>: <problem>.` */
function bad(file: string, where: string, problem: string): never {
  return fail(ErrorCode.E_MAPPING_TABLE, `mappings/${file}`, `${where}: ${problem}.`, {
    data: { file: `mappings/${file}`, row: where },
    hint: 'Fix the mapping data (format: mappings/README.md).',
  });
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function expectObj(v: unknown, file: string, where: string): Obj {
  if (!isObj(v)) bad(file, where, `expected an object, got ${JSON.stringify(v)}`);
  return v;
}

function expectArray(v: unknown, file: string, where: string): unknown[] {
  if (!Array.isArray(v)) bad(file, where, `expected an array, got ${JSON.stringify(v)}`);
  return v;
}

function expectString(v: unknown, file: string, where: string): string {
  if (typeof v !== 'string') bad(file, where, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function checkKeys(o: Obj, allowed: readonly string[], file: string, where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) bad(file, where, `unknown field "${k}" (allowed: ${allowed.join(', ')})`);
}

// --- drop reasons ------------------------------------------------------------------------------

export function parseReasons(json: unknown, file: string): Map<string, string> {
  const o = expectObj(json, file, 'file');
  const reasons = expectObj(o.reasons, file, 'reasons');
  const out = new Map<string, string>();
  for (const [id, text] of Object.entries(reasons)) out.set(id, expectString(text, file, `reasons.${id}`));
  return out;
}

// --- tables ------------------------------------------------------------------------------------

const TABLE_KEYS = ['table', 'extends', 'from', 'to', 'provenance', 'notes', 'note', 'inner', 'rows', 'layouts'];
const ROW_KEYS = ['source', 'target', 'targets', 'op', 'inner', 'drop', 'slot', 'note'];

/** Context a row is read in: which inner tables it may name, which placeholders it may use. */
interface RowContext {
  readonly file: string;
  readonly reasons: ReadonlyMap<string, string>;
  /** Inner table names a row may cross with; undefined inside an inner table. */
  readonly inner?: ReadonlySet<string>;
  /** Placeholders allowed in source/target (layout rows only). */
  readonly placeholders: readonly string[];
}

export function parseTable(json: unknown, file: string, reasons: ReadonlyMap<string, string>): TableSpec & { readonly extends?: string } {
  const o = expectObj(json, file, 'file');
  checkKeys(o, TABLE_KEYS, file, 'file');
  const name = expectString(o.table, file, 'table');
  const stem = file.replace(/^.*\//, '').replace(/\.json$/, '');
  if (name !== stem) bad(file, 'table', `name "${name}" differs from the file name "${stem}"`);
  const innerObj = expectObj(o.inner ?? {}, file, 'inner');
  const inner = new Map<string, RowSpec[]>();
  for (const [innerName, def] of Object.entries(innerObj)) {
    const rows = Array.isArray(def) ? def : expectObj(def, file, `inner.${innerName}`).rows;
    const ctx: RowContext = { file, reasons, placeholders: [] };
    inner.set(innerName, expectArray(rows, file, `inner.${innerName}.rows`).map((r, i) => parseRow(r, ctx, `inner.${innerName}.rows[${i}]`)));
  }
  const topCtx: RowContext = { file, reasons, inner: new Set(inner.keys()), placeholders: [] };
  const rows = expectArray(o.rows ?? [], file, 'rows').map((r, i) => parseRow(r, topCtx, `rows[${i}]`));
  const layouts = expectArray(o.layouts ?? [], file, 'layouts').map((l, i) => parseLayout(l, { ...topCtx }, `layouts[${i}]`));
  const base = o.extends === undefined ? undefined : expectString(o.extends, file, 'extends');
  return { name, file, provenance: typeof o.provenance === 'string' ? o.provenance : '', inner, rows, layouts, ...(base ? { extends: base } : {}) };
}

/**
 * A table that `extends` another holds the base table's rows, inner tables and layouts, then its
 * own (a duplicate row source is reported when the family is compiled; a duplicate inner table
 * name here). Its own rows may cross only with its own inner tables.
 */
function resolveTable(name: string, raw: ReadonlyMap<string, TableSpec & { readonly extends?: string }>, seen: readonly string[]): TableSpec {
  const t = raw.get(name)!;
  if (t.extends === undefined) return t;
  if (seen.includes(name)) bad(t.file, 'extends', `cycle: ${[...seen, name].join(' -> ')}`);
  if (!raw.has(t.extends)) bad(t.file, 'extends', `unknown table "${t.extends}"`);
  const base = resolveTable(t.extends, raw, [...seen, name]);
  const inner = new Map(base.inner);
  for (const [k, v] of t.inner) {
    if (inner.has(k)) bad(t.file, `inner.${k}`, `inner table "${k}" is already defined by the base table ${base.file}`);
    inner.set(k, v);
  }
  return { name: t.name, file: t.file, provenance: t.provenance, inner, rows: [...base.rows, ...t.rows], layouts: [...base.layouts, ...t.layouts] };
}

function parseLayout(raw: unknown, ctx: RowContext, where: string): LayoutSpec {
  const o = expectObj(raw, ctx.file, where);
  checkKeys(o, ['generator', 'rows', 'note'], ctx.file, where);
  const generator = o.generator;
  if (!isGeneratorName(generator)) {
    bad(ctx.file, `${where}.generator`, `unknown layout generator ${JSON.stringify(generator)} (expected one of ${Object.keys(GENERATORS).join(', ')})`);
  }
  const slots: Readonly<Record<string, readonly string[]>> = GENERATORS[generator].slots;
  const rows = expectArray(o.rows, ctx.file, `${where}.rows`).map((r, i): LayoutRowSpec => {
    const rowWhere = `${where}.rows[${i}]`;
    const slot = isObj(r) ? r.slot : undefined;
    if (typeof slot !== 'string' || !Object.prototype.hasOwnProperty.call(slots, slot)) {
      bad(ctx.file, rowWhere, `slot ${JSON.stringify(slot)} is not a slot of ${generator} (expected one of ${Object.keys(slots).join(', ')})`);
    }
    return { ...parseRow(r, { ...ctx, placeholders: slots[slot] }, rowWhere), slot };
  });
  return { generator, rows, where };
}

function parseRow(raw: unknown, ctx: RowContext, where: string): RowSpec {
  const o = Array.isArray(raw) ? tupleRow(raw, ctx.file, where) : expectObj(raw, ctx.file, where);
  checkKeys(o, ROW_KEYS, ctx.file, where);
  const source = expectString(o.source, ctx.file, `${where}.source`);
  if (source === '') bad(ctx.file, where, 'source is empty');
  checkPlaceholders(source, ctx, where);
  const given = ['target', 'targets', 'drop'].filter((k) => o[k] !== undefined);
  if (given.length !== 1) bad(ctx.file, where, `needs exactly one of target, targets, drop (got ${given.join(', ') || 'none'})`);
  if (o.drop !== undefined) return dropRow(o, source, ctx, where);
  const targets = o.targets !== undefined ? parseTargets(o.targets, ctx, where) : [parseTarget({ target: o.target, op: o.op }, ctx, where)];
  for (const t of targets) {
    if (source.endsWith('.') !== t.target.endsWith('.')) {
      bad(ctx.file, where, `prefix row and exact row mixed: source "${source}" and target "${t.target}" must both end in "." or neither`);
    }
  }
  const inner = parseInnerRef(o.inner, source, targets, ctx, where);
  return { source, targets, inner, where };
}

function tupleRow(raw: unknown[], file: string, where: string): Obj {
  if (raw.length < 2 || raw.length > 3) bad(file, where, `a row array is [source, target] or [source, target, op], got ${raw.length} items`);
  return { source: raw[0], target: raw[1], op: raw[2] };
}

function dropRow(o: Obj, source: string, ctx: RowContext, where: string): RowSpec {
  const reason = expectString(o.drop, ctx.file, `${where}.drop`);
  if (!ctx.reasons.has(reason)) bad(ctx.file, where, `unknown drop reason "${reason}" (see drop-reasons.json)`);
  if (o.op !== undefined || o.inner !== undefined) bad(ctx.file, where, 'a drop row takes no op or inner');
  return { source, targets: [], drop: reason, where };
}

function parseTargets(raw: unknown, ctx: RowContext, where: string): RowTarget[] {
  const list = expectArray(raw, ctx.file, `${where}.targets`);
  if (list.length === 0) bad(ctx.file, where, 'targets is empty');
  return list.map((t, i) => parseTarget(expectObj(t, ctx.file, `${where}.targets[${i}]`), ctx, `${where}.targets[${i}]`));
}

function parseTarget(o: Obj, ctx: RowContext, where: string): RowTarget {
  const target = expectString(o.target, ctx.file, `${where}.target`);
  checkPlaceholders(target, ctx, where);
  const op = parseOp(o.op);
  if (typeof op === 'string') bad(ctx.file, where, op);
  return { target, op };
}

function parseInnerRef(raw: unknown, source: string, targets: readonly RowTarget[], ctx: RowContext, where: string): string | undefined {
  if (raw === undefined) return undefined;
  const name = expectString(raw, ctx.file, `${where}.inner`);
  if (!ctx.inner) bad(ctx.file, where, 'inner tables cannot be nested');
  if (!ctx.inner.has(name)) bad(ctx.file, where, `unknown inner table "${name}"`);
  if (targets.length !== 1 || targets[0].op.op !== 'copy' || !source.endsWith('.')) {
    bad(ctx.file, where, 'a row crossed with an inner table must be a prefix row with one target and no op');
  }
  return name;
}

function checkPlaceholders(template: string, ctx: RowContext, where: string): void {
  for (const p of placeholdersOf(template)) {
    if (!ctx.placeholders.includes(p)) {
      const allowed = ctx.placeholders.length > 0 ? `allowed: ${ctx.placeholders.map((x) => `{${x}}`).join(', ')}` : 'only layout rows take placeholders';
      bad(ctx.file, where, `placeholder {${p}} in "${template}" is not available here (${allowed})`);
    }
  }
}

// --- families ----------------------------------------------------------------------------------

/** A family file as written, before `extends` is applied. */
export interface RawFamily {
  readonly id: string;
  readonly file: string;
  readonly abstract: boolean;
  readonly standalone?: boolean;
  readonly extends?: string;
  readonly components: readonly ComponentSpec[];
  readonly drop: readonly DropSpec[];
  readonly detect?: Partial<DetectSpec>;
  readonly ema?: EmaSpec;
}

const FAMILY_KEYS = ['family', 'abstract', 'standalone', 'extends', 'note', 'components', 'drop', 'detect', 'ema'];

export function parseFamily(json: unknown, file: string, reasons: ReadonlyMap<string, string>): RawFamily {
  const o = expectObj(json, file, 'file');
  checkKeys(o, FAMILY_KEYS, file, 'file');
  const id = expectString(o.family, file, 'family');
  const components = expectArray(o.components ?? [], file, 'components').map((c, i) => parseComponent(c, file, `components[${i}]`));
  const drop = expectArray(o.drop ?? [], file, 'drop').map((d, i) => parseDrop(d, file, `drop[${i}]`, reasons));
  return {
    id,
    file,
    abstract: o.abstract === true,
    standalone: typeof o.standalone === 'boolean' ? o.standalone : undefined,
    extends: o.extends === undefined ? undefined : expectString(o.extends, file, 'extends'),
    components,
    drop,
    detect: o.detect === undefined ? undefined : parseDetect(o.detect, file),
    ema: o.ema === undefined ? undefined : parseEma(o.ema, file),
  };
}

function parseComponent(raw: unknown, file: string, where: string): ComponentSpec {
  const o = expectObj(raw, file, where);
  checkKeys(o, ['folder', 'source', 'table', 'className', 'library', 'options', 'note'], file, where);
  const folder = expectString(o.folder, file, `${where}.folder`);
  if (!Object.prototype.hasOwnProperty.call(FOLDER_SET, folder)) bad(file, where, `unknown component folder "${folder}"`);
  const sources = (Array.isArray(o.source) ? o.source : [o.source]).map((s, i) => expectString(s, file, `${where}.source[${i}]`));
  for (const s of sources) if (s !== '' && !s.endsWith('.')) bad(file, where, `source prefix "${s}" must end in "."`);
  const library = o.library;
  if (library !== 'diffusers' && library !== 'transformers') bad(file, where, `library must be "diffusers" or "transformers", got ${JSON.stringify(library)}`);
  return {
    folder: folder as ComponentFolder,
    sources,
    table: expectString(o.table, file, `${where}.table`),
    className: expectString(o.className, file, `${where}.className`),
    library,
    options: parseOptions(o.options, file, `${where}.options`),
  };
}

function parseOptions(raw: unknown, file: string, where: string): LayoutOptions {
  const o = expectObj(raw ?? {}, file, where);
  checkKeys(o, OPTION_NAMES, file, where);
  if (o.skipLastLayer !== undefined && typeof o.skipLastLayer !== 'boolean') bad(file, where, 'skipLastLayer must be a boolean');
  return o as LayoutOptions;
}

function parseDrop(raw: unknown, file: string, where: string, reasons: ReadonlyMap<string, string>): DropSpec {
  const o = expectObj(raw, file, where);
  checkKeys(o, ['source', 'reason', 'note'], file, where);
  const source = expectString(o.source, file, `${where}.source`);
  const reason = expectString(o.reason, file, `${where}.reason`);
  if (source === '') bad(file, where, 'source is empty');
  if (!reasons.has(reason)) bad(file, where, `unknown drop reason "${reason}" (see drop-reasons.json)`);
  return { source, reason, where: `${file} ${where}` };
}

function parseEma(raw: unknown, file: string): EmaSpec {
  const o = expectObj(raw, file, 'ema');
  checkKeys(o, ['component', 'prefix', 'keyRule', 'bookkeeping', 'note'], file, 'ema');
  if (o.keyRule !== 'ldm-dotless') bad(file, 'ema.keyRule', `unknown EMA key rule ${JSON.stringify(o.keyRule)} (expected "ldm-dotless")`);
  const component = expectString(o.component, file, 'ema.component');
  if (!Object.prototype.hasOwnProperty.call(FOLDER_SET, component)) bad(file, 'ema.component', `unknown component folder "${component}"`);
  return {
    component: component as ComponentFolder,
    prefix: expectString(o.prefix, file, 'ema.prefix'),
    keyRule: 'ldm-dotless',
    bookkeeping: expectArray(o.bookkeeping ?? [], file, 'ema.bookkeeping').map((k, i) => expectString(k, file, `ema.bookkeeping[${i}]`)),
  };
}

function parseDetect(raw: unknown, file: string): Partial<DetectSpec> {
  const o = expectObj(raw, file, 'detect');
  checkKeys(o, ['require', 'exclude', 'support', 'metadata', 'confidence', 'note'], file, 'detect');
  const list = (k: string): Probe[] | undefined =>
    o[k] === undefined ? undefined : expectArray(o[k], file, `detect.${k}`).map((p, i) => parseProbe(p, file, `detect.${k}[${i}]`));
  const confidence = o.confidence;
  if (confidence !== undefined && confidence !== 'high' && confidence !== 'medium' && confidence !== 'low') {
    bad(file, 'detect.confidence', `expected high, medium or low, got ${JSON.stringify(confidence)}`);
  }
  return { require: list('require'), exclude: list('exclude'), support: list('support'), metadata: list('metadata'), confidence };
}

const PROBE_KEYS = ['id', 'implies', 'key', 'prefix', 'present', 'dim', 'ndim', 'equals', 'metadata', 'startsWith', 'anyOf'];

function parseProbe(raw: unknown, file: string, where: string): Probe {
  const o = expectObj(raw, file, where);
  checkKeys(o, PROBE_KEYS, file, where);
  const common = {
    id: o.id === undefined ? undefined : expectString(o.id, file, `${where}.id`),
    implies: o.implies === undefined ? undefined : expectString(o.implies, file, `${where}.implies`),
  };
  if (o.anyOf !== undefined) {
    const probes = expectArray(o.anyOf, file, `${where}.anyOf`).map((p, i) => parseProbe(p, file, `${where}.anyOf[${i}]`));
    if (probes.length === 0) bad(file, where, 'anyOf is empty');
    return { kind: 'anyOf', probes, ...common };
  }
  if (o.metadata !== undefined) {
    return { kind: 'metadata', name: expectString(o.metadata, file, where), startsWith: expectString(o.startsWith, file, `${where}.startsWith`), ...common };
  }
  if (o.prefix !== undefined) return { kind: 'prefix', prefix: expectString(o.prefix, file, where), present: o.present !== false, ...common };
  const key = expectString(o.key, file, `${where}.key`);
  if (o.dim !== undefined) return { kind: 'dim', key, dim: expectInt(o.dim, file, `${where}.dim`), equals: expectInt(o.equals, file, `${where}.equals`), ...common };
  if (o.ndim !== undefined) return { kind: 'ndim', key, equals: expectInt(o.ndim, file, `${where}.ndim`), ...common };
  return { kind: 'key', key, present: o.present !== false, ...common };
}

function expectInt(v: unknown, file: string, where: string): number {
  if (!Number.isInteger(v)) bad(file, where, `expected an integer, got ${JSON.stringify(v)}`);
  return v as number;
}

// --- extends -----------------------------------------------------------------------------------

/** Applies `extends` and checks that every concrete family is complete. */
export function resolveFamilies(raws: readonly RawFamily[], tables: ReadonlyMap<string, TableSpec>): Map<FamilyId, FamilySpec> {
  const byId = new Map<string, RawFamily>();
  for (const r of raws) {
    if (byId.has(r.id)) bad(r.file, 'family', `family "${r.id}" is also defined in ${byId.get(r.id)!.file}`);
    byId.set(r.id, r);
  }
  const out = new Map<FamilyId, FamilySpec>();
  for (const r of raws) {
    if (r.abstract) continue;
    if (!Object.prototype.hasOwnProperty.call(FAMILY_ID_SET, r.id)) {
      bad(r.file, 'family', `"${r.id}" is not a FamilyId (add it to plan-types.ts FamilyId and load.ts first)`);
    }
    out.set(r.id as FamilyId, completeFamily(flatten(r, byId, []), tables));
  }
  return out;
}

/** Merges a family with its ancestors: components by folder, drops appended, probes overridden by id. */
function flatten(r: RawFamily, byId: ReadonlyMap<string, RawFamily>, seen: readonly string[]): RawFamily {
  if (r.extends === undefined) return r;
  if (seen.includes(r.id)) bad(r.file, 'extends', `cycle: ${[...seen, r.id].join(' -> ')}`);
  const base = byId.get(r.extends);
  if (!base) bad(r.file, 'extends', `unknown family "${r.extends}"`);
  const parent = flatten(base, byId, [...seen, r.id]);
  const childFolders = new Set(r.components.map((c) => c.folder));
  return {
    ...r,
    standalone: r.standalone ?? parent.standalone,
    components: [...parent.components.filter((c) => !childFolders.has(c.folder)), ...r.components],
    drop: [...parent.drop, ...r.drop],
    detect: mergeDetect(parent.detect, r.detect),
    ema: r.ema ?? parent.ema,
  };
}

function mergeDetect(parent: Partial<DetectSpec> | undefined, child: Partial<DetectSpec> | undefined): Partial<DetectSpec> {
  // A child probe with the id of a parent probe takes its place (keeping the evidence order).
  const merge = (a: readonly Probe[] = [], b: readonly Probe[] = []): Probe[] => {
    const byId = new Map(b.filter((p) => p.id !== undefined).map((p) => [p.id, p]));
    const merged = a.map((p) => (p.id !== undefined && byId.has(p.id) ? byId.get(p.id)! : p));
    return [...merged, ...b.filter((p) => !merged.includes(p))];
  };
  return {
    require: merge(parent?.require, child?.require),
    exclude: merge(parent?.exclude, child?.exclude),
    support: merge(parent?.support, child?.support),
    metadata: merge(parent?.metadata, child?.metadata),
    confidence: child?.confidence ?? parent?.confidence,
  };
}

function completeFamily(r: RawFamily, tables: ReadonlyMap<string, TableSpec>): FamilySpec {
  if (r.components.length === 0) bad(r.file, 'components', `family "${r.id}" has no components`);
  for (const [i, c] of r.components.entries()) {
    if (!tables.has(c.table)) bad(r.file, `components[${i}]`, `unknown table "${c.table}"`);
  }
  const d = r.detect ?? {};
  if (!d.require || d.require.length === 0) bad(r.file, 'detect.require', `family "${r.id}" needs at least one required probe`);
  if (r.ema && !r.components.some((c) => c.folder === r.ema!.component)) bad(r.file, 'ema.component', `no component "${r.ema.component}"`);
  const detect: DetectSpec = {
    require: d.require,
    exclude: d.exclude ?? [],
    support: d.support ?? [],
    metadata: d.metadata ?? [],
    confidence: d.confidence ?? 'high',
  };
  return { family: r.id as FamilyId, file: r.file, standalone: r.standalone ?? false, components: r.components, drop: r.drop, detect, ema: r.ema };
}

/** A concrete family by id; E_UNKNOWN_FAMILY when the data has none. */
export function familySpec(id: FamilyId, mappings: Mappings = loadMappings()): FamilySpec {
  const f = mappings.families.get(id);
  if (!f) fail(ErrorCode.E_UNKNOWN_FAMILY, undefined, `family "${id}" has no mapping data (known: ${[...mappings.families.keys()].join(', ')}).`);
  return f;
}

