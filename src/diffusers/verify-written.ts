/**
 * The post-condition of every conversion: re-open each weight file just written (headers only)
 * and check it holds exactly the planned tensors, with the planned shapes and output dtypes, and
 * that a sharded component's index maps every tensor to the shard that holds it.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CkptError, ErrorCode } from '../errors.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import { indexFileName, weightsFileName } from '../formats/shards.js';
import { FileSource } from '../io/file-source.js';
import type { PlannedComponent } from '../mapping/plan-types.js';
import { outputDTypeFor, weightsBaseFor, type OutputDTypeMode } from './write-component.js';

interface WrittenTensor {
  file: string;
  dtype: string;
  shape: readonly number[];
}

export async function verifyWrittenComponent(dir: string, component: PlannedComponent, mode: OutputDTypeMode, variant?: string): Promise<void> {
  const written = await readWrittenTensors(dir, component, variant);
  const problems: string[] = [];
  for (const t of component.tensors) {
    const w = written.get(t.target);
    const dtype = outputDTypeFor(t.dtype, mode);
    if (!w) problems.push(`${t.target}: missing`);
    else if (w.dtype !== dtype || w.shape.join(',') !== t.shape.join(',')) {
      problems.push(`${t.target}: ${w.dtype}[${w.shape}] written (expected ${dtype}[${t.shape}])`);
    }
    written.delete(t.target);
  }
  for (const name of written.keys()) problems.push(`${name}: written but not planned`);
  if (problems.length) {
    throw new CkptError(ErrorCode.E_SHAPE_MISMATCH, `written ${component.folder} weights differ from the plan: ${problems.slice(0, 10).join('; ')}`, {
      file: dir,
      data: { problems },
    });
  }
}

async function readWrittenTensors(dir: string, component: PlannedComponent, variant?: string): Promise<Map<string, WrittenTensor>> {
  const base = weightsBaseFor(component.library);
  const index = join(dir, indexFileName(base, variant));
  const files = existsSync(index) ? await shardFiles(index) : new Map<string, string[]>([[weightsFileName(base, variant), []]]);
  const out = new Map<string, WrittenTensor>();
  for (const [fileName, listed] of files) {
    const file = await FileSource.open(join(dir, fileName));
    try {
      const header = await readSafetensorsHeader(file);
      for (const t of header.tensors) out.set(t.name, { file: fileName, dtype: t.dtype, shape: t.shape });
      const held = new Set(header.tensors.map((t) => t.name));
      const strays = listed.filter((n) => !held.has(n));
      if (strays.length) {
        throw new CkptError(ErrorCode.E_SHAPE_MISMATCH, `index maps ${strays.length} tensors to ${fileName}, which does not hold them: ${strays.slice(0, 5).join(', ')}`, {
          file: index,
        });
      }
    } finally {
      await file.close();
    }
  }
  return out;
}

/** Shard file → the tensor names the index says it holds. */
async function shardFiles(indexPath: string): Promise<Map<string, string[]>> {
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
  const files = new Map<string, string[]>();
  for (const [name, file] of Object.entries(index.weight_map ?? {})) files.set(file, [...(files.get(file) ?? []), name]);
  return files;
}
