import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CkptError } from '../../src/errors.js';
import { scanPickle, scanPickleGlobals } from '../../src/formats/pickle-scan.js';
import { classifyGlobal } from '../../src/safety/globals.js';
import { pickle, stateDictPickle, u32, u64 } from '../helpers/pickle-builder.js';
import { sharedFixture } from '../helpers/paths.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof CkptError) return e.code;
    throw e;
  }
  return undefined;
}

describe('classifyGlobal', () => {
  it.each([
    ['collections', 'OrderedDict', 'allowed'],
    ['torch._utils', '_rebuild_tensor_v2', 'allowed'],
    ['torch', 'HalfStorage', 'allowed'],
    ['torch.cuda', 'FloatStorage', 'allowed'],
    ['torch', 'float16', 'allowed'],
    ['__builtin__', 'set', 'allowed'],
    ['numpy._core.multiarray', 'scalar', 'allowed'],
    ['pytorch_lightning.callbacks.model_checkpoint', 'ModelCheckpoint', 'allowed'],
    ['posix', 'system', 'dangerous'],
    ['os.path', 'join', 'dangerous'],
    ['__builtin__', 'eval', 'dangerous'],
    ['builtins', 'getattr', 'dangerous'],
    ['_operator', 'attrgetter', 'dangerous'],
    ['torch.storage', '_load_from_bytes', 'dangerous'],
    ['torch.utils._config_module', 'ConfigModule.load_config', 'dangerous'],
    ['torch._utils', '_rebuild_tensor_v2.__globals__', 'dangerous'],
    ['http.client', 'HTTPConnection', 'dangerous'],
    ['argparse', 'Namespace', 'unknown'],
    ['builtins', 'print', 'unknown'],
    ['osmosis', 'x', 'unknown'],
  ])('%s.%s is %s', (module, name, safety) => {
    const c = classifyGlobal(module, name);
    expect(c.safety).toBe(safety);
    expect(c.reason).toBeTruthy();
  });
});

describe('scanPickleGlobals', () => {
  it('counts GLOBALs per (module, name, opcode) in first-seen order', () => {
    const bytes = stateDictPickle([
      { name: 'a', key: '0', numel: 4, size: [4] },
      { name: 'b', key: '1', numel: 2, size: [2], cls: 'HalfStorage' },
    ]);
    const { protocol, globals } = scanPickleGlobals(bytes, 'x.pkl');
    expect(protocol).toBe(2);
    const by = Object.fromEntries(globals.map((g) => [`${g.module}.${g.name}`, g]));
    expect(globals[0]).toMatchObject({ module: 'collections', name: 'OrderedDict', opcode: 'GLOBAL', safety: 'allowed', count: 3 });
    expect(by['torch._utils._rebuild_tensor_v2'].count).toBe(2);
    expect(by['torch.FloatStorage'].count).toBe(1);
    expect(by['torch.HalfStorage'].count).toBe(1);
  });

  it('resolves STACK_GLOBAL operands pushed as literals or fetched from the memo', () => {
    const bytes = pickle()
      .proto(4)
      .shortStr('builtins').memoize().shortStr('eval').memoize().stackGlobal()
      .raw(0x30) // POP
      .get(0).get(1).stackGlobal()
      .stop()
      .done();
    const { protocol, globals } = scanPickleGlobals(bytes, 'x.pkl');
    expect(protocol).toBe(4);
    expect(globals).toEqual([expect.objectContaining({ module: 'builtins', name: 'eval', opcode: 'STACK_GLOBAL', safety: 'dangerous', count: 2 })]);
  });

  it('reports STACK_GLOBAL on a non-literal as dangerous', () => {
    const bytes = pickle().proto(4).shortStr('os').int(7).stackGlobal().stop().done();
    expect(scanPickleGlobals(bytes, 'x.pkl').globals).toEqual([
      expect.objectContaining({ module: '?', name: '?', opcode: 'STACK_GLOBAL', safety: 'dangerous', reason: 'STACK_GLOBAL on a non-literal' }),
    ]);
  });

  it('records INST (protocol 0) and takes the protocol from the opcodes when PROTO is absent', () => {
    const bytes = pickle().mark().raw("S'touch x'\n").inst('os', 'system').stop().done();
    const { protocol, globals } = scanPickleGlobals(bytes, 'x.pkl');
    expect(protocol).toBe(0);
    expect(globals).toEqual([expect.objectContaining({ module: 'os', name: 'system', opcode: 'INST', safety: 'dangerous' })]);
  });

  it('walks every opcode of protocols 0-5 with its argument encoding', () => {
    const b = pickle()
      .proto(5)
      .frame(0)
      .raw('I42\n', 'L12345678901234567890L\n', 'F1.5\n', "S'abc'\n", 'Vuni\\u00e9\n', 'P0\n', 0x30, 0x30, 0x30, 0x30, 0x30, 0x30)
      .raw('J', ...u32(7), 'K', 1, 'M', 1, 2, 0x8a, 2, 1, 2, 0x8b, ...u32(3), 1, 2, 3, 'G', ...u64(0), 0x30, 0x30, 0x30, 0x30, 0x30, 0x30)
      .raw('T', ...u32(2), 'ab', 'U', 1, 'a', 'B', ...u32(1), 'x', 'C', 1, 'x', 0x8d, ...u64(1), 'y', 0x8e, ...u64(1), 'z', 0x96, ...u64(1), 'w')
      .raw(0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30)
      .raw('N', 0x88, 0x89, 0x30, 0x30, 0x30)
      .raw(']', 'N', 'a', '(', 'N', 'e', '(', 'l', 0x30, 0x30)
      .raw(')', '(', 't', 'N', 0x85, 'N', 'N', 0x86, 'N', 'N', 'N', 0x87, 0x30, 0x30, 0x30, 0x30, 0x30)
      .raw('}', 'N', 'N', 's', '(', 'N', 'N', 'u', '(', 'd', 0x30, 0x30)
      .raw(0x8f, '(', 'N', 0x90, '(', 0x91, 0x30, 0x30)
      .raw('(', '1', 'N', '2', 0x30, 0x30)
      .raw('N', 'p7\n', 'g7\n', 'q', 8, 'h', 8, 'r', ...u32(9), 'j', ...u32(9), 0x94, 0x30, 0x30, 0x30, 0x30)
      .raw(0x82, 1, 0x83, 1, 0, 0x84, ...u32(1), 0x30, 0x30, 0x30)
      .raw('c', 'collections\nOrderedDict\n', ')', 'R', 'N', 'b', 0x30)
      .raw('(', 'i', 'argparse\nNamespace\n', 0x30)
      .raw('(', 'c', 'a\nB\n', 'o', 0x30)
      .raw('c', 'a\nB\n', ')', 0x81, 0x30, 'c', 'a\nB\n', ')', '}', 0x92, 0x30)
      .raw('N', 'Q', 0x30, 0x97, 0x98, 0x30)
      .raw('N')
      .stop()
      .done();
    const scan = scanPickle(b, 'all.pkl');
    expect(scan.problem).toBeUndefined();
    expect(scan.end).toBe(b.length);
    expect(scan.protocol).toBe(5);
    expect(scan.globals.map((g) => `${g.opcode} ${g.module}.${g.name}`)).toEqual([
      'GLOBAL collections.OrderedDict',
      'INST argparse.Namespace',
      'GLOBAL a.B',
    ]);
  });

  it('stops at STOP and returns its end; bytes after it are not read', () => {
    const b = Uint8Array.from([0x80, 2, 0x4e, 0x2e, 0xff, 0xff]);
    expect(scanPickle(b, 'x').end).toBe(4);
    expect(scanPickle(b, 'x', { start: 0 }).end).toBe(4);
  });

  it.each([
    ['unknown opcode', [0x80, 2, 0xff, 0x2e], 'E_PICKLE_OPCODE'],
    ['protocol 6', [0x80, 6, 0x4e, 0x2e], 'E_PICKLE_OPCODE'],
    ['non-decimal GET index', [0x67, 0x78, 0x0a, 0x2e], 'E_PICKLE_OPCODE'],
    ['BINUNICODE past the end', [0x80, 2, 0x58, 0x10, 0, 0, 0, 0x61], 'E_TRUNCATED'],
    ['GLOBAL without newline', [0x63, 0x6f, 0x73], 'E_TRUNCATED'],
    ['no STOP', [0x80, 2, 0x4e], 'E_TRUNCATED'],
    ['BINUNICODE over MAX_PICKLE_STRING_BYTES', [0x80, 2, 0x58, 0, 0, 0, 0x7f, 0x2e], 'E_LIMIT'],
    ['LONG4 with negative length', [0x8b, 0xff, 0xff, 0xff, 0xff, 0x2e], 'E_PICKLE_OPCODE'],
  ])('%s → %s', (_name, bytes, code) => {
    expect(codeOf(() => scanPickleGlobals(Uint8Array.from(bytes), 'bad.pkl'))).toBe(code);
  });

  it('names the byte position of a malformed opcode', () => {
    try {
      scanPickleGlobals(Uint8Array.from([0x80, 2, 0x4e, 0xff, 0x2e]), 'bad.pkl');
      expect.unreachable();
    } catch (e) {
      expect((e as CkptError).data).toMatchObject({ position: 3 });
      expect((e as CkptError).message).toContain('bad.pkl');
    }
  });

  it('notes stack, MARK and memo faults without stopping, so later globals are still reported', () => {
    const b = pickle().proto(2).raw('R').raw('e').get(9).global('posix', 'system').stop().done();
    const scan = scanPickle(b, 'x');
    expect(scan.problem).toMatchObject({ code: 'E_PICKLE_STACK', position: 2 });
    expect(scan.globals).toEqual([expect.objectContaining({ module: 'posix', name: 'system', safety: 'dangerous' })]);
    expect(scanPickle(pickle().proto(2).raw('N').raw('e').stop().done(), 'x').problem?.message).toMatch(/MARK underflow/);
    expect(scanPickle(pickle().proto(2).get(3).stop().done(), 'x').problem?.code).toBe('E_PICKLE_MEMO');
  });

  it('bounds the memo (memo bomb)', () => {
    const b = pickle().proto(2).none();
    for (let i = 0; i < 50; i++) b.put(1000 + i);
    b.stop();
    expect(codeOf(() => scanPickle(b.done(), 'x', { maxMemo: 10 }))).toBe('E_LIMIT');
    // Huge indices cost one map entry each, never an array of that size.
    const huge = pickle().proto(2).none().raw('r', 0xff, 0xff, 0xff, 0xff).raw('j', 0xff, 0xff, 0xff, 0xff).raw(0x30).stop().done();
    expect(scanPickle(huge, 'x').problem).toBeUndefined();
  });

  it('walks the five pickles of a real legacy file to their exact ends', () => {
    const bytes = readFileSync(sharedFixture('cases/vae/vae-legacy.ckpt'));
    const ends: number[] = [];
    let at = 0;
    for (let i = 0; i < 5; i++) {
      const scan = scanPickle(bytes.subarray(0, Math.min(bytes.length, at + 64 * 1024 * 1024)), 'vae-legacy.ckpt', { start: at });
      expect(scan.problem).toBeUndefined();
      at = scan.end;
      ends.push(at);
      if (i === 3) {
        expect(scan.globals.map((g) => `${g.module}.${g.name}`).sort()).toEqual(['collections.OrderedDict', 'torch.FloatStorage', 'torch._utils._rebuild_tensor_v2']);
        expect(scan.globals.every((g) => g.safety === 'allowed')).toBe(true);
      }
    }
    expect(ends.slice(0, 3)).toEqual([15, 21, 137]);
  });
});
