/**
 * The library entry exports verify and the generation runner without loading any runtime code:
 * neither src/onnx/runtime.ts nor the session wrapper nor the exporter is statically reachable.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';
import { repoRoot } from '../helpers/paths.js';

function staticGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(/^(?:import|export)\s+(?!type\s)[^'"]*?from\s+'([^']+)'/gm)) {
      if (m[1].startsWith('.')) visit(resolve(dirname(file), m[1].replace(/\.js$/, '.ts')));
    }
  };
  visit(entry);
  return new Set([...seen].map((f) => relative(repoRoot, f).split('\\').join('/')));
}

describe('library entry', () => {
  it('exports verify, verifyWeights and runGeneration', () => {
    expect(typeof api.verify).toBe('function');
    expect(typeof api.verifyWeights).toBe('function');
    expect(typeof api.runGeneration).toBe('function');
    expect(api.ONNX_CACHE_FOLDER).toBe('.ckpt2diffusers-onnx');
  });

  it('reaches no ONNX runtime or exporter module statically', () => {
    const graph = staticGraph(join(repoRoot, 'src', 'index.ts'));
    expect(graph.has('src/verify/index.ts')).toBe(true);
    expect([...graph].filter((f) => f.startsWith('src/onnx/') || f === 'src/verify/onnx-models.ts')).toEqual([]);
  });
});
