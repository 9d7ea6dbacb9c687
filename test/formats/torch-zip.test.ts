import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { DType } from '../../src/dtypes.js';
import { CkptError, type ErrorCode } from '../../src/errors.js';
import { openCheckpoint } from '../../src/formats/open.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { openTorchZip } from '../../src/formats/torch-zip.js';
import { FileSource } from '../../src/io/file-source.js';
import { sharedFixture } from '../helpers/paths.js';
import {
  buildStateDictPickle,
  buildTorchZip,
  buildZip,
  f32,
  torchZipEntries,
  type PickleTensorSpec,
  type TorchZipSpec,
  type ZipBuildOptions,
} from '../helpers/zip-builder.js';

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-torch-zip-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openBytes(bytes: Uint8Array, allowUnsafePickle = false): Promise<TensorSource> {
  const path = join(dir, `m${counter++}.ckpt`);
  await writeFile(path, bytes);
  const file = await FileSource.open(path);
  try {
    return await openTorchZip(file, { allowUnsafePickle });
  } catch (e) {
    await file.close();
    throw e;
  }
}

async function withSource<T>(bytes: Uint8Array, fn: (src: TensorSource) => Promise<T>): Promise<T> {
  const src = await openBytes(bytes);
  try {
    return await fn(src);
  } finally {
    await src.close();
  }
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}

const floats = (b: Uint8Array) => Array.from(new Float32Array(b.slice().buffer));
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** 12 float32 values 0..11 shared by a plain tensor, a slice and a transposed view (formats.md §2.8). */
const base12 = f32(range(12));
const viewTensors: PickleTensorSpec[] = [
  { name: 'base', storageClass: 'FloatStorage', key: '0', storageNumel: 12, shape: [3, 4] },
  { name: 'slice', storageClass: 'FloatStorage', key: '0', storageNumel: 12, offset: 2, shape: [4] },
  { name: 'transposed', storageClass: 'FloatStorage', key: '0', storageNumel: 12, shape: [4, 3], stride: [1, 4] },
  { name: 'half', storageClass: 'HalfStorage', key: '1', storageNumel: 2, shape: [2] },
  { name: 'scalar', storageClass: 'FloatStorage', key: '2', storageNumel: 1, shape: [] },
  { name: 'empty', storageClass: 'FloatStorage', key: '3', storageNumel: 0, shape: [0, 5] },
];
const viewStorages = { '0': base12, '1': Uint8Array.from([0x00, 0x3c, 0x00, 0x40]), '2': f32([3]), '3': new Uint8Array(0) };

function viewsSpec(): TorchZipSpec {
  return { pickle: buildStateDictPickle(viewTensors), storages: viewStorages };
}

function viewsZip(spec: Partial<TorchZipSpec> = {}, opts: ZipBuildOptions = {}): Uint8Array {
  return buildTorchZip({ ...viewsSpec(), ...spec }, opts);
}

describe('openTorchZip on builder-made archives', () => {
  test('lists tensors with dtype, shape and byte length, and describes the container', async () => {
    await withSource(viewsZip(), async (src) => {
      expect(src.format).toBe('torch-zip');
      expect(src.tensors.map((t) => [t.name, t.dtype, t.shape, t.byteLength])).toEqual([
        ['base', 'F32', [3, 4], 48],
        ['slice', 'F32', [4], 16],
        ['transposed', 'F32', [4, 3], 48],
        ['half', 'F16', [2], 4],
        ['scalar', 'F32', [], 4],
        ['empty', 'F32', [0, 5], 0],
      ]);
      expect(src.get('slice')?.shape).toEqual([4]);
      expect(src.get('missing')).toBeUndefined();
      expect(src.container).toMatchObject({ prefix: 'archive', version: 3, byteorder: 'little', compressed: false, zip64: true, records: 6, pickleProtocol: 2 });
      expect(src.metadata).toEqual({});
      expect(src.wrapperPath).toEqual([]);
      expect(src.safety.hasPickle).toBe(true);
      expect(src.safety.dangerous).toBe(false);
    });
  });

  test('materialises offsets and non-contiguous strides in C order', async () => {
    await withSource(viewsZip(), async (src) => {
      expect(floats(await src.readTensor('base'))).toEqual(range(12));
      expect(floats(await src.readTensor('slice'))).toEqual([2, 3, 4, 5]);
      expect(floats(await src.readTensor('transposed'))).toEqual([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      expect(await src.readTensor('half')).toEqual(Uint8Array.from([0x00, 0x3c, 0x00, 0x40]));
      expect(floats(await src.readTensor('scalar'))).toEqual([3]);
      expect(await src.readTensor('empty')).toEqual(new Uint8Array(0));
      expect(await collect(src.readChunks('empty'))).toEqual([]);
    });
  });

  test('readChunks respects chunkBytes', async () => {
    await withSource(viewsZip(), async (src) => {
      for (const name of ['base', 'transposed']) {
        const chunks = await collect(src.readChunks(name, { chunkBytes: 8 }));
        expect(chunks.every((c) => c.length <= 8 && c.length % 4 === 0)).toBe(true);
        expect(Buffer.concat(chunks)).toEqual(Buffer.from(await src.readTensor(name)));
      }
    });
  });

  test.each([
    ['a torch >= 1.13 file-stem prefix', { prefix: 'v1-5-pruned' }, {}],
    ['a prefix with dots and a subfolder', { prefix: 'some.dir/model.v2' }, {}],
    ['DEFLATE-compressed records (a re-zipped copy)', { method: 8 }, {}],
    ['`.data/version` instead of `version`', { version: null, extraRecords: { '.data/version': '6\n' } }, {}],
    ['torch >= 2.1 extra records', { byteorder: 'little', extraRecords: { '.format_version': '1', '.storage_alignment': '64', '.data/serialization_id': '0123456789' } }, {}],
    ['no ZIP64 records, padding or data descriptors', {}, { zip64: false, align: 1, dataDescriptors: false }],
  ] as [string, Partial<TorchZipSpec>, ZipBuildOptions][])('reads archives with %s', async (_name, spec, opts) => {
    await withSource(viewsZip(spec, opts), async (src) => {
      expect(src.tensors).toHaveLength(viewTensors.length);
      expect(floats(await src.readTensor('transposed'))).toEqual([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      expect(floats(await src.readTensor('slice'))).toEqual([2, 3, 4, 5]);
      if (spec.prefix) expect(src.container.prefix).toBe(spec.prefix);
      if (spec.method === 8) expect(src.container.compressed).toBe(true);
    });
  });

  test('byte-swaps every element when `byteorder` says big', async () => {
    const be = new Uint8Array(base12.length);
    new DataView(be.buffer).setFloat32(0, 0);
    range(12).forEach((v, i) => new DataView(be.buffer).setFloat32(i * 4, v, false));
    const bytes = viewsZip({ byteorder: 'big', storages: { ...viewStorages, '0': be, '1': Uint8Array.from([0x3c, 0x00, 0x40, 0x00]) } });
    await withSource(bytes, async (src) => {
      expect(src.container.byteorder).toBe('big');
      expect(floats(await src.readTensor('transposed'))).toEqual([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
      expect(await src.readTensor('half')).toEqual(Uint8Array.from([0x00, 0x3c, 0x00, 0x40]));
    });
  });

  test('refuses a pickle calling a dangerous global unless allowUnsafePickle (nothing is executed)', async () => {
    const bytes = buildTorchZip({ ...viewsSpec(), pickle: buildStateDictPickle(viewTensors, { callGlobal: ['posix', 'system'] }) });
    await expect(openBytes(bytes)).rejects.toMatchObject({ code: 'E_UNSAFE_PICKLE' });
    const src = await openBytes(bytes, true);
    try {
      expect(src.safety.dangerous).toBe(true);
      expect(src.safety.globals.some((g) => g.module === 'posix' && g.name === 'system' && g.safety === 'dangerous')).toBe(true);
      expect(floats(await src.readTensor('slice'))).toEqual([2, 3, 4, 5]);
    } finally {
      await src.close();
    }
  });

  test('an unknown tensor name is E_TENSOR_NOT_FOUND', async () => {
    await withSource(viewsZip(), async (src) => {
      await expect(src.readTensor('nope')).rejects.toMatchObject({ code: 'E_TENSOR_NOT_FOUND' });
    });
  });
});

const one: PickleTensorSpec[] = [{ name: 'w', storageClass: 'FloatStorage', key: '0', storageNumel: 4, shape: [4] }];
const oneSpec: TorchZipSpec = { pickle: buildStateDictPickle(one), storages: { '0': f32([1, 2, 3, 4]) } };

const torchCatalogue: { name: string; bytes: () => Uint8Array; code: ErrorCode }[] = [
  { name: 'missing data.pkl', bytes: () => buildZip(torchZipEntries(oneSpec).filter((e) => !e.name.endsWith('data.pkl'))), code: 'E_ZIP_MISSING_RECORD' },
  { name: 'data.pkl at the top level (no prefix folder)', bytes: () => buildZip([{ name: 'data.pkl', data: oneSpec.pickle }, { name: 'version', data: '3\n' }]), code: 'E_ZIP_MISSING_RECORD' },
  {
    name: 'two data.pkl',
    bytes: () => buildZip([...torchZipEntries(oneSpec), { name: 'other/data.pkl', data: oneSpec.pickle }]),
    code: 'E_ZIP_DUPLICATE_ENTRY',
  },
  { name: 'TorchScript archive', bytes: () => buildTorchZip({ ...oneSpec, extraRecords: { 'constants.pkl': 'x', 'code/__torch__.py': 'x' } }), code: 'E_TORCHSCRIPT' },
  { name: 'no version record', bytes: () => buildTorchZip({ ...oneSpec, version: null }), code: 'E_TORCH_VERSION' },
  { name: 'version not a number', bytes: () => buildTorchZip({ ...oneSpec, version: 'three' }), code: 'E_TORCH_VERSION' },
  { name: 'version too new', bytes: () => buildTorchZip({ ...oneSpec, version: '99\n' }), code: 'E_TORCH_VERSION' },
  { name: 'version record too large', bytes: () => buildTorchZip({ ...oneSpec, version: '3'.repeat(5000) }), code: 'E_LIMIT' },
  { name: 'unknown byteorder', bytes: () => buildTorchZip({ ...oneSpec, byteorder: 'middle' }), code: 'E_BIG_ENDIAN' },
  { name: 'missing data/<key> record', bytes: () => buildTorchZip({ ...oneSpec, storages: {} }), code: 'E_ZIP_MISSING_RECORD' },
  { name: 'record size ≠ numel × itemsize', bytes: () => buildTorchZip({ ...oneSpec, storages: { '0': f32([1, 2, 3]) } }), code: 'E_STORAGE_SIZE' },
  {
    name: 'tensor past the end of its storage',
    bytes: () => buildTorchZip({ ...oneSpec, pickle: buildStateDictPickle([{ ...one[0], offset: 2 }]) }),
    code: 'E_TENSOR_BOUNDS',
  },
  {
    name: 'strided view past the end of its storage',
    bytes: () => buildTorchZip({ ...oneSpec, pickle: buildStateDictPickle([{ ...one[0], shape: [2, 2], stride: [1, 3] }]) }),
    code: 'E_TENSOR_BOUNDS',
  },
  {
    name: 'CRC mismatch on data.pkl',
    bytes: () => buildZip(torchZipEntries(oneSpec).map((e) => (e.name.endsWith('data.pkl') ? { ...e, crc32: 1 } : e))),
    code: 'E_ZIP_CRC',
  },
];

describe('openTorchZip rejects', () => {
  test.each(torchCatalogue)('$name → $code', async ({ bytes, code }) => {
    const error = await openBytes(bytes()).then(
      async (src) => {
        await src.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CkptError);
    expect((error as CkptError).code).toBe(code);
  });
});

// ------------------------------------------------------------------------------------------------
// Real torch.save files from the shared fixture set

interface CaseInput {
  file: string;
  format: string;
  dtype: string;
  with_ema?: boolean;
}
interface CaseJson {
  checkpoint_wrapper: string;
  global_step?: number;
  inputs: CaseInput[];
  state_dict_keys: Record<string, [string, number[]]>;
}

const TORCH_TO_DTYPE: Record<string, DType> = { float32: 'F32', float16: 'F16', int32: 'I32', int64: 'I64' };

function readCase(name: string): CaseJson {
  return JSON.parse(readFileSync(sharedFixture(`cases/${name}/case.json`), 'utf8')) as CaseJson;
}

/** Keys, dtypes and shapes the input file should hold: floats in the input's dtype, EMA keys only when saved. */
function expectedTensors(c: CaseJson, input: CaseInput): [string, DType, number[]][] {
  return Object.entries(c.state_dict_keys)
    .filter(([name]) => input.with_ema || !name.startsWith('model_ema.'))
    .map(([name, [dtype, shape]]) => [name, TORCH_TO_DTYPE[dtype.startsWith('float') ? input.dtype : dtype], shape]);
}

const zipInputs = ['sd1', 'sd1-pipe', 'sd2', 'vae'].flatMap((name) =>
  readCase(name)
    .inputs.filter((i) => i.format === 'ckpt-zip')
    .map((input) => ({ name, input })),
);

/** Tensors of a small safetensors file, read whole (test-only; the library has its own reader). */
function readSafetensors(path: string): Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, bytes: new Uint8Array(buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1])) });
  }
  return out;
}

describe('real torch.save zip checkpoints', () => {
  test.each(zipInputs)('$name/$input.file: names, dtypes and shapes match case.json', async ({ name, input }) => {
    const c = readCase(name);
    const src = await openCheckpoint(sharedFixture(`cases/${name}/${input.file}`));
    try {
      expect(src.format).toBe('torch-zip');
      const actual = src.tensors.map((t) => [t.name, t.dtype, [...t.shape]]);
      const expected = expectedTensors(c, input);
      expect(new Set(actual.map((t) => t[0]))).toEqual(new Set(expected.map((t) => t[0])));
      expect([...actual].sort()).toEqual([...expected].sort());
      expect(src.container).toMatchObject({ version: 3, byteorder: 'little', compressed: false, zip64: true });
      expect(src.safety.dangerous).toBe(false);
      if (c.checkpoint_wrapper === 'lightning') {
        expect(src.wrapperPath).toEqual(['state_dict']);
        expect(src.extras.global_step).toBe(c.global_step);
      }
    } finally {
      await src.close();
    }
  });

  test.each([
    ['vae', 'vae.ckpt', 'vae.safetensors'],
    ['sd2', 'model-fp16.ckpt', 'model-fp16.safetensors'],
  ])('%s/%s holds the same bytes as %s', async (name, ckpt, safetensors) => {
    const expected = readSafetensors(sharedFixture(`cases/${name}/${safetensors}`));
    const src = await openCheckpoint(sharedFixture(`cases/${name}/${ckpt}`));
    try {
      let compared = 0;
      for (const t of src.tensors) {
        const e = expected.get(t.name);
        if (e === undefined) continue;
        expect(t.dtype).toBe(e.dtype);
        expect(Buffer.from(await src.readTensor(t.name)).equals(Buffer.from(e.bytes))).toBe(true);
        compared++;
      }
      expect(compared).toBeGreaterThan(src.tensors.length / 2);
    } finally {
      await src.close();
    }
  });

  test('sd1/model.ckpt: VAE conv_in equals the Diffusers golden, also read in small chunks', async () => {
    const golden = readSafetensors(sharedFixture('golden/sd1/diffusers/vae/diffusion_pytorch_model.safetensors'));
    const src = await openCheckpoint(sharedFixture('cases/sd1/model.ckpt'));
    try {
      const name = 'first_stage_model.encoder.conv_in.weight';
      const expected = Buffer.from(golden.get('encoder.conv_in.weight')!.bytes);
      expect(Buffer.from(await src.readTensor(name)).equals(expected)).toBe(true);
      const chunks = await collect(src.readChunks(name, { chunkBytes: 100 }));
      expect(chunks.length).toBeGreaterThan(1);
      expect(Buffer.concat(chunks).equals(expected)).toBe(true);
    } finally {
      await src.close();
    }
  });
});
