/**
 * Deterministic mutation of checkpoint fixtures for fuzzing the readers, and the harness that
 * runs mutants against them (shared by test/fuzz.test.ts and scripts/fuzz.ts).
 *
 * A mutant is fully determined by (fixture bytes, mutant seed): `mutateFixture(model, seed)`
 * rebuilds it, so a failure report naming the fixture and the seed is a reproduction.
 *
 * Mutations are structure-aware where that pays off: random offsets in a multi-MB checkpoint
 * mostly land in tensor data, which a reader only copies, so offsets are biased towards the zip
 * records, the pickle and the safetensors header. Pickle edits inside a zip keep the entry's size
 * and rewrite its central-directory CRC, otherwise every one of them would stop at E_ZIP_CRC.
 *
 * The harness runs mutants in worker threads: a synchronous infinite loop in a parser cannot be
 * interrupted from its own thread (a Promise.race timer never fires), but the main thread can
 * terminate a worker that stops answering and report the mutant it was on as a hang.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { readdir, readlink, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { CkptError, ErrorCode } from '../../src/errors.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { scanPickleGlobals } from '../../src/formats/pickle-scan.js';
import { sharedFixture } from './paths.js';

// ================================================================================================
// PRNG

/** mulberry32: tiny, fast, good enough to spread mutations; the seed fully determines the stream. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Next 32-bit unsigned integer. */
  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [0, n) (n >= 1); two draws so that n above 2^32 still spreads. */
  int(n: number): number {
    if (n <= 1) return 0;
    if (n <= 0x1_0000_0000) return Math.floor((this.u32() / 0x1_0000_0000) * n);
    return Math.floor(((this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64) * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** Picks a key with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Partial<Record<K, number>>>): K {
    const entries = Object.entries(weights) as [K, number][];
    let roll = this.int(entries.reduce((sum, [, w]) => sum + w, 0));
    for (const [key, w] of entries) {
      if (roll < w) return key;
      roll -= w;
    }
    return entries[entries.length - 1][0];
  }
}

/** Seed of mutant `index` of a run seeded `baseSeed` (splitmix-style mixing, 32 bits). */
export function mutantSeed(baseSeed: number, index: number): number {
  let z = (Math.imul(baseSeed >>> 0, 0x9e3779b1) + Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

// ================================================================================================
// Fixture analysis: where the structure is

export type FixtureKind = 'zip' | 'legacy' | 'safetensors' | 'pickle';

/** A little-endian integer field worth setting to an extreme. */
export interface IntField {
  offset: number;
  width: 2 | 4 | 8;
  what: string;
}

export interface ByteRange {
  start: number;
  end: number;
}

/** A stored data.pkl inside a zip: its bytes and where its central-directory CRC sits. */
export interface ZipPickle extends ByteRange {
  crcOffset: number;
}

export interface FixtureModel {
  path: string;
  bytes: Uint8Array;
  kind: FixtureKind;
  /** Header / record fields for the extreme-int strategy. */
  fields: IntField[];
  /** Where the parsers spend their effort; offsets are biased towards these. */
  structure: ByteRange[];
  /** The pickle opcodes (zip data.pkl when stored, legacy pickles, or the whole .pkl). */
  pickle?: ByteRange;
  zipPickle?: ZipPickle;
  /** safetensors: the JSON header's byte range. */
  header?: ByteRange;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;

/** Integer fields of each zip record, by signature (PKWARE APPNOTE §4.3). */
const ZIP_RECORD_FIELDS: Record<number, [number, 2 | 4 | 8, string][]> = {
  [SIG_LOCAL]: [
    [6, 2, 'local flags'], [8, 2, 'local method'], [14, 4, 'local crc'], [18, 4, 'local csize'],
    [22, 4, 'local usize'], [26, 2, 'local name length'], [28, 2, 'local extra length'],
  ],
  [SIG_CENTRAL]: [
    [8, 2, 'central flags'], [10, 2, 'central method'], [16, 4, 'central crc'], [20, 4, 'central csize'],
    [24, 4, 'central usize'], [28, 2, 'central name length'], [30, 2, 'central extra length'],
    [32, 2, 'central comment length'], [42, 4, 'central local offset'],
  ],
  [SIG_EOCD]: [
    [4, 2, 'eocd disk'], [8, 2, 'eocd entries on disk'], [10, 2, 'eocd entries'],
    [12, 4, 'eocd cd size'], [16, 4, 'eocd cd offset'], [20, 2, 'eocd comment length'],
  ],
  [SIG_ZIP64_EOCD]: [
    [4, 8, 'zip64 record size'], [24, 8, 'zip64 entries on disk'], [32, 8, 'zip64 entries'],
    [40, 8, 'zip64 cd size'], [48, 8, 'zip64 cd offset'],
  ],
  [SIG_ZIP64_LOCATOR]: [[8, 8, 'zip64 locator record offset'], [16, 4, 'zip64 locator disks']],
};

function u16(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** A plain Uint8Array copy: on a Buffer, `slice` is a view, and mutants must never write through to the original. */
function readBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(path));
}

function sniffKind(bytes: Uint8Array, path: string): FixtureKind {
  if (bytes.length >= 4 && u32(bytes, 0) === SIG_LOCAL) return 'zip';
  if (path.endsWith('.pkl')) return 'pickle';
  if (bytes[0] === 0x80) return 'legacy';
  return 'safetensors';
}

export function analyzeFixture(path: string, bytes: Uint8Array = readBytes(path)): FixtureModel {
  const kind = sniffKind(bytes, path);
  const model: FixtureModel = { path, bytes, kind, fields: [], structure: [] };
  if (kind === 'zip') analyzeZip(model);
  else if (kind === 'safetensors') analyzeSafetensors(model);
  else analyzePickles(model);
  return model;
}

function analyzeZip(model: FixtureModel): void {
  const b = model.bytes;
  let firstCentral = -1;
  for (let at = 0; at + 4 <= b.length; at++) {
    if (b[at] !== 0x50 || b[at + 1] !== 0x4b) continue; // 'PK'
    const fields = ZIP_RECORD_FIELDS[u32(b, at)];
    if (!fields) continue;
    for (const [off, width, what] of fields) {
      if (at + off + width <= b.length) model.fields.push({ offset: at + off, width, what });
    }
    const sig = u32(b, at);
    if (sig === SIG_LOCAL) model.structure.push({ start: at, end: Math.min(b.length, at + 30 + u16(b, at + 26) + u16(b, at + 28)) });
    if (sig === SIG_CENTRAL) {
      if (firstCentral < 0) firstCentral = at;
      findZipPickle(model, at);
    }
  }
  if (firstCentral >= 0) model.structure.push({ start: firstCentral, end: b.length });
  if (model.zipPickle) {
    model.pickle = model.zipPickle;
    model.structure.push(model.zipPickle);
  }
}

/** Records data.pkl's data range and CRC position when this central record is it, stored. */
function findZipPickle(model: FixtureModel, at: number): void {
  const b = model.bytes;
  if (at + 46 > b.length) return;
  const nameLength = u16(b, at + 28);
  const name = new TextDecoder().decode(b.subarray(at + 46, at + 46 + nameLength));
  if (!name.endsWith('/data.pkl') || u16(b, at + 10) !== 0) return;
  const local = u32(b, at + 42);
  if (local + 30 > b.length || u32(b, local) !== SIG_LOCAL) return;
  const start = local + 30 + u16(b, local + 26) + u16(b, local + 28);
  const end = start + u32(b, at + 24);
  if (end <= b.length) model.zipPickle = { start, end, crcOffset: at + 16 };
}

function analyzeSafetensors(model: FixtureModel): void {
  const b = model.bytes;
  model.fields.push({ offset: 0, width: 8, what: 'safetensors header length' });
  const n = b.length >= 8 ? Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true)) : 0;
  const end = Math.min(b.length, 8 + n);
  model.header = { start: 8, end };
  model.structure.push({ start: 0, end });
}

/** Legacy torch.save: five pickles back to back, then per storage a u64 count and raw bytes. */
function analyzePickles(model: FixtureModel): void {
  const count = model.kind === 'legacy' ? 5 : 1;
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const ops = walkPickle(model.bytes, pos);
    const last = ops[ops.length - 1];
    if (!last || last.code !== STOP) break;
    pos = last.pos + 1;
  }
  model.pickle = { start: 0, end: Math.max(pos, Math.min(model.bytes.length, 64)) };
  model.structure.push(model.pickle);
  if (model.kind === 'legacy' && pos + 8 <= model.bytes.length) {
    model.fields.push({ offset: pos, width: 8, what: 'legacy first storage element count' });
  }
}

// ================================================================================================
// Pickle opcode walker (just enough to know where opcodes and their arguments are)

const STOP = 0x2e;

type ArgKind = 'none' | 'u1' | 'u2' | 'u4' | 'f8' | 'u8' | 'line' | 'lines2' | 'len1' | 'len4' | 'len8';

/** Argument layout of every pickle opcode up to protocol 5 (CPython Lib/pickletools.py). */
const PICKLE_ARGS: Record<number, ArgKind> = (() => {
  const table: Record<number, ArgKind> = {};
  const set = (kind: ArgKind, codes: string | number[]): void => {
    for (const c of typeof codes === 'string' ? [...codes].map((ch) => ch.charCodeAt(0)) : codes) table[c] = kind;
  };
  set('none', '(.012NQRabd}el]ostu)');
  set('none', [0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98]);
  set('u1', 'Khq');
  set('u1', [0x80, 0x82]);
  set('u2', 'M');
  set('u2', [0x83]);
  set('u4', 'Jjr');
  set('u4', [0x84]);
  set('f8', 'G');
  set('u8', [0x95]);
  set('line', 'ILSVFgpP');
  set('lines2', 'ci');
  set('len1', 'UC');
  set('len1', [0x8c, 0x8a]);
  set('len4', 'TBX');
  set('len4', [0x8b]);
  set('len8', [0x8d, 0x8e, 0x96]);
  return table;
})();

const PICKLE_OPCODES = Object.keys(PICKLE_ARGS).map(Number);

export interface PickleOp {
  pos: number;
  code: number;
  kind: ArgKind;
  /** Numeric argument or length prefix, when the opcode has one. */
  field?: { offset: number; width: 1 | 2 | 4 | 8 };
  /** String / bytes payload. */
  payload?: ByteRange;
}

/** Decodes opcodes from `start` up to STOP, an unknown opcode or the end; never throws. */
export function walkPickle(b: Uint8Array, start: number, end = b.length): PickleOp[] {
  end = Math.min(end, b.length);
  const ops: PickleOp[] = [];
  let pos = start;
  while (pos < end && ops.length < 1_000_000) {
    const code = b[pos];
    const kind = PICKLE_ARGS[code];
    if (kind === undefined) break;
    const op: PickleOp = { pos, code, kind };
    const next = decodeArg(b, op, end);
    if (next < 0) break;
    ops.push(op);
    if (code === STOP) break;
    pos = next;
  }
  return ops;
}

const FIXED_WIDTH: Partial<Record<ArgKind, 1 | 2 | 4 | 8>> = { u1: 1, u2: 2, u4: 4, f8: 8, u8: 8 };
const LEN_WIDTH: Partial<Record<ArgKind, 1 | 4 | 8>> = { len1: 1, len4: 4, len8: 8 };

/** Fills op.field / op.payload; returns the next opcode's position, or -1 past `end`. */
function decodeArg(b: Uint8Array, op: PickleOp, end: number): number {
  const argAt = op.pos + 1;
  const fixed = FIXED_WIDTH[op.kind];
  if (fixed) {
    op.field = { offset: argAt, width: fixed };
    return argAt + fixed <= end ? argAt + fixed : -1;
  }
  const lenWidth = LEN_WIDTH[op.kind];
  if (lenWidth) {
    if (argAt + lenWidth > end) return -1;
    op.field = { offset: argAt, width: lenWidth };
    const length = readUint(b, argAt, lenWidth);
    const payloadEnd = argAt + lenWidth + length;
    op.payload = { start: argAt + lenWidth, end: payloadEnd };
    return payloadEnd <= end ? payloadEnd : -1;
  }
  if (op.kind === 'none') return argAt;
  let pos = argAt;
  for (let lines = op.kind === 'lines2' ? 2 : 1; lines > 0; lines--) {
    while (pos < end && b[pos] !== 0x0a) pos++;
    if (pos >= end) return -1;
    pos++;
  }
  op.payload = { start: argAt, end: pos };
  return pos;
}

/** Opcodes of consecutive pickles in [start, end) (a legacy file holds five back to back). */
export function walkPickles(b: Uint8Array, start: number, end: number): PickleOp[] {
  const all: PickleOp[] = [];
  for (let pos = start; pos < end; ) {
    const ops = walkPickle(b, pos, end);
    all.push(...ops);
    const last = ops[ops.length - 1];
    if (!last || last.code !== STOP) break;
    pos = last.pos + 1;
  }
  return all;
}

function readUint(b: Uint8Array, at: number, width: number): number {
  let v = 0;
  for (let i = width - 1; i >= 0; i--) v = v * 256 + b[at + i];
  return v;
}

// ================================================================================================
// Strategies

export type Strategy =
  | 'flip-bits'
  | 'overwrite-bytes'
  | 'extreme-int'
  | 'truncate'
  | 'truncate-tail'
  | 'duplicate-range'
  | 'delete-range'
  | 'splice'
  | 'safetensors-header'
  | 'pickle-opcode';

export const STRATEGIES: readonly Strategy[] = [
  'flip-bits', 'overwrite-bytes', 'extreme-int', 'truncate', 'truncate-tail', 'duplicate-range',
  'delete-range', 'splice', 'safetensors-header', 'pickle-opcode',
];

/** How often each strategy is drawn, per kind of fixture. */
const WEIGHTS: Record<FixtureKind, Partial<Record<Strategy, number>>> = {
  zip: {
    'flip-bits': 2, 'overwrite-bytes': 2, 'extreme-int': 4, truncate: 1, 'truncate-tail': 2,
    'duplicate-range': 1, 'delete-range': 1, splice: 1, 'pickle-opcode': 5,
  },
  legacy: {
    'flip-bits': 2, 'overwrite-bytes': 2, 'extreme-int': 2, truncate: 1, 'truncate-tail': 1,
    'duplicate-range': 1, 'delete-range': 1, splice: 1, 'pickle-opcode': 5,
  },
  safetensors: {
    'flip-bits': 2, 'overwrite-bytes': 2, 'extreme-int': 2, truncate: 1, 'truncate-tail': 1,
    'duplicate-range': 1, 'delete-range': 1, splice: 1, 'safetensors-header': 6,
  },
  pickle: {
    'flip-bits': 2, 'overwrite-bytes': 2, truncate: 1, 'duplicate-range': 1, 'delete-range': 1,
    splice: 1, 'pickle-opcode': 6,
  },
};

export interface MutationStep {
  strategy: Strategy;
  offset: number;
  detail: string;
}

export interface Mutant {
  bytes: Uint8Array;
  seed: number;
  steps: MutationStep[];
}

export function describeMutant(m: Mutant): string {
  const steps = m.steps.map((s) => `${s.strategy}@${s.offset} (${s.detail})`).join(' then ');
  return `seed=${m.seed} ${steps}`;
}

/**
 * Applies one to three mutations, chosen from `seed` alone. `only` forces the strategy (a
 * strategy that does not apply to this fixture falls back to overwrite-bytes).
 */
export function mutateFixture(model: FixtureModel, seed: number, only?: Strategy): Mutant {
  const rng = new Rng(seed);
  const count = rng.chance(0.8) ? 1 : rng.range(2, 3);
  let current = model;
  const steps: MutationStep[] = [];
  for (let i = 0; i < count; i++) {
    const strategy = only ?? rng.weighted(WEIGHTS[model.kind]);
    const { bytes, step } = applyStrategy(current, strategy, rng);
    steps.push(step);
    // Later steps see the mutated bytes but keep the original structure map: good enough to aim.
    current = { ...current, bytes };
  }
  return { bytes: current.bytes, seed, steps };
}

interface Applied {
  bytes: Uint8Array;
  step: MutationStep;
}

function applyStrategy(model: FixtureModel, strategy: Strategy, rng: Rng): Applied {
  switch (strategy) {
    case 'flip-bits': return flipBits(model, rng);
    case 'overwrite-bytes': return overwriteBytes(model, rng);
    case 'extreme-int': return extremeInt(model, rng);
    case 'truncate': return truncate(model, rng);
    case 'truncate-tail': return truncateTail(model, rng);
    case 'duplicate-range': return duplicateRange(model, rng);
    case 'delete-range': return deleteRange(model, rng);
    case 'splice': return splice(model, rng);
    case 'safetensors-header':
      return model.header ? safetensorsHeader(model, model.header, rng) : overwriteBytes(model, rng);
    case 'pickle-opcode':
      return model.pickle ? pickleOpcode(model, model.pickle, rng) : overwriteBytes(model, rng);
  }
}

/** An offset in [0, size): mostly inside a structure range, sometimes anywhere. */
function pickOffset(model: FixtureModel, rng: Rng): number {
  const size = model.bytes.length;
  if (size === 0) return 0;
  if (model.structure.length > 0 && rng.chance(0.75)) {
    const r = rng.pick(model.structure);
    const end = Math.min(r.end, size);
    if (end > r.start) return r.start + rng.int(end - r.start);
  }
  return rng.int(size);
}

function flipBits(model: FixtureModel, rng: Rng): Applied {
  const out = model.bytes.slice();
  const at = pickOffset(model, rng);
  const flips = rng.range(1, 4);
  for (let i = 0; i < flips && out.length > 0; i++) {
    const pos = Math.min(out.length - 1, at + rng.int(8));
    out[pos] ^= 1 << rng.int(8);
  }
  return { bytes: out, step: { strategy: 'flip-bits', offset: at, detail: `${flips} bit(s) within 8 bytes` } };
}

function overwriteBytes(model: FixtureModel, rng: Rng): Applied {
  const out = model.bytes.slice();
  const at = pickOffset(model, rng);
  const length = Math.min(out.length - at, rng.range(1, 16));
  const fill = rng.pick(['random', 'zero', 'ff'] as const);
  for (let i = 0; i < length; i++) out[at + i] = fill === 'random' ? rng.int(256) : fill === 'zero' ? 0 : 0xff;
  return { bytes: out, step: { strategy: 'overwrite-bytes', offset: at, detail: `${length} byte(s) of ${fill}` } };
}

const EXTREMES: readonly bigint[] = [
  0n, 1n, 0x7fn, 0xffn, 0x7fffn, 0xffffn, 0x7fffffffn, 0xffffffffn, 0x1_0000_0000n, 2n ** 53n, 2n ** 53n + 1n,
  2n ** 63n, 2n ** 64n - 1n,
];

function extremeInt(model: FixtureModel, rng: Rng): Applied {
  const out = model.bytes.slice();
  const field: IntField =
    model.fields.length > 0 && rng.chance(0.8)
      ? rng.pick(model.fields)
      : { offset: pickOffset(model, rng), width: rng.pick([2, 4, 8] as const), what: 'random field' };
  const size = BigInt(model.bytes.length);
  const value = rng.pick([...EXTREMES, size - 1n, size, size + 1n]);
  writeUint(out, field.offset, field.width, value);
  const detail = `${field.what} u${field.width * 8} = 0x${clampToWidth(value, field.width).toString(16)}`;
  return { bytes: out, step: { strategy: 'extreme-int', offset: field.offset, detail } };
}

function clampToWidth(value: bigint, width: number): bigint {
  return BigInt.asUintN(width * 8, value < 0n ? 0n : value);
}

/** Writes `value` (cut to `width` bytes) little-endian; bytes past the end are dropped. */
function writeUint(out: Uint8Array, at: number, width: number, value: bigint): void {
  let v = clampToWidth(value, width);
  for (let i = 0; i < width; i++, v >>= 8n) {
    if (at + i < out.length) out[at + i] = Number(v & 0xffn);
  }
}

function truncate(model: FixtureModel, rng: Rng): Applied {
  const at = pickOffset(model, rng);
  return { bytes: model.bytes.slice(0, at), step: { strategy: 'truncate', offset: at, detail: `keep ${at} bytes` } };
}

/** Cuts inside the tail: the zip end records and central directory, the safetensors data end. */
function truncateTail(model: FixtureModel, rng: Rng): Applied {
  const size = model.bytes.length;
  const window = rng.chance(0.7) ? 128 : 4096;
  const at = Math.max(0, size - 1 - rng.int(Math.min(size, window)));
  return { bytes: model.bytes.slice(0, at), step: { strategy: 'truncate-tail', offset: at, detail: `drop last ${size - at} bytes` } };
}

function rangeLength(rng: Rng, size: number): number {
  return Math.max(1, Math.min(size, rng.chance(0.5) ? rng.range(1, 16) : rng.range(1, 4096)));
}

function duplicateRange(model: FixtureModel, rng: Rng): Applied {
  const b = model.bytes;
  const at = pickOffset(model, rng);
  const length = Math.min(b.length - at, rangeLength(rng, b.length));
  const out = concat(b.subarray(0, at + length), b.subarray(at, at + length), b.subarray(at + length));
  return { bytes: out, step: { strategy: 'duplicate-range', offset: at, detail: `${length} byte(s) repeated` } };
}

function deleteRange(model: FixtureModel, rng: Rng): Applied {
  const b = model.bytes;
  const at = pickOffset(model, rng);
  const length = Math.min(b.length - at, rangeLength(rng, b.length));
  const out = concat(b.subarray(0, at), b.subarray(at + length));
  return { bytes: out, step: { strategy: 'delete-range', offset: at, detail: `${length} byte(s) removed` } };
}

function splice(model: FixtureModel, rng: Rng): Applied {
  const donors = donorFixtures();
  const donorPath = rng.pick(donors);
  const donor = loadDonor(donorPath);
  const from = rng.int(donor.length);
  const length = Math.min(donor.length - from, rng.range(1, 512));
  const chunk = donor.subarray(from, from + length);
  const at = pickOffset(model, rng);
  const insert = rng.chance(0.5);
  const b = model.bytes;
  const out = insert ? concat(b.subarray(0, at), chunk, b.subarray(at)) : overwriteAt(b, at, chunk);
  const detail = `${insert ? 'insert' : 'overwrite'} ${length} byte(s) of ${basename(donorPath)}@${from}`;
  return { bytes: out, step: { strategy: 'splice', offset: at, detail } };
}

function overwriteAt(b: Uint8Array, at: number, chunk: Uint8Array): Uint8Array {
  const out = b.slice();
  out.set(chunk.subarray(0, Math.max(0, out.length - at)), at);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// safetensors header JSON

const NUMBER_REPLACEMENTS = [
  '0', '-1', '1', '-0', '1.5', '1e400', '4294967296', '9007199254740993', '18446744073709551615',
  '99999999999999999999999999999', 'NaN', 'null', '"1"', '[]', '',
];
const DTYPE_REPLACEMENTS = [
  'F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'C64',
  'U64', 'I4', 'f32', 'F16 ', '', 'X',
];
const STRUCTURAL = '{}[]:,"';

type HeaderEdit = 'number' | 'bracket' | 'dtype' | 'key' | 'metadata';

function safetensorsHeader(model: FixtureModel, header: ByteRange, rng: Rng): Applied {
  const text = new TextDecoder().decode(model.bytes.subarray(header.start, header.end));
  const edit = rng.weighted<HeaderEdit>({ number: 4, bracket: 3, dtype: 2, key: 1, metadata: 1 });
  const { text: mutated, at, detail } = editHeader(text, edit, rng);
  const encoded = new TextEncoder().encode(mutated);
  // Usually the length prefix follows the edit; sometimes it keeps the old value, to desync them.
  const keepLength = rng.chance(0.15);
  const prefix = new Uint8Array(8);
  writeUint(prefix, 0, 8, BigInt(keepLength ? header.end - header.start : encoded.length));
  const out = concat(prefix, encoded, model.bytes.subarray(header.end));
  const lengthNote = keepLength ? ', old length prefix kept' : '';
  return { bytes: out, step: { strategy: 'safetensors-header', offset: header.start + at, detail: `${edit}: ${detail}${lengthNote}` } };
}

interface TextEdit {
  text: string;
  at: number;
  detail: string;
}

function editHeader(text: string, edit: HeaderEdit, rng: Rng): TextEdit {
  switch (edit) {
    case 'number': return replaceMatch(text, /-?\d+(\.\d+)?([eE][+-]?\d+)?/g, rng, (old) => replaceNumber(old, rng));
    case 'dtype': return replaceMatch(text, /"dtype":\s*"[^"]*"/g, rng, () => `"dtype":"${rng.pick(DTYPE_REPLACEMENTS)}"`);
    case 'bracket': return editStructural(text, rng);
    case 'key': return duplicateKey(text, rng);
    case 'metadata': return replaceMatch(text, /"__metadata__":\s*\{/g, rng, () => rng.pick(['"__metadata__":{"x":1,', '"__metadata__":[', '"__metadata__":{"":null,']));
  }
}

/** An extreme half the time, else the number nudged: offsets and shapes one off probe the checks. */
function replaceNumber(old: string, rng: Rng): string {
  if (rng.chance(0.5)) return rng.pick(NUMBER_REPLACEMENTS);
  const n = Number(old);
  return String(rng.pick([n + 1, n - 1, n * 2, Math.floor(n / 2), n + 4096]));
}

/** Replaces one random match of `re` (global) with `make(match)`; falls back to a structural edit. */
function replaceMatch(text: string, re: RegExp, rng: Rng, make: (match: string) => string): TextEdit {
  const matches = [...text.matchAll(re)];
  if (matches.length === 0) return editStructural(text, rng);
  const m = rng.pick(matches);
  const at = m.index ?? 0;
  const replacement = make(m[0]);
  return { text: text.slice(0, at) + replacement + text.slice(at + m[0].length), at, detail: `${JSON.stringify(m[0])} -> ${JSON.stringify(replacement)}` };
}

function editStructural(text: string, rng: Rng): TextEdit {
  const positions: number[] = [];
  for (let i = 0; i < text.length; i++) if (STRUCTURAL.includes(text[i])) positions.push(i);
  const at = positions.length > 0 ? rng.pick(positions) : rng.int(text.length);
  const op = rng.pick(['delete', 'double', 'replace'] as const);
  const ch = text[at] ?? '';
  const other = rng.pick([...STRUCTURAL]);
  const middle = op === 'delete' ? '' : op === 'double' ? ch + ch : other;
  return { text: text.slice(0, at) + middle + text.slice(at + 1), at, detail: `${op} ${JSON.stringify(ch)}${op === 'replace' ? ` with ${JSON.stringify(other)}` : ''}` };
}

/** Renames one tensor key to another existing key (or to __metadata__): a duplicate in the JSON. */
function duplicateKey(text: string, rng: Rng): TextEdit {
  const keys = [...text.matchAll(/"([^"]+)":\s*\{/g)];
  if (keys.length < 2) return editStructural(text, rng);
  const victim = rng.pick(keys);
  const name = rng.chance(0.8) ? rng.pick(keys)[1] : '__metadata__';
  const at = victim.index ?? 0;
  const replacement = `"${name}":{`;
  return { text: text.slice(0, at) + replacement + text.slice(at + victim[0].length), at, detail: `key ${JSON.stringify(victim[1])} renamed ${JSON.stringify(name)}` };
}

// ------------------------------------------------------------------------------------------------
// Pickle opcodes

type PickleEdit = 'opcode' | 'arg-extreme' | 'payload' | 'stop' | 'swap';

/** Edits one opcode of the pickle in place (same length); inside a zip, re-signs data.pkl's CRC. */
function pickleOpcode(model: FixtureModel, pickle: ByteRange, rng: Rng): Applied {
  const ops = walkPickles(model.bytes, pickle.start, pickle.end);
  if (ops.length === 0) return overwriteBytes(model, rng);
  const out = model.bytes.slice();
  const edit = rng.weighted<PickleEdit>({ opcode: 4, 'arg-extreme': 4, payload: 2, stop: 1, swap: 1 });
  const { at, detail } = editPickle(out, ops, edit, rng);
  if (model.zipPickle) resignZipPickle(out, model.zipPickle);
  return { bytes: out, step: { strategy: 'pickle-opcode', offset: at, detail: `${edit}: ${detail}` } };
}

function opName(code: number): string {
  return code >= 0x20 && code < 0x7f ? `'${String.fromCharCode(code)}'` : `0x${code.toString(16)}`;
}

function editPickle(out: Uint8Array, ops: PickleOp[], edit: PickleEdit, rng: Rng): { at: number; detail: string } {
  const withField = ops.filter((o) => o.field);
  const withPayload = ops.filter((o) => o.payload && o.payload.end > o.payload.start);
  if (edit === 'arg-extreme' && withField.length > 0) return editArgument(out, rng.pick(withField), rng);
  if (edit === 'payload' && withPayload.length > 0) return editPayload(out, rng.pick(withPayload), rng);
  if (edit === 'stop') {
    const stop = rng.pick(ops.filter((o) => o.code === STOP).concat(ops[ops.length - 1]));
    out[stop.pos] = rng.pick(PICKLE_OPCODES);
    return { at: stop.pos, detail: `${opName(stop.code)} -> ${opName(out[stop.pos])}` };
  }
  if (edit === 'swap' && ops.length >= 2) {
    const i = rng.int(ops.length - 1);
    const a = ops[i];
    const b = ops[i + 1];
    [out[a.pos], out[b.pos]] = [b.code, a.code];
    return { at: a.pos, detail: `opcodes ${opName(a.code)} and ${opName(b.code)} exchanged` };
  }
  const op = rng.pick(ops);
  out[op.pos] = rng.chance(0.8) ? rng.pick(PICKLE_OPCODES) : rng.int(256);
  return { at: op.pos, detail: `${opName(op.code)} -> ${opName(out[op.pos])}` };
}

/**
 * Sets a numeric argument or length prefix: half the time to an extreme, half the time nudged
 * (+-1, doubled, zero), since off-by-a-little shapes, strides and offsets probe the bounds checks.
 */
function editArgument(out: Uint8Array, op: PickleOp, rng: Rng): { at: number; detail: string } {
  const f = op.field!;
  const old = BigInt(readUint(out, f.offset, f.width));
  const value = rng.chance(0.5) ? rng.pick(EXTREMES) : rng.pick([old + 1n, old - 1n, old * 2n, 0n, old + 8n]);
  writeUint(out, f.offset, f.width, value);
  return { at: op.pos, detail: `${opName(op.code)} argument u${f.width * 8} 0x${old.toString(16)} -> 0x${clampToWidth(value, f.width).toString(16)}` };
}

/** Storage class names grouped by length, so that a swap keeps the pickle's size. */
const SAME_LENGTH_NAMES: readonly (readonly string[])[] = [
  ['IntStorage'],
  ['LongStorage', 'HalfStorage', 'ByteStorage', 'CharStorage', 'BoolStorage'],
  ['FloatStorage', 'ShortStorage'],
  ['DoubleStorage'],
  ['BFloat16Storage'],
].map((group) => [...group, 'X'.repeat(group[0].length)]);

/**
 * Edits a string payload: a digit of a storage key (two tensors then alias one storage), a
 * storage class (another itemsize), or one raw byte.
 */
function editPayload(out: Uint8Array, op: PickleOp, rng: Rng): { at: number; detail: string } {
  const p = op.payload!;
  const text = new TextDecoder('latin1').decode(out.subarray(p.start, p.end));
  const digits = [...text.matchAll(/\d/g)].map((m) => m.index ?? 0);
  const name = SAME_LENGTH_NAMES.flat().find((n) => text.includes(n) && !/^X+$/.test(n));
  const choice = rng.int(3);
  if (choice === 0 && digits.length > 0) {
    const at = p.start + rng.pick(digits);
    const old = out[at];
    out[at] = 0x30 + ((old - 0x30 + rng.range(1, 9)) % 10);
    return { at, detail: `${opName(op.code)} payload digit '${String.fromCharCode(old)}' -> '${String.fromCharCode(out[at])}'` };
  }
  if (choice === 1 && name) {
    const group = SAME_LENGTH_NAMES.find((g) => g.includes(name))!;
    const other = rng.pick(group.filter((n) => n !== name).concat(name));
    const at = p.start + text.indexOf(name);
    out.set(new TextEncoder().encode(other), at);
    return { at, detail: `${opName(op.code)} ${name} -> ${other}` };
  }
  const at = p.start + rng.int(p.end - p.start);
  out[at] = rng.pick([0x00, 0x0a, 0x2e, 0xff, 0xc3, rng.int(256)]);
  return { at, detail: `${opName(op.code)} payload byte = 0x${out[at].toString(16)}` };
}

/** Rewrites the central-directory CRC-32 of data.pkl so the zip layer lets the edit through. */
function resignZipPickle(out: Uint8Array, pickle: ZipPickle): void {
  const crc = crc32(out.subarray(pickle.start, pickle.end)) >>> 0;
  writeUint(out, pickle.crcOffset, 4, BigInt(crc));
}

// ================================================================================================
// Fixtures

/** Repository root (this file is <repo>/test/helpers/mutate.ts). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function torchDir(): string {
  return join(REPO_ROOT, 'fixtures', 'torch');
}

/** Names of fixtures/torch files that read without error (`"error": null` in their expected JSON). */
export function validTorchFixtures(): string[] {
  return listTorchFixtures().filter((name) => expectedError(name) === null);
}

/** fixtures/torch zip files whose expected read is an error (hostile pickles): data.pkl scans only. */
export function erroringTorchFixtures(): string[] {
  return listTorchFixtures().filter((name) => expectedError(name) !== null);
}

function listTorchFixtures(): string[] {
  const index = JSON.parse(readFileSync(join(torchDir(), 'index.json'), 'utf8')) as { files: string[] };
  return [...index.files].sort();
}

function expectedError(name: string): string | null {
  const expected = JSON.parse(readFileSync(join(torchDir(), `${name}.expected.json`), 'utf8')) as { error: string | null };
  return expected.error;
}

export function torchFixturePath(name: string): string {
  return join(torchDir(), name);
}

/** Splice donors: every small torch fixture and expected safetensors, in a fixed order. */
function donorFixtures(): string[] {
  donorList ??= listTorchFixtures()
    .flatMap((name) => [name, `${name}.expected.safetensors`])
    .map(torchFixturePath)
    .filter((p) => {
      try {
        return readFileSync(p).length > 0;
      } catch {
        return false;
      }
    });
  return donorList;
}

let donorList: string[] | undefined;
const donorBytes = new Map<string, Uint8Array>();

function loadDonor(path: string): Uint8Array {
  let bytes = donorBytes.get(path);
  if (!bytes) {
    bytes = readFileSync(path);
    donorBytes.set(path, bytes);
  }
  return bytes;
}

/** The data.pkl of a zip fixture (stored entries only), or the whole file for a .pkl. */
export function extractPickle(model: FixtureModel): Uint8Array | undefined {
  if (model.kind === 'pickle') return model.bytes;
  if (!model.zipPickle) return undefined;
  return model.bytes.slice(model.zipPickle.start, model.zipPickle.end);
}

// ================================================================================================
// The oracle: what a reader may do with a mutant

const ERROR_CODES: readonly string[] = Object.values(ErrorCode);

/** Undefined when `e` is an acceptable failure for `file`; otherwise what is wrong with it. */
export function judgeError(e: unknown, file: string): string | undefined {
  if (!(e instanceof CkptError)) return `non-CkptError escaped: ${formatError(e)}`;
  if (!ERROR_CODES.includes(e.code)) return `CkptError with unknown code ${String(e.code)}: ${e.message}`;
  if (e.message.length === 0) return `CkptError ${e.code} with an empty message`;
  if (!e.message.includes(file)) return `CkptError ${e.code} message does not name the file: ${e.message}`;
  return undefined;
}

function formatError(e: unknown): string {
  if (!(e instanceof Error)) return `thrown ${typeof e}: ${String(e)}`;
  const frames = (e.stack ?? '').split('\n').filter((l) => l.trim().startsWith('at ')).slice(0, 4);
  return `${e.name}: ${e.message}${frames.length ? `\n    ${frames.map((f) => f.trim()).join('\n    ')}` : ''}`;
}

/** Chunk size for reads: small enough that multi-chunk paths run on the small fixtures too. */
const READ_CHUNK_BYTES = 64 * 1024;

/** How a check ended: `problem` when the contract is broken; `outcome` is 'ok' or the error code. */
export interface Check {
  problem?: string;
  outcome: string;
}

function outcomeOf(e: unknown): string {
  return e instanceof CkptError ? e.code : 'non-CkptError';
}

/** Opens the file and reads every tensor. */
export async function checkOpen(path: string, allowUnsafePickle: boolean): Promise<Check> {
  let source: Awaited<ReturnType<typeof openCheckpoint>> | undefined;
  let problem: string | undefined;
  let outcome = 'ok';
  try {
    source = await openCheckpoint(path, { allowUnsafePickle });
    problem = await readAllTensors(source);
  } catch (e) {
    problem = judgeError(e, path);
    outcome = outcomeOf(e);
  }
  if (source) {
    try {
      await source.close();
    } catch (e) {
      problem ??= `close() threw: ${formatError(e)}`;
    }
  }
  problem ??= await checkClosed(path);
  return { problem: problem && `allowUnsafePickle=${allowUnsafePickle}: ${problem}`, outcome };
}

async function readAllTensors(source: Awaited<ReturnType<typeof openCheckpoint>>): Promise<string | undefined> {
  for (const t of source.tensors) {
    let bytes = 0;
    for await (const chunk of source.readChunks(t.name, { chunkBytes: READ_CHUNK_BYTES })) {
      if (!(chunk instanceof Uint8Array)) return `tensor ${t.name}: readChunks yielded a ${typeof chunk}`;
      if (chunk.byteLength > READ_CHUNK_BYTES) return `tensor ${t.name}: chunk of ${chunk.byteLength} bytes > ${READ_CHUNK_BYTES}`;
      bytes += chunk.byteLength;
    }
    if (bytes !== t.byteLength) return `tensor ${t.name}: read ${bytes} bytes, TensorInfo.byteLength is ${t.byteLength}`;
  }
  return undefined;
}

/**
 * After a source is closed, or an open failed, no descriptor may still point at the file: a
 * leaked handle is only closed by the garbage collector, with a warning, much later. Linux only
 * (/proc/self/fd); elsewhere the check passes. Each mutant has its own path, so the other
 * worker threads' files never count.
 */
async function checkClosed(path: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await readdir('/proc/self/fd');
  } catch {
    return undefined;
  }
  const targets = await Promise.all(entries.map((fd) => readlink(join('/proc/self/fd', fd)).catch(() => '')));
  const open = targets.filter((t) => t === path).length;
  return open === 0 ? undefined : `${open} file descriptor(s) still open on the file after close() or a failed open`;
}

/** Scans a pickle: it parses or fails with a proper CkptError. */
export function checkScan(bytes: Uint8Array, label: string): Check {
  try {
    scanPickleGlobals(bytes, label);
    return { outcome: 'ok' };
  } catch (e) {
    return { problem: judgeError(e, label), outcome: outcomeOf(e) };
  }
}

// ================================================================================================
// Jobs and the worker pool

export type FuzzMode = 'open' | 'scan';

export interface FuzzJob {
  fixture: string;
  mode: FuzzMode;
  seed: number;
}

export interface FuzzFailure {
  job: FuzzJob;
  description: string;
  problem: string;
}

const modelCache = new Map<string, FixtureModel>();

/** Fixture model for a job: the file itself ('open') or its data.pkl alone ('scan'). */
export function modelFor(fixture: string, mode: FuzzMode): FixtureModel {
  const key = `${mode}:${fixture}`;
  let model = modelCache.get(key);
  if (!model) {
    model = mode === 'open' ? analyzeFixture(fixture) : pickleModel(fixture);
    modelCache.set(key, model);
  }
  return model;
}

function pickleModel(fixture: string): FixtureModel {
  const pickle = extractPickle(analyzeFixture(fixture));
  if (!pickle) throw new Error(`${fixture}: no stored data.pkl to scan`);
  return analyzeFixture(`${fixture}#data.pkl`, pickle);
}

/** Rebuilds a job's mutant: the reproduction of any reported failure. */
export function buildMutant(job: FuzzJob): Mutant {
  return mutateFixture(modelFor(job.fixture, job.mode), job.seed);
}

/** True for files whose open goes through a pickle (both allowUnsafePickle settings matter). */
function hasPickle(model: FixtureModel): boolean {
  return model.kind !== 'safetensors';
}

/** Runs one job in this thread; the outcome reported is that of the deepest read (unsafe pickles allowed). */
export async function runJob(job: FuzzJob, tempDir: string, phase: (p: string) => void = () => undefined): Promise<Check> {
  const model = modelFor(job.fixture, job.mode);
  const mutant = mutateFixture(model, job.seed);
  if (job.mode === 'scan') {
    phase('scanPickleGlobals');
    return checkScan(mutant.bytes, `${job.fixture}#data.pkl@seed${job.seed}`);
  }
  const path = join(tempDir, `m${job.seed}${extname(job.fixture)}`);
  await writeFile(path, mutant.bytes);
  try {
    let check: Check = { outcome: 'ok' };
    for (const allow of hasPickle(model) ? [false, true] : [false]) {
      phase(`open+read allowUnsafePickle=${allow}`);
      check = await checkOpen(path, allow);
      if (check.problem) return check;
    }
    return check;
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

export interface FuzzRunOptions {
  workers: number;
  /** A job with no answer after this long is a hang; its worker is terminated and replaced. */
  hangMs: number;
  /** RSS growth over the run's start beyond which the jobs running at that moment fail. */
  rssGrowthBound: number;
  onResult?: (job: FuzzJob, failure: FuzzFailure | undefined, done: number) => void;
}

export interface FuzzRunResult {
  count: number;
  failures: FuzzFailure[];
  elapsedMs: number;
  /** Largest process RSS growth seen while running, in bytes. */
  peakRssGrowth: number;
  /** Mutants per outcome ('ok', an error code, 'hang', 'crash'): shows how deep the mutants reach. */
  outcomes: Record<string, number>;
}

type ToWorker = { type: 'job'; job: FuzzJob };
type FromWorker =
  | { type: 'ready' }
  | { type: 'phase'; phase: string }
  | { type: 'result'; problem?: string; outcome: string };

const WORKER_ROLE = 'ckpt2diffusers-fuzz-worker';
const WORKER_HEAP_MB = 1024;
const RSS_SAMPLE_MS = 20;

/**
 * Shared state of one run. RSS is sampled from the main thread, which stays idle while the
 * workers parse; a sample over the bound is charged to every job in flight at that moment, so a
 * runaway allocation is reported with a reproducible mutant rather than as a bare number.
 */
class FuzzRun {
  readonly failures: FuzzFailure[] = [];
  readonly outcomes: Record<string, number> = {};
  done = 0;
  private next = 0;
  private readonly baseline = process.memoryUsage().rss;
  private peak = this.baseline;
  private readonly inFlight = new Set<FuzzJob>();
  private readonly overBound = new Map<FuzzJob, number>();
  private readonly sampler = setInterval(() => this.sampleRss(), RSS_SAMPLE_MS);

  constructor(
    private readonly jobs: readonly FuzzJob[],
    readonly options: FuzzRunOptions,
    readonly tempDir: string,
  ) {}

  take(): FuzzJob | undefined {
    const job = this.next < this.jobs.length ? this.jobs[this.next++] : undefined;
    if (job) this.inFlight.add(job);
    return job;
  }

  finish(job: FuzzJob, workerProblem: string | undefined, outcome: string): void {
    this.inFlight.delete(job);
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
    const growth = this.overBound.get(job);
    const memoryProblem = growth === undefined ? undefined : `RSS grew by ${mib(growth)} MiB while it ran (bound ${mib(this.options.rssGrowthBound)} MiB)`;
    const problem = workerProblem ?? memoryProblem;
    const failure = problem === undefined ? undefined : { job, description: describeMutant(buildMutant(job)), problem };
    if (failure) this.failures.push(failure);
    this.done++;
    this.options.onResult?.(job, failure, this.done);
  }

  stop(): number {
    clearInterval(this.sampler);
    this.sampleRss();
    return this.peak - this.baseline;
  }

  private sampleRss(): void {
    const growth = process.memoryUsage().rss - this.baseline;
    this.peak = Math.max(this.peak, this.baseline + growth);
    if (growth <= this.options.rssGrowthBound) return;
    for (const job of this.inFlight) this.overBound.set(job, Math.max(growth, this.overBound.get(job) ?? 0));
  }
}

function mib(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
}

/** Runs all jobs on `options.workers` threads and collects the failures. */
export async function runFuzz(jobs: readonly FuzzJob[], options: FuzzRunOptions): Promise<FuzzRunResult> {
  const started = Date.now();
  const tempDir = join(tmpdir(), `ckpt-fuzz-${process.pid}-${started}`);
  mkdirSync(tempDir, { recursive: true });
  const run = new FuzzRun(jobs, options, tempDir);
  let peakRssGrowth = 0;
  try {
    const lanes = Math.max(1, Math.min(options.workers, jobs.length));
    await Promise.all(Array.from({ length: lanes }, () => runLane(run)));
  } finally {
    peakRssGrowth = run.stop();
    rmSync(tempDir, { recursive: true, force: true });
  }
  return { count: run.done, failures: run.failures, elapsedMs: Date.now() - started, peakRssGrowth, outcomes: run.outcomes };
}

/** One worker thread working through jobs; replaced after a hang or a crash. */
async function runLane(run: FuzzRun): Promise<void> {
  let worker: LaneWorker | undefined;
  try {
    for (let job = run.take(); job; job = run.take()) {
      worker ??= await LaneWorker.start(run.tempDir);
      const outcome = await worker.run(job, run.options.hangMs);
      if (outcome.dead) worker = undefined;
      run.finish(job, outcome.problem, outcome.outcome);
    }
  } finally {
    await worker?.stop();
  }
}

/** A worker thread running mutate.ts itself (see startWorker), with TypeScript loaded by tsx. */
class LaneWorker {
  private phase = 'starting';
  private pending?: (msg: FromWorker | { type: 'crash'; error: unknown }) => void;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (msg: FromWorker) => {
      if (msg.type === 'phase') this.phase = msg.phase;
      else this.pending?.(msg);
    });
    worker.on('error', (error) => this.pending?.({ type: 'crash', error }));
    worker.on('exit', (code) => this.pending?.({ type: 'crash', error: new Error(`worker exited with code ${code}`) }));
  }

  static async start(tempDir: string): Promise<LaneWorker> {
    const worker = new Worker(workerBootstrap(), {
      eval: true,
      workerData: { role: WORKER_ROLE, tempDir },
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    });
    const lane = new LaneWorker(worker);
    const first = await lane.next(60_000);
    if (first.type !== 'ready') throw new Error(`fuzz worker failed to start: ${describeOutcome(first)}`);
    return lane;
  }

  /** Runs one job; `dead` when the worker had to be terminated or crashed. */
  async run(job: FuzzJob, hangMs: number): Promise<Check & { dead: boolean }> {
    this.phase = 'mutate';
    this.worker.postMessage({ type: 'job', job } satisfies ToWorker);
    const answer = await this.next(hangMs);
    if (answer.type === 'result') return { problem: answer.problem, outcome: answer.outcome, dead: false };
    const phase = this.phase;
    await this.stop();
    if (answer.type === 'timeout') return { problem: `hang: no answer within ${hangMs} ms (during ${phase})`, outcome: 'hang', dead: true };
    return { problem: `worker died during ${phase}: ${describeOutcome(answer)}`, outcome: 'crash', dead: true };
  }

  async stop(): Promise<void> {
    this.pending = undefined;
    await this.worker.terminate();
  }

  private next(timeoutMs: number): Promise<FromWorker | { type: 'crash'; error: unknown } | { type: 'timeout' }> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        resolve({ type: 'timeout' });
      }, timeoutMs);
      this.pending = (msg) => {
        clearTimeout(timer);
        this.pending = undefined;
        resolve(msg);
      };
    });
  }
}

function describeOutcome(o: { type: string; error?: unknown }): string {
  return o.type === 'crash' ? formatError(o.error) : o.type;
}

/** Worker entry code: registers tsx's loader, then imports this very module as a worker. */
function workerBootstrap(): string {
  const tsxDir = dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const tsxApi = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  const self = pathToFileURL(join(REPO_ROOT, 'test', 'helpers', 'mutate.ts')).href;
  return `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(self)}); });`;
}

/** Worker side: answers each job with its problem, reporting the phase first so hangs say where. */
function startWorker(tempDir: string): void {
  const port = parentPort!;
  const post = (msg: FromWorker): void => port.postMessage(msg);
  port.on('message', (msg: ToWorker) => {
    runJob(msg.job, tempDir, (phase) => post({ type: 'phase', phase })).then(
      (check) => post({ type: 'result', ...check }),
      (e: unknown) => post({ type: 'result', problem: `harness error: ${formatError(e)}`, outcome: 'harness-error' }),
    );
  });
  post({ type: 'ready' });
}

const data = workerData as { role?: string; tempDir?: string } | null;
if (!isMainThread && data?.role === WORKER_ROLE && data.tempDir) startWorker(data.tempDir);

// ================================================================================================
// Fuzz targets

export interface FuzzTarget {
  path: string;
  mode: FuzzMode;
  size: number;
}

/** Checkpoints of the shared end-to-end cases (zip, legacy and safetensors; 0.5-5 MB each). */
const SHARED_CASE_FILES = [
  'cases/vae/vae-fp16.ckpt', 'cases/vae/vae-legacy.ckpt', 'cases/vae/vae.ckpt', 'cases/vae/vae.safetensors',
  'cases/sd1/model-legacy-fp16.ckpt', 'cases/sd1/model-fp16-ema.ckpt', 'cases/sd1/model.ckpt',
  'cases/sd2/model-fp16.ckpt', 'cases/sd2/model-fp16.safetensors', 'cases/sdxl-base/model-fp16.safetensors',
  'cases/sd1-pipe/model-fp16.ckpt',
];

/** Small safetensors written by the reference tools (golden outputs, the noise table). */
const SHARED_SAFETENSORS = [
  'noise/torch-randn.safetensors',
  'golden/sd1/diffusers/text_encoder/model.safetensors',
  'golden/sdxl-base/diffusers/text_encoder_2/model.safetensors',
];

function target(path: string, mode: FuzzMode): FuzzTarget {
  return { path, mode, size: mode === 'open' ? readFileSync(path).length : extractPickle(analyzeFixture(path))?.length ?? 0 };
}

/** Every target, in a fixed order: open small torch files, their expected safetensors, shared files; scan data.pkl. */
export function defaultTargets(): FuzzTarget[] {
  const valid = validTorchFixtures().map(torchFixturePath);
  const expectedSafetensors = validTorchFixtures()
    .map((name) => torchFixturePath(`${name}.expected.safetensors`))
    .filter((p) => safeSize(p) > 0);
  const shared = [...SHARED_CASE_FILES, ...SHARED_SAFETENSORS].map(sharedFixture).filter((p) => safeSize(p) > 0);
  const open = [...valid, ...expectedSafetensors, ...shared].map((p) => target(p, 'open'));
  const scan = [...valid, ...erroringTorchFixtures().map(torchFixturePath), ...shared]
    .filter((p) => modelHasScannablePickle(p))
    .map((p) => target(p, 'scan'));
  return [...open, ...scan];
}

function safeSize(path: string): number {
  try {
    return readFileSync(path).length;
  } catch {
    return 0;
  }
}

function modelHasScannablePickle(path: string): boolean {
  return extractPickle(analyzeFixture(path)) !== undefined;
}
