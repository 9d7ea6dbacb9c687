/**
 * `exportOnnx(diffusersDir, outDir, options)`: a Diffusers pipeline folder → an ONNX pipeline
 * folder that onnxruntime runs, built directly from the Diffusers configs and safetensors
 * weights (no tracing). Two layouts (docs/formats.md §8, anchors.md (d) and (f′)):
 *
 *   'optimum' (default)  what optimum-cli writes and ORTStableDiffusion(XL)Pipeline, diffusers.js
 *                        and the Unity runners read: <component>/model.onnx (+ model.onnx_data),
 *                        int64 input_ids, vae_encoder → latent_parameters, a config.json in each
 *                        component folder, and the source model_index.json. SDXL text encoders
 *                        also output hidden_states.0..N.
 *   'diffusers'          what OnnxStableDiffusionPipeline reads (SD 1.x/2.x only): weights.pb as
 *                        external data (always for the UNet), int32 input_ids, vae_encoder →
 *                        latent_sample (a posterior sample drawn in-graph with RandomNormalLike),
 *                        no per-component config.json, model_index.json with OnnxRuntimeModel
 *                        entries.
 *
 * dtype 'fp16' stores weights and runs the graphs in float16 with float32 islands where SD is
 * known to overflow: VAE attention scores/softmax always; the SDXL VAE decoder entirely (float16
 * I/O, float32 inside) unless `fp16Vae`; the UNet decides its own (SD 2.x upcast_attention).
 *
 * The UNet graph comes from `buildUnetGraph` in './unet.js' (loaded dynamically); when that
 * module is missing the UNet is skipped with a warning.
 *
 * Opset 17, IR version 8 (onnxruntime ≥ 1.12 loads them; checked with 1.30).
 */
import { cp, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { pythonJsonDumps } from '../formats/python-json.js';
import type { ProgressCallback } from '../progress.js';
import { prepareOutputFolder, writeTextFile } from '../diffusers/output-folder.js';
import { initializerBytes, writeOnnxModel, DEFAULT_IR_VERSION, DEFAULT_OPSET, type WriteModelResult } from './encode.js';
import type { FloatType, Graph, WeightSource } from './graph.js';
import { buildTextEncoderGraph, isWithProjection, type ClipTextConfig } from './text-encoder.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, type VaeConfig } from './vae.js';
import { openComponentWeights, type ComponentWeights } from './weights.js';

export type OnnxLayout = 'optimum' | 'diffusers';
export type OnnxDType = 'fp32' | 'fp16';

export interface ExportOnnxOptions {
  layout?: OnnxLayout;
  dtype?: OnnxDType;
  /** Keep the SDXL VAE decoder in float16 too (it overflows in fp16 for the original SDXL VAE). */
  fp16Vae?: boolean;
  /** Replace a non-empty output folder. */
  force?: boolean;
  /** Components whose initializers total more than this go to external data (default 512 MiB). */
  externalThresholdBytes?: number;
  /** In external mode, smaller tensors stay embedded (default 1024 bytes). */
  externalMinBytes?: number;
  /** Only these components (e.g. ['text_encoder', 'vae_decoder']); default all. */
  components?: readonly string[];
  onProgress?: ProgressCallback;
}

export interface ExportedComponent {
  readonly name: string;
  readonly modelPath: string;
  readonly externalDataPath?: string;
  readonly modelBytes: number;
  readonly externalBytes: number;
  readonly floatType: FloatType;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
}

export interface ExportOnnxResult {
  readonly outDir: string;
  readonly layout: OnnxLayout;
  readonly dtype: OnnxDType;
  readonly opset: number;
  readonly irVersion: number;
  readonly components: readonly ExportedComponent[];
  readonly copied: readonly string[];
  readonly warnings: readonly string[];
}

/** What './unet.js' exports: the UNet2DConditionModel graph for a layout and float type. */
export interface UnetGraphOptions {
  readonly floatType: FloatType;
  readonly layout: OnnxLayout;
  /** True for SDXL pipelines (text_embeds / time_ids inputs). */
  readonly isXL: boolean;
  /** Width of the pooled `text_embeds` input (text_encoder_2's projection_dim; 1280 for SDXL). */
  readonly textEmbedsDim?: number;
}
export type BuildUnetGraph = (config: Record<string, unknown>, weights: WeightSource, options: UnetGraphOptions) => Graph | Promise<Graph>;

/** text_encoder_2's projection width: the size of SDXL's pooled text_embeds. */
async function projectionDim(dir: string): Promise<number | undefined> {
  const text = await readFile(join(dir, 'text_encoder_2', 'config.json'), 'utf8').catch(() => undefined);
  const value = text === undefined ? undefined : (JSON.parse(text) as { projection_dim?: unknown }).projection_dim;
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

/** Folders copied as they are. */
const COPIED = ['scheduler', 'tokenizer', 'tokenizer_2', 'feature_extractor'];

interface SourcePipeline {
  dir: string;
  index: Record<string, unknown>;
  className: string;
  isXL: boolean;
  has(component: string): boolean;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return fail(err.code === 'ENOENT' ? ErrorCode.E_CONFIG : ErrorCode.E_IO, path, `cannot read (${err.code ?? err.message}).`, { cause: e });
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    return fail(ErrorCode.E_CONFIG, path, `is not valid JSON (${(e as Error).message}).`, { cause: e });
  }
}

async function isDir(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

async function readPipeline(dir: string): Promise<SourcePipeline> {
  const index = await readJson(join(dir, 'model_index.json'));
  const className = String(index._class_name ?? '');
  const entries = new Set(await readdir(dir));
  const has = (c: string): boolean => {
    const v = index[c];
    return entries.has(c) && (v === undefined || (Array.isArray(v) && v[0] !== null));
  };
  const isXL = className.includes('XL') || has('text_encoder_2');
  return { dir, index, className, isXL, has };
}

async function loadUnetBuilder(): Promise<BuildUnetGraph | undefined> {
  const spec = './unet.js';
  try {
    const mod = (await import(spec)) as { buildUnetGraph?: BuildUnetGraph };
    return mod.buildUnetGraph;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return undefined;
    throw e;
  }
}

/** Exports the Diffusers pipeline at `diffusersDir` to an ONNX pipeline folder at `outDir`. */
export async function exportOnnx(diffusersDir: string, outDir: string, options: ExportOnnxOptions = {}): Promise<ExportOnnxResult> {
  const layout = options.layout ?? 'optimum';
  const dtype = options.dtype ?? 'fp32';
  if (layout !== 'optimum' && layout !== 'diffusers') fail(ErrorCode.E_USAGE, undefined, `unknown ONNX layout "${String(layout)}" (optimum, diffusers).`);
  if (dtype !== 'fp32' && dtype !== 'fp16') fail(ErrorCode.E_USAGE, undefined, `unknown ONNX dtype "${String(dtype)}" (fp32, fp16).`);
  const floatType: FloatType = dtype === 'fp16' ? 'float16' : 'float32';
  const src = await readPipeline(diffusersDir);
  if (layout === 'diffusers' && src.isXL) {
    fail(ErrorCode.E_ONNX_EXPORT, diffusersDir, `${src.className || 'this pipeline'} is SDXL; OnnxStableDiffusionPipeline (--layout diffusers) runs SD 1.x/2.x only.`, {
      hint: 'Use the default layout (optimum), which ORTStableDiffusionXLPipeline and diffusers.js read.',
    });
  }
  const warnings: string[] = [];
  const warn = (message: string): void => {
    warnings.push(message);
    options.onProgress?.({ type: 'warning', message });
  };
  const wanted = (c: string): boolean => !options.components || options.components.includes(c);
  const extFile = layout === 'optimum' ? 'model.onnx_data' : 'weights.pb';
  const out = await prepareOutputFolder(outDir, { force: options.force, keep: [diffusersDir] });
  const components: ExportedComponent[] = [];
  const copied: string[] = [];

  const write = async (name: string, graph: Graph, forceExternal = false): Promise<WriteModelResult> => {
    options.onProgress?.({ type: 'phase', phase: `export ${name}`, total: { tensors: graph.initializers.length, bytes: graph.initializers.reduce((n, i) => n + initializerBytes(i), 0) } });
    let last = 0;
    const r = await writeOnnxModel(graph, {
      dir: join(out.tempDir, name),
      externalDataFile: extFile,
      external: forceExternal ? 'always' : 'auto',
      externalThresholdBytes: options.externalThresholdBytes,
      externalMinBytes: options.externalMinBytes,
      docString: `${name} of ${src.className || 'a Diffusers pipeline'}, exported by ckpt2diffusers`,
      onBytes: (done) => {
        options.onProgress?.({ type: 'tensor', component: name, name, bytes: done - last });
        last = done;
      },
    });
    if (r.overflowCount > 0) warn(`${name}: ${r.overflowCount} weight value(s) overflowed to ±Inf in float16.`);
    components.push({
      name,
      modelPath: join(out.outDir, name, 'model.onnx'),
      externalDataPath: r.externalDataPath ? join(out.outDir, name, extFile) : undefined,
      modelBytes: r.modelBytes,
      externalBytes: r.externalBytes,
      floatType: graph.floatType,
      inputs: graph.inputs.map((i) => i.name),
      outputs: graph.outputs.map((o) => o.name),
    });
    return r;
  };
  const copyConfig = async (from: string, to: string): Promise<void> => {
    if (layout === 'optimum') await cp(join(src.dir, from, 'config.json'), join(out.tempDir, to, 'config.json'));
  };
  const withWeights = async <T>(component: string, fn: (w: ComponentWeights, config: Record<string, unknown>) => Promise<T>): Promise<T> => {
    const config = await readJson(join(src.dir, component, 'config.json'));
    const w = await openComponentWeights(join(src.dir, component));
    try {
      return await fn(w, config);
    } finally {
      await w.close();
    }
  };

  try {
    // Text encoders
    for (const te of ['text_encoder', 'text_encoder_2']) {
      if (!src.has(te) || !wanted(te)) continue;
      await withWeights(te, async (w, config) => {
        const cfg = config as unknown as ClipTextConfig;
        const graph = buildTextEncoderGraph(cfg, w, {
          name: te,
          floatType,
          idsType: layout === 'optimum' ? 'int64' : 'int32',
          hiddenStates: src.isXL,
          withProjection: isWithProjection(cfg, w),
        });
        await write(te, graph);
      });
      await copyConfig(te, te);
    }

    // UNet
    if (src.has('unet') && wanted('unet')) {
      const buildUnet = await loadUnetBuilder();
      if (!buildUnet) {
        warn('unet: skipped, the UNet ONNX graph builder (src/onnx/unet.ts) is not available in this build.');
      } else {
        await withWeights('unet', async (w, config) => {
          const textEmbedsDim = src.isXL ? await projectionDim(src.dir) : undefined;
          const graph = await buildUnet(config, w, { floatType, layout, isXL: src.isXL, textEmbedsDim });
          await write('unet', graph, layout === 'diffusers');
        });
        await copyConfig('unet', 'unet');
      }
    }

    // VAE
    if (src.has('vae') && (wanted('vae_encoder') || wanted('vae_decoder'))) {
      await withWeights('vae', async (w, config) => {
        const cfg = config as unknown as VaeConfig;
        if (wanted('vae_encoder')) {
          const graph = buildVaeEncoderGraph(cfg, w, layout === 'optimum' ? 'parameters' : 'sample', { floatType, name: 'vae_encoder' });
          await write('vae_encoder', graph);
          await copyConfig('vae', 'vae_encoder');
        }
        if (wanted('vae_decoder')) {
          const keepFp32 = floatType === 'float16' && src.isXL && !options.fp16Vae;
          const graph = buildVaeDecoderGraph(cfg, w, { floatType: keepFp32 ? 'float32' : floatType, ioType: floatType, name: 'vae_decoder' });
          await write('vae_decoder', graph);
          await copyConfig('vae', 'vae_decoder');
        }
      });
    }
    if (src.has('safety_checker')) warn('safety_checker: not exported (no ONNX graph for it); the exported pipeline has none.');

    // Folders copied as they are
    for (const name of COPIED) {
      if (!(await isDir(join(src.dir, name)))) continue;
      await cp(join(src.dir, name), join(out.tempDir, name), { recursive: true });
      copied.push(name);
    }

    await writeTextFile(out.tempDir, 'model_index.json', modelIndex(src, layout, copied));
    options.onProgress?.({ type: 'phase', phase: 'commit' });
    await out.commit();
  } catch (e) {
    await out.abort().catch(() => undefined);
    throw e;
  }
  return { outDir: out.outDir, layout, dtype, opset: DEFAULT_OPSET, irVersion: DEFAULT_IR_VERSION, components, copied, warnings };
}

/** model_index.json for the layout: Optimum keeps the source; OnnxStableDiffusionPipeline gets its own. */
export function modelIndex(src: Pick<SourcePipeline, 'index'>, layout: OnnxLayout, copied: readonly string[]): string {
  if (layout === 'optimum') return pythonJsonDumps(src.index, { indent: 2, sortKeys: true }) + '\n';
  const ort = ['diffusers', 'OnnxRuntimeModel'];
  const none = [null, null];
  const pick = (k: string): unknown => (copied.includes(k) ? (src.index[k] ?? none) : none);
  const index: Record<string, unknown> = {
    _class_name: 'OnnxStableDiffusionPipeline',
    _diffusers_version: src.index._diffusers_version ?? '0.31.0',
    feature_extractor: pick('feature_extractor'),
    requires_safety_checker: false,
    safety_checker: none,
    scheduler: pick('scheduler'),
    text_encoder: ort,
    tokenizer: pick('tokenizer'),
    unet: ort,
    vae_decoder: ort,
    vae_encoder: ort,
  };
  return pythonJsonDumps(index, { indent: 2, sortKeys: true }) + '\n';
}
