/**
 * The restricted torch unpickler. It turns `data.pkl` (zip) or the legacy object pickle into
 * tensor descriptors without importing or executing anything:
 *
 * 1. scanPickle (pickle-scan.ts) walks every opcode first: dangerous globals are refused unless
 *    allowUnsafePickle, and stack / MARK / memo faults are reported before anything runs.
 * 2. The `pickleparser` VM then runs with our name resolver: every global resolves to a fresh,
 *    inert JS function whose call returns plain data (tensor descriptors, Maps, arrays, numbers)
 *    or an inert placeholder. Nothing from the pickle is ever called.
 * 3. The object graph is unwrapped (Lightning `state_dict`) and flattened into named tensors.
 *
 * References: PyTorch `torch/serialization.py` (`_load`, `_legacy_load`, `persistent_load`),
 * `torch/_utils.py` (`_rebuild_tensor*`, `_rebuild_parameter*`), `torch/_tensor.py`
 * (`_rebuild_from_type_v2`), `torch/_weights_only_unpickler.py`; docs/formats.md §2.5–2.9, §4.
 */
import { types as utilTypes } from 'node:util';
import { BufferReader, Parser } from 'pickleparser';
import { dtypeBytes, numelOf, type DType } from '../dtypes.js';
import { CkptError, ErrorCode, fail, isCkptError } from '../errors.js';
import { MAX_PICKLE_BYTES, MAX_PICKLE_DEPTH, MAX_RANK, MAX_TENSORS } from '../limits.js';
import { canonicalGlobal } from '../safety/globals.js';
import { hasDangerousGlobal, scanPickle, type PickleScan } from './pickle-scan.js';
import type { PickledTensor, StorageRef, TorchPickleResult } from './torch-types.js';

export type PickleContainer = 'zip' | 'legacy';

export interface ReadTorchPickleOptions {
  file: string;
  container: PickleContainer;
  allowUnsafePickle?: boolean;
}

// ------------------------------------------------------------------------------------------------
// Inert values the handlers return. Each defines __setstate__ so that pickleparser's BUILD never
// falls back to Object.assign on them (no own-property or prototype injection).
// ------------------------------------------------------------------------------------------------

abstract class Inert {
  __setstate__(_state: unknown): void {
    // BUILD state is irrelevant for these values.
  }
}

/** A `('storage', ...)` persistent id, validated. */
class StorageValue extends Inert {
  constructor(readonly ref: StorageRef) {
    super();
  }
}

/** A tensor descriptor from a rebuild call; the name is given when the state dict is walked. */
class TensorValue extends Inert {
  constructor(
    readonly dtype: DType,
    readonly storage: StorageRef,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {
    super();
  }
}

/** What an unknown (or refused-but-allowed) global returns when called: it only remembers. */
export class PickleObject extends Inert {
  state: unknown;
  constructor(
    readonly module: string,
    readonly name: string,
    readonly args: readonly unknown[],
  ) {
    super();
  }
  override __setstate__(state: unknown): void {
    this.state = state;
  }
}

/** `numpy.dtype(code, align, copy)` plus the byte order its BUILD state carries. */
class NumpyDtype extends Inert {
  byteOrder = '=';
  constructor(readonly code: string) {
    super();
  }
  override __setstate__(state: unknown): void {
    if (Array.isArray(state) && typeof state[1] === 'string') this.byteOrder = state[1];
  }
}

class ComplexValue extends Inert {
  constructor(
    readonly real: number,
    readonly imag: number,
  ) {
    super();
  }
}

// ------------------------------------------------------------------------------------------------
// Globals as data: what each allowed global turns into.
// ------------------------------------------------------------------------------------------------

/** What the resolver knows about a JS function it handed to the VM for a pickle global. */
interface GlobalInfo {
  readonly module: string;
  readonly name: string;
  /** Alias-normalised `module.name`. */
  readonly key: string;
}

/** Storage classes torch can write, with the dtype their elements have (formats.md §2.6). */
const STORAGE_DTYPES: ReadonlyMap<string, DType> = new Map<string, DType>([
  ['torch.FloatStorage', 'F32'], ['torch.HalfStorage', 'F16'], ['torch.BFloat16Storage', 'BF16'],
  ['torch.DoubleStorage', 'F64'], ['torch.LongStorage', 'I64'], ['torch.IntStorage', 'I32'],
  ['torch.ShortStorage', 'I16'], ['torch.CharStorage', 'I8'], ['torch.ByteStorage', 'U8'],
  ['torch.BoolStorage', 'BOOL'],
  // Untyped storages count bytes; the tensor's dtype comes from _rebuild_tensor_v3.
  ['torch.storage.UntypedStorage', 'U8'], ['torch.UntypedStorage', 'U8'],
]);


/** torch dtype globals (`torch float16`) this reader can copy. */
const TORCH_DTYPES: ReadonlyMap<string, DType> = new Map<string, DType>([
  ['torch.float64', 'F64'], ['torch.double', 'F64'], ['torch.float32', 'F32'], ['torch.float', 'F32'],
  ['torch.float16', 'F16'], ['torch.half', 'F16'], ['torch.bfloat16', 'BF16'], ['torch.int64', 'I64'],
  ['torch.long', 'I64'], ['torch.int32', 'I32'], ['torch.int', 'I32'], ['torch.int16', 'I16'],
  ['torch.short', 'I16'], ['torch.int8', 'I8'], ['torch.uint8', 'U8'], ['torch.bool', 'BOOL'],
]);

const TENSOR_TYPES = new Set(['torch.Tensor', 'torch._tensor.Tensor', 'torch.nn.parameter.Parameter']);

type Handler = (ctx: Interpreter, args: unknown[], g: GlobalInfo) => unknown;

const HANDLERS: ReadonlyMap<string, Handler> = new Map<string, Handler>([
  ['torch._utils._rebuild_tensor', (ctx, a) => ctx.rebuildTensor(a, 4)],
  ['torch._utils._rebuild_tensor_v2', (ctx, a) => ctx.rebuildTensorV2(a)],
  ['torch._utils._rebuild_tensor_v3', (ctx, a) => ctx.rebuildTensorV3(a)],
  ['torch._utils._rebuild_parameter', (ctx, a) => ctx.unwrapParameter(a)],
  ['torch._utils._rebuild_parameter_with_state', (ctx, a) => ctx.unwrapParameter(a)],
  ['torch._tensor._rebuild_from_type_v2', (ctx, a) => ctx.rebuildFromType(a)],
  ['collections.OrderedDict', (ctx, a) => ctx.makeDict(a, 'OrderedDict')],
  ['collections.Counter', (ctx, a) => ctx.makeDict(a, 'Counter')],
  ['torch.Size', (ctx, a) => ctx.makeSize(a)],
  ['torch.device', (ctx, a) => ctx.makeDevice(a)],
  ['builtins.set', (ctx, a) => ctx.makeSet(a)],
  ['builtins.frozenset', (ctx, a) => ctx.makeSet(a)],
  ['builtins.bytearray', (ctx, a) => ctx.makeByteArray(a)],
  ['builtins.complex', (ctx, a) => ctx.makeComplex(a)],
  ['_codecs.encode', (ctx, a) => ctx.codecsEncode(a)],
  ['numpy.dtype', (_ctx, a) => new NumpyDtype(typeof a[0] === 'string' ? a[0] : '?')],
  ['numpy.core.multiarray.scalar', (_ctx, a, g) => numpyScalar(a, g)],
]);

/** torch rebuild functions for tensors this reader cannot represent (sparse, quantized, ...). */
function isUnsupportedRebuild(g: GlobalInfo): boolean {
  return (g.module === 'torch._utils' || g.module === 'torch._tensor') && g.name.startsWith('_rebuild_') && !HANDLERS.has(g.key);
}

const globalInfo = new WeakMap<object, GlobalInfo>();

function infoOf(x: unknown): GlobalInfo | undefined {
  return typeof x === 'function' ? globalInfo.get(x) : undefined;
}

// ------------------------------------------------------------------------------------------------
// Small validators.
// ------------------------------------------------------------------------------------------------

/** A non-negative safe integer (pickle ints may be numbers, booleans never, LONG4 bigints). */
function asIndex(v: unknown): number | undefined {
  if (typeof v === 'bigint') v = v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `a tuple of ${v.length}`;
  if (utilTypes.isMap(v)) return 'a dict';
  const g = infoOf(v);
  if (g) return `the global ${g.module}.${g.name}`;
  if (v instanceof PickleObject) return `an object built by ${v.module}.${v.name}`;
  if (typeof v === 'string') return `the string "${v.slice(0, 40)}"`;
  return typeof v === 'object' ? (v.constructor?.name ?? 'an object') : `${typeof v} ${String(v)}`;
}

/** Entries of a pickled dict. pickleparser's DICT opcode stores items as properties of the Map. */
function entriesOf(m: Map<unknown, unknown>): Array<[unknown, unknown]> {
  const own = Object.entries(m);
  const items = [...Map.prototype.entries.call(m)] as Array<[unknown, unknown]>;
  return own.length === 0 ? items : [...items, ...own];
}

function isDict(v: unknown): v is Map<unknown, unknown> {
  return utilTypes.isMap(v);
}

function dictGet(m: Map<unknown, unknown>, key: string): unknown {
  if (Map.prototype.has.call(m, key)) return Map.prototype.get.call(m, key);
  return Object.prototype.hasOwnProperty.call(m, key) ? (m as unknown as Record<string, unknown>)[key] : undefined;
}

const float16 = (bits: number): number => {
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  const sign = bits & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
};

/** `numpy.core.multiarray.scalar(dtype, bytes)` → a JS number where the dtype is a plain number type. */
function numpyScalar(args: unknown[], g: GlobalInfo): unknown {
  const [dtype, raw] = args;
  const bytes = typeof raw === 'string' ? latin1Bytes(raw) : raw;
  if (!(dtype instanceof NumpyDtype) || !(bytes instanceof Uint8Array)) return new PickleObject(g.module, g.name, args);
  const little = dtype.byteOrder !== '>';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const code = dtype.code.replace(/^[<>=|]/, '');
  const size = Number(code.slice(1));
  if (code !== '?' && bytes.length !== size) return new PickleObject(g.module, g.name, args);
  switch (code[0]) {
    case 'f':
      if (size === 8) return view.getFloat64(0, little);
      if (size === 4) return view.getFloat32(0, little);
      if (size === 2) return float16(view.getUint16(0, little));
      break;
    case 'i':
    case 'u': {
      const signed = code[0] === 'i';
      if (size === 1) return signed ? view.getInt8(0) : view.getUint8(0);
      if (size === 2) return signed ? view.getInt16(0, little) : view.getUint16(0, little);
      if (size === 4) return signed ? view.getInt32(0, little) : view.getUint32(0, little);
      if (size === 8) {
        const v = signed ? view.getBigInt64(0, little) : view.getBigUint64(0, little);
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      break;
    }
    case 'b':
    case '?':
      if (bytes.length === 1) return bytes[0] !== 0;
      break;
  }
  return new PickleObject(g.module, g.name, args);
}

function latin1Bytes(s: string): Uint8Array | undefined {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return undefined;
    out[i] = c;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The interpreter context: name and persistent-id resolution for one pickle.
// ------------------------------------------------------------------------------------------------

class Interpreter {
  private readonly storages = new Map<string, StorageValue>();

  constructor(
    readonly file: string,
    /** null: persistent ids are not expected (the small legacy header pickles). */
    readonly container: PickleContainer | null,
  ) {}

  storageRefs(): StorageRef[] {
    return [...this.storages.values()].map((s) => s.ref);
  }

  fail(code: ErrorCode, message: string, data?: Record<string, unknown>): never {
    fail(code, this.file, message, data ? { data } : {});
  }

  /** Every global becomes a fresh function: BUILD on it hits its own __setstate__, never a shared object. */
  resolveGlobal(module: unknown, name: unknown): (...args: unknown[]) => unknown {
    if (typeof module !== 'string' || typeof name !== 'string') {
      this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: STACK_GLOBAL on ${describe(module)} and ${describe(name)} (expected two strings).`);
    }
    const key = canonicalGlobal(module, name);
    const info: GlobalInfo = { module, name, key };
    const call = (args: unknown[]): unknown => this.callGlobal(info, args);
    const fn = function (this: unknown, ...args: unknown[]): unknown {
      const result = call(args);
      // Reflect.construct would discard a primitive result and return a bare `this`.
      const isObject = (typeof result === 'object' && result !== null) || typeof result === 'function';
      return new.target !== undefined && !isObject ? new PickleObject(module, name, args) : result;
    };
    Object.defineProperty(fn, '__setstate__', { value: () => undefined, enumerable: false });
    globalInfo.set(fn, info);
    return fn;
  }

  /** REDUCE / NEWOBJ / INST on a global. Only handlers run; everything else is remembered. */
  private callGlobal(g: GlobalInfo, args: unknown[]): unknown {
    const handler = HANDLERS.get(g.key);
    if (handler) return handler(this, args, g);
    if (STORAGE_DTYPES.has(g.key) || g.key.endsWith('Storage')) {
      this.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: storage class ${g.module}.${g.name} is called outside a storage persistent id; this reader only accepts storages as persistent ids.`, {
        global: `${g.module}.${g.name}`,
      });
    }
    if (isUnsupportedRebuild(g)) {
      this.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: tensor rebuild function ${g.module}.${g.name} is not supported (sparse, quantized, nested or device tensors are not Stable Diffusion weights).`, {
        global: `${g.module}.${g.name}`,
      });
    }
    return new PickleObject(g.module, g.name, args);
  }

  resolvePersistent(pid: unknown): StorageValue {
    if (this.container === null) this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, 'pickle: unexpected persistent id in a header pickle.');
    const expected = this.container === 'zip' ? 5 : 6;
    if (!Array.isArray(pid) || pid.length !== expected || pid[0] !== 'storage') {
      this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: persistent id is ${describe(pid)}${Array.isArray(pid) && typeof pid[0] === 'string' ? ` starting with "${pid[0]}"` : ''} (expected a ${expected}-tuple ('storage', class, key, location, numel${expected === 6 ? ', view' : ''})).`);
    }
    const [, cls, key, location, rawNumel, rawView] = pid as unknown[];
    const dtype = this.storageDtype(cls);
    if (typeof key !== 'string' || key.length === 0 || key.length > 1024) {
      this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage key is ${describe(key)} (expected a non-empty string).`);
    }
    if (typeof location !== 'string') this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage "${key}" location is ${describe(location)} (expected a string).`);
    const numel = asIndex(rawNumel);
    if (numel === undefined) this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage "${key}" numel is ${describe(rawNumel)} (expected a non-negative integer).`);
    const view = this.container === 'legacy' ? this.legacyView(key, numel, rawView) : undefined;
    return this.cacheStorage({ key, dtype, numel, location, ...(view ? { view } : {}) });
  }

  private storageDtype(cls: unknown): DType {
    const g = infoOf(cls);
    const dtype = g && STORAGE_DTYPES.get(g.key);
    if (g && dtype) return dtype;
    if (g && g.name.endsWith('Storage')) {
      this.fail(ErrorCode.E_TENSOR_DTYPE, `pickle: storage class ${g.module}.${g.name} holds a dtype this converter does not support (complex and quantized tensors are not Stable Diffusion weights).`, {
        dtype: g.name,
      });
    }
    this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage class in persistent id is ${describe(cls)} (expected a torch *Storage class).`);
  }

  /** Legacy ids may carry `(view_key, offset, size)`: a slice of the root storage (torch < 0.4). */
  private legacyView(key: string, numel: number, raw: unknown): StorageRef['view'] {
    if (raw === null || raw === undefined) return undefined;
    const [viewKey, rawOffset, rawSize] = Array.isArray(raw) && raw.length === 3 ? raw : [];
    const offset = asIndex(rawOffset);
    const size = asIndex(rawSize);
    if (typeof viewKey !== 'string' || offset === undefined || size === undefined || offset + size > numel) {
      this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage "${key}" view metadata is ${describe(raw)} (expected (view_key, offset, size) within ${numel} elements).`);
    }
    return { key: viewKey, offset, size };
  }

  private cacheStorage(ref: StorageRef): StorageValue {
    const cacheKey = ref.view ? `${ref.key}\u0000${ref.view.key}` : ref.key;
    const seen = this.storages.get(cacheKey);
    if (!seen) {
      const v = new StorageValue(ref);
      this.storages.set(cacheKey, v);
      return v;
    }
    const a = seen.ref;
    if (a.dtype !== ref.dtype || a.numel !== ref.numel || a.view?.offset !== ref.view?.offset || a.view?.size !== ref.view?.size) {
      this.fail(ErrorCode.E_PICKLE_PERSISTENT_ID, `pickle: storage "${ref.key}" is declared twice with different types or sizes (${a.dtype}×${a.numel}, then ${ref.dtype}×${ref.numel}).`);
    }
    return seen;
  }

  // --- tensors ----------------------------------------------------------------------------------

  rebuildTensorV2(a: unknown[]): TensorValue {
    if (a.length !== 6 && a.length !== 7) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: _rebuild_tensor_v2 called with ${a.length} arguments (expected 6 or 7).`);
    this.checkMetadata(a[6]);
    return this.rebuildTensor(a.slice(0, 4), 4);
  }

  rebuildTensorV3(a: unknown[]): TensorValue {
    if (a.length !== 7 && a.length !== 8) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: _rebuild_tensor_v3 called with ${a.length} arguments (expected 7 or 8).`);
    this.checkMetadata(a[7]);
    const g = infoOf(a[6]);
    const dtype = g && TORCH_DTYPES.get(g.key);
    if (!dtype) {
      this.fail(ErrorCode.E_TENSOR_DTYPE, `pickle: tensor dtype ${g ? `${g.module}.${g.name}` : describe(a[6])} is not supported (supported: ${[...new Set(TORCH_DTYPES.values())].join(', ')}).`, {
        dtype: g ? g.name : describe(a[6]),
      });
    }
    return this.rebuildTensor(a.slice(0, 4), 4, dtype);
  }

  /** torch 2.x adds a metadata dict; conj/neg bits would change the values, so they are refused. */
  private checkMetadata(meta: unknown): void {
    if (meta === undefined || meta === null) return;
    if (!isDict(meta)) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: tensor metadata is ${describe(meta)} (expected a dict).`);
    for (const [k, v] of entriesOf(meta)) {
      if (v === true && (k === 'conj' || k === 'neg')) {
        this.fail(ErrorCode.E_TENSOR_DTYPE, `pickle: a tensor carries the lazy "${k}" bit; materialise it in torch (tensor.resolve_${k}()) before saving.`, { bit: k });
      }
    }
  }

  /** `(storage, storage_offset, size, stride)`; `dtype` overrides the storage's (v3 on untyped storages). */
  rebuildTensor(a: unknown[], arity: number, dtype?: DType): TensorValue {
    if (a.length < arity) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: tensor rebuild called with ${a.length} arguments (expected ${arity}).`);
    const [storage, rawOffset, rawSize, rawStride] = a;
    if (!(storage instanceof StorageValue)) {
      this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: tensor storage is ${describe(storage)} (expected a storage persistent id).`);
    }
    const ref = storage.ref;
    const isUntyped = ref.dtype === 'U8' && dtype !== undefined;
    if (dtype !== undefined && dtype !== ref.dtype && !isUntyped) {
      this.fail(ErrorCode.E_TENSOR_DTYPE, `pickle: tensor dtype ${dtype} does not match its ${ref.dtype} storage "${ref.key}".`);
    }
    const t = dtype ?? ref.dtype;
    const offset = asIndex(rawOffset);
    if (offset === undefined) this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor storage offset is ${describe(rawOffset)} (expected a non-negative integer).`);
    const shape = this.dims(rawSize, 'size');
    const stride = this.dims(rawStride, 'stride');
    if (stride.length !== shape.length) {
      this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor has ${shape.length} sizes but ${stride.length} strides (expected equal ranks).`);
    }
    this.checkBounds(ref, t, offset, shape, stride);
    return new TensorValue(t, ref, offset, shape, stride);
  }

  private dims(raw: unknown, what: string): number[] {
    if (!Array.isArray(raw)) this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor ${what} is ${describe(raw)} (expected a tuple of integers).`);
    if (raw.length > MAX_RANK) {
      this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor ${what} has rank ${raw.length} (expected at most MAX_RANK = ${MAX_RANK}).`, { rank: raw.length });
    }
    return raw.map((d) => {
      const v = asIndex(d);
      if (v === undefined) this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor ${what} [${raw.map(String).join(', ')}] holds ${describe(d)} (expected non-negative integers).`);
      return v;
    });
  }

  /** The last element a tensor touches must lie inside its storage (or legacy view). */
  private checkBounds(ref: StorageRef, dtype: DType, offset: number, shape: number[], stride: number[]): void {
    let numel: number;
    try {
      numel = numelOf(shape);
    } catch {
      this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor size [${shape.join(', ')}] has more elements than a safe integer.`);
    }
    if (numel === 0) return;
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * stride[i];
    const storageBytes = (ref.view ? ref.view.size : ref.numel) * dtypeBytes(ref.dtype);
    const needBytes = (last + 1) * dtypeBytes(dtype);
    if (!Number.isSafeInteger(needBytes)) this.fail(ErrorCode.E_TENSOR_SHAPE, `pickle: tensor size/stride reach past a safe integer.`);
    if (needBytes > storageBytes) {
      this.fail(ErrorCode.E_TENSOR_BOUNDS, `pickle: tensor (offset ${offset}, size [${shape.join(', ')}], stride [${stride.join(', ')}]) needs ${needBytes} bytes of storage "${ref.key}" (expected at most its ${storageBytes} bytes).`, {
        storage: ref.key,
        needBytes,
        storageBytes,
      });
    }
  }

  unwrapParameter(a: unknown[]): TensorValue {
    if (!(a[0] instanceof TensorValue)) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: parameter wraps ${describe(a[0])} (expected a tensor).`);
    return a[0];
  }

  /** `_rebuild_from_type_v2(func, new_type, args, state)` for plain Tensor / Parameter types only. */
  rebuildFromType(a: unknown[]): unknown {
    const [func, newType, args] = a;
    const f = infoOf(func);
    const t = infoOf(newType);
    if (!t || !TENSOR_TYPES.has(t.key)) {
      this.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: tensor subclass ${t ? `${t.module}.${t.name}` : describe(newType)} is not supported (expected torch.Tensor or torch.nn.Parameter).`);
    }
    const handler = f && HANDLERS.get(f.key);
    if (!f || !handler || !f.key.startsWith('torch._utils._rebuild_')) {
      this.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: _rebuild_from_type_v2 wraps ${describe(func)} (expected a torch._utils rebuild function).`);
    }
    if (!Array.isArray(args)) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: _rebuild_from_type_v2 arguments are ${describe(args)} (expected a tuple).`);
    return handler(this, args, f);
  }

  // --- plain values -----------------------------------------------------------------------------

  /** OrderedDict() / OrderedDict([(k, v), ...]) / Counter({...}); BUILD state is ignored by pickleparser for Maps. */
  makeDict(a: unknown[], what: string): Map<unknown, unknown> {
    const out = new Map<unknown, unknown>();
    if (a.length === 0 || a[0] === null) return out;
    const src = a[0];
    if (isDict(src)) {
      for (const [k, v] of entriesOf(src)) out.set(k, v);
      return out;
    }
    if (!Array.isArray(src)) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: ${what} built from ${describe(src)} (expected a list of pairs).`);
    for (const pair of src) {
      if (!Array.isArray(pair) || pair.length !== 2) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: ${what} item is ${describe(pair)} (expected a (key, value) pair).`);
      out.set(pair[0], pair[1]);
    }
    return out;
  }

  makeSize(a: unknown[]): number[] {
    const dims = a[0];
    if (!Array.isArray(dims)) this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: torch.Size built from ${describe(dims)} (expected a tuple).`);
    return [...dims] as number[];
  }

  makeDevice(a: unknown[]): string {
    const [type, index] = a;
    if (typeof type !== 'string') this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: torch.device built from ${describe(type)} (expected a string).`);
    return typeof index === 'number' ? `${type}:${index}` : type;
  }

  makeSet(a: unknown[]): unknown[] {
    const src = a[0];
    if (src === undefined) return [];
    if (Array.isArray(src)) return [...src];
    if (isDict(src)) return entriesOf(src).map(([k]) => k);
    this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: set built from ${describe(src)} (expected a list).`);
  }

  makeByteArray(a: unknown[]): Uint8Array {
    const [src] = a;
    if (src === undefined) return new Uint8Array(0);
    if (src instanceof Uint8Array) return new Uint8Array(src);
    if (typeof src === 'string') return this.codecsEncode(a);
    this.fail(ErrorCode.E_PICKLE_MALFORMED, `pickle: bytearray built from ${describe(src)} (expected bytes or a latin-1 string).`);
  }

  makeComplex(a: unknown[]): ComplexValue {
    const [re, im] = a;
    return new ComplexValue(typeof re === 'number' ? re : 0, typeof im === 'number' ? im : 0);
  }

  /** Protocol-2 bytes: `_codecs.encode(str, 'latin1')`; every UTF-16 code unit is one byte. */
  codecsEncode(a: unknown[]): Uint8Array {
    const [text, encoding = 'latin1'] = a;
    if (typeof text !== 'string' || typeof encoding !== 'string' || !/^(latin-?1|iso-?8859-?1)$/i.test(encoding)) {
      this.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: _codecs.encode(${describe(text)}, ${describe(encoding)}) is not supported (expected a string and 'latin1').`);
    }
    const out = latin1Bytes(text);
    if (!out) this.fail(ErrorCode.E_PICKLE_MALFORMED, 'pickle: _codecs.encode string has characters above U+00FF (not latin-1).');
    return out;
  }
}

// ------------------------------------------------------------------------------------------------
// Running the VM.
// ------------------------------------------------------------------------------------------------

function scanOrRefuse(bytes: Uint8Array, file: string, allowUnsafe: boolean): PickleScan {
  if (bytes.length > MAX_PICKLE_BYTES) {
    fail(ErrorCode.E_LIMIT, file, `pickle is ${bytes.length} bytes (expected at most MAX_PICKLE_BYTES = ${MAX_PICKLE_BYTES}).`, {
      data: { length: bytes.length, limit: MAX_PICKLE_BYTES },
    });
  }
  const scan = scanPickle(bytes, file);
  if (hasDangerousGlobal(scan.globals) && !allowUnsafe) {
    const dangerous = scan.globals.filter((g) => g.safety === 'dangerous');
    const list = dangerous.map((g) => `${g.module}.${g.name} (${g.reason ?? 'dangerous'})`).join(', ');
    throw new CkptError(ErrorCode.E_UNSAFE_PICKLE, `the pickle imports dangerous globals: ${list}.`, {
      file,
      hint: '--allow-unsafe-pickle reads it anyway without executing anything.',
      data: { globals: dangerous },
    });
  }
  if (scan.problem) fail(scan.problem.code, file, `pickle: ${scan.problem.message}.`, { data: { position: scan.problem.position } });
  return scan;
}

/** Runs pickleparser on the scanned bytes; any error it throws becomes a CkptError naming the file. */
function runVm(bytes: Uint8Array, ctx: Interpreter): unknown {
  const parser = new Parser({
    nameResolver: { resolve: (module: unknown, name: unknown) => ctx.resolveGlobal(module, name) },
    persistentResolver: { resolve: (pid: unknown) => ctx.resolvePersistent(pid) },
    extensionResolver: {
      resolve: (code: number) => ctx.fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, `pickle: extension registry code ${code} is not supported.`),
    },
    unpicklingTypeOfDictionary: 'Map',
    unpicklingTypeOfSet: 'array',
  });
  const reader = new BufferReader(bytes);
  let value: unknown;
  // pickleparser reports integers past 2^53 with console.warn; the library never prints, so the
  // warning is held back for the (synchronous) run. Such values only occur in non-tensor extras.
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    value = parser.read(reader);
  } catch (e) {
    if (isCkptError(e)) throw e;
    const message = e instanceof Error ? e.message : String(e);
    fail(ErrorCode.E_PICKLE_MALFORMED, ctx.file, `pickle: ${message} (near byte ${reader.position}).`, { cause: e, data: { position: reader.position } });
  } finally {
    console.warn = warn;
  }
  if (value === undefined) fail(ErrorCode.E_PICKLE_STACK, ctx.file, 'pickle: STOP on an empty stack.');
  return value;
}

/**
 * Unpickles a pickle that holds no tensors (the legacy header pickles: magic, protocol version,
 * sys_info, storage keys) into plain values: Map, array, string, number, boolean, null.
 */
export function readPlainPickle(bytes: Uint8Array, opts: { file: string; allowUnsafePickle?: boolean }): { value: unknown; scan: PickleScan } {
  const scan = scanOrRefuse(bytes, opts.file, opts.allowUnsafePickle ?? false);
  const value = runVm(bytes.subarray(0, scan.end), new Interpreter(opts.file, null));
  return { value, scan };
}

/** Reads `data.pkl` / the legacy object pickle into tensor descriptors. Never executes anything. */
export function readTorchPickle(bytes: Uint8Array, opts: ReadTorchPickleOptions): TorchPickleResult {
  return interpretTorchPickle(bytes, opts).result;
}

/**
 * readTorchPickle plus every storage the pickle references, in order of first reference, including
 * storages of tensors outside the state dict (optimizer states): the legacy reader needs them all
 * to walk its storage section.
 */
export function interpretTorchPickle(bytes: Uint8Array, opts: ReadTorchPickleOptions): { result: TorchPickleResult; storages: StorageRef[] } {
  const scan = scanOrRefuse(bytes, opts.file, opts.allowUnsafePickle ?? false);
  const ctx = new Interpreter(opts.file, opts.container);
  const top = runVm(bytes.subarray(0, scan.end), ctx);
  const found = unwrapStateDict(top, opts.file);
  return { result: { ...found, protocol: scan.protocol, globals: scan.globals }, storages: ctx.storageRefs() };
}

// ------------------------------------------------------------------------------------------------
// From the object graph to named tensors.
// ------------------------------------------------------------------------------------------------

/** Converts a pickled plain value to JSON, or undefined when it is not a scalar or string. */
function jsonScalar(v: unknown): unknown {
  if (typeof v === 'string' || typeof v === 'boolean' || v === null) return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  return undefined;
}

function keyString(k: unknown): string | undefined {
  if (typeof k === 'string') return k;
  if (typeof k === 'number' && Number.isSafeInteger(k)) return String(k);
  return undefined;
}

class StateDictWalker {
  readonly tensors: PickledTensor[] = [];
  readonly extras: Record<string, unknown> = {};
  private readonly names = new Set<string>();
  private readonly path = new Set<object>();
  private visits = 0;

  constructor(private readonly file: string) {}

  private enter(node: object, depth: number): void {
    if (depth > MAX_PICKLE_DEPTH) {
      fail(ErrorCode.E_LIMIT, this.file, `pickle: containers nest deeper than ${MAX_PICKLE_DEPTH} levels (MAX_PICKLE_DEPTH).`, { data: { limit: MAX_PICKLE_DEPTH } });
    }
    if (this.path.has(node)) fail(ErrorCode.E_PICKLE_MALFORMED, this.file, 'pickle: the state dict contains itself (a reference cycle).');
    // Shared sub-dicts are legal but may be reached many times; bound the total work.
    if (++this.visits > MAX_TENSORS * 4) {
      fail(ErrorCode.E_LIMIT, this.file, `pickle: the state dict has more than ${MAX_TENSORS * 4} entries to walk (MAX_TENSORS).`, { data: { limit: MAX_TENSORS } });
    }
    this.path.add(node);
  }

  addExtra(key: string, v: unknown): void {
    const j = jsonScalar(v);
    if (j !== undefined && !Object.prototype.hasOwnProperty.call(this.extras, key)) {
      Object.defineProperty(this.extras, key, { value: j, enumerable: true, writable: true, configurable: true });
    }
  }

  /** Tensors under `prefix`; nested dicts are flattened with '.'-joined keys. */
  walk(dict: Map<unknown, unknown>, prefix: string, depth: number): void {
    this.enter(dict, depth);
    for (const [k, v] of entriesOf(dict)) {
      const key = keyString(k);
      if (v instanceof TensorValue) {
        if (key === undefined) fail(ErrorCode.E_PICKLE_MALFORMED, this.file, `pickle: a tensor is stored under the key ${describe(k)} (expected a string).`);
        this.addTensor(prefix + key, v);
      } else if (isDict(v)) {
        if (key !== undefined) this.walk(v, `${prefix}${key}.`, depth + 1);
      } else if (v instanceof PickleObject) {
        this.refuseHiddenTensors(v, prefix + (key ?? '?'));
      } else if (depth === 0 && key !== undefined) {
        this.addExtra(prefix + key, v);
      }
    }
    this.path.delete(dict);
  }

  private addTensor(name: string, t: TensorValue): void {
    if (this.names.has(name)) {
      fail(ErrorCode.E_DUPLICATE_TENSOR, this.file, `pickle: tensor "${name}" appears twice after flattening nested dicts.`, { data: { tensor: name } });
    }
    if (this.tensors.length >= MAX_TENSORS) {
      fail(ErrorCode.E_LIMIT, this.file, `pickle: more than ${MAX_TENSORS} tensors (MAX_TENSORS).`, { data: { limit: MAX_TENSORS } });
    }
    this.names.add(name);
    this.tensors.push({ name, dtype: t.dtype, storage: t.storage, storageOffset: t.storageOffset, shape: t.shape, stride: t.stride });
  }

  /** An unknown global built a state-dict value: if tensors went into it, they would be lost silently. */
  private refuseHiddenTensors(obj: PickleObject, name: string): void {
    if (holdsTensor(obj, this.file)) {
      fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, this.file, `pickle: state dict entry "${name}" is built by ${obj.module}.${obj.name}, which this reader does not support, from tensors.`, {
        data: { tensor: name, global: `${obj.module}.${obj.name}` },
      });
    }
  }
}

/** Whether any tensor is reachable from `root` through lists, dicts and placeholders. */
function holdsTensor(root: unknown, file: string): boolean {
  const seen = new Set<object>();
  const stack: Array<[unknown, number]> = [[root, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v instanceof TensorValue) return true;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    if (depth > MAX_PICKLE_DEPTH) fail(ErrorCode.E_LIMIT, file, `pickle: containers nest deeper than ${MAX_PICKLE_DEPTH} levels (MAX_PICKLE_DEPTH).`);
    seen.add(v);
    const children = Array.isArray(v) ? v : isDict(v) ? entriesOf(v).flat() : v instanceof PickleObject ? [...v.args, v.state] : [];
    for (const c of children) stack.push([c, depth + 1]);
  }
  return false;
}

/** Follows `state_dict` wrappers (Lightning, nested twice in some files) and collects tensors and extras. */
function unwrapStateDict(top: unknown, file: string): Pick<TorchPickleResult, 'tensors' | 'wrapperPath' | 'extras'> {
  if (top instanceof PickleObject) {
    fail(ErrorCode.E_PICKLE_UNSUPPORTED_GLOBAL, file, `pickle: the saved object is built by ${top.module}.${top.name}, which this reader does not support (expected a dict of tensors).`, {
      data: { global: `${top.module}.${top.name}` },
    });
  }
  if (!isDict(top)) fail(ErrorCode.E_PICKLE_NO_STATE_DICT, file, `pickle: the saved object is ${describe(top)} (expected a dict of tensors).`);
  const walker = new StateDictWalker(file);
  const wrapperPath: string[] = [];
  let dict = top;
  const seen = new Set<object>([dict]);
  for (;;) {
    const inner = dictGet(dict, 'state_dict');
    if (!isDict(inner) || seen.has(inner)) break;
    for (const [k, v] of entriesOf(dict)) {
      const key = keyString(k);
      if (key !== undefined && key !== 'state_dict') walker.addExtra(key, v);
    }
    seen.add(inner);
    wrapperPath.push('state_dict');
    dict = inner;
  }
  walker.walk(dict, '', 0);
  if (walker.tensors.length === 0) {
    fail(ErrorCode.E_PICKLE_NO_STATE_DICT, file, `pickle: no tensors found${wrapperPath.length ? ` under ${wrapperPath.join('.')}` : ''} (expected a state dict).`);
  }
  return { tensors: walker.tensors, wrapperPath, extras: walker.extras };
}

