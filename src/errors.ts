/**
 * The one error type of ckpt2diffusers. Every failure the library reports is a CkptError with a
 * stable `code`; tests and scripts switch on the code, never on the message text.
 *
 * Message template: `<file>: <subject> <value found> (expected <bound>). <hint>`.
 */

/** Stable error codes, grouped by the question they answer for the user. */
export const ErrorCode = {
  // --- reading any file -----------------------------------------------------------------------
  /** The path does not exist or cannot be opened. */
  E_IO: 'E_IO',
  /** The first bytes match no supported format. */
  E_UNKNOWN_FORMAT: 'E_UNKNOWN_FORMAT',
  /** The file ends before a structure it declares. */
  E_TRUNCATED: 'E_TRUNCATED',
  /** The input changed (modified, grown or deleted) while it was being read. */
  E_INPUT_CHANGED: 'E_INPUT_CHANGED',
  /** A count, length or size read from the file exceeds a named limit (see limits.ts). */
  E_LIMIT: 'E_LIMIT',

  // --- zip (torch.save >= 1.6) ------------------------------------------------------------------
  E_ZIP_EOCD: 'E_ZIP_EOCD',
  E_ZIP_CENTRAL_DIR: 'E_ZIP_CENTRAL_DIR',
  E_ZIP_LOCAL_HEADER: 'E_ZIP_LOCAL_HEADER',
  E_ZIP_ZIP64: 'E_ZIP_ZIP64',
  E_ZIP_ENTRY_NAME: 'E_ZIP_ENTRY_NAME',
  E_ZIP_DUPLICATE_ENTRY: 'E_ZIP_DUPLICATE_ENTRY',
  E_ZIP_METHOD: 'E_ZIP_METHOD',
  E_ZIP_ENCRYPTED: 'E_ZIP_ENCRYPTED',
  E_ZIP_CRC: 'E_ZIP_CRC',
  E_ZIP_INFLATE: 'E_ZIP_INFLATE',
  E_ZIP_MISSING_RECORD: 'E_ZIP_MISSING_RECORD',
  E_TORCHSCRIPT: 'E_TORCHSCRIPT',
  E_TORCH_VERSION: 'E_TORCH_VERSION',

  // --- pickle ---------------------------------------------------------------------------------
  E_PICKLE_MALFORMED: 'E_PICKLE_MALFORMED',
  E_PICKLE_OPCODE: 'E_PICKLE_OPCODE',
  E_PICKLE_STACK: 'E_PICKLE_STACK',
  E_PICKLE_MEMO: 'E_PICKLE_MEMO',
  E_PICKLE_PERSISTENT_ID: 'E_PICKLE_PERSISTENT_ID',
  /** The pickle imports a global on the dangerous list; refused unless allowUnsafePickle. */
  E_UNSAFE_PICKLE: 'E_UNSAFE_PICKLE',
  /** A global the reader has no handler for was called in a place that matters. */
  E_PICKLE_UNSUPPORTED_GLOBAL: 'E_PICKLE_UNSUPPORTED_GLOBAL',
  E_PICKLE_NO_STATE_DICT: 'E_PICKLE_NO_STATE_DICT',

  // --- torch tensors --------------------------------------------------------------------------
  E_TENSOR_DTYPE: 'E_TENSOR_DTYPE',
  E_TENSOR_SHAPE: 'E_TENSOR_SHAPE',
  E_TENSOR_BOUNDS: 'E_TENSOR_BOUNDS',
  E_STORAGE_SIZE: 'E_STORAGE_SIZE',
  E_DUPLICATE_TENSOR: 'E_DUPLICATE_TENSOR',
  E_TENSOR_NOT_FOUND: 'E_TENSOR_NOT_FOUND',

  // --- legacy torch.save ----------------------------------------------------------------------
  E_LEGACY_MAGIC: 'E_LEGACY_MAGIC',
  E_LEGACY_PROTOCOL: 'E_LEGACY_PROTOCOL',
  E_LEGACY_STORAGE: 'E_LEGACY_STORAGE',
  E_TAR_FORMAT: 'E_TAR_FORMAT',
  E_BIG_ENDIAN: 'E_BIG_ENDIAN',

  // --- safetensors ----------------------------------------------------------------------------
  E_SAFETENSORS_HEADER: 'E_SAFETENSORS_HEADER',
  E_SAFETENSORS_HEADER_TOO_LARGE: 'E_SAFETENSORS_HEADER_TOO_LARGE',
  E_SAFETENSORS_DTYPE: 'E_SAFETENSORS_DTYPE',
  E_SAFETENSORS_OFFSETS: 'E_SAFETENSORS_OFFSETS',
  E_SAFETENSORS_COVERAGE: 'E_SAFETENSORS_COVERAGE',
  E_SAFETENSORS_METADATA: 'E_SAFETENSORS_METADATA',
  E_SAFETENSORS_DUPLICATE: 'E_SAFETENSORS_DUPLICATE',
  /** Our writer was fed bytes that do not match its planned layout (tensor, order or length). */
  E_SAFETENSORS_WRITE: 'E_SAFETENSORS_WRITE',

  // --- mapping and conversion -----------------------------------------------------------------
  E_MAPPING_TABLE: 'E_MAPPING_TABLE',
  E_UNKNOWN_FAMILY: 'E_UNKNOWN_FAMILY',
  E_UNMATCHED_KEYS: 'E_UNMATCHED_KEYS',
  E_TARGET_COLLISION: 'E_TARGET_COLLISION',
  E_MISSING_TENSOR: 'E_MISSING_TENSOR',
  E_SHAPE_MISMATCH: 'E_SHAPE_MISMATCH',
  E_CONFIG: 'E_CONFIG',
  E_ORIGINAL_CONFIG: 'E_ORIGINAL_CONFIG',
  E_FP16_OVERFLOW: 'E_FP16_OVERFLOW',
  E_OUTPUT_EXISTS: 'E_OUTPUT_EXISTS',
  E_TOKENIZER: 'E_TOKENIZER',
  /** The block keys of a component do not form the layout its table expects (e.g. UNet levels). */
  E_MODEL_STRUCTURE: 'E_MODEL_STRUCTURE',

  // --- ONNX export ----------------------------------------------------------------------------
  /** A Diffusers folder cannot be exported to ONNX (unsupported config, graph construction error). */
  E_ONNX_EXPORT: 'E_ONNX_EXPORT',
  /** onnxruntime-node is needed (checking or running an export) but cannot be loaded. */
  E_ONNX_RUNTIME: 'E_ONNX_RUNTIME',

  // --- writing the output -------------------------------------------------------------------
  /** The output filesystem is full (ENOSPC) or over quota (EDQUOT). */
  E_DISK_FULL: 'E_DISK_FULL',
  /** The output location cannot be written: read-only filesystem, no permission, or a missing or non-folder parent. */
  E_OUTPUT_NOT_WRITABLE: 'E_OUTPUT_NOT_WRITABLE',
  /** The work was stopped by a signal (SIGINT/SIGTERM) or an AbortSignal before it completed. */
  E_INTERRUPTED: 'E_INTERRUPTED',

  // --- test generation (src/generate) -----------------------------------------------------------
  /** A scheduler_config.json names a scheduler, option or value the generator does not support. */
  E_SCHEDULER: 'E_SCHEDULER',
  /** A generation request or an injected model's output does not fit the pipeline (shape, size, length). */
  E_PIPELINE: 'E_PIPELINE',
  /** An image file cannot be read or written as PNG. */
  E_IMAGE: 'E_IMAGE',
  /** The folder's pipeline (SDXL, inpainting, other families) or the requested mode is not supported by the test generation. */
  E_GENERATE_UNSUPPORTED: 'E_GENERATE_UNSUPPORTED',
  /**
   * The folder's components do not fit together for a generation: the text encoders' widths do not
   * add up to the UNet's cross_attention_dim, or the tokenizer gives ids beyond a text encoder's
   * vocabulary.
   */
  E_GENERATE_INCONSISTENT: 'E_GENERATE_INCONSISTENT',

  // --- usage ----------------------------------------------------------------------------------
  E_USAGE: 'E_USAGE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CkptErrorDetails {
  /** The file the error is about, when there is one. */
  file?: string;
  /** A hint on what to do about it. */
  hint?: string;
  /** Structured facts for --json output and tests (found/expected values, key lists, ...). */
  data?: Record<string, unknown>;
  cause?: unknown;
}

export class CkptError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly hint?: string;
  readonly data?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: CkptErrorDetails = {}) {
    const prefix = details.file ? `${details.file}: ` : '';
    const suffix = details.hint ? ` ${details.hint}` : '';
    super(prefix + message + suffix, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CkptError';
    this.code = code;
    this.file = details.file;
    this.hint = details.hint;
    this.data = details.data;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, file: this.file, hint: this.hint, data: this.data };
  }
}

export function isCkptError(e: unknown): e is CkptError {
  return e instanceof CkptError;
}

/** Throws a CkptError: `fail(code, file, message)` reads like the message template. */
export function fail(code: ErrorCode, file: string | undefined, message: string, extra: Omit<CkptErrorDetails, 'file'> = {}): never {
  throw new CkptError(code, message, { ...extra, file });
}
