/**
 * Writes a Graph (graph.ts) as an ONNX model: `model.onnx` encoded with the protobufjs code
 * generated from the official onnx.proto (npm `onnx-proto`), plus, when the weights are large,
 * one external-data file (`model.onnx_data` for Optimum-style folders, `weights.pb` for
 * OnnxStableDiffusionPipeline folders).
 *
 * External data (docs/formats.md §8.5): each external initializer has `data_location = EXTERNAL`
 * and `external_data` entries location / offset / length (decimal strings); offsets are
 * multiples of 4096 (zero padding between tensors). Tensor bytes are streamed from the source
 * safetensors through the dtype caster (diffusers/cast.ts) into the file chunk by chunk, so memory
 * stays bounded by the chunk size, except for transposed Linear weights, which are read whole
 * (one at a time; the largest SD Linear weight is ~26 MB in fp32).
 *
 * Embedded initializers (`raw_data`) are read into memory while the model is encoded; `external`
 * decides which mode a model uses: 'auto' goes external once the initializers total more than
 * `externalThresholdBytes` (default 512 MiB: every UNet, the SD2 and SDXL text encoders in fp32),
 * which keeps model.onnx far below protobuf's 2 GiB message limit. In external mode, tensors
 * smaller than `externalMinBytes` (default 1024, like Optimum's size_threshold) and graph constants
 * (shapes, axes, scalars: shape inference reads them at load time) stay embedded.
 *
 * IR version 8 and opset 17 by default (formats.md §8.4: accepted by onnxruntime ≥ 1.12 and 1.30).
 */
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as P } from 'onnx-proto';
import { dtypeBytes, type DType } from '../dtypes.js';
import { createCaster } from '../diffusers/cast.js';
import { CkptError, ErrorCode, fail } from '../errors.js';
import { ONNX_ELEM_TYPE, TENSOR_TYPE_DTYPE, type Attr, type Graph, type GraphIO, type Initializer } from './graph.js';

const { onnx } = onnxProto;

export const DEFAULT_OPSET = 17;
export const DEFAULT_IR_VERSION = 8;
export const EXTERNAL_ALIGNMENT = 4096;
export const DEFAULT_EXTERNAL_THRESHOLD_BYTES = 512 * 1024 * 1024;
export const DEFAULT_EXTERNAL_MIN_BYTES = 1024;

export interface WriteModelOptions {
  /** Folder the model is written to (created if missing). */
  dir: string;
  modelFile?: string;
  /** External-data file name, relative to `dir` (no '..'). */
  externalDataFile?: string;
  external?: 'auto' | 'always' | 'never';
  externalThresholdBytes?: number;
  externalMinBytes?: number;
  opset?: number;
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  /** ModelProto.metadata_props. */
  metadata?: Readonly<Record<string, string>>;
  /** Called after each initializer is written (bytes done / total). */
  onBytes?: (done: number, total: number) => void;
}

export interface ExternalEntry {
  readonly name: string;
  readonly offset: number;
  readonly length: number;
}

export interface WriteModelResult {
  readonly modelPath: string;
  readonly modelBytes: number;
  /** Absent when every initializer is embedded. */
  readonly externalDataPath?: string;
  readonly externalBytes: number;
  readonly external: readonly ExternalEntry[];
  /** Float weights that became ±Inf when narrowed to float16. */
  readonly overflowCount: number;
}

/** Byte length of an initializer once stored with its target element type. */
export function initializerBytes(init: Initializer): number {
  const n = init.dims.reduce((p, d) => p * d, 1);
  return n * dtypeBytes(TENSOR_TYPE_DTYPE[init.type]);
}

/** Writes `graph` to `options.dir`; returns what was written. */
export async function writeOnnxModel(graph: Graph, options: WriteModelOptions): Promise<WriteModelResult> {
  const modelFile = options.modelFile ?? 'model.onnx';
  const dataFile = options.externalDataFile ?? `${modelFile}_data`;
  if (dataFile.split(/[\\/]/).includes('..')) fail(ErrorCode.E_ONNX_EXPORT, dataFile, 'external data location must not contain "..".');
  await mkdir(options.dir, { recursive: true });
  const total = graph.initializers.reduce((s, i) => s + initializerBytes(i), 0);
  const mode = options.external ?? 'auto';
  const useExternal = mode === 'always' || (mode === 'auto' && total > (options.externalThresholdBytes ?? DEFAULT_EXTERNAL_THRESHOLD_BYTES));
  const minBytes = options.externalMinBytes ?? DEFAULT_EXTERNAL_MIN_BYTES;
  const stats = { overflow: 0, done: 0 };

  const tensors: P.ITensorProto[] = [];
  const external: ExternalEntry[] = [];
  const modelPath = join(options.dir, modelFile);
  let externalDataPath: string | undefined;
  let externalBytes = 0;

  // Only weights go external: graph constants (shapes, axes, scalars) stay embedded, since
  // shape inference reads them at load time and cannot read external data.
  const externalInits = useExternal ? graph.initializers.filter((i) => i.data.kind === 'weight' && initializerBytes(i) >= minBytes) : [];
  const externalSet = new Set(externalInits);
  if (externalInits.length > 0) {
    externalDataPath = join(options.dir, dataFile);
    const tmp = `${externalDataPath}.partial`;
    const fh = await openForWrite(tmp);
    try {
      let pos = 0;
      for (const init of externalInits) {
        const aligned = Math.ceil(pos / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
        if (aligned > pos) await writeAll(fh, new Uint8Array(aligned - pos), pos, tmp);
        pos = aligned;
        const offset = pos;
        for await (const chunk of initializerChunks(init, stats)) {
          await writeAll(fh, chunk, pos, tmp);
          pos += chunk.length;
        }
        const length = pos - offset;
        if (length !== initializerBytes(init)) {
          fail(ErrorCode.E_ONNX_EXPORT, init.name, `wrote ${length} bytes for initializer, expected ${initializerBytes(init)}.`);
        }
        external.push({ name: init.name, offset, length });
        stats.done += length;
        options.onBytes?.(stats.done, total);
      }
      externalBytes = pos;
    } finally {
      await fh.close();
    }
    await rename(tmp, externalDataPath);
  }

  const extByName = new Map(external.map((e) => [e.name, e]));
  for (const init of graph.initializers) {
    const base: P.ITensorProto = { name: init.name, dims: [...init.dims], dataType: ONNX_ELEM_TYPE[init.type] };
    if (externalSet.has(init)) {
      const e = extByName.get(init.name)!;
      tensors.push({
        ...base,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: dataFile },
          { key: 'offset', value: String(e.offset) },
          { key: 'length', value: String(e.length) },
        ],
      });
    } else {
      const bytes = await readInitializer(init, stats);
      stats.done += bytes.length;
      options.onBytes?.(stats.done, total);
      tensors.push({ ...base, rawData: bytes });
    }
  }

  const model = modelProto(graph, tensors, options);
  const err = onnx.ModelProto.verify(model);
  if (err) fail(ErrorCode.E_ONNX_EXPORT, modelPath, `invalid ModelProto: ${err}`);
  const encoded = onnx.ModelProto.encode(model).finish();
  if (encoded.length >= 2 ** 31) {
    fail(ErrorCode.E_ONNX_EXPORT, modelPath, `model.onnx would be ${encoded.length} bytes, over protobuf's 2 GiB limit; use external data.`);
  }
  const tmp = `${modelPath}.partial`;
  const fh = await openForWrite(tmp);
  try {
    await writeAll(fh, encoded, 0, tmp);
  } finally {
    await fh.close();
  }
  await rename(tmp, modelPath);
  return { modelPath, modelBytes: encoded.length, externalDataPath, externalBytes, external, overflowCount: stats.overflow };
}

/** Serialises a graph to bytes with every initializer embedded (tests, small graphs). */
export async function encodeOnnxModel(graph: Graph, options: Pick<WriteModelOptions, 'opset' | 'irVersion'> = {}): Promise<Uint8Array> {
  const stats = { overflow: 0, done: 0 };
  const initializer: P.ITensorProto[] = [];
  for (const init of graph.initializers) {
    initializer.push({ name: init.name, dims: [...init.dims], dataType: ONNX_ELEM_TYPE[init.type], rawData: await readInitializer(init, stats) });
  }
  const model = modelProto(graph, initializer, options);
  return onnx.ModelProto.encode(model).finish();
}

function modelProto(graph: Graph, initializer: P.ITensorProto[], options: Omit<WriteModelOptions, 'dir'>): P.IModelProto {
  return {
    irVersion: options.irVersion ?? DEFAULT_IR_VERSION,
    producerName: options.producerName ?? 'ckpt2diffusers',
    producerVersion: options.producerVersion ?? '',
    docString: options.docString,
    graph: {
      name: graph.name,
      node: graph.nodes.map((n) => ({
        name: n.name,
        opType: n.opType,
        domain: n.domain || undefined,
        input: [...n.inputs],
        output: [...n.outputs],
        attribute: Object.entries(n.attrs).map(([name, a]) => encodeAttr(name, a)),
      })),
      initializer,
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
    },
    opsetImport: [{ domain: '', version: options.opset ?? DEFAULT_OPSET }],
    metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
}

function valueInfo(io: GraphIO): P.IValueInfoProto {
  return {
    name: io.name,
    type: {
      tensorType: {
        elemType: ONNX_ELEM_TYPE[io.type],
        ...(io.dims ? { shape: { dim: io.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}),
      },
    },
  };
}

const AttrType = onnx.AttributeProto.AttributeType;

function encodeAttr(name: string, a: Attr): P.IAttributeProto {
  if (typeof a === 'number') {
    if (!Number.isInteger(a)) fail(ErrorCode.E_ONNX_EXPORT, undefined, `attribute ${name}=${a}: write float attributes as {f: value}.`);
    return { name, type: AttrType.INT, i: a };
  }
  if (typeof a === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(a) };
  if (Array.isArray(a)) return { name, type: AttrType.INTS, ints: [...(a as readonly number[])] };
  const o = a as Exclude<Attr, number | string | readonly number[]>;
  if ('f' in o) return { name, type: AttrType.FLOAT, f: o.f };
  if ('floats' in o) return { name, type: AttrType.FLOATS, floats: [...o.floats] };
  return { name, type: AttrType.TENSOR, t: { dims: [...o.tensor.dims], dataType: ONNX_ELEM_TYPE[o.tensor.type], rawData: o.tensor.bytes } };
}

/** The initializer's stored bytes, chunk by chunk (cast to its element type, transposed if asked). */
async function* initializerChunks(init: Initializer, stats: { overflow: number }): AsyncGenerator<Uint8Array> {
  const to = TENSOR_TYPE_DTYPE[init.type];
  const data = init.data;
  const caster = createCasterFor(data.dtype, to, init.name);
  if (data.kind === 'bytes') {
    yield caster.push(data.bytes);
  } else if (data.transpose) {
    const whole = await data.source.readTensor(data.key);
    const [rows, cols] = [init.dims[1], init.dims[0]];
    yield caster.push(transpose2d(whole, rows, cols, dtypeBytes(data.dtype)));
  } else {
    for await (const chunk of data.source.readChunks(data.key)) {
      const out = caster.push(chunk);
      if (out.length > 0) yield out;
    }
  }
  caster.finish();
  stats.overflow += caster.overflowCount;
}

async function readInitializer(init: Initializer, stats: { overflow: number }): Promise<Uint8Array> {
  const out = new Uint8Array(initializerBytes(init));
  let pos = 0;
  for await (const chunk of initializerChunks(init, stats)) {
    if (pos + chunk.length > out.length) fail(ErrorCode.E_ONNX_EXPORT, init.name, 'initializer has more bytes than its dims say.');
    out.set(chunk, pos);
    pos += chunk.length;
  }
  if (pos !== out.length) fail(ErrorCode.E_ONNX_EXPORT, init.name, `initializer has ${pos} bytes, expected ${out.length}.`);
  return out;
}

function createCasterFor(from: DType, to: DType, name: string): ReturnType<typeof createCaster> {
  if (from === to) return createCaster(from, to);
  try {
    return createCaster(from, to);
  } catch (e) {
    throw new CkptError(ErrorCode.E_ONNX_EXPORT, `initializer "${name}": cannot store ${from} weights as ${to}.`, { cause: e });
  }
}

/** [rows, cols] → [cols, rows] for elements of `itemsize` bytes. */
export function transpose2d(bytes: Uint8Array, rows: number, cols: number, itemsize: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  if (itemsize === 4 && bytes.byteOffset % 4 === 0) {
    const src = new Uint32Array(bytes.buffer, bytes.byteOffset, rows * cols);
    const dst = new Uint32Array(out.buffer);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    return out;
  }
  if (itemsize === 2 && bytes.byteOffset % 2 === 0) {
    const src = new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols);
    const dst = new Uint16Array(out.buffer);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    return out;
  }
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const s = (r * cols + c) * itemsize;
      out.set(bytes.subarray(s, s + itemsize), (c * rows + r) * itemsize);
    }
  }
  return out;
}

async function openForWrite(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'w');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CkptError(err.code === 'ENOSPC' ? ErrorCode.E_DISK_FULL : ErrorCode.E_OUTPUT_NOT_WRITABLE, `cannot write (${err.code ?? err.message})`, { file: path, cause: e });
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  try {
    while (done < bytes.length) {
      const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
      done += bytesWritten;
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    await rm(path, { force: true }).catch(() => undefined);
    throw new CkptError(err.code === 'ENOSPC' || err.code === 'EDQUOT' ? ErrorCode.E_DISK_FULL : ErrorCode.E_IO, `write failed (${err.code ?? err.message})`, { file: path, cause: e });
  }
}
