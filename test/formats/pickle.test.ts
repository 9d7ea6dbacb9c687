import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CkptError } from '../../src/errors.js';
import { readPlainPickle, readTorchPickle } from '../../src/formats/pickle.js';
import { MAX_PICKLE_BYTES } from '../../src/limits.js';
import { scanPickleGlobals } from '../../src/formats/pickle-scan.js';
import { pickle, stateDictPickle, type TensorSpec } from '../helpers/pickle-builder.js';

const FILE = 'test.pkl';

function read(bytes: Uint8Array, opts: { container?: 'zip' | 'legacy'; allowUnsafePickle?: boolean } = {}) {
  return readTorchPickle(bytes, { file: FILE, container: opts.container ?? 'zip', allowUnsafePickle: opts.allowUnsafePickle });
}

function errorOf(fn: () => unknown): CkptError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CkptError) return e;
    throw new Error(`expected a CkptError, got ${String(e)}`);
  }
  throw new Error('expected an error');
}

const W: TensorSpec = { name: 'w', key: '0', numel: 6, size: [2, 3] };
const B: TensorSpec = { name: 'b', key: '1', numel: 2, size: [2], cls: 'HalfStorage' };

describe('readTorchPickle: tensors', () => {
  it('reads a plain state dict into descriptors', () => {
    const r = read(stateDictPickle([W, B]));
    expect(r.protocol).toBe(2);
    expect(r.wrapperPath).toEqual([]);
    expect(r.extras).toEqual({});
    expect(r.tensors).toEqual([
      { name: 'w', dtype: 'F32', storage: { key: '0', dtype: 'F32', numel: 6, location: 'cpu' }, storageOffset: 0, shape: [2, 3], stride: [3, 1] },
      { name: 'b', dtype: 'F16', storage: { key: '1', dtype: 'F16', numel: 2, location: 'cpu' }, storageOffset: 0, shape: [2], stride: [1] },
    ]);
    expect(r.globals.every((g) => g.safety === 'allowed')).toBe(true);
  });

  it('keeps views: offsets, transposed strides, scalars, empty tensors, shared storages', () => {
    const r = read(
      stateDictPickle([
        { name: 'slice', key: '10', numel: 12, offset: 2, size: [4], stride: [1] },
        { name: 't', key: '10', numel: 12, size: [4, 3], stride: [1, 4] },
        { name: 'scalar', key: '11', numel: 1, size: [] },
        { name: 'empty', key: '12', numel: 0, size: [0, 5] },
        { name: 'cuda', key: '13', numel: 1, size: [1], location: 'cuda:0', cls: 'LongStorage', module: 'torch.cuda' },
      ]),
    );
    const by = Object.fromEntries(r.tensors.map((t) => [t.name, t]));
    expect(by.slice).toMatchObject({ storageOffset: 2, shape: [4], stride: [1] });
    expect(by.t).toMatchObject({ shape: [4, 3], stride: [1, 4] });
    expect(by.slice.storage).toBe(by.t.storage);
    expect(by.scalar).toMatchObject({ shape: [], stride: [] });
    expect(by.empty).toMatchObject({ shape: [0, 5] });
    expect(by.cuda).toMatchObject({ dtype: 'I64', storage: { location: 'cuda:0' } });
  });

  it('unwraps Lightning checkpoints and keeps plain top-level values as extras', () => {
    const b = pickle().proto(2).emptyDict().mark();
    b.str('epoch').int(6).str('global_step').int(470000).str('pytorch-lightning_version').str('1.4.2');
    b.str('state_dict').stateDict([W]);
    b.str('callbacks').emptyDict().global('pytorch_lightning.callbacks.model_checkpoint', 'ModelCheckpoint');
    b.emptyDict().mark().str('monitor').none().str('best_model_path').str('/x/last.ckpt').setitems().setitem();
    b.str('optimizer_states').emptyList().str('lr_schedulers').emptyList();
    b.str('hparams').global('argparse', 'Namespace').emptyTuple().newobj().emptyDict().str('lr').float(1e-4).setitem().build();
    const r = read(b.setitems().stop().done());
    expect(r.wrapperPath).toEqual(['state_dict']);
    expect(r.tensors.map((t) => t.name)).toEqual(['w']);
    expect(r.extras).toEqual({ epoch: 6, global_step: 470000, 'pytorch-lightning_version': '1.4.2' });
  });

  it('descends nested state_dict wrappers', () => {
    const b = pickle().proto(2).emptyDict().str('state_dict').emptyDict().str('state_dict').stateDict([W]).setitem().setitem().stop();
    expect(read(b.done()).wrapperPath).toEqual(['state_dict', 'state_dict']);
  });

  it('flattens nested dicts of tensors with dotted keys; duplicates are refused', () => {
    const nested = pickle().proto(2).emptyDict().mark();
    nested.str('model').emptyDict().str('a').tensor({ ...W, name: 'a' }).setitem();
    nested.str('ema').emptyDict().str('b').tensor({ ...B, name: 'b' }).setitem();
    nested.str('step').int(3);
    const r = read(nested.setitems().stop().done());
    expect(r.tensors.map((t) => t.name)).toEqual(['model.a', 'ema.b']);
    expect(r.extras).toEqual({ step: 3 });

    const dup = pickle().proto(2).emptyDict().mark();
    dup.str('m').emptyDict().str('a').tensor(W).setitem();
    dup.str('m.a').tensor(W);
    expect(errorOf(() => read(dup.setitems().stop().done())).code).toBe('E_DUPLICATE_TENSOR');
  });

  it('drops the BUILD _metadata state of an OrderedDict and accepts OrderedDict([(k, v), ...])', () => {
    const b = pickle().proto(2).orderedDict().str('w').tensor(W).setitem();
    b.emptyDict().str('_metadata').orderedDict().str('').emptyDict().str('version').int(1).setitem().setitem().setitem().build();
    expect(read(b.stop().done()).tensors.map((t) => t.name)).toEqual(['w']);

    const pairs = pickle().proto(2).global('collections', 'OrderedDict').emptyList().mark();
    pairs.str('x').tensor(W).tupleN(2).str('y').tensor(B).tupleN(2).appends().tupleN(1).reduce();
    expect(read(pairs.stop().done()).tensors.map((t) => t.name)).toEqual(['x', 'y']);
  });

  it('reads dicts built with MARK ... DICT (protocol 1)', () => {
    const b = pickle().mark().str('w').tensor(W).raw('d').stop();
    expect(read(b.done()).tensors.map((t) => t.name)).toEqual(['w']);
  });

  it('reads protocol 4 pickles (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL)', () => {
    const b = pickle().proto(4).frame(0);
    b.shortStr('collections').memoize().shortStr('OrderedDict').memoize().stackGlobal().memoize().emptyTuple().reduce().memoize();
    b.shortStr('w').memoize();
    b.shortStr('torch._utils').shortStr('_rebuild_tensor_v2').stackGlobal().mark();
    b.mark().shortStr('storage').shortStr('torch').shortStr('FloatStorage').stackGlobal().shortStr('0').shortStr('cpu').int(6).tuple().binpersid();
    b.int(0).intTuple([2, 3]).intTuple([3, 1]).bool(false).get(2).emptyTuple().reduce().tuple().reduce();
    b.setitem().stop();
    const r = read(b.done());
    expect(r.protocol).toBe(4);
    expect(r.tensors).toEqual([expect.objectContaining({ name: 'w', dtype: 'F32', shape: [2, 3] })]);
  });

  it('unwraps _rebuild_parameter and _rebuild_from_type_v2 with torch.Tensor / Parameter', () => {
    const b = pickle().proto(2).orderedDict().mark();
    b.str('p').global('torch._utils', '_rebuild_parameter').tensor(W).bool(true).orderedDict().tupleN(3).reduce();
    b.str('q').global('torch._tensor', '_rebuild_from_type_v2').mark().global('torch._utils', '_rebuild_tensor_v2');
    b.global('torch.nn.parameter', 'Parameter').mark().persid({ ...B, legacy: false }).int(0).intTuple([2]).intTuple([1]).bool(false).orderedDict().tuple();
    b.emptyDict().tuple().reduce();
    const r = read(b.setitems().stop().done());
    expect(r.tensors.map((t) => [t.name, t.dtype])).toEqual([
      ['p', 'F32'],
      ['q', 'F16'],
    ]);
  });

  it('reads _rebuild_tensor_v3 on an untyped storage with a dtype global', () => {
    const b = pickle().proto(2).orderedDict().str('h').global('torch._utils', '_rebuild_tensor_v3').mark();
    b.persid({ ...W, cls: 'UntypedStorage', module: 'torch.storage', numel: 8 }).int(1).intTuple([3]).intTuple([1]).bool(false).orderedDict();
    b.global('torch', 'float16').tuple().reduce().setitem();
    const [t] = read(b.stop().done()).tensors;
    expect(t).toMatchObject({ dtype: 'F16', storageOffset: 1, shape: [3], storage: { dtype: 'U8', numel: 8 } });
  });

  it('decodes numpy scalars and _codecs.encode bytes found next to the weights', () => {
    const b = pickle().proto(2).emptyDict().mark();
    b.str('best').global('numpy.core.multiarray', 'scalar').global('numpy', 'dtype').str('f8').bool(false).bool(true).tupleN(3).reduce();
    b.mark().int(3).str('<').none().none().none().binint(-1).binint(-1).int(0).tuple().build();
    b.global('_codecs', 'encode').str('\u0000\u0000\u0000\u0000\u0000\u0000\u00f8?').str('latin1').tupleN(2).reduce().tupleN(2).reduce();
    b.str('n').global('numpy._core.multiarray', 'scalar').global('numpy', 'dtype').str('i4').bool(false).bool(true).tupleN(3).reduce();
    b.bytes(Uint8Array.from([7, 0, 0, 0])).tupleN(2).reduce();
    b.str('state_dict').stateDict([W]);
    const r = read(b.setitems().stop().done());
    expect(r.extras).toEqual({ best: 1.5, n: 7 });
  });

  it('keeps values of allowed helpers (torch.Size, torch.device, set) without calling anything', () => {
    const v = readPlainPickle(
      pickle()
        .proto(2)
        .mark()
        .global('torch', 'Size').intTuple([2, 3]).tupleN(1).reduce()
        .global('torch', 'device').str('cuda').int(0).tupleN(2).reduce()
        .global('__builtin__', 'set').emptyList().mark().int(1).int(2).appends().tupleN(1).reduce()
        .tuple()
        .stop()
        .done(),
      { file: FILE },
    ).value;
    expect(v).toEqual([[2, 3], 'cuda:0', [1, 2]]);
  });
});

describe('readTorchPickle: structure errors', () => {
  it('refuses a top level without tensors', () => {
    expect(errorOf(() => read(pickle().proto(2).emptyList().stop().done())).code).toBe('E_PICKLE_NO_STATE_DICT');
    expect(errorOf(() => read(pickle().proto(2).emptyDict().str('epoch').int(1).setitem().stop().done())).code).toBe('E_PICKLE_NO_STATE_DICT');
  });

  it('refuses a top-level object built by an unknown global', () => {
    const b = pickle().proto(2).global('mymodule', 'Model').emptyTuple().newobj().emptyDict().build().stop();
    const e = errorOf(() => read(b.done()));
    expect(e.code).toBe('E_PICKLE_UNSUPPORTED_GLOBAL');
    expect(e.message).toContain('mymodule.Model');
  });

  it('refuses state-dict entries that an unknown global built from tensors, ignores others', () => {
    const hidden = pickle().proto(2).orderedDict().mark().str('w').tensor(W);
    hidden.str('q').global('mymodule', 'QTensor').tensor(B).tupleN(1).reduce();
    expect(errorOf(() => read(hidden.setitems().stop().done())).code).toBe('E_PICKLE_UNSUPPORTED_GLOBAL');

    const harmless = pickle().proto(2).orderedDict().mark().str('w').tensor(W);
    harmless.str('cfg').global('omegaconf', 'DictConfig').str('x').tupleN(1).reduce();
    expect(read(harmless.setitems().stop().done()).tensors.map((t) => t.name)).toEqual(['w']);
  });

  it('refuses cycles', () => {
    const b = pickle().proto(2).emptyDict().put(0).str('w').tensor(W).setitem().str('self').get(0).setitem();
    // Not a cycle at the top: the walker visits `self` as a nested dict and finds itself on its path.
    expect(errorOf(() => read(b.stop().done())).code).toBe('E_PICKLE_MALFORMED');
  });
});

/** A well-formed state dict whose single tensor is built by `emit`. */
function withTensor(emit: (b: ReturnType<typeof pickle>) => void, proto = 2): Uint8Array {
  const b = pickle().proto(proto).orderedDict().str('w');
  emit(b);
  return b.setitem().stop().done();
}

function deepDicts(depth: number): Uint8Array {
  const b = pickle().proto(2).emptyDict();
  for (let i = 0; i < depth; i++) b.str('k').emptyDict();
  b.str('w').tensor(W).setitem();
  for (let i = 0; i < depth; i++) b.setitem();
  return b.stop().done();
}

interface Hostile {
  name: string;
  bytes: Uint8Array;
  code: string;
  /** Dangerous pickles: the scan must report them and allowUnsafePickle must not run them. */
  dangerous?: boolean;
  /** The code with allowUnsafePickle, when the pickle is malformed beyond its globals. */
  unsafeCode?: string;
}

const CATALOGUE: Hostile[] = [
  { name: 'stack underflow (REDUCE on an empty stack)', bytes: pickle().proto(2).reduce().stop().done(), code: 'E_PICKLE_STACK' },
  { name: 'STOP on an empty stack', bytes: pickle().proto(2).stop().done(), code: 'E_PICKLE_STACK' },
  { name: 'MARK underflow (SETITEMS without MARK)', bytes: pickle().proto(2).emptyDict().setitems().stop().done(), code: 'E_PICKLE_STACK' },
  { name: 'TUPLE without MARK', bytes: pickle().proto(2).none().tuple().stop().done(), code: 'E_PICKLE_STACK' },
  { name: 'missing memo entry', bytes: pickle().proto(2).get(5).stop().done(), code: 'E_PICKLE_MEMO' },
  { name: 'unknown opcode', bytes: Uint8Array.from([0x80, 2, 0xff, 0x2e]), code: 'E_PICKLE_OPCODE' },
  { name: 'truncated string', bytes: Uint8Array.from([0x80, 2, 0x58, 0x10, 0, 0, 0, 0x61, 0x62]), code: 'E_TRUNCATED' },
  { name: 'truncated before STOP', bytes: stateDictPickle([W]).subarray(0, 60), code: 'E_TRUNCATED' },
  { name: 'APPEND onto a non-list', bytes: pickle().proto(2).none().none().append().stop().done(), code: 'E_PICKLE_MALFORMED' },
  { name: 'REDUCE on a non-callable', bytes: pickle().proto(2).int(1).emptyTuple().reduce().stop().done(), code: 'E_PICKLE_MALFORMED' },
  { name: 'deep nesting (2,000 dicts)', bytes: deepDicts(2000), code: 'E_LIMIT' },
  {
    name: 'persistent id not a storage tuple',
    bytes: pickle().proto(2).mark().str('module').none().tuple().binpersid().stop().done(),
    code: 'E_PICKLE_PERSISTENT_ID',
  },
  { name: 'text PERSID', bytes: pickle().proto(2).raw('P0\n').stop().done(), code: 'E_PICKLE_PERSISTENT_ID' },
  { name: 'storage key not a string', bytes: stateDictPickle([{ ...W, key: 5 }]), code: 'E_PICKLE_PERSISTENT_ID' },
  { name: 'storage class not a storage', bytes: stateDictPickle([{ ...W, module: 'collections', cls: 'OrderedDict' }]), code: 'E_PICKLE_PERSISTENT_ID' },
  {
    name: 'storage declared twice with different sizes',
    bytes: stateDictPickle([W, { ...W, name: 'v', numel: 7 }]),
    code: 'E_PICKLE_PERSISTENT_ID',
  },
  { name: 'legacy 6-tuple in a zip pickle', bytes: stateDictPickle([{ ...W, legacy: true }]), code: 'E_PICKLE_PERSISTENT_ID' },
  {
    name: 'negative shape',
    bytes: withTensor((b) => b.global('torch._utils', '_rebuild_tensor_v2').mark().persid(W).int(0).binint(-1).tupleN(1).intTuple([1]).bool(false).orderedDict().tuple().reduce()),
    code: 'E_TENSOR_SHAPE',
  },
  { name: 'rank 9', bytes: stateDictPickle([{ ...W, numel: 1, size: [1, 1, 1, 1, 1, 1, 1, 1, 1] }]), code: 'E_TENSOR_SHAPE' },
  { name: 'stride rank differs from size rank', bytes: stateDictPickle([{ ...W, stride: [1] }]), code: 'E_TENSOR_SHAPE' },
  { name: 'tensor past the end of its storage', bytes: stateDictPickle([{ ...W, numel: 5 }]), code: 'E_TENSOR_BOUNDS' },
  { name: 'complex dtype', bytes: stateDictPickle([{ ...W, cls: 'ComplexFloatStorage' }]), code: 'E_TENSOR_DTYPE' },
  { name: 'quantized dtype', bytes: stateDictPickle([{ ...W, cls: 'QInt8Storage' }]), code: 'E_TENSOR_DTYPE' },
  {
    name: 'float8 via _rebuild_tensor_v3',
    bytes: withTensor((b) =>
      b.global('torch._utils', '_rebuild_tensor_v3').mark().persid({ ...W, cls: 'UntypedStorage', module: 'torch.storage' }).int(0).intTuple([6]).intTuple([1]).bool(false).orderedDict().global('torch', 'float8_e4m3fn').tuple().reduce(),
    ),
    code: 'E_TENSOR_DTYPE',
  },
  {
    name: 'conj bit in tensor metadata',
    bytes: stateDictPickle([{ ...W, metadata: (b) => b.emptyDict().str('conj').bool(true).setitem() }]),
    code: 'E_TENSOR_DTYPE',
  },
  {
    name: 'sparse tensor rebuild',
    bytes: withTensor((b) => b.global('torch._utils', '_rebuild_sparse_tensor').emptyTuple().reduce()),
    code: 'E_PICKLE_UNSUPPORTED_GLOBAL',
  },
  {
    name: 'storage class called directly',
    bytes: withTensor((b) => b.global('torch', 'FloatStorage').emptyTuple().reduce()),
    code: 'E_PICKLE_UNSUPPORTED_GLOBAL',
  },
  {
    name: 'tensor subclass in _rebuild_from_type_v2',
    bytes: withTensor((b) =>
      b.global('torch._tensor', '_rebuild_from_type_v2').mark().global('torch._utils', '_rebuild_tensor_v2').global('mymod', 'MyTensor')
        .mark().persid(W).int(0).intTuple([2, 3]).intTuple([3, 1]).bool(false).orderedDict().tuple().emptyDict().tuple().reduce(),
    ),
    code: 'E_PICKLE_UNSUPPORTED_GLOBAL',
  },
  { name: 'extension registry code', bytes: pickle().proto(2).raw(0x82, 1).stop().done(), code: 'E_PICKLE_UNSUPPORTED_GLOBAL' },
  {
    name: '`posix system` via GLOBAL + REDUCE',
    bytes: withTensor((b) => b.tensor(W).setitem().str('x').global('posix', 'system').str('echo pwned').tupleN(1).reduce()),
    code: 'E_UNSAFE_PICKLE',
    dangerous: true,
  },
  {
    name: '`builtins eval` via STACK_GLOBAL (protocol 4)',
    bytes: withTensor((b) => b.tensor(W).setitem().shortStr('x').shortStr('builtins').shortStr('eval').stackGlobal().shortStr('1+1').tupleN(1).reduce(), 4),
    code: 'E_UNSAFE_PICKLE',
    dangerous: true,
  },
  {
    name: 'INST `os system` (protocol 0)',
    bytes: pickle().mark().raw("S'echo pwned'\n").inst('os', 'system').raw('0').mark().str('w').tensor(W).raw('d').stop().done(),
    code: 'E_UNSAFE_PICKLE',
    dangerous: true,
  },
  {
    name: 'STACK_GLOBAL on a non-literal',
    bytes: withTensor((b) => b.tensor(W).setitem().shortStr('x').shortStr('os').emptyTuple().stackGlobal().emptyTuple().reduce(), 4),
    code: 'E_UNSAFE_PICKLE',
    dangerous: true,
    unsafeCode: 'E_PICKLE_MALFORMED',
  },
];

describe('hostile and malformed pickles', () => {
  it.each(CATALOGUE.map((h) => [h.name, h] as const))('%s', (_name, h) => {
    const e = errorOf(() => read(h.bytes));
    expect(e.code).toBe(h.code);
    expect(e.file).toBe(FILE);
  });

  it.each(CATALOGUE.filter((h) => h.dangerous).map((h) => [h.name, h] as const))('scan reports %s, the refusal lists it', (_name, h) => {
    const dangerous = scanPickleGlobals(h.bytes, FILE).globals.filter((g) => g.safety === 'dangerous');
    expect(dangerous.length).toBeGreaterThan(0);
    const e = errorOf(() => read(h.bytes));
    expect(e.data?.globals).toEqual(dangerous);
    expect(e.hint).toContain('--allow-unsafe-pickle');
  });

  it.each(CATALOGUE.filter((h) => h.dangerous).map((h) => [h.name, h] as const))('allowUnsafePickle reads %s without calling it', (_name, h) => {
    if (h.unsafeCode) {
      expect(errorOf(() => read(h.bytes, { allowUnsafePickle: true })).code).toBe(h.unsafeCode);
      return;
    }
    const r = read(h.bytes, { allowUnsafePickle: true });
    expect(r.tensors.map((t) => t.name)).toEqual(['w']);
    expect(r.globals.some((g) => g.safety === 'dangerous')).toBe(true);
  });
});

describe('nothing is ever executed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt2diffusers-pickle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a pickle calling `posix system("touch <file>")` leaves no file', () => {
    const target = join(dir, 'pwned');
    for (const [module, name] of [['posix', 'system'], ['os', 'system'], ['subprocess', 'call']]) {
      const bytes = withTensor((b) => b.tensor(W).setitem().str('x').global(module, name).str(`touch ${target}`).tupleN(1).reduce());
      expect(errorOf(() => read(bytes)).code).toBe('E_UNSAFE_PICKLE');
      expect(read(bytes, { allowUnsafePickle: true }).tensors).toHaveLength(1);
    }
    expect(existsSync(target)).toBe(false);
  });

  it('BUILD cannot pollute prototypes or the handler functions shared across reads', () => {
    const evil = pickle().proto(2).orderedDict().mark().str('w').tensor(W);
    // BUILD with a __proto__ key on a global, on a tuple, and a DICT with a __proto__ key.
    evil.str('a').global('torch._utils', '_rebuild_tensor_v2').emptyDict().str('__proto__').emptyDict().str('polluted').int(1).setitem().setitem().build();
    evil.str('b').emptyTuple().emptyDict().str('__proto__').emptyDict().str('polluted').int(1).setitem().setitem().build();
    evil.str('c').mark().str('__proto__').emptyDict().str('polluted').int(1).setitem().raw('d');
    evil.str('d').global('argparse', 'Namespace').emptyTuple().newobj().emptyDict().str('__proto__').emptyDict().str('polluted').int(1).setitem().setitem().build();
    read(evil.setitems().stop().done());
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
    expect((Map.prototype as unknown as Record<string, unknown>).polluted).toBeUndefined();
    // A later read still works.
    expect(read(stateDictPickle([W])).tensors).toHaveLength(1);
  });

  it('refuses pickles over MAX_PICKLE_BYTES before reading them', () => {
    const big = new Uint8Array(MAX_PICKLE_BYTES + 1);
    expect(errorOf(() => read(big)).code).toBe('E_LIMIT');
  });

  it('keeps numpy arrays as inert placeholders (not extras)', () => {
    const b = pickle().proto(2).emptyDict().mark().str('arr').global('numpy.core.multiarray', '_reconstruct').global('numpy', 'ndarray');
    b.intTuple([0]).bytes(Uint8Array.from([0x62])).tupleN(3).reduce();
    b.mark().int(1).intTuple([2]).global('numpy', 'dtype').str('f4').bool(false).bool(true).tupleN(3).reduce().bool(false).bytes(new Uint8Array(8)).tuple().build();
    b.str('state_dict').stateDict([W]);
    const r = read(b.setitems().stop().done());
    expect(r.extras).toEqual({});
    expect(r.tensors).toHaveLength(1);
  });

  it('large memo indices do not allocate and read fine', () => {
    const b = pickle().proto(2).orderedDict().raw('r', 0xff, 0xff, 0xff, 0xff).str('w').tensor(W).setitem().raw('0').raw('j', 0xff, 0xff, 0xff, 0xff).stop();
    expect(read(b.done()).tensors).toHaveLength(1);
  });
});
