/**
 * Classification of pickle globals (`module`, `name` pairs imported by GLOBAL / INST /
 * STACK_GLOBAL) as data: what real Stable Diffusion checkpoints import is 'allowed', what can run
 * code, touch files or the network is 'dangerous', everything else is 'unknown'.
 *
 * Sources: docs/formats.md §4.2–4.4; the allow lists of torch `_weights_only_unpickler.py`,
 * AUTOMATIC1111 `modules/safe.py` and picklescan `_safe_globals`; the deny lists of picklescan
 * `_unsafe_globals`, fickling `UNSAFE_IMPORTS` and torch `_blocklisted_modules`.
 */
import type { GlobalSafety } from '../formats/tensor-source.js';

export interface GlobalClass {
  safety: GlobalSafety;
  reason?: string;
}

/** Storage classes torch writes into persistent ids (formats.md §2.6). */
export const TORCH_STORAGE_CLASSES = [
  'FloatStorage', 'HalfStorage', 'BFloat16Storage', 'DoubleStorage', 'LongStorage', 'IntStorage',
  'ShortStorage', 'CharStorage', 'ByteStorage', 'BoolStorage', 'ComplexFloatStorage',
  'ComplexDoubleStorage', 'QInt8Storage', 'QUInt8Storage', 'QInt32Storage', 'QUInt4x2Storage',
  'QUInt2x4Storage',
] as const;

/** Every `torch.<dtype>` name a pickle may carry as a value (torch/_tensor.py, torch/storage.py). */
export const TORCH_DTYPE_NAMES = [
  'float64', 'double', 'float32', 'float', 'float16', 'half', 'bfloat16', 'int64', 'long', 'int32',
  'int', 'int16', 'short', 'int8', 'uint8', 'bool', 'uint16', 'uint32', 'uint64', 'complex32',
  'chalf', 'complex64', 'cfloat', 'complex128', 'cdouble', 'qint8', 'quint8', 'qint32', 'quint4x2',
  'quint2x4', 'float8_e5m2', 'float8_e4m3fn', 'float8_e5m2fnuz', 'float8_e4m3fnuz', 'float8_e8m0fnu',
  'float4_e2m1fn_x2', 'bits1x8', 'bits2x4', 'bits4x2', 'bits8', 'bits16',
] as const;

function table(entries: ReadonlyArray<readonly [string, string]>): ReadonlyMap<string, string> {
  return new Map(entries);
}

const TENSOR = 'rebuilds a tensor from a storage reference (torch/_utils.py)';
const STORAGE = 'storage class, only meaningful inside a storage persistent id';
const LIGHTNING = 'PyTorch Lightning callback class, used as a dict key in checkpoints';

/** Allowed `module.name` → what it is. Module aliases are normalised first (see canonicalModule). */
const ALLOWED: ReadonlyMap<string, string> = table([
  ['collections.OrderedDict', 'ordered dict (every state dict)'],
  ['collections.Counter', 'counter dict'],
  ['torch._utils._rebuild_tensor', TENSOR],
  ['torch._utils._rebuild_tensor_v2', TENSOR],
  ['torch._utils._rebuild_tensor_v3', TENSOR],
  ['torch._utils._rebuild_parameter', 'wraps a tensor as nn.Parameter'],
  ['torch._utils._rebuild_parameter_with_state', 'wraps a tensor as nn.Parameter with attributes'],
  ['torch._tensor._rebuild_from_type_v2', 'rebuilds a tensor, then sets its Python type'],
  ['torch.Tensor', 'tensor type (argument of _rebuild_from_type_v2)'],
  ['torch._tensor.Tensor', 'tensor type (argument of _rebuild_from_type_v2)'],
  ['torch.nn.parameter.Parameter', 'parameter type (argument of _rebuild_from_type_v2)'],
  ['torch.storage.UntypedStorage', STORAGE],
  ['torch.UntypedStorage', STORAGE],
  ['torch.Size', 'tensor shape tuple'],
  ['torch.device', 'device name'],
  ['numpy.core.multiarray.scalar', 'numpy scalar from raw bytes'],
  ['numpy.core.multiarray._reconstruct', 'numpy array from raw bytes'],
  ['numpy.dtype', 'numpy dtype descriptor'],
  ['numpy.ndarray', 'numpy array type'],
  ['_codecs.encode', 'bytes written by protocol-2 pickles as encode(str, "latin1")'],
  ['builtins.set', 'set'],
  ['builtins.frozenset', 'frozenset'],
  ['builtins.bytearray', 'bytearray'],
  ['builtins.complex', 'complex number'],
  ['pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint', LIGHTNING],
  ['lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint', LIGHTNING],
  ['torch.nn.modules.container.ParameterDict', 'module container of parameters'],
  ...TORCH_STORAGE_CLASSES.map((s) => [`torch.${s}`, STORAGE] as const),
  ...TORCH_DTYPE_NAMES.map((d) => [`torch.${d}`, 'torch dtype'] as const),
]);

const RUNS_CODE = 'runs arbitrary code';
const SHELL = 'runs shell commands';
const FILES = 'reads or writes files';
const NETWORK = 'opens network connections';
const UNPICKLES = 'loads another pickle (runs its code)';
const GETATTR = 'reaches arbitrary attributes of other objects';

/** Modules dangerous in whole: any name in them or in their submodules. */
const DANGEROUS_MODULES: ReadonlyMap<string, string> = table([
  ['os', SHELL], ['posix', SHELL], ['nt', SHELL], ['sys', 'controls the interpreter'],
  ['subprocess', SHELL], ['_posixsubprocess', SHELL], ['commands', SHELL], ['popen2', SHELL],
  ['pty', SHELL], ['platform', SHELL], ['multiprocessing', SHELL],
  ['runpy', RUNS_CODE], ['code', RUNS_CODE], ['codeop', RUNS_CODE], ['importlib', RUNS_CODE],
  ['imp', RUNS_CODE], ['pkgutil', RUNS_CODE], ['marshal', RUNS_CODE], ['cProfile', RUNS_CODE],
  ['profile', RUNS_CODE], ['trace', RUNS_CODE], ['doctest', RUNS_CODE], ['timeit', RUNS_CODE],
  ['pdb', RUNS_CODE], ['bdb', RUNS_CODE], ['pydoc', RUNS_CODE], ['idlelib', RUNS_CODE],
  ['lib2to3', RUNS_CODE], ['ctypes', 'calls native code'], ['_ctypes', 'calls native code'],
  ['pip', 'installs packages'], ['ensurepip', 'installs packages'], ['venv', SHELL],
  ['distutils.file_util', FILES], ['shutil', FILES], ['tempfile', FILES], ['_io', FILES],
  ['socket', NETWORK], ['_socket', NETWORK], ['ssl', NETWORK], ['asyncio', NETWORK],
  ['aiohttp', NETWORK], ['httplib', NETWORK], ['http.client', NETWORK], ['requests', NETWORK],
  ['urllib.request', NETWORK], ['urllib2', NETWORK], ['ftplib', NETWORK], ['smtplib', NETWORK],
  ['telnetlib', NETWORK], ['xmlrpc', NETWORK], ['webbrowser', 'opens programs'],
  ['pickle', UNPICKLES], ['_pickle', UNPICKLES], ['dill', UNPICKLES], ['cloudpickle', UNPICKLES],
  ['joblib', UNPICKLES], ['numpy.f2py', RUNS_CODE], ['numpy.testing._private.utils', SHELL],
  ['torch.hub', 'downloads and runs code'], ['torch.ops', 'calls native operators'],
  ['signal', 'controls the process'],
]);

/** Single dangerous names (module.name). */
const DANGEROUS_NAMES: ReadonlyMap<string, string> = table([
  ...['eval', 'exec', 'execfile', 'compile', 'apply', 'breakpoint', '__import__', 'input', 'reload']
    .map((n) => [`builtins.${n}`, RUNS_CODE] as const),
  ...['getattr', 'setattr', 'delattr', 'globals', 'locals', 'vars']
    .map((n) => [`builtins.${n}`, GETATTR] as const),
  ['builtins.open', FILES], ['builtins.file', FILES],
  ['functools.partial', 'binds arguments to any callable'],
  ['functools.reduce', 'calls any callable'],
  ...['attrgetter', 'itemgetter', 'methodcaller'].flatMap((n) => [
    [`operator.${n}`, GETATTR] as const,
    [`_operator.${n}`, GETATTR] as const,
  ]),
  ['types.CodeType', RUNS_CODE], ['types.FunctionType', RUNS_CODE], ['types.MethodType', RUNS_CODE],
  ['logging.FileHandler', FILES], ['io.open', FILES], ['io.FileIO', FILES],
  ['numpy.load', UNPICKLES], ['numpy.lib.npyio.load', UNPICKLES],
  ['torch.load', UNPICKLES], ['torch.serialization.load', UNPICKLES],
  ['torch.storage._load_from_bytes', 'calls torch.load on embedded bytes'],
  ['torch._inductor.codecache.compile_file', RUNS_CODE],
  ['torch.jit.unsupported_tensor_ops.execWrapper', RUNS_CODE],
  ['torch.utils.collect_env.run', SHELL],
  ['torch.utils._config_module.ConfigModule', RUNS_CODE],
  ['torch.utils.data.datapipes.utils.decoder.basichandlers', UNPICKLES],
  ['torch._dynamo.guards.GuardBuilder', RUNS_CODE],
  ['torch.fx.experimental.symbolic_shapes.ShapeEnv', RUNS_CODE],
  ['torch.jit.load', RUNS_CODE],
]);

/** Python 2 module names and numpy 2 module names mean the same objects as their modern forms. */
function canonicalModule(module: string): string {
  if (module === '__builtin__') return 'builtins';
  if (module === 'numpy._core' || module.startsWith('numpy._core.')) return 'numpy.core' + module.slice('numpy._core'.length);
  return module;
}

/** Old files name storages under `torch.cuda`; torch resolves any `*Storage` name either way. */
function storageAlias(module: string, name: string): string | undefined {
  if (module === 'torch.cuda' && name.endsWith('Storage')) return `torch.${name}`;
  return undefined;
}

function matchesModule(module: string, prefix: string): boolean {
  return module === prefix || module.startsWith(prefix + '.');
}

/** A dotted protocol-4 name such as `A.__init__.__globals__` walks attributes; dunders reach internals. */
function hasDunderAttribute(name: string): boolean {
  const parts = name.split('.');
  return parts.length > 1 && parts.slice(1).some((p) => p.startsWith('__') && p.endsWith('__'));
}

function dangerousReason(module: string, name: string): string | undefined {
  for (const [m, reason] of DANGEROUS_MODULES) {
    if (matchesModule(module, m)) return `${m}: ${reason}`;
  }
  // Exact name, or a qualified name inside it (`ConfigModule.load_config`), or the dotted form of
  // a whole module given as `module` + `name` (`torch` + `hub.load`).
  const head = name.split('.')[0];
  const full = `${module}.${name}`;
  for (const key of [full, `${module}.${head}`]) {
    const reason = DANGEROUS_NAMES.get(key);
    if (reason !== undefined) return reason;
  }
  for (const [m, reason] of DANGEROUS_MODULES) {
    if (matchesModule(full, m)) return `${m}: ${reason}`;
  }
  if (hasDunderAttribute(name)) return 'qualified name reaches a dunder attribute';
  if (module.includes('\n') || name.includes('\n')) return 'malformed global name';
  return undefined;
}

/** Classifies one imported global. Names match exactly; modules also match their submodules. */
export function classifyGlobal(module: string, name: string): GlobalClass {
  const mod = canonicalModule(module);
  const danger = dangerousReason(mod, name);
  if (danger !== undefined) return { safety: 'dangerous', reason: danger };
  const key = storageAlias(mod, name) ?? `${mod}.${name}`;
  const reason = ALLOWED.get(key);
  if (reason !== undefined) return { safety: 'allowed', reason };
  return { safety: 'unknown', reason: 'not on the allow list; never called, kept as an inert placeholder' };
}

/** The fully qualified, alias-normalised key of a global, e.g. `builtins.set` for `__builtin__ set`. */
export function canonicalGlobal(module: string, name: string): string {
  const mod = canonicalModule(module);
  return storageAlias(mod, name) ?? `${mod}.${name}`;
}
