/**
 * Writes zip archives the way torch.save does (docs/formats.md §2.2, §2.3): stored entries whose
 * data starts on a 64-byte boundary thanks to an `FB` padding extra, zeroed sizes/CRC in local
 * headers followed by data descriptors, ZIP64 end records even for tiny files. Options switch
 * each of those off, and overrides plant one defect at a time for the malformed-file catalogue.
 *
 * A zip is first laid out as pieces (position, bytes), so that a multi-GB archive can be written
 * as a sparse file (writeSparseZip) without ever holding its data.
 */
import { open } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { deflateSync } from 'fflate';

export interface SparseData {
  /** Uncompressed (= stored) size of the entry. */
  size: number;
  /** Bytes to place inside the entry; everything else reads as zeros. */
  writes?: { offset: number; bytes: Uint8Array }[];
}

export interface ZipEntrySpec {
  name: string;
  /** Content; a string is UTF-8 encoded. SparseData is for writeSparseZip (stored, CRC 0). */
  data: Uint8Array | string | SparseData;
  /** 0 = stored (default), 8 = deflate (data compressed here); any other value is written as is. */
  method?: number;
  /** Bytes to write as the compressed data instead of compressing `data`. */
  rawData?: Uint8Array;
  /** General-purpose flags (default 0x0808 like torch, 0x0800 without data descriptors). */
  flags?: number;
  /** CRC written to the central directory (default: computed; 0 for sparse data). */
  crc32?: number;
  /** Uncompressed size written to the central directory (default: the real one). */
  declaredSize?: number;
  /** Local-header offset written to the central directory (default: the real one). */
  declaredOffset?: number;
  /** Local-header signature (default PK\3\4). */
  localSignature?: number;
}

export interface ZipBuildOptions {
  /** Data alignment through an FB extra (default 64, torch's); 0 or 1 = no padding extra. */
  align?: number;
  /** Zeroed local sizes/CRC + data descriptors, like torch (default true). */
  dataDescriptors?: boolean;
  /** ZIP64 end record + locator even when not needed, like torch (default true). */
  zip64?: boolean;
  /** Bytes before the first entry (a non-zip prefix; default none). */
  leadingBytes?: number;
  /** Archive comment after the EOCD. */
  comment?: string;
  /** Overrides of the classic EOCD fields. */
  eocd?: { entryCount?: number; centralDirSize?: number; centralDirOffset?: number };
  /** Overrides of the ZIP64 end record / locator. */
  zip64Record?: { entryCount?: number; centralDirSize?: number; centralDirOffset?: number; signature?: number };
  locator?: { recordOffset?: number };
}

export interface ZipPiece {
  position: number;
  bytes: Uint8Array;
}

export interface ZipLayout {
  pieces: ZipPiece[];
  size: number;
  /** Where each entry's data starts, by name. */
  dataOffsets: Map<string, number>;
  centralDirOffset: number;
}

const U32_MAX = 0xffffffff;
const enc = new TextEncoder();

export function layoutZip(entries: ZipEntrySpec[], opts: ZipBuildOptions = {}): ZipLayout {
  const align = opts.align ?? 64;
  const descriptors = opts.dataDescriptors ?? true;
  const pieces: ZipPiece[] = [];
  const centrals: Uint8Array[] = [];
  const dataOffsets = new Map<string, number>();
  let cursor = opts.leadingBytes ?? 0;

  for (const spec of entries) {
    const e = prepareEntry(spec, descriptors);
    const local = localHeader(e, cursor, align, descriptors);
    pieces.push({ position: cursor, bytes: local });
    const dataStart = cursor + local.length;
    dataOffsets.set(spec.name, dataStart);
    pushData(pieces, dataStart, e);
    let end = dataStart + e.compressedSize;
    if (descriptors) {
      const dd = dataDescriptor(e);
      pieces.push({ position: end, bytes: dd });
      end += dd.length;
    }
    centrals.push(centralHeader(e, spec.declaredOffset ?? cursor));
    cursor = end;
  }

  const centralDirOffset = cursor;
  const central = concat(centrals);
  pieces.push({ position: cursor, bytes: central });
  cursor += central.length;
  const ends = endRecords(entries.length, centralDirOffset, central.length, cursor, opts);
  pieces.push({ position: cursor, bytes: ends });
  cursor += ends.length;
  return { pieces, size: cursor, dataOffsets, centralDirOffset };
}

/** The whole archive in memory (small archives). */
export function buildZip(entries: ZipEntrySpec[], opts: ZipBuildOptions = {}): Uint8Array {
  const layout = layoutZip(entries, opts);
  const out = new Uint8Array(layout.size);
  for (const p of layout.pieces) out.set(p.bytes, p.position);
  return out;
}

/** Writes the archive as a sparse file: only headers and explicit writes occupy disk blocks. */
export async function writeSparseZip(path: string, entries: ZipEntrySpec[], opts: ZipBuildOptions = {}): Promise<ZipLayout> {
  const layout = layoutZip(entries, opts);
  const handle = await open(path, 'w');
  try {
    for (const p of layout.pieces) await handle.write(p.bytes, 0, p.bytes.length, p.position);
    await handle.truncate(layout.size);
  } finally {
    await handle.close();
  }
  return layout;
}

// ------------------------------------------------------------------------------------------------

interface PreparedEntry {
  spec: ZipEntrySpec;
  name: Uint8Array;
  method: number;
  flags: number;
  crc: number;
  size: number;
  declaredSize: number;
  compressedSize: number;
  /** Compressed bytes, or undefined for sparse data. */
  payload?: Uint8Array;
  sparse?: SparseData;
}

function prepareEntry(spec: ZipEntrySpec, descriptors: boolean): PreparedEntry {
  const method = spec.method ?? 0;
  const flags = spec.flags ?? (descriptors ? 0x0808 : 0x0800);
  const name = enc.encode(spec.name);
  if (isSparse(spec.data)) {
    const size = spec.data.size;
    return { spec, name, method, flags, crc: spec.crc32 ?? 0, size, declaredSize: spec.declaredSize ?? size, compressedSize: size, sparse: spec.data };
  }
  const data = typeof spec.data === 'string' ? enc.encode(spec.data) : spec.data;
  const payload = spec.rawData ?? (method === 8 ? deflateSync(data) : data);
  return {
    spec,
    name,
    method,
    flags,
    crc: spec.crc32 ?? crc32(data) >>> 0,
    size: data.length,
    declaredSize: spec.declaredSize ?? data.length,
    compressedSize: payload.length,
    payload,
  };
}

function isSparse(d: ZipEntrySpec['data']): d is SparseData {
  return typeof d === 'object' && !(d instanceof Uint8Array);
}

function needsZip64Sizes(e: PreparedEntry): boolean {
  return e.declaredSize >= U32_MAX || e.compressedSize >= U32_MAX;
}

/** torch's local header: zero sizes/CRC, ZIP64 extra when needed, FB padding to `align`. */
function localHeader(e: PreparedEntry, cursor: number, align: number, descriptors: boolean): Uint8Array {
  const zip64Sizes = needsZip64Sizes(e);
  const zip64Offset = cursor >= U32_MAX;
  const zip64Extra: number[] = [];
  if (zip64Sizes) zip64Extra.push(0, 0);
  if (zip64Offset) zip64Extra.push(cursor);
  const extraParts: Uint8Array[] = [];
  if (zip64Extra.length > 0) extraParts.push(extraField(0x0001, u64s(zip64Extra)));

  const fixed = 30 + e.name.length + extraParts.reduce((n, p) => n + p.length, 0);
  if (align > 1) {
    // The FB field's own 4-byte header counts before the data: start = cursor + fixed + 4 + pad.
    const pad = (align - ((cursor + fixed + 4) % align)) % align;
    extraParts.push(extraField(0x4246, new Uint8Array(pad).fill(0x5a)));
  }
  const extra = concat(extraParts);
  const h = new Uint8Array(30 + e.name.length + extra.length);
  const v = new DataView(h.buffer);
  v.setUint32(0, e.spec.localSignature ?? 0x04034b50, true);
  v.setUint16(4, zip64Sizes || zip64Offset ? 45 : 0, true);
  v.setUint16(6, e.flags, true);
  v.setUint16(8, e.method, true);
  if (!descriptors) {
    v.setUint32(14, e.crc, true);
    v.setUint32(18, zip64Sizes ? U32_MAX : e.compressedSize, true);
    v.setUint32(22, zip64Sizes ? U32_MAX : e.declaredSize, true);
  }
  v.setUint16(26, e.name.length, true);
  v.setUint16(28, extra.length, true);
  h.set(e.name, 30);
  h.set(extra, 30 + e.name.length);
  return h;
}

function pushData(pieces: ZipPiece[], start: number, e: PreparedEntry): void {
  if (e.payload !== undefined) {
    pieces.push({ position: start, bytes: e.payload });
    return;
  }
  for (const w of e.sparse?.writes ?? []) pieces.push({ position: start + w.offset, bytes: w.bytes });
}

function dataDescriptor(e: PreparedEntry): Uint8Array {
  const zip64 = needsZip64Sizes(e);
  const d = new Uint8Array(zip64 ? 24 : 16);
  const v = new DataView(d.buffer);
  v.setUint32(0, 0x08074b50, true);
  v.setUint32(4, e.crc, true);
  if (zip64) {
    v.setBigUint64(8, BigInt(e.compressedSize), true);
    v.setBigUint64(16, BigInt(e.declaredSize), true);
  } else {
    v.setUint32(8, e.compressedSize, true);
    v.setUint32(12, e.declaredSize, true);
  }
  return d;
}

function centralHeader(e: PreparedEntry, offset: number): Uint8Array {
  const saturate = (n: number) => (n >= U32_MAX ? U32_MAX : n);
  const zip64Values = [e.declaredSize, e.compressedSize, offset].filter((n) => n >= U32_MAX);
  const extra = zip64Values.length > 0 ? extraField(0x0001, u64s(zip64Values)) : new Uint8Array(0);
  const h = new Uint8Array(46 + e.name.length + extra.length);
  const v = new DataView(h.buffer);
  v.setUint32(0, 0x02014b50, true);
  v.setUint16(6, zip64Values.length > 0 ? 45 : 0, true);
  v.setUint16(8, e.flags, true);
  v.setUint16(10, e.method, true);
  v.setUint32(16, e.crc, true);
  v.setUint32(20, saturate(e.compressedSize), true);
  v.setUint32(24, saturate(e.declaredSize), true);
  v.setUint16(28, e.name.length, true);
  v.setUint16(30, extra.length, true);
  v.setUint32(42, saturate(offset), true);
  h.set(e.name, 46);
  h.set(extra, 46 + e.name.length);
  return h;
}

function endRecords(count: number, cdOffset: number, cdSize: number, position: number, opts: ZipBuildOptions): Uint8Array {
  const parts: Uint8Array[] = [];
  const needZip64 = count >= 0xffff || cdOffset >= U32_MAX || cdSize >= U32_MAX;
  if (opts.zip64 ?? true) {
    const o = opts.zip64Record ?? {};
    const rec = new Uint8Array(56);
    const v = new DataView(rec.buffer);
    v.setUint32(0, o.signature ?? 0x06064b50, true);
    v.setBigUint64(4, 44n, true);
    v.setUint16(12, 0x031e, true);
    v.setUint16(14, 45, true);
    v.setBigUint64(24, BigInt(o.entryCount ?? count), true);
    v.setBigUint64(32, BigInt(o.entryCount ?? count), true);
    v.setBigUint64(40, BigInt(o.centralDirSize ?? cdSize), true);
    v.setBigUint64(48, BigInt(o.centralDirOffset ?? cdOffset), true);
    const loc = new Uint8Array(20);
    const lv = new DataView(loc.buffer);
    lv.setUint32(0, 0x07064b50, true);
    lv.setBigUint64(8, BigInt(opts.locator?.recordOffset ?? position), true);
    lv.setUint32(16, 1, true);
    parts.push(rec, loc);
  } else if (needZip64) {
    throw new Error('layoutZip: this archive needs ZIP64 end records');
  }
  const comment = enc.encode(opts.comment ?? '');
  const eocd = new Uint8Array(22 + comment.length);
  const v = new DataView(eocd.buffer);
  const e = opts.eocd ?? {};
  const entryCount = e.entryCount ?? Math.min(count, 0xffff);
  v.setUint32(0, 0x06054b50, true);
  v.setUint16(8, entryCount, true);
  v.setUint16(10, entryCount, true);
  v.setUint32(12, e.centralDirSize ?? Math.min(cdSize, U32_MAX), true);
  v.setUint32(16, e.centralDirOffset ?? Math.min(cdOffset, U32_MAX), true);
  v.setUint16(20, comment.length, true);
  eocd.set(comment, 22);
  parts.push(eocd);
  return concat(parts);
}

function extraField(id: number, data: Uint8Array): Uint8Array {
  const f = new Uint8Array(4 + data.length);
  const v = new DataView(f.buffer);
  v.setUint16(0, id, true);
  v.setUint16(2, data.length, true);
  f.set(data, 4);
  return f;
}

function u64s(values: number[]): Uint8Array {
  const b = new Uint8Array(values.length * 8);
  const v = new DataView(b.buffer);
  values.forEach((n, i) => v.setBigUint64(i * 8, BigInt(n), true));
  return b;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Torch-like archives

/** One tensor of a state dict written by buildStateDictPickle. */
export interface PickleTensorSpec {
  name: string;
  /** Storage class name, e.g. 'FloatStorage', 'HalfStorage'. */
  storageClass: string;
  key: string;
  /** Storage numel in elements of the storage class. */
  storageNumel: number;
  offset?: number;
  shape: number[];
  /** Default: C-contiguous strides of `shape`. */
  stride?: number[];
}

/**
 * A protocol-2 pickle of `OrderedDict{name: _rebuild_tensor_v2(storage, offset, size, stride,
 * False, OrderedDict())}` — the opcodes torch 1.13 writes (docs/formats.md §2.7). `callGlobal`
 * adds one more entry whose value calls that global, to test the safety refusal.
 */
export function buildStateDictPickle(tensors: PickleTensorSpec[], opts: { callGlobal?: [module: string, name: string] } = {}): Uint8Array {
  const out: number[] = [0x80, 0x02];
  const ops = {
    global: (module: string, name: string) => out.push(0x63, ...enc.encode(`${module}\n${name}\n`)),
    str: (s: string) => {
      const b = enc.encode(s);
      out.push(0x58, b.length & 0xff, (b.length >> 8) & 0xff, (b.length >> 16) & 0xff, b.length >>> 24, ...b);
    },
    int: (n: number) => out.push(0x4a, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff),
    tuple: (ns: number[]) => {
      out.push(0x28);
      ns.forEach((n) => ops.int(n));
      out.push(0x74);
    },
    emptyOrderedDict: () => {
      ops.global('collections', 'OrderedDict');
      out.push(0x29, 0x52);
    },
  };
  ops.emptyOrderedDict();
  out.push(0x28); // MARK for SETITEMS
  for (const t of tensors) {
    ops.str(t.name);
    ops.global('torch._utils', '_rebuild_tensor_v2');
    out.push(0x28); // MARK args
    out.push(0x28); // MARK persistent id
    ops.str('storage');
    ops.global('torch', t.storageClass);
    ops.str(t.key);
    ops.str('cpu');
    ops.int(t.storageNumel);
    out.push(0x74, 0x51); // TUPLE, BINPERSID
    ops.int(t.offset ?? 0);
    ops.tuple(t.shape);
    ops.tuple(t.stride ?? contiguousStrides(t.shape));
    out.push(0x89); // NEWFALSE
    ops.emptyOrderedDict();
    out.push(0x74, 0x52); // TUPLE, REDUCE
  }
  if (opts.callGlobal) {
    // An entry whose value is `module.name('x')`: what a malicious pickle looks like to the scan.
    ops.str('__call__');
    ops.global(...opts.callGlobal);
    out.push(0x28);
    ops.str('x');
    out.push(0x74, 0x52); // TUPLE, REDUCE
  }
  out.push(0x75, 0x2e); // SETITEMS, STOP
  return Uint8Array.from(out);
}

export function contiguousStrides(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    s[k] = acc;
    acc *= shape[k];
  }
  return s;
}

export interface TorchZipSpec {
  /** Archive name (default 'archive'). */
  prefix?: string;
  pickle: Uint8Array;
  storages: Record<string, Uint8Array>;
  /** Contents of `version` (default '3\n'); null leaves the record out. */
  version?: string | null;
  byteorder?: 'little' | 'big' | string;
  /** Additional records (names relative to the prefix). */
  extraRecords?: Record<string, Uint8Array | string>;
  /** Compression method for every record (default 0). */
  method?: number;
}

/** Entry specs in torch 1.13's order: data.pkl, data/<key> lexicographic, version last. */
export function torchZipEntries(spec: TorchZipSpec): ZipEntrySpec[] {
  const p = spec.prefix ?? 'archive';
  const method = spec.method ?? 0;
  const entries: ZipEntrySpec[] = [{ name: `${p}/data.pkl`, data: spec.pickle, method }];
  if (spec.byteorder !== undefined) entries.push({ name: `${p}/byteorder`, data: spec.byteorder, method });
  for (const key of Object.keys(spec.storages).sort()) entries.push({ name: `${p}/data/${key}`, data: spec.storages[key], method });
  for (const [name, data] of Object.entries(spec.extraRecords ?? {})) entries.push({ name: `${p}/${name}`, data, method });
  const version = spec.version === undefined ? '3\n' : spec.version;
  if (version !== null) entries.push({ name: `${p}/version`, data: version, method });
  return entries;
}

export function buildTorchZip(spec: TorchZipSpec, opts: ZipBuildOptions = {}): Uint8Array {
  return buildZip(torchZipEntries(spec), opts);
}

/** Little-endian float32 bytes of `values`. */
export function f32(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}
