/**
 * Where the ONNX graphs of a test generation come from.
 *
 *   1. The folder is itself an ONNX pipeline (unet/model.onnx present): used as it is.
 *   2. Otherwise the Diffusers folder is exported once (exportOnnx, optimum layout) into a cache:
 *        default       <folder>/.ckpt2diffusers-onnx/<dtype>/        next to the weights it was
 *                      built from, removed with them;
 *        not writable  <user cache>/ckpt2diffusers/onnx/<sha256(folder path)[:16]>-<dtype>/ with
 *                      <user cache> = $XDG_CACHE_HOME, else ~/.cache (Windows: %LOCALAPPDATA%);
 *        `cacheDir`    <cacheDir>/<sha256(folder path)[:16]>-<dtype>/.
 *      The cache holds `source.json`: size and mtime of every file the export reads
 *      (model_index.json, text_encoder(_2), unet, vae, tokenizer(_2), scheduler) and the export
 *      options.
 *      It is reused while that record matches; any change re-exports (`force` always does).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { access, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { homedir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import type { ProgressCallback } from '../progress.js';

export const ONNX_CACHE_FOLDER = '.ckpt2diffusers-onnx';
const RECORD = 'source.json';
const RECORD_VERSION = 1;
/** The folders of a Diffusers pipeline the export reads. */
const SOURCE_PARTS = ['model_index.json', 'text_encoder', 'text_encoder_2', 'unet', 'vae', 'tokenizer', 'tokenizer_2', 'scheduler'];
const COMPONENTS = ['text_encoder', 'unet', 'vae_encoder', 'vae_decoder'];

export interface OnnxCacheOptions {
  /** Parent folder of the cache instead of the Diffusers folder. */
  cacheDir?: string;
  /** ONNX precision (default fp32). */
  dtype?: 'fp32' | 'fp16';
  /** Re-export even when the cache matches. */
  force?: boolean;
  onProgress?: ProgressCallback;
}

export interface OnnxFolder {
  /** The ONNX pipeline folder to run. */
  readonly dir: string;
  /** 'onnx-folder': the input was one; 'cache': reused; 'exported': exported now. */
  readonly origin: 'onnx-folder' | 'cache' | 'exported';
  readonly exportMs: number;
  readonly warnings: readonly string[];
}

interface FileStamp {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

async function stamps(folder: string): Promise<FileStamp[]> {
  const out: FileStamp[] = [];
  const walk = async (path: string): Promise<void> => {
    const st = await stat(path).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of (await readdir(path)).sort()) await walk(join(path, name));
    } else {
      out.push({ path: relative(folder, path).split('\\').join('/'), size: st.size, mtimeMs: Math.round(st.mtimeMs) });
    }
  };
  for (const part of SOURCE_PARTS) await walk(join(folder, part));
  return out;
}

function userCacheRoot(): string {
  if (process.env.XDG_CACHE_HOME) return process.env.XDG_CACHE_HOME;
  if (process.platform === 'win32' && process.env.LOCALAPPDATA) return process.env.LOCALAPPDATA;
  return join(homedir(), '.cache');
}

async function writable(dir: string): Promise<boolean> {
  return access(dir, constants.W_OK).then(
    () => true,
    () => false,
  );
}

/** Where the cache for `folder` lives (see the module comment). */
export async function onnxCacheDir(folder: string, options: Pick<OnnxCacheOptions, 'cacheDir' | 'dtype'> = {}): Promise<string> {
  const dtype = options.dtype ?? 'fp32';
  const abs = resolve(folder);
  const key = `${createHash('sha256').update(abs).digest('hex').slice(0, 16)}-${dtype}`;
  if (options.cacheDir) return join(resolve(options.cacheDir), key);
  if (await writable(abs)) return join(abs, ONNX_CACHE_FOLDER, dtype);
  return join(userCacheRoot(), 'ckpt2diffusers', 'onnx', key);
}

/** True when `dir` holds an ONNX pipeline (a UNet graph). */
export function isOnnxFolder(dir: string): boolean {
  return existsSync(join(dir, 'unet', 'model.onnx'));
}

/** The ONNX pipeline folder for `folder`: itself, a matching cache, or a fresh export. */
export async function ensureOnnxFolder(folder: string, options: OnnxCacheOptions = {}): Promise<OnnxFolder> {
  if (isOnnxFolder(folder)) return { dir: folder, origin: 'onnx-folder', exportMs: 0, warnings: [] };
  if (!existsSync(join(folder, 'model_index.json'))) {
    fail(ErrorCode.E_CONFIG, folder, 'has no model_index.json (expected a Diffusers pipeline folder or an ONNX pipeline folder).');
  }
  const dtype = options.dtype ?? 'fp32';
  const dir = await onnxCacheDir(folder, options);
  const record = { version: RECORD_VERSION, source: resolve(folder), layout: 'optimum', dtype, files: await stamps(folder) };
  const recordText = JSON.stringify(record, null, 1) + '\n';
  // Only what the source has: an SDXL refiner has text_encoder_2 and no text_encoder.
  const needed = [...COMPONENTS, 'text_encoder_2'].filter((c) => !c.startsWith('text_encoder') || existsSync(join(folder, c)));
  if (!options.force && needed.every((c) => existsSync(join(dir, c, 'model.onnx')) || c === 'vae_encoder')) {
    const previous = await readFile(join(dir, RECORD), 'utf8').catch(() => undefined);
    if (previous === recordText) return { dir, origin: 'cache', exportMs: 0, warnings: [] };
  }
  const t0 = performance.now();
  await mkdir(join(dir, '..'), { recursive: true });
  // Loaded here so that importing this module does not load the exporter (and its graph builders).
  const { exportOnnx } = await import('../onnx/export.js');
  const result = await exportOnnx(folder, dir, { layout: 'optimum', dtype, force: true, onProgress: options.onProgress });
  if (!result.components.some((c) => c.name === 'unet')) {
    fail(ErrorCode.E_ONNX_EXPORT, folder, 'the UNet could not be exported to ONNX, so no image can be generated.', { data: { warnings: result.warnings } });
  }
  await writeFile(join(dir, RECORD), recordText);
  return { dir, origin: 'exported', exportMs: performance.now() - t0, warnings: result.warnings };
}
