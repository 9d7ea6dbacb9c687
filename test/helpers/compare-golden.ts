/**
 * Compares a converted Diffusers folder with a golden one, bit for bit: the TypeScript twin of
 * the shared `tools/compare.py`, so the test suite reaches the same verdicts without Python.
 *
 * Checked, as compare.py checks them:
 *   - model_index.json key by key (ignoring _diffusers_version, _name_or_path, transformers_version,
 *     torch_dtype, dtype); its [library, class] entries name the components to compare;
 *   - per component config.json / scheduler_config.json key by key (same ignored keys), values
 *     equal as JSON values (1 == 1.0, lists compared item by item, NaN == NaN, true != 1);
 *   - tokenizer folders: every golden file present; *.json key by key (ignoring name_or_path,
 *     tokenizer_file, special_tokens_map_file, _name_or_path); vocab.json / merges.txt by the
 *     canonical sha256 recorded in the golden's _large_files.json; an extra tokenizer.json or
 *     added_tokens.json is a difference;
 *   - weights: the tensor names over all *.safetensors of a component (or only the files a
 *     *.safetensors.index.json weight_map lists, when there is one), the weight file base name
 *     with the shard suffix `-NNNNN-of-NNNNN` stripped, dtype, shape, and the value bytes.
 *
 * Value modes (compare.py `--half`, `--fp16-input`, or the `compare_mode` golden.json records for
 * the converted input):
 *   exact        product tensors equal the golden bytes;
 *   fp16-input   the input held float16 weights: product float32 == float32(float16(golden));
 *   half         product float tensors are F16 and equal the golden cast to float16 (round to
 *                nearest, ties to even).
 *
 * Variants (an addition: compare.py knows none). With `variant: 'fp16'` every product weight file
 * must carry the variant as Diffusers names it, `<base>.fp16.safetensors` or
 * `<base>.fp16-00001-of-00002.safetensors`; the `.fp16` is stripped along with the shard suffix
 * before the base names are compared, and a product file without it is reported by name. The
 * variant shard index `<base>.safetensors.index.fp16.json` is followed like the plain one. Without
 * `variant`, a variant-named product file fails the base name check, as it does in compare.py.
 *
 * Difference messages are compare.py's lines; `summary` is its last line.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { castBytes, f16BitsToF32Bits } from '../../src/diffusers/cast.js';
import { isDType } from '../../src/dtypes.js';
import { SAFETENSORS_DTYPES, readSafetensorsHeader, type SafetensorsHeader } from '../../src/formats/safetensors.js';
import { isPyFloat, parsePythonJson, pythonJsonDumps } from '../../src/formats/python-json.js';
import { compareCodePoints } from '../../src/formats/string-order.js';
import { FileSource } from '../../src/io/file-source.js';

export type CompareMode = 'exact' | 'fp16-input' | 'half';

export interface CompareOptions {
  /** Golden variant of a case directory: `default` (diffusers/) or `ema` (diffusers-ema/ over diffusers/). */
  golden?: string;
  /** Name (or path) of the case input that was converted: selects the mode golden.json records for it. */
  input?: string;
  /** Forces a value mode (compare.py --half / --fp16-input); wins over the mode of `input`. */
  mode?: CompareMode;
  /** Weight file variant the product was written with (`fp16` → `*.fp16.safetensors`). */
  variant?: string;
  /** Extra component config keys to ignore (compare.py --ignore-config-keys). */
  ignoreConfigKeys?: readonly string[];
  /** Tensor names to leave out on both sides (compare.py --ignore-tensors). */
  ignoreTensors?: RegExp;
  /** compare.py --skip-tokenizers. */
  skipTokenizers?: boolean;
}

export interface CompareResult {
  ok: boolean;
  /** Components compared (the model_index entries, or 1 for a single-model folder). */
  components: number;
  okComponents: number;
  /** Tensor mismatches: missing, extra, wrong dtype or shape, different values. */
  mismatches: number;
  /** One line per difference, worded as compare.py words them. */
  differences: string[];
  /** The value mode used. */
  mode: CompareMode;
  /** compare.py's last line: `match: A/B components, N tensor mismatches[, model_index.json differs]`. */
  summary: string;
}

const IGNORED_CONFIG_KEYS = ['_diffusers_version', '_name_or_path', 'transformers_version', 'torch_dtype', 'dtype'];
const IGNORED_TOKENIZER_KEYS = ['name_or_path', 'tokenizer_file', 'special_tokens_map_file', '_name_or_path'];
const FLOAT_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);
/** numpy dtypes compare.py reads a tensor as; BF16 is read as uint16 there (not a floating dtype). */
const NUMPY_FLOAT_DTYPES = new Set(['F64', 'F32', 'F16']);
const SHARD_SUFFIX = /(-\d{5}-of-\d{5})?\.safetensors$/;

// ------------------------------------------------------------------------------------------------
// JSON values
// ------------------------------------------------------------------------------------------------

/** JSON as Python's json.load reads it (NaN/Infinity accepted; floats kept apart from ints). */
async function loadJson(path: string): Promise<unknown> {
  return parsePythonJson(await readUtf8(path), path);
}

/** Text read as Python's open(path, encoding="utf-8") reads it: strict UTF-8, BOM kept, universal newlines. */
async function readUtf8(path: string): Promise<string> {
  const bytes = await readFile(path);
  const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  return text.replace(/\r\n?/g, '\n');
}

type Num = { kind: 'int'; value: bigint } | { kind: 'float'; value: number };

function asNumber(v: unknown): Num | undefined {
  if (typeof v === 'bigint') return { kind: 'int', value: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { kind: 'int', value: BigInt(v) } : { kind: 'float', value: v };
  if (isPyFloat(v)) return { kind: 'float', value: v.value };
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !isPyFloat(v);
}

/** compare.py `jeq`: JSON value equality; 1 == 1.0, NaN == NaN, a bool equals only a bool. */
export function jsonValuesEqual(a: unknown, b: unknown): boolean {
  if (typeof a === 'boolean' || typeof b === 'boolean') return a === b;
  const x = asNumber(a);
  const y = asNumber(b);
  if (x && y) {
    if (x.kind === 'float' && y.kind === 'float') return (Number.isNaN(x.value) && Number.isNaN(y.value)) || x.value === y.value;
    if (x.kind === 'int' && y.kind === 'int') return x.value === y.value;
    // int vs float: equal only when the float holds exactly that integer (Python compares exactly).
    const [i, f] = x.kind === 'int' ? [x.value, (y as { value: number }).value] : [(y as { value: bigint }).value, x.value];
    return Number.isInteger(f) && BigInt(f) === i;
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, i) => jsonValuesEqual(item, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    const kb = new Set(Object.keys(b));
    return ka.length === kb.size && ka.every((k) => kb.has(k)) && ka.every((k) => jsonValuesEqual(a[k], b[k]));
  }
  if (x || y) return false;
  return a === b;
}

/** compare.py `short`: json.dumps(v, sort_keys=True), cut to 120 characters. */
function short(v: unknown, n = 120): string {
  const s = pythonJsonDumps(v, { sortKeys: true });
  return s.length <= n ? s : s.slice(0, n - 3) + '...';
}

/** Python repr() of a str, as the messages quote keys. */
function pyRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + quote;
}

/** Python '%.6g'. */
function formatG6(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mantissa, expText] = x.toExponential(5).split('e');
  const exp = Number(expText);
  const strip = (t: string) => (t.includes('.') ? t.replace(/0+$/, '').replace(/\.$/, '') : t);
  if (exp < -4 || exp >= 6) return `${strip(mantissa)}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return strip(x.toFixed(5 - exp));
}

function sortedCodePoints(items: Iterable<string>): string[] {
  return [...items].sort(compareCodePoints);
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

class Report {
  readonly lines: string[] = [];
  diff(msg: string): void {
    this.lines.push(msg);
  }
}

function compareDicts(rep: Report, where: string, g: unknown, p: unknown, ignored: ReadonlySet<string>): boolean {
  const go = isObject(g) ? g : {};
  const po = isObject(p) ? p : {};
  let ok = true;
  for (const k of sortedCodePoints(new Set([...Object.keys(go), ...Object.keys(po)]))) {
    if (ignored.has(k)) continue;
    if (!Object.hasOwn(po, k)) {
      rep.diff(`${where}: missing key ${pyRepr(k)} (golden ${short(go[k])})`);
      ok = false;
    } else if (!Object.hasOwn(go, k)) {
      rep.diff(`${where}: extra key ${pyRepr(k)} = ${short(po[k])}`);
      ok = false;
    } else if (!jsonValuesEqual(go[k], po[k])) {
      rep.diff(`${where}: ${pyRepr(k)} differs: golden ${short(go[k])} != product ${short(po[k])}`);
      ok = false;
    }
  }
  return ok;
}

// ------------------------------------------------------------------------------------------------
// Tensors
// ------------------------------------------------------------------------------------------------

interface WeightFile {
  name: string;
  source: FileSource;
  header: SafetensorsHeader;
  entries: Map<string, SafetensorsHeader['tensors'][number]>;
}

interface TensorRef {
  file: WeightFile;
  dtype: string;
  shape: readonly number[];
}

interface WeightFiles {
  tensors: Map<string, TensorRef>;
  problems: string[];
  files: WeightFile[];
}

/**
 * compare.py `weight_files`: every tensor of a component folder → its file. The files a shard
 * index lists when there is an index, otherwise every *.safetensors of the folder.
 */
async function weightFiles(dir: string, variant?: string): Promise<WeightFiles> {
  const tensors = new Map<string, TensorRef>();
  const problems: string[] = [];
  const files: WeightFile[] = [];
  if (!(await isDir(dir))) return { tensors, problems: ['directory missing'], files };
  const names = sortedCodePoints(await readdir(dir));
  const indexes = names.filter((n) => n.endsWith('.safetensors.index.json') || (variant !== undefined && n.endsWith(`.safetensors.index.${variant}.json`)));
  let stFiles = names.filter((n) => n.endsWith('.safetensors'));
  if (indexes.length) {
    const listed = new Set<string>();
    for (const ix of indexes) {
      const index = await loadJson(join(dir, ix));
      const map = isObject(index) && isObject(index.weight_map) ? index.weight_map : {};
      for (const v of Object.values(map)) listed.add(String(v));
    }
    stFiles = sortedCodePoints(listed);
  }
  if (!stFiles.length) {
    const others = names.filter((n) => ['.bin', '.pt', '.pth', '.ckpt'].some((e) => n.endsWith(e)));
    problems.push('no .safetensors weights' + (others.length ? ` (found ${others.join(', ')})` : ''));
  }
  for (const fn of stFiles) {
    const path = join(dir, fn);
    if (!(await exists(path))) {
      problems.push(`index lists missing shard ${fn}`);
      continue;
    }
    let file: WeightFile;
    try {
      const source = await FileSource.open(path);
      try {
        const header = await readSafetensorsHeader(source);
        file = { name: fn, source, header, entries: new Map(header.tensors.map((t) => [t.name, t])) };
      } catch (e) {
        await source.close();
        throw e;
      }
    } catch (e) {
      problems.push(`cannot read ${fn}: ${(e as Error).message}`);
      continue;
    }
    files.push(file);
    for (const t of file.header.tensors) {
      const prev = tensors.get(t.name);
      if (prev) problems.push(`tensor ${t.name} present in several files (${prev.file.name}, ${fn})`);
      tensors.set(t.name, { file, dtype: t.dtype, shape: t.shape });
    }
  }
  return { tensors, problems, files };
}

async function closeAll(w: WeightFiles): Promise<void> {
  for (const f of w.files) await f.source.close();
}

async function tensorBytes(name: string, ref: TensorRef): Promise<Uint8Array> {
  const entry = ref.file.entries.get(name) as SafetensorsHeader['tensors'][number];
  return ref.file.source.read(ref.file.header.dataStart + entry.dataOffsets[0], entry.byteLength, `tensor "${name}"`);
}

function itemBytes(dtype: string): number {
  const bits = (SAFETENSORS_DTYPES as Record<string, { bits: number }>)[dtype]?.bits ?? 8;
  return Math.max(1, bits / 8);
}

/** Float tensor bytes as float64 values (numpy's view of F64/F32/F16 data). */
function floatValues(bytes: Uint8Array, dtype: string): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / itemBytes(dtype);
  const out = new Float64Array(n);
  const f32 = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    if (dtype === 'F64') out[i] = view.getFloat64(i * 8, true);
    else if (dtype === 'F32') out[i] = view.getFloat32(i * 4, true);
    else {
      f32.setUint32(0, f16BitsToF32Bits(view.getUint16(i * 2, true)));
      out[i] = f32.getFloat32(0);
    }
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** The message compare.py prints for a tensor whose bytes differ. */
function valuesDiffer(g: Uint8Array, p: Uint8Array, dtype: string): string {
  const size = p.byteLength / itemBytes(dtype);
  if (NUMPY_FLOAT_DTYPES.has(dtype)) {
    const gv = floatValues(g, dtype);
    const pv = floatValues(p, dtype);
    let neq = 0;
    let max = NaN;
    for (let i = 0; i < size; i++) {
      const a = gv[i];
      const b = pv[i];
      if (a !== b && !(Number.isNaN(a) && Number.isNaN(b))) neq++;
      const d = Math.abs(a - b);
      if (!Number.isNaN(d) && !(d <= max)) max = d;
    }
    return `values differ (${neq}/${size} elements, max |diff| ${formatG6(max)})`;
  }
  const w = itemBytes(dtype);
  let neq = 0;
  for (let i = 0; i < size; i++) {
    if (!bytesEqual(g.subarray(i * w, (i + 1) * w), p.subarray(i * w, (i + 1) * w))) neq++;
  }
  return `values differ (${neq}/${size} elements)`;
}

/** The golden tensor's bytes as the mode expects the product's (compare.py's astype chain). */
function expectedBytes(g: Uint8Array, gdt: string, pdt: string, mode: CompareMode): Uint8Array {
  let bytes = g;
  let dt = gdt;
  if (gdt === 'F32' && (mode === 'half' || mode === 'fp16-input')) {
    bytes = castBytes(bytes, 'F32', 'F16').bytes;
    dt = 'F16';
    if (mode === 'fp16-input') {
      bytes = castBytes(bytes, 'F16', 'F32').bytes;
      dt = 'F32';
    }
  }
  if (dt !== pdt && isDType(dt) && isDType(pdt)) bytes = castBytes(bytes, dt, pdt).bytes;
  return bytes;
}

/** Base name of a weight file: shard suffix and, for product files, the variant stripped. */
function weightBase(file: string, variant?: string): string {
  const base = file.replace(SHARD_SUFFIX, '');
  if (variant === undefined) return base;
  const tail = `.${variant}`;
  return base.endsWith(tail) ? base.slice(0, -tail.length) : `${base} (no .${variant} variant)`;
}

async function compareTensors(
  rep: Report,
  comp: string,
  gdir: string,
  pdir: string,
  mode: CompareMode,
  options: CompareOptions,
): Promise<{ ok: boolean; mismatches: number }> {
  const golden = await weightFiles(gdir);
  const product = await weightFiles(pdir, options.variant);
  try {
    for (const pr of golden.problems) rep.diff(`${comp}: golden weights: ${pr}`);
    let ok = golden.problems.length === 0;
    for (const pr of product.problems) {
      rep.diff(`${comp}: weights: ${pr}`);
      ok = false;
    }
    let gt = golden.tensors;
    let pt = product.tensors;
    const ignore = options.ignoreTensors;
    if (ignore) {
      gt = new Map([...gt].filter(([k]) => !ignore.test(k)));
      pt = new Map([...pt].filter(([k]) => !ignore.test(k)));
    }
    // The weight file base name (diffusion_pytorch_model / model) must match for Diffusers to load it.
    const gbase = sortedCodePoints(new Set([...gt.values()].map((r) => weightBase(r.file.name))));
    const pbase = sortedCodePoints(new Set([...pt.values()].map((r) => weightBase(r.file.name, options.variant))));
    if (pt.size && gbase.join('\0') !== pbase.join('\0')) {
      rep.diff(`${comp}: weight file name [${pbase.map(pyRepr).join(', ')}] != golden [${gbase.map(pyRepr).join(', ')}]`);
      ok = false;
    }
    let mism = 0;
    const missing = sortedCodePoints([...gt.keys()].filter((k) => !pt.has(k)));
    const extra = sortedCodePoints([...pt.keys()].filter((k) => !gt.has(k)));
    for (const k of missing) rep.diff(`${comp}: missing tensor ${k} [${gt.get(k)!.shape.join(', ')}]`);
    for (const k of extra) rep.diff(`${comp}: extra tensor ${k} [${pt.get(k)!.shape.join(', ')}]`);
    mism += missing.length + extra.length;
    for (const k of sortedCodePoints([...gt.keys()].filter((k) => pt.has(k)))) {
      const g = gt.get(k)!;
      const p = pt.get(k)!;
      const wantDt = FLOAT_DTYPES.has(g.dtype) && mode === 'half' ? 'F16' : g.dtype;
      if (p.dtype !== wantDt) {
        rep.diff(`${comp}: ${k}: dtype ${p.dtype} != expected ${wantDt}`);
        mism++;
        continue;
      }
      if (p.shape.length !== g.shape.length || p.shape.some((d, i) => d !== g.shape[i])) {
        rep.diff(`${comp}: ${k}: shape [${p.shape.join(', ')}] != golden [${g.shape.join(', ')}]`);
        mism++;
        continue;
      }
      const want = expectedBytes(await tensorBytes(k, g), g.dtype, p.dtype, mode);
      const got = await tensorBytes(k, p);
      if (!bytesEqual(want, got)) {
        rep.diff(`${comp}: ${k}: ${valuesDiffer(want, got, p.dtype)}`);
        mism++;
      }
    }
    return { ok: ok && mism === 0, mismatches: mism };
  } finally {
    await closeAll(golden);
    await closeAll(product);
  }
}

/** Number of tensors in a golden component (a missing product component counts them all). */
async function countTensors(dir: string): Promise<number> {
  const w = await weightFiles(dir);
  await closeAll(w);
  return w.tensors.size;
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------

/** sha256 of vocab.json / merges.txt in the canonical form _large_files.json describes. */
export async function canonicalTokenizerHash(path: string, kind: 'vocab.json' | 'merges.txt'): Promise<string> {
  let data: string;
  if (kind === 'vocab.json') {
    data = pythonJsonDumps(await loadJson(path), { sortKeys: true, ensureAscii: false, separators: [',', ':'] });
  } else {
    // Without the "#version" header line and empty lines.
    const lines = (await readUtf8(path)).split('\n').map((ln) => ln.replace(/\r+$/, ''));
    data = lines.filter((ln) => ln && !ln.startsWith('#version')).join('\n');
  }
  return createHash('sha256').update(data, 'utf8').digest('hex');
}

async function compareTokenizer(rep: Report, comp: string, gdir: string, pdir: string): Promise<boolean> {
  let ok = true;
  if (!(await isDir(pdir))) {
    rep.diff(`${comp}: directory missing`);
    return false;
  }
  const bigPath = join(gdir, '_large_files.json');
  const big = (await exists(bigPath)) ? ((await loadJson(bigPath)) as Record<string, { canonical_sha256: string }>) : {};
  const gfiles = sortedCodePoints(new Set([...(await readdir(gdir)).filter((f) => f !== '_large_files.json'), ...Object.keys(big)]));
  const pfiles = new Set(await readdir(pdir));
  for (const fn of gfiles) {
    const pp = join(pdir, fn);
    if (!pfiles.has(fn)) {
      rep.diff(`${comp}: missing file ${fn}`);
      ok = false;
      continue;
    }
    if (fn === 'vocab.json' || fn === 'merges.txt') {
      const want = Object.hasOwn(big, fn) ? big[fn].canonical_sha256 : await canonicalTokenizerHash(join(gdir, fn), fn);
      const got = await canonicalTokenizerHash(pp, fn);
      if (got !== want) {
        rep.diff(`${comp}: ${fn} content differs (canonical sha256 ${got.slice(0, 16)}... != ${want.slice(0, 16)}...)`);
        ok = false;
      }
    } else if (fn.endsWith('.json')) {
      ok = compareDicts(rep, `${comp}/${fn}`, await loadJson(join(gdir, fn)), await loadJson(pp), new Set(IGNORED_TOKENIZER_KEYS)) && ok;
    } else if (!bytesEqual(await readFile(join(gdir, fn)), await readFile(pp))) {
      rep.diff(`${comp}: ${fn} differs`);
      ok = false;
    }
  }
  for (const fn of sortedCodePoints([...pfiles].filter((f) => !gfiles.includes(f)))) {
    if (fn === 'tokenizer.json' || fn === 'added_tokens.json') {
      rep.diff(`${comp}: extra file ${fn}`);
      ok = false;
    }
  }
  return ok;
}

// ------------------------------------------------------------------------------------------------
// Driver
// ------------------------------------------------------------------------------------------------

interface ResolvedGolden {
  dir: string;
  base?: string;
  only?: string[];
  mode?: CompareMode;
}

/** compare.py `resolve_golden`: a case directory with golden.json, or a plain Diffusers folder. */
async function resolveGolden(goldenDir: string, variant: string, input?: string): Promise<ResolvedGolden> {
  const gjPath = join(goldenDir, 'golden.json');
  if (!(await exists(gjPath))) return { dir: goldenDir };
  const gj = JSON.parse(await readFile(gjPath, 'utf8')) as {
    goldens: Record<string, { dir: string; base?: string; components?: string[] }>;
    inputs?: Record<string, { compare_mode: CompareMode }>;
  };
  const goldens = gj.goldens;
  let name = variant;
  if (!Object.hasOwn(goldens, name) && name === 'default' && Object.hasOwn(goldens, '')) name = '';
  if (!Object.hasOwn(goldens, name)) throw new Error(`unknown golden variant ${pyRepr(name)}; available: ${sortedCodePoints(Object.keys(goldens)).join(', ')}`);
  const g = goldens[name];
  let mode: CompareMode | undefined;
  if (input) {
    const inputs = gj.inputs ?? {};
    const file = basename(input);
    if (!Object.hasOwn(inputs, file)) throw new Error(`unknown input ${pyRepr(file)}; golden.json lists ${sortedCodePoints(Object.keys(inputs)).join(', ')}`);
    mode = inputs[file].compare_mode;
  }
  return { dir: join(goldenDir, g.dir), base: g.base ? join(goldenDir, g.base) : undefined, only: g.components, mode };
}

/**
 * Compares `productDir` with the golden of `goldenCaseDir` (a case directory holding golden.json,
 * or a plain Diffusers / single-model folder). Never throws for a difference in the product; throws
 * for an unknown golden variant or input name, as compare.py exits for them.
 */
export async function compareWithGolden(goldenCaseDir: string, productDir: string, options: CompareOptions = {}): Promise<CompareResult> {
  const resolved = await resolveGolden(goldenCaseDir, options.golden ?? 'default', options.input);
  const mode: CompareMode = options.mode ?? resolved.mode ?? 'exact';
  const ignoredCfg = new Set([...IGNORED_CONFIG_KEYS, ...(options.ignoreConfigKeys ?? [])]);
  const rep = new Report();
  if (!(await isDir(productDir))) {
    rep.diff(`product output directory ${productDir} does not exist`);
    return { ok: false, components: 0, okComponents: 0, mismatches: 0, differences: rep.lines, mode, summary: 'match: 0/0 components, 0 tensor mismatches' };
  }

  const gdir = resolved.dir;
  let miPath = join(gdir, 'model_index.json');
  if (resolved.base && !(await exists(miPath))) miPath = join(resolved.base, 'model_index.json');
  let allOk = true;
  let miOk = true;
  let comps: string[];
  if (await exists(miPath)) {
    const gmi = (await loadJson(miPath)) as Record<string, unknown>;
    const pmiPath = join(productDir, 'model_index.json');
    if (!(await exists(pmiPath))) {
      rep.diff('model_index.json: missing');
      allOk = miOk = false;
    } else {
      miOk = compareDicts(rep, 'model_index.json', gmi, await loadJson(pmiPath), new Set(IGNORED_CONFIG_KEYS));
      allOk &&= miOk;
    }
    comps = sortedCodePoints(Object.keys(gmi).filter((k) => Array.isArray(gmi[k]) && (gmi[k] as unknown[]).length === 2 && (gmi[k] as unknown[])[0] !== null));
    if (resolved.only) comps = comps.filter((c) => resolved.only!.includes(c));
  } else {
    comps = [''];
  }

  let nOk = 0;
  let totalMism = 0;
  for (const comp of comps) {
    const label = comp || '(model)';
    let gc = comp ? join(gdir, comp) : gdir;
    if (!(await isDir(gc)) && resolved.base) gc = join(resolved.base, comp);
    const pc = comp ? join(productDir, comp) : productDir;
    let ok = true;
    if (!(await isDir(pc))) {
      rep.diff(`${label}: directory missing in product output`);
      totalMism += (await exists(join(gc, 'config.json'))) ? await countTensors(gc) : 0;
      continue;
    }
    if (await exists(join(gc, 'scheduler_config.json'))) {
      const pcfg = join(pc, 'scheduler_config.json');
      if (!(await exists(pcfg))) {
        rep.diff(`${label}: scheduler_config.json missing`);
        ok = false;
      } else {
        ok = compareDicts(rep, `${label}/scheduler_config.json`, await loadJson(join(gc, 'scheduler_config.json')), await loadJson(pcfg), ignoredCfg) && ok;
      }
    } else if (await exists(join(gc, 'config.json'))) {
      const pcfg = join(pc, 'config.json');
      if (!(await exists(pcfg))) {
        rep.diff(`${label}: config.json missing`);
        ok = false;
      } else {
        ok = compareDicts(rep, `${label}/config.json`, await loadJson(join(gc, 'config.json')), await loadJson(pcfg), ignoredCfg) && ok;
      }
      const t = await compareTensors(rep, label, gc, pc, mode, options);
      ok = t.ok && ok;
      totalMism += t.mismatches;
    } else if ((await exists(join(gc, 'tokenizer_config.json'))) || (await exists(join(gc, '_large_files.json')))) {
      if (!options.skipTokenizers) ok = (await compareTokenizer(rep, label, gc, pc)) && ok;
    } else {
      rep.diff(`${label}: golden component has no config (unsupported)`);
      ok = false;
    }
    if (ok) nOk++;
    allOk &&= ok;
  }

  const tail = miOk ? '' : ', model_index.json differs';
  const summary = `match: ${nOk}/${comps.length} components, ${totalMism} tensor mismatches${tail}`;
  return {
    ok: allOk && nOk === comps.length && totalMism === 0,
    components: comps.length,
    okComponents: nOk,
    mismatches: totalMism,
    differences: rep.lines,
    mode,
    summary,
  };
}
