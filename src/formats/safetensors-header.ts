/**
 * Strict parser and validator for the JSON header of a safetensors file.
 *
 * Spec: huggingface/safetensors README "Format"; docs/formats.md §5.1 (layout, dtype names) and
 * §5.3 (the reference reader's validation rules). We are at least as strict as the reference
 * crate (v0.5.3) and stricter where it is lax:
 *
 * - Duplicate keys are rejected at every level. The README disallows them, but serde (and
 *   `JSON.parse`) silently keep the last one, and a reviver cannot see them, so this is a small
 *   hand-written parser instead of `JSON.parse`.
 * - Tensor order is recorded as written in the JSON (`JSON.parse` would move integer-like names
 *   such as "0" to the front).
 * - Shape values and offsets must be non-negative safe integers written as plain JSON integers.
 *
 * The parser is schema-directed: the top level is an object of tensor entries plus an optional
 * `__metadata__`; unknown fields inside a tensor entry are skipped (the reference ignores them).
 */
import { ErrorCode, fail } from '../errors.js';
import { MAX_RANK, MAX_TENSORS } from '../limits.js';

/**
 * Every dtype name the reference crate knows, with its size in bits and its rank in the crate's
 * `enum Dtype` (declared "in increasing alignment order"; the reference writer sorts by this rank).
 * v0.3 names, v0.4/0.5 F8, v0.6 F4/F6/F8_E8M0, v0.7 C64 (formats.md §5.1).
 */
export const SAFETENSORS_DTYPES = {
  BOOL: { bits: 8, rank: 0 },
  F4: { bits: 4, rank: 1 },
  F6_E2M3: { bits: 6, rank: 2 },
  F6_E3M2: { bits: 6, rank: 3 },
  U8: { bits: 8, rank: 4 },
  I8: { bits: 8, rank: 5 },
  F8_E5M2: { bits: 8, rank: 6 },
  F8_E4M3: { bits: 8, rank: 7 },
  F8_E8M0: { bits: 8, rank: 8 },
  I16: { bits: 16, rank: 9 },
  U16: { bits: 16, rank: 10 },
  F16: { bits: 16, rank: 11 },
  BF16: { bits: 16, rank: 12 },
  I32: { bits: 32, rank: 13 },
  U32: { bits: 32, rank: 14 },
  F32: { bits: 32, rank: 15 },
  C64: { bits: 64, rank: 16 },
  F64: { bits: 64, rank: 17 },
  I64: { bits: 64, rank: 18 },
  U64: { bits: 64, rank: 19 },
} as const;

export type SafetensorsDTypeName = keyof typeof SAFETENSORS_DTYPES;

export function isSafetensorsDType(s: string): s is SafetensorsDTypeName {
  return Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, s);
}

/** One tensor entry of the header. */
export interface SafetensorsTensorEntry {
  readonly name: string;
  readonly dtype: SafetensorsDTypeName;
  readonly shape: readonly number[];
  /** [begin, end) relative to the start of the data buffer. */
  readonly dataOffsets: readonly [number, number];
  /** end - begin = numel * bits / 8. */
  readonly byteLength: number;
}

export interface ParsedSafetensorsHeader {
  /** `__metadata__`, or null when absent or JSON null. Null-prototype object. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Tensors in the order the JSON lists them. */
  readonly tensors: readonly SafetensorsTensorEntry[];
  /** End of the last tensor: the byte length the data buffer must have. */
  readonly dataBytes: number;
}

/** serde_json's default recursion limit; only reachable through unknown extra fields. */
const MAX_JSON_DEPTH = 128;

/** A JSON number token (RFC 8259 grammar). */
const NUMBER_TOKEN = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** An unpaired UTF-16 surrogate: not representable in UTF-8, so serde rejects `\ud800`. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Parses and validates the header text (already decoded as strict UTF-8). Returns the tensors in
 * JSON order; throws a CkptError naming the file, the tensor and the offending value.
 */
export function parseSafetensorsHeader(text: string, file: string): ParsedSafetensorsHeader {
  const parsed = new HeaderParser(text, file).parseTop();
  const dataBytes = checkContiguous(parsed.tensors, file);
  return { ...parsed, dataBytes };
}

/**
 * Sorted by offsets, tensors must tile [0, end) with no hole and no overlap (reference
 * `Metadata::validate`: `s != start || e < s` is `InvalidOffset(name)`). Returns the end.
 */
function checkContiguous(tensors: readonly SafetensorsTensorEntry[], file: string): number {
  const sorted = [...tensors].sort(
    (a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1],
  );
  let expected = 0;
  for (const t of sorted) {
    const [begin, end] = t.dataOffsets;
    if (begin !== expected) {
      const what = begin > expected ? 'leaves a hole' : 'overlaps the previous tensor';
      fail(
        ErrorCode.E_SAFETENSORS_OFFSETS,
        file,
        `tensor "${t.name}" starts at data offset ${begin}, which ${what} (expected ${expected}: tensors sorted by offset must be contiguous from 0).`,
        { data: { tensor: t.name, found: begin, expected } },
      );
    }
    expected = end;
  }
  return expected;
}

/** A tensor entry while its fields are being read. */
interface EntryFields {
  dtype?: string;
  shape?: number[];
  dataOffsets?: [number, number];
}

class HeaderParser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  parseTop(): Omit<ParsedSafetensorsHeader, 'dataBytes'> {
    this.skipWhitespace();
    if (this.peek() !== '{') {
      this.syntaxError(`the header is not a JSON object (found ${this.describeHere()})`);
    }
    this.pos++;
    let metadata: Record<string, string> | null = null;
    const tensors: SafetensorsTensorEntry[] = [];
    const seen = new Set<string>();
    this.forEachMember('the header', (key) => {
      if (seen.has(key)) this.duplicate(key, 'the header');
      seen.add(key);
      if (key === '__metadata__') {
        metadata = this.parseMetadata();
        return;
      }
      if (tensors.length >= MAX_TENSORS) {
        fail(ErrorCode.E_LIMIT, this.file, `more than ${MAX_TENSORS} tensors in the header (limit MAX_TENSORS).`, {
          data: { limit: MAX_TENSORS },
        });
      }
      tensors.push(this.parseTensorEntry(key));
    });
    this.expectEnd();
    return { metadata, tensors };
  }

  /** After the top-level object only JSON whitespace may follow; the writer pads with spaces. */
  private expectEnd(): void {
    this.skipWhitespace();
    if (this.pos === this.text.length) return;
    if (this.text.charCodeAt(this.pos) === 0) {
      this.syntaxError('the header is padded with NUL bytes (expected spaces, 0x20, as the spec allows)');
    }
    this.syntaxError(`unexpected ${this.describeHere()} after the header object (expected only trailing spaces)`);
  }

  /** `__metadata__`: null, or an object of string -> string (README "Format"). */
  private parseMetadata(): Record<string, string> | null {
    this.skipWhitespace();
    if (this.text.startsWith('null', this.pos)) {
      this.pos += 4;
      return null;
    }
    if (this.peek() !== '{') this.metadataError(`__metadata__ is ${this.describeHere()} (expected an object of strings, or null)`);
    this.pos++;
    const metadata = Object.create(null) as Record<string, string>;
    this.forEachMember('__metadata__', (key) => {
      if (Object.prototype.hasOwnProperty.call(metadata, key)) this.duplicate(key, '__metadata__');
      this.skipWhitespace();
      if (this.peek() !== '"') {
        this.metadataError(`__metadata__ value of "${key}" is ${this.describeHere()} (expected a string)`, key);
      }
      metadata[key] = this.parseString();
    });
    return metadata;
  }

  private parseTensorEntry(name: string): SafetensorsTensorEntry {
    this.skipWhitespace();
    if (this.peek() !== '{') {
      this.syntaxError(`tensor "${name}" is ${this.describeHere()} (expected an object with dtype, shape, data_offsets)`);
    }
    this.pos++;
    const fields: EntryFields = {};
    const seen = new Set<string>();
    this.forEachMember(`tensor "${name}"`, (key) => {
      if (seen.has(key)) this.duplicate(key, `tensor "${name}"`);
      seen.add(key);
      if (key === 'dtype') fields.dtype = this.parseDtypeField(name);
      else if (key === 'shape') fields.shape = this.parseIntArray(name, 'shape');
      else if (key === 'data_offsets') fields.dataOffsets = this.parseOffsets(name);
      else this.skipValue(1);
    });
    return completeEntry(name, fields, this.file);
  }

  private parseDtypeField(name: string): string {
    this.skipWhitespace();
    if (this.peek() !== '"') this.syntaxError(`tensor "${name}" dtype is ${this.describeHere()} (expected a string)`);
    const dtype = this.parseString();
    if (!isSafetensorsDType(dtype)) {
      fail(
        ErrorCode.E_SAFETENSORS_DTYPE,
        this.file,
        `tensor "${name}" has unknown dtype "${dtype}" (expected one of ${Object.keys(SAFETENSORS_DTYPES).join(' ')}; names are upper case).`,
        { data: { tensor: name, found: dtype } },
      );
    }
    return dtype;
  }

  private parseOffsets(name: string): [number, number] {
    const offsets = this.parseIntArray(name, 'data_offsets');
    if (offsets.length !== 2) {
      fail(
        ErrorCode.E_SAFETENSORS_OFFSETS,
        this.file,
        `tensor "${name}" data_offsets has ${offsets.length} values (expected 2: [begin, end]).`,
        { data: { tensor: name, found: offsets } },
      );
    }
    return [offsets[0], offsets[1]];
  }

  /** An array of non-negative safe integers (shape dims or offsets). */
  private parseIntArray(name: string, field: 'shape' | 'data_offsets'): number[] {
    this.skipWhitespace();
    if (this.peek() !== '[') this.syntaxError(`tensor "${name}" ${field} is ${this.describeHere()} (expected an array of integers)`);
    this.pos++;
    const values: number[] = [];
    this.skipWhitespace();
    if (this.peek() === ']') {
      this.pos++;
      return values;
    }
    for (;;) {
      values.push(this.parseNonNegativeInt(name, field));
      if (field === 'shape' && values.length > MAX_RANK) {
        fail(ErrorCode.E_LIMIT, this.file, `tensor "${name}" has rank above ${MAX_RANK} (limit MAX_RANK).`, {
          data: { tensor: name, limit: MAX_RANK },
        });
      }
      this.skipWhitespace();
      const c = this.peek();
      this.pos++;
      if (c === ']') return values;
      if (c !== ',') this.syntaxError(`expected ',' or ']' in ${field} of tensor "${name}"`, -1);
      this.skipWhitespace();
    }
  }

  private parseNonNegativeInt(name: string, field: 'shape' | 'data_offsets'): number {
    this.skipWhitespace();
    NUMBER_TOKEN.lastIndex = this.pos;
    const m = NUMBER_TOKEN.exec(this.text);
    if (!m) this.syntaxError(`tensor "${name}" ${field} holds ${this.describeHere()} (expected an integer)`);
    const token = m[0];
    this.pos += token.length;
    const value = Number(token);
    if (/^[0-9]+$/.test(token) && Number.isSafeInteger(value)) return value;
    const code = field === 'shape' ? ErrorCode.E_TENSOR_SHAPE : ErrorCode.E_SAFETENSORS_OFFSETS;
    const why = token.startsWith('-') ? 'is negative' : /[.eE]/.test(token) ? 'is not an integer' : 'exceeds 2^53 - 1';
    return fail(code, this.file, `tensor "${name}" ${field} value ${token} ${why} (expected a non-negative integer).`, {
      data: { tensor: name, field, found: token },
    });
  }

  /**
   * Calls `onMember(key)` with the cursor on the value for each member of the object whose `{`
   * was just consumed, and consumes the closing `}`.
   */
  private forEachMember(where: string, onMember: (key: string) => void): void {
    this.skipWhitespace();
    if (this.peek() === '}') {
      this.pos++;
      return;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.peek() !== '"') this.syntaxError(`expected a quoted key in ${where} (found ${this.describeHere()})`);
      const key = this.parseString();
      this.skipWhitespace();
      if (this.peek() !== ':') this.syntaxError(`expected ':' after key "${key}" in ${where}`);
      this.pos++;
      onMember(key);
      this.skipWhitespace();
      const c = this.peek();
      this.pos++;
      if (c === '}') return;
      if (c !== ',') this.syntaxError(`expected ',' or '}' in ${where}`, -1);
    }
  }

  /**
   * Reads one JSON string token. Plain tokens are sliced as they are (the strict UTF-8 decoder
   * never yields lone surrogates); tokens with escapes go through `JSON.parse`, which decodes
   * and validates them, and are then checked for escaped lone surrogates.
   */
  private parseString(): string {
    const start = this.pos;
    let i = start + 1;
    let escaped = false;
    for (;;) {
      const c = this.text.charCodeAt(i);
      if (Number.isNaN(c)) this.syntaxError('unterminated string', start - this.pos);
      if (c === 0x22) break;
      if (c < 0x20) {
        this.pos = i;
        this.syntaxError(`raw control character 0x${c.toString(16).padStart(2, '0')} in a string (expected it escaped)`);
      }
      escaped ||= c === 0x5c;
      i += c === 0x5c ? 2 : 1;
    }
    this.pos = i + 1;
    if (!escaped) return this.text.slice(start + 1, i);
    let value: string;
    try {
      value = JSON.parse(this.text.slice(start, i + 1)) as string;
    } catch {
      return this.syntaxError('invalid string (bad escape or raw control character)', start - this.pos);
    }
    if (LONE_SURROGATE.test(value)) this.syntaxError('string holds an unpaired UTF-16 surrogate escape', start - this.pos);
    return value;
  }

  /** Validates and skips any JSON value (unknown fields of a tensor entry). */
  private skipValue(depth: number): void {
    if (depth > MAX_JSON_DEPTH) this.syntaxError(`nesting deeper than ${MAX_JSON_DEPTH}`);
    this.skipWhitespace();
    const c = this.peek();
    if (c === '"') {
      this.parseString();
    } else if (c === '{') {
      this.pos++;
      const seen = new Set<string>();
      this.forEachMember('an extra field', (key) => {
        if (seen.has(key)) this.duplicate(key, 'an extra field');
        seen.add(key);
        this.skipValue(depth + 1);
      });
    } else if (c === '[') {
      this.skipArray(depth);
    } else {
      this.skipLiteral();
    }
  }

  private skipArray(depth: number): void {
    this.pos++;
    this.skipWhitespace();
    if (this.peek() === ']') {
      this.pos++;
      return;
    }
    for (;;) {
      this.skipValue(depth + 1);
      this.skipWhitespace();
      const c = this.peek();
      this.pos++;
      if (c === ']') return;
      if (c !== ',') this.syntaxError(`expected ',' or ']'`, -1);
    }
  }

  private skipLiteral(): void {
    for (const word of ['true', 'false', 'null']) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return;
      }
    }
    NUMBER_TOKEN.lastIndex = this.pos;
    const m = NUMBER_TOKEN.exec(this.text);
    if (!m) this.syntaxError(`unexpected ${this.describeHere()}`);
    this.pos += m[0].length;
  }

  /** JSON whitespace only: space, tab, LF, CR (NUL is not whitespace). */
  private skipWhitespace(): void {
    for (;;) {
      const c = this.text.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return;
      this.pos++;
    }
  }

  private peek(): string {
    return this.text.charAt(this.pos);
  }

  private describeHere(): string {
    if (this.pos >= this.text.length) return 'the end of the header';
    const c = this.text.charCodeAt(this.pos);
    if (c < 0x20 || c === 0x7f) return `byte 0x${c.toString(16).padStart(2, '0')}`;
    return `'${this.text.slice(this.pos, this.pos + 12)}'`;
  }

  private syntaxError(message: string, posDelta = 0): never {
    const at = Math.max(0, this.pos + posDelta);
    return fail(ErrorCode.E_SAFETENSORS_HEADER, this.file, `invalid safetensors header at character ${at}: ${message}.`, {
      data: { position: at },
    });
  }

  private metadataError(message: string, key?: string): never {
    return fail(ErrorCode.E_SAFETENSORS_METADATA, this.file, `${message}.`, { data: { key } });
  }

  private duplicate(key: string, where: string): never {
    return fail(
      ErrorCode.E_SAFETENSORS_DUPLICATE,
      this.file,
      `key "${key}" appears twice in ${where} (expected unique keys; the spec disallows duplicates).`,
      { data: { key, where } },
    );
  }
}

/** Checks that the three required fields are present and agree with each other. */
function completeEntry(name: string, f: EntryFields, file: string): SafetensorsTensorEntry {
  for (const field of ['dtype', 'shape', 'dataOffsets'] as const) {
    if (f[field] === undefined) {
      const json = field === 'dataOffsets' ? 'data_offsets' : field;
      fail(ErrorCode.E_SAFETENSORS_HEADER, file, `tensor "${name}" has no "${json}" field (expected dtype, shape, data_offsets).`, {
        data: { tensor: name, missing: json },
      });
    }
  }
  const dtype = f.dtype as SafetensorsDTypeName;
  const shape = f.shape as number[];
  const [begin, end] = f.dataOffsets as [number, number];
  const byteLength = tensorByteLength(name, dtype, shape, file);
  if (end < begin || end - begin !== byteLength) {
    fail(
      ErrorCode.E_SAFETENSORS_OFFSETS,
      file,
      `tensor "${name}" data_offsets [${begin}, ${end}] span ${end - begin} bytes (expected ${byteLength} for ${dtype} [${shape.join(', ')}]).`,
      { data: { tensor: name, found: end - begin, expected: byteLength } },
    );
  }
  return { name, dtype, shape, dataOffsets: [begin, end], byteLength };
}

/** numel * bits / 8 with overflow checks (reference: `checked_mul`, then `MisalignedSlice`). */
function tensorByteLength(name: string, dtype: SafetensorsDTypeName, shape: readonly number[], file: string): number {
  const bits = SAFETENSORS_DTYPES[dtype].bits;
  let numel = 1;
  for (const d of shape) {
    numel *= d;
    if (!Number.isSafeInteger(numel) || numel > Number.MAX_SAFE_INTEGER / bits) {
      fail(ErrorCode.E_TENSOR_SHAPE, file, `tensor "${name}" shape [${shape.join(', ')}] has a byte size that overflows 2^53 - 1.`, {
        data: { tensor: name, shape },
      });
    }
  }
  const totalBits = numel * bits;
  if (totalBits % 8 !== 0) {
    fail(
      ErrorCode.E_SAFETENSORS_OFFSETS,
      file,
      `tensor "${name}" of ${numel} ${dtype} elements (${bits} bits each) does not fill whole bytes (expected a multiple of 8 bits).`,
      { data: { tensor: name, numel, bits } },
    );
  }
  return totalBits / 8;
}
