/**
 * safetensors reader and writer (docs/formats.md §5).
 *
 * Malformed inputs are byte literals built here, one per validation rule (§5.3), each with the
 * code it must raise. The writer is checked against the reference writer's documented output
 * (§5.2 and the crate's own serialization test vectors) and, bit for bit, against every
 * Diffusers-written golden file.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DTYPES, dtypeBytes, type DType } from '../../src/dtypes.js';
import { ErrorCode, isCkptError, type ErrorCode as Code } from '../../src/errors.js';
import {
  SafetensorsWriter,
  openSafetensors,
  planSafetensorsLayout,
  readSafetensorsHeader,
  writeSafetensorsFile,
  type SafetensorsHeader,
} from '../../src/formats/safetensors.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { FileSource } from '../../src/io/file-source.js';
import { MAX_RANK, MAX_SAFETENSORS_HEADER_BYTES } from '../../src/limits.js';
import { repoRoot, sharedFixture } from '../helpers/paths.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'safetensors-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const enc = new TextEncoder();
let fileCounter = 0;

/** u64 LE length prefix + header bytes + data. */
function stFile(header: string | Uint8Array, data: Uint8Array | number = 0, n?: bigint): Uint8Array {
  const h = typeof header === 'string' ? enc.encode(header) : header;
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + body.length);
  new DataView(out.buffer).setBigUint64(0, n ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(body, 8 + h.length);
  return out;
}

async function tempFile(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `f${fileCounter++}.safetensors`);
  await writeFile(path, bytes);
  return path;
}

async function headerOf(bytes: Uint8Array): Promise<SafetensorsHeader> {
  const file = await FileSource.open(await tempFile(bytes));
  try {
    return await readSafetensorsHeader(file);
  } finally {
    await file.close();
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (e) {
    if (isCkptError(e)) return e.code;
    throw e;
  }
  return 'no error';
}

/** A tensor entry in the header JSON. */
const t = (dtype: string, shape: string, offsets: string): string => `{"dtype":"${dtype}","shape":${shape},"data_offsets":${offsets}}`;

interface BadCase {
  name: string;
  bytes: Uint8Array;
  code: Code;
}

const bad: BadCase[] = [
  { name: 'file shorter than the 8-byte length', bytes: new Uint8Array([2, 0, 0]), code: ErrorCode.E_TRUNCATED },
  { name: 'header too large (N = 100 000 001)', bytes: stFile('{}', 0, BigInt(MAX_SAFETENSORS_HEADER_BYTES + 1)), code: ErrorCode.E_SAFETENSORS_HEADER_TOO_LARGE },
  { name: 'header length 2^64 - 1', bytes: stFile('{}', 0, 2n ** 64n - 1n), code: ErrorCode.E_SAFETENSORS_HEADER_TOO_LARGE },
  { name: 'header length past end of file', bytes: stFile('{}      ', 0, 100n), code: ErrorCode.E_TRUNCATED },
  { name: 'NUL padding', bytes: stFile('{}\0\0\0\0\0\0'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'not an object (array)', bytes: stFile('[]'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'not an object (string)', bytes: stFile('"x"'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'starts with a non-JSON character', bytes: stFile('x{}'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'UTF-8 byte order mark', bytes: stFile(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'invalid UTF-8', bytes: stFile(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'truncated JSON', bytes: stFile('{"a":'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'trailing comma', bytes: stFile(`{"a":${t('U8', '[1]', '[0,1]')},}`, 1), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'garbage after the object', bytes: stFile('{} x'), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'raw control character in a name', bytes: stFile(`{"a\tb":${t('U8', '[1]', '[0,1]')}}`, 1), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'unpaired surrogate escape in a name', bytes: stFile(`{"\\ud800":${t('U8', '[1]', '[0,1]')}}`, 1), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'tensor entry is not an object', bytes: stFile('{"a":[0,1]}', 1), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'missing data_offsets', bytes: stFile('{"a":{"dtype":"U8","shape":[1]}}', 1), code: ErrorCode.E_SAFETENSORS_HEADER },
  { name: 'non-string metadata value', bytes: stFile('{"__metadata__":{"step":5}}'), code: ErrorCode.E_SAFETENSORS_METADATA },
  { name: 'metadata is an array', bytes: stFile('{"__metadata__":["pt"]}'), code: ErrorCode.E_SAFETENSORS_METADATA },
  { name: 'unknown dtype', bytes: stFile(`{"a":${t('F17', '[1]', '[0,4]')}}`, 4), code: ErrorCode.E_SAFETENSORS_DTYPE },
  { name: 'lowercase dtype', bytes: stFile(`{"a":${t('f32', '[1]', '[0,4]')}}`, 4), code: ErrorCode.E_SAFETENSORS_DTYPE },
  { name: 'negative offset', bytes: stFile(`{"a":${t('U8', '[1]', '[-1,0]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'fractional offset', bytes: stFile(`{"a":${t('U8', '[1]', '[0.5,1.5]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'integral offset written as a float', bytes: stFile(`{"a":${t('U8', '[1]', '[0,1.0]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'offset in exponent notation', bytes: stFile(`{"a":${t('U8', '[1]', '[0,1e0]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'offset beyond 2^53', bytes: stFile(`{"a":${t('U8', '[1]', '[9007199254740993,9007199254740994]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'three data_offsets', bytes: stFile(`{"a":${t('U8', '[1]', '[0,1,2]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  {
    name: 'hole between tensors',
    bytes: stFile(`{"a":${t('F32', '[1]', '[0,4]')},"b":${t('F32', '[1]', '[8,12]')}}`, 12),
    code: ErrorCode.E_SAFETENSORS_OFFSETS,
  },
  {
    name: 'overlapping tensors',
    bytes: stFile(`{"a":${t('F32', '[2]', '[0,8]')},"b":${t('F32', '[1]', '[4,8]')}}`, 8),
    code: ErrorCode.E_SAFETENSORS_OFFSETS,
  },
  { name: 'end before begin', bytes: stFile(`{"a":${t('U8', '[0]', '[4,0]')}}`, 4), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'size mismatch (end - begin != numel * itemsize)', bytes: stFile(`{"a":${t('F32', '[2]', '[0,4]')}}`, 4), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  { name: 'sub-byte dtype not filling whole bytes', bytes: stFile(`{"a":${t('F4', '[3]', '[0,1]')}}`, 1), code: ErrorCode.E_SAFETENSORS_OFFSETS },
  {
    name: 'trailing bytes (polyglot file)',
    bytes: stFile(`{"test":${t('I32', '[2,2]', '[0,16]')}}`, new Uint8Array([...new Uint8Array(16), ...enc.encode('extra_bogus_data_for_polyglot_file')])),
    code: ErrorCode.E_SAFETENSORS_COVERAGE,
  },
  { name: 'data shorter than the tensors', bytes: stFile(`{"a":${t('F32', '[4]', '[0,16]')}}`, 8), code: ErrorCode.E_TRUNCATED },
  {
    name: 'duplicate tensor name (identical entries)',
    bytes: stFile(`{"a":${t('U8', '[1]', '[0,1]')},"a":${t('U8', '[1]', '[0,1]')}}`, 1),
    code: ErrorCode.E_SAFETENSORS_DUPLICATE,
  },
  { name: 'duplicate __metadata__', bytes: stFile('{"__metadata__":{},"__metadata__":{}}'), code: ErrorCode.E_SAFETENSORS_DUPLICATE },
  { name: 'duplicate metadata key', bytes: stFile('{"__metadata__":{"format":"pt","format":"pt"}}'), code: ErrorCode.E_SAFETENSORS_DUPLICATE },
  { name: 'duplicate field in a tensor entry', bytes: stFile('{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1), code: ErrorCode.E_SAFETENSORS_DUPLICATE },
  { name: 'shape overflow', bytes: stFile(`{"a":${t('F32', '[4294967296,4294967296]', '[0,0]')}}`), code: ErrorCode.E_TENSOR_SHAPE },
  { name: 'negative shape dimension', bytes: stFile(`{"a":${t('U8', '[-1]', '[0,0]')}}`), code: ErrorCode.E_TENSOR_SHAPE },
  { name: 'fractional shape dimension', bytes: stFile(`{"a":${t('U8', '[1.5]', '[0,1]')}}`, 1), code: ErrorCode.E_TENSOR_SHAPE },
  { name: `rank above MAX_RANK (${MAX_RANK})`, bytes: stFile(`{"a":${t('U8', `[${Array(MAX_RANK + 1).fill(1).join(',')}]`, '[0,1]')}}`, 1), code: ErrorCode.E_LIMIT },
];

describe('malformed headers: one case per rule', () => {
  test.each(bad)('$name -> $code', async ({ bytes, code }) => {
    expect(await codeOf(headerOf(bytes))).toBe(code);
  });

  test('messages name the file, the tensor and the values', async () => {
    const bytes = stFile(`{"a":${t('F32', '[1]', '[0,4]')},"weight.b":${t('F32', '[1]', '[8,12]')}}`, 12);
    const path = await tempFile(bytes);
    const file = await FileSource.open(path);
    const err = await readSafetensorsHeader(file).catch((e: unknown) => e);
    await file.close();
    expect(isCkptError(err) && err.message).toMatch(new RegExp(`^${path}: .*"weight\\.b".*8.*expected 4`));
  });
});

describe('accepted edge cases', () => {
  test('trailing-space padding and N not a multiple of 8 (old writers)', async () => {
    expect((await headerOf(stFile('{}     '))).tensors).toEqual([]);
    expect((await headerOf(stFile('{}'))).headerBytes).toBe(2);
  });

  test('leading whitespace before the object', async () => {
    const h = await headerOf(stFile(`  \n\t{"a":${t('U8', '[1]', '[0,1]')}}`, 1));
    expect(h.tensors.map((x) => x.name)).toEqual(['a']);
  });

  test('entries out of offset order keep the JSON order', async () => {
    const h = await headerOf(stFile(`{"z":${t('F32', '[1]', '[4,8]')},"1":${t('U8', '[2]', '[8,10]')},"0":${t('F32', '[1]', '[0,4]')}}`, 10));
    // JSON.parse would list "0" and "1" first; the file order is z, 1, 0.
    expect(h.tensors.map((x) => [x.name, x.dataOffsets])).toEqual([
      ['z', [4, 8]],
      ['1', [8, 10]],
      ['0', [0, 4]],
    ]);
  });

  test('__metadata__: null, absent, and placed after the tensors', async () => {
    expect((await headerOf(stFile('{"__metadata__":null}'))).metadata).toBeNull();
    expect((await headerOf(stFile('{}'))).metadata).toBeNull();
    const h = await headerOf(stFile(`{"a":${t('U8', '[1]', '[0,1]')},"__metadata__":{"format":"pt","__proto__":"x"}}`, 1));
    expect({ ...h.metadata }).toEqual(Object.fromEntries([['format', 'pt'], ['__proto__', 'x']]));
  });

  test('zero-element tensor, scalar and empty header', async () => {
    const h = await headerOf(stFile(`{"e":${t('F32', '[0,4]', '[0,0]')},"s":${t('F32', '[]', '[0,4]')},"e2":${t('I64', '[3,0]', '[4,4]')}}`, 4));
    expect(h.tensors.map((x) => [x.name, x.shape, x.byteLength])).toEqual([
      ['e', [0, 4], 0],
      ['s', [], 4],
      ['e2', [3, 0], 0],
    ]);
    expect((await headerOf(stFile('{}'))).dataBytes).toBe(0);
  });

  test('unknown extra fields inside a tensor entry are ignored', async () => {
    const h = await headerOf(stFile('{"a":{"dtype":"U8","note":{"x":[1,2.5,null,true,"s"]},"shape":[1],"data_offsets":[0,1]}}', 1));
    expect(h.tensors[0].dtype).toBe('U8');
  });

  test.each(['F8_E4M3', 'U16', 'C64'])('%s: header readable, conversion refused with E_SAFETENSORS_DTYPE', async (dtype) => {
    const size = dtype === 'C64' ? 8 : dtype === 'U16' ? 2 : 1;
    const bytes = stFile(`{"w":${t(dtype, '[1]', `[0,${size}]`)}}`, size);
    expect((await headerOf(bytes)).tensors[0].dtype).toBe(dtype);
    const file = await FileSource.open(await tempFile(bytes));
    const err = await openSafetensors(file).catch((e: unknown) => e);
    await file.close();
    expect(isCkptError(err) && err.code).toBe(ErrorCode.E_SAFETENSORS_DTYPE);
    expect(String(err)).toContain(dtype);
  });
});

/** Bytes 0, 1, 2, ... of a tensor (distinct per tensor through `seed`). */
function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + seed * 31) & 0xff);
}

describe('writer matches the reference writer', () => {
  test('formats.md §5.2 six-tensor example, N = 392 (a multiple of 8: no padding)', async () => {
    const specs: Array<[string, DType, number[]]> = [
      ['a.weight', 'F32', [2, 3]],
      ['b.long', 'I64', [1]],
      ['c.byte', 'U8', [1]],
      ['empty', 'F32', [0, 4]],
      ['scalar', 'F32', []],
      ['z.half', 'F16', [2]],
    ];
    const tensors = specs.map(([name, dtype, shape], i) => ({ name, dtype, shape, data: pattern(shape.reduce((a, b) => a * b, 1) * dtypeBytes(dtype), i) }));
    const path = join(dir, 'example.safetensors');
    await writeSafetensorsFile(path, tensors, { format: 'pt' });
    const bytes = new Uint8Array(await readFile(path));
    expect([...bytes.subarray(0, 8)]).toEqual([0x88, 0x01, 0, 0, 0, 0, 0, 0]);
    const expectedHeader =
      '{"__metadata__":{"format":"pt"},"b.long":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
      '"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},' +
      '"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[32,32]},' +
      '"scalar":{"dtype":"F32","shape":[],"data_offsets":[32,36]},' +
      '"z.half":{"dtype":"F16","shape":[2],"data_offsets":[36,40]},' +
      '"c.byte":{"dtype":"U8","shape":[1],"data_offsets":[40,41]}}';
    expect(expectedHeader.length).toBe(392);
    expect(new TextDecoder().decode(bytes.subarray(8, 400))).toBe(expectedHeader);
    expect(bytes.length).toBe(8 + 392 + 41);
    const data = tensors.find((x) => x.name === 'a.weight')!.data;
    expect(bytes.subarray(400 + 8, 400 + 32)).toEqual(data);
  });

  // The reference crate's own serialization tests (tensor.rs `test_serialization`, `test_empty`,
  // `test_serialization_forced_alignement`): exact header lengths and padding.
  test.each([
    { name: 'one F32 [1,2,3], no metadata', entries: [{ name: 'attn.0', dtype: 'F32' as DType, shape: [1, 2, 3] }], metadata: null, n: 64, pad: 0 },
    { name: 'one F32 [1,1,2,3], padded by 7', entries: [{ name: 'attn0', dtype: 'F32' as DType, shape: [1, 1, 2, 3] }], metadata: null, n: 72, pad: 7 },
    { name: 'empty, no metadata', entries: [], metadata: null, n: 8, pad: 6 },
    { name: 'empty with metadata', entries: [], metadata: { framework: 'pt' }, n: 40, pad: 5 },
  ])('reference test vector: $name', ({ entries, metadata, n, pad }) => {
    const layout = planSafetensorsLayout(entries, metadata);
    expect(layout.headerBytes).toBe(n);
    const header = new TextDecoder().decode(layout.prefix.subarray(8));
    expect(header.length - header.trimEnd().length).toBe(pad);
  });

  test('dtype order follows the crate enum rank, not only the size (I64 before F64)', () => {
    const layout = planSafetensorsLayout(
      [
        { name: 'a', dtype: 'F64', shape: [1] },
        { name: 'b', dtype: 'I64', shape: [1] },
        { name: 'c', dtype: 'BF16', shape: [1] },
        { name: 'd', dtype: 'F16', shape: [1] },
        { name: 'e', dtype: 'BOOL', shape: [1] },
        { name: 'f', dtype: 'I8', shape: [1] },
        { name: 'g', dtype: 'U8', shape: [1] },
      ],
      {},
    );
    expect(layout.tensors.map((x) => x.dtype)).toEqual(['I64', 'F64', 'BF16', 'F16', 'I8', 'U8', 'BOOL']);
  });

  test('names sort by code point like Rust strings (U+FFFF before U+1F600)', () => {
    const layout = planSafetensorsLayout(
      ['😀', '\uffff', 'b', 'B', 'a.10', 'a.9'].map((name) => ({ name, dtype: 'U8' as DType, shape: [1] })),
      null,
    );
    expect(layout.tensors.map((x) => x.name)).toEqual(['B', 'a.10', 'a.9', 'b', '\uffff', '😀']);
  });

  test('round trip of every dtype through the streaming writer and the reader', async () => {
    const dtypes = Object.keys(DTYPES) as DType[];
    const tensors = dtypes.map((dtype, i) => ({ name: `t.${dtype.toLowerCase()}`, dtype, shape: [3, 5], data: pattern(15 * dtypeBytes(dtype), i) }));
    const path = join(dir, 'all-dtypes.safetensors');
    await writeSafetensorsFile(path, tensors, { format: 'pt', note: 'ünïcode "quoted"\n' });
    const source = await openSafetensors(await FileSource.open(path));
    try {
      expect(source.metadata).toEqual({ format: 'pt', note: 'ünïcode "quoted"\n' });
      expect(source.container).toMatchObject({ tensorCount: dtypes.length });
      expect(source.safety).toEqual({ hasPickle: false, globals: [], dangerous: false });
      for (const x of tensors) {
        expect(source.get(x.name)).toEqual({ name: x.name, dtype: x.dtype, shape: [3, 5], byteLength: x.data.length });
        expect(await source.readTensor(x.name)).toEqual(x.data);
        const chunks: Uint8Array[] = [];
        for await (const c of source.readChunks(x.name, { chunkBytes: 7 })) chunks.push(c);
        const itemsize = dtypeBytes(x.dtype);
        const expectedChunk = Math.max(itemsize, Math.floor(7 / itemsize) * itemsize);
        expect(chunks.every((c, i) => c.length === expectedChunk || i === chunks.length - 1)).toBe(true);
        expect(Buffer.concat(chunks)).toEqual(Buffer.from(x.data));
      }
      expect(await codeOf(source.readTensor('missing'))).toBe(ErrorCode.E_TENSOR_NOT_FOUND);
    } finally {
      await source.close();
    }
  });
});

describe('streaming writer checks what it is fed', () => {
  const layout = planSafetensorsLayout(
    [
      { name: 'a', dtype: 'F32', shape: [2] },
      { name: 'z', dtype: 'F32', shape: [0] },
      { name: 'b', dtype: 'F16', shape: [2] },
    ],
    { format: 'pt' },
  );

  async function withWriter(run: (w: SafetensorsWriter) => Promise<void>): Promise<string> {
    const path = join(dir, `w${fileCounter++}.safetensors`);
    const w = await SafetensorsWriter.create(path, layout);
    try {
      await run(w);
      return 'ok';
    } catch (e) {
      await w.abort();
      expect(existsSync(path)).toBe(false);
      if (isCkptError(e)) return e.code;
      throw e;
    }
  }

  test('chunks in order, zero-length tensor skipped implicitly', async () => {
    const result = await withWriter(async (w) => {
      expect(w.expectedTensor).toBe('a');
      await w.writeChunk('a', new Uint8Array(3));
      await w.writeChunk('a', new Uint8Array(5));
      expect(w.expectedTensor).toBe('b');
      await w.writeChunk('b', new Uint8Array(4));
      expect(w.expectedTensor).toBeUndefined();
      await w.finish();
    });
    expect(result).toBe('ok');
  });

  test.each([
    { name: 'too many bytes', run: (w: SafetensorsWriter) => w.writeChunk('a', new Uint8Array(9)) },
    { name: 'next tensor before the current is complete', run: async (w: SafetensorsWriter) => { await w.writeChunk('a', new Uint8Array(4)); await w.writeChunk('b', new Uint8Array(4)); } },
    { name: 'out of order', run: async (w: SafetensorsWriter) => { await w.writeChunk('a', new Uint8Array(8)); await w.writeChunk('b', new Uint8Array(4)); await w.writeChunk('a', new Uint8Array(0)); } },
    { name: 'unknown tensor', run: (w: SafetensorsWriter) => w.writeChunk('nope', new Uint8Array(1)) },
    { name: 'finish before the last tensor is complete', run: async (w: SafetensorsWriter) => { await w.writeChunk('a', new Uint8Array(8)); await w.finish(); } },
    { name: 'writeTensor with too few bytes', run: (w: SafetensorsWriter) => w.writeTensor('a', [new Uint8Array(4)]) },
  ])('$name -> E_SAFETENSORS_WRITE', async ({ run }) => {
    expect(await withWriter(run)).toBe(ErrorCode.E_SAFETENSORS_WRITE);
  });

  test('layout refuses duplicate names and bad metadata', () => {
    expect(() => planSafetensorsLayout([{ name: 'a', dtype: 'U8', shape: [1] }, { name: 'a', dtype: 'U8', shape: [1] }], null)).toThrow(
      expect.objectContaining({ code: ErrorCode.E_SAFETENSORS_DUPLICATE }),
    );
    expect(() => planSafetensorsLayout([], { step: 5 as unknown as string })).toThrow(expect.objectContaining({ code: ErrorCode.E_SAFETENSORS_METADATA }));
    expect(() => planSafetensorsLayout([{ name: 'a', dtype: 'U8', shape: [-1] }], null)).toThrow(expect.objectContaining({ code: ErrorCode.E_TENSOR_SHAPE }));
  });
});

// ------------------------------------------------------------------------------------------------
// Real files
// ------------------------------------------------------------------------------------------------

/** Every .safetensors under `sub` of the shared fixtures, local copy and shared set merged. */
function sharedSafetensors(sub: string): string[] {
  const roots = [join(repoRoot, 'fixtures', 'shared'), join(repoRoot, '..', 'shared', 'fixtures')];
  const found = new Set<string>();
  const walk = (root: string, d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(root, p);
      else if (name.endsWith('.safetensors')) found.add(relative(root, p));
    }
  };
  for (const root of roots) if (existsSync(join(root, sub))) walk(root, join(root, sub));
  return [...found].sort();
}

const caseFiles = sharedSafetensors('cases');
const goldenFiles = sharedSafetensors('golden');
const goldenDiffusers = goldenFiles.filter((f) => f.split('/').some((part) => part.startsWith('diffusers')));

async function withSource<T>(rel: string, run: (s: TensorSource) => Promise<T>): Promise<T> {
  const source = await openSafetensors(await FileSource.open(sharedFixture(rel)));
  try {
    return await run(source);
  } finally {
    await source.close();
  }
}

/** Tensor names as an independent, lax reader sees them (JSON.parse of the header). */
async function laxNames(path: string): Promise<string[]> {
  const bytes = await readFile(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return Object.keys(JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'))).filter((k) => k !== '__metadata__');
}

describe('real files from the reference implementation', () => {
  test('the shared fixtures are present', () => {
    expect(caseFiles.length).toBeGreaterThanOrEqual(3);
    expect(goldenDiffusers.length).toBeGreaterThanOrEqual(15);
  });

  test.each(caseFiles)('case input %s reads and matches case.json', async (rel) => {
    const caseJson = JSON.parse(await readFile(sharedFixture(join(rel, '..', 'case.json')), 'utf8')) as {
      num_keys: number;
      state_dict_keys: Record<string, [string, number[]]>;
    };
    await withSource(rel, async (s) => {
      expect(s.tensors.length).toBe(caseJson.num_keys);
      for (const x of s.tensors) expect(x.shape).toEqual(caseJson.state_dict_keys[x.name][1]);
      expect(s.metadata).toEqual({ format: 'pt' });
    });
  });

  test.each(goldenFiles)('golden %s reads with the same tensors as a lax parse', async (rel) => {
    const names = await laxNames(sharedFixture(rel));
    await withSource(rel, async (s) => {
      expect(s.tensors.map((x) => x.name).sort()).toEqual(names.sort());
    });
  });

  /** Streams every tensor of `rel` into a new file through the writer; returns both files' bytes. */
  async function rewrite(rel: string, metadata: (s: TensorSource) => Readonly<Record<string, string>>): Promise<[Uint8Array, Uint8Array]> {
    const out = join(dir, `rewrite-${fileCounter++}.safetensors`);
    await withSource(rel, async (s) => {
      const layout = planSafetensorsLayout(s.tensors, metadata(s));
      const writer = await SafetensorsWriter.create(out, layout);
      for (const x of layout.tensors) await writer.writeTensor(x.name, s.readChunks(x.name, { chunkBytes: 64 * 1024 }));
      await writer.finish();
    });
    const pair: [Uint8Array, Uint8Array] = [new Uint8Array(await readFile(sharedFixture(rel))), new Uint8Array(await readFile(out))];
    await rm(out);
    return pair;
  }

  test.each(goldenDiffusers)('re-writing %s with {"format":"pt"} gives identical bytes', async (rel) => {
    const [original, rewritten] = await rewrite(rel, (s) => {
      expect(s.metadata).toEqual({ format: 'pt' });
      return { format: 'pt' };
    });
    expect(rewritten.length).toBe(original.length);
    expect(Buffer.compare(rewritten, original)).toBe(0);
  });

  // Mixed dtypes (I64 + F16 in the SDXL case) and metadata with up to 19 keys (pipeline goldens).
  test.each([...caseFiles, ...goldenFiles.filter((f) => !goldenDiffusers.includes(f))])(
    're-writing %s with its own metadata gives identical bytes',
    async (rel) => {
      const [original, rewritten] = await rewrite(rel, (s) => s.metadata);
      expect(Buffer.compare(rewritten, original)).toBe(0);
    },
  );
});
