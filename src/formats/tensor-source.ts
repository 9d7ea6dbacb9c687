/**
 * What every reader (torch zip, legacy torch, safetensors) exposes: the list of tensors, read from
 * headers without touching tensor bytes, and a way to read one tensor's bytes in chunks on demand.
 */
import type { DType } from '../dtypes.js';

export type InputFormat = 'safetensors' | 'torch-zip' | 'torch-legacy';

export interface TensorInfo {
  /** Full key as it appears in the (unwrapped) state dict, e.g. `model.diffusion_model.out.2.weight`. */
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Bytes of the tensor once materialised contiguous: numel * itemsize. */
  readonly byteLength: number;
}

/** How a pickle global was classified by the safety scan. */
export type GlobalSafety = 'allowed' | 'unknown' | 'dangerous';

export interface PickleGlobal {
  module: string;
  name: string;
  /** The opcode that imported it: GLOBAL, INST or STACK_GLOBAL. */
  opcode: 'GLOBAL' | 'INST' | 'STACK_GLOBAL';
  safety: GlobalSafety;
  /** Why it is dangerous / what it is, for the report. */
  reason?: string;
  /** Number of times it is imported. */
  count: number;
}

export interface SafetyReport {
  /** Whether the file contains a pickle at all (safetensors: false). */
  hasPickle: boolean;
  globals: PickleGlobal[];
  /** True when any global is dangerous. */
  dangerous: boolean;
}

export interface ReadChunksOptions {
  /** Largest chunk yielded; defaults to limits.CHUNK_BYTES. */
  chunkBytes?: number;
}

export interface TensorSource {
  readonly path: string;
  readonly format: InputFormat;
  readonly fileSize: number;
  /** Tensors in state-dict order (safetensors: header order). */
  readonly tensors: readonly TensorInfo[];
  /** safetensors `__metadata__` (string -> string); empty for torch files. */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Plain top-level values found next to the state dict (Lightning's `global_step`, `epoch`,
   * `pytorch-lightning_version`, ...), converted to JSON-safe values.
   */
  readonly extras: Readonly<Record<string, unknown>>;
  /** How the state dict was wrapped: [] when top level, ['state_dict'] for Lightning, ... */
  readonly wrapperPath: readonly string[];
  /** Container details for `inspect` (zip prefix, pickle protocol, header bytes, ...). */
  readonly container: Readonly<Record<string, unknown>>;
  readonly safety: SafetyReport;

  /** Looks a tensor up by name. */
  get(name: string): TensorInfo | undefined;
  /**
   * Yields the tensor's bytes, contiguous C order, little-endian, in chunks of at most
   * `chunkBytes`. Views and non-contiguous strides are materialised.
   */
  readChunks(name: string, options?: ReadChunksOptions): AsyncIterable<Uint8Array>;
  /** Reads a whole tensor into memory (small tensors, tests). */
  readTensor(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}
