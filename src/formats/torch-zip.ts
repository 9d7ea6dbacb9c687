/**
 * Reader for `torch.save` zip checkpoints (torch >= 1.6): the zip directory (zip.ts) plus the
 * restricted unpickler (pickle.ts) give tensor descriptors; tensor bytes are read on demand from
 * the `<prefix>/data/<key>` records.
 *
 * Spec: docs/formats.md §2.1 (records and prefix), §2.6 (storages), §2.8 (views), §2.10 (checklist).
 * Reference: PyTorch `caffe2/serialize/inline_container.cc` (`PytorchStreamReader::init`),
 * `torch/serialization.py` (`_load`, `_is_torchscript_zip`).
 */
import { dtypeBytes } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import { CHUNK_BYTES, MAX_PICKLE_BYTES, MAX_SMALL_RECORD_BYTES, MAX_TENSORS } from '../limits.js';
import { byteSwapInPlace, materializeChunks, validateTensorGeometry } from './materialize.js';
import { readTorchPickle } from './pickle.js';
import { PickledTensorSource } from './pickled-source.js';
import type { ReadChunksOptions, TensorSource } from './tensor-source.js';
import type { PickledTensor, TorchPickleResult } from './torch-types.js';
import { openEntryReader, readSmallEntry, readZipDirectory, ZIP_METHOD_DEFLATE, type ZipDirectory, type ZipEntry } from './zip.js';

export interface TorchZipOptions {
  /** Accept pickles importing dangerous globals (still never executed); see openCheckpoint. */
  allowUnsafePickle?: boolean;
}

/** Format versions torch's reader accepts (inline_container.cc kMin/kMaxSupportedFileFormatVersion). */
const MIN_FORMAT_VERSION = 1;
const MAX_FORMAT_VERSION = 10;

const DATA_PKL = 'data.pkl';

export type ByteOrder = 'little' | 'big';

/** What `inspect` shows about the container. */
export interface TorchZipContainer {
  /** Archive name before `/data.pkl`, e.g. `archive` or the file stem (torch >= 1.13). */
  prefix: string;
  /** Zip entries in the archive. */
  records: number;
  version: number;
  byteorder: ByteOrder;
  pickleProtocol: number;
  /** True when any entry is DEFLATE-compressed (a re-zipped copy; torch.save never compresses). */
  compressed: boolean;
  zip64: boolean;
}

interface Located {
  tensor: PickledTensor;
  entry: ZipEntry;
}

export async function openTorchZip(file: FileSource, opts: TorchZipOptions = {}): Promise<TensorSource> {
  const directory = await readZipDirectory(file);
  const prefix = findArchivePrefix(file, directory);
  rejectTorchScript(file, directory, prefix);
  const version = await readFormatVersion(file, directory, prefix);
  const byteorder = await readByteOrder(file, directory, prefix);

  const pickle = await readSmallEntry(file, directory.byName.get(`${prefix}/${DATA_PKL}`)!, MAX_PICKLE_BYTES);
  const result = readTorchPickle(pickle, { file: file.path, container: 'zip', allowUnsafePickle: opts.allowUnsafePickle });
  const located = locateTensors(file, directory, prefix, result);

  const container: TorchZipContainer = {
    prefix,
    records: directory.entries.length,
    version,
    byteorder,
    pickleProtocol: result.protocol,
    compressed: directory.entries.some((e) => e.method === ZIP_METHOD_DEFLATE),
    zip64: directory.zip64,
  };
  return new TorchZipSource(file, located, result, container);
}

/** The unique entry `<prefix>/data.pkl` names the archive; torch never requires `archive/`. */
function findArchivePrefix(file: FileSource, directory: ZipDirectory): string {
  const pickles = directory.entries.filter((e) => e.name.endsWith(`/${DATA_PKL}`));
  if (pickles.length === 0) {
    fail(ErrorCode.E_ZIP_MISSING_RECORD, file.path, `zip has no "<prefix>/${DATA_PKL}" record among its ${directory.entries.length} entries (expected exactly one).`, {
      hint: 'It is a zip file but not one written by torch.save.',
    });
  }
  if (pickles.length > 1) {
    fail(ErrorCode.E_ZIP_DUPLICATE_ENTRY, file.path, `zip has ${pickles.length} "${DATA_PKL}" records (${pickles.map((e) => e.name).join(', ')}; expected exactly one).`);
  }
  return pickles[0].name.slice(0, -(DATA_PKL.length + 1));
}

function rejectTorchScript(file: FileSource, directory: ZipDirectory, prefix: string): void {
  if (directory.byName.has(`${prefix}/constants.pkl`)) {
    fail(ErrorCode.E_TORCHSCRIPT, file.path, `is a TorchScript archive ("${prefix}/constants.pkl" present; expected a torch.save checkpoint).`, {
      hint: 'Load it with torch.jit.load and save its state_dict with torch.save, or convert it to safetensors.',
    });
  }
}

async function readSmallText(file: FileSource, entry: ZipEntry): Promise<string> {
  const bytes = await readSmallEntry(file, entry, MAX_SMALL_RECORD_BYTES);
  return new TextDecoder('utf-8').decode(bytes).trim();
}

/** `version` (or `.data/version` for format >= 6), ASCII decimal such as `3\n`. */
async function readFormatVersion(file: FileSource, directory: ZipDirectory, prefix: string): Promise<number> {
  const entry = directory.byName.get(`${prefix}/version`) ?? directory.byName.get(`${prefix}/.data/version`);
  if (entry === undefined) {
    fail(ErrorCode.E_TORCH_VERSION, file.path, `zip has no "${prefix}/version" or "${prefix}/.data/version" record (expected one, as torch.save writes).`);
  }
  const text = await readSmallText(file, entry);
  const version = /^\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(version >= MIN_FORMAT_VERSION && version <= MAX_FORMAT_VERSION)) {
    fail(ErrorCode.E_TORCH_VERSION, file.path, `record "${entry.name}" holds ${JSON.stringify(text)} (expected a format version from ${MIN_FORMAT_VERSION} to ${MAX_FORMAT_VERSION}).`, {
      data: { version: text },
    });
  }
  return version;
}

/** `byteorder` (torch >= 2.1): `little` or `big`; absent means little-endian. */
async function readByteOrder(file: FileSource, directory: ZipDirectory, prefix: string): Promise<ByteOrder> {
  const entry = directory.byName.get(`${prefix}/byteorder`);
  if (entry === undefined) return 'little';
  const text = await readSmallText(file, entry);
  if (text !== 'little' && text !== 'big') {
    fail(ErrorCode.E_BIG_ENDIAN, file.path, `record "${entry.name}" holds ${JSON.stringify(text)} (expected "little" or "big").`);
  }
  return text;
}

/** Pairs each tensor with its `data/<key>` record and checks record sizes and tensor bounds. */
function locateTensors(file: FileSource, directory: ZipDirectory, prefix: string, result: TorchPickleResult): Map<string, Located> {
  if (result.tensors.length > MAX_TENSORS) {
    fail(ErrorCode.E_LIMIT, file.path, `checkpoint holds ${result.tensors.length} tensors (expected at most MAX_TENSORS = ${MAX_TENSORS}).`);
  }
  const located = new Map<string, Located>();
  for (const tensor of result.tensors) {
    if (located.has(tensor.name)) {
      fail(ErrorCode.E_DUPLICATE_TENSOR, file.path, `tensor "${tensor.name}" appears twice in the state dict (expected unique names).`);
    }
    const entry = storageEntry(file, directory, prefix, tensor);
    validateTensorGeometry(tensor, entry.uncompressedSize, file.path);
    located.set(tensor.name, { tensor, entry });
  }
  return located;
}

function storageEntry(file: FileSource, directory: ZipDirectory, prefix: string, tensor: PickledTensor): ZipEntry {
  const { key, dtype, numel } = tensor.storage;
  const name = `${prefix}/data/${key}`;
  const entry = directory.byName.get(name);
  if (entry === undefined) {
    fail(ErrorCode.E_ZIP_MISSING_RECORD, file.path, `tensor "${tensor.name}" uses storage "${key}", but the zip has no record "${name}" (expected one per storage).`, {
      data: { tensor: tensor.name, record: name },
    });
  }
  const expected = numel * dtypeBytes(dtype);
  if (entry.uncompressedSize !== expected) {
    fail(
      ErrorCode.E_STORAGE_SIZE,
      file.path,
      `record "${name}" holds ${entry.uncompressedSize} bytes (expected ${expected} = ${numel} elements of ${dtype} as the pickle declares).`,
      { data: { record: name, size: entry.uncompressedSize, expected } },
    );
  }
  return entry;
}

class TorchZipSource extends PickledTensorSource<Located> {
  readonly format = 'torch-zip' as const;

  constructor(file: FileSource, located: Map<string, Located>, result: TorchPickleResult, private readonly zip: TorchZipContainer) {
    super(file, located, result, zip, result.globals);
  }

  async *readChunks(name: string, options: ReadChunksOptions = {}): AsyncIterable<Uint8Array> {
    const { tensor, entry } = this.lookup(name);
    const reader = openEntryReader(this.file, entry);
    const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
    const itemsize = dtypeBytes(tensor.dtype);
    for await (const chunk of materializeChunks((at, n) => reader.read(at, n), tensor, entry.uncompressedSize, chunkBytes, this.path)) {
      if (this.zip.byteorder === 'big') byteSwapInPlace(chunk, itemsize);
      yield chunk;
    }
  }
}
