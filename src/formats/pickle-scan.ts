/**
 * A pickle opcode walker that never builds objects: it reads every opcode of protocols 0–5 with
 * its argument encoding (as CPython's `pickletools.genops` does), records every global the pickle
 * imports (GLOBAL, INST, STACK_GLOBAL) and models the stack only as far as needed to know which
 * strings STACK_GLOBAL consumes. It also notes the first structural fault the interpreter would
 * hit (stack or MARK underflow, a memo read before it is written), so that the interpreter in
 * pickle.ts never runs on such input.
 *
 * References: CPython `Lib/pickletools.py` (opcode table, argument descriptors), `Lib/pickle.py`
 * and `Modules/_pickle.c` (stack, MARK and memo semantics); docs/formats.md §2.5.
 */
import { ErrorCode, fail } from '../errors.js';
import { MAX_PICKLE_BYTES, MAX_PICKLE_MEMO, MAX_PICKLE_STRING_BYTES } from '../limits.js';
import { classifyGlobal } from '../safety/globals.js';
import type { PickleGlobal } from './tensor-source.js';

/** How an opcode's argument is encoded (pickletools ArgumentDescriptor names in comments). */
type ArgKind =
  | 'none'
  | 'u1' // uint1
  | 'u2' // uint2
  | 'i4' // int4
  | 'u4' // uint4
  | 'u8' // uint8 (FRAME)
  | 'f8' // float8, big-endian
  | 'line' // decimalnl_short, decimalnl_long, floatnl, stringnl, unicodestringnl
  | 'line2' // stringnl_noescape_pair (GLOBAL, INST)
  | 'long1' // uint1 length + two's complement bytes
  | 'long4' // int4 length + two's complement bytes
  | 'bytes1' // uint1 length + bytes
  | 'bytes4' // uint4 length + bytes (int4 for BINSTRING, checked non-negative)
  | 'bytes8'; // uint8 length + bytes

interface OpInfo {
  readonly name: string;
  readonly arg: ArgKind;
  /** Lowest protocol that has the opcode. */
  readonly proto: number;
}

const OPS: ReadonlyMap<number, OpInfo> = new Map(
  (
    [
      ['(', 'MARK', 'none', 0], ['.', 'STOP', 'none', 0], ['0', 'POP', 'none', 0],
      ['1', 'POP_MARK', 'none', 1], ['2', 'DUP', 'none', 0], ['F', 'FLOAT', 'line', 0],
      ['I', 'INT', 'line', 0], ['J', 'BININT', 'i4', 1], ['K', 'BININT1', 'u1', 1],
      ['L', 'LONG', 'line', 0], ['M', 'BININT2', 'u2', 1], ['N', 'NONE', 'none', 0],
      ['P', 'PERSID', 'line', 0], ['Q', 'BINPERSID', 'none', 1], ['R', 'REDUCE', 'none', 0],
      ['S', 'STRING', 'line', 0], ['T', 'BINSTRING', 'bytes4', 1], ['U', 'SHORT_BINSTRING', 'bytes1', 1],
      ['V', 'UNICODE', 'line', 0], ['X', 'BINUNICODE', 'bytes4', 1], ['a', 'APPEND', 'none', 0],
      ['b', 'BUILD', 'none', 0], ['c', 'GLOBAL', 'line2', 0], ['d', 'DICT', 'none', 0],
      ['}', 'EMPTY_DICT', 'none', 1], ['e', 'APPENDS', 'none', 1], ['g', 'GET', 'line', 0],
      ['h', 'BINGET', 'u1', 1], ['i', 'INST', 'line2', 0], ['j', 'LONG_BINGET', 'u4', 1],
      ['l', 'LIST', 'none', 0], [']', 'EMPTY_LIST', 'none', 1], ['o', 'OBJ', 'none', 1],
      ['p', 'PUT', 'line', 0], ['q', 'BINPUT', 'u1', 1], ['r', 'LONG_BINPUT', 'u4', 1],
      ['s', 'SETITEM', 'none', 0], ['t', 'TUPLE', 'none', 0], [')', 'EMPTY_TUPLE', 'none', 1],
      ['u', 'SETITEMS', 'none', 1], ['G', 'BINFLOAT', 'f8', 1],
      [0x80, 'PROTO', 'u1', 2], [0x81, 'NEWOBJ', 'none', 2], [0x82, 'EXT1', 'u1', 2],
      [0x83, 'EXT2', 'u2', 2], [0x84, 'EXT4', 'i4', 2], [0x85, 'TUPLE1', 'none', 2],
      [0x86, 'TUPLE2', 'none', 2], [0x87, 'TUPLE3', 'none', 2], [0x88, 'NEWTRUE', 'none', 2],
      [0x89, 'NEWFALSE', 'none', 2], [0x8a, 'LONG1', 'long1', 2], [0x8b, 'LONG4', 'long4', 2],
      ['B', 'BINBYTES', 'bytes4', 3], ['C', 'SHORT_BINBYTES', 'bytes1', 3],
      [0x8c, 'SHORT_BINUNICODE', 'bytes1', 4], [0x8d, 'BINUNICODE8', 'bytes8', 4],
      [0x8e, 'BINBYTES8', 'bytes8', 4], [0x8f, 'EMPTY_SET', 'none', 4], [0x90, 'ADDITEMS', 'none', 4],
      [0x91, 'FROZENSET', 'none', 4], [0x92, 'NEWOBJ_EX', 'none', 4], [0x93, 'STACK_GLOBAL', 'none', 4],
      [0x94, 'MEMOIZE', 'none', 4], [0x95, 'FRAME', 'u8', 4],
      [0x96, 'BYTEARRAY8', 'bytes8', 5], [0x97, 'NEXT_BUFFER', 'none', 5], [0x98, 'READONLY_BUFFER', 'none', 5],
    ] as const
  ).map(([code, name, arg, proto]) => [
    typeof code === 'string' ? code.charCodeAt(0) : code,
    { name, arg, proto } as OpInfo,
  ]),
);

/** Highest protocol CPython reads (pickle.HIGHEST_PROTOCOL). */
export const HIGHEST_PICKLE_PROTOCOL = 5;

/** A fault the interpreter would hit; reported by readTorchPickle before it runs anything. */
export interface PickleProblem {
  readonly code: ErrorCode;
  readonly position: number;
  readonly message: string;
}

export interface PickleScan {
  /** PROTO argument, or the highest protocol among the opcodes when there is no PROTO. */
  readonly protocol: number;
  /** Globals aggregated per (module, name, opcode), in order of first appearance. */
  readonly globals: PickleGlobal[];
  /** Offset just past the STOP opcode (a pickle may be followed by other data). */
  readonly end: number;
  /** First stack / MARK / memo fault, if any (scanning goes on past it). */
  readonly problem?: PickleProblem;
}

export interface ScanOptions {
  /** Offset of the first opcode in `bytes` (legacy files hold several pickles back to back). */
  readonly start?: number;
  /** Memo entry limit; defaults to MAX_PICKLE_MEMO. */
  readonly maxMemo?: number;
}

/** What the stack model knows about a value: the string it is, or nothing (null). */
type Item = string | null;

const NON_LITERAL = 'STACK_GLOBAL on a non-literal';

/** The opcode's decoded argument, as far as the model needs it. */
interface Arg {
  int?: number;
  text?: string;
  pair?: [string, string];
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** Byte-level cursor over one pickle; every read is bounds-checked and reports E_TRUNCATED. */
class Cursor {
  pos: number;
  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly file: string,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.bytes.length;
  }

  take(n: number, opPos: number, what: string): Uint8Array {
    if (n > this.bytes.length - this.pos) {
      fail(ErrorCode.E_TRUNCATED, this.file, `pickle: ${what} at byte ${opPos} needs ${n} bytes, ${this.bytes.length - this.pos} left. The file is truncated or corrupt.`, {
        data: { position: opPos },
      });
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  uint(n: 1 | 2 | 4, opPos: number, what: string): number {
    const b = this.take(n, opPos, what);
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[i];
    return v;
  }

  uint64(opPos: number, what: string): number {
    const lo = this.uint(4, opPos, what);
    const hi = this.uint(4, opPos, what);
    const v = hi * 2 ** 32 + lo;
    // Anything this large cannot fit in a 64 MiB pickle; saturate instead of losing precision.
    return Number.isSafeInteger(v) ? v : Number.MAX_SAFE_INTEGER;
  }

  line(opPos: number, what: string): Uint8Array {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) {
      fail(ErrorCode.E_TRUNCATED, this.file, `pickle: ${what} at byte ${opPos} has no terminating newline. The file is truncated or corrupt.`, {
        data: { position: opPos },
      });
    }
    if (end - this.pos > MAX_PICKLE_STRING_BYTES) limitFail(this.file, opPos, what, end - this.pos);
    const out = this.bytes.subarray(this.pos, end);
    this.pos = end + 1;
    return out;
  }
}

function limitFail(file: string, opPos: number, what: string, length: number): never {
  fail(ErrorCode.E_LIMIT, file, `pickle: ${what} at byte ${opPos} is ${length} bytes (expected at most MAX_PICKLE_STRING_BYTES = ${MAX_PICKLE_STRING_BYTES}).`, {
    data: { position: opPos, length, limit: MAX_PICKLE_STRING_BYTES },
  });
}

function opcodeFail(file: string, opPos: number, message: string): never {
  fail(ErrorCode.E_PICKLE_OPCODE, file, `pickle: ${message} at byte ${opPos}.`, { data: { position: opPos } });
}

/** Reads a length-prefixed payload after checking the length against MAX_PICKLE_STRING_BYTES. */
function payload(c: Cursor, length: number, opPos: number, op: OpInfo, file: string): Uint8Array {
  if (length < 0) opcodeFail(file, opPos, `${op.name} with negative length ${length}`);
  if (length > MAX_PICKLE_STRING_BYTES) limitFail(file, opPos, op.name, length);
  return c.take(length, opPos, op.name);
}

function decimal(line: Uint8Array, opPos: number, op: OpInfo, file: string): number {
  const text = latin1.decode(line).trim().replace(/L$/, '');
  if (!/^[+-]?\d+$/.test(text)) opcodeFail(file, opPos, `${op.name} with a non-decimal argument "${text.slice(0, 40)}"`);
  return Number(text);
}

/** STRING's argument is a Python repr; only plain quoted text is kept as a literal. */
function quotedString(line: Uint8Array, opPos: number, file: string): string | null {
  const text = latin1.decode(line);
  const q = text[0];
  if (text.length < 2 || (q !== '"' && q !== "'") || text[text.length - 1] !== q) {
    opcodeFail(file, opPos, 'STRING argument is not a quoted string');
  }
  const inner = text.slice(1, -1);
  return inner.includes('\\') ? null : inner;
}

/** UNICODE uses raw-unicode-escape: only \uXXXX and \UXXXXXXXX are escapes. */
function rawUnicodeEscape(line: Uint8Array): string {
  return latin1.decode(line).replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, u4: string | undefined, u8: string | undefined) =>
    String.fromCodePoint(parseInt(u4 ?? u8 ?? '0', 16)),
  );
}

/** Reads the argument of `op`, decoding what the stack model uses (strings, memo indexes, GLOBAL names). */
function readArg(c: Cursor, op: OpInfo, opPos: number, file: string): Arg {
  switch (op.arg) {
    case 'none':
      return {};
    case 'u1':
      return { int: c.uint(1, opPos, op.name) };
    case 'u2':
      return { int: c.uint(2, opPos, op.name) };
    case 'u4':
      return { int: c.uint(4, opPos, op.name) };
    case 'i4':
      return { int: c.uint(4, opPos, op.name) | 0 };
    case 'u8':
      return { int: c.uint64(opPos, op.name) };
    case 'f8':
      c.take(8, opPos, op.name);
      return {};
    case 'long1':
      c.take(c.uint(1, opPos, op.name), opPos, op.name);
      return {};
    case 'long4':
      payload(c, c.uint(4, opPos, op.name) | 0, opPos, op, file);
      return {};
    case 'bytes1':
      return { text: decodePayload(op, c.take(c.uint(1, opPos, op.name), opPos, op.name)) };
    case 'bytes4': {
      const n = op.name === 'BINSTRING' ? c.uint(4, opPos, op.name) | 0 : c.uint(4, opPos, op.name);
      return { text: decodePayload(op, payload(c, n, opPos, op, file)) };
    }
    case 'bytes8':
      return { text: decodePayload(op, payload(c, c.uint64(opPos, op.name), opPos, op, file)) };
    case 'line':
      return readLineArg(c, op, opPos, file);
    case 'line2': {
      const module = utf8.decode(c.line(opPos, `${op.name} module`));
      const name = utf8.decode(c.line(opPos, `${op.name} name`));
      return { pair: [module, name] };
    }
  }
}

/** Only text opcodes produce literals; bytes payloads are skipped, never decoded. */
function decodePayload(op: OpInfo, data: Uint8Array): string | undefined {
  switch (op.name) {
    case 'BINUNICODE':
    case 'SHORT_BINUNICODE':
    case 'BINUNICODE8':
      return utf8.decode(data);
    case 'BINSTRING':
    case 'SHORT_BINSTRING':
      return latin1.decode(data);
    default:
      return undefined;
  }
}

function readLineArg(c: Cursor, op: OpInfo, opPos: number, file: string): Arg {
  const line = c.line(opPos, op.name);
  switch (op.name) {
    case 'GET':
    case 'PUT':
      return { int: decimal(line, opPos, op, file) };
    case 'STRING': {
      const s = quotedString(line, opPos, file);
      return s === null ? {} : { text: s };
    }
    case 'UNICODE':
      return { text: rawUnicodeEscape(line) };
    default:
      return {}; // INT, LONG, FLOAT, PERSID: values the model does not need
  }
}

/**
 * The stack as CPython's C unpickler sees it: one array plus MARK fences. Values are only known
 * as "this string" or "something else".
 */
class StackModel {
  private readonly items: Item[] = [];
  private readonly marks: number[] = [];
  readonly memo = new Map<number, Item>();
  problem?: PickleProblem;
  opPos = 0;

  constructor(
    private readonly file: string,
    private readonly maxMemo: number,
  ) {}

  note(code: ErrorCode, message: string): void {
    this.problem ??= { code, position: this.opPos, message: `${message} at byte ${this.opPos}` };
  }

  private get fence(): number {
    return this.marks.length > 0 ? this.marks[this.marks.length - 1] : 0;
  }

  push(x: Item): void {
    this.items.push(x);
  }

  pop(what: string): Item {
    if (this.items.length <= this.fence) {
      this.note(ErrorCode.E_PICKLE_STACK, `stack underflow in ${what}`);
      return null;
    }
    return this.items.pop() ?? null;
  }

  popN(n: number, what: string): Item[] {
    const out: Item[] = [];
    for (let i = 0; i < n; i++) out.unshift(this.pop(what));
    return out;
  }

  top(what: string): Item {
    if (this.items.length <= this.fence) {
      this.note(ErrorCode.E_PICKLE_STACK, `stack underflow in ${what}`);
      return null;
    }
    return this.items[this.items.length - 1];
  }

  mark(): void {
    this.marks.push(this.items.length);
  }

  popMark(what: string): void {
    const m = this.marks.pop();
    if (m === undefined) {
      this.note(ErrorCode.E_PICKLE_STACK, `MARK underflow in ${what} (no MARK on the stack)`);
      return;
    }
    this.items.length = m;
  }

  /** POP removes the item on top, or the MARK itself when the current frame is empty. */
  popOne(): void {
    if (this.marks.length > 0 && this.fence === this.items.length) {
      // pickleparser keeps MARK frames on a separate stack and cannot pop a MARK this way.
      this.note(ErrorCode.E_PICKLE_STACK, 'POP of a MARK (not supported by the interpreter)');
      this.marks.pop();
      return;
    }
    this.pop('POP');
  }

  put(index: number): void {
    if (!this.memo.has(index) && this.memo.size >= this.maxMemo) {
      fail(ErrorCode.E_LIMIT, this.file, `pickle: memo holds more than ${this.maxMemo} entries at byte ${this.opPos} (expected at most MAX_PICKLE_MEMO).`, {
        data: { position: this.opPos, limit: this.maxMemo },
      });
    }
    this.memo.set(index, this.top('PUT'));
  }

  get(index: number): void {
    if (!this.memo.has(index)) {
      this.note(ErrorCode.E_PICKLE_MEMO, `memo entry ${index} read before it was written`);
      this.push(null);
      return;
    }
    this.push(this.memo.get(index) ?? null);
  }
}

/** Counts globals per (module, name, opcode), keeping first-seen order. */
class GlobalTally {
  private readonly byKey = new Map<string, PickleGlobal>();

  add(module: string, name: string, opcode: PickleGlobal['opcode'], forced?: { reason: string }): void {
    const key = `${opcode}\u0000${module}\u0000${name}`;
    const seen = this.byKey.get(key);
    if (seen) {
      seen.count++;
      return;
    }
    const cls = forced ? { safety: 'dangerous' as const, reason: forced.reason } : classifyGlobal(module, name);
    this.byKey.set(key, { module, name, opcode, safety: cls.safety, reason: cls.reason, count: 1 });
  }

  list(): PickleGlobal[] {
    return [...this.byKey.values()];
  }
}

/** Applies one opcode's stack effect to the model and records the globals it imports. */
function step(op: OpInfo, arg: Arg, s: StackModel, tally: GlobalTally): void {
  switch (op.name) {
    case 'MARK':
      return s.mark();
    case 'POP':
      return s.popOne();
    case 'POP_MARK':
      return s.popMark(op.name);
    case 'DUP':
      return s.push(s.top(op.name));
    case 'STRING': case 'BINSTRING': case 'SHORT_BINSTRING': case 'UNICODE':
    case 'BINUNICODE': case 'SHORT_BINUNICODE': case 'BINUNICODE8':
      return s.push(arg.text ?? null);
    case 'INT': case 'BININT': case 'BININT1': case 'BININT2': case 'LONG': case 'LONG1': case 'LONG4':
    case 'FLOAT': case 'BINFLOAT': case 'NONE': case 'NEWTRUE': case 'NEWFALSE': case 'BINBYTES':
    case 'SHORT_BINBYTES': case 'BINBYTES8': case 'BYTEARRAY8': case 'NEXT_BUFFER': case 'EMPTY_LIST':
    case 'EMPTY_TUPLE': case 'EMPTY_DICT': case 'EMPTY_SET': case 'EXT1': case 'EXT2': case 'EXT4':
    case 'PERSID':
      return s.push(null);
    case 'GET': case 'BINGET': case 'LONG_BINGET':
      return s.get(arg.int ?? 0);
    case 'PUT': case 'BINPUT': case 'LONG_BINPUT':
      return s.put(arg.int ?? 0);
    case 'MEMOIZE':
      return s.put(s.memo.size);
    case 'APPEND': case 'BUILD':
      s.pop(op.name);
      s.top(op.name);
      return;
    case 'SETITEM':
      s.popN(2, op.name);
      s.top(op.name);
      return;
    case 'APPENDS': case 'SETITEMS': case 'ADDITEMS':
      s.popMark(op.name);
      s.top(op.name);
      return;
    case 'LIST': case 'TUPLE': case 'DICT': case 'FROZENSET':
      s.popMark(op.name);
      return s.push(null);
    case 'TUPLE1': case 'TUPLE2': case 'TUPLE3':
      s.popN(Number(op.name.slice(-1)), op.name);
      return s.push(null);
    case 'BINPERSID': case 'READONLY_BUFFER':
      s.pop(op.name);
      return s.push(null);
    case 'REDUCE': case 'NEWOBJ':
      s.popN(2, op.name);
      return s.push(null);
    case 'NEWOBJ_EX':
      s.popN(3, op.name);
      return s.push(null);
    case 'OBJ':
      s.popMark(op.name);
      return s.push(null);
    case 'GLOBAL': {
      const [module, name] = arg.pair ?? ['?', '?'];
      tally.add(module, name, 'GLOBAL');
      return s.push(null);
    }
    case 'INST': {
      const [module, name] = arg.pair ?? ['?', '?'];
      tally.add(module, name, 'INST');
      s.popMark(op.name);
      return s.push(null);
    }
    case 'STACK_GLOBAL': {
      const [module, name] = s.popN(2, op.name);
      if (typeof module === 'string' && typeof name === 'string') tally.add(module, name, 'STACK_GLOBAL');
      else tally.add('?', '?', 'STACK_GLOBAL', { reason: NON_LITERAL });
      return s.push(null);
    }
    default:
      return; // PROTO, FRAME, STOP: no stack effect
  }
}

/**
 * Walks one pickle from `options.start` to its STOP. Throws E_PICKLE_OPCODE (unknown opcode,
 * unreadable argument, unsupported protocol), E_TRUNCATED (argument or STOP missing) and E_LIMIT;
 * stack and memo faults are returned in `problem`, not thrown, so the report stays complete.
 */
export function scanPickle(bytes: Uint8Array, file: string, options: ScanOptions = {}): PickleScan {
  const start = options.start ?? 0;
  if (bytes.length - start > MAX_PICKLE_BYTES) {
    fail(ErrorCode.E_LIMIT, file, `pickle is ${bytes.length - start} bytes (expected at most MAX_PICKLE_BYTES = ${MAX_PICKLE_BYTES}).`, {
      data: { length: bytes.length - start, limit: MAX_PICKLE_BYTES },
    });
  }
  const c = new Cursor(bytes, start, file);
  const model = new StackModel(file, options.maxMemo ?? MAX_PICKLE_MEMO);
  const tally = new GlobalTally();
  let declared: number | undefined;
  let highest = 0;
  while (!c.done) {
    const opPos = c.pos;
    const code = bytes[c.pos++];
    const op = OPS.get(code);
    if (!op) opcodeFail(file, opPos, `unknown opcode 0x${code.toString(16).padStart(2, '0')}`);
    const arg = readArg(c, op, opPos, file);
    highest = Math.max(highest, op.proto);
    model.opPos = opPos;
    if (op.name === 'PROTO') {
      const v = arg.int ?? 0;
      if (v > HIGHEST_PICKLE_PROTOCOL) opcodeFail(file, opPos, `unsupported pickle protocol ${v}`);
      declared ??= v;
      continue;
    }
    if (op.name === 'STOP') {
      model.pop('STOP');
      return { protocol: declared ?? highest, globals: tally.list(), end: c.pos, problem: model.problem };
    }
    step(op, arg, model, tally);
  }
  fail(ErrorCode.E_TRUNCATED, file, `pickle ends at byte ${c.pos} without a STOP opcode. The file is truncated or corrupt.`, {
    data: { position: c.pos },
  });
}

/** The globals a pickle imports, for `ckpt2diffusers scan`; works on pickles the interpreter refuses. */
export function scanPickleGlobals(bytes: Uint8Array, file: string): { protocol: number; globals: PickleGlobal[] } {
  const { protocol, globals } = scanPickle(bytes, file);
  return { protocol, globals };
}

/** True when any global is on the dangerous list. */
export function hasDangerousGlobal(globals: readonly PickleGlobal[]): boolean {
  return globals.some((g) => g.safety === 'dangerous');
}


/** One report for several pickles (a legacy file has five): counts of the same global and opcode are summed. */
export function mergeGlobals(globals: readonly PickleGlobal[]): PickleGlobal[] {
  const merged = new Map<string, PickleGlobal>();
  for (const g of globals) {
    const key = `${g.opcode}\u0000${g.module}\u0000${g.name}`;
    const seen = merged.get(key);
    if (seen) seen.count += g.count;
    else merged.set(key, { ...g });
  }
  return [...merged.values()];
}
