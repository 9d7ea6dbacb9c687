/**
 * The output folder appears only when complete. Everything is written into a temporary sibling
 * `<outDir>.partial-<random>` (same parent, hence the same filesystem, so the final rename is
 * atomic); `commit` renames it into place, `abort` removes it. An interrupted conversion leaves
 * at most a `.partial-*` folder, never a half-written folder under the requested name.
 *
 * Resilience around that:
 * - every open temp folder is in a process-wide registry, so a SIGINT/SIGTERM handler can remove
 *   them synchronously before exiting (`removeLiveTempFolders`);
 * - each temp folder holds an owner record (pid, host) until commit; after a SIGKILL the next
 *   `prepareOutputFolder` for the same output removes leftovers whose owner process is gone
 *   (`cleanStaleTempFolders`);
 * - a caller (batch) can have a completion record written as the last file, just before the rename
 *   (`withOutputContext`), so "the record is there" means "the folder is complete".
 * Write failures are coded (E_DISK_FULL, E_OUTPUT_NOT_WRITABLE) by io/write-errors.ts.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, isAbsolute, join, normalize, relative, resolve, sep } from 'node:path';
import { CkptError, ErrorCode, fail } from '../errors.js';
import { writeError } from '../io/write-errors.js';

/** Name of the owner record inside a temp folder (removed before the folder is committed). */
export const OWNER_FILE = '.ckpt2diffusers-owner.json';

/** Infix of temp folder names: `<outDir>.partial-<random>`. */
export const PARTIAL_INFIX = '.partial-';

/** A leftover without a readable owner record is removed only when older than this. */
const UNOWNED_STALE_MS = 10 * 60 * 1000;

/** What a caller can ask of every output folder prepared inside `withOutputContext`. */
export interface OutputContext {
  /**
   * Written as the last file of the temp folder, just before it is renamed into place:
   * `name` relative to the folder, `content` the file's text (called once, at commit).
   */
  completionRecord?: { name: string; content: () => string | Promise<string> };
  /** Called with the temp folder's path as soon as it exists. */
  onTempDir?: (tempDir: string) => void;
}

const outputContext = new AsyncLocalStorage<OutputContext>();

/**
 * Runs `fn` with `ctx` applying to every output folder it prepares (also through `convert`,
 * which does not need to know). Contexts of concurrent calls do not mix.
 */
export function withOutputContext<T>(ctx: OutputContext, fn: () => Promise<T>): Promise<T> {
  return outputContext.run(ctx, fn);
}

const live = new Set<string>();

/** The temp folders this process is writing right now. */
export function liveTempFolders(): string[] {
  return [...live];
}

/**
 * Removes every temp folder this process is writing, synchronously (for signal handlers, which
 * exit right after). Returns the folders removed.
 */
export function removeLiveTempFolders(): string[] {
  const removed: string[] = [];
  for (const dir of live) {
    try {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // Best effort: the next run's leftover cleanup removes what is left.
    }
    live.delete(dir);
  }
  return removed;
}

interface OwnerRecord {
  pid: number;
  host: string;
  started: string;
}

/** Whether process `pid` exists on this machine. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readOwner(tempDir: string): Promise<OwnerRecord | undefined> {
  try {
    const rec = JSON.parse(await readFile(join(tempDir, OWNER_FILE), 'utf8')) as OwnerRecord;
    return Number.isSafeInteger(rec.pid) && typeof rec.host === 'string' ? rec : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the leftover temp folder `dir` belongs to no running conversion. */
async function isStale(dir: string): Promise<boolean> {
  if (live.has(dir)) return false;
  const owner = await readOwner(dir);
  if (owner === undefined) {
    // Killed between mkdir and the owner record, or written by something else: only when old.
    const st = await stat(dir).catch(() => undefined);
    return st !== undefined && Date.now() - st.mtimeMs > UNOWNED_STALE_MS;
  }
  // Another machine's folder (a shared output disk): its pid means nothing here.
  if (owner.host !== hostname()) return false;
  if (owner.pid === process.pid) return true; // ours, but not in the registry: a finished attempt
  return !processAlive(owner.pid);
}

/**
 * Removes the leftover temp folders of `outDir` (`<outDir>.partial-*`) whose owning process is
 * gone, e.g. after a SIGKILL or a power cut. Folders of running conversions, on this or another
 * machine, are left alone. Returns the folders removed.
 */
export async function cleanStaleTempFolders(outDir: string): Promise<string[]> {
  const target = resolve(outDir);
  const parent = dirname(target);
  const prefix = basename(target) + PARTIAL_INFIX;
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^[0-9a-f]+$/.test(name.slice(prefix.length))) continue;
    const dir = join(parent, name);
    if (!(await isStale(dir))) continue;
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    removed.push(dir);
  }
  return removed;
}

export interface OutputFolderOptions {
  /** Replace an existing non-empty folder (the old one is removed only after the new one is in place). */
  force?: boolean;
  /**
   * Files that must survive the conversion, e.g. the input checkpoint: forcing is refused when
   * one of them lies inside the folder that would be replaced.
   */
  keep?: readonly string[];
}

export interface OutputFolder {
  /** The requested folder (absolute). */
  readonly outDir: string;
  /** Where every file is written until `commit`. */
  readonly tempDir: string;
  /** Moves the temp folder to `outDir`, replacing an old folder when forced. */
  commit(): Promise<void>;
  /** Removes the temp folder; safe to call more than once and after `commit` (then a no-op). */
  abort(): Promise<void>;
}

type Existing = 'none' | 'empty' | 'non-empty';

/**
 * Checks `outDir` and creates the temp folder next to it. Throws E_OUTPUT_EXISTS when `outDir` is
 * a non-empty folder and `force` is not set, or when it exists and is not a folder.
 */
export async function prepareOutputFolder(outDir: string, opts: OutputFolderOptions = {}): Promise<OutputFolder> {
  const target = resolve(outDir);
  const existing = await inspectTarget(target);
  if (existing === 'non-empty') checkReplaceable(target, opts);
  await ioStep(dirname(target), 'cannot create the output folder\'s parent', () => makeFolders(dirname(target)));
  await cleanStaleTempFolders(target);
  const tempDir = `${target}${PARTIAL_INFIX}${randomSuffix()}`;
  await ioStep(tempDir, 'cannot create the temporary output folder', () => mkdir(tempDir));
  live.add(tempDir);
  const ctx = outputContext.getStore();
  const folder = new TempOutputFolder(target, tempDir, opts, ctx);
  try {
    const owner: OwnerRecord = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
    await ioStep(tempDir, 'cannot write the owner record', () => writeFile(join(tempDir, OWNER_FILE), JSON.stringify(owner) + '\n'));
  } catch (e) {
    await folder.abort().catch(() => undefined);
    throw e;
  }
  ctx?.onTempDir?.(tempDir);
  return folder;
}

/**
 * `mkdir -p`, with the real reason on failure: Node's recursive mkdir reports ENOENT when a folder
 * cannot be created on a read-only filesystem or without permission; creating the first missing
 * folder alone gives EROFS / EACCES.
 */
async function makeFolders(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let missing = dir;
    while (dirname(missing) !== missing && !(await stat(dirname(missing)).catch(() => undefined))) missing = dirname(missing);
    await mkdir(missing).catch((real: unknown) => {
      throw (real as NodeJS.ErrnoException).code ? real : e;
    });
    throw e;
  }
}

function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

async function inspectTarget(target: string): Promise<Existing> {
  const st = await stat(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw writeError(target, 'cannot inspect the output path', e);
  });
  if (st === undefined) return 'none';
  if (!st.isDirectory()) fail(ErrorCode.E_OUTPUT_EXISTS, target, 'output path exists and is not a folder.', { hint: 'Choose another output folder.' });
  return (await readdir(target)).length === 0 ? 'empty' : 'non-empty';
}

function checkReplaceable(target: string, opts: OutputFolderOptions): void {
  if (!opts.force) {
    fail(ErrorCode.E_OUTPUT_EXISTS, target, 'output folder exists and is not empty.', { hint: 'Pass --force to replace it.' });
  }
  const inside = (opts.keep ?? []).find((p) => isInside(resolve(p), target));
  if (inside !== undefined) {
    fail(ErrorCode.E_OUTPUT_EXISTS, target, `output folder contains ${inside}, which --force would delete.`, {
      hint: 'Choose an output folder that does not contain the input.',
    });
  }
}

function isInside(path: string, folder: string): boolean {
  const rel = relative(folder, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

async function ioStep<T>(path: string, what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    throw ioError(path, what, e);
  }
}

function ioError(path: string, what: string, e: unknown): CkptError {
  return writeError(path, what, e);
}

class TempOutputFolder implements OutputFolder {
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    readonly outDir: string,
    readonly tempDir: string,
    private readonly opts: OutputFolderOptions,
    private readonly ctx: OutputContext | undefined,
  ) {}

  async commit(): Promise<void> {
    if (this.state !== 'open') fail(ErrorCode.E_IO, this.outDir, `output folder already ${this.state}.`);
    await ioStep(this.tempDir, 'cannot remove the owner record', () => rm(join(this.tempDir, OWNER_FILE), { force: true }));
    const record = this.ctx?.completionRecord;
    // Written last: its presence in the output means every other file is complete.
    if (record) await writeTextFile(this.tempDir, record.name, await record.content());
    // Checked again: the folder may have appeared or filled up while we were writing.
    const existing = await inspectTarget(this.outDir);
    if (existing === 'non-empty') {
      checkReplaceable(this.outDir, this.opts);
      await this.replaceExisting();
    } else {
      // rename(2) may replace an empty folder on POSIX, but not on Windows: remove it first.
      if (existing === 'empty') await ioStep(this.outDir, 'cannot remove the empty output folder', () => rmdir(this.outDir));
      await ioStep(this.outDir, 'cannot move the finished output into place', () => rename(this.tempDir, this.outDir));
    }
    this.state = 'committed';
    live.delete(this.tempDir);
  }

  /** Old folder aside, new folder in, old folder removed: the old one is never lost before the new one is in place. */
  private async replaceExisting(): Promise<void> {
    const aside = `${this.outDir}.old-${randomSuffix()}`;
    await ioStep(this.outDir, 'cannot move the old output folder aside', () => rename(this.outDir, aside));
    try {
      await rename(this.tempDir, this.outDir);
    } catch (e) {
      // Put the old folder back, so a failed commit leaves things as they were.
      await rename(aside, this.outDir).catch(() => undefined);
      throw ioError(this.outDir, 'cannot move the finished output into place', e);
    }
    await ioStep(aside, 'cannot remove the replaced output folder', () => rm(aside, { recursive: true, force: true }));
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await ioStep(this.tempDir, 'cannot remove the temporary output folder', () => rm(this.tempDir, { recursive: true, force: true }));
    live.delete(this.tempDir);
  }
}

/**
 * Writes a UTF-8 text file (configs, index files) at `relPath` under `dir`, creating folders on the
 * way. `relPath` must stay inside `dir`. Returns the file's path.
 */
export async function writeTextFile(dir: string, relPath: string, text: string): Promise<string> {
  const rel = normalize(relPath);
  if (isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`) || rel === '.') {
    fail(ErrorCode.E_USAGE, undefined, `output file path "${relPath}" (expected a path inside the output folder)`);
  }
  const path = join(dir, rel);
  await ioStep(path, 'cannot write', async () => {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, text, 'utf8');
  });
  return path;
}
