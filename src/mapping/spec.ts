/**
 * The in-memory form of mappings/*.json after load.ts has read and checked it. The file formats
 * are described in mappings/README.md; these types are what the rest of src/mapping works with.
 */
import type { ComponentFolder, FamilyId, TensorOp } from './plan-types.js';
import type { GeneratorName, LayoutOptions } from './layouts.js';

export interface RowTarget {
  readonly target: string;
  readonly op: TensorOp;
}

/**
 * One table row. A source ending in '.' is a prefix row (the rest of the key is appended to each
 * target); any other source is an exact key. A row either maps (targets), or drops (reason id).
 * A row naming `inner` is crossed with that inner table: every inner row is appended to it.
 */
export interface RowSpec {
  readonly source: string;
  readonly targets: readonly RowTarget[];
  readonly drop?: string;
  readonly inner?: string;
  /** Where the row is written, e.g. `tables/unet-ldm.json layouts[0].rows[1]`. */
  readonly where: string;
}

export interface LayoutRowSpec extends RowSpec {
  readonly slot: string;
}

export interface LayoutSpec {
  readonly generator: GeneratorName;
  readonly rows: readonly LayoutRowSpec[];
  readonly where: string;
}

export interface TableSpec {
  readonly name: string;
  readonly file: string;
  readonly provenance: string;
  readonly inner: ReadonlyMap<string, readonly RowSpec[]>;
  readonly rows: readonly RowSpec[];
  readonly layouts: readonly LayoutSpec[];
}

/** Detection probes: conditions on key names, shapes and metadata (like diffusers' CHECKPOINT_KEY_NAMES). */
export type Probe =
  | { readonly kind: 'key'; readonly key: string; readonly present: boolean; readonly implies?: string; readonly id?: string }
  | { readonly kind: 'prefix'; readonly prefix: string; readonly present: boolean; readonly implies?: string; readonly id?: string }
  | { readonly kind: 'dim'; readonly key: string; readonly dim: number; readonly equals: number; readonly implies?: string; readonly id?: string }
  | { readonly kind: 'ndim'; readonly key: string; readonly equals: number; readonly implies?: string; readonly id?: string }
  | { readonly kind: 'metadata'; readonly name: string; readonly startsWith: string; readonly implies?: string; readonly id?: string }
  | { readonly kind: 'anyOf'; readonly probes: readonly Probe[]; readonly implies?: string; readonly id?: string };

export interface DetectSpec {
  /** All must hold. */
  readonly require: readonly Probe[];
  /** None may hold. */
  readonly exclude: readonly Probe[];
  /** Expected but not decisive: a failing one lowers the confidence to 'medium'. */
  readonly support: readonly Probe[];
  /** Metadata checks, evaluated only when the file has that metadata; a conflict lowers confidence to 'low'. */
  readonly metadata: readonly Probe[];
  readonly confidence: 'high' | 'medium' | 'low';
}

export interface ComponentSpec {
  readonly folder: ComponentFolder;
  /** Candidate source prefixes, most specific first; the first one the file uses is taken. */
  readonly sources: readonly string[];
  readonly table: string;
  readonly className: string;
  readonly library: 'diffusers' | 'transformers';
  readonly options: LayoutOptions;
}

export interface DropSpec {
  readonly source: string;
  readonly reason: string;
  readonly where: string;
}

/** How EMA copies are named; `ldm-dotless`: 'model_ema.' + ''.join(key.split('.')[1:]). */
export interface EmaSpec {
  readonly component: ComponentFolder;
  readonly prefix: string;
  readonly keyRule: 'ldm-dotless';
  readonly bookkeeping: readonly string[];
}

/** A family with `extends` applied. */
export interface FamilySpec {
  readonly family: FamilyId;
  readonly file: string;
  readonly standalone: boolean;
  readonly components: readonly ComponentSpec[];
  readonly drop: readonly DropSpec[];
  readonly detect: DetectSpec;
  readonly ema?: EmaSpec;
}

export interface Mappings {
  readonly tables: ReadonlyMap<string, TableSpec>;
  /** Concrete (non-abstract) families, by id, in file-name order. */
  readonly families: ReadonlyMap<FamilyId, FamilySpec>;
  /** Drop reason id -> text. */
  readonly reasons: ReadonlyMap<string, string>;
}
