/**
 * The output folder appears only when complete. Everything is written into a temporary sibling
 * `<outDir>.partial-<random>` (same parent, hence the same filesystem, so the final rename is
 * atomic); `commit` renames it into place, `abort` removes it. An interrupted conversion leaves
 * at most a `.partial-*` folder, never a half-written folder under the requested name.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, relative, resolve, sep } from 'node:path';
import { CkptError, ErrorCode, fail } from '../errors.js';

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
  await mkdir(dirname(target), { recursive: true });
  const tempDir = `${target}.partial-${randomSuffix()}`;
  await ioStep(tempDir, 'cannot create the temporary output folder', () => mkdir(tempDir));
  return new TempOutputFolder(target, tempDir, opts);
}

function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

async function inspectTarget(target: string): Promise<Existing> {
  const st = await stat(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw new CkptError(ErrorCode.E_IO, `cannot inspect the output path (${e.code ?? e.message})`, { file: target, cause: e });
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
  if (e instanceof CkptError) return e;
  const err = e as NodeJS.ErrnoException;
  return new CkptError(ErrorCode.E_IO, `${what} (${err.code ?? err.message})`, { file: path, cause: e });
}

class TempOutputFolder implements OutputFolder {
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    readonly outDir: string,
    readonly tempDir: string,
    private readonly opts: OutputFolderOptions,
  ) {}

  async commit(): Promise<void> {
    if (this.state !== 'open') fail(ErrorCode.E_IO, this.outDir, `output folder already ${this.state}.`);
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
