/**
 * The weights of one Diffusers component folder as a WeightSource (graph.ts): a single
 * `model.safetensors` / `diffusion_pytorch_model.safetensors`, or shards listed by a
 * `*.safetensors.index.json` (formats.md §6.2). An fp16 variant (`*.fp16.safetensors`) is used
 * when it is the only weights file. Tensors are read positionally, chunk by chunk.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { openSafetensors } from '../formats/safetensors.js';
import type { TensorInfo, TensorSource } from '../formats/tensor-source.js';
import { FileSource } from '../io/file-source.js';
import type { WeightSource } from './graph.js';

export interface ComponentWeights extends WeightSource {
  /** Every tensor of the component. */
  readonly tensors: readonly TensorInfo[];
  readonly files: readonly string[];
  close(): Promise<void>;
}

const BASES = ['diffusion_pytorch_model', 'model'] as const;

/** Opens the safetensors weights of a component folder (e.g. `<diffusers>/vae`). */
export async function openComponentWeights(dir: string): Promise<ComponentWeights> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return fail(ErrorCode.E_IO, dir, `cannot read the component folder (${err.code ?? err.message}).`, { cause: e });
  }
  for (const variant of ['', '.fp16']) {
    for (const base of BASES) {
      const single = `${base}${variant}.safetensors`;
      if (names.includes(single)) return openFiles([join(dir, single)]);
      const index = `${base}.safetensors.index${variant}.json`;
      const indexAlt = `${base}${variant}.safetensors.index.json`;
      const found = names.includes(index) ? index : names.includes(indexAlt) ? indexAlt : undefined;
      if (found) {
        const parsed = JSON.parse(await readFile(join(dir, found), 'utf8')) as { weight_map?: Record<string, string> };
        const files = [...new Set(Object.values(parsed.weight_map ?? {}))].sort();
        if (files.length === 0) fail(ErrorCode.E_MISSING_TENSOR, join(dir, found), 'the shard index lists no files.');
        return openFiles(files.map((f) => join(dir, f)));
      }
    }
  }
  return fail(ErrorCode.E_MISSING_TENSOR, dir, 'no safetensors weights (model.safetensors, diffusion_pytorch_model.safetensors or a shard index) in this folder.', {
    hint: 'Convert with safetensors output (the default); .bin weights are not read by the ONNX exporter.',
  });
}

async function openFiles(paths: readonly string[]): Promise<ComponentWeights> {
  const sources: TensorSource[] = [];
  try {
    for (const p of paths) {
      const file = await FileSource.open(p);
      try {
        sources.push(await openSafetensors(file));
      } catch (e) {
        await file.close();
        throw e;
      }
    }
  } catch (e) {
    await Promise.all(sources.map((s) => s.close()));
    throw e;
  }
  const byName = new Map<string, TensorSource>();
  const tensors: TensorInfo[] = [];
  for (const s of sources) {
    for (const t of s.tensors) {
      if (byName.has(t.name)) fail(ErrorCode.E_DUPLICATE_TENSOR, s.path, `tensor "${t.name}" appears in two shards.`);
      byName.set(t.name, s);
      tensors.push(t);
    }
  }
  const lookup = (key: string): TensorSource => {
    const s = byName.get(key);
    if (!s) fail(ErrorCode.E_MISSING_TENSOR, paths[0], `no tensor named "${key}".`, { data: { tensor: key } });
    return s;
  };
  return {
    tensors,
    files: paths,
    info: (key) => byName.get(key)?.get(key),
    readChunks: (key) => lookup(key).readChunks(key),
    readTensor: (key) => lookup(key).readTensor(key),
    close: async () => {
      await Promise.all(sources.map((s) => s.close()));
    },
  };
}
