/**
 * `verify OUT --source CKPT`, the weights part: re-reads every tensor of a converted Diffusers
 * folder (every shard of every weights file) and compares it with the source tensor it came from.
 *
 *   plan      planFolder(source, options): the same plan `convert` writes from; options the folder
 *             does not record are inferred (EMA: the variant whose UNet bytes match; dtype: the
 *             output files' float dtype; scheduler: scheduler_config.json's class) or given.
 *   tensors   every planned target must be in the output with the planned shape, a dtype that the
 *             source dtype converts to, and exactly the bytes plannedTensorChunks() re-derives from
 *             the source (op + declared cast), compared chunk by chunk: memory stays bounded by a
 *             chunk (a transposed 2-D projection matrix is the only tensor held whole).
 *   account   every source key is mapped or dropped with a reason; output tensors nobody planned
 *             and shard indexes that point at the wrong file are problems too.
 *   configs   every text file of the plan (configs, scheduler, tokenizer, model_index.json) is
 *             compared with the folder's: JSON by key, other files by bytes.
 *
 * Any difference is a problem naming the tensor, file or key; the report is per component.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { planFolder, type ConvertOptions, type FolderPlan } from '../convert.js';
import { SCHEDULER_KINDS, schedulerClassName, type SchedulerKind } from '../diffusers/configs.js';
import { bf16BitsToF32Bits, f16BitsToF32Bits } from '../diffusers/cast.js';
import { plannedByteLength, plannedTensorChunks } from '../diffusers/tensor-ops.js';
import { outputDTypeFor, weightsBaseFor } from '../diffusers/write-component.js';
import { dtypeBytes, isFloatDType, type DType } from '../dtypes.js';
import { CkptError, ErrorCode } from '../errors.js';
import { openCheckpoint } from '../formats/open.js';
import { openSafetensors } from '../formats/safetensors.js';
import type { TensorSource } from '../formats/tensor-source.js';
import { FileSource } from '../io/file-source.js';
import { readOriginalConfig } from '../mapping/original-config.js';
import type { PlannedComponent, PlannedTensor } from '../mapping/plan-types.js';
import type { ProgressCallback } from '../progress.js';
import { compareStreams } from './streams.js';

export interface VerifyWeightsOptions {
  /** Whether the UNet was taken from the EMA weights; inferred from the output bytes when absent. */
  extractEma?: boolean;
  /** The options `convert` was given that change the configs (inferred where possible). */
  originalConfig?: string;
  predictionType?: ConvertOptions['predictionType'];
  imageSize?: number;
  upcastAttention?: boolean;
  zeroTerminalSnr?: boolean;
  pipelineClass?: string;
  tokenizerDir?: string;
  /** Scheduler kind written; default: the one scheduler_config.json names. */
  scheduler?: SchedulerKind;
  allowUnknownKeys?: boolean;
  allowUnsafePickle?: boolean;
  /** Only this weights variant (e.g. `fp16`); default every variant present. */
  variant?: string;
  /** Skip the text-file comparison. */
  skipConfigs?: boolean;
  /** Most problems listed per component (default 50; the count is always complete). */
  maxProblems?: number;
  onProgress?: ProgressCallback;
}

export interface ComponentWeightsReport {
  /** Component folder relative to the output ('.' for a standalone VAE). */
  readonly folder: string;
  readonly className: string;
  /** Weights variants checked ('' = no variant). */
  readonly variants: string[];
  readonly files: string[];
  readonly tensors: number;
  /** Tensors whose bytes matched. */
  readonly matched: number;
  readonly bytes: number;
  /** Output float dtypes found. */
  readonly dtypes: string[];
  readonly problemCount: number;
  readonly problems: string[];
  readonly ok: boolean;
}

export interface ConfigDifference {
  readonly file: string;
  /** Dotted key path ('' for a non-JSON file or the whole value). */
  readonly key: string;
  readonly expected?: unknown;
  readonly found?: unknown;
}

export interface VerifyWeightsReport {
  readonly outDir: string;
  readonly source: string;
  readonly family: string;
  readonly extractEma: boolean;
  /** Output float dtype mode found (fp32, fp16, bf16). */
  readonly dtype: 'fp32' | 'fp16' | 'bf16';
  readonly scheduler?: SchedulerKind;
  /** What was inferred rather than given, in words. */
  readonly inferred: string[];
  readonly account: { readonly sourceKeys: number; readonly mapped: number; readonly dropped: number; readonly unknown: string[] };
  readonly components: ComponentWeightsReport[];
  readonly configs: { readonly files: number; readonly differences: ConfigDifference[] };
  readonly problems: number;
  readonly ok: boolean;
  readonly ms: number;
}

const MODE_OF: Partial<Record<DType, 'fp32' | 'fp16' | 'bf16'>> = { F32: 'fp32', F16: 'fp16', BF16: 'bf16' };

interface OutputTensor {
  readonly file: string;
  readonly source: TensorSource;
}

/** The weights files of one component folder for one variant: single file or shards. */
interface WeightsSet {
  readonly variant: string;
  readonly files: string[];
  /** weight_map of the index, when sharded. */
  readonly weightMap?: Record<string, string>;
  readonly indexFile?: string;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function findWeightSets(dir: string, base: string): Promise<WeightsSet[]> {
  const names = existsSync(dir) ? await readdir(dir) : [];
  const single = new RegExp(`^${escapeRe(base)}(?:\\.([A-Za-z0-9_-]+))?\\.safetensors$`);
  const index = new RegExp(`^${escapeRe(base)}\\.safetensors\\.index(?:\\.([A-Za-z0-9_-]+))?\\.json$`);
  const indexAlt = new RegExp(`^${escapeRe(base)}\\.([A-Za-z0-9_-]+)\\.safetensors\\.index\\.json$`);
  const sets = new Map<string, WeightsSet>();
  for (const name of names) {
    const m = index.exec(name) ?? indexAlt.exec(name);
    if (!m) continue;
    const variant = m[1] ?? '';
    const parsed = JSON.parse(await readFile(join(dir, name), 'utf8')) as { weight_map?: Record<string, string> };
    const weightMap = parsed.weight_map ?? {};
    sets.set(variant, { variant, files: [...new Set(Object.values(weightMap))].sort(), weightMap, indexFile: name });
  }
  for (const name of names) {
    const m = single.exec(name);
    if (!m || /-\d{5}-of-\d{5}/.test(name)) continue;
    const variant = m[1] ?? '';
    if (!sets.has(variant)) sets.set(variant, { variant, files: [name] });
  }
  return [...sets.values()].sort((a, b) => a.variant.localeCompare(b.variant));
}

/** Decodes the first element of `bytes` for a message. */
function elementText(bytes: Uint8Array | undefined, dtype: DType): string {
  if (!bytes || bytes.length < dtypeBytes(dtype)) return '?';
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  switch (dtype) {
    case 'F32':
      return String(v.getFloat32(0, true));
    case 'F64':
      return String(v.getFloat64(0, true));
    case 'F16':
      u[0] = f16BitsToF32Bits(v.getUint16(0, true));
      return String(f[0]);
    case 'BF16':
      u[0] = bf16BitsToF32Bits(v.getUint16(0, true));
      return String(f[0]);
    default:
      return Array.from(bytes.subarray(0, dtypeBytes(dtype)), (b) => b.toString(16).padStart(2, '0')).join('');
  }
}

function componentFolderOf(plan: FolderPlan['plan'], c: PlannedComponent): string {
  return plan.standalone || c.standalone ? '' : c.folder;
}

async function openOutputs(dir: string, set: WeightsSet, problems: string[]): Promise<Map<string, OutputTensor>> {
  const out = new Map<string, OutputTensor>();
  for (const file of set.files) {
    const path = join(dir, file);
    if (!existsSync(path)) {
      problems.push(`${file}: listed by ${set.indexFile ?? 'the folder'} but missing`);
      continue;
    }
    const source = await openSafetensors(await FileSource.open(path));
    for (const t of source.tensors) {
      if (out.has(t.name)) problems.push(`${t.name}: in both ${out.get(t.name)?.file} and ${file}`);
      else out.set(t.name, { file, source });
    }
  }
  if (set.weightMap) {
    for (const [name, file] of Object.entries(set.weightMap)) {
      const held = out.get(name);
      if (!held) problems.push(`${name}: the index maps it to ${file}, which does not hold it`);
      else if (held.file !== file) problems.push(`${name}: the index maps it to ${file}, but ${held.file} holds it`);
    }
    for (const [name, t] of out) if (!(name in set.weightMap)) problems.push(`${name}: in ${t.file} but missing from ${set.indexFile}`);
  }
  return out;
}

async function closeOutputs(outputs: Map<string, OutputTensor>): Promise<void> {
  const sources = new Set([...outputs.values()].map((o) => o.source));
  await Promise.all([...sources].map((s) => s.close().catch(() => undefined)));
}

/** Compares one planned tensor with the output; returns a problem or undefined. */
async function compareTensor(source: TensorSource, planned: PlannedTensor, out: OutputTensor): Promise<string | undefined> {
  const info = out.source.get(planned.target);
  if (!info) return `${planned.target}: missing`;
  const allowed = new Set((['fp32', 'fp16', 'bf16'] as const).map((m) => outputDTypeFor(planned.dtype, m)));
  if (!allowed.has(info.dtype)) return `${planned.target}: dtype ${info.dtype} (expected ${[...allowed].join(' or ')} from source ${planned.source} ${planned.dtype})`;
  if (info.shape.join(',') !== planned.shape.join(',')) return `${planned.target}: shape [${info.shape.join(', ')}] (expected [${planned.shape.join(', ')}] from ${planned.source})`;
  const r = await compareStreams(plannedTensorChunks(source, planned, info.dtype), out.source.readChunks(planned.target), dtypeBytes(info.dtype));
  if (r.equal) return undefined;
  if (r.reason === 'length') return `${planned.target}: byte count differs from ${planned.source} at ${r.offset}`;
  const item = dtypeBytes(info.dtype);
  const element = Math.floor(r.offset / item);
  const cast = info.dtype === planned.dtype ? '' : ` cast to ${info.dtype}`;
  return `${planned.target}: element ${element} is ${elementText(r.actual, info.dtype)} (expected ${elementText(r.expected, info.dtype)} from ${planned.source}${cast}, ${planned.op.op})`;
}

/** The scheduler kind whose class scheduler_config.json names. */
async function folderSchedulerKind(outDir: string): Promise<SchedulerKind | undefined> {
  const path = join(outDir, 'scheduler', 'scheduler_config.json');
  if (!existsSync(path)) return undefined;
  try {
    const cls = (JSON.parse(await readFile(path, 'utf8')) as { _class_name?: string })._class_name;
    return SCHEDULER_KINDS.find((k) => schedulerClassName(k) === cls);
  } catch {
    return undefined;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Key-by-key differences of two JSON values (dotted paths; arrays compared whole). */
export function jsonDifferences(expected: unknown, found: unknown, file: string, prefix = ''): ConfigDifference[] {
  if (isPlainObject(expected) && isPlainObject(found)) {
    const keys = [...new Set([...Object.keys(expected), ...Object.keys(found)])].sort();
    return keys.flatMap((k) => {
      const path = prefix ? `${prefix}.${k}` : k;
      if (!(k in found)) return [{ file, key: path, expected: expected[k] }];
      if (!(k in expected)) return [{ file, key: path, found: found[k] }];
      return jsonDifferences(expected[k], found[k], file, path);
    });
  }
  return JSON.stringify(expected) === JSON.stringify(found) ? [] : [{ file, key: prefix, expected, found }];
}

async function compareTextFiles(outDir: string, textFiles: FolderPlan['textFiles']): Promise<ConfigDifference[]> {
  const diffs: ConfigDifference[] = [];
  for (const [rel, data] of textFiles) {
    const path = join(outDir, rel);
    if (!existsSync(path)) {
      diffs.push({ file: rel, key: '', expected: 'present', found: 'missing' });
      continue;
    }
    const found = await readFile(path);
    const expectedBytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    if (found.equals(expectedBytes)) continue;
    if (rel.endsWith('.json') && typeof data === 'string') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(found.toString('utf8'));
      } catch {
        diffs.push({ file: rel, key: '', expected: 'valid JSON', found: 'invalid JSON' });
        continue;
      }
      const d = jsonDifferences(JSON.parse(data), parsed, rel);
      // Same values, other formatting: not a problem for any loader.
      diffs.push(...d.slice(0, 20));
      if (d.length > 20) diffs.push({ file: rel, key: `(${d.length - 20} more keys differ)` });
    } else {
      diffs.push({ file: rel, key: '', expected: `${expectedBytes.length} bytes`, found: `${found.length} bytes, other content` });
    }
  }
  return diffs;
}

/**
 * Which plan the UNet bytes match, when the file holds EMA copies and the caller did not say:
 * the first UNet tensor whose source differs between the two plans decides.
 */
async function inferEma(source: TensorSource, outDir: string, plain: FolderPlan, ema: FolderPlan): Promise<boolean | undefined> {
  const a = plain.plan.components.find((c) => c.folder === 'unet');
  const b = ema.plan.components.find((c) => c.folder === 'unet');
  if (!a || !b) return undefined;
  const byTarget = new Map(b.tensors.map((t) => [t.target, t]));
  const differing = a.tensors.find((t) => byTarget.get(t.target)?.source !== t.source);
  if (!differing) return false;
  const dir = join(outDir, componentFolderOf(plain.plan, a));
  const sets = await findWeightSets(dir, weightsBaseFor(a.library));
  if (sets.length === 0) return undefined;
  const ignored: string[] = [];
  const outputs = await openOutputs(dir, sets[0], ignored);
  try {
    const out = outputs.get(differing.target);
    if (!out) return undefined;
    if ((await compareTensor(source, differing, out)) === undefined) return false;
    const emaTensor = byTarget.get(differing.target);
    if (emaTensor && (await compareTensor(source, emaTensor, out)) === undefined) return true;
    return undefined;
  } finally {
    await closeOutputs(outputs);
  }
}

/** The float dtype mode of the output weights (the first float tensor of the first component). */
async function inferDtype(outDir: string, plan: FolderPlan['plan']): Promise<'fp32' | 'fp16' | 'bf16' | undefined> {
  for (const c of plan.components) {
    const float = c.tensors.find((t) => isFloatDType(t.dtype));
    if (!float) continue;
    const dir = join(outDir, componentFolderOf(plan, c));
    const sets = await findWeightSets(dir, weightsBaseFor(c.library));
    for (const set of sets) {
      const ignored: string[] = [];
      const outputs = await openOutputs(dir, set, ignored);
      try {
        const info = outputs.get(float.target)?.source.get(float.target);
        if (info && MODE_OF[info.dtype]) return MODE_OF[info.dtype];
      } finally {
        await closeOutputs(outputs);
      }
    }
  }
  return undefined;
}

/** Verifies the weights and configs of the Diffusers folder `outDir` against the checkpoint `sourcePath`. */
export async function verifyWeights(outDir: string, sourcePath: string, options: VerifyWeightsOptions = {}): Promise<VerifyWeightsReport> {
  const t0 = performance.now();
  const progress = options.onProgress ?? (() => undefined);
  const maxProblems = options.maxProblems ?? 50;
  const inferred: string[] = [];
  progress({ type: 'phase', phase: 'read', detail: sourcePath });
  if (!existsSync(outDir)) throw new CkptError(ErrorCode.E_IO, 'the folder to verify does not exist.', { file: outDir });
  const originalConfig = options.originalConfig ? await readOriginalConfig(options.originalConfig) : undefined;
  const source = await openCheckpoint(sourcePath, { allowUnsafePickle: options.allowUnsafePickle });
  try {
    progress({ type: 'phase', phase: 'plan' });
    const scheduler = options.scheduler ?? (await folderSchedulerKind(outDir));
    if (!options.scheduler && scheduler) inferred.push(`scheduler ${scheduler} (scheduler_config.json)`);
    const base: ConvertOptions = {
      originalConfig: options.originalConfig,
      predictionType: options.predictionType,
      imageSize: options.imageSize,
      upcastAttention: options.upcastAttention,
      zeroTerminalSnr: options.zeroTerminalSnr,
      pipelineClass: options.pipelineClass,
      tokenizerDir: options.tokenizerDir,
      allowUnknownKeys: options.allowUnknownKeys,
      scheduler,
    };
    let folderPlan = await planFolder(source, { ...base, extractEma: options.extractEma }, originalConfig);
    let extractEma = options.extractEma ?? false;
    if (options.extractEma === undefined && folderPlan.plan.ema?.present) {
      const emaPlan = await planFolder(source, { ...base, extractEma: true }, originalConfig);
      const decided = await inferEma(source, outDir, folderPlan, emaPlan);
      if (decided) {
        folderPlan = emaPlan;
        extractEma = true;
      }
      inferred.push(decided === undefined ? 'EMA: undecidable from the UNet bytes, assumed not extracted' : `EMA ${decided ? 'extracted' : 'not extracted'} (UNet bytes)`);
    }
    const dtype = (await inferDtype(outDir, folderPlan.plan)) ?? 'fp32';
    inferred.push(`dtype ${dtype} (output files)`);
    if (dtype !== 'fp32') folderPlan = await planFolder(source, { ...base, extractEma, dtype }, originalConfig);
    const { plan } = folderPlan;

    const components: ComponentWeightsReport[] = [];
    for (const c of plan.components) {
      const rel = componentFolderOf(plan, c);
      const dir = join(outDir, rel);
      const problems: string[] = [];
      let problemCount = 0;
      const problem = (p: string) => {
        problemCount++;
        if (problems.length < maxProblems) problems.push(p);
      };
      const sets = (await findWeightSets(dir, weightsBaseFor(c.library))).filter((s) => options.variant === undefined || s.variant === options.variant);
      if (sets.length === 0) problem(`no ${weightsBaseFor(c.library)}${options.variant ? `.${options.variant}` : ''}.safetensors weights in ${rel || '.'}`);
      const dtypes = new Set<string>();
      let matched = 0;
      let bytes = 0;
      const files: string[] = [];
      const plannedBytes = c.tensors.reduce((n, t) => n + plannedByteLength(t, outputDTypeFor(t.dtype, dtype)), 0) * Math.max(1, sets.length);
      progress({ type: 'phase', phase: 'verify', detail: rel || 'model', total: { tensors: c.tensors.length * Math.max(1, sets.length), bytes: plannedBytes } });
      for (const set of sets) {
        files.push(...set.files.map((f) => (rel ? `${rel}/${f}` : f)));
        const setProblems: string[] = [];
        const outputs = await openOutputs(dir, set, setProblems);
        setProblems.forEach(problem);
        try {
          const planned = new Set<string>();
          for (const t of c.tensors) {
            planned.add(t.target);
            const out = outputs.get(t.target);
            if (!out) {
              problem(`${t.target}: missing (from ${t.source})`);
              continue;
            }
            const p = await compareTensor(source, t, out);
            const info = out.source.get(t.target);
            if (info && isFloatDType(info.dtype)) dtypes.add(info.dtype);
            if (p) problem(set.variant ? `[${set.variant}] ${p}` : p);
            else {
              matched++;
              bytes += info?.byteLength ?? 0;
            }
            progress({ type: 'tensor', component: rel || 'model', name: t.target, bytes: info?.byteLength ?? 0 });
          }
          for (const [name, o] of outputs) if (!planned.has(name)) problem(`${name}: in ${o.file} but no source tensor maps to it`);
        } finally {
          await closeOutputs(outputs);
        }
      }
      if (dtypes.size > 1) problem(`mixed float dtypes ${[...dtypes].join(', ')} (a conversion writes one)`);
      components.push({
        folder: rel || '.',
        className: c.className,
        variants: sets.map((s) => s.variant),
        files,
        tensors: c.tensors.length,
        matched,
        bytes,
        dtypes: [...dtypes],
        problemCount,
        problems,
        ok: problemCount === 0,
      });
    }

    const unknown = [...plan.account.unknown];
    const accounted = plan.account.mapped.length + plan.account.dropped.length + unknown.length;
    const accountProblems = unknown.length + (accounted === source.tensors.length ? 0 : 1);
    const differences = options.skipConfigs ? [] : await compareTextFiles(outDir, folderPlan.textFiles);
    const problems = components.reduce((n, c) => n + c.problemCount, 0) + accountProblems + differences.length;
    return {
      outDir,
      source: sourcePath,
      family: plan.family,
      extractEma,
      dtype,
      scheduler,
      inferred,
      account: { sourceKeys: source.tensors.length, mapped: plan.account.mapped.length, dropped: plan.account.dropped.length, unknown },
      components,
      configs: { files: options.skipConfigs ? 0 : folderPlan.textFiles.size, differences },
      problems,
      ok: problems === 0,
      ms: performance.now() - t0,
    };
  } finally {
    await source.close();
  }
}
