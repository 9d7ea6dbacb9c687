/**
 * exportOnnx: folder structure of both dialects (file names, I/O names, element types, ranks,
 * model_index.json), external data (4096-aligned offsets, bytes streamed from the safetensors),
 * IR/opset, and that the library does not load onnxruntime-node on import.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { castBytes } from '../../src/diffusers/cast.js';
import { EXTERNAL_ALIGNMENT, writeOnnxModel } from '../../src/onnx/encode.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { Graph, type WeightSource } from '../../src/onnx/graph.js';
import { buildVaeDecoderGraph, type VaeConfig } from '../../src/onnx/vae.js';
import { openComponentWeights } from '../../src/onnx/weights.js';
import { repoRoot, sharedFixture } from '../helpers/paths.js';
import { compare, readGolden, runModel } from './helpers.js';

const { onnx } = onnxProto;
const tmp = mkdtempSync(join(tmpdir(), 'onnx-export-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ELEM = { 1: 'float32', 6: 'int32', 7: 'int64', 10: 'float16' } as Record<number, string>;

interface IO {
  name: string;
  type: string;
  rank: number;
}

function readModel(path: string): { model: InstanceType<typeof onnx.ModelProto>; inputs: IO[]; outputs: IO[] } {
  const model = onnx.ModelProto.decode(readFileSync(path));
  const io = (v: InstanceType<typeof onnx.ValueInfoProto>): IO => ({
    name: v.name,
    type: ELEM[v.type!.tensorType!.elemType!],
    rank: v.type!.tensorType!.shape!.dim!.length,
  });
  return { model, inputs: model.graph!.input.map(io), outputs: model.graph!.output.map(io) };
}

describe('optimum layout (default)', () => {
  it('sd1 fp32: model.onnx per component, int64 ids, latent_parameters, config.json, source model_index', async () => {
    const out = join(tmp, 'sd1-optimum');
    const r = await exportOnnx(sharedFixture('golden/sd1/diffusers'), out);
    expect(r.opset).toBe(17);
    expect(r.irVersion).toBe(8);
    for (const c of ['text_encoder', 'vae_encoder', 'vae_decoder']) {
      expect(existsSync(join(out, c, 'model.onnx'))).toBe(true);
      expect(existsSync(join(out, c, 'config.json'))).toBe(true);
    }
    expect(readdirSync(join(out, 'scheduler'))).toContain('scheduler_config.json');
    expect(readdirSync(join(out, 'tokenizer'))).toContain('tokenizer_config.json');
    const index = JSON.parse(readFileSync(join(out, 'model_index.json'), 'utf8'));
    expect(index._class_name).toBe('StableDiffusionPipeline');

    const te = readModel(join(out, 'text_encoder', 'model.onnx'));
    expect(Number(te.model.irVersion)).toBe(8);
    expect(te.model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 17]]);
    expect(te.inputs).toEqual([{ name: 'input_ids', type: 'int64', rank: 2 }]);
    expect(te.outputs).toEqual([
      { name: 'last_hidden_state', type: 'float32', rank: 3 },
      { name: 'pooler_output', type: 'float32', rank: 2 },
    ]);
    const dims = te.model.graph!.input[0].type!.tensorType!.shape!.dim!;
    expect(dims.map((d) => d.dimParam)).toEqual(['batch_size', 'sequence_length']);
    const enc = readModel(join(out, 'vae_encoder', 'model.onnx'));
    expect(enc.inputs).toEqual([{ name: 'sample', type: 'float32', rank: 4 }]);
    expect(enc.outputs).toEqual([{ name: 'latent_parameters', type: 'float32', rank: 4 }]);
    const dec = readModel(join(out, 'vae_decoder', 'model.onnx'));
    expect(dec.inputs).toEqual([{ name: 'latent_sample', type: 'float32', rank: 4 }]);
    expect(dec.outputs).toEqual([{ name: 'sample', type: 'float32', rank: 4 }]);

    // The exported folder runs: text encoder vs golden, batch 2 (dynamic batch axis).
    const gold = readGolden('golden/sd1/forward/text_encoder.safetensors');
    const ids = gold['input.input_ids'].data as BigInt64Array;
    const two = new BigInt64Array(ids.length * 2);
    two.set(ids);
    two.set(ids, ids.length);
    const res = await runModel(join(out, 'text_encoder', 'model.onnx'), { input_ids: { type: 'int64', data: two, dims: [2, 77] } });
    expect(res.last_hidden_state.dims).toEqual([2, 77, 32]);
    const exp = gold['output.last_hidden_state'].data as Float32Array;
    const got = res.last_hidden_state.data as Float32Array;
    expect(compare(got.subarray(exp.length), exp).violations).toBe(0);
  });

  it('sdxl fp16: text_encoder_2 with projection and hidden states; VAE decoder float32 inside, float16 I/O', async () => {
    const out = join(tmp, 'sdxl-optimum-fp16');
    const r = await exportOnnx(sharedFixture('golden/sdxl-base/diffusers'), out, { dtype: 'fp16' });
    expect(r.components.map((c) => c.name)).toEqual(expect.arrayContaining(['text_encoder', 'text_encoder_2', 'vae_encoder', 'vae_decoder']));
    const te2 = readModel(join(out, 'text_encoder_2', 'model.onnx'));
    expect(te2.outputs.map((o) => o.name)).toEqual(['text_embeds', 'last_hidden_state', 'hidden_states.0', 'hidden_states.1', 'hidden_states.2']);
    expect(te2.outputs.every((o) => o.type === 'float16')).toBe(true);
    const te1 = readModel(join(out, 'text_encoder', 'model.onnx'));
    expect(te1.outputs.map((o) => o.name)).toEqual(['last_hidden_state', 'pooler_output', 'hidden_states.0', 'hidden_states.1', 'hidden_states.2']);
    const dec = readModel(join(out, 'vae_decoder', 'model.onnx'));
    expect(dec.inputs[0].type).toBe('float16');
    expect(dec.outputs[0].type).toBe('float16');
    expect(r.components.find((c) => c.name === 'vae_decoder')!.floatType).toBe('float32');
    const convWeights = dec.model.graph!.initializer.filter((t) => t.name.endsWith('conv_in.weight'));
    expect(convWeights.map((t) => ELEM[t.dataType!])).toEqual(['float32']);
    expect(readdirSync(out)).toEqual(expect.arrayContaining(['tokenizer_2', 'text_encoder_2']));

    // --fp16-vae: the decoder is float16 throughout.
    const out2 = join(tmp, 'sdxl-optimum-fp16vae');
    const r2 = await exportOnnx(sharedFixture('golden/sdxl-base/diffusers'), out2, { dtype: 'fp16', fp16Vae: true, components: ['vae_decoder'] });
    expect(r2.components.map((c) => [c.name, c.floatType])).toEqual([['vae_decoder', 'float16']]);

    // The fp16 SDXL decoder (fp32 inside) still matches the golden at fp16 I/O precision.
    const gold = readGolden('golden/sdxl-base/forward/vae.safetensors');
    const lat = gold['input.latent'];
    const res = await runModel(join(out, 'vae_decoder', 'model.onnx'), { latent_sample: { type: 'float16', data: lat.data as Float32Array, dims: lat.shape } });
    expect(compare(res.sample.data as Float32Array, gold['output.decoded'].data as Float32Array, 2e-3, 2e-3).violations).toBe(0);
  });

  it('refuses a non-empty output folder without force', async () => {
    const out = join(tmp, 'sd1-optimum');
    await expect(exportOnnx(sharedFixture('golden/sd1/diffusers'), out, { components: ['text_encoder'] })).rejects.toMatchObject({ code: 'E_OUTPUT_EXISTS' });
  });
});

describe('diffusers layout (OnnxStableDiffusionPipeline)', () => {
  it('sd2 fp16: int32 ids, latent_sample, weights.pb for external data, no config.json, OnnxRuntimeModel index', async () => {
    const out = join(tmp, 'sd2-diffusers');
    const r = await exportOnnx(sharedFixture('golden/sd2/diffusers'), out, { layout: 'diffusers', dtype: 'fp16', externalThresholdBytes: 0, externalMinBytes: 0 });
    const index = JSON.parse(readFileSync(join(out, 'model_index.json'), 'utf8'));
    expect(index._class_name).toBe('OnnxStableDiffusionPipeline');
    for (const c of ['text_encoder', 'unet', 'vae_encoder', 'vae_decoder']) expect(index[c]).toEqual(['diffusers', 'OnnxRuntimeModel']);
    expect(index.tokenizer).toEqual(['transformers', 'CLIPTokenizer']);
    expect(index.scheduler[0]).toBe('diffusers');
    for (const c of ['text_encoder', 'vae_encoder', 'vae_decoder']) {
      expect(readdirSync(join(out, c)).sort()).toEqual(['model.onnx', 'weights.pb']);
    }
    const te = readModel(join(out, 'text_encoder', 'model.onnx'));
    expect(te.inputs).toEqual([{ name: 'input_ids', type: 'int32', rank: 2 }]);
    expect(te.outputs.map((o) => [o.name, o.type])).toEqual([['last_hidden_state', 'float16'], ['pooler_output', 'float16']]);
    const enc = readModel(join(out, 'vae_encoder', 'model.onnx'));
    expect(enc.outputs).toEqual([{ name: 'latent_sample', type: 'float16', rank: 4 }]);
    expect(enc.model.graph!.node.some((n) => n.opType === 'RandomNormalLike')).toBe(true);
    expect(r.components.every((c) => c.externalDataPath?.endsWith('weights.pb'))).toBe(true);

    const gold = readGolden('golden/sd2/forward/text_encoder.safetensors');
    const ids = Int32Array.from(gold['input.input_ids'].data as BigInt64Array, Number);
    const res = await runModel(join(out, 'text_encoder', 'model.onnx'), { input_ids: { type: 'int32', data: ids, dims: [1, 77] } });
    expect(compare(res.last_hidden_state.data as Float32Array, gold['output.last_hidden_state'].data as Float32Array, 0.03, 0.02).violations).toBe(0);
  });

  it('refuses SDXL', async () => {
    await expect(exportOnnx(sharedFixture('golden/sdxl-base/diffusers'), join(tmp, 'xl-diffusers'), { layout: 'diffusers' })).rejects.toMatchObject({ code: 'E_ONNX_EXPORT' });
  });
});

describe('external data', () => {
  it('puts initializers at 4096-aligned offsets, streamed chunk by chunk from the safetensors, and runs', async () => {
    const dir = sharedFixture('golden/vae/diffusers');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as VaeConfig;
    const real = await openComponentWeights(dir);
    const wholeReads: string[] = [];
    let chunks = 0;
    // Yields 1000-byte chunks; readTensor is allowed only for transposed (Linear) weights.
    const spy: WeightSource = {
      info: (k) => real.info(k),
      async *readChunks(k) {
        const all = await real.readTensor(k);
        for (let i = 0; i < all.length; i += 1000) {
          chunks++;
          yield all.subarray(i, Math.min(all.length, i + 1000));
        }
      },
      readTensor: (k) => {
        wholeReads.push(k);
        return real.readTensor(k);
      },
    };
    try {
      const g = buildVaeDecoderGraph(config, spy, { floatType: 'float16' });
      const r = await writeOnnxModel(g, { dir: join(tmp, 'ext'), external: 'auto', externalThresholdBytes: 10_000, externalMinBytes: 256 });
      expect(r.externalDataPath).toBe(join(tmp, 'ext', 'model.onnx_data'));
      expect(r.external.length).toBeGreaterThan(10);
      expect(chunks).toBeGreaterThan(r.external.length);
      expect(wholeReads.every((k) => /to_[qkv]|to_out/.test(k))).toBe(true);
      const data = readFileSync(r.externalDataPath!);
      const model = onnx.ModelProto.decode(readFileSync(r.modelPath));
      for (const t of model.graph!.initializer) {
        if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) {
          expect(t.rawData.length).toBeLessThan(256);
          continue;
        }
        const kv = Object.fromEntries(t.externalData.map((e) => [e.key, e.value]));
        expect(kv.location).toBe('model.onnx_data');
        const offset = Number(kv.offset);
        expect(offset % EXTERNAL_ALIGNMENT).toBe(0);
        const length = Number(kv.length);
        expect(length).toBe(t.dims.reduce((p: number, d) => p * Number(d), 1) * 2);
        if (t.name === 'decoder.conv_in.weight') {
          const src = await real.readTensor('decoder.conv_in.weight');
          expect(Buffer.from(data.subarray(offset, offset + length)).equals(Buffer.from(castBytes(src, 'F32', 'F16').bytes))).toBe(true);
        }
      }
      const gold = readGolden('golden/vae/forward/vae.safetensors');
      const lat = gold['input.latent'];
      const res = await runModel(r.modelPath, { latent_sample: { type: 'float16', data: lat.data as Float32Array, dims: lat.shape } });
      expect(compare(res.sample.data as Float32Array, gold['output.decoded'].data as Float32Array, 0.01, 0.02).violations).toBe(0);
    } finally {
      await real.close();
    }
  });

  it('a graph built from raw ops, with constants and a Linear weight, encodes and runs', async () => {
    const bytes = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
    const w: WeightSource = {
      info: (k) => (k === 'lin.weight' ? { dtype: 'F32', shape: [3, 2], byteLength: 24 } : undefined),
      async *readChunks() {
        yield bytes;
      },
      readTensor: async () => bytes,
    };
    const g = new Graph({ name: 't', weights: w });
    const x = g.input('x', 'float32', ['n', 2]);
    const y = g.add(g.linear(x, 'lin'), g.scalar(x, 0.5));
    g.output(y, 'y', 'float32', ['n', 3]);
    const r = await writeOnnxModel(g, { dir: join(tmp, 'raw') });
    const res = await runModel(r.modelPath, { x: { type: 'float32', data: new Float32Array([1, 1, 2, 0]), dims: [2, 2] } });
    // W = [[1,2],[3,4],[5,6]]: x·Wᵀ + 0.5
    expect(Array.from(res.y.data as Float32Array)).toEqual([3.5, 7.5, 11.5, 2.5, 6.5, 10.5]);
  });
});

describe('lazy onnxruntime', () => {
  it('importing the library entry and the exporter does not load onnxruntime-node', () => {
    const script = [
      "import { createRequire } from 'node:module';",
      "await import('./src/index.ts');",
      "await import('./src/onnx/export.ts');",
      'const req = createRequire(import.meta.url);',
      "const loaded = Object.keys(req.cache).filter((k) => k.includes('onnxruntime'));",
      'console.log(JSON.stringify(loaded));',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, encoding: 'utf8' });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual([]);
    // The check itself can see onnxruntime once it is loaded.
    const positive = script.replace("await import('./src/onnx/export.ts');", "await import('onnxruntime-node');");
    const out2 = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', positive], { cwd: repoRoot, encoding: 'utf8' });
    expect(JSON.parse(out2.trim().split('\n').pop()!).length).toBeGreaterThan(0);
  });
});
