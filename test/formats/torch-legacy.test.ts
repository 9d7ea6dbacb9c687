import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CkptError } from '../../src/errors.js';
import { FileSource } from '../../src/io/file-source.js';
import type { TensorSource } from '../../src/formats/tensor-source.js';
import { openTorchLegacy } from '../../src/formats/torch-legacy.js';
import { f32Bytes, legacyFile, legacyMagicPickle, pickle, type LegacyFileSpec, type TensorSpec } from '../helpers/pickle-builder.js';
import { sharedFixture } from '../helpers/paths.js';

const DTYPE_OF: Record<string, string> = { float32: 'F32', float16: 'F16', int64: 'I64', int32: 'I32' };

type CaseKeys = Record<string, [string, number[]]>;

function caseKeys(name: string): CaseKeys {
  return JSON.parse(readFileSync(sharedFixture(`cases/${name}/case.json`), 'utf8')).state_dict_keys as CaseKeys;
}

async function openLegacy(path: string, allowUnsafePickle = false): Promise<TensorSource> {
  const file = await FileSource.open(path);
  try {
    return await openTorchLegacy(file, { allowUnsafePickle });
  } catch (e) {
    await file.close();
    throw e;
  }
}

/** safetensors parsed by hand: 8-byte header length, JSON header, data buffer. */
function safetensorsTensor(path: string, name: string): { dtype: string; shape: number[]; bytes: Uint8Array } {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const h = header[name];
  const start = 8 + n;
  return { dtype: h.dtype, shape: h.shape, bytes: new Uint8Array(buf.subarray(start + h.data_offsets[0], start + h.data_offsets[1])) };
}

describe('openTorchLegacy on real torch files', () => {
  it('vae-legacy.ckpt: every key, dtype and shape of case.json, bytes equal to vae.safetensors', async () => {
    const src = await openLegacy(sharedFixture('cases/vae/vae-legacy.ckpt'));
    try {
      const expected = caseKeys('vae');
      expect(src.format).toBe('torch-legacy');
      expect(src.tensors.map((t) => t.name)).toEqual(Object.keys(expected));
      for (const t of src.tensors) {
        const [dtype, shape] = expected[t.name];
        expect([t.name, t.dtype, t.shape]).toEqual([t.name, DTYPE_OF[dtype], shape]);
      }
      expect(src.wrapperPath).toEqual(['state_dict']);
      expect(src.extras).toEqual({ global_step: 840001 });
      expect(src.container).toMatchObject({ pickleProtocol: 2, protocolVersion: 1001, littleEndian: true, typeSizes: { short: 2, int: 4, long: 4 } });
      expect(src.safety.dangerous).toBe(false);
      expect(src.safety.globals.map((g) => `${g.module}.${g.name}`).sort()).toEqual(['collections.OrderedDict', 'torch.FloatStorage', 'torch._utils._rebuild_tensor_v2']);

      const st = sharedFixture('cases/vae/vae.safetensors');
      for (const name of ['encoder.conv_in.weight', 'decoder.up.1.block.0.norm1.bias', 'quant_conv.weight', 'post_quant_conv.bias']) {
        const want = safetensorsTensor(st, name);
        expect(src.get(name)?.shape).toEqual(want.shape);
        expect(Buffer.from(await src.readTensor(name)).equals(Buffer.from(want.bytes))).toBe(true);
      }
      // Chunked reads give the same bytes.
      const chunks: Uint8Array[] = [];
      for await (const c of src.readChunks('encoder.conv_in.weight', { chunkBytes: 100 })) {
        expect(c.length).toBeLessThanOrEqual(100);
        chunks.push(c);
      }
      expect(Buffer.concat(chunks).equals(Buffer.from(safetensorsTensor(st, 'encoder.conv_in.weight').bytes))).toBe(true);
    } finally {
      await src.close();
    }
  });

  it('sd1/model-legacy-fp16.ckpt: Lightning wrapper, fp16 weights, int64 position ids', async () => {
    const src = await openLegacy(sharedFixture('cases/sd1/model-legacy-fp16.ckpt'));
    try {
      // case.json lists the EMA copies too; this file was saved without them.
      const expected = Object.fromEntries(Object.entries(caseKeys('sd1')).filter(([k]) => !k.startsWith('model_ema.')));
      expect(src.tensors.map((t) => t.name)).toEqual(Object.keys(expected));
      for (const t of src.tensors) {
        const [dtype, shape] = expected[t.name];
        expect([t.name, t.dtype, t.shape]).toEqual([t.name, dtype === 'float32' ? 'F16' : DTYPE_OF[dtype], shape]);
      }
      expect(src.wrapperPath).toEqual(['state_dict']);
      expect(src.extras).toMatchObject({ global_step: 470000 });
      expect(src.safety.globals.map((g) => `${g.module}.${g.name}`)).toContain('pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint');
      expect(src.safety.dangerous).toBe(false);

      const ids = Object.keys(expected).find((k) => k.endsWith('position_ids'))!;
      const info = src.get(ids)!;
      const bytes = await src.readTensor(ids);
      const values = new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8);
      expect([...values].map(Number)).toEqual(Array.from({ length: info.shape[1] }, (_, i) => i));
    } finally {
      await src.close();
    }
  });
});

describe('openTorchLegacy on synthetic files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt2diffusers-legacy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;

  function write(bytes: Uint8Array): string {
    const path = join(dir, `f${n++}.pt`);
    writeFileSync(path, bytes);
    return path;
  }

  const base: TensorSpec = { name: 'w', key: '140', numel: 6, size: [2, 3], legacy: true };
  const baseData = f32Bytes([0, 1, 2, 3, 4, 5]);

  function spec(over: Partial<LegacyFileSpec> = {}, tensors: TensorSpec[] = [base]): LegacyFileSpec {
    return {
      object: pickle().proto(2).stateDict(tensors).stop().done(),
      storages: [{ key: '140', itemsize: 4, data: baseData }],
      ...over,
    };
  }

  async function codeOf(bytes: Uint8Array, allowUnsafePickle = false): Promise<string> {
    try {
      const src = await openLegacy(write(bytes), allowUnsafePickle);
      await src.close();
    } catch (e) {
      if (e instanceof CkptError) return e.code;
      throw e;
    }
    return 'ok';
  }

  async function values(bytes: Uint8Array, name: string): Promise<number[]> {
    const src = await openLegacy(write(bytes));
    try {
      const b = await src.readTensor(name);
      return [...new Float32Array(b.buffer, b.byteOffset, b.length / 4)];
    } finally {
      await src.close();
    }
  }

  it('reads storages in key-list order, transposed views and legacy view metadata', async () => {
    const bytes = legacyFile({
      object: pickle()
        .proto(2)
        .stateDict([
          { name: 'a', key: '9', numel: 2, size: [2], legacy: true },
          { ...base, name: 't', size: [3, 2], stride: [1, 3] },
          { ...base, name: 'v', numel: 6, size: [2], view: { key: 'view1', offset: 3, size: 2 } },
        ])
        .stop()
        .done(),
      // The writer sorts keys as strings: '140' < '9'.
      storages: [
        { key: '140', itemsize: 4, data: baseData },
        { key: '9', itemsize: 4, data: f32Bytes([7, 8]) },
      ],
    });
    expect(await values(bytes, 'a')).toEqual([7, 8]);
    expect(await values(bytes, 't')).toEqual([0, 3, 1, 4, 2, 5]);
    expect(await values(bytes, 'v')).toEqual([3, 4]);
  });

  it('reads protocol 4 header pickles (FRAME) and keeps little-endian bytes when sys_info says big-endian', async () => {
    expect(await values(legacyFile(spec({ headerProtocol: 4 })), 'w')).toEqual([0, 1, 2, 3, 4, 5]);
    // torch writes storage bytes little-endian whatever machine wrote them (writeFileRaw).
    const src = await openLegacy(write(legacyFile(spec({ littleEndian: false }))));
    expect(src.container).toMatchObject({ littleEndian: false });
    await src.close();
    expect(await values(legacyFile(spec({ littleEndian: false })), 'w')).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it.each([
    ['bad magic number', () => legacyFile(spec({ magic: pickle().proto(2).int(5).stop().done() })), 'E_LEGACY_MAGIC'],
    ['protocol version 1000', () => legacyFile(spec({ protocolVersion: 1000 })), 'E_LEGACY_PROTOCOL'],
    ['element count differs from the pickle', () => legacyFile(spec({ storages: [{ key: '140', itemsize: 4, data: baseData, count: 5 }] })), 'E_LEGACY_STORAGE'],
    ['negative element count', () => legacyFile(spec({ storages: [{ key: '140', itemsize: 4, data: baseData, count: -1 }] })), 'E_LEGACY_STORAGE'],
    ['storage missing from the key list', () => legacyFile(spec({ keys: [] , storages: [] })), 'E_LEGACY_STORAGE'],
    ['key list names an unknown storage', () => legacyFile(spec({ keys: ['140', '77'] })), 'E_LEGACY_STORAGE'],
    ['storage data truncated', () => legacyFile(spec()).subarray(0, -3), 'E_TRUNCATED'],
    ['storage header truncated', () => legacyFile(spec()).subarray(0, -24 - 4), 'E_TRUNCATED'],
    ['object pickle truncated', () => legacyFile(spec()).subarray(0, 200), 'E_TRUNCATED'],
    ['5-tuple persistent id', () => legacyFile(spec({}, [{ ...base, legacy: false }])), 'E_PICKLE_PERSISTENT_ID'],
    ['view past its root storage', () => legacyFile(spec({}, [{ ...base, size: [2], view: { key: 'v', offset: 5, size: 2 } }])), 'E_PICKLE_PERSISTENT_ID'],
    ['tensor past its storage', () => legacyFile(spec({}, [{ ...base, offset: 1 }])), 'E_TENSOR_BOUNDS'],
  ])('%s → %s', async (_name, make, code) => {
    expect(await codeOf(make())).toBe(code);
  });

  it('refuses a dangerous global in the object pickle, and in a header pickle', async () => {
    const object = pickle().proto(2).orderedDict().mark().str('w').tensor(base).str('x').global('posix', 'system').str('touch /tmp/x').tupleN(1).reduce().setitems().stop().done();
    const bytes = legacyFile(spec({ object }));
    expect(await codeOf(bytes)).toBe('E_UNSAFE_PICKLE');
    const src = await openLegacy(write(bytes), true);
    expect(src.safety.dangerous).toBe(true);
    expect(src.tensors.map((t) => t.name)).toEqual(['w']);
    await src.close();

    const magic = legacyMagicPickle();
    const hostileHeader = pickle().proto(2).global('os', 'system').str('x').tupleN(1).reduce().stop().done();
    const file = legacyFile(spec());
    const withHeader = new Uint8Array([...magic, ...hostileHeader, ...file.subarray(magic.length)]);
    expect(await codeOf(withHeader)).toBe('E_UNSAFE_PICKLE');
  });

  it('names the pickle and its offset in errors', async () => {
    try {
      await openLegacy(write(legacyFile(spec({}, [{ ...base, legacy: false }]))));
      expect.unreachable();
    } catch (e) {
      expect((e as CkptError).message).toMatch(/object pickle \(at byte \d+\)/);
      expect((e as CkptError).data).toHaveProperty('pickleOffset');
    }
  });
});
