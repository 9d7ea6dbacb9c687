/**
 * Turns the operating system's write failures into coded errors, so that a full disk or a
 * read-only output location reads as such instead of a generic I/O error:
 *
 *   ENOSPC, EDQUOT                    → E_DISK_FULL
 *   EROFS, EACCES, EPERM, ENOTDIR,
 *   ENOENT (a folder vanished)        → E_OUTPUT_NOT_WRITABLE
 *   anything else                     → E_IO
 *
 * Only for paths of the output; read errors of the input keep their own codes.
 */
import { CkptError, ErrorCode } from '../errors.js';

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);
const NOT_WRITABLE = new Set(['EROFS', 'EACCES', 'EPERM', 'ENOTDIR', 'ENOENT']);

/** The errno code (`ENOSPC`, ...) of `e`, or of the error that caused it. */
export function errnoOf(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 4; depth++) {
    const code = (cur as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code) && !(cur instanceof CkptError)) return code;
    cur = (cur as Error).cause;
  }
  return undefined;
}

/** The coded error for a failed write of `path`; `what` says what was being done. */
export function writeError(path: string, what: string, e: unknown): CkptError {
  const errno = errnoOf(e);
  if (e instanceof CkptError && !(e.code === ErrorCode.E_IO && errno !== undefined)) return e;
  const reason = errno ?? (e as Error)?.message ?? String(e);
  if (errno !== undefined && DISK_FULL.has(errno)) {
    return new CkptError(ErrorCode.E_DISK_FULL, `${what}: no space left on the output device (${errno}).`, {
      file: path,
      hint: 'Free some space or choose an output folder on another disk; nothing that looks complete was left behind.',
      cause: e,
    });
  }
  if (errno !== undefined && NOT_WRITABLE.has(errno)) {
    return new CkptError(ErrorCode.E_OUTPUT_NOT_WRITABLE, `${what}: the output location is not writable (${errno}).`, {
      file: path,
      hint:
        errno === 'EROFS'
          ? 'The filesystem is mounted read-only; choose another output folder.'
          : errno === 'ENOENT' || errno === 'ENOTDIR'
            ? 'A folder on the output path is missing or is not a folder.'
            : 'Check the permissions of the output folder and its parent.',
      cause: e,
    });
  }
  return new CkptError(ErrorCode.E_IO, `${what} (${reason})`, { file: path, cause: e });
}

/** Runs one write step, turning its failure into a coded error. */
export async function writeStep<T>(path: string, what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    throw writeError(path, what, e);
  }
}
