/**
 * The only way the library reads input files: positional reads through a FileHandle.
 * Never `readFile` a checkpoint: Node 20 refuses files over 2 GiB, and SD checkpoints are 2-7 GB.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { CkptError, ErrorCode } from '../errors.js';

export class FileSource {
  private constructor(
    readonly path: string,
    readonly size: number,
    private readonly handle: FileHandle,
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
    return new FileSource(path, st.size, handle);
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
    return buf;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
