/**
 * The contract between the torch pickle interpreter (pickle.ts) and the two torch containers
 * (zip: torch-zip.ts, legacy: torch-legacy.ts). The pickle side turns `data.pkl` (or the legacy
 * object pickle) into descriptors; the container side knows where each storage's bytes live.
 */
import type { DType } from '../dtypes.js';
import type { PickleGlobal } from './tensor-source.js';

/** One storage referenced by a persistent id `('storage', type, key, location, numel[, view])`. */
export interface StorageRef {
  /** Record name under `<prefix>/data/` (zip) or the root key (legacy). */
  readonly key: string;
  /** Element dtype of the storage class; untyped storages are 'U8' (numel then counts bytes). */
  readonly dtype: DType;
  /** numel as written in the persistent id, in elements of `dtype`. */
  readonly numel: number;
  /** `'cpu'`, `'cuda:0'`, ... (informational only). */
  readonly location: string;
  /** Legacy files only: a view `(view_key, offset, size)` into the root storage, in elements. */
  readonly view?: { readonly key: string; readonly offset: number; readonly size: number };
}

/** One tensor as the rebuild call describes it: no bytes yet. */
export interface PickledTensor {
  /** Full dotted key in the unwrapped state dict. */
  readonly name: string;
  /** Dtype of the tensor (differs from the storage's only for untyped storages). */
  readonly dtype: DType;
  readonly storage: StorageRef;
  /** Offset into the storage, in elements of `dtype`. */
  readonly storageOffset: number;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
}

export interface TorchPickleResult {
  /** Tensors in state-dict order. */
  readonly tensors: readonly PickledTensor[];
  /** Keys followed to reach the state dict (e.g. ['state_dict']). */
  readonly wrapperPath: readonly string[];
  /** JSON-safe non-tensor values next to the state dict (global_step, epoch, ...). */
  readonly extras: Readonly<Record<string, unknown>>;
  /** Pickle protocol from the PROTO opcode (0/1 when absent). */
  readonly protocol: number;
  /** Every global the pickle imports, classified. */
  readonly globals: readonly PickleGlobal[];
}
