/**
 * Full-size UNet export check (run by hand; nothing here is committed data): a synthetic SD 1.5
 * checkpoint (every real key and shape, deterministic pseudo-random weights) is converted to a
 * Diffusers folder, its UNet weights are redrawn with fan-in scaling, and the UNet is exported to
 * ONNX (fp32 and fp16), loaded in onnxruntime-node (CPU EP) and run for one step at 64×64
 * latents. Each phase runs in its own process under /usr/bin/time -v, which reports its peak
 * resident memory; fp16 is compared with fp32 on the same inputs.
 *
 *   npx tsx scripts/onnx-unet-full.ts                      # everything (prepare, export, run, compare)
 *   npx tsx scripts/onnx-unet-full.ts --dtypes fp32 --batch 2
 *   npx tsx scripts/onnx-unet-full.ts --dir /mnt/fast/unet # where the files go (default: $TMPDIR)
 *   npx tsx scripts/onnx-unet-full.ts <phase> [dtype]      # one phase in this process:
 *                                                          # prepare | export | run | compare
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convert } from '../src/convert.js';
import { writeOnnxModel } from '../src/onnx/encode.js';
import { loadOnnxRuntime } from '../src/onnx/runtime.js';
import { buildUnetGraph } from '../src/onnx/unet.js';
import { openComponentWeights } from '../src/onnx/weights.js';
import { SD15_LAYOUT } from '../src/testing/ldm-layout.js';
import { writeSyntheticSafetensors } from '../src/testing/synthetic.js';
import { planSafetensorsLayout, SafetensorsWriter } from '../src/formats/safetensors.js';
import { f16BitsToF32Bits } from '../src/diffusers/cast.js';

const SCRIPT = resolve(import.meta.dirname, 'onnx-unet-full.ts');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const DIR = resolve(arg('dir', process.env.CKPT2DIFFUSERS_UNET_DIR ?? join(tmpdir(), 'ckpt2diffusers-unet-full')));
const BATCH = Number(arg('batch', '1'));
const LATENT = Number(arg('size', '64'));
const TIMESTEP = 999;
const MiB = 1024 * 1024;

type DTypeName = 'fp32' | 'fp16';

function fileSize(p: string): number {
  return existsSync(p) ? statSync(p).size : 0;
}

/** Deterministic values in [-1, 1) (xorshift), scaled. */
function pseudoRandom(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (((x >>> 0) / 0x100000000) * 2 - 1) * scale;
  }
  return out;
}

function toHalf(src: Float32Array): Uint16Array {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f[0] = src[i];
    const b = u[0];
    const sign = (b >>> 16) & 0x8000;
    const e = ((b >>> 23) & 0xff) - 127 + 15;
    const m = b & 0x7fffff;
    if (e <= 0) out[i] = sign; // inputs here are normal numbers in fp16 range; flush tiny ones
    else if (e >= 0x1f) out[i] = sign | 0x7c00;
    else out[i] = sign | ((e << 10) + ((m + 0x1000) >> 13)); // round half up; a carry moves into the exponent
  }
  return out;
}

/**
 * Rewrites the UNet weights with fan-in scaled values (uniform, variance 1/fan_in; norm gammas
 * 1 ± 0.1; biases ± 0.02), so activations stay in the range trained weights give. The synthetic
 * checkpoint's ±0.1 values ignore fan-in and grow the up path's activations past 3·10⁷ (beyond
 * float16), which says nothing about a real model.
 */
async function rescaleWeights(unetDir: string): Promise<void> {
  const file = join(unetDir, 'diffusion_pytorch_model.safetensors');
  const w = await openComponentWeights(unetDir);
  const specs = w.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
  await w.close();
  const plan = planSafetensorsLayout(specs, { format: 'pt' });
  const tmp = `${file}.tmp`;
  const writer = await SafetensorsWriter.create(tmp, plan);
  let seed = 1;
  for (const t of plan.tensors) {
    if (t.dtype !== 'F32') throw new Error(`${t.name}: expected F32, got ${t.dtype}`);
    const n = t.shape.reduce((p, d) => p * d, 1);
    const fanIn = t.shape.length >= 2 ? t.shape.slice(1).reduce((p, d) => p * d, 1) : 0;
    const [offset, scale] = fanIn > 0 ? [0, Math.sqrt(3 / fanIn)] : t.name.endsWith('.weight') ? [1, 0.1] : [0, 0.02];
    const s = seed++;
    async function* chunks(): AsyncIterable<Uint8Array> {
      const step = 1 << 21;
      for (let i = 0; i < n; i += step) {
        const v = pseudoRandom(Math.min(step, n - i), s * 7919 + i, scale);
        if (offset) for (let j = 0; j < v.length; j++) v[j] += offset;
        yield new Uint8Array(v.buffer);
      }
    }
    await writer.writeTensor(t.name, chunks());
  }
  await writer.finish();
  renameSync(tmp, file);
}

async function prepare(): Promise<Record<string, unknown>> {
  const unetDir = join(DIR, 'diffusers', 'unet');
  if (existsSync(join(unetDir, 'config.json'))) return { cached: unetDir };
  mkdirSync(DIR, { recursive: true });
  const ckpt = join(DIR, 'sd15-synthetic.safetensors');
  const t0 = performance.now();
  const bytes = await writeSyntheticSafetensors(ckpt, SD15_LAYOUT, 'F32');
  const t1 = performance.now();
  await convert(ckpt, join(DIR, 'diffusers'), { force: true });
  const t2 = performance.now();
  rmSync(ckpt, { force: true });
  await rescaleWeights(unetDir);
  const t3 = performance.now();
  return {
    rescaleS: +((t3 - t2) / 1000).toFixed(1), checkpointMiB: +(bytes / MiB).toFixed(1), syntheticS: +((t1 - t0) / 1000).toFixed(1), convertS: +((t2 - t1) / 1000).toFixed(1), unetMiB: +(fileSize(join(unetDir, 'diffusion_pytorch_model.safetensors')) / MiB).toFixed(1) };
}

async function exportUnet(dtype: DTypeName): Promise<Record<string, unknown>> {
  const unetDir = join(DIR, 'diffusers', 'unet');
  const config = JSON.parse(readFileSync(join(unetDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const w = await openComponentWeights(unetDir);
  try {
    const t0 = performance.now();
    const graph = buildUnetGraph(config, w, { floatType: dtype === 'fp16' ? 'float16' : 'float32', layout: 'optimum', isXL: false });
    const t1 = performance.now();
    const r = await writeOnnxModel(graph, { dir: join(DIR, `onnx-${dtype}`), externalDataFile: 'model.onnx_data' });
    const t2 = performance.now();
    return {
      nodes: graph.nodes.length,
      initializers: graph.initializers.length,
      buildMs: Math.round(t1 - t0),
      writeS: +((t2 - t1) / 1000).toFixed(1),
      modelOnnxKiB: +(r.modelBytes / 1024).toFixed(1),
      externalMiB: +(r.externalBytes / MiB).toFixed(1),
      fp16Overflows: r.overflowCount,
    };
  } finally {
    await w.close();
  }
}

async function runUnet(dtype: DTypeName): Promise<Record<string, unknown>> {
  const ort = await loadOnnxRuntime();
  const model = join(DIR, `onnx-${dtype}`, 'model.onnx');
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  const t1 = performance.now();
  const half = dtype === 'fp16';
  const tensor = (data: Float32Array, dims: number[]) => (half ? new ort.Tensor('float16', toHalf(data), dims) : new ort.Tensor('float32', data, dims));
  const feeds = {
    sample: tensor(pseudoRandom(BATCH * 4 * LATENT * LATENT, 1), [BATCH, 4, LATENT, LATENT]),
    timestep: tensor(new Float32Array([TIMESTEP]), []),
    encoder_hidden_states: tensor(pseudoRandom(BATCH * 77 * 768, 2), [BATCH, 77, 768]),
  };
  const times: number[] = [];
  let out: Float32Array = new Float32Array(0);
  for (let i = 0; i < 2; i++) {
    const s = performance.now();
    const res = await session.run(feeds);
    times.push(performance.now() - s);
    const t = res.out_sample;
    if (t.type === 'float16') {
      const raw = t.data as Uint16Array;
      out = new Float32Array(raw.length);
      const u = new Uint32Array(out.buffer);
      for (let j = 0; j < raw.length; j++) u[j] = f16BitsToF32Bits(raw[j]);
    } else {
      out = t.data as Float32Array;
    }
  }
  await session.release();
  writeFileSync(join(DIR, `out-${dtype}.f32`), new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  let sum = 0;
  let sq = 0;
  let finite = 0;
  for (const v of out) {
    if (Number.isFinite(v)) {
      finite++;
      sum += v;
      sq += v * v;
    }
  }
  const mean = sum / finite;
  return {
    latent: `${BATCH}×4×${LATENT}×${LATENT}`,
    loadS: +((t1 - t0) / 1000).toFixed(1),
    firstStepS: +(times[0] / 1000).toFixed(2),
    secondStepS: +(times[1] / 1000).toFixed(2),
    finite: `${finite}/${out.length}`,
    mean: +mean.toFixed(4),
    std: +Math.sqrt(sq / finite - mean * mean).toFixed(4),
  };
}

function compareOutputs(): Record<string, unknown> {
  const read = (d: DTypeName) => {
    const b = readFileSync(join(DIR, `out-${d}.f32`));
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  const a = read('fp16');
  const b = read('fp32');
  let maxAbs = 0;
  let maxRef = 0;
  let sumAbs = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : d);
    maxRef = Math.max(maxRef, Math.abs(b[i]));
    sumAbs += d;
  }
  return { fp16VsFp32MaxAbs: +maxAbs.toPrecision(3), meanAbs: +(sumAbs / b.length).toPrecision(3), fp32MaxAbs: +maxRef.toPrecision(4) };
}

async function phase(name: string, dtype: DTypeName): Promise<void> {
  const r = name === 'prepare' ? await prepare() : name === 'export' ? await exportUnet(dtype) : name === 'run' ? await runUnet(dtype) : compareOutputs();
  r.selfMaxRssMiB = +(process.resourceUsage().maxRSS / 1024).toFixed(0);
  console.log(`RESULT ${JSON.stringify(r)}`);
}

/** Runs one phase in a child process under /usr/bin/time -v: its result, wall time, peak RSS. */
function child(name: string, dtype: DTypeName): void {
  const extra = ['--dir', DIR, '--batch', String(BATCH), '--size', String(LATENT)];
  const p = spawnSync('/usr/bin/time', ['-v', process.execPath, '--import', 'tsx', SCRIPT, name, dtype, ...extra], { encoding: 'utf8', maxBuffer: 64 * MiB });
  const result = /RESULT (.*)/.exec(p.stdout)?.[1];
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(p.stderr)?.[1];
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.*)/.exec(p.stderr)?.[1];
  if (p.status !== 0 || !result) {
    console.error(p.stdout, p.stderr);
    throw new Error(`${name} ${dtype} failed (exit ${p.status})`);
  }
  console.log(`${`${name} ${name === 'prepare' || name === 'compare' ? '' : dtype}`.padEnd(12)} wall ${wall?.trim()}  peak RSS ${rss ? (Number(rss) / 1024).toFixed(0) : '?'} MiB  ${result}`);
}

const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !all[i - 1]?.startsWith('--'));
if (positional.length > 0) {
  await phase(positional[0], (positional[1] as DTypeName) ?? 'fp32');
} else {
  const dtypes = arg('dtypes', 'fp32,fp16').split(',') as DTypeName[];
  console.log(`dir ${DIR}`);
  child('prepare', 'fp32');
  for (const d of dtypes) {
    child('export', d);
    child('run', d);
  }
  if (dtypes.includes('fp16') && dtypes.includes('fp32')) child('compare', 'fp32');
}
