/**
 * Python's `json.dumps` / `json.loads`, byte for byte, for the values Diffusers and transformers
 * write into config files (`json.dumps(config, indent=2, sort_keys=True) + "\n"`) and shard
 * indexes (formats.md §6.2).
 *
 * Python distinguishes `1` (int) from `1.0` (float); JS numbers do not. A number that is not an
 * integer always prints as a Python float; an integral value prints as an int unless wrapped in
 * `pyFloat(...)`. `parsePythonJson` wraps every number written with a fraction or an exponent in
 * a PyFloat, so parse -> dumps reproduces a Python-written file.
 *
 * References: CPython `Lib/json/encoder.py` (separators, indent, ensure_ascii escaping, sort_keys,
 * NaN/Infinity), `Objects/floatobject.c` `float_repr` / `Python/pystrtod.c` (repr switches to
 * exponent notation when the decimal point position is <= -4 or > 16).
 */
import { ErrorCode, fail } from '../errors.js';
import { compareCodePoints } from './string-order.js';

/** A number that Python holds as a float, so that integral values print as `1.0`. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export function pyFloat(value: number): PyFloat {
  return new PyFloat(value);
}

export function isPyFloat(v: unknown): v is PyFloat {
  return v instanceof PyFloat;
}

export interface PythonJsonOptions {
  /** Python `indent`: null (default) writes one line. */
  indent?: number | null;
  sortKeys?: boolean;
  /** Python `ensure_ascii` (default true): non-ASCII as \uXXXX. */
  ensureAscii?: boolean;
  /** Python `separators`; default (',', ': ') with indent, (', ', ': ') without. */
  separators?: readonly [string, string];
}

/** Python's `repr(float)`: shortest round-trip digits, `.0` for integral values, `1e-05` style. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() without an argument gives the shortest digits that round-trip, like repr.
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exponent = Number(exp);
  const decpt = exponent + 1;
  if (decpt <= -4 || decpt > 16) {
    const frac = digits.length > 1 ? `.${digits.slice(1)}` : '';
    const expSign = exponent < 0 ? '-' : '+';
    return `${sign}${digits[0]}${frac}e${expSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

/** Python `json.dumps(value, indent=..., sort_keys=..., ensure_ascii=...)`. */
export function pythonJsonDumps(value: unknown, options: PythonJsonOptions = {}): string {
  const indent = options.indent ?? null;
  const [itemSep, keySep] = options.separators ?? (indent === null ? [', ', ': '] : [',', ': ']);
  const ctx: EncodeContext = {
    indent: indent === null ? null : ' '.repeat(indent),
    itemSep,
    keySep,
    sortKeys: options.sortKeys ?? false,
    ensureAscii: options.ensureAscii ?? true,
    active: new Set(),
  };
  return encodeValue(value, ctx, 0);
}

interface EncodeContext {
  indent: string | null;
  itemSep: string;
  keySep: string;
  sortKeys: boolean;
  ensureAscii: boolean;
  /** Containers being encoded, to refuse cycles as Python does. */
  active: Set<object>;
}

function encodeValue(v: unknown, ctx: EncodeContext, level: number): string {
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'string') return encodeString(v, ctx.ensureAscii);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return Number.isInteger(v) ? encodeInteger(v) : pythonFloatRepr(v);
  if (v instanceof PyFloat) return pythonFloatRepr(v.value);
  if (Array.isArray(v)) return encodeContainer(v, ctx, level, '[', ']', (item) => encodeValue(item, ctx, level + 1));
  if (isPlainObject(v)) return encodeObject(v, ctx, level);
  throw new TypeError(`Object of type ${describeType(v)} is not JSON serializable`);
}

/** Integral numbers print as Python ints; `String(1e21)` would give exponent notation. */
function encodeInteger(v: number): string {
  return Object.is(v, -0) ? '0' : BigInt(v).toString();
}

function encodeObject(obj: Record<string, unknown>, ctx: EncodeContext, level: number): string {
  const keys = Object.keys(obj);
  if (ctx.sortKeys) keys.sort(compareCodePoints);
  return encodeContainer(keys, ctx, level, '{', '}', (k) => `${encodeString(k, ctx.ensureAscii)}${ctx.keySep}${encodeValue(obj[k], ctx, level + 1)}`, obj);
}

/** Shared layout of lists and dicts: `[]`/`{}` when empty, one item per line when indenting. */
function encodeContainer<T>(
  items: readonly T[],
  ctx: EncodeContext,
  level: number,
  open: string,
  close: string,
  encodeItem: (item: T) => string,
  owner: object = items,
): string {
  if (items.length === 0) return open + close;
  if (ctx.active.has(owner)) throw new TypeError('Circular reference detected');
  ctx.active.add(owner);
  const parts = items.map(encodeItem);
  ctx.active.delete(owner);
  if (ctx.indent === null) return open + parts.join(ctx.itemSep) + close;
  const inner = '\n' + ctx.indent.repeat(level + 1);
  return open + inner + parts.join(ctx.itemSep + inner) + '\n' + ctx.indent.repeat(level) + close;
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/**
 * Python `encode_basestring_ascii` (ensure_ascii): escapes `"`, `\`, the short escapes, and every
 * UTF-16 code unit outside 0x20..0x7E as lower-case `\uxxxx` (astral characters become surrogate
 * pairs). Without ensure_ascii only `"`, `\` and control characters are escaped.
 */
function encodeString(s: string, ensureAscii: boolean): string {
  const needsEscape = ensureAscii ? /["\\]|[^\x20-\x7e]/g : /["\\\x00-\x1f]/g;
  return '"' + s.replace(needsEscape, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '"';
}


function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function describeType(v: unknown): string {
  if (typeof v !== 'object' || v === null) return typeof v;
  return (v as object).constructor?.name ?? 'object';
}

// ------------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------------

/** Python's json.loads also accepts these three constants. */
const CONSTANTS: ReadonlyArray<[string, unknown]> = [
  ['true', true],
  ['false', false],
  ['null', null],
  ['NaN', new PyFloat(NaN)],
  ['Infinity', new PyFloat(Infinity)],
  ['-Infinity', new PyFloat(-Infinity)],
];

const NUMBER_TOKEN = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const MAX_DEPTH = 1000;

/**
 * Python `json.loads`, keeping what `json.dumps` needs to write the text back: numbers with a
 * fraction or exponent become PyFloat, integers stay numbers (bigint beyond 2^53), object key
 * order is kept (a duplicate key keeps its first position and its last value, as a Python dict).
 * Errors are E_CONFIG naming `file`.
 */
export function parsePythonJson(text: string, file?: string): unknown {
  const p = { text, pos: 0, file };
  const value = parseValue(p, 0);
  skipWs(p);
  if (p.pos !== text.length) parseError(p, 'extra data after the JSON value');
  return value;
}

interface ParseState {
  readonly text: string;
  pos: number;
  readonly file?: string;
}

function parseValue(p: ParseState, depth: number): unknown {
  if (depth > MAX_DEPTH) parseError(p, `nesting deeper than ${MAX_DEPTH}`);
  skipWs(p);
  const c = p.text[p.pos];
  if (c === '{') return parseObject(p, depth);
  if (c === '[') return parseArray(p, depth);
  if (c === '"') return parseString(p);
  for (const [word, value] of CONSTANTS) {
    if (p.text.startsWith(word, p.pos)) {
      p.pos += word.length;
      return value;
    }
  }
  return parseNumber(p);
}

function parseNumber(p: ParseState): unknown {
  NUMBER_TOKEN.lastIndex = p.pos;
  const m = NUMBER_TOKEN.exec(p.text);
  if (!m) return parseError(p, 'expected a value');
  p.pos += m[0].length;
  if (m[1] !== undefined || m[2] !== undefined) return new PyFloat(Number(m[0]));
  const n = Number(m[0]);
  return Number.isSafeInteger(n) ? n : BigInt(m[0]);
}

function parseObject(p: ParseState, depth: number): Record<string, unknown> {
  p.pos++;
  const obj: Record<string, unknown> = {};
  skipWs(p);
  if (p.text[p.pos] === '}') {
    p.pos++;
    return obj;
  }
  for (;;) {
    skipWs(p);
    if (p.text[p.pos] !== '"') parseError(p, 'expected a property name in double quotes');
    const key = parseString(p);
    skipWs(p);
    if (p.text[p.pos] !== ':') parseError(p, "expected ':'");
    p.pos++;
    // defineProperty: a key named "__proto__" must become an ordinary property.
    Object.defineProperty(obj, key, { value: parseValue(p, depth + 1), enumerable: true, writable: true, configurable: true });
    if (closeOrComma(p, '}')) return obj;
  }
}

function parseArray(p: ParseState, depth: number): unknown[] {
  p.pos++;
  const items: unknown[] = [];
  skipWs(p);
  if (p.text[p.pos] === ']') {
    p.pos++;
    return items;
  }
  for (;;) {
    items.push(parseValue(p, depth + 1));
    if (closeOrComma(p, ']')) return items;
  }
}

/** Consumes ',' (returns false) or the closing bracket (returns true). */
function closeOrComma(p: ParseState, close: string): boolean {
  skipWs(p);
  const c = p.text[p.pos++];
  if (c === close) return true;
  if (c !== ',') parseError(p, `expected ',' or '${close}'`, -1);
  return false;
}

function parseString(p: ParseState): string {
  const start = p.pos;
  let i = start + 1;
  while (i < p.text.length && p.text[i] !== '"') i += p.text[i] === '\\' ? 2 : 1;
  if (i >= p.text.length) parseError(p, 'unterminated string');
  p.pos = i + 1;
  try {
    return JSON.parse(p.text.slice(start, i + 1)) as string;
  } catch {
    return parseError(p, 'invalid string (bad escape or control character)', start - p.pos);
  }
}

function skipWs(p: ParseState): void {
  while (p.pos < p.text.length && ' \t\n\r'.includes(p.text[p.pos])) p.pos++;
}

function parseError(p: ParseState, message: string, delta = 0): never {
  const at = p.pos + delta;
  return fail(ErrorCode.E_CONFIG, p.file, `invalid JSON at character ${at}: ${message}.`, { data: { position: at } });
}
