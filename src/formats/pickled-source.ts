/**
 * What the two torch containers (zip: torch-zip.ts, legacy: torch-legacy.ts) share once their
 * pickle is interpreted: the tensor table, lookups, whole-tensor reads and the safety report.
 * Each container only says where a tensor's storage bytes are (`readChunks`).
 */
import { dtypeBytes, numelOf } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import type { PickleGlobal, ReadChunksOptions, SafetyReport, TensorInfo, TensorSource } from './tensor-source.js';
import type { PickledTensor, TorchPickleResult } from './torch-types.js';

export abstract class PickledTensorSource<L extends { readonly tensor: PickledTensor }> implements TensorSource {
  abstract readonly format: 'torch-zip' | 'torch-legacy';
  readonly path: string;
  readonly fileSize: number;
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>> = {};
  readonly extras: Readonly<Record<string, unknown>>;
  readonly wrapperPath: readonly string[];
  readonly container: Readonly<Record<string, unknown>>;
  readonly safety: SafetyReport;
  private readonly infos: Map<string, TensorInfo>;

  protected constructor(
    protected readonly file: FileSource,
    private readonly located: ReadonlyMap<string, L>,
    result: TorchPickleResult,
    container: object,
    globals: readonly PickleGlobal[],
  ) {
    this.path = file.path;
    this.fileSize = file.size;
    this.tensors = [...located.values()].map(({ tensor }) => tensorInfoOf(tensor));
    this.infos = new Map(this.tensors.map((t) => [t.name, t]));
    this.extras = result.extras;
    this.wrapperPath = result.wrapperPath;
    this.container = { ...container };
    this.safety = { hasPickle: true, globals: [...globals], dangerous: globals.some((g) => g.safety === 'dangerous') };
  }

  get(name: string): TensorInfo | undefined {
    return this.infos.get(name);
  }

  abstract readChunks(name: string, options?: ReadChunksOptions): AsyncIterable<Uint8Array>;

  async readTensor(name: string): Promise<Uint8Array> {
    const info = this.infos.get(name) ?? this.notFound(name);
    const out = new Uint8Array(info.byteLength);
    let at = 0;
    for await (const chunk of this.readChunks(name)) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  close(): Promise<void> {
    return this.file.close();
  }

  protected lookup(name: string): L {
    return this.located.get(name) ?? this.notFound(name);
  }

  private notFound(name: string): never {
    return fail(ErrorCode.E_TENSOR_NOT_FOUND, this.path, `has no tensor named "${name}" (expected one of its ${this.tensors.length} tensors).`);
  }
}

function tensorInfoOf(t: PickledTensor): TensorInfo {
  return { name: t.name, dtype: t.dtype, shape: t.shape, byteLength: numelOf(t.shape) * dtypeBytes(t.dtype) };
}
