/**
 * Batch conversion: many inputs, one Diffusers folder each, failures reported and never fatal.
 *
 *   expand inputs (files, folders, globs, .jsonl manifests) → name outputs → keep this shard's share
 *   → a pool of `jobs` workers, each: resume check → leftover cleanup → convert (completion
 *   record written last, inside the temp folder) → one result per input.
 *
 * The completion record `.ckpt2diffusers-complete.json` holds the source's path, size, mtime and a
 * hash of its first and last bytes, plus the conversion options: `resume` skips an output whose
 * record matches and redoes one without a record (interrupted) or with a stale one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { appendFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, freemem } from 'node:os';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { convert, type ConvertOptions } from './convert.js';
import { SCHEDULER_KINDS } from './diffusers/configs.js';
import { cleanStaleTempFolders, withOutputContext } from './diffusers/output-folder.js';
import { CkptError, ErrorCode, isCkptError } from './errors.js';
import { FileSource } from './io/file-source.js';
import { errnoOf, writeError } from './io/write-errors.js';
import type { ProgressEvent } from './progress.js';

/** Name of the completion record inside each finished output folder. */
export const COMPLETION_RECORD = '.ckpt2diffusers-complete.json';

/** File extensions picked up when a folder is given as input. */
export const CHECKPOINT_EXTENSIONS = ['.ckpt', '.pt', '.pth', '.bin', '.safetensors'] as const;

/** Conversion options that can differ per input (CLI flags, manifest fields). */
export type FileOptions = Omit<ConvertOptions, 'onProgress' | 'force'>;

export interface BatchOptions extends FileOptions {
  /** Folder that receives one output folder per input. */
  outDir: string;
  /** Parallel conversions; bounded by cores and available memory (1 GiB per job). */
  jobs?: number;
  /** Skip outputs whose completion record matches the input; redo incomplete or outdated ones. */
  resume?: boolean;
  /** Replace existing output folders (without `resume`, an existing one is an E_OUTPUT_EXISTS failure). */
  force?: boolean;
  /** Only this share of the inputs: `{ index: 1, count: 4 }` or `"1/4"` (1-based). */
  shard?: Shard | string;
  /** Write the results as JSON lines to this file as they come, then a summary line. */
  report?: string;
  onProgress?: (event: BatchProgressEvent) => void;
  /** Stops starting new conversions; the remaining inputs are reported as cancelled. */
  signal?: AbortSignal;
}

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
}

/** One unit of work after expansion. */
export interface BatchItem {
  /** Absolute input path. */
  input: string;
  /** Absolute output folder. */
  output: string;
  /** Per-input options (manifest), on top of the batch's. */
  options: FileOptions;
  /** Where the input came from: the argument (file, folder, glob) or `manifest.jsonl:LINE`. */
  from: string;
  /** Set when the input cannot even be attempted (e.g. two inputs want the same output). */
  error?: CkptError;
}

export type BatchStatus = 'converted' | 'skipped' | 'failed' | 'cancelled';

export interface BatchFileResult {
  type: 'file';
  input: string;
  output: string;
  status: BatchStatus;
  /** Error code (a CkptError code, or E_INTERNAL for a bug) when failed or cancelled. */
  code?: string;
  message?: string;
  /** `converted`: why an existing output was redone (`incomplete`: no record; `outdated`: another source or options). */
  redone?: 'incomplete' | 'outdated';
  /** `skipped`: why. */
  reason?: string;
  family?: string;
  warnings?: string[];
  /** Leftover temp folders of this output removed before converting. */
  cleaned?: string[];
  durationMs: number;
}

export interface BatchReport {
  type: 'summary';
  schema: 1;
  ok: boolean;
  total: number;
  converted: number;
  skipped: number;
  failed: number;
  cancelled: number;
  jobs: number;
  shard: string | null;
  durationMs: number;
  /** In input order. */
  results: BatchFileResult[];
}

export type BatchProgressEvent =
  | { type: 'batch-start'; total: number; jobs: number; shard: string | null }
  | { type: 'file-start'; index: number; total: number; input: string; output: string }
  | { type: 'file-progress'; index: number; input: string; event: ProgressEvent }
  | { type: 'file-done'; index: number; total: number; done: number; result: BatchFileResult };

export interface CompletionRecord {
  schema: 1;
  tool: 'ckpt2diffusers';
  version: string;
  source: SourceFingerprint;
  options: Record<string, unknown>;
  completedAt: string;
}

export interface SourceFingerprint {
  path: string;
  size: number;
  mtimeMs: number;
  /** sha256 of the first MiB and the last 64 KiB (the zip directory of a .ckpt lives at the end). */
  headerSha256: string;
}

const GIB = 1024 ** 3;
const HEAD_BYTES = 1 << 20;
const TAIL_BYTES = 64 << 10;

/** Converts every input; never throws for a single input's failure (see the report). */
export async function batch(inputs: readonly string[], options: BatchOptions): Promise<BatchReport> {
  const started = performance.now();
  const outDir = resolve(options.outDir);
  const shard = options.shard === undefined ? undefined : typeof options.shard === 'string' ? parseShard(options.shard) : checkShard(options.shard);
  const jobs = effectiveJobs(options.jobs);
  const all = await expandInputs(inputs, { outDir });
  const items = shard ? all.filter((it) => shardOf(it.input, shard.count) === shard.index) : all;
  const shardText = shard ? `${shard.index}/${shard.count}` : null;
  const report = options.report ? await reportWriter(resolve(options.report)) : undefined;
  const emit = options.onProgress ?? (() => undefined);
  emit({ type: 'batch-start', total: items.length, jobs, shard: shardText });

  const results: BatchFileResult[] = new Array(items.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      const item = items[index];
      emit({ type: 'file-start', index, total: items.length, input: item.input, output: item.output });
      const result = await convertOne(item, options, (event) => emit({ type: 'file-progress', index, input: item.input, event }));
      results[index] = result;
      const doneNow = ++done;
      await report?.line(result);
      emit({ type: 'file-done', index, total: items.length, done: doneNow, result });
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, Math.max(items.length, 1)) }, worker));

  const count = (s: BatchStatus) => results.filter((r) => r.status === s).length;
  const summary: BatchReport = {
    type: 'summary',
    schema: 1,
    ok: results.every((r) => r.status === 'converted' || r.status === 'skipped'),
    total: items.length,
    converted: count('converted'),
    skipped: count('skipped'),
    failed: count('failed'),
    cancelled: count('cancelled'),
    jobs,
    shard: shardText,
    durationMs: Math.round(performance.now() - started),
    results,
  };
  const { results: _omit, ...line } = summary;
  await report?.line(line);
  return summary;
}

// ---------------------------------------------------------------------------------------------
// One input

async function convertOne(item: BatchItem, batchOptions: BatchOptions, onProgress: (e: ProgressEvent) => void): Promise<BatchFileResult> {
  const t0 = performance.now();
  const base = { type: 'file' as const, input: item.input, output: item.output };
  const elapsed = () => Math.round(performance.now() - t0);
  if (batchOptions.signal?.aborted) {
    return { ...base, status: 'cancelled', code: ErrorCode.E_INTERRUPTED, message: 'the batch was stopped before this input started', durationMs: 0 };
  }
  try {
    if (item.error) throw item.error;
    const options = mergedOptions(batchOptions, item.options);
    const canonical = canonicalOptions(options);
    const source = await fingerprint(item.input);
    let force = batchOptions.force ?? false;
    let redone: BatchFileResult['redone'];
    if (batchOptions.resume) {
      const state = await completionState(item.output, source, canonical);
      if (state === 'complete') return { ...base, status: 'skipped', reason: 'complete (completion record matches the input)', durationMs: elapsed() };
      if (state !== 'absent') {
        force = true;
        redone = state;
      }
    }
    const cleaned = await cleanStaleTempFolders(item.output);
    const record = (): string => {
      const rec: CompletionRecord = { schema: 1, tool: 'ckpt2diffusers', version: toolVersion(), source, options: canonical, completedAt: new Date().toISOString() };
      return JSON.stringify(rec, null, 2) + '\n';
    };
    const result = await withOutputContext({ completionRecord: { name: COMPLETION_RECORD, content: record } }, () =>
      convert(item.input, item.output, { ...options, force, onProgress }),
    );
    return {
      ...base,
      status: 'converted',
      ...(redone ? { redone } : {}),
      family: result.family.family,
      warnings: result.warnings,
      ...(cleaned.length ? { cleaned } : {}),
      durationMs: elapsed(),
    };
  } catch (e) {
    const err = codedError(e, item.output);
    return { ...base, status: 'failed', code: err.code, message: err.message, durationMs: elapsed() };
  }
}

/** Batch-wide options with the input's own on top. */
function mergedOptions(batchOptions: BatchOptions, own: FileOptions): FileOptions {
  const { outDir: _o, jobs: _j, resume: _r, force: _f, shard: _s, report: _p, onProgress: _c, signal: _a, ...shared } = batchOptions;
  return { ...shared, ...own };
}

/** The options that shape the output, as stored in the completion record: sorted, no undefined values. */
function canonicalOptions(options: FileOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(options).sort()) {
    let value = (options as Record<string, unknown>)[key];
    if (value === undefined || value === false) continue;
    if ((key === 'originalConfig' || key === 'tokenizerDir') && typeof value === 'string') value = resolve(value);
    out[key] = value;
  }
  return out;
}

interface CodedFailure {
  code: string;
  message: string;
}

/** Any failure as a code and a message: errno errors of the output become E_DISK_FULL etc. */
function codedError(e: unknown, output: string): CodedFailure {
  if (isCkptError(e)) return e;
  if (errnoOf(e) !== undefined) return writeError(output, 'cannot write the output', e);
  const err = e as Error;
  return { code: 'E_INTERNAL', message: err?.stack ?? String(e) };
}

// ---------------------------------------------------------------------------------------------
// Completion records and resume

/** Size, mtime and a hash of the first and last bytes of `path`. */
export async function fingerprint(path: string): Promise<SourceFingerprint> {
  const file = await FileSource.open(path);
  try {
    const hash = createHash('sha256');
    const head = Math.min(file.size, HEAD_BYTES);
    hash.update(await file.read(0, head, 'file start'));
    const tail = Math.min(file.size - head, TAIL_BYTES);
    if (tail > 0) hash.update(await file.read(file.size - tail, tail, 'file end'));
    return { path: resolve(path), size: file.size, mtimeMs: file.mtimeMs, headerSha256: hash.digest('hex') };
  } finally {
    await file.close();
  }
}

/** Reads the completion record of an output folder; undefined when absent or unreadable. */
export async function readCompletionRecord(outDir: string): Promise<CompletionRecord | undefined> {
  try {
    const rec = JSON.parse(await readFile(join(outDir, COMPLETION_RECORD), 'utf8')) as CompletionRecord;
    return rec && rec.tool === 'ckpt2diffusers' && rec.source ? rec : undefined;
  } catch {
    return undefined;
  }
}

async function completionState(
  outDir: string,
  source: SourceFingerprint,
  options: Record<string, unknown>,
): Promise<'complete' | 'incomplete' | 'outdated' | 'absent'> {
  const st = await stat(outDir).catch(() => undefined);
  if (st === undefined) return 'absent';
  if (st.isDirectory() && (await readdir(outDir)).length === 0) return 'absent';
  const rec = await readCompletionRecord(outDir);
  if (rec === undefined) return 'incomplete';
  const same =
    rec.source.path === source.path &&
    rec.source.size === source.size &&
    rec.source.mtimeMs === source.mtimeMs &&
    rec.source.headerSha256 === source.headerSha256 &&
    JSON.stringify(rec.options) === JSON.stringify(options);
  return same ? 'complete' : 'outdated';
}

let version: string | undefined;

/** The package version (dist/ and src/ both sit one level below package.json). */
export function toolVersion(): string {
  if (version === undefined) {
    try {
      version = String((JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown');
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

// ---------------------------------------------------------------------------------------------
// Jobs and shards

/** Bytes of memory available for new work (MemAvailable on Linux, free memory elsewhere). */
function availableMemory(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}

/** min(cores, available memory / 1 GiB), at least 1. */
export function defaultJobs(): number {
  return Math.max(1, Math.min(availableParallelism(), Math.floor(availableMemory() / GIB)));
}

/** The requested job count bounded by cores and memory; the default when not given. */
export function effectiveJobs(requested?: number): number {
  if (requested === undefined) return defaultJobs();
  if (!Number.isSafeInteger(requested) || requested < 1) {
    throw new CkptError(ErrorCode.E_USAGE, `--jobs ${requested} (expected a whole number ≥ 1)`);
  }
  return Math.max(1, Math.min(requested, defaultJobs()));
}

/** Parses `i/n` (1 ≤ i ≤ n). */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new CkptError(ErrorCode.E_USAGE, `--shard "${text}" (expected i/n, e.g. 1/4)`);
  return checkShard({ index: Number(m[1]), count: Number(m[2]) });
}

function checkShard(s: Shard): Shard {
  if (!Number.isSafeInteger(s.count) || !Number.isSafeInteger(s.index) || s.count < 1 || s.index < 1 || s.index > s.count) {
    throw new CkptError(ErrorCode.E_USAGE, `--shard ${s.index}/${s.count} (expected 1 ≤ i ≤ n)`);
  }
  return s;
}

/**
 * The shard (1..count) an input belongs to: a stable hash of its absolute path, so machines given
 * the same inputs agree on the partition without talking to each other.
 */
export function shardOf(inputPath: string, count: number): number {
  const h = createHash('sha256').update(resolve(inputPath)).digest();
  return (h.readUInt32BE(0) % count) + 1;
}

// ---------------------------------------------------------------------------------------------
// Input expansion

export interface ExpandOptions {
  outDir: string;
}

/**
 * Expands the batch arguments into work items, in a deterministic order:
 * - a `.jsonl` file: a manifest, one JSON object per line (`input`, optional `output`, options);
 * - another file: itself;
 * - a folder: every checkpoint below it (CHECKPOINT_EXTENSIONS), recursively, sorted; the output
 *   folder and symlinked folders are not entered;
 * - a pattern with `*`, `?`, `[...]` or `**`: the files it matches.
 * Outputs are `<outDir>/<input name without extension>`; inputs sharing a name get a short hash of
 * their full path appended (`model-1a2b3c4d`). An argument that matches nothing is an item that
 * fails with E_IO, so it is reported like any other failure.
 */
export async function expandInputs(inputs: readonly string[], options: ExpandOptions): Promise<BatchItem[]> {
  const outDir = resolve(options.outDir);
  const found: Array<Omit<BatchItem, 'output'> & { output?: string }> = [];
  for (const arg of inputs) {
    const abs = resolve(arg);
    const st = await stat(abs).catch(() => undefined);
    if (st?.isFile() && abs.toLowerCase().endsWith('.jsonl')) found.push(...(await readManifest(abs, outDir)));
    else if (st?.isFile()) found.push({ input: abs, options: {}, from: arg });
    else if (st?.isDirectory()) for (const f of await walk(abs, outDir, (p) => hasCheckpointExt(p))) found.push({ input: f, options: {}, from: arg });
    else if (isGlob(arg)) {
      const matches = await globFiles(arg, outDir);
      if (matches.length === 0) found.push(missing(arg, 'matches no file'));
      for (const f of matches) found.push({ input: f, options: {}, from: arg });
    } else found.push(missing(arg, st ? 'is neither a file nor a folder' : 'does not exist'));
  }
  return nameOutputs(dedupe(found), outDir);
}

function missing(arg: string, what: string): Omit<BatchItem, 'output'> {
  return { input: resolve(arg), options: {}, from: arg, error: new CkptError(ErrorCode.E_IO, `${what}.`, { file: arg }) };
}

/** The same file reached twice (a folder and a glob) without its own options is converted once. */
function dedupe<T extends { input: string; output?: string; options: FileOptions }>(items: T[]): T[] {
  const seen = new Set<string>();
  return items.filter((it) => {
    if (it.output !== undefined || Object.keys(it.options).length > 0) return true;
    if (seen.has(it.input)) return false;
    seen.add(it.input);
    return true;
  });
}

function stemOf(path: string): string {
  const name = basename(path);
  const ext = extname(name);
  return ext && ext !== name ? name.slice(0, -ext.length) : name;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

function nameOutputs(items: Array<Omit<BatchItem, 'output'> & { output?: string }>, outDir: string): BatchItem[] {
  // Names compared case-insensitively: on macOS/Windows `Model` and `model` are one folder.
  const byStem = new Map<string, number>();
  for (const it of items) if (it.output === undefined) byStem.set(stemOf(it.input).toLowerCase(), (byStem.get(stemOf(it.input).toLowerCase()) ?? 0) + 1);
  const named: BatchItem[] = items.map((it) => {
    if (it.output !== undefined) return { ...it, output: it.output };
    const stem = stemOf(it.input);
    const unique = (byStem.get(stem.toLowerCase()) ?? 0) === 1;
    return { ...it, output: join(outDir, unique ? stem : `${stem}-${shortHash(it.input)}`) };
  });
  const owner = new Map<string, BatchItem>();
  for (const it of named) {
    if (it.error) continue;
    const key = it.output.toLowerCase();
    const first = owner.get(key);
    if (first === undefined) owner.set(key, it);
    else it.error = new CkptError(ErrorCode.E_USAGE, `output folder ${it.output} is also the output of ${first.input} (${first.from}).`, { file: it.input });
  }
  return named;
}

function hasCheckpointExt(path: string): boolean {
  const lower = path.toLowerCase();
  return CHECKPOINT_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

/** Whether `path` is `folder` or inside it. */
function isWithin(path: string, folder: string): boolean {
  const rel = relative(folder, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/**
 * Files below `root` accepted by `keep`, sorted by path. Symlinks to files are followed, symlinks
 * to folders are not (no cycles); the output folder is skipped, as are hidden folders.
 */
async function walk(root: string, outDir: string, keep: (path: string) => boolean, maxDepth = Infinity): Promise<string[]> {
  const files: string[] = [];
  const visit = async (dir: string, depth: number) => {
    if (isWithin(dir, outDir)) return;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        if (!e.name.startsWith('.') && depth + 1 < maxDepth) await visit(path, depth + 1);
      } else if (e.isFile() || (e.isSymbolicLink() && (await stat(path).catch(() => undefined))?.isFile())) {
        if (keep(path)) files.push(path);
      }
    }
  };
  await visit(root, 0);
  return files;
}

function isGlob(text: string): boolean {
  return /[*?[]/.test(text);
}

/** A glob as a regular expression over `/`-separated relative paths: `*`, `?`, `[...]`, `**`. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') {
        i++;
        re += '(?:[^/]*/)*';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Files matching `pattern` (relative to the working folder unless absolute), sorted. */
async function globFiles(pattern: string, outDir: string): Promise<string[]> {
  const parts = pattern.split(/[\\/]/);
  const fixed: string[] = [];
  while (parts.length > 1 && !isGlob(parts[0])) fixed.push(parts.shift() as string);
  const base = resolve(fixed.length ? fixed.join(sep) || sep : '.');
  const re = globToRegExp(parts.join('/'));
  const depth = parts.includes('**') || parts.some((p) => p.includes('**')) ? Infinity : parts.length;
  const files = await walk(base, outDir, (p) => re.test(relative(base, p).split(sep).join('/')), depth);
  return files;
}

// ---------------------------------------------------------------------------------------------
// Manifests

/** Manifest fields (camelCase, kebab-case, snake_case or `--flag` spelling) → option names. */
const MANIFEST_FIELDS: Record<string, keyof FileOptions | 'half' | 'tokenizer'> = {
  originalconfig: 'originalConfig',
  extractema: 'extractEma',
  allowunknownkeys: 'allowUnknownKeys',
  allowunsafepickle: 'allowUnsafePickle',
  dtype: 'dtype',
  half: 'half',
  variant: 'variant',
  maxshardsize: 'maxShardSize',
  scheduler: 'scheduler',
  predictiontype: 'predictionType',
  imagesize: 'imageSize',
  upcastattention: 'upcastAttention',
  pipelineclass: 'pipelineClass',
  tokenizer: 'tokenizer',
  tokenizerdir: 'tokenizer',
  failonfp16overflow: 'failOnFp16Overflow',
};

const BOOLEAN_FIELDS = new Set(['extractEma', 'allowUnknownKeys', 'allowUnsafePickle', 'half', 'upcastAttention', 'failOnFp16Overflow']);
const STRING_FIELDS = new Set(['originalConfig', 'variant', 'pipelineClass', 'tokenizer']);

/**
 * Reads a JSON-lines manifest: `{"input": "a.ckpt", "output": "a-fp16", "dtype": "fp16"}` per line;
 * blank lines and lines starting with `#` are skipped. Relative `input`, `original-config` and
 * `tokenizer` paths are relative to the manifest; a relative `output` is relative to the output
 * folder. A malformed manifest is a usage error for the whole batch (nothing starts).
 */
export async function readManifest(path: string, outDir: string): Promise<Array<Omit<BatchItem, 'output'> & { output?: string }>> {
  const text = await readFile(path, 'utf8');
  const dir = dirname(path);
  const items: Array<Omit<BatchItem, 'output'> & { output?: string }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const where = `${path}:${i + 1}`;
    const bad = (what: string): never => {
      throw new CkptError(ErrorCode.E_USAGE, `manifest line ${i + 1}: ${what}`, { file: path });
    };
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      bad(`not JSON (${(e as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) bad('expected a JSON object');
    const record = obj as Record<string, unknown>;
    if (typeof record.input !== 'string' || !record.input) bad('"input" (expected a path)');
    if (record.output !== undefined && (typeof record.output !== 'string' || !record.output)) bad('"output" (expected a folder name or path)');
    const options: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(record)) {
      if (key === 'input' || key === 'output') continue;
      const name = MANIFEST_FIELDS[key.replace(/^-+/, '').replace(/[-_]/g, '').toLowerCase()];
      if (name === undefined) bad(`unknown field "${key}"`);
      if (BOOLEAN_FIELDS.has(name) && typeof value !== 'boolean') bad(`"${key}" (expected true or false)`);
      if (STRING_FIELDS.has(name) && typeof value !== 'string') bad(`"${key}" (expected a string)`);
      options[name] = value;
    }
    items.push({
      input: resolve(dir, record.input as string),
      output: record.output === undefined ? undefined : resolve(outDir, record.output as string),
      options: fileOptions(options, dir, bad),
      from: where,
    });
  });
  return items;
}

function fileOptions(o: Record<string, unknown>, dir: string, bad: (what: string) => never): FileOptions {
  const out: FileOptions = {};
  if (o.originalConfig !== undefined) out.originalConfig = resolve(dir, o.originalConfig as string);
  if (o.tokenizer !== undefined) out.tokenizerDir = resolve(dir, o.tokenizer as string);
  for (const k of ['extractEma', 'allowUnknownKeys', 'allowUnsafePickle', 'upcastAttention', 'failOnFp16Overflow'] as const) {
    if (o[k] !== undefined) out[k] = o[k] as boolean;
  }
  for (const k of ['variant', 'pipelineClass'] as const) if (o[k] !== undefined) out[k] = o[k] as string;
  if (o.half === true) out.dtype = 'fp16';
  if (o.dtype !== undefined) {
    if (o.dtype !== 'fp32' && o.dtype !== 'fp16' && o.dtype !== 'bf16') bad(`"dtype" ${JSON.stringify(o.dtype)} (expected fp32, fp16 or bf16)`);
    out.dtype = o.dtype;
  }
  if (o.maxShardSize !== undefined) {
    if (typeof o.maxShardSize !== 'string' && typeof o.maxShardSize !== 'number') bad('"max-shard-size" (expected bytes or a size such as "5GB")');
    out.maxShardSize = o.maxShardSize;
  }
  if (o.scheduler !== undefined) {
    if (!(SCHEDULER_KINDS as readonly unknown[]).includes(o.scheduler)) bad(`"scheduler" ${JSON.stringify(o.scheduler)} (expected ${SCHEDULER_KINDS.join(', ')})`);
    out.scheduler = o.scheduler as FileOptions['scheduler'];
  }
  if (o.predictionType !== undefined) {
    const p = o.predictionType === 'v-prediction' ? 'v_prediction' : o.predictionType;
    if (p !== 'epsilon' && p !== 'v_prediction') bad(`"prediction-type" ${JSON.stringify(o.predictionType)} (expected epsilon or v_prediction)`);
    out.predictionType = p;
  }
  if (o.imageSize !== undefined) {
    if (!Number.isSafeInteger(o.imageSize) || (o.imageSize as number) <= 0) bad('"image-size" (expected a positive whole number)');
    out.imageSize = o.imageSize as number;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report file

async function reportWriter(path: string): Promise<{ line: (obj: object) => Promise<void> }> {
  try {
    await writeFile(path, '');
  } catch (e) {
    throw writeError(path, 'cannot write the report', e);
  }
  // Lines are appended one at a time, in completion order, so a killed batch keeps what it did.
  let chain = Promise.resolve();
  return {
    line: (obj) => (chain = chain.then(() => appendFile(path, JSON.stringify(obj) + '\n')).catch(() => undefined)),
  };
}

