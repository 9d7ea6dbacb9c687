/**
 * Reader for legacy `torch.save` files (`_use_new_zipfile_serialization=False`, the default
 * before torch 1.6): five pickles back to back — magic number, protocol version, sys_info, the
 * object, the list of storage keys — then, for every key in list order, an int64 LE element count
 * and the storage's raw bytes. There is no index: the storage section is walked header by header
 * (8-byte positional reads; storage bytes are never read until a tensor is asked for).
 *
 * Spec: docs/formats.md §3. Reference: PyTorch `torch/serialization.py` (`_legacy_save`,
 * `_legacy_load`, `MAGIC_NUMBER`, `PROTOCOL_VERSION`), `torch/csrc/generic/serialization.cpp`
 * (`writeFileRaw` / `readFileRaw`: the count and the element bytes are always written
 * little-endian, whatever sys_info's `little_endian` says about the writing machine).
 */
import { dtypeBytes } from '../dtypes.js';
import { CkptError, ErrorCode, fail, isCkptError } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import { CHUNK_BYTES, MAX_PICKLE_BYTES, MAX_TENSORS } from '../limits.js';
import { materializeChunks, validateTensorGeometry } from './materialize.js';
import { interpretTorchPickle, readPlainPickle } from './pickle.js';
import { mergeGlobals, scanPickle, type PickleScan } from './pickle-scan.js';
import { PickledTensorSource } from './pickled-source.js';
import type { PickleGlobal, ReadChunksOptions, TensorSource } from './tensor-source.js';
import type { PickledTensor, StorageRef, TorchPickleResult } from './torch-types.js';

export interface TorchLegacyOptions {
  /** Accept pickles importing dangerous globals (still never executed); see openCheckpoint. */
  allowUnsafePickle?: boolean;
}

/** `torch.serialization.MAGIC_NUMBER` 0x1950A86A20F9469CFC6C as LONG1 bytes (little-endian). */
const MAGIC_LONG1 = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const STOP = 0x2e;
/** `torch.serialization.PROTOCOL_VERSION`. */
const LEGACY_PROTOCOL_VERSION = 1001;
/** First window read for a pickle; grown ×4 up to MAX_PICKLE_BYTES until its STOP is inside. */
const FIRST_WINDOW_BYTES = 64 * 1024;

export interface TorchLegacyContainer {
  pickleProtocol: number;
  protocolVersion: number;
  littleEndian: boolean;
  typeSizes: Record<string, number>;
  storageCount: number;
  /** Offset of the first storage header. */
  storageSectionOffset: number;
}

/** Where one root storage's bytes lie in the file. */
interface StorageSpan {
  readonly ref: StorageRef;
  /** Offset of the first element (just past the int64 count). */
  readonly dataOffset: number;
  readonly byteLength: number;
}

interface Located {
  readonly tensor: PickledTensor;
  /** File offset of the tensor's storage (legacy views start inside their root storage). */
  readonly storageOffset: number;
  readonly storageBytes: number;
}

export async function openTorchLegacy(file: FileSource, opts: TorchLegacyOptions = {}): Promise<TensorSource> {
  const allowUnsafePickle = opts.allowUnsafePickle ?? false;
  const magic = await readPickleWindow(file, 0, 'magic-number pickle');
  checkMagic(file, magic.bytes);

  const version = await readPickleWindow(file, magic.end, 'protocol-version pickle');
  const protocolVersion = readPlain(file, version, allowUnsafePickle);
  if (protocolVersion !== LEGACY_PROTOCOL_VERSION) {
    fail(ErrorCode.E_LEGACY_PROTOCOL, file.path, `legacy protocol version is ${String(protocolVersion)} (expected ${LEGACY_PROTOCOL_VERSION}).`, {
      data: { protocolVersion },
    });
  }

  const sys = await readPickleWindow(file, version.end, 'sys_info pickle');
  const sysInfo = parseSysInfo(file, readPlain(file, sys, allowUnsafePickle));

  const object = await readPickleWindow(file, sys.end, 'object pickle');
  const { result, storages } = inPickle(file, 'object pickle', object.start, () =>
    interpretTorchPickle(object.bytes, { file: file.path, container: 'legacy', allowUnsafePickle }),
  );

  const keyList = await readPickleWindow(file, object.end, 'storage-key pickle');
  const keys = parseKeyList(file, readPlain(file, keyList, allowUnsafePickle));

  const spans = await walkStorageSection(file, keyList.end, keys, storages);
  const located = locateTensors(file, result, spans);
  const container: TorchLegacyContainer = {
    pickleProtocol: result.protocol,
    protocolVersion,
    littleEndian: sysInfo.littleEndian,
    typeSizes: sysInfo.typeSizes,
    storageCount: keys.length,
    storageSectionOffset: keyList.end,
  };
  const globals = mergeGlobals([magic.scan, version.scan, sys.scan, object.scan, keyList.scan].flatMap((scan) => scan.globals));
  return new TorchLegacySource(file, located, result, container, globals);
}

// ------------------------------------------------------------------------------------------------
// The five pickles.
// ------------------------------------------------------------------------------------------------

interface PickleWindow {
  /** Which of the five pickles it is, for messages. */
  readonly what: string;
  /** File offset of the pickle's first byte. */
  readonly start: number;
  /** File offset just past its STOP. */
  readonly end: number;
  /** Exactly the pickle's bytes. */
  readonly bytes: Uint8Array;
  readonly scan: PickleScan;
}

/** Runs `fn`, naming the pickle and its file offset in any CkptError it throws. */
function inPickle<T>(file: FileSource, what: string, start: number, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!isCkptError(e)) throw e;
    const prefix = `${file.path}: `;
    const message = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
    const bare = e.hint && message.endsWith(` ${e.hint}`) ? message.slice(0, -(e.hint.length + 1)) : message;
    throw new CkptError(e.code, `${what} (at byte ${start}): ${bare}`, {
      file: file.path,
      hint: e.hint,
      data: { ...e.data, pickleOffset: start },
      cause: e,
    });
  }
}

/**
 * Finds the pickle starting at `start`: reads a window, scans to STOP, and grows the window while
 * the scan runs off its end. The exact end is what locates the next pickle.
 */
async function readPickleWindow(file: FileSource, start: number, what: string): Promise<PickleWindow> {
  const available = file.size - start;
  if (available <= 0) {
    fail(ErrorCode.E_TRUNCATED, file.path, `${what} expected at byte ${start}, but the file ends there (${file.size} bytes).`, { data: { position: start } });
  }
  let size = Math.min(FIRST_WINDOW_BYTES, available, MAX_PICKLE_BYTES);
  for (;;) {
    const window = await file.read(start, size, what);
    try {
      const scan = scanPickle(window, file.path);
      return { what, start, end: start + scan.end, bytes: window.subarray(0, scan.end), scan };
    } catch (e) {
      const ranOff = isCkptError(e) && e.code === ErrorCode.E_TRUNCATED;
      if (!ranOff || size >= available) return inPickle(file, what, start, () => { throw e; });
      if (size >= MAX_PICKLE_BYTES) {
        fail(ErrorCode.E_LIMIT, file.path, `${what} at byte ${start} is longer than ${MAX_PICKLE_BYTES} bytes (MAX_PICKLE_BYTES).`, {
          data: { position: start, limit: MAX_PICKLE_BYTES },
        });
      }
      size = Math.min(size * 4, available, MAX_PICKLE_BYTES);
    }
  }
}

function readPlain(file: FileSource, w: PickleWindow, allowUnsafePickle: boolean): unknown {
  return inPickle(file, w.what, w.start, () => readPlainPickle(w.bytes, { file: file.path, allowUnsafePickle }).value);
}

/** PROTO (2–5), an optional FRAME, LONG1 magic, STOP — nothing else. */
function checkMagic(file: FileSource, bytes: Uint8Array): void {
  const body = bytes.subarray(bytes.length - MAGIC_LONG1.length - 1);
  const headerLength = bytes.length - MAGIC_LONG1.length - 1;
  const protocol = bytes[1];
  const ok =
    bytes[0] === 0x80 &&
    protocol >= 2 &&
    protocol <= 5 &&
    (headerLength === 2 || (headerLength === 11 && bytes[2] === 0x95)) &&
    MAGIC_LONG1.every((b, i) => body[i] === b) &&
    body[MAGIC_LONG1.length] === STOP;
  if (!ok) {
    fail(ErrorCode.E_LEGACY_MAGIC, file.path, `first pickle is not torch's magic number 0x1950A86A20F9469CFC6C (found ${bytes.length} bytes starting ${hex(bytes.subarray(0, 16))}).`);
  }
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');
}

function parseSysInfo(file: FileSource, v: unknown): { littleEndian: boolean; typeSizes: Record<string, number> } {
  if (!(v instanceof Map)) fail(ErrorCode.E_LEGACY_PROTOCOL, file.path, 'sys_info pickle is not a dict (expected protocol_version, little_endian, type_sizes).');
  const little = v.get('little_endian');
  if (little !== undefined && typeof little !== 'boolean') {
    fail(ErrorCode.E_LEGACY_PROTOCOL, file.path, `sys_info little_endian is ${String(little)} (expected True or False).`);
  }
  const typeSizes: Record<string, number> = {};
  const sizes = v.get('type_sizes');
  if (sizes instanceof Map) {
    for (const [k, n] of sizes) if (typeof k === 'string' && typeof n === 'number') typeSizes[k] = n;
  }
  return { littleEndian: little ?? true, typeSizes };
}

function parseKeyList(file: FileSource, v: unknown): string[] {
  if (!Array.isArray(v) || !v.every((k) => typeof k === 'string')) {
    fail(ErrorCode.E_LEGACY_STORAGE, file.path, 'storage-key pickle is not a list of strings.');
  }
  if (v.length > MAX_TENSORS) {
    fail(ErrorCode.E_LIMIT, file.path, `storage-key list has ${v.length} keys (expected at most MAX_TENSORS = ${MAX_TENSORS}).`);
  }
  if (new Set(v).size !== v.length) fail(ErrorCode.E_LEGACY_STORAGE, file.path, 'storage-key list names a storage twice.');
  return v as string[];
}

// ------------------------------------------------------------------------------------------------
// The storage section.
// ------------------------------------------------------------------------------------------------

/** Root storages by key: a view's persistent id names its root, and all must agree. */
function rootStorages(file: FileSource, storages: readonly StorageRef[]): Map<string, StorageRef> {
  const roots = new Map<string, StorageRef>();
  for (const s of storages) {
    const seen = roots.get(s.key);
    if (seen && (seen.dtype !== s.dtype || seen.numel !== s.numel)) {
      fail(ErrorCode.E_LEGACY_STORAGE, file.path, `storage "${s.key}" is declared as ${seen.dtype}×${seen.numel} and as ${s.dtype}×${s.numel}.`);
    }
    roots.set(s.key, { key: s.key, dtype: s.dtype, numel: s.numel, location: s.location });
  }
  return roots;
}

/** Walks `count, bytes` records in key-list order with 8-byte reads, checking each against the pickle. */
async function walkStorageSection(file: FileSource, start: number, keys: readonly string[], storages: readonly StorageRef[]): Promise<Map<string, StorageSpan>> {
  const roots = rootStorages(file, storages);
  const spans = new Map<string, StorageSpan>();
  let pos = start;
  for (const key of keys) {
    const ref = roots.get(key);
    if (ref === undefined) {
      fail(ErrorCode.E_LEGACY_STORAGE, file.path, `storage-key list names "${key}", which the object pickle never references (its element size is unknown).`, { data: { key } });
    }
    const count = await readCount(file, pos, key);
    if (count !== ref.numel) {
      fail(ErrorCode.E_LEGACY_STORAGE, file.path, `storage "${key}" at byte ${pos} holds ${count} elements (expected ${ref.numel} as the pickle declares).`, {
        data: { key, position: pos, count, expected: ref.numel },
      });
    }
    const byteLength = count * dtypeBytes(ref.dtype);
    const dataOffset = pos + 8;
    if (dataOffset + byteLength > file.size) {
      fail(ErrorCode.E_TRUNCATED, file.path, `storage "${key}" spans bytes ${dataOffset}..${dataOffset + byteLength}, past the end of the file (${file.size} bytes). The file is truncated or corrupt.`, {
        data: { key, position: dataOffset, length: byteLength, size: file.size },
      });
    }
    spans.set(key, { ref, dataOffset, byteLength });
    pos = dataOffset + byteLength;
  }
  for (const key of roots.keys()) {
    if (!spans.has(key)) fail(ErrorCode.E_LEGACY_STORAGE, file.path, `storage "${key}" is referenced by the pickle but missing from the storage-key list.`, { data: { key } });
  }
  return spans;
}

async function readCount(file: FileSource, pos: number, key: string): Promise<number> {
  const b = await file.read(pos, 8, `element count of storage "${key}"`);
  const count = new DataView(b.buffer, b.byteOffset, 8).getBigInt64(0, true);
  if (count < 0n || count > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(ErrorCode.E_LEGACY_STORAGE, file.path, `storage "${key}" at byte ${pos} declares ${count} elements (expected a non-negative count).`, { data: { key, position: pos } });
  }
  return Number(count);
}

function locateTensors(file: FileSource, result: TorchPickleResult, spans: Map<string, StorageSpan>): Map<string, Located> {
  const located = new Map<string, Located>();
  for (const tensor of result.tensors) {
    if (located.has(tensor.name)) fail(ErrorCode.E_DUPLICATE_TENSOR, file.path, `tensor "${tensor.name}" appears twice in the state dict.`);
    const span = spans.get(tensor.storage.key);
    if (span === undefined) fail(ErrorCode.E_LEGACY_STORAGE, file.path, `tensor "${tensor.name}" uses storage "${tensor.storage.key}", which the file does not hold.`);
    const itemsize = dtypeBytes(tensor.storage.dtype);
    const view = tensor.storage.view;
    const storageOffset = span.dataOffset + (view ? view.offset * itemsize : 0);
    const storageBytes = view ? view.size * itemsize : span.byteLength;
    validateTensorGeometry(tensor, storageBytes, file.path);
    located.set(tensor.name, { tensor, storageOffset, storageBytes });
  }
  return located;
}


// ------------------------------------------------------------------------------------------------
// The TensorSource.
// ------------------------------------------------------------------------------------------------

class TorchLegacySource extends PickledTensorSource<Located> {
  readonly format = 'torch-legacy' as const;

  constructor(file: FileSource, located: Map<string, Located>, result: TorchPickleResult, container: TorchLegacyContainer, globals: PickleGlobal[]) {
    super(file, located, result, container, globals);
  }

  /** Storage bytes are little-endian on disk whatever machine wrote them (writeFileRaw), so no swap. */
  async *readChunks(name: string, options: ReadChunksOptions = {}): AsyncIterable<Uint8Array> {
    const { tensor, storageOffset, storageBytes } = this.lookup(name);
    const readStorage = (at: number, n: number): Promise<Uint8Array> => this.file.read(storageOffset + at, n, `storage of tensor "${name}"`);
    yield* materializeChunks(readStorage, tensor, storageBytes, options.chunkBytes ?? CHUNK_BYTES, this.path);
  }
}
