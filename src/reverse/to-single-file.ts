/**
 * Diffusers folder -> one original-layout .safetensors file (`ckpt2diffusers to-single-file`), for
 * the tools that read single files only (A1111, ComfyUI, kohya). Every family the forward
 * direction converts comes back: SD 1.x/2.x and their inpainting / instruct-pix2pix / depth
 * variants, SDXL base / refiner / inpainting, the x4 upscaler, SD 2.1 unCLIP (H and L), a
 * standalone VAE, and a ControlNetModel (as `control_model.*`, the ControlNet 1.1 layout, or bare
 * with `bare`).
 *
 *   detect the folder's family -> read the weight headers of every component -> read the block
 *   structure back from the Diffusers names -> compile the family's forward rows for it -> invert
 *   them (inverse.ts) -> add the restorable extras -> plan the safetensors header -> stream every
 *   tensor (Diffusers chunks -> inverse op -> dtype cast -> writer) into a temp file -> rename.
 *
 * What the single file holds beyond the inverted rows, and what it lacks:
 * - `position_ids` of CLIP ViT-L text encoders (SD 1.x, SDXL `embedders.0`): written back as the
 *   int64 `arange` [1, N] the original checkpoints carry (transformers no longer saves this
 *   buffer; old loaders with strict state-dict loading want it). `positionIds: false` leaves it out.
 * - `v_pred` (and `ztsnr` for zero-terminal-SNR schedulers): the empty float32 marker tensors
 *   ComfyUI writes, so ComfyUI and our own reader know the prediction type. `markers: false`
 *   leaves them out; the `modelspec.predict_key` metadata says it either way.
 * - Never restored (Diffusers dropped them; listed in the result as `notRestored`): the LDM
 *   noise-schedule buffers (loaders rebuild them from the config), EMA copies, SGM
 *   `denoiser.sigmas`, OpenCLIP `logit_scale`, and for SD 2.x the last OpenCLIP layer
 *   (`resblocks.23`) and `text_projection`; the x4 upscaler's `low_scale_model.*` schedule; for
 *   unCLIP the `noise_augmentor.*` schedule and the text-side remnants of the image embedder's
 *   CLIP model (`embedder.model.{positional_embedding, text_projection, logit_scale,
 *   token_embedding, ln_final, transformer}`).
 * - unCLIP `noise_augmentor.data_mean` / `data_std`: written from image_normalizer's mean / std
 *   when they hold real statistics. When they are exactly zeros / ones they are the values the
 *   converter (and Diffusers without `clip_stats_path`) writes for a file that had none, so they
 *   are left out (and listed in `notRestored`): released unCLIP files carry no statistics.
 * - SD 2.x placeholders (on by default, `placeholders: false` to leave them out): stand-ins for
 *   the OpenCLIP tensors SD 2.x never uses: the last layer as a copy of the one before it (as
 *   kohya's converter does), an identity `text_projection`, `logit_scale` = ln(1/0.07)
 *   (OpenCLIP's initial value). Why by default: converters that count `resblocks.N` (ours, and loaders that
 *   build the text tower from the file) would otherwise take layer 22 for the unused last layer
 *   and lose a real one; with them the file reads as the 24-layer tower the originals hold, and
 *   strict state-dict loaders accept it. They are listed in the result's `added`; their values
 *   are not the original ones (those are gone). SDXL keeps every layer, so nothing is made up
 *   there: its `logit_scale` stays in `notRestored`.
 */
import { randomBytes } from 'node:crypto';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { type DType, dtypeBytes } from '../dtypes.js';
import { castBytes, castChunks } from '../diffusers/cast.js';
import { applyOp } from '../diffusers/tensor-ops.js';
import { outputDTypeFor, type OutputDTypeMode } from '../diffusers/write-component.js';
import { ErrorCode, fail } from '../errors.js';
import { planSafetensorsLayout, SafetensorsWriter, type SafetensorsLayout } from '../formats/safetensors.js';
import { isPyFloat } from '../formats/python-json.js';
import type { TensorInfo } from '../formats/tensor-source.js';
import { writeError, writeStep } from '../io/write-errors.js';
import { CHUNK_BYTES } from '../limits.js';
import { compileFamily, type CompiledFamily, type ResolvedComponent } from '../mapping/compile.js';
import { familySpec, loadMappings } from '../mapping/load.js';
import type { ComponentFolder } from '../mapping/plan-types.js';
import type { ProgressCallback } from '../progress.js';
import {
  checkFolder,
  componentStructures,
  componentWeightFiles,
  detectFolderFamily,
  FolderSources,
  readJsonFile,
  type FolderFamily,
  type JsonObject,
  type ReverseFamily,
} from './folder.js';
import { planReverse, type ComponentTensors, type ReversePart, type ReverseTensor } from './inverse.js';

export interface ToSingleFileOptions {
  /** Output dtype of float tensors: `keep` (default: as the folder stores them), fp32, fp16, bf16. */
  dtype?: OutputDTypeMode;
  /** Family of the folder, instead of detecting it. */
  family?: ReverseFamily;
  /** Read this weight variant (`fp16` -> `*.fp16.safetensors`). */
  variant?: string;
  /** Write CLIP ViT-L `position_ids` (int64 arange) back; default true. */
  positionIds?: boolean;
  /** Write ComfyUI's `v_pred` / `ztsnr` marker tensors when the scheduler says so; default true. */
  markers?: boolean;
  /** SD 2.x: write stand-ins for the OpenCLIP tensors Diffusers drops (see above); default true. */
  placeholders?: boolean;
  /** ControlNet: write the keys without the `control_model.` prefix (a bare ControlNet file). */
  bare?: boolean;
  /** Replace an existing output file. */
  force?: boolean;
  /** Read `.bin` weights whose pickle imports dangerous globals (never executed). */
  allowUnsafePickle?: boolean;
  /** `modelspec.title`; defaults to the folder name. */
  title?: string;
  /** Largest chunk read and written at once; defaults to limits.CHUNK_BYTES. */
  chunkBytes?: number;
  onProgress?: ProgressCallback;
}

/** A tensor written from values computed here rather than read from the folder. */
interface ConstTensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

/** A tensor of the single file that is not the inverse of a forward row. */
export interface AddedTensor {
  readonly name: string;
  readonly reason: string;
}

export interface NotRestored {
  /** Original key or prefix (ends in '.'). */
  readonly source: string;
  readonly reason: string;
}

export interface SingleFilePlan {
  readonly dir: string;
  readonly family: FolderFamily;
  readonly compiled: CompiledFamily;
  readonly tensors: readonly ReverseTensor[];
  readonly constants: readonly ConstTensor[];
  readonly added: readonly AddedTensor[];
  readonly notRestored: readonly NotRestored[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly predictionType?: string;
  readonly components: readonly ComponentTensors[];
}

export interface ToSingleFileResult {
  input: string;
  output: string;
  family: ReverseFamily;
  familyEvidence: readonly string[];
  predictionType?: string;
  tensors: number;
  bytes: number;
  metadata: Readonly<Record<string, string>>;
  added: readonly AddedTensor[];
  notRestored: readonly NotRestored[];
  /** Largest buffer handed to the writer at once (memory stays bounded by it, transpose aside). */
  largestChunkBytes: number;
  /** Tensors in which a finite value became ±Inf in a cast to float16/bfloat16. */
  fp16Overflow: string[];
  warnings: string[];
}

const SPEC_VERSION = '1.0.0';
const IMPLEMENTATION: Record<'sd1' | 'sd2' | 'sgm' | 'controlnet', string> = {
  sd1: 'https://github.com/CompVis/stable-diffusion',
  sd2: 'https://github.com/Stability-AI/stablediffusion',
  sgm: 'https://github.com/Stability-AI/generative-models',
  controlnet: 'https://github.com/lllyasviel/ControlNet',
};
const SDXL_VAE_SCALING = 0.13025;
/** OpenCLIP initialises logit_scale to ln(1 / 0.07). */
const OPENCLIP_LOGIT_SCALE = Math.log(1 / 0.07);

/**
 * `modelspec.architecture` per family: the SAI model spec ids (kohya, ComfyUI, SwarmUI), with the
 * variant ids ComfyUI and SwarmUI use (`-inpainting`, `-depth`, `-unclip-h`, `/controlnet`); the
 * x4 upscaler has no published id, so it gets one in the same pattern. Each starts with what the
 * forward family's metadata probe expects.
 */
function architectureOf(family: ReverseFamily, v: boolean): string {
  switch (family) {
    case 'sd1':
    case 'sd1-pix2pix':
      return 'stable-diffusion-v1';
    case 'sd1-inpaint':
      return 'stable-diffusion-v1-inpainting';
    case 'sd2':
      return v ? 'stable-diffusion-v2-768-v' : 'stable-diffusion-v2-512';
    case 'sd2-inpaint':
      return 'stable-diffusion-v2-inpainting';
    case 'sd2-depth':
      return 'stable-diffusion-v2-depth';
    case 'sdxl-base':
    case 'sdxl-inpaint':
      return 'stable-diffusion-xl-v1-base';
    case 'sdxl-refiner':
      return 'stable-diffusion-xl-v1-refiner';
    case 'sd-x4-upscaler':
      return 'stable-diffusion-v2-x4-upscaler';
    case 'sd21-unclip-h':
      return 'stable-diffusion-v2-unclip-h';
    case 'sd21-unclip-l':
      return 'stable-diffusion-v2-unclip-l';
    case 'controlnet-sd15':
      return 'stable-diffusion-v1/controlnet';
    case 'controlnet-sdxl':
      return 'stable-diffusion-xl-v1-base/controlnet';
    case 'vae':
      return 'stable-diffusion-v1/vae';
  }
}

function implementationOf(family: ReverseFamily): string {
  if (family.startsWith('controlnet')) return IMPLEMENTATION.controlnet;
  if (family.startsWith('sdxl')) return IMPLEMENTATION.sgm;
  if (family.startsWith('sd1')) return IMPLEMENTATION.sd1;
  return IMPLEMENTATION.sd2;
}

const isControlNet = (f: ReverseFamily): boolean => f.startsWith('controlnet');

/**
 * Plans the single file from the folder's headers and configs: every tensor, its parts and
 * shape, the extras and the metadata. `sources` is left open for writing (the caller closes it).
 */
export async function planSingleFile(dir: string, options: ToSingleFileOptions = {}, sources = new FolderSources()): Promise<SingleFilePlan> {
  await checkFolder(dir);
  const family: FolderFamily = options.family ? { family: options.family, evidence: [`flag --family ${options.family}`] } : await detectFolderFamily(dir);
  const mappings = loadMappings();
  const spec = familySpec(family.family, mappings);
  const resolved: ResolvedComponent[] = [];
  const components: ComponentTensors[] = [];
  const configs = new Map<ComponentFolder, JsonObject>();
  const leftOut: NotRestored[] = [];
  // A standalone VAE keeps top-level names; a ControlNet gets `control_model.` unless `bare`.
  const bare = family.family === 'vae' || (options.bare === true && isControlNet(family.family));
  for (const c of spec.components) {
    const cdir = spec.standalone ? dir : join(dir, c.folder);
    const st = await stat(cdir).catch(() => undefined);
    if (!st?.isDirectory()) fail(ErrorCode.E_MISSING_TENSOR, dir, `has no ${c.folder}/ folder (family ${family.family} needs ${spec.components.map((x) => x.folder).join(', ')}).`);
    configs.set(c.folder, (await readJsonFile(join(cdir, 'config.json'))) ?? {});
    const files = await componentWeightFiles(cdir, c.library, options.variant);
    let tensors = await sources.add(c.folder, files, options.allowUnsafePickle);
    const source = spec.standalone && bare && c.sources.includes('') ? '' : c.sources[0];
    const table = mappings.tables.get(c.table);
    if (!table) fail(ErrorCode.E_MAPPING_TABLE, undefined, `component ${c.folder} names unknown table "${c.table}".`);
    resolved.push({ spec: c, source, structures: componentStructures(table, tensors, c.options.skipLastLayer === true) });
    if (c.table === 'unclip-normalizer' && (await defaultStatistics(c.folder, tensors, sources))) {
      tensors = tensors.filter((t) => t.name !== 'mean' && t.name !== 'std');
      for (const name of ['data_mean', 'data_std']) {
        leftOut.push({ source: source + name, reason: 'image_normalizer holds the default statistics (mean 0, std 1) written for a file without them' });
      }
    }
    components.push({ component: c.folder, tensors });
  }
  const compiled = compileFamily(spec, resolved, mappings);
  const reverse = planReverse(compiled, components);
  const scheduler = spec.standalone ? undefined : await readJsonFile(join(dir, 'scheduler', 'scheduler_config.json'));
  const predictionType = spec.standalone ? undefined : typeof scheduler?.prediction_type === 'string' ? scheduler.prediction_type : 'epsilon';
  const extras = extraTensors(compiled, reverse.tensors, components, { ...options, predictionType, zeroSnr: scheduler?.rescale_betas_zero_snr === true });
  const restored = new Set([...extras.constants.map((c) => c.name), ...extras.copies.map((c) => c.name)]);
  const notRestored: NotRestored[] = [...leftOut];
  for (const r of compiled.rules.values()) {
    if (r.kind !== 'drop' || r.reason === 'prediction-marker' || isRestored(r.source, restored)) continue;
    notRestored.push({ source: r.source, reason: mappings.reasons.get(r.reason) ?? r.reason });
  }
  const metadata = singleFileMetadata(family.family, dir, options.title, predictionType, configs);
  return {
    dir,
    family,
    compiled,
    tensors: [...reverse.tensors, ...extras.copies],
    constants: extras.constants,
    added: extras.added,
    notRestored,
    metadata,
    predictionType,
    components,
  };
}

/**
 * Whether an unCLIP image_normalizer holds exactly mean 0 / std 1: what the forward writer (like
 * Diffusers without clip_stats_path) fills in when the file has no CLIP statistics.
 */
async function defaultStatistics(folder: ComponentFolder, tensors: readonly TensorInfo[], sources: FolderSources): Promise<boolean> {
  const want: Record<string, number> = { mean: 0, std: 1 };
  for (const [name, value] of Object.entries(want)) {
    const t = tensors.find((x) => x.name === name);
    if (!t || (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16')) return false;
    const bytes = await sources.source(folder, name).readTensor(name);
    const n = bytes.length / dtypeBytes(t.dtype);
    if (!Buffer.from(bytes).equals(Buffer.from(fromF32(new Float32Array(n).fill(value), t.dtype)))) return false;
  }
  return true;
}

/** An exact key that was written back, or a prefix under which something was. */
function isRestored(source: string, restored: ReadonlySet<string>): boolean {
  if (!source.endsWith('.')) return restored.has(source);
  for (const name of restored) if (name.startsWith(source)) return true;
  return false;
}

interface ExtraInput extends ToSingleFileOptions {
  readonly predictionType?: string;
  readonly zeroSnr: boolean;
}

function extraTensors(
  compiled: CompiledFamily,
  tensors: readonly ReverseTensor[],
  components: readonly ComponentTensors[],
  o: ExtraInput,
): { constants: ConstTensor[]; copies: ReverseTensor[]; added: AddedTensor[] } {
  const constants: ConstTensor[] = [];
  const copies: ReverseTensor[] = [];
  const added: AddedTensor[] = [];
  const drops = [...compiled.rules.values()].filter((r): r is Extract<typeof r, { kind: 'drop' }> => r.kind === 'drop');
  const tensorsOf = (folder: ComponentFolder): readonly TensorInfo[] => components.find((c) => c.component === folder)?.tensors ?? [];
  for (const c of compiled.components) {
    const own = drops.filter((d) => d.source.startsWith(c.source) && c.source !== '');
    const te = tensorsOf(c.spec.folder);
    if (c.spec.table === 'clip-hf' && o.positionIds !== false) {
      const drop = own.find((d) => d.reason === 'clip-position-ids');
      const n = te.find((t) => t.name === 'text_model.embeddings.position_embedding.weight')?.shape[0];
      if (drop && n) {
        constants.push({ name: drop.source, dtype: 'I64', shape: [1, n], bytes: arangeI64(n) });
        added.push({ name: drop.source, reason: 'CLIP position_ids buffer (int64 arange), as original checkpoints carry it' });
      }
    }
    if (c.spec.table === 'openclip' && c.spec.options.skipLastLayer === true && o.placeholders !== false) {
      const emb = te.find((t) => t.name === 'text_model.embeddings.token_embedding.weight');
      if (!emb) continue;
      const width = emb.shape[1];
      for (const d of own) {
        if (d.reason === 'sd2-penultimate-layer') {
          const m = /resblocks\.(\d+)\.$/.exec(d.source);
          const prev = m ? d.source.replace(/\.(\d+)\.$/, `.${Number(m[1]) - 1}.`) : undefined;
          for (const t of tensors) {
            if (!prev || !t.name.startsWith(prev)) continue;
            const name = d.source + t.name.slice(prev.length);
            copies.push({ ...t, name });
            added.push({ name, reason: `placeholder: copy of ${prev}* (SD 2.x never runs its last OpenCLIP layer)` });
          }
        } else if (d.reason === 'sd2-text-projection') {
          constants.push({ name: d.source, dtype: emb.dtype, shape: [width, width], bytes: fromF32(identity(width), emb.dtype) });
          added.push({ name: d.source, reason: 'placeholder: identity text_projection (SD 2.x uses the unprojected states)' });
        } else if (d.reason === 'openclip-logit-scale') {
          constants.push({ name: d.source, dtype: emb.dtype, shape: [], bytes: fromF32(new Float32Array([OPENCLIP_LOGIT_SCALE]), emb.dtype) });
          added.push({ name: d.source, reason: 'placeholder: logit_scale = ln(1/0.07), OpenCLIP initial value (used only in contrastive training)' });
        }
      }
    }
  }
  if (o.markers !== false && o.predictionType === 'v_prediction') {
    constants.push({ name: 'v_pred', dtype: 'F32', shape: [0], bytes: new Uint8Array(0) });
    added.push({ name: 'v_pred', reason: 'ComfyUI marker: the scheduler says prediction_type v_prediction' });
  }
  if (o.markers !== false && o.zeroSnr) {
    constants.push({ name: 'ztsnr', dtype: 'F32', shape: [0], bytes: new Uint8Array(0) });
    added.push({ name: 'ztsnr', reason: 'ComfyUI marker: the scheduler rescales betas to zero terminal SNR' });
  }
  return { constants, copies, added };
}

function arangeI64(n: number): Uint8Array {
  const out = new BigInt64Array(n);
  for (let i = 0; i < n; i++) out[i] = BigInt(i);
  return littleEndian(new Uint8Array(out.buffer), 8);
}

function identity(n: number): Float32Array {
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  return out;
}

function fromF32(values: Float32Array, dtype: DType): Uint8Array {
  const bytes = littleEndian(new Uint8Array(values.buffer), 4);
  return dtype === 'F32' ? bytes : castBytes(bytes, 'F32', dtype).bytes;
}

/** Typed arrays use the host byte order; tensor bytes are little-endian. */
function littleEndian(bytes: Uint8Array, itemsize: number): Uint8Array {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) return bytes;
  for (let i = 0; i < bytes.length; i += itemsize) bytes.subarray(i, i + itemsize).reverse();
  return bytes;
}

/**
 * `{"format": "pt"}` plus the SAI model spec keys our reader (and kohya / ComfyUI) use as
 * evidence: architecture (family; for a VAE the scaling its config names), prediction type,
 * resolution, implementation, title.
 */
function singleFileMetadata(
  family: ReverseFamily,
  dir: string,
  title: string | undefined,
  predictionType: string | undefined,
  configs: ReadonlyMap<ComponentFolder, JsonObject>,
): Record<string, string> {
  const meta: Record<string, string> = { format: 'pt', 'modelspec.sai_model_spec': SPEC_VERSION };
  const v = predictionType === 'v_prediction';
  if (family === 'vae') {
    const xl = numberOf(configs.get('vae')?.scaling_factor) === SDXL_VAE_SCALING;
    meta['modelspec.architecture'] = xl ? 'stable-diffusion-xl-v1-base/vae' : 'stable-diffusion-v1/vae';
    meta['modelspec.implementation'] = xl ? IMPLEMENTATION.sgm : IMPLEMENTATION.sd1;
  } else if (isControlNet(family)) {
    // A ControlNet follows its base model's prediction type: the file says nothing about it.
    meta['modelspec.architecture'] = architectureOf(family, v);
    meta['modelspec.implementation'] = implementationOf(family);
  } else {
    meta['modelspec.architecture'] = architectureOf(family, v);
    meta['modelspec.implementation'] = implementationOf(family);
    meta['modelspec.predict_key'] = v ? 'v' : 'epsilon';
    const sample = numberOf(configs.get('unet')?.sample_size);
    const levels = configs.get('vae')?.block_out_channels;
    if (sample !== undefined && Array.isArray(levels) && levels.length > 0) {
      const size = sample * 2 ** (levels.length - 1);
      meta['modelspec.resolution'] = `${size}x${size}`;
    }
  }
  meta['modelspec.title'] = title ?? basename(resolve(dir));
  return meta;
}

/** A JSON number as parsePythonJson returns it (floats come wrapped). */
function numberOf(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  return isPyFloat(v) ? v.value : undefined;
}

// --- writing -----------------------------------------------------------------------------------

/** Converts the Diffusers folder `dir` into the single file `out` (written atomically). */
export async function toSingleFile(dir: string, out: string, options: ToSingleFileOptions = {}): Promise<ToSingleFileResult> {
  await checkOutput(out, options.force === true);
  const sources = new FolderSources();
  try {
    options.onProgress?.({ type: 'phase', phase: 'plan', detail: dir });
    const plan = await planSingleFile(dir, options, sources);
    const written = await writeSingleFile(plan, sources, out, options);
    const warnings: string[] = [];
    if (written.overflow.length) warnings.push(`${written.overflow.length} tensors have values beyond the half-precision range that became ±Inf`);
    return {
      input: dir,
      output: out,
      family: plan.family.family,
      familyEvidence: plan.family.evidence,
      predictionType: plan.predictionType,
      tensors: written.layout.tensors.length,
      bytes: written.layout.totalBytes,
      metadata: plan.metadata,
      added: plan.added,
      notRestored: plan.notRestored,
      largestChunkBytes: written.largestChunk,
      fp16Overflow: written.overflow,
      warnings,
    };
  } finally {
    await sources.close();
  }
}

/** Refuses an existing output unless `force`; refuses a folder always. */
async function checkOutput(out: string, force: boolean): Promise<void> {
  const st = await stat(out).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) fail(ErrorCode.E_OUTPUT_EXISTS, out, 'is a folder (expected a .safetensors file name).');
  if (!force) fail(ErrorCode.E_OUTPUT_EXISTS, out, 'already exists.', { hint: 'Pass --force to replace it.' });
}

interface Written {
  layout: SafetensorsLayout;
  largestChunk: number;
  overflow: string[];
}

async function writeSingleFile(plan: SingleFilePlan, sources: FolderSources, out: string, options: ToSingleFileOptions): Promise<Written> {
  const mode = options.dtype ?? 'keep';
  const byName = new Map<string, ReverseTensor | ConstTensor>();
  for (const t of [...plan.tensors, ...plan.constants]) {
    if (byName.has(t.name)) fail(ErrorCode.E_TARGET_COLLISION, undefined, `${t.name} is planned twice in the single file.`);
    byName.set(t.name, t);
  }
  const entries = [...byName.values()].map((t) => ({ name: t.name, dtype: outputDTypeFor(t.dtype, mode), shape: t.shape }));
  const layout = planSafetensorsLayout(entries, plan.metadata);
  const temp = join(dirname(resolve(out)), `.${basename(out)}.partial-${randomBytes(4).toString('hex')}`);
  const writer = await writeStep(temp, 'cannot write', () => SafetensorsWriter.create(temp, layout));
  const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
  const stats = { overflowCount: 0 };
  const overflow: string[] = [];
  let largestChunk = 0;
  try {
    options.onProgress?.({ type: 'phase', phase: 'write', detail: out, total: { tensors: layout.tensors.length, bytes: layout.totalBytes - layout.dataStart } });
    for (const entry of layout.tensors) {
      const t = byName.get(entry.name) as ReverseTensor | ConstTensor;
      const before = stats.overflowCount;
      const chunks = 'bytes' in t ? castChunks(single(t.bytes), t.dtype, entry.dtype, stats) : partsChunks(t, entry.dtype, sources, chunkBytes, stats);
      await writer.writeTensor(
        entry.name,
        (async function* () {
          for await (const c of chunks) {
            largestChunk = Math.max(largestChunk, c.length);
            yield c;
          }
        })(),
      );
      if (stats.overflowCount > before) overflow.push(entry.name);
      options.onProgress?.({ type: 'tensor', component: 'single-file', name: entry.name, bytes: entry.byteLength });
    }
    await writer.finish();
    await writeStep(out, 'cannot move the finished file into place', () => rename(temp, out));
  } catch (e) {
    await writer.abort().catch(() => undefined);
    await rm(temp, { force: true }).catch(() => undefined);
    throw (e as { file?: string })?.file === temp ? writeError(out, 'cannot write', e) : e;
  }
  options.onProgress?.({ type: 'file', path: out });
  return { layout, largestChunk, overflow };
}

async function* single(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  if (bytes.length > 0) yield bytes;
}

/** The parts of an original tensor, one after the other: read -> inverse op -> cast. */
async function* partsChunks(t: ReverseTensor, outDtype: DType, sources: FolderSources, chunkBytes: number, stats: { overflowCount: number }): AsyncGenerator<Uint8Array> {
  for (const part of t.parts) yield* partChunks(part, outDtype, sources, chunkBytes, stats);
}

function partChunks(part: ReversePart, outDtype: DType, sources: FolderSources, chunkBytes: number, stats: { overflowCount: number }): AsyncIterable<Uint8Array> {
  const source = sources.source(part.component, part.key);
  let chunks: AsyncIterable<Uint8Array> = source.readChunks(part.key, { chunkBytes });
  // unsqueeze is a reshape: the bytes are the same. transpose holds the 2-D tensor in memory.
  if (part.op === 'transpose') chunks = applyOp(chunks, { op: 'transpose' }, part.shape, dtypeBytes(part.dtype), chunkBytes);
  return castChunks(chunks, part.dtype, outDtype, stats);
}
