/**
 * Writes pickles opcode by opcode for tests (CPython `Lib/pickletools.py` names the opcodes), plus
 * helpers that emit what torch.save writes for tensors and legacy files (docs/formats.md §2.7, §3).
 */

const enc = new TextEncoder();

export class PickleBuilder {
  private readonly out: number[] = [];

  /** Raw bytes (an opcode given as a one-character string or a number, then its argument bytes). */
  raw(...parts: Array<number | string | Uint8Array | number[]>): this {
    for (const p of parts) {
      if (typeof p === 'number') this.out.push(p);
      else if (typeof p === 'string') this.out.push(...enc.encode(p));
      else this.out.push(...p);
    }
    return this;
  }

  proto(n: number): this {
    return this.raw(0x80, n);
  }
  frame(n: number): this {
    return this.raw(0x95, ...u64(n));
  }
  stop(): this {
    return this.raw('.');
  }
  mark(): this {
    return this.raw('(');
  }
  none(): this {
    return this.raw('N');
  }
  bool(v: boolean): this {
    return this.raw(v ? 0x88 : 0x89);
  }
  /** The smallest int opcode Python would use. */
  int(n: number): this {
    if (n >= 0 && n < 256) return this.raw('K', n);
    if (n >= 0 && n < 65536) return this.raw('M', ...u16(n));
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.raw('J', ...i32(n));
    return this.long1(BigInt(n));
  }
  binint(n: number): this {
    return this.raw('J', ...i32(n));
  }
  long1(v: bigint): this {
    const bytes: number[] = [];
    let x = v;
    // two's complement, little-endian, minimal length
    for (;;) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
      const sign = bytes[bytes.length - 1] & 0x80;
      if ((x === 0n && !sign) || (x === -1n && sign)) break;
    }
    return this.raw(0x8a, bytes.length, ...bytes);
  }
  float(v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, false);
    return this.raw('G', b);
  }
  str(s: string): this {
    const b = enc.encode(s);
    return this.raw('X', ...u32(b.length), b);
  }
  shortStr(s: string): this {
    const b = enc.encode(s);
    return this.raw(0x8c, b.length, b);
  }
  bytes(b: Uint8Array): this {
    return b.length < 256 ? this.raw('C', b.length, b) : this.raw('B', ...u32(b.length), b);
  }
  global(module: string, name: string): this {
    return this.raw('c', `${module}\n${name}\n`);
  }
  inst(module: string, name: string): this {
    return this.raw('i', `${module}\n${name}\n`);
  }
  stackGlobal(): this {
    return this.raw(0x93);
  }
  put(i: number): this {
    return i < 256 ? this.raw('q', i) : this.raw('r', ...u32(i));
  }
  get(i: number): this {
    return i < 256 ? this.raw('h', i) : this.raw('j', ...u32(i));
  }
  memoize(): this {
    return this.raw(0x94);
  }
  emptyTuple(): this {
    return this.raw(')');
  }
  tuple(): this {
    return this.raw('t');
  }
  tupleN(n: 1 | 2 | 3): this {
    return this.raw(0x84 + n);
  }
  emptyList(): this {
    return this.raw(']');
  }
  append(): this {
    return this.raw('a');
  }
  appends(): this {
    return this.raw('e');
  }
  emptyDict(): this {
    return this.raw('}');
  }
  setitem(): this {
    return this.raw('s');
  }
  setitems(): this {
    return this.raw('u');
  }
  reduce(): this {
    return this.raw('R');
  }
  build(): this {
    return this.raw('b');
  }
  newobj(): this {
    return this.raw(0x81);
  }
  binpersid(): this {
    return this.raw('Q');
  }

  /** A tuple of ints the way Python writes it (EMPTY_TUPLE / TUPLE1-3 / MARK ... TUPLE). */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.emptyTuple();
    if (values.length > 3) this.mark();
    for (const v of values) this.int(v);
    return values.length > 3 ? this.tuple() : this.tupleN(values.length as 1 | 2 | 3);
  }

  /** `collections.OrderedDict()` via REDUCE, as torch writes every state dict. */
  orderedDict(): this {
    return this.global('collections', 'OrderedDict').emptyTuple().reduce();
  }

  /** `_rebuild_tensor_v2(('storage', cls, key, 'cpu', numel[, view]), offset, size, stride, False, OrderedDict())`. */
  tensor(t: TensorSpec): this {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.persid(t);
    this.int(t.offset ?? 0).intTuple(t.size).intTuple(t.stride ?? contiguous(t.size)).bool(false).orderedDict();
    if (t.metadata) t.metadata(this);
    return this.tuple().reduce();
  }

  /** The persistent id of a storage: a 5-tuple (zip) or a 6-tuple with view metadata (legacy). */
  persid(t: TensorSpec): this {
    this.mark().str('storage').global(t.module ?? 'torch', t.cls ?? 'FloatStorage');
    if (typeof t.key === 'string') this.str(t.key);
    else this.int(t.key);
    this.str(t.location ?? 'cpu').int(t.numel);
    if (t.legacy) {
      if (t.view) this.str(t.view.key).int(t.view.offset).int(t.view.size).tupleN(3);
      else this.none();
    }
    return this.tuple().binpersid();
  }

  /** `{name: tensor, ...}` as an OrderedDict filled with SETITEMS. */
  stateDict(tensors: readonly TensorSpec[]): this {
    this.orderedDict().mark();
    for (const t of tensors) this.str(t.name).tensor(t);
    return this.setitems();
  }

  done(): Uint8Array {
    return Uint8Array.from(this.out);
  }
  /** Bytes written so far. */
  get length(): number {
    return this.out.length;
  }
}

export interface TensorSpec {
  name: string;
  cls?: string;
  module?: string;
  key: string | number;
  numel: number;
  location?: string;
  offset?: number;
  size: readonly number[];
  stride?: readonly number[];
  legacy?: boolean;
  view?: { key: string; offset: number; size: number };
  /** Emits the optional 7th argument. */
  metadata?: (b: PickleBuilder) => void;
}

export function pickle(): PickleBuilder {
  return new PickleBuilder();
}

export function contiguous(size: readonly number[]): number[] {
  const stride = new Array<number>(size.length);
  let s = 1;
  for (let i = size.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= size[i];
  }
  return stride;
}

/** A complete protocol-2 pickle of a plain state dict. */
export function stateDictPickle(tensors: readonly TensorSpec[]): Uint8Array {
  return pickle().proto(2).stateDict(tensors).stop().done();
}

export function u16(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}
export function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}
export function i32(n: number): number[] {
  return u32(n >>> 0);
}
export function u64(n: number): number[] {
  return [...u32(n % 2 ** 32), ...u32(Math.floor(n / 2 ** 32))];
}

// ------------------------------------------------------------------------------------------------
// Legacy files: five pickles, then `count, bytes` per storage key.
// ------------------------------------------------------------------------------------------------

export interface LegacyStorage {
  key: string;
  /** Element count written in the header (defaults to data.length / itemsize). */
  count?: number;
  itemsize: number;
  data: Uint8Array;
}

export interface LegacyFileSpec {
  /** The object pickle (must use 6-tuple persistent ids). */
  object: Uint8Array;
  storages: readonly LegacyStorage[];
  /** Overrides for the header pickles. */
  magic?: Uint8Array;
  protocolVersion?: number;
  littleEndian?: boolean;
  keys?: readonly string[];
  headerProtocol?: number;
}

export function legacyMagicPickle(protocol = 2): Uint8Array {
  return pickle().proto(protocol).raw(0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19).stop().done();
}

export function legacyFile(spec: LegacyFileSpec): Uint8Array {
  const p = spec.headerProtocol ?? 2;
  const parts: Uint8Array[] = [
    spec.magic ?? legacyMagicPickle(p),
    pickle().proto(p).int(spec.protocolVersion ?? 1001).stop().done(),
    pickle()
      .proto(p)
      .emptyDict()
      .mark()
      .str('protocol_version').int(1001)
      .str('little_endian').bool(spec.littleEndian ?? true)
      .str('type_sizes').emptyDict().mark().str('short').int(2).str('int').int(4).str('long').int(4).setitems()
      .setitems()
      .stop()
      .done(),
    spec.object,
  ];
  const keys = spec.keys ?? spec.storages.map((s) => s.key);
  const list = pickle().proto(p).emptyList().mark();
  for (const k of keys) list.str(k);
  parts.push(list.appends().stop().done());
  for (const s of spec.storages) {
    const count = s.count ?? s.data.length / s.itemsize;
    const header = new Uint8Array(8);
    new DataView(header.buffer).setBigInt64(0, BigInt(count), true);
    parts.push(header, s.data);
  }
  const total = parts.reduce((n, b) => n + b.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const b of parts) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

export function f32Bytes(values: readonly number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}
