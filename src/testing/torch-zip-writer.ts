/**
 * Writes checkpoints in the byte layout torch.save (>= 1.6) produces, streaming, so tests and the
 * benchmark can make multi-GB synthetic inputs without PyTorch and without holding them in memory.
 *
 * Layout (docs: formats.md §2.2-2.3; PyTorch caffe2/serialize/inline_container.cc): stored entries
 * `<prefix>/data.pkl`, `<prefix>/data/<key>`, `<prefix>/version`; data 64-byte aligned through an
 * `FB` padding extra field; local headers with zero CRC/sizes and a data descriptor after the data;
 * ZIP64 extras when a size or offset passes 4 GiB; ZIP64 end records always.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import type { DType } from '../dtypes.js';
import { DTYPES, numelOf } from '../dtypes.js';

export interface ZipTensorSpec {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export interface TorchZipWriteOptions {
  /** Wrap the state dict as Lightning does: {'state_dict': ..., 'global_step': N}. */
  lightningWrapper?: { globalStep: number };
  /** Archive-name prefix; torch >= 1.13 uses the file stem. */
  prefix?: string;
  /** Produces each tensor's bytes (C order, little-endian) in chunks. */
  data: (spec: ZipTensorSpec, byteLength: number) => AsyncIterable<Uint8Array>;
}

const ALIGNMENT = 64;
const U32_MAX = 0xffffffff;

interface CentralRecord {
  name: Uint8Array;
  crc: number;
  size: number;
  offset: number;
}

/** Writes `tensors` as a torch.save zip at `path`; returns the file size. */
export async function writeTorchZip(path: string, tensors: readonly ZipTensorSpec[], options: TorchZipWriteOptions): Promise<number> {
  const prefix = options.prefix ?? basename(path).replace(/\.[^.]*$/, '');
  const out = await ZipStream.create(path);
  try {
    await out.entry(`${prefix}/data.pkl`, [pickleStateDict(tensors, options.lightningWrapper)]);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const bytes = numelOf(t.shape) * DTYPES[t.dtype].bytes;
      await out.entry(`${prefix}/data/${i}`, options.data(t, bytes));
    }
    await out.entry(`${prefix}/version`, [new TextEncoder().encode('3\n')]);
    return await out.finish();
  } finally {
    await out.close();
  }
}

class ZipStream {
  private position = 0;
  private readonly records: CentralRecord[] = [];

  private constructor(private readonly handle: FileHandle) {}

  static async create(path: string): Promise<ZipStream> {
    return new ZipStream(await open(path, 'w'));
  }

  private async write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, done, bytes.length - done, this.position + done);
      done += bytesWritten;
    }
    this.position += bytes.length;
  }

  async entry(name: string, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void> {
    const nameBytes = new TextEncoder().encode(name);
    const offset = this.position;
    await this.write(localHeader(nameBytes, offset));
    let crc = 0;
    let size = 0;
    for await (const chunk of chunks) {
      crc = crc32(chunk, crc);
      size += chunk.length;
      await this.write(chunk);
    }
    await this.write(dataDescriptor(crc, size));
    this.records.push({ name: nameBytes, crc, size, offset });
  }

  async finish(): Promise<number> {
    const cdStart = this.position;
    for (const r of this.records) await this.write(centralHeader(r));
    const cdSize = this.position - cdStart;
    const eocd64At = this.position;
    await this.write(zip64EndRecord(this.records.length, cdSize, cdStart));
    await this.write(zip64Locator(eocd64At));
    await this.write(endRecord(this.records.length, cdSize, cdStart));
    return this.position;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function localHeader(name: Uint8Array, offset: number): Uint8Array {
  // Like miniz: a ZIP64 extra (offset only) for headers past 4 GiB, then FB padding to 64 bytes.
  const zip64 = offset >= U32_MAX ? 4 + 8 : 0;
  const base = offset + 30 + name.length + zip64 + 4;
  const pad = (ALIGNMENT - (base % ALIGNMENT)) % ALIGNMENT;
  const extraLen = zip64 + 4 + pad;
  const b = new Uint8Array(30 + name.length + extraLen);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x04034b50, true);
  v.setUint16(6, 0x0808, true); // data descriptor follows; UTF-8 names
  v.setUint16(26, name.length, true);
  v.setUint16(28, extraLen, true);
  b.set(name, 30);
  let p = 30 + name.length;
  if (zip64) {
    v.setUint16(p, 0x0001, true);
    v.setUint16(p + 2, 8, true);
    v.setBigUint64(p + 4, BigInt(offset), true);
    p += 12;
  }
  v.setUint16(p, 0x4246, true);
  v.setUint16(p + 2, pad, true);
  b.fill(0x5a, p + 4);
  return b;
}

function dataDescriptor(crc: number, size: number): Uint8Array {
  const big = size >= U32_MAX;
  const b = new Uint8Array(big ? 24 : 16);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x08074b50, true);
  v.setUint32(4, crc, true);
  if (big) {
    v.setBigUint64(8, BigInt(size), true);
    v.setBigUint64(16, BigInt(size), true);
  } else {
    v.setUint32(8, size, true);
    v.setUint32(12, size, true);
  }
  return b;
}

function centralHeader(r: CentralRecord): Uint8Array {
  const bigSize = r.size >= U32_MAX;
  const bigOffset = r.offset >= U32_MAX;
  const extraData = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0);
  const extraLen = extraData ? 4 + extraData : 0;
  const b = new Uint8Array(46 + r.name.length + extraLen);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x02014b50, true);
  v.setUint16(8, 0x0808, true);
  v.setUint32(16, r.crc, true);
  v.setUint32(20, bigSize ? U32_MAX : r.size, true);
  v.setUint32(24, bigSize ? U32_MAX : r.size, true);
  v.setUint16(28, r.name.length, true);
  v.setUint16(30, extraLen, true);
  v.setUint32(42, bigOffset ? U32_MAX : r.offset, true);
  b.set(r.name, 46);
  let p = 46 + r.name.length;
  if (extraLen) {
    v.setUint16(p, 0x0001, true);
    v.setUint16(p + 2, extraData, true);
    p += 4;
    if (bigSize) {
      v.setBigUint64(p, BigInt(r.size), true);
      v.setBigUint64(p + 8, BigInt(r.size), true);
      p += 16;
    }
    if (bigOffset) v.setBigUint64(p, BigInt(r.offset), true);
  }
  return b;
}

function zip64EndRecord(count: number, cdSize: number, cdStart: number): Uint8Array {
  const b = new Uint8Array(56);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x06064b50, true);
  v.setBigUint64(4, 44n, true);
  v.setUint16(12, 0x031e, true);
  v.setUint16(14, 45, true);
  v.setBigUint64(24, BigInt(count), true);
  v.setBigUint64(32, BigInt(count), true);
  v.setBigUint64(40, BigInt(cdSize), true);
  v.setBigUint64(48, BigInt(cdStart), true);
  return b;
}

function zip64Locator(eocd64At: number): Uint8Array {
  const b = new Uint8Array(20);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x07064b50, true);
  v.setBigUint64(8, BigInt(eocd64At), true);
  v.setUint32(16, 1, true);
  return b;
}

function endRecord(count: number, cdSize: number, cdStart: number): Uint8Array {
  const b = new Uint8Array(22);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x06054b50, true);
  v.setUint16(8, Math.min(count, 0xffff), true);
  v.setUint16(10, Math.min(count, 0xffff), true);
  v.setUint32(12, Math.min(cdSize, U32_MAX), true);
  v.setUint32(16, cdStart >= U32_MAX ? U32_MAX : cdStart, true);
  return b;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array, previous: number): number {
  let c = ~previous >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------------
// A protocol-2 pickle of {'state_dict': OrderedDict(name -> tensor), 'global_step': N} as torch
// writes it (formats.md §2.5-2.7): tensors are _rebuild_tensor_v2 calls on persistent storages.

class PickleBytes {
  private readonly parts: number[] = [];
  op(...bytes: number[]): this {
    this.parts.push(...bytes);
    return this;
  }
  unicode(s: string): this {
    const b = new TextEncoder().encode(s);
    this.op(0x58, ...u32(b.length));
    for (const x of b) this.parts.push(x);
    return this;
  }
  global(module: string, name: string): this {
    this.op(0x63);
    for (const x of new TextEncoder().encode(`${module}\n${name}\n`)) this.parts.push(x);
    return this;
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n);
    if (n >= -0x80000000 && n <= 0x7fffffff) return this.op(0x4a, ...u32(n));
    return this.long(n);
  }
  private long(n: number): this {
    const bytes: number[] = [];
    let v = BigInt(n);
    do {
      bytes.push(Number(v & 0xffn));
      v >>= 8n;
    } while (v !== 0n && v !== -1n);
    if ((bytes[bytes.length - 1] & 0x80) !== (n < 0 ? 0x80 : 0)) bytes.push(n < 0 ? 0xff : 0);
    return this.op(0x8a, bytes.length, ...bytes);
  }
  tuple(items: readonly number[]): this {
    this.op(0x28);
    for (const i of items) this.int(i);
    return this.op(0x74);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i];
  }
  return stride;
}

function pickleStateDict(tensors: readonly ZipTensorSpec[], lightning?: { globalStep: number }): Uint8Array {
  const p = new PickleBytes().op(0x80, 2);
  if (lightning) p.op(0x7d).op(0x28).unicode('state_dict'); // EMPTY_DICT, MARK, key
  p.global('collections', 'OrderedDict').op(0x29, 0x52); // OrderedDict()
  p.op(0x28); // MARK for SETITEMS
  tensors.forEach((t, key) => {
    p.unicode(t.name).global('torch._utils', '_rebuild_tensor_v2').op(0x28);
    p.op(0x28).unicode('storage').global('torch', DTYPES[t.dtype].storage).unicode(String(key)).unicode('cpu');
    p.int(numelOf(t.shape)).op(0x74, 0x51); // TUPLE, BINPERSID
    p.int(0).tuple(t.shape).tuple(contiguousStride(t.shape)).op(0x89); // offset, size, stride, False
    p.global('collections', 'OrderedDict').op(0x29, 0x52); // backward hooks
    p.op(0x74, 0x52); // TUPLE, REDUCE
  });
  p.op(0x75); // SETITEMS
  if (lightning) p.unicode('global_step').int(lightning.globalStep).op(0x75);
  return p.op(0x2e).bytes();
}
