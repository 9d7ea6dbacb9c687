/**
 * safetensors reader and streaming writer.
 *
 * Spec: huggingface/safetensors README "Format"; docs/formats.md §5.1 (layout), §5.2 (what the
 * reference writer produces), §5.3 (validation rules), §5.4 (writer rules).
 *
 *   bytes 0..8     N, u64 little-endian: byte length of the header
 *   bytes 8..8+N   UTF-8 JSON object, padded with spaces
 *   bytes 8+N..    data buffer; every `data_offsets` is relative to its start, and the tensors
 *                  must cover it exactly (no holes, no trailing bytes)
 *
 * The reader never loads tensor bytes up front: `readChunks` reads them positionally on demand.
 * The writer reproduces the reference writer byte for byte (tensor order, compact JSON, space
 * padding to a multiple of 8) and accepts tensor bytes chunk by chunk, so memory stays bounded.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { DTYPES, dtypeBytes, isDType, type DType } from '../dtypes.js';
import { CkptError, ErrorCode, fail } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import { CHUNK_BYTES, MAX_SAFETENSORS_HEADER_BYTES } from '../limits.js';
import {
  SAFETENSORS_DTYPES,
  parseSafetensorsHeader,
  type ParsedSafetensorsHeader,
  type SafetensorsTensorEntry,
} from './safetensors-header.js';
import type { ReadChunksOptions, SafetyReport, TensorInfo, TensorSource } from './tensor-source.js';
import { compareCodePoints } from './string-order.js';

export { SAFETENSORS_DTYPES, isSafetensorsDType } from './safetensors-header.js';
export type { SafetensorsDTypeName, SafetensorsTensorEntry } from './safetensors-header.js';

/** Size of the little-endian u64 that precedes the header. */
const LENGTH_PREFIX_BYTES = 8;

/** The header of a safetensors file, validated against the whole file. */
export interface SafetensorsHeader extends ParsedSafetensorsHeader {
  readonly path: string;
  readonly fileSize: number;
  /** N: byte length of the JSON header, padding included. */
  readonly headerBytes: number;
  /** 8 + N: file offset of the data buffer. */
  readonly dataStart: number;
}

// ------------------------------------------------------------------------------------------------
// Reader
// ------------------------------------------------------------------------------------------------

/**
 * Reads and validates the header of a safetensors file (formats.md §5.3), including that the
 * tensors cover the data buffer exactly. Reads only the first 8 + N bytes.
 */
export async function readSafetensorsHeader(file: FileSource): Promise<SafetensorsHeader> {
  const headerBytes = await readHeaderLength(file);
  const raw = await file.read(LENGTH_PREFIX_BYTES, headerBytes, 'safetensors header');
  const parsed = parseSafetensorsHeader(decodeUtf8(raw, file.path), file.path);
  const dataStart = LENGTH_PREFIX_BYTES + headerBytes;
  checkCoverage(parsed.dataBytes, file.size - dataStart, file.path);
  return { ...parsed, path: file.path, fileSize: file.size, headerBytes, dataStart };
}

/** Reads N and checks it against the 100 MB limit and the file size. */
async function readHeaderLength(file: FileSource): Promise<number> {
  if (file.size < LENGTH_PREFIX_BYTES) {
    fail(ErrorCode.E_TRUNCATED, file.path, `file is ${file.size} bytes (expected at least 8 for the safetensors header length).`, {
      data: { found: file.size, expected: LENGTH_PREFIX_BYTES },
    });
  }
  const prefix = await file.read(0, LENGTH_PREFIX_BYTES, 'safetensors header length');
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) {
    fail(
      ErrorCode.E_SAFETENSORS_HEADER_TOO_LARGE,
      file.path,
      `safetensors header length ${n} exceeds ${MAX_SAFETENSORS_HEADER_BYTES} bytes (the reference MAX_HEADER_SIZE).`,
      { data: { found: n.toString(), expected: MAX_SAFETENSORS_HEADER_BYTES } },
    );
  }
  const headerBytes = Number(n);
  if (LENGTH_PREFIX_BYTES + headerBytes > file.size) {
    fail(
      ErrorCode.E_TRUNCATED,
      file.path,
      `safetensors header of ${headerBytes} bytes ends at byte ${LENGTH_PREFIX_BYTES + headerBytes}, past the end of the file (${file.size} bytes).`,
      { data: { found: file.size, expected: LENGTH_PREFIX_BYTES + headerBytes } },
    );
  }
  return headerBytes;
}

/** Strict UTF-8; a BOM is kept (and then rejected by the JSON parser) as serde does. */
function decodeUtf8(bytes: Uint8Array, path: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    return fail(ErrorCode.E_SAFETENSORS_HEADER, path, 'safetensors header is not valid UTF-8.', { cause: e });
  }
}

/** The data buffer must be exactly covered (reference: `MetadataIncompleteBuffer`). */
function checkCoverage(declared: number, actual: number, path: string): void {
  if (declared > actual) {
    fail(
      ErrorCode.E_TRUNCATED,
      path,
      `safetensors tensors end at data byte ${declared}, past the end of the data buffer (${actual} bytes). The file is truncated.`,
      { data: { found: actual, expected: declared } },
    );
  }
  if (declared < actual) {
    fail(
      ErrorCode.E_SAFETENSORS_COVERAGE,
      path,
      `safetensors data buffer is ${actual} bytes but the tensors cover only ${declared} (expected no trailing bytes).`,
      { data: { found: actual, expected: declared } },
    );
  }
}

/**
 * Opens a safetensors file as a TensorSource. On success the source owns `file` and its
 * `close()` closes it; on failure the caller still owns (and closes) `file`. Tensors with a valid safetensors dtype that ckpt2diffusers does not
 * convert (U16/U32/U64, F8, F4, F6, C64: never found in Stable Diffusion checkpoints) are
 * refused with E_SAFETENSORS_DTYPE naming the dtype; `readSafetensorsHeader` still lists them.
 */
export async function openSafetensors(file: FileSource): Promise<TensorSource> {
  const header = await readSafetensorsHeader(file);
  const tensors = header.tensors.map((t) => toTensorInfo(t, file.path));
  return new SafetensorsSource(file, header, tensors);
}

function toTensorInfo(t: SafetensorsTensorEntry, path: string): TensorInfo {
  if (!isDType(t.dtype)) {
    fail(
      ErrorCode.E_SAFETENSORS_DTYPE,
      path,
      `tensor "${t.name}" has dtype ${t.dtype}, a valid safetensors dtype that ckpt2diffusers does not convert (supported: ${Object.keys(DTYPES).join(' ')}).`,
      { data: { tensor: t.name, found: t.dtype } },
    );
  }
  return { name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength };
}

const NO_PICKLE: SafetyReport = { hasPickle: false, globals: [], dangerous: false };

class SafetensorsSource implements TensorSource {
  readonly format = 'safetensors' as const;
  readonly path: string;
  readonly fileSize: number;
  readonly metadata: Readonly<Record<string, string>>;
  readonly extras: Readonly<Record<string, unknown>> = {};
  readonly wrapperPath: readonly string[] = [];
  readonly container: Readonly<Record<string, unknown>>;
  readonly safety: SafetyReport = NO_PICKLE;
  private readonly byName = new Map<string, { info: TensorInfo; begin: number }>();

  constructor(
    private readonly file: FileSource,
    private readonly header: SafetensorsHeader,
    readonly tensors: readonly TensorInfo[],
  ) {
    this.path = file.path;
    this.fileSize = file.size;
    this.metadata = header.metadata ?? {};
    this.container = { headerBytes: header.headerBytes, dataStart: header.dataStart, tensorCount: tensors.length };
    tensors.forEach((info, i) => this.byName.set(info.name, { info, begin: header.tensors[i].dataOffsets[0] }));
  }

  get(name: string): TensorInfo | undefined {
    return this.byName.get(name)?.info;
  }

  /** Positional reads of at most `chunkBytes`, each a whole number of elements. */
  async *readChunks(name: string, options: ReadChunksOptions = {}): AsyncIterable<Uint8Array> {
    const { info, begin } = this.lookup(name);
    const itemsize = dtypeBytes(info.dtype);
    const requested = options.chunkBytes ?? CHUNK_BYTES;
    const chunk = Math.max(itemsize, Math.floor(requested / itemsize) * itemsize);
    const start = this.header.dataStart + begin;
    for (let done = 0; done < info.byteLength; done += chunk) {
      const length = Math.min(chunk, info.byteLength - done);
      yield await this.file.read(start + done, length, `tensor "${name}"`);
    }
  }

  async readTensor(name: string): Promise<Uint8Array> {
    const { info, begin } = this.lookup(name);
    return this.file.read(this.header.dataStart + begin, info.byteLength, `tensor "${name}"`);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  private lookup(name: string): { info: TensorInfo; begin: number } {
    const found = this.byName.get(name);
    if (!found) fail(ErrorCode.E_TENSOR_NOT_FOUND, this.path, `no tensor named "${name}" in this safetensors file.`, { data: { tensor: name } });
    return found;
  }
}

// ------------------------------------------------------------------------------------------------
// Writer
// ------------------------------------------------------------------------------------------------

export interface SafetensorsWriteEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface SafetensorsLayoutEntry extends SafetensorsWriteEntry {
  /** [begin, end) relative to the data buffer. */
  readonly dataOffsets: readonly [number, number];
  readonly byteLength: number;
}

export interface SafetensorsLayout {
  /** The first 8 + N bytes of the file: length prefix, JSON header, space padding. */
  readonly prefix: Uint8Array;
  /** N: JSON header length including padding (a multiple of 8). */
  readonly headerBytes: number;
  /** 8 + N. */
  readonly dataStart: number;
  /** Tensors in data order (the order their bytes must be written). */
  readonly tensors: readonly SafetensorsLayoutEntry[];
  /** Size of the finished file. */
  readonly totalBytes: number;
}

/**
 * Plans a file exactly as the reference writer does (`tensor.rs` `prepare`, formats.md §5.2):
 * tensors sorted by descending dtype rank (the crate's `enum Dtype` order, which follows
 * alignment) then by name, laid out back to back; compact JSON with `__metadata__` first (omitted
 * when `metadata` is null), then tensors in data order; padded with spaces to a multiple of 8.
 * Metadata keys keep the caller's order (the crate stores them in a HashMap).
 */
export function planSafetensorsLayout(
  entries: readonly SafetensorsWriteEntry[],
  metadata: Readonly<Record<string, string>> | null,
): SafetensorsLayout {
  checkWriteEntries(entries, metadata);
  const sorted = [...entries].sort(compareForLayout);
  let offset = 0;
  const tensors = sorted.map((e): SafetensorsLayoutEntry => {
    const byteLength = writeByteLength(e);
    const entry = { name: e.name, dtype: e.dtype, shape: [...e.shape], dataOffsets: [offset, offset + byteLength] as const, byteLength };
    offset += byteLength;
    return entry;
  });
  const json = new TextEncoder().encode(headerJson(tensors, metadata));
  const headerBytes = Math.ceil(json.length / 8) * 8;
  if (headerBytes > MAX_SAFETENSORS_HEADER_BYTES) {
    throw new CkptError(
      ErrorCode.E_SAFETENSORS_HEADER_TOO_LARGE,
      `safetensors header would be ${headerBytes} bytes (expected at most ${MAX_SAFETENSORS_HEADER_BYTES}, the readers' limit).`,
    );
  }
  const prefix = new Uint8Array(LENGTH_PREFIX_BYTES + headerBytes).fill(0x20);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes), true);
  prefix.set(json, LENGTH_PREFIX_BYTES);
  const dataStart = LENGTH_PREFIX_BYTES + headerBytes;
  return { prefix, headerBytes, dataStart, tensors, totalBytes: dataStart + offset };
}

/** Descending dtype rank, then name in code point order (Rust compares UTF-8 bytes). */
function compareForLayout(a: SafetensorsWriteEntry, b: SafetensorsWriteEntry): number {
  const byRank = SAFETENSORS_DTYPES[b.dtype].rank - SAFETENSORS_DTYPES[a.dtype].rank;
  return byRank !== 0 ? byRank : compareCodePoints(a.name, b.name);
}


/**
 * serde_json's compact output. `JSON.stringify` escapes strings the same way (`\"`, `\\`, the
 * short escapes \b \f \n \r \t, other control characters as lower-case `\u00xx`, nothing else),
 * and lone surrogates never reach it (checkWriteEntries refuses them).
 */
function headerJson(tensors: readonly SafetensorsLayoutEntry[], metadata: Readonly<Record<string, string>> | null): string {
  const parts: string[] = [];
  if (metadata !== null) {
    const items = Object.keys(metadata).map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
    parts.push(`"__metadata__":{${items.join(',')}}`);
  }
  for (const t of tensors) {
    const info = `{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${t.dataOffsets[0]},${t.dataOffsets[1]}]}`;
    parts.push(`${JSON.stringify(t.name)}:${info}`);
  }
  return `{${parts.join(',')}}`;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkWriteEntries(entries: readonly SafetensorsWriteEntry[], metadata: Readonly<Record<string, string>> | null): void {
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.name)) writeError(`tensor "${e.name}" is listed twice (expected unique names).`, ErrorCode.E_SAFETENSORS_DUPLICATE);
    seen.add(e.name);
    if (e.name === '__metadata__') writeError('a tensor cannot be named "__metadata__" (reserved by the format).');
    if (LONE_SURROGATE.test(e.name)) writeError(`tensor name ${JSON.stringify(e.name)} holds an unpaired surrogate (not encodable as UTF-8).`);
    if (!isDType(e.dtype)) writeError(`tensor "${e.name}" has dtype ${String(e.dtype)} (expected one of ${Object.keys(DTYPES).join(' ')}).`, ErrorCode.E_SAFETENSORS_DTYPE);
  }
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== 'string' || LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
      writeError(`__metadata__ value of "${k}" is ${typeof v} (expected a well-formed string).`, ErrorCode.E_SAFETENSORS_METADATA);
    }
  }
}

/** numel * itemsize of a tensor to write; shape dims must be non-negative safe integers. */
function writeByteLength(e: SafetensorsWriteEntry): number {
  let n = dtypeBytes(e.dtype);
  for (const d of e.shape) {
    n *= d;
    if (!Number.isSafeInteger(d) || d < 0 || !Number.isSafeInteger(n)) {
      writeError(`tensor "${e.name}" has shape [${e.shape.join(', ')}] (expected non-negative integers with a byte size below 2^53).`, ErrorCode.E_TENSOR_SHAPE);
    }
  }
  return n;
}

function writeError(message: string, code: ErrorCode = ErrorCode.E_SAFETENSORS_WRITE, file?: string): never {
  return fail(code, file, message);
}

/**
 * Writes one safetensors file from a layout: the header at `create`, then each tensor's bytes in
 * layout order through `writeChunk` (positional writes, nothing buffered beyond the caller's
 * chunk). It checks that every tensor receives exactly its byte length, in order; `finish`
 * fsyncs and closes. On any error call `abort` to close and remove the partial file.
 */
export class SafetensorsWriter {
  private readonly indexByName: Map<string, number>;
  private current = 0;
  private written = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    readonly layout: SafetensorsLayout,
    private readonly handle: FileHandle,
  ) {
    this.indexByName = new Map(layout.tensors.map((t, i) => [t.name, i]));
  }

  /** Creates (or truncates) `path` and writes the header. */
  static async create(path: string, layout: SafetensorsLayout): Promise<SafetensorsWriter> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'w');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CkptError(ErrorCode.E_IO, `cannot create (${err.code ?? err.message})`, { file: path, cause: e });
    }
    const writer = new SafetensorsWriter(path, layout, handle);
    try {
      await writer.writeAt(layout.prefix, 0);
    } catch (e) {
      await writer.abort();
      throw e;
    }
    return writer;
  }

  /** The first tensor still waiting for bytes (undefined once every tensor is complete). */
  get expectedTensor(): string | undefined {
    const rest = this.layout.tensors.slice(this.current);
    return rest.find((t, i) => (i === 0 ? this.written : 0) < t.byteLength)?.name;
  }

  /** Appends `bytes` to tensor `name`, which must be the current tensor or the next one. */
  async writeChunk(name: string, bytes: Uint8Array): Promise<void> {
    this.checkOpen();
    this.moveTo(name);
    const t = this.layout.tensors[this.current];
    if (this.written + bytes.length > t.byteLength) {
      this.misuse(`tensor "${name}" received ${this.written + bytes.length} bytes (expected ${t.byteLength}).`);
    }
    await this.writeAt(bytes, this.layout.dataStart + t.dataOffsets[0] + this.written);
    this.written += bytes.length;
  }

  /** Writes a whole tensor from one buffer or from chunks. */
  async writeTensor(name: string, data: Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
    this.checkOpen();
    this.moveTo(name);
    if (data instanceof Uint8Array) await this.writeChunk(name, data);
    else for await (const chunk of data) await this.writeChunk(name, chunk);
    const t = this.layout.tensors[this.current];
    if (this.written !== t.byteLength) this.misuse(`tensor "${name}" received ${this.written} bytes (expected ${t.byteLength}).`);
  }

  /** Checks that every tensor is complete, then fsyncs and closes the file. */
  async finish(): Promise<void> {
    this.checkOpen();
    const missing = this.layout.tensors.slice(this.current).find((t, i) => (i === 0 ? this.written : 0) !== t.byteLength);
    if (missing) {
      const got = missing === this.layout.tensors[this.current] ? this.written : 0;
      this.misuse(`finished before tensor "${missing.name}" was complete (${got} of ${missing.byteLength} bytes).`);
    }
    this.closed = true;
    try {
      await this.handle.sync();
      await this.handle.close();
    } catch (e) {
      await this.handle.close().catch(() => undefined);
      const err = e as NodeJS.ErrnoException;
      throw new CkptError(ErrorCode.E_IO, `cannot flush to disk (${err.code ?? err.message})`, { file: this.path, cause: e });
    }
  }

  /** Closes the file and removes it (for error paths; safe to call twice). */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
    await rm(this.path, { force: true });
  }

  /** Advances past complete tensors to `name`; anything else is out of order. */
  private moveTo(name: string): void {
    const target = this.indexByName.get(name);
    if (target === undefined) this.misuse(`tensor "${name}" is not in the planned layout.`);
    if (target === this.current) return;
    if (target < this.current) this.misuse(`tensor "${name}" was already written (expected "${this.layout.tensors[this.current].name}").`);
    for (let i = this.current; i < target; i++) {
      const got = i === this.current ? this.written : 0;
      const t = this.layout.tensors[i];
      if (got !== t.byteLength) {
        this.misuse(`tensor "${name}" started before tensor "${t.name}" was complete (${got} of ${t.byteLength} bytes).`);
      }
    }
    this.current = target;
    this.written = 0;
  }

  private async writeAt(bytes: Uint8Array, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < bytes.length) {
        const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, position + done);
        done += bytesWritten;
      }
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CkptError(ErrorCode.E_IO, `write failed at byte ${position + done} (${err.code ?? err.message})`, { file: this.path, cause: e });
    }
  }

  private checkOpen(): void {
    if (this.closed) this.misuse('the writer is already finished or aborted.');
  }

  private misuse(message: string): never {
    return writeError(message, ErrorCode.E_SAFETENSORS_WRITE, this.path);
  }
}

export interface SafetensorsTensorData extends SafetensorsWriteEntry {
  readonly data: Uint8Array;
}

/**
 * Writes a small safetensors file whose tensors are all in memory (tests, tiny components).
 * Metadata defaults to `{"format":"pt"}`, which transformers requires (formats.md §5.1).
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: readonly SafetensorsTensorData[],
  metadata: Readonly<Record<string, string>> | null = { format: 'pt' },
): Promise<SafetensorsLayout> {
  const layout = planSafetensorsLayout(tensors, metadata);
  const byName = new Map(tensors.map((t) => [t.name, t.data]));
  const writer = await SafetensorsWriter.create(path, layout);
  try {
    for (const t of layout.tensors) await writer.writeTensor(t.name, byName.get(t.name) as Uint8Array);
    await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return layout;
}
