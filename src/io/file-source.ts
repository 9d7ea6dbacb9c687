/**
 * The only way the library reads input files: positional reads through a FileHandle.
 * Never `readFile` a checkpoint: Node 20 refuses files over 2 GiB, and SD checkpoints are 2-7 GB.
 */
import { fstatSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CkptError, ErrorCode } from '../errors.js';

export class FileSource {
  private constructor(
    readonly path: string,
    readonly size: number,
    private readonly handle: FileHandle,
    /** Modification time at open: a later one means the file changed under us. */
    readonly mtimeMs: number,
  ) {}

  static async open(path: string): Promise<FileSource> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CkptError(ErrorCode.E_IO, `cannot open (${err.code ?? err.message})`, { file: path, cause: e });
    }
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw new CkptError(ErrorCode.E_IO, 'is not a regular file', { file: path });
    }
    return new FileSource(path, st.size, handle, st.mtimeMs);
  }

  /**
   * Reads exactly `length` bytes at `position`. A read past the end of the file is an E_TRUNCATED
   * error naming `what` was being read.
   */
  async read(position: number, length: number, what = 'data'): Promise<Uint8Array> {
    if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0) {
      throw new CkptError(ErrorCode.E_TRUNCATED, `${what}: invalid byte range ${position}+${length}`, { file: this.path });
    }
    if (position + length > this.size) {
      throw new CkptError(
        ErrorCode.E_TRUNCATED,
        `${what} spans bytes ${position}..${position + length}, past the end of the file (${this.size} bytes). The file is truncated or corrupt.`,
        { file: this.path, data: { position, length, size: this.size } },
      );
    }
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, position + done);
      if (bytesRead === 0) {
        throw new CkptError(ErrorCode.E_TRUNCATED, `${what}: file shrank while reading at byte ${position + done}`, { file: this.path });
      }
      done += bytesRead;
    }
    // Checked after every read: bytes returned here were read before a stat that saw the file
    // unchanged, so a conversion never mixes old and new contents. fstat costs about a microsecond.
    this.checkUnchanged(what);
    return buf;
  }

  /**
   * Throws E_TRUNCATED when the file shrank since it was opened, E_INPUT_CHANGED when it grew,
   * was modified in place or was deleted.
   */
  checkUnchanged(what = 'data'): void {
    let st: Stats;
    try {
      st = fstatSync(this.handle.fd);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new CkptError(ErrorCode.E_IO, `${what}: cannot check the file (${err.code ?? err.message})`, { file: this.path, cause: e });
    }
    const data = { sizeAtOpen: this.size, size: st.size, mtimeMsAtOpen: this.mtimeMs, mtimeMs: st.mtimeMs };
    if (st.size < this.size) {
      throw new CkptError(ErrorCode.E_TRUNCATED, `${what}: the file shrank from ${this.size} to ${st.size} bytes while being read.`, { file: this.path, data });
    }
    const change = st.size !== this.size ? `grew from ${this.size} to ${st.size} bytes` : st.mtimeMs !== this.mtimeMs ? 'was modified' : st.nlink === 0 ? 'was deleted' : undefined;
    if (change !== undefined) {
      throw new CkptError(ErrorCode.E_INPUT_CHANGED, `${what}: the file ${change} while being read.`, {
        file: this.path,
        hint: 'Convert it again once it is no longer being written.',
        data,
      });
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
